//! Capacity planning: from measured per-sample and per-series costs, what a
//! fleet of N machines × M series at interval I with retention R needs.
//!
//! Owns the cost model and its stated assumptions. The model is linear on
//! purpose — every cost is a measured constant times a load figure — so the
//! answer can be checked by hand:
//!
//! - samples/s = N × M / I; active series = N × M
//! - cores = samples/s × CPU-seconds per sample
//! - RAM = active series × RSS per active series
//! - disk = samples/s × R × bytes per stored sample
//! - disk writes = samples/s × bytes written per sample
//!
//! Headroom (for queries, compaction, rule evaluation and restarts) is one
//! stated factor applied to cores and RAM on top of the raw figures.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::report::format_thousands;
use crate::run::RunReport;

/// Measured costs of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Costs {
    /// Where the figures come from (a run file, a docs block).
    pub source: String,
    pub cpu_s_per_million_samples: f64,
    pub rss_bytes_per_series: f64,
    pub disk_bytes_per_sample: f64,
    pub write_bytes_per_sample: f64,
}

/// The fleet to plan for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub machines: f64,
    pub series_per_machine: f64,
    pub interval_s: f64,
    pub retention_s: f64,
}

/// What the fleet needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Need {
    pub samples_per_s: f64,
    pub active_series: f64,
    pub cores: f64,
    pub cores_with_headroom: f64,
    pub ram_gib: f64,
    pub ram_gib_with_headroom: f64,
    pub disk_gib: f64,
    pub disk_write_mb_per_s: f64,
}

#[derive(Debug, Error, PartialEq)]
pub enum PlanError {
    #[error("{0} has no usable {1} (the run may have failed or been too short)")]
    MissingFigure(String, &'static str),
    #[error("no `plan-constants` line for server {server:?} in {path}")]
    NotInDocs { server: String, path: String },
    #[error("{path}: bad plan-constants line {line:?}: {what}")]
    BadDocsLine {
        path: String,
        line: String,
        what: String,
    },
    #[error("bad duration {0:?}: use a number with ms, s, m, h, d or w")]
    BadDuration(String),
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Computes the need of `load` at `costs`, with `headroom` (≥ 1) on cores
/// and RAM.
pub fn plan(load: &Load, costs: &Costs, headroom: f64) -> Need {
    let active_series = load.machines * load.series_per_machine;
    let samples_per_s = active_series / load.interval_s;
    let cores = samples_per_s * costs.cpu_s_per_million_samples / 1e6;
    let ram_gib = active_series * costs.rss_bytes_per_series / GIB;
    Need {
        samples_per_s,
        active_series,
        cores,
        cores_with_headroom: cores * headroom,
        ram_gib,
        ram_gib_with_headroom: ram_gib * headroom,
        disk_gib: samples_per_s * load.retention_s * costs.disk_bytes_per_sample / GIB,
        disk_write_mb_per_s: samples_per_s * costs.write_bytes_per_sample / 1e6,
    }
}

/// Costs measured by a run.
pub fn costs_from_run(report: &RunReport, source: &str) -> Result<Costs, PlanError> {
    let s = &report.summary;
    let need =
        |v: Option<f64>, what| v.ok_or_else(|| PlanError::MissingFigure(source.to_owned(), what));
    Ok(Costs {
        source: format!("{} run in {source}", report.server),
        cpu_s_per_million_samples: need(s.cpu_s_per_million_samples, "CPU-s per million samples")?,
        rss_bytes_per_series: need(s.rss_bytes_per_series, "RSS per active series")?,
        disk_bytes_per_sample: need(s.disk_bytes_per_sample, "disk bytes per sample")?,
        write_bytes_per_sample: need(s.write_bytes_per_sample, "written bytes per sample")?,
    })
}

/// Costs recorded in a markdown file as a fenced `plan-constants` block,
/// one line per server:
/// `NAME cpu_s_per_million_samples=… rss_bytes_per_series=… disk_bytes_per_sample=… write_bytes_per_sample=…`
pub fn costs_from_docs(text: &str, path: &str, server: &str) -> Result<Costs, PlanError> {
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            inside = trimmed == "```plan-constants";
            continue;
        }
        if !inside {
            continue;
        }
        let mut words = trimmed.split_whitespace();
        if words.next() != Some(server) {
            continue;
        }
        let bad = |what: String| PlanError::BadDocsLine {
            path: path.to_owned(),
            line: trimmed.to_owned(),
            what,
        };
        let mut costs = Costs {
            source: format!("{server} constants in {path}"),
            cpu_s_per_million_samples: f64::NAN,
            rss_bytes_per_series: f64::NAN,
            disk_bytes_per_sample: f64::NAN,
            write_bytes_per_sample: f64::NAN,
        };
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad(format!("{word:?} is not key=value")))?;
            let value: f64 = value
                .parse()
                .map_err(|_| bad(format!("{value:?} is not a number")))?;
            match key {
                "cpu_s_per_million_samples" => costs.cpu_s_per_million_samples = value,
                "rss_bytes_per_series" => costs.rss_bytes_per_series = value,
                "disk_bytes_per_sample" => costs.disk_bytes_per_sample = value,
                "write_bytes_per_sample" => costs.write_bytes_per_sample = value,
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        if [
            costs.cpu_s_per_million_samples,
            costs.rss_bytes_per_series,
            costs.disk_bytes_per_sample,
            costs.write_bytes_per_sample,
        ]
        .iter()
        .any(|v| v.is_nan())
        {
            return Err(bad("all four keys are needed".to_owned()));
        }
        return Ok(costs);
    }
    Err(PlanError::NotInDocs {
        server: server.to_owned(),
        path: path.to_owned(),
    })
}

