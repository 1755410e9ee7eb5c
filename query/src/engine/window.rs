//! Range-vector functions: `rate` and friends, `deriv`, `predict_linear`,
//! `double_exponential_smoothing`, every `*_over_time`, `changes`, `resets`.
//! Each slides its window over one series' samples in one pass
//! ([`RangeInput::windows`]) and writes one value per step.

use super::QueryError;
use super::aggregate::{kahan_add, mean, quantile};
use super::columns::StepMatrixBuilder;
use super::eval::{Ctx, Grid, RangeInput, Value, Window, eval_range, eval_scalar};
use crate::ast::Boundary;
use crate::ast::Expr;

/// The range functions, resolved from the name once per call (not per window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeFn {
    Rate,
    Increase,
    Delta,
    Irate,
    Idelta,
    Deriv,
    PredictLinear,
    DoubleExponentialSmoothing,
    Changes,
    Resets,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    SumOverTime,
    CountOverTime,
    LastOverTime,
    FirstOverTime,
    PresentOverTime,
    StddevOverTime,
    StdvarOverTime,
    QuantileOverTime,
    MadOverTime,
    TsOfMaxOverTime,
    TsOfMinOverTime,
    TsOfLastOverTime,
    TsOfFirstOverTime,
}

impl RangeFn {
    fn from_name(name: &str) -> Option<RangeFn> {
        Some(match name {
            "rate" => RangeFn::Rate,
            "increase" => RangeFn::Increase,
            "delta" => RangeFn::Delta,
            "irate" => RangeFn::Irate,
            "idelta" => RangeFn::Idelta,
            "deriv" => RangeFn::Deriv,
            "predict_linear" => RangeFn::PredictLinear,
            "double_exponential_smoothing" => RangeFn::DoubleExponentialSmoothing,
            "changes" => RangeFn::Changes,
            "resets" => RangeFn::Resets,
            "avg_over_time" => RangeFn::AvgOverTime,
            "min_over_time" => RangeFn::MinOverTime,
            "max_over_time" => RangeFn::MaxOverTime,
            "sum_over_time" => RangeFn::SumOverTime,
            "count_over_time" => RangeFn::CountOverTime,
            "last_over_time" => RangeFn::LastOverTime,
            "first_over_time" => RangeFn::FirstOverTime,
            "present_over_time" => RangeFn::PresentOverTime,
            "stddev_over_time" => RangeFn::StddevOverTime,
            "stdvar_over_time" => RangeFn::StdvarOverTime,
            "quantile_over_time" => RangeFn::QuantileOverTime,
            "mad_over_time" => RangeFn::MadOverTime,
            "ts_of_max_over_time" => RangeFn::TsOfMaxOverTime,
            "ts_of_min_over_time" => RangeFn::TsOfMinOverTime,
            "ts_of_last_over_time" => RangeFn::TsOfLastOverTime,
            "ts_of_first_over_time" => RangeFn::TsOfFirstOverTime,
            _ => return None,
        })
    }
}

/// Whether `name` is implemented here.
pub(crate) fn is_range_fn(name: &str) -> bool {
    RangeFn::from_name(name).is_some()
}

