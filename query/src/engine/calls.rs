//! Function calls: dispatch, and every function whose input is an instant
//! vector or a scalar (math, clamping, dates, labels, sorting, absent,
//! scalar/vector conversion). Range-vector functions are in `window`,
//! classic histograms in `histogram`.

use std::collections::HashSet;

use kiln_storage::{Labels, MatchOp};

use super::QueryError;
use super::columns::{StepMatrix, StepMatrixBuilder};
use super::eval::{
    Ctx, Grid, Value, eval, eval_range, eval_scalar, eval_vector, eval_vector_selector,
};
use crate::ast::{Expr, ExprKind};

/// Applies `f` to every present value, keeping series and presence.
pub(crate) fn map_values(m: StepMatrix, f: impl Fn(f64) -> f64) -> StepMatrix {
    let mut b = StepMatrixBuilder::new(m.steps);
    for s in 0..m.len() {
        let r = b.push_row(m.labels[s].clone(), m.drop_name[s]);
        for k in 0..m.steps {
            if let Some(v) = m.get(s, k) {
                b.set(r, k, f(v));
            }
        }
    }
    b.finish()
}

/// Like [`map_values`] and marks the metric name for removal.
fn map_drop(m: StepMatrix, f: impl Fn(f64) -> f64) -> StepMatrix {
    let mut out = map_values(m, f);
    out.drop_name.iter_mut().for_each(|d| *d = true);
    out
}

/// Like [`map_drop`] with a per-step parameter.
fn map_drop_k(m: StepMatrix, f: impl Fn(f64, usize) -> f64) -> StepMatrix {
    let mut b = StepMatrixBuilder::new(m.steps);
    for s in 0..m.len() {
        let r = b.push_row(m.labels[s].clone(), true);
        for k in 0..m.steps {
            if let Some(v) = m.get(s, k) {
                b.set(r, k, f(v, k));
            }
        }
    }
    b.finish()
}

/// Go's `math.Max`/`math.Min`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v| v * 180.0 / std::f64::consts::PI,
        "rad" => |v| v * std::f64::consts::PI / 180.0,
        "sgn" => |v: f64| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                v
            }
        },
        _ => return None,
    })
}

