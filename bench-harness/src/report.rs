//! Human-readable reports of one or several runs: a terminal table and a
//! self-contained HTML page with inline SVG plots over time.
//!
//! Owns presentation only: every figure shown comes from a [`RunReport`]'s
//! samples and summary, and ratios between servers are computed here from
//! those summaries (see [`ratios`]).

use std::fmt::Write as _;

use crate::run::{RunReport, Sample, Summary};

const MIB: f64 = 1_048_576.0;

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format_thousands(v, digits))
}

/// Formats with `digits` decimals and thin thousands separators.
pub fn format_thousands(value: f64, digits: usize) -> String {
    let text = format!("{:.*}", digits, value.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    let sign = if value < 0.0 { "-" } else { "" };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Column and legend names: the server, plus the fleet size when the runs
/// differ in it (a sweep).
fn labels(runs: &[RunReport]) -> Vec<String> {
    let sizes_differ = runs
        .windows(2)
        .any(|w| w[0].fleet.targets != w[1].fleet.targets);
    runs.iter()
        .map(|r| {
            if sizes_differ {
                format!("{}@{}", r.server, r.fleet.targets)
            } else {
                r.server.clone()
            }
        })
        .collect()
}

/// One table row: label and a getter over a report.
type Row = (&'static str, fn(&RunReport) -> String);

fn rows() -> Vec<Row> {
    fn s(r: &RunReport) -> &Summary {
        &r.summary
    }
    vec![
        ("outcome", |r| r.outcome.status.clone()),
        ("ready after (s)", |r| fmt_opt(r.ready_after_s, 1)),
        ("targets", |r| r.fleet.targets.to_string()),
        ("steady window (s)", |r| {
            match (r.summary.steady_from_s, r.summary.window_s) {
                (Some(from), Some(w)) => format!("{:.0}–{:.0}", from, from + w),
                _ => "-".to_owned(),
            }
        }),
        ("offered samples/s", |r| {
            fmt_opt(Some(r.offered_samples_per_s), 0)
        }),
        ("appended samples/s", |r| fmt_opt(s(r).samples_per_s, 0)),
        ("CPU (cores)", |r| fmt_opt(s(r).cpu_cores, 3)),
        ("samples per CPU-second", |r| {
            fmt_opt(s(r).samples_per_cpu_s, 0)
        }),
        ("CPU-s per million samples", |r| {
            fmt_opt(s(r).cpu_s_per_million_samples, 2)
        }),
        ("RSS at end (MiB)", |r| {
            fmt_opt(s(r).rss_end_bytes.map(|b| b as f64 / MIB), 1)
        }),
        ("RSS peak (MiB)", |r| {
            fmt_opt(s(r).rss_peak_bytes.map(|b| b as f64 / MIB), 1)
        }),
        ("active series", |r| fmt_opt(s(r).active_series, 0)),
        ("RSS per active series (B)", |r| {
            fmt_opt(s(r).rss_bytes_per_series, 0)
        }),
        ("samples appended", |r| {
            fmt_opt(s(r).samples_appended_total, 0)
        }),
        ("data dir (MiB)", |r| {
            fmt_opt(s(r).disk_bytes.map(|b| b as f64 / MIB), 1)
        }),
        ("data dir bytes per sample", |r| {
            fmt_opt(s(r).disk_bytes_per_sample, 2)
        }),
        ("disk writes (MB/s)", |r| {
            fmt_opt(s(r).write_bytes_per_s.map(|b| b / 1e6), 3)
        }),
        ("written bytes per sample", |r| {
            fmt_opt(s(r).write_bytes_per_sample, 2)
        }),
        ("fleet CPU (cores)", |r| fmt_opt(s(r).fleet_cpu_cores, 3)),
        ("other load on the machine (cores)", |r| {
            fmt_opt(s(r).other_load_cores, 2)
        }),
        ("targets down (up == 0)", |r| fmt_opt(s(r).targets_down, 0)),
        ("scrapes on time (%, whole intervals)", |r| {
            match (s(r).scrapes_on_time, s(r).scrape_intervals) {
                (Some(share), Some(n)) => format!("{:.2} ({n})", share * 100.0),
                _ => "-".to_owned(),
            }
        }),
        ("failed scrapes in the window", |r| {
            fmt_opt(s(r).failed_scrapes, 0)
        }),
        ("fleet: gzip responses / compressions", |r| {
            r.fleet_scrapes.as_ref().map_or_else(
                || "-".to_owned(),
                |f| format!("{}/{}", f.gzip_responses, f.compressions),
            )
        }),
        ("query median (ms)", |r| fmt_opt(s(r).query_median_ms, 1)),
        ("query load: sent / failed", |r| {
            r.query_load
                .as_ref()
                .map_or_else(|| "-".to_owned(), |l| format!("{}/{}", l.sent, l.failed))
        }),
        ("query load p50 / p99 (ms)", |r| {
            r.query_load.as_ref().map_or_else(
                || "-".to_owned(),
                |l| format!("{}/{}", fmt_opt(l.p50_ms, 1), fmt_opt(l.p99_ms, 1)),
            )
        }),
    ]
}

/// Ratios of each run against the reference (the first run): how many
/// times better the run is, so > 1 always means "better than reference".
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ratios {
    pub server: String,
    pub reference: String,
    /// samples per CPU-second, run / reference
    pub samples_per_cpu_s: Option<f64>,
    /// RSS per active series, reference / run
    pub rss_per_series: Option<f64>,
    /// bytes per sample in the data dir, reference / run
    pub disk_bytes_per_sample: Option<f64>,
    /// median query latency, reference / run
    pub query_latency: Option<f64>,
}

/// Picks one ratio out of [`Ratios`].
type RatioOf = fn(&Ratios) -> Option<f64>;

/// Ratios of every run against `runs[0]`.
pub fn ratios(runs: &[RunReport]) -> Vec<Ratios> {
    let Some(reference) = runs.first() else {
        return Vec::new();
    };
    let r = &reference.summary;
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    runs.iter()
        .map(|run| {
            let s = &run.summary;
            Ratios {
                server: run.server.clone(),
                reference: reference.server.clone(),
                samples_per_cpu_s: div(s.samples_per_cpu_s, r.samples_per_cpu_s),
                rss_per_series: div(r.rss_bytes_per_series, s.rss_bytes_per_series),
                disk_bytes_per_sample: div(r.disk_bytes_per_sample, s.disk_bytes_per_sample),
                query_latency: div(r.query_median_ms, s.query_median_ms),
            }
        })
        .collect()
}

/// The report's cells: a header row of server names, then one row per
/// figure, per query and (for several runs) per ratio.
fn grid(runs: &[RunReport]) -> Vec<Vec<String>> {
    let mut grid: Vec<Vec<String>> =
        vec![std::iter::once(String::new()).chain(labels(runs)).collect()];
    for (label, get) in rows() {
        grid.push(
            std::iter::once(label.to_owned())
                .chain(runs.iter().map(get))
                .collect(),
        );
    }
    if let Some(first) = runs.first() {
        for (i, query) in first.queries.iter().enumerate() {
            grid.push(
                std::iter::once(format!("query ms: {}", query.name))
                    .chain(runs.iter().map(|r| {
                        r.queries.get(i).map_or_else(
                            || "-".to_owned(),
                            |q| {
                                q.median_ms
                                    .map_or_else(|| "error".to_owned(), |m| format!("{m:.1}"))
                            },
                        )
                    }))
                    .collect(),
            );
        }
    }
    if runs.len() > 1 {
        let reference = &runs[0].server;
        let ratio_rows: [(&str, RatioOf); 4] = [
            ("× samples per CPU-s", |r| r.samples_per_cpu_s),
            ("× less RSS per series", |r| r.rss_per_series),
            ("× fewer bytes per sample", |r| r.disk_bytes_per_sample),
            ("× faster queries", |r| r.query_latency),
        ];
        let all = ratios(runs);
        for (label, get) in ratio_rows {
            grid.push(
                std::iter::once(format!("{label} vs {reference}"))
                    .chain(all.iter().map(|r| fmt_opt(get(r), 2)))
                    .collect(),
            );
        }
    }
    grid
}

/// The terminal table: one column per run.
pub fn table(runs: &[RunReport]) -> String {
    let grid = grid(runs);
    let widths: Vec<usize> = (0..grid[0].len())
        .map(|c| {
            grid.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in grid.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                let _ = write!(out, "{cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(out, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push('\n');
        if i == 0 {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            out.push('\n');
        }
    }
    for run in runs {
        for warning in crate::run::warnings(run) {
            let _ = writeln!(out, "\n{}: warning: {warning}", run.server);
        }
        if run.outcome.status != "completed" {
            let _ = writeln!(
                out,
                "\n{}: {} — {}",
                run.server, run.outcome.status, run.outcome.detail
            );
            for line in &run.outcome.log_tail {
                let _ = writeln!(out, "  | {line}");
            }
        }
    }
    out
}

const COLOURS: [&str; 5] = ["#d9480f", "#1c7ed6", "#2b8a3e", "#862e9c", "#495057"];

/// A time series for a plot: points of (seconds since the server started,
/// value).
struct Line {
    name: String,
    points: Vec<(f64, f64)>,
    /// Where the run's steady window starts, marked with a dashed line.
    steady_from: Option<f64>,
}

/// Per-interval rate of a cumulative quantity between consecutive samples.
fn rate_line(run: &RunReport, name: String, get: fn(&Sample) -> Option<f64>) -> Line {
    let points = run
        .samples
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].t_s - w[0].t_s;
            let dv = get(&w[1])? - get(&w[0])?;
            (dt > 0.0).then(|| (w[1].t_s, dv / dt))
        })
        .collect();
    Line {
        name,
        points,
        steady_from: run.summary.steady_from_s,
    }
}

fn level_line(run: &RunReport, name: String, get: fn(&Sample) -> f64) -> Line {
    Line {
        name,
        points: run.samples.iter().map(|s| (s.t_s, get(s))).collect(),
        steady_from: run.summary.steady_from_s,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line plot as inline SVG, y from 0 to the largest value.
fn svg_plot(title: &str, unit: &str, lines: &[Line]) -> String {
    let (w, h) = (560.0, 250.0);
    let (left, right, top, bottom) = (70.0, 15.0, 30.0, 40.0);
    let all = lines.iter().flat_map(|l| l.points.iter());
    let x_max = nice_ceiling(all.clone().map(|p| p.0).fold(1.0_f64, f64::max));
    let y_max = nice_ceiling(all.map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9));
    let x = |v: f64| left + (w - left - right) * v / x_max;
    let y = |v: f64| h - bottom - (h - top - bottom) * v / y_max;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">{} ({})</text>",
        escape(title),
        escape(unit)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#dee2e6\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            y(v) + 4.0,
            short(v),
            y0 = y(v)
        );
        let t = x_max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t:.0} s</text>",
            x(t),
            h - bottom + 16.0
        );
    }
    for (i, line) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        if let Some(from) = line.steady_from {
            let _ = write!(
                svg,
                "<line x1=\"{x0:.1}\" x2=\"{x0:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"{colour}\" stroke-dasharray=\"4 3\"/>",
                h - bottom,
                x0 = x(from)
            );
        }
        let points: Vec<String> = line
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            points.join(" ")
        );
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            left + 10.0 + 160.0 * i as f64,
            h - 14.0,
            left + 24.0 + 160.0 * i as f64,
            h - 5.0,
            escape(&line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2, 4, 5 or 8 times a power of ten that is ≥ `v`, so
/// that quarter ticks land on round numbers.
fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 4.0, 5.0, 8.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// Short axis label: 1.2k, 3.4M.
fn short(v: f64) -> String {
    match v.abs() {
        a if a >= 1e9 => format!("{:.1}G", v / 1e9),
        a if a >= 1e6 => format!("{:.1}M", v / 1e6),
        a if a >= 1e3 => format!("{:.1}k", v / 1e3),
        a if a >= 10.0 || a == 0.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

/// The HTML page for one or several runs of the same scenario.
pub fn html(runs: &[RunReport], title: &str) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font-family:sans-serif;margin:24px;color:#212529;max-width:1160px}}\
table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #dee2e6;padding:4px 10px;text-align:right}}\
td:first-child,th:first-child{{text-align:left}}.plots{{display:flex;flex-wrap:wrap;gap:12px}}\
.bad{{color:#c92a2a}}pre{{background:#f1f3f5;padding:8px;overflow:auto}}</style></head><body><h1>{t}</h1>",
        t = escape(title)
    );
    if let Some(first) = runs.first() {
        let f = &first.fleet;
        let _ = write!(
            page,
            "<p>Fleet: {} targets × {} series, every {} ms; {} histogram, {} slow ({} ms), {} failing targets; churn {}/h; explicit timestamps: {}. \
Planned: {:.0} s of measurement after readiness, at least {:.0} s of warm-up left out of rates. kiln-bench {}.</p>",
            f.targets,
            f.series_per_target,
            f.interval_ms,
            f.histogram_targets,
            f.slow_targets,
            f.slow_delay_ms,
            f.failing_targets,
            f.churn_per_hour,
            f.timestamps,
            first.duration_s,
            first.warmup_s,
            escape(&first.kiln_bench_version)
        );
    }
    let cells = grid(runs);
    page.push_str("<table><tr>");
    for head in &cells[0] {
        let _ = write!(page, "<th>{}</th>", escape(head));
    }
    page.push_str("</tr>");
    for row in cells.iter().skip(1) {
        let _ = write!(page, "<tr><td>{}</td>", escape(&row[0]));
        for cell in &row[1..] {
            let bad = [
                "died",
                "never_ready",
                "exited_before_ready",
                "failed_to_start",
                "fleet_failed",
                "error",
            ]
            .contains(&cell.as_str());
            let class = if bad { " class=\"bad\"" } else { "" };
            let _ = write!(page, "<td{class}>{}</td>", escape(cell));
        }
        page.push_str("</tr>");
    }
    page.push_str("</table><div class=\"plots\">");
    let names = labels(runs);
    let named = || runs.iter().zip(names.iter().cloned());
    let plots: [(&str, &str, Vec<Line>); 4] = [
        (
            "Samples appended",
            "samples/s",
            named()
                .map(|(r, n)| rate_line(r, n, |s| s.samples_appended))
                .collect(),
        ),
        (
            "CPU",
            "cores",
            named()
                .map(|(r, n)| rate_line(r, n, |s| Some(s.cpu_s)))
                .collect(),
        ),
        (
            "Resident memory",
            "MiB",
            named()
                .map(|(r, n)| level_line(r, n, |s| s.rss_bytes as f64 / MIB))
                .collect(),
        ),
        (
            "Data dir",
            "MiB",
            named()
                .map(|(r, n)| level_line(r, n, |s| s.disk_bytes as f64 / MIB))
                .collect(),
        ),
    ];
    if runs.iter().all(|r| r.samples.is_empty()) {
        page.push_str("</div><p class=\"bad\">No samples were taken: nothing to plot.</p>");
    } else {
        for (title, unit, lines) in &plots {
            page.push_str(&svg_plot(title, unit, lines));
        }
        page.push_str(
            "</div><p>Time in seconds since the server started; a dashed line marks where a run's steady window begins (rates in the table are taken from there).</p>",
        );
    }
    for (run, name) in runs.iter().zip(&names) {
        let _ = write!(
            page,
            "<h3>{}</h3><p>{}: {}</p><pre>{}</pre>",
            escape(name),
            escape(&run.outcome.status),
            escape(&run.outcome.detail),
            escape(&run.command.join(" "))
        );
        if !run.outcome.log_tail.is_empty() {
            let _ = write!(
                page,
                "<pre>{}</pre>",
                escape(&run.outcome.log_tail.join("\n"))
            );
        }
        for warning in crate::run::warnings(run) {
            let _ = write!(page, "<p class=\"bad\">warning: {}</p>", escape(&warning));
        }
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(format_thousands(1_234_567.891, 1), "1,234,567.9");
        assert_eq!(format_thousands(-999.0, 0), "-999");
        assert_eq!(format_thousands(0.5, 2), "0.50");
        assert_eq!(short(612_000.0), "612.0k");
        assert_eq!(nice_ceiling(2_900.0), 4_000.0);
        assert_eq!(nice_ceiling(30.0), 40.0);
        assert_eq!(nice_ceiling(0.07), 0.08);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }
}
