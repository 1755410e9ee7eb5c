//! `histogram_quantile`, `histogram_quantiles` and `histogram_fraction`
//! over classic histograms: series with an `le` label, grouped by their
//! other labels (name dropped).

use std::collections::HashMap;

use kiln_storage::Labels;

use super::QueryError;
use super::columns::StepMatrixBuilder;
use super::eval::{Ctx, Grid, Value, eval_scalar, eval_vector};
use crate::ast::{Expr, PosRange};

/// Monotonicity fixes are only reported when they exceed this tolerance.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// What a call computes per group and step.
enum Kind {
    /// `histogram_fraction(lower, upper, v)`.
    Fraction(Vec<f64>, Vec<f64>),
    /// `histogram_quantile(q, v)` (no label) or `histogram_quantiles(v,
    /// label, q…)`: one output series per quantile, told apart by `label`.
    Quantiles(Option<String>, Vec<(Vec<f64>, PosRange)>),
}

pub(crate) fn eval(ctx: &Ctx, func: &str, args: &[Expr], grid: Grid) -> Result<Value, QueryError> {
    let (kind, varg) = match func {
        "histogram_fraction" => (
            Kind::Fraction(
                eval_scalar(ctx, &args[0], grid)?,
                eval_scalar(ctx, &args[1], grid)?,
            ),
            &args[2],
        ),
        "histogram_quantiles" => {
            let Value::Str(label) = super::eval::eval(ctx, &args[1], grid)? else {
                return Err(QueryError::Execution("expected a label name".into()));
            };
            let mut qs = Vec::new();
            for a in &args[2..] {
                qs.push((eval_scalar(ctx, a, grid)?, a.pos));
            }
            (Kind::Quantiles(Some(label), qs), &args[0])
        }
        _ => (
            Kind::Quantiles(None, vec![(eval_scalar(ctx, &args[0], grid)?, args[0].pos)]),
            &args[1],
        ),
    };
    let m = eval_vector(ctx, varg, grid)?;
    let mut groups: HashMap<Labels, usize> = HashMap::new();
    let mut members: Vec<Vec<(f64, usize)>> = Vec::new();
    let mut labels: Vec<Labels> = Vec::new();
    for s in 0..m.len() {
        let l = &m.labels[s];
        let le = l.get("le").and_then(parse_le);
        let Some(le) = le else {
            let raw = l.get("le").unwrap_or("");
            ctx.warn(
                &format!(
                    "bucket label \"le\" is missing or has a malformed value of {raw:?} for metric name {:?}",
                    l.metric_name().unwrap_or("")
                ),
                varg.pos,
            );
            continue;
        };
        let mut b = l.builder();
        b.del("le");
        let g = b.build().unwrap_or_default();
        let idx = *groups.entry(g.clone()).or_insert_with(|| {
            labels.push(g);
            members.push(Vec::new());
            labels.len() - 1
        });
        members[idx].push((le, s));
    }
    let mut b = StepMatrixBuilder::new(grid.n);
    // Output rows: per group, one per quantile (or one for the fraction).
    let per_group = match &kind {
        Kind::Fraction(..) => 1,
        Kind::Quantiles(_, qs) => qs.len(),
    };
    for l in &labels {
        for i in 0..per_group {
            let mut row = l.clone();
            if let Kind::Quantiles(Some(name), qs) = &kind {
                if l.contains(name) {
                    return Err(QueryError::Execution(format!(
                        "histogram_quantiles: label {name:?} already exists on series {l}"
                    )));
                }
                let mut lb = l.builder();
                lb.set(
                    name,
                    &format!("{:?}", qs[i].0.first().copied().unwrap_or(f64::NAN)),
                );
                row = lb
                    .build()
                    .map_err(|e| QueryError::Execution(e.to_string()))?;
            }
            // Grouped with the name, which is dropped from the result.
            b.push_row(row, true);
        }
    }
    if let Kind::Quantiles(_, qs) = &kind {
        for (q, pos) in qs {
            if let Some(bad) = q.iter().find(|q| q.is_nan() || !(0.0..=1.0).contains(*q)) {
                ctx.warn(
                    &format!(
                        "quantile value should be between 0 and 1, got {}",
                        super::aggregate::format_value(*bad)
                    ),
                    *pos,
                );
            }
        }
    }
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for (g, mem) in members.iter().enumerate() {
        for k in 0..grid.n {
            buckets.clear();
            buckets.extend(
                mem.iter()
                    .filter_map(|&(le, s)| m.get(s, k).map(|v| (le, v))),
            );
            if buckets.is_empty() {
                continue;
            }
            match &kind {
                Kind::Fraction(lo, hi) => {
                    b.set(g, k, bucket_fraction(lo[k], hi[k], &mut buckets));
                }
                Kind::Quantiles(_, qs) => {
                    for (i, (q, _)) in qs.iter().enumerate() {
                        let (v, fixed) = bucket_quantile(q[k], &mut buckets);
                        if fixed {
                            ctx.info(
                                &format!(
                                    "input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {:?}",
                                    m.labels[mem[0].1].metric_name().unwrap_or("")
                                ),
                                varg.pos,
                            );
                        }
                        b.set(g * per_group + i, k, v);
                    }
                }
            }
        }
    }
    Ok(Value::Vector(b.finish()))
}