pub(crate) fn eval_call(
    ctx: &Ctx,
    call: &Expr,
    func: &str,
    args: &[Expr],
    grid: Grid,
) -> Result<Value, QueryError> {
    if let Some(f) = math_fn(func) {
        return Ok(Value::Vector(map_drop(
            eval_vector(ctx, &args[0], grid)?,
            f,
        )));
    }
    if super::window::is_range_fn(func) {
        return super::window::eval(ctx, func, args, grid);
    }
    let scalar_steps =
        |f: &dyn Fn(i64) -> f64| Value::Scalar((0..grid.n).map(|k| f(grid.t(k))).collect());
    Ok(match func {
        "time" => scalar_steps(&|t| t as f64 / 1000.0),
        "min_of" | "max_of" => {
            let a = eval_scalar(ctx, &args[0], grid)?;
            let b = eval_scalar(ctx, &args[1], grid)?;
            let f = if func == "min_of" { go_min } else { go_max };
            Value::Scalar(a.iter().zip(&b).map(|(x, y)| f(*x, *y)).collect())
        }
        "pi" => Value::Scalar(vec![std::f64::consts::PI; grid.n]),
        "start" => Value::Scalar(vec![ctx.start as f64 / 1000.0; grid.n]),
        "end" => Value::Scalar(vec![ctx.end as f64 / 1000.0; grid.n]),
        "step" => Value::Scalar(vec![ctx.interval as f64 / 1000.0; grid.n]),
        "range" => Value::Scalar(vec![(ctx.end - ctx.start) as f64 / 1000.0; grid.n]),
        "vector" => {
            let v = eval_scalar(ctx, &args[0], grid)?;
            let mut b = StepMatrixBuilder::new(grid.n);
            let r = b.push_row(Labels::empty(), false);
            for (k, x) in v.iter().enumerate() {
                b.set(r, k, *x);
            }
            Value::Vector(b.finish())
        }
        "scalar" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            Value::Scalar(
                (0..grid.n)
                    .map(|k| {
                        let mut it = (0..m.len()).filter_map(|s| m.get(s, k));
                        match (it.next(), it.next()) {
                            (Some(v), None) => v,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            )
        }
        "round" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            let to = match args.get(1) {
                Some(a) => eval_scalar(ctx, a, grid)?,
                None => vec![1.0; grid.n],
            };
            Value::Vector(map_drop_k(m, |v, k| {
                let inv = 1.0 / to[k];
                (v * inv + 0.5).floor() / inv
            }))
        }
        "clamp" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            let lo = eval_scalar(ctx, &args[1], grid)?;
            let hi = eval_scalar(ctx, &args[2], grid)?;
            let mut b = StepMatrixBuilder::new(grid.n);
            for s in 0..m.len() {
                let r = b.push_row(m.labels[s].clone(), true);
                for k in 0..grid.n {
                    if let Some(v) = m.get(s, k)
                        && lo[k] <= hi[k]
                    {
                        b.set(r, k, go_max(lo[k], go_min(hi[k], v)));
                    }
                }
            }
            Value::Vector(b.finish())
        }
        "clamp_min" | "clamp_max" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            let p = eval_scalar(ctx, &args[1], grid)?;
            let max = func == "clamp_max";
            Value::Vector(map_drop_k(m, |v, k| {
                if max {
                    go_min(v, p[k])
                } else {
                    go_max(v, p[k])
                }
            }))
        }
        "timestamp" => {
            let mut inner = &args[0];
            while let ExprKind::Paren(e) = &inner.kind {
                inner = e;
            }
            let m = if let ExprKind::Vector(sel) = &inner.kind {
                eval_vector_selector(ctx, sel, grid, true)?
            } else {
                let m = eval_vector(ctx, inner, grid)?;
                map_values_k(m, |_, k| grid.t(k) as f64 / 1000.0)
            };
            let mut m = m;
            m.drop_name.iter_mut().for_each(|d| *d = true);
            Value::Vector(m)
        }
        "minute" | "hour" | "day_of_week" | "day_of_month" | "day_of_year" | "days_in_month"
        | "month" | "year" => {
            let m = match args.first() {
                Some(a) => eval_vector(ctx, a, grid)?,
                None => {
                    let mut b = StepMatrixBuilder::new(grid.n);
                    let r = b.push_row(Labels::empty(), false);
                    for k in 0..grid.n {
                        b.set(r, k, grid.t(k) as f64 / 1000.0);
                    }
                    b.finish()
                }
            };
            let f = date_fn(func);
            Value::Vector(map_drop(m, f))
        }
        "sort" | "sort_desc" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            if ctx.interval > 0 {
                ctx.warn(
                    "sort is ineffective for range queries since results are always ordered by labels",
                    call.pos,
                );
            }
            Value::Vector(sort_by_value(m, func == "sort_desc"))
        }
        "sort_by_label" | "sort_by_label_desc" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            let mut names = Vec::new();
            for a in &args[1..] {
                if let Value::Str(s) = eval(ctx, a, grid)? {
                    names.push(s);
                }
            }
            if ctx.interval > 0 {
                ctx.warn(
                    "sort is ineffective for range queries since results are always ordered by labels",
                    call.pos,
                );
            }
            Value::Vector(sort_by_labels(m, &names, func == "sort_by_label_desc"))
        }
        "label_replace" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            let s = string_args(ctx, &args[1..], grid)?;
            Value::Vector(label_replace(m, &s[0], &s[1], &s[2], &s[3])?)
        }
        "label_join" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            let s = string_args(ctx, &args[1..], grid)?;
            Value::Vector(label_join(m, &s[0], &s[1], &s[2..])?)
        }
        "absent" => {
            let m = eval_vector(ctx, &args[0], grid)?;
            let labels = absent_labels(&args[0]);
            let mut b = StepMatrixBuilder::new(grid.n);
            let r = b.push_row(labels, false);
            for k in 0..grid.n {
                if !(0..m.len()).any(|s| m.present(s, k)) {
                    b.set(r, k, 1.0);
                }
            }
            Value::Vector(b.finish())
        }
        "absent_over_time" => {
            let r = eval_range(ctx, &args[0], grid)?;
            let labels = absent_labels(&args[0]);
            let mut any = vec![false; grid.n];
            r.windows(ctx, |_, k, w| {
                if !w.ts.is_empty() {
                    any[k] = true;
                }
            })?;
            let mut b = StepMatrixBuilder::new(grid.n);
            let row = b.push_row(labels, false);
            for (k, a) in any.iter().enumerate() {
                if !a {
                    b.set(row, k, 1.0);
                }
            }
            Value::Vector(b.finish())
        }
        "info" => return super::info::eval(ctx, args, grid),
        "histogram_quantile" | "histogram_quantiles" | "histogram_fraction" => {
            return super::histogram::eval(ctx, func, args, grid);
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
        | "histogram_stdvar" => {
            // Native histograms only: float series yield nothing.
            eval_vector(ctx, &args[0], grid)?;
            Value::Vector(StepMatrix::empty(grid.n))
        }
        other => {
            return Err(QueryError::Execution(format!(
                "function {other:?} is not implemented"
            )));
        }
    })
}

