//! The scrape configuration for a fleet: one `prometheus.yml` that kiln,
//! Prometheus (`--config.file`) and VictoriaMetrics (`-promscrape.config`)
//! all accept unchanged.
//!
//! Owns the mapping from a [`FleetSpec`] and the fleet's port to static
//! target groups. It writes only keys all three servers understand
//! (`global.scrape_interval`, `global.scrape_timeout`, `job_name`,
//! `static_configs` with `targets` and `labels`), so VictoriaMetrics'
//! strict parsing passes too.

use std::fmt::Write as _;

use crate::model::{self, FleetSpec, TargetKind};

/// Job name of every fleet target.
pub const JOB: &str = "node";

/// Formats milliseconds as a Prometheus duration (`15s`, `1500ms`).
pub fn prometheus_duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn kind_label(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Normal => "normal",
        TargetKind::Histogram => "histogram",
        TargetKind::Slow => "slow",
        TargetKind::Failing => "failing",
    }
}

/// The scrape timeout used for a fleet: 10 s, or the interval when shorter
/// (Prometheus rejects a timeout longer than the interval).
pub fn scrape_timeout_ms(spec: &FleetSpec) -> u64 {
    spec.interval_ms.min(10_000)
}

/// Renders the configuration. Targets are grouped by kind, and each group
/// carries a `kind` label so results can be split by it.
pub fn prometheus_yml(spec: &FleetSpec, port: u16) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by kiln-bench for a fleet of {} targets.",
        spec.targets
    );
    out.push_str("global:\n");
    let _ = writeln!(
        out,
        "  scrape_interval: {}",
        prometheus_duration(spec.interval_ms)
    );
    let _ = writeln!(
        out,
        "  scrape_timeout: {}",
        prometheus_duration(scrape_timeout_ms(spec))
    );
    out.push_str("scrape_configs:\n");
    let _ = writeln!(out, "  - job_name: {JOB}");
    out.push_str("    static_configs:\n");
    for kind in [
        TargetKind::Histogram,
        TargetKind::Normal,
        TargetKind::Slow,
        TargetKind::Failing,
    ] {
        let members: Vec<usize> = (0..spec.targets)
            .filter(|&i| spec.kind(i) == kind)
            .collect();
        if members.is_empty() {
            continue;
        }
        out.push_str("      - targets:\n");
        for index in members {
            let _ = writeln!(out, "          - '{}:{port}'", model::target_addr(index));
        }
        out.push_str("        labels:\n");
        let _ = writeln!(out, "          kind: {}", kind_label(kind));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(interval_ms: u64) -> FleetSpec {
        FleetSpec {
            targets: 5,
            series_per_target: 507,
            interval_ms,
            churn_per_hour: 0.0,
            histogram_targets: 1,
            histogram_series: 14,
            slow_targets: 1,
            slow_delay_ms: 1000,
            failing_targets: 1,
            timestamps: false,
            origin_ms: 0,
            gzip: false,
        }
    }

    #[test]
    fn lists_every_target_once_with_its_kind() {
        let yml = prometheus_yml(&spec(15_000), 9100);
        assert!(yml.contains("scrape_interval: 15s\n"));
        assert!(yml.contains("scrape_timeout: 10s\n"));
        for i in 0..5 {
            let needle = format!("'{}:9100'", model::target_addr(i));
            assert_eq!(yml.matches(&needle).count(), 1, "{needle}");
        }
        for kind in ["histogram", "normal", "slow", "failing"] {
            assert!(yml.contains(&format!("kind: {kind}\n")), "{kind}");
        }
    }

    #[test]
    fn short_intervals_shorten_the_timeout() {
        let yml = prometheus_yml(&spec(1_500), 1);
        assert!(yml.contains("scrape_interval: 1500ms\n"));
        assert!(yml.contains("scrape_timeout: 1500ms\n"));
    }

    /// Prometheus's own checker accepts the file. Skipped, with the reason
    /// printed, where promtool is not installed.
    #[test]
    fn promtool_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, prometheus_yml(&spec(15_000), 19100)).unwrap();
        let output = match std::process::Command::new("promtool")
            .args(["check", "config"])
            .arg(&path)
            .output()
        {
            Ok(output) => output,
            Err(e) => {
                eprintln!(
                    "SKIPPED promtool_accepts_it: promtool not runnable ({e}); scripts/install-peers.sh installs it"
                );
                return;
            }
        };
        assert!(
            output.status.success(),
            "promtool rejected the config:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