/// Parses `15s`, `1500ms`, `5m`, `2h`, `15d`, `1w` into seconds.
pub fn parse_duration_s(text: &str) -> Result<f64, PlanError> {
    let bad = || PlanError::BadDuration(text.to_owned());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => return Err(bad()),
    };
    let seconds = number * scale;
    if seconds > 0.0 {
        Ok(seconds)
    } else {
        Err(bad())
    }
}

fn human_duration(seconds: f64) -> String {
    if seconds >= 86_400.0 && seconds % 86_400.0 == 0.0 {
        format!("{} d", seconds / 86_400.0)
    } else if seconds >= 3600.0 && seconds % 3600.0 == 0.0 {
        format!("{} h", seconds / 3600.0)
    } else {
        format!("{seconds} s")
    }
}

/// Doubles one input of a load.
type Doubling = fn(&mut Load);

/// The plan as text: the answer, the assumptions, and how each output
/// scales when each input doubles.
pub fn explain(load: &Load, costs: &Costs, headroom: f64) -> String {
    let need = plan(load, costs, headroom);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} machines × {} series every {} with {} retention",
        format_thousands(load.machines, 0),
        format_thousands(load.series_per_machine, 0),
        human_duration(load.interval_s),
        human_duration(load.retention_s)
    );
    let _ = writeln!(
        out,
        "  = {} active series, {} samples/s\n",
        format_thousands(need.active_series, 0),
        format_thousands(need.samples_per_s, 0)
    );
    let _ = writeln!(
        out,
        "  cores            {:>10.2}   ({:.2} with ×{headroom} headroom)",
        need.cores, need.cores_with_headroom
    );
    let _ = writeln!(
        out,
        "  RAM (GiB)        {:>10.2}   ({:.2} with ×{headroom} headroom)",
        need.ram_gib, need.ram_gib_with_headroom
    );
    let _ = writeln!(out, "  disk (GiB)       {:>10.2}", need.disk_gib);
    let _ = writeln!(
        out,
        "  disk writes MB/s {:>10.3}\n",
        need.disk_write_mb_per_s
    );
    let _ = writeln!(out, "Assumptions (costs from {}):", costs.source);
    let _ = writeln!(
        out,
        "  - {:.3} CPU-seconds per million samples ingested (scrape, parse, append, WAL; steady state)",
        costs.cpu_s_per_million_samples
    );
    let _ = writeln!(
        out,
        "  - {:.0} bytes of RSS per active series, the head and everything else included",
        costs.rss_bytes_per_series
    );
    let _ = writeln!(
        out,
        "  - {:.3} bytes on disk per stored sample, constant over the retention",
        costs.disk_bytes_per_sample
    );
    let _ = writeln!(
        out,
        "  - {:.3} bytes written to disk per ingested sample",
        costs.write_bytes_per_sample
    );
    out.push_str("  - every series is scraped at every interval; no churn (churned series add\n");
    out.push_str("    RAM while in the head and index space on disk)\n");
    let _ = writeln!(
        out,
        "  - ×{headroom} headroom on cores and RAM for queries, compaction, rules and restarts;\n    one server (an HA pair doubles everything)\n"
    );
    out.push_str("How each output grows when one input doubles:\n");
    let _ = writeln!(
        out,
        "  {:<22} {:>7} {:>7} {:>7} {:>7}",
        "input ×2", "cores", "RAM", "disk", "writes"
    );
    let doubled: [(&str, Doubling); 4] = [
        ("machines", |l| l.machines *= 2.0),
        ("series per machine", |l| l.series_per_machine *= 2.0),
        ("interval", |l| l.interval_s *= 2.0),
        ("retention", |l| l.retention_s *= 2.0),
    ];
    for (name, double) in doubled {
        let mut bigger = *load;
        double(&mut bigger);
        let after = plan(&bigger, costs, headroom);
        let _ = writeln!(
            out,
            "  {name:<22} {:>6.2}× {:>6.2}× {:>6.2}× {:>6.2}×",
            after.cores / need.cores,
            after.ram_gib / need.ram_gib,
            after.disk_gib / need.disk_gib,
            after.disk_write_mb_per_s / need.disk_write_mb_per_s
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs() -> Costs {
        Costs {
            source: "hand".into(),
            cpu_s_per_million_samples: 2.5,
            rss_bytes_per_series: 2048.0,
            disk_bytes_per_sample: 1.5,
            write_bytes_per_sample: 4.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    /// 10,000 machines × 1,500 series at 15 s, 15 days, worked by hand:
    /// 15,000,000 series; 1,000,000 samples/s; 2.5 cores; 15e6 × 2048 B =
    /// 28.6102 GiB; 1e6 × 1,296,000 s × 1.5 B = 1.944e12 B = 1810.49 GiB;
    /// 4 MB/s of writes.
    #[test]
    fn hand_computed_reference_plan() {
        let load = Load {
            machines: 10_000.0,
            series_per_machine: 1_500.0,
            interval_s: 15.0,
            retention_s: 15.0 * 86_400.0,
        };
        let need = plan(&load, &costs(), 1.5);
        assert!(close(need.active_series, 15_000_000.0));
        assert!(close(need.samples_per_s, 1_000_000.0));
        assert!(close(need.cores, 2.5));
        assert!(close(need.cores_with_headroom, 3.75));
        assert!(close(need.ram_gib, 15e6 * 2048.0 / GIB));
        assert!((need.ram_gib - 28.610_229_5).abs() < 1e-6);
        assert!(
            (need.disk_gib - 1_810.491_085).abs() < 1e-5,
            "{}",
            need.disk_gib
        );
        assert!(close(need.disk_write_mb_per_s, 4.0));
    }

    #[test]
    fn doubling_table_shows_the_model() {
        let load = Load {
            machines: 100.0,
            series_per_machine: 1000.0,
            interval_s: 15.0,
            retention_s: 86_400.0,
        };
        let text = explain(&load, &costs(), 1.0);
        assert!(
            text.contains("machines                 2.00×   2.00×   2.00×   2.00×"),
            "{text}"
        );
        assert!(
            text.contains("interval                 0.50×   1.00×   0.50×   0.50×"),
            "{text}"
        );
        assert!(
            text.contains("retention                1.00×   1.00×   2.00×   1.00×"),
            "{text}"
        );
    }

    #[test]
    fn reads_docs_constants() {
        let docs = "text\n```plan-constants\nprometheus cpu_s_per_million_samples=2.5 rss_bytes_per_series=2600 disk_bytes_per_sample=1.4 write_bytes_per_sample=3\n```\n";
        let c = costs_from_docs(docs, "b.md", "prometheus").unwrap();
        assert_eq!(c.rss_bytes_per_series, 2600.0);
        assert!(matches!(
            costs_from_docs(docs, "b.md", "kiln"),
            Err(PlanError::NotInDocs { .. })
        ));
        let broken = docs.replace("=3\n", "=x\n");
        assert!(matches!(
            costs_from_docs(&broken, "b.md", "prometheus"),
            Err(PlanError::BadDocsLine { .. })
        ));
    }

    /// The constants recorded in docs/benchmarks.md stay readable.
    #[test]
    fn docs_constants_parse() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.md");
        let docs = std::fs::read_to_string(path).unwrap();
        for server in ["prometheus", "victoria-metrics"] {
            let c = costs_from_docs(&docs, path, server).unwrap();
            assert!(c.cpu_s_per_million_samples > 0.0, "{server}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("15s"), Ok(15.0));
        assert_eq!(parse_duration_s("15d"), Ok(1_296_000.0));
        assert_eq!(parse_duration_s("1500ms"), Ok(1.5));
        assert!(parse_duration_s("15").is_err());
        assert!(parse_duration_s("0s").is_err());
        assert!(parse_duration_s("d").is_err());
    }
}
