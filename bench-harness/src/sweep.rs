//! Sweeps: one server measured at several fleet sizes, and a least-squares
//! line through each cost, so the planner can use marginal costs (the
//! slope) instead of whole-process averages that include fixed overheads.
//!
//! Owns the fit and the mapping from fitted slopes to planner [`Costs`]:
//! CPU-seconds per sample is the slope of cores over samples/s, RSS per
//! series the slope of RSS over active series, bytes written per sample the
//! slope of write rate over samples/s; bytes on disk per sample is taken
//! from the largest run (a data dir has no meaningful intercept).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::plan::Costs;
use crate::run::RunReport;

/// A fitted line `y = intercept + slope × x`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    pub intercept: f64,
    pub slope: f64,
    /// Coefficient of determination (1 = every point on the line).
    pub r2: f64,
}

/// Ordinary least squares; `None` with fewer than two distinct x values.
pub fn fit(points: &[(f64, f64)]) -> Option<Fit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 {
        sxy * sxy / (sxx * syy)
    } else {
        1.0
    };
    Some(Fit {
        intercept: mean_y - slope * mean_x,
        slope,
        r2,
    })
}

/// The fits of a sweep and the costs derived from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepFit {
    pub server: String,
    /// cores over samples/s
    pub cpu: Fit,
    /// RSS bytes over active series
    pub rss: Fit,
    /// bytes written per second over samples/s
    pub writes: Fit,
    pub costs: Costs,
}

/// Fits the completed runs of a sweep; `None` when fewer than two runs
/// completed with the needed figures.
pub fn fit_runs(runs: &[RunReport]) -> Option<SweepFit> {
    let done: Vec<&RunReport> = runs
        .iter()
        .filter(|r| r.outcome.status == "completed")
        .collect();
    let points = |x: fn(&RunReport) -> Option<f64>, y: fn(&RunReport) -> Option<f64>| {
        done.iter()
            .filter_map(|r| Some((x(r)?, y(r)?)))
            .collect::<Vec<_>>()
    };
    let cpu = fit(&points(
        |r| r.summary.samples_per_s,
        |r| r.summary.cpu_cores,
    ))?;
    let rss = fit(&points(
        |r| r.summary.active_series,
        |r| r.summary.rss_end_bytes.map(|b| b as f64),
    ))?;
    let writes = fit(&points(
        |r| r.summary.samples_per_s,
        |r| r.summary.write_bytes_per_s,
    ))?;
    let largest = done
        .iter()
        .max_by(|a, b| a.offered_samples_per_s.total_cmp(&b.offered_samples_per_s))?;
    let costs = Costs {
        source: format!(
            "a sweep of {} over {} fleet sizes (marginal costs)",
            largest.server,
            done.len()
        ),
        cpu_s_per_million_samples: cpu.slope * 1e6,
        rss_bytes_per_series: rss.slope,
        disk_bytes_per_sample: largest.summary.disk_bytes_per_sample?,
        write_bytes_per_sample: writes.slope,
    };
    Some(SweepFit {
        server: largest.server.clone(),
        cpu,
        rss,
        writes,
        costs,
    })
}

/// The fit as text, with the fixed costs the intercepts reveal.
pub fn describe(sweep: &SweepFit) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Cost curves of {} (least squares over the sweep):",
        sweep.server
    );
    let _ = writeln!(
        out,
        "  cores     = {:.4} + {:.4} per million samples/s   (r² {:.3})",
        sweep.cpu.intercept,
        sweep.cpu.slope * 1e6,
        sweep.cpu.r2
    );
    let _ = writeln!(
        out,
        "  RSS MiB   = {:.1} + {:.0} bytes per active series  (r² {:.3})",
        sweep.rss.intercept / 1_048_576.0,
        sweep.rss.slope,
        sweep.rss.r2
    );
    let _ = writeln!(
        out,
        "  writes    = {:.3} MB/s + {:.2} bytes per sample    (r² {:.3})",
        sweep.writes.intercept / 1e6,
        sweep.writes.slope,
        sweep.writes.r2
    );
    let c = &sweep.costs;
    let _ = writeln!(
        out,
        "plan-constants line for docs/benchmarks.md:\n  {} cpu_s_per_million_samples={:.3} rss_bytes_per_series={:.0} disk_bytes_per_sample={:.3} write_bytes_per_sample={:.3}",
        sweep.server,
        c.cpu_s_per_million_samples,
        c.rss_bytes_per_series,
        c.disk_bytes_per_sample,
        c.write_bytes_per_sample
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_a_line_by_hand() {
        // y = 1 + 2x exactly.
        let f = fit(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((f.intercept - 1.0).abs() < 1e-12);
        assert!((f.slope - 2.0).abs() < 1e-12);
        assert!((f.r2 - 1.0).abs() < 1e-12);
        // (0,0), (1,1), (2,1): mean x 1, mean y 2/3, sxx 2, sxy 1 → slope
        // 0.5, intercept 1/6; syy 2/3 → r² = 1 / (2 × 2/3) = 0.75.
        let g = fit(&[(0.0, 0.0), (1.0, 1.0), (2.0, 1.0)]).unwrap();
        assert!((g.slope - 0.5).abs() < 1e-12);
        assert!((g.intercept - 1.0 / 6.0).abs() < 1e-12);
        assert!((g.r2 - 0.75).abs() < 1e-12);
        assert!(fit(&[(1.0, 1.0)]).is_none());
        assert!(fit(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }
}