fn parse_le(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

fn sort_and_merge(buckets: &mut Vec<(f64, f64)>) {
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    // Buckets with the same upper bound are summed.
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(le, c) in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.0 == le => last.1 += c,
            _ => out.push((le, c)),
        }
    }
    *buckets = out;
}

/// Makes counts monotonic; returns whether a real fix was needed.
fn ensure_monotonic(buckets: &mut [(f64, f64)]) -> bool {
    let mut fixed = false;
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            if (max - b.1) > SMALL_DELTA_TOLERANCE * max.abs() {
                fixed = true;
            }
            b.1 = max;
        }
    }
    fixed
}

/// Prometheus's quantile over classic buckets, linear within a bucket.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    sort_and_merge(buckets);
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return (f64::NAN, false);
    }
    if buckets.len() < 2 {
        return (f64::NAN, false);
    }
    let fixed = ensure_monotonic(buckets);
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 || observations.is_nan() {
        return (f64::NAN, fixed);
    }
    let rank = q * observations;
    let mut b = buckets.partition_point(|x| x.1 < rank);
    if b == buckets.len() - 1 {
        return (buckets[buckets.len() - 2].0, fixed);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return (buckets[0].0, fixed);
    }
    let (mut bucket_start, mut bucket_end, mut count, mut rank) =
        (0.0, buckets[b].0, buckets[b].1, rank);
    if b > 0 {
        bucket_start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    if b == buckets.len() {
        b = buckets.len() - 1;
        bucket_end = buckets[b].0;
    }
    (
        bucket_start + (bucket_end - bucket_start) * (rank / count),
        fixed,
    )
}

/// The fraction of observations between `lower` and `upper`. A bucket of
/// finite width contributes the share of it that overlaps the interval
/// (linear interpolation); a bucket of infinite width contributes wholly
/// when the interval reaches its infinite end, and not at all otherwise.
fn bucket_fraction(lower: f64, upper: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    sort_and_merge(buckets);
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    ensure_monotonic(buckets);
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let mut lo = if buckets[0].0 > 0.0 {
        0.0
    } else {
        f64::NEG_INFINITY
    };
    let mut prev_count = 0.0;
    let mut inside = 0.0;
    for &(hi, cum) in buckets.iter() {
        let count = cum - prev_count;
        if hi == f64::INFINITY {
            if upper == f64::INFINITY {
                inside += count;
            }
        } else if lo == f64::NEG_INFINITY {
            if lower == f64::NEG_INFINITY {
                inside += count;
            }
        } else {
            let overlap = (hi.min(upper) - lo.max(lower)).max(0.0);
            if hi > lo {
                inside += count * overlap / (hi - lo);
            }
        }
        lo = hi;
        prev_count = cum;
    }
    inside / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_within_the_bucket() {
        let mut b = vec![(f64::INFINITY, 100.0), (1.0, 50.0), (2.0, 100.0)];
        assert_eq!(bucket_quantile(0.5, &mut b), (1.0, false));
        let mut b = vec![(1.0, 50.0), (2.0, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(bucket_quantile(0.75, &mut b), (1.5, false));
        // Without a +Inf bucket there is no answer.
        let mut b = vec![(1.0, 50.0)];
        assert!(bucket_quantile(0.5, &mut b).0.is_nan());
    }

    #[test]
    fn non_monotonic_buckets_are_fixed_and_reported() {
        let mut b = vec![(1.0, 10.0), (2.0, 8.0), (f64::INFINITY, 20.0)];
        let (_, fixed) = bucket_quantile(0.5, &mut b);
        assert!(fixed);
    }

    #[test]
    fn fraction_counts_infinite_buckets_only_at_their_open_end() {
        let mut b = vec![(1.0, 10.0), (2.0, 30.0), (f64::INFINITY, 40.0)];
        assert_eq!(bucket_fraction(0.0, 1.0, &mut b.clone()), 0.25);
        assert_eq!(bucket_fraction(1.5, f64::INFINITY, &mut b.clone()), 0.5);
        assert_eq!(bucket_fraction(1.5, 1e9, &mut b), 0.25);
    }
}