fn map_values_k(m: StepMatrix, f: impl Fn(f64, usize) -> f64) -> StepMatrix {
    let mut b = StepMatrixBuilder::new(m.steps);
    for s in 0..m.len() {
        let r = b.push_row(m.labels[s].clone(), m.drop_name[s]);
        for k in 0..m.steps {
            if let Some(v) = m.get(s, k) {
                b.set(r, k, f(v, k));
            }
        }
    }
    b.finish()
}

fn string_args(ctx: &Ctx, args: &[Expr], grid: Grid) -> Result<Vec<String>, QueryError> {
    args.iter()
        .map(|a| match eval(ctx, a, grid)? {
            Value::Str(s) => Ok(s),
            _ => Err(QueryError::Execution("expected string argument".into())),
        })
        .collect()
}

/// The labels of `absent(sel)`: the selector's equality matchers on labels
/// other than the name, unless a label is matched twice.
fn absent_labels(arg: &Expr) -> Labels {
    let sel = match &arg.kind {
        ExprKind::Vector(s) | ExprKind::Matrix { sel: s, .. } => Some(s),
        ExprKind::Subquery { expr, .. } => match &expr.kind {
            ExprKind::Vector(s) => Some(s),
            _ => None,
        },
        _ => None,
    };
    let Some(sel) = sel else {
        return Labels::empty();
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut dup: HashSet<String> = HashSet::new();
    for m in &sel.matchers {
        if m.name() == "__name__" {
            continue;
        }
        if m.op() == MatchOp::Equal
            && !pairs.iter().any(|(n, _)| n == m.name())
            && !dup.contains(m.name())
        {
            pairs.push((m.name().to_owned(), m.value().to_owned()));
        } else {
            pairs.retain(|(n, _)| n != m.name());
            dup.insert(m.name().to_owned());
        }
    }
    Labels::from_pairs(pairs).unwrap_or_default()
}

fn sort_by_value(m: StepMatrix, desc: bool) -> StepMatrix {
    let mut order: Vec<usize> = (0..m.len()).collect();
    if m.steps == 1 {
        order.sort_by(|&a, &b| {
            let (va, vb) = (
                m.get(a, 0).unwrap_or(f64::NAN),
                m.get(b, 0).unwrap_or(f64::NAN),
            );
            // NaN sorts last either way.
            match (va.is_nan(), vb.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ => {
                    let o = va.partial_cmp(&vb).unwrap_or(std::cmp::Ordering::Equal);
                    if desc { o.reverse() } else { o }
                }
            }
        });
    }
    reorder(m, &order)
}

/// Compares label values in natural order: digit runs numerically.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut ai, mut bi) = (a.char_indices().peekable(), b.char_indices().peekable());
    loop {
        match (ai.peek().copied(), bi.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some((_, ca)), Some((_, cb))) => {
                if ca.is_ascii_digit() && cb.is_ascii_digit() {
                    let mut na = String::new();
                    while let Some((_, c)) = ai.peek().copied().filter(|(_, c)| c.is_ascii_digit())
                    {
                        na.push(c);
                        ai.next();
                    }
                    let mut nb = String::new();
                    while let Some((_, c)) = bi.peek().copied().filter(|(_, c)| c.is_ascii_digit())
                    {
                        nb.push(c);
                        bi.next();
                    }
                    let ta = na.trim_start_matches('0');
                    let tb = nb.trim_start_matches('0');
                    let o = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                    if o != std::cmp::Ordering::Equal {
                        return o;
                    }
                } else {
                    let o = ca.cmp(&cb);
                    if o != std::cmp::Ordering::Equal {
                        return o;
                    }
                    ai.next();
                    bi.next();
                }
            }
        }
    }
}

fn sort_by_labels(m: StepMatrix, names: &[String], desc: bool) -> StepMatrix {
    let mut order: Vec<usize> = (0..m.len()).collect();
    order.sort_by(|&a, &b| {
        let (la, lb) = (&m.labels[a], &m.labels[b]);
        for n in names {
            let o = natural_cmp(la.get(n).unwrap_or(""), lb.get(n).unwrap_or(""));
            if o != std::cmp::Ordering::Equal {
                return if desc { o.reverse() } else { o };
            }
        }
        let o = la.cmp(lb);
        if desc { o.reverse() } else { o }
    });
    reorder(m, &order)
}

fn reorder(m: StepMatrix, order: &[usize]) -> StepMatrix {
    let mut b = StepMatrixBuilder::new(m.steps);
    for &s in order {
        let r = b.push_row(m.labels[s].clone(), m.drop_name[s]);
        for k in 0..m.steps {
            if let Some(v) = m.get(s, k) {
                b.set(r, k, v);
            }
        }
    }
    b.finish()
}