pub(crate) fn eval(ctx: &Ctx, func: &str, args: &[Expr], grid: Grid) -> Result<Value, QueryError> {
    // The range argument's position differs per function.
    let (range_arg, scalars): (&Expr, Vec<Vec<f64>>) = match func {
        "quantile_over_time" => (&args[1], vec![eval_scalar(ctx, &args[0], grid)?]),
        "predict_linear" => (&args[0], vec![eval_scalar(ctx, &args[1], grid)?]),
        "double_exponential_smoothing" => (
            &args[0],
            vec![
                eval_scalar(ctx, &args[1], grid)?,
                eval_scalar(ctx, &args[2], grid)?,
            ],
        ),
        _ => (&args[0], Vec::new()),
    };
    let r = eval_range(ctx, range_arg, grid)?;
    if func == "double_exponential_smoothing" {
        for (&sf, &tf) in scalars[0].iter().zip(&scalars[1]) {
            if !(sf > 0.0 && sf < 1.0) {
                return Err(QueryError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                )));
            }
            if !(tf > 0.0 && tf < 1.0) {
                return Err(QueryError::Execution(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf}"
                )));
            }
        }
    }
    let Some(f) = RangeFn::from_name(func) else {
        return Err(QueryError::Execution(format!(
            "unknown range function {func}"
        )));
    };
    let keeps_name = matches!(f, RangeFn::LastOverTime | RangeFn::FirstOverTime);
    let anchored = r.boundary == Boundary::Anchored;
    let smoothed = r.boundary == Boundary::Smoothed;
    if smoothed && !matches!(f, RangeFn::Delta | RangeFn::Increase | RangeFn::Rate) {
        return Err(QueryError::Execution(format!(
            "smoothed modifier can only be used with: delta, increase, rate - not with {func}"
        )));
    }
    if anchored
        && !matches!(
            f,
            RangeFn::Changes | RangeFn::Delta | RangeFn::Increase | RangeFn::Rate | RangeFn::Resets
        )
    {
        return Err(QueryError::Execution(format!(
            "anchored modifier can only be used with: changes, delta, increase, rate, resets - not with {func}"
        )));
    }
    let mut pts: Vec<f64> = Vec::new();
    let mut b = StepMatrixBuilder::new(grid.n);
    let mut row: Vec<Option<usize>> = vec![None; r.batch.len()];
    let mut buf: Vec<f64> = Vec::new();
    let mut points = 0usize;
    r.windows(ctx, |s, k, w| {
        let (ts, vs) = (w.ts, w.vs);
        let end = r.ends[k];
        if smoothed {
            if let Some(v) = smoothed_change(w, end - r.range, end, f != RangeFn::Delta) {
                let v = if f == RangeFn::Rate {
                    v / (r.range as f64 / 1000.0)
                } else {
                    v
                };
                let rr =
                    *row[s].get_or_insert_with(|| b.push_row(r.batch.labels()[s].clone(), true));
                b.set(rr, k, v);
                points += 1;
            }
            return;
        }
        if ts.is_empty() {
            return;
        }
        if anchored {
            // The anchor and the window's samples, with no extrapolation.
            pts.clear();
            pts.extend(w.before.map(|a| a.1));
            pts.extend_from_slice(vs);
            let (first, last) = (pts[0], pts[pts.len() - 1]);
            let resets = || pts.windows(2).filter(|p| p[1] < p[0]);
            let v = match f {
                RangeFn::Changes => pts
                    .windows(2)
                    .filter(|p| p[0] != p[1] && !(p[0].is_nan() && p[1].is_nan()))
                    .count() as f64,
                RangeFn::Resets => resets().count() as f64,
                RangeFn::Delta => last - first,
                _ => {
                    let inc = last - first + resets().map(|p| p[0]).sum::<f64>();
                    if f == RangeFn::Rate {
                        inc / (r.range as f64 / 1000.0)
                    } else {
                        inc
                    }
                }
            };
            let rr = *row[s].get_or_insert_with(|| b.push_row(r.batch.labels()[s].clone(), true));
            b.set(rr, k, v);
            points += 1;
            return;
        }
        let v = match f {
            RangeFn::Rate => extrapolated(&r, end, w, true, true),
            RangeFn::Increase => extrapolated(&r, end, w, true, false),
            RangeFn::Delta => extrapolated(&r, end, w, false, false),
            RangeFn::Irate | RangeFn::Idelta => instant_delta(ts, vs, f == RangeFn::Irate),
            RangeFn::Deriv => (ts.len() >= 2).then(|| linear_regression(ts, vs, ts[0]).0),
            RangeFn::PredictLinear => (ts.len() >= 2).then(|| {
                // The intercept is at the evaluation time, even under `@`.
                let (slope, icept) = linear_regression(ts, vs, grid.t(k));
                slope * scalars[0][k] + icept
            }),
            RangeFn::DoubleExponentialSmoothing => holt(vs, scalars[0][k], scalars[1][k]),
            RangeFn::Changes => Some(
                vs.windows(2)
                    .filter(|w| w[0] != w[1] && !(w[0].is_nan() && w[1].is_nan()))
                    .count() as f64,
            ),
            RangeFn::Resets if !w.has_reset => Some(0.0),
            RangeFn::Resets => Some(vs.windows(2).filter(|p| p[1] < p[0]).count() as f64),
            RangeFn::AvgOverTime => Some(mean(vs)),
            RangeFn::SumOverTime => Some(sum(vs)),
            RangeFn::CountOverTime => Some(vs.len() as f64),
            RangeFn::PresentOverTime => Some(1.0),
            RangeFn::LastOverTime => vs.last().copied(),
            RangeFn::FirstOverTime => vs.first().copied(),
            RangeFn::MinOverTime => Some(
                vs.iter()
                    .fold(f64::NAN, |a, &v| if a.is_nan() || v < a { v } else { a }),
            ),
            RangeFn::MaxOverTime => Some(
                vs.iter()
                    .fold(f64::NAN, |a, &v| if a.is_nan() || v > a { v } else { a }),
            ),
            RangeFn::TsOfMaxOverTime | RangeFn::TsOfMinOverTime => {
                let max = f == RangeFn::TsOfMaxOverTime;
                let mut best: Option<(f64, i64)> = None;
                for (&t, &v) in ts.iter().zip(vs) {
                    best = match best {
                        None => Some((v, t)),
                        Some((bv, _)) if bv.is_nan() && !v.is_nan() => Some((v, t)),
                        Some((bv, _)) if (max && v >= bv) || (!max && v <= bv) => Some((v, t)),
                        b => b,
                    };
                }
                best.map(|(_, t)| t as f64 / 1000.0)
            }
            RangeFn::TsOfLastOverTime => ts.last().map(|t| *t as f64 / 1000.0),
            RangeFn::TsOfFirstOverTime => ts.first().map(|t| *t as f64 / 1000.0),
            RangeFn::StddevOverTime | RangeFn::StdvarOverTime => {
                let (mut count, mut mean, mut cm, mut m2, mut cv) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
                for &v in vs {
                    count += 1.0;
                    let delta = v - (mean + cm);
                    (mean, cm) = kahan_add(delta / count, mean, cm);
                    (m2, cv) = kahan_add(delta * (v - (mean + cm)), m2, cv);
                }
                let var = (m2 + cv) / count;
                Some(if f == RangeFn::StddevOverTime {
                    var.sqrt()
                } else {
                    var
                })
            }
            RangeFn::QuantileOverTime => {
                buf.clear();
                buf.extend_from_slice(vs);
                Some(quantile(scalars[0][k], &mut buf))
            }
            RangeFn::MadOverTime if vs.iter().any(|v| v.is_nan()) => Some(f64::NAN),
            RangeFn::MadOverTime => {
                buf.clear();
                buf.extend_from_slice(vs);
                let median = quantile(0.5, &mut buf);
                buf.iter_mut().for_each(|v| *v = (*v - median).abs());
                Some(quantile(0.5, &mut buf))
            }
        };
        if let Some(v) = v {
            let rr = *row[s].get_or_insert_with(|| {
                b.push_row(r.batch.labels()[s].clone(), r.drop_name[s] || !keeps_name)
            });
            b.set(rr, k, v);
            points += 1;
        }
    })?;
    ctx.account(points)?;
    if func == "quantile_over_time"
        && let Some(bad) = scalars[0].iter().find(|v| !(0.0..=1.0).contains(*v))
    {
        ctx.warn(
            &format!(
                "quantile value should be between 0 and 1, got {}",
                super::aggregate::format_value(*bad)
            ),
            args[0].pos,
        );
    }
    Ok(Value::Vector(b.finish()))
}