fn relabel(
    m: StepMatrix,
    dst: &str,
    mut f: impl FnMut(&Labels) -> Option<String>,
) -> Result<StepMatrix, QueryError> {
    let mut b = StepMatrixBuilder::new(m.steps);
    for s in 0..m.len() {
        let (labels, drop) = match f(&m.labels[s]) {
            Some(v) => {
                let mut lb = m.labels[s].builder();
                lb.set(dst, &v);
                let l = lb
                    .build()
                    .map_err(|e| QueryError::Execution(e.to_string()))?;
                (l, m.drop_name[s] && dst != "__name__")
            }
            None => (m.labels[s].clone(), m.drop_name[s]),
        };
        let r = b.push_row(labels, drop);
        for k in 0..m.steps {
            if let Some(v) = m.get(s, k) {
                b.set(r, k, v);
            }
        }
    }
    let out = b.finish();
    check_unique(&out)?;
    Ok(out)
}

/// Fails when two series with the same labels are present at one step.
fn check_unique(m: &StepMatrix) -> Result<(), QueryError> {
    let mut seen: std::collections::HashMap<(&Labels, bool), usize> =
        std::collections::HashMap::new();
    for s in 0..m.len() {
        if let Some(&p) = seen.get(&(&m.labels[s], m.drop_name[s])) {
            if (0..m.steps).any(|k| m.present(p, k) && m.present(s, k)) {
                return Err(QueryError::Execution(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
        } else {
            seen.insert((&m.labels[s], m.drop_name[s]), s);
        }
    }
    Ok(())
}

fn label_replace(
    m: StepMatrix,
    dst: &str,
    repl: &str,
    src: &str,
    regex: &str,
) -> Result<StepMatrix, QueryError> {
    let translated = kiln_storage::matcher::translate_go_regex(regex);
    let re = regex::Regex::new(&format!("^(?s:{translated})$")).map_err(|e| {
        QueryError::Execution(format!(
            "invalid regular expression in label_replace(): {regex}: {e}"
        ))
    })?;
    if dst.is_empty() {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    relabel(m, dst, |l| {
        let v = l.get(src).unwrap_or("");
        re.captures(v).map(|caps| {
            let mut out = String::new();
            caps.expand(repl, &mut out);
            out
        })
    })
}

fn label_join(
    m: StepMatrix,
    dst: &str,
    sep: &str,
    srcs: &[String],
) -> Result<StepMatrix, QueryError> {
    if dst.is_empty() {
        return Err(QueryError::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    relabel(m, dst, |l| {
        Some(
            srcs.iter()
                .map(|s| l.get(s).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(sep),
        )
    })
}

/// Civil date of a day count since the epoch (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn date_fn(name: &str) -> fn(f64) -> f64 {
    fn parts(v: f64) -> Option<(i64, i64)> {
        if !v.is_finite() || v.abs() > 1e15 {
            return None;
        }
        let secs = v.floor() as i64;
        Some((secs.div_euclid(86_400), secs.rem_euclid(86_400)))
    }
    match name {
        "minute" => |v| parts(v).map_or(f64::NAN, |(_, s)| ((s / 60) % 60) as f64),
        "hour" => |v| parts(v).map_or(f64::NAN, |(_, s)| (s / 3600) as f64),
        "day_of_week" => |v| parts(v).map_or(f64::NAN, |(d, _)| (d + 4).rem_euclid(7) as f64),
        "day_of_month" => |v| parts(v).map_or(f64::NAN, |(d, _)| civil(d).2 as f64),
        "month" => |v| parts(v).map_or(f64::NAN, |(d, _)| civil(d).1 as f64),
        "year" => |v| parts(v).map_or(f64::NAN, |(d, _)| civil(d).0 as f64),
        "day_of_year" => |v| {
            parts(v).map_or(f64::NAN, |(d, _)| {
                let (y, _, _) = civil(d);
                let jan1 = days_from_civil(y, 1, 1);
                (d - jan1 + 1) as f64
            })
        },
        _ => |v| {
            parts(v).map_or(f64::NAN, |(d, _)| {
                let (y, m, _) = civil(d);
                let dim = [
                    31,
                    if is_leap(y) { 29 } else { 28 },
                    31,
                    30,
                    31,
                    30,
                    31,
                    31,
                    30,
                    31,
                    30,
                    31,
                ];
                dim[(m - 1) as usize] as f64
            })
        },
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000i64, -1, 0, 59, 365, 11_016, 19_000, 2_000_000] {
            let (y, m, d) = civil(days);
            assert_eq!(days_from_civil(y, m as i64, d as i64), days);
        }
        assert_eq!(civil(0), (1970, 1, 1));
        // 2000-02-29 was a leap day.
        assert_eq!(civil(11_016), (2000, 2, 29));
    }

    #[test]
    fn natural_order_compares_digit_runs_as_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(natural_cmp("4m5", "4m600"), Less);
        assert_eq!(natural_cmp("1.11.3", "1.2.3"), Greater);
        assert_eq!(natural_cmp("a", "a"), Equal);
    }
}