fn sum(vs: &[f64]) -> f64 {
    let (mut s, mut c) = (0.0, 0.0);
    for &v in vs {
        (s, c) = kahan_add(v, s, c);
    }
    s + c
}

/// The change between the interpolated values at `start` and `end`, from
/// the window's samples and the samples just outside it. With `counter`,
/// values are first made cumulative across resets. `None` when the samples
/// do not reach into the window from both sides.
fn smoothed_change(w: Window<'_>, start: i64, end: i64, counter: bool) -> Option<f64> {
    let mut pts: Vec<(i64, f64)> = Vec::with_capacity(w.ts.len() + 2);
    pts.extend(w.before);
    pts.extend(w.ts.iter().copied().zip(w.vs.iter().copied()));
    pts.extend(w.after);
    if w.ts.is_empty() && (w.before.is_none() || w.after.is_none()) {
        return None;
    }
    if counter {
        let mut offset = 0.0;
        let mut prev = f64::NEG_INFINITY;
        for p in pts.iter_mut() {
            if p.1 < prev {
                offset += prev;
            }
            prev = p.1;
            p.1 += offset;
        }
    }
    // The value at `t`: interpolated between the points around it, or the
    // nearest point when `t` is outside them.
    let at = |t: i64| -> f64 {
        let i = pts.partition_point(|p| p.0 <= t);
        match (i.checked_sub(1).map(|j| pts[j]), pts.get(i)) {
            (Some(a), Some(b)) if a.0 < t => {
                a.1 + (b.1 - a.1) * (t - a.0) as f64 / (b.0 - a.0) as f64
            }
            (Some(a), _) => a.1,
            (None, Some(b)) => b.1,
            (None, None) => f64::NAN,
        }
    };
    Some(at(end) - at(start))
}

/// `rate`, `increase` and `delta`: the change over the window, corrected
/// for counter resets, extrapolated towards the window's edges.
fn extrapolated(
    r: &RangeInput,
    end: i64,
    w: Window<'_>,
    counter: bool,
    per_second: bool,
) -> Option<f64> {
    let (ts, vs) = (w.ts, w.vs);
    if ts.len() < 2 {
        return None;
    }
    let range_start = end - r.range;
    let mut result = vs[vs.len() - 1] - vs[0];
    if counter && w.has_reset {
        for p in vs.windows(2) {
            if p[1] < p[0] {
                result += p[0];
            }
        }
    }
    let mut to_start = (ts[0] - range_start) as f64 / 1000.0;
    let mut to_end = (end - ts[ts.len() - 1]) as f64 / 1000.0;
    let sampled = (ts[ts.len() - 1] - ts[0]) as f64 / 1000.0;
    let avg_step = sampled / (ts.len() - 1) as f64;
    let threshold = avg_step * 1.1;
    if to_start >= threshold {
        to_start = avg_step / 2.0;
    }
    if counter && result > 0.0 && vs[0] >= 0.0 {
        let to_zero = sampled * (vs[0] / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_step / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if per_second {
        factor /= r.range as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_delta(ts: &[i64], vs: &[f64], rate: bool) -> Option<f64> {
    if ts.len() < 2 {
        return None;
    }
    let n = ts.len();
    let (prev, last) = (vs[n - 2], vs[n - 1]);
    let mut d = last - prev;
    if rate && last < prev {
        d = last;
    }
    if !rate {
        return Some(d);
    }
    let dt = (ts[n - 1] - ts[n - 2]) as f64 / 1000.0;
    if dt == 0.0 {
        return None;
    }
    Some(d / dt)
}

/// Least-squares slope and intercept, x in seconds relative to `t0`.
fn linear_regression(ts: &[i64], vs: &[f64], t0: i64) -> (f64, f64) {
    let init = vs[0];
    let const_y = vs.iter().all(|v| *v == init);
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let n = vs.len() as f64;
    let (mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (&t, &v) in ts.iter().zip(vs) {
        let x = (t - t0) as f64 / 1000.0;
        (sx, cx) = kahan_add(x, sx, cx);
        (sy, cy) = kahan_add(v, sy, cy);
        (sxy, cxy) = kahan_add(x * v, sxy, cxy);
        (sx2, cx2) = kahan_add(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

/// Holt's double exponential smoothing, as Prometheus computes it.
fn holt(vs: &[f64], sf: f64, tf: f64) -> Option<f64> {
    if vs.len() < 2 {
        return None;
    }
    let mut s0 = vs[0];
    let mut s1 = vs[1];
    let mut b = vs[1] - vs[0];
    for &v in &vs[2..] {
        let x = sf * v;
        b = tf * (s1 - s0) + (1.0 - tf) * b;
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}
