//! Aggregation operators. Series are assigned to groups once (by their
//! `by`/`without` labels); then every step column is reduced per group.
//! `topk`, `bottomk`, `limitk` and `limit_ratio` keep input series; the
//! others build one output series per group.

use std::collections::HashMap;

use kiln_storage::{Labels, LabelsBuilder};

use super::QueryError;
use super::columns::{StepMatrix, StepMatrixBuilder};
use super::eval::{self as ev, Ctx, Grid, Value, eval_vector};
use crate::ast::{AggOp, Expr, PosRange};

/// Kahan–Babuška summation step, as Prometheus sums floats.
#[inline]
pub(crate) fn kahan_add(x: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + x;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= x.abs() {
        c + ((sum - t) + x)
    } else {
        c + ((x - t) + sum)
    };
    (t, c)
}

/// A streaming aggregate of one group at one step. Values are pushed in
/// series order, which is the order Prometheus folds them in, so results
/// are bit-identical to a per-step loop over the group's members.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Acc {
    n: f64,
    /// Sum, or running mean once `incremental`; min/max; Welford mean.
    a: f64,
    /// Kahan compensation; Welford M2.
    c: f64,
    incremental: bool,
}

impl Acc {
    #[inline]
    pub fn push(&mut self, op: AggOp, v: f64) {
        self.n += 1.0;
        match op {
            AggOp::Sum => (self.a, self.c) = kahan_add(v, self.a, self.c),
            AggOp::Avg => {
                if !self.incremental {
                    let (ns, nc) = kahan_add(v, self.a, self.c);
                    if self.n == 1.0 || !ns.is_infinite() {
                        (self.a, self.c) = (ns, nc);
                        return;
                    }
                    // The sum would overflow: continue as an incremental mean.
                    self.incremental = true;
                    self.a /= self.n - 1.0;
                    self.c /= self.n - 1.0;
                }
                let q = (self.n - 1.0) / self.n;
                (self.a, self.c) = kahan_add(v / self.n, q * self.a, q * self.c);
            }
            AggOp::Min if self.n == 1.0 || self.a.is_nan() || v < self.a => self.a = v,
            AggOp::Max if self.n == 1.0 || self.a.is_nan() || v > self.a => self.a = v,
            AggOp::Stddev | AggOp::Stdvar => {
                let delta = v - self.a;
                self.a += delta / self.n;
                self.c += delta * (v - self.a);
            }
            _ => {}
        }
    }

    pub fn finish(&self, op: AggOp) -> f64 {
        match op {
            AggOp::Sum => self.a + self.c,
            AggOp::Avg if self.incremental => self.a + self.c,
            AggOp::Avg => (self.a + self.c) / self.n,
            AggOp::Count => self.n,
            AggOp::Group => 1.0,
            AggOp::Min | AggOp::Max => self.a,
            AggOp::Stdvar => self.c / self.n,
            AggOp::Stddev => (self.c / self.n).sqrt(),
            _ => f64::NAN,
        }
    }
}

/// The mean as Prometheus computes it: a Kahan-compensated sum divided by
/// the count, switching to an incremental mean once the sum would overflow.
pub(crate) fn mean(vals: &[f64]) -> f64 {
    let mut acc = Acc::default();
    for &v in vals {
        acc.push(AggOp::Avg, v);
    }
    acc.finish(AggOp::Avg)
}

/// The group labels of a series.
fn group_labels(l: &Labels, grouping: &[String], without: bool) -> Labels {
    let mut b: LabelsBuilder = l.builder();
    if without {
        for n in super::eval::NAME_LABELS {
            b.del(n);
        }
        for g in grouping {
            b.del(g);
        }
    } else {
        b.retain(|n, _| grouping.iter().any(|g| g == n));
    }
    b.build().unwrap_or_default()
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` with Prometheus's specials.
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// `phi`-quantile of `vals` (sorted in place), Prometheus's interpolation.
pub(crate) fn quantile(phi: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || phi.is_nan() {
        return f64::NAN;
    }
    if phi < 0.0 {
        return f64::NEG_INFINITY;
    }
    if phi > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = vals.len() as f64;
    let rank = phi * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    vals[lower as usize] * (1.0 - weight) + vals[upper as usize] * weight
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn eval(
    ctx: &Ctx,
    pos: PosRange,
    op: AggOp,
    inner: &Expr,
    param: Option<&Expr>,
    grouping: &[String],
    without: bool,
    grid: Grid,
) -> Result<Value, QueryError> {
    let (scalar_param, label_param) = match param {
        Some(p) => match ev::eval(ctx, p, grid)? {
            Value::Scalar(v) => (Some(v), None),
            Value::Str(s) => (None, Some(s)),
            _ => (None, None),
        },
        None => (None, None),
    };
    let m = eval_vector(ctx, inner, grid)?;

    let mut group_of: Vec<usize> = Vec::with_capacity(m.len());
    let mut groups: Vec<Labels> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for l in &m.labels {
        let g = group_labels(l, grouping, without);
        let idx = *index.entry(g.clone()).or_insert_with(|| {
            groups.push(g);
            groups.len() - 1
        });
        group_of.push(idx);
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (s, g) in group_of.iter().enumerate() {
        members[*g].push(s);
    }
    match op {
        AggOp::Topk | AggOp::Bottomk | AggOp::Limitk | AggOp::LimitRatio => {
            let p = scalar_param.unwrap_or_default();
            select_series(ctx, pos, op, m, &members, &p, grid).map(Value::Vector)
        }
        AggOp::CountValues => {
            let name = label_param.unwrap_or_default();
            if name.is_empty() {
                return Err(QueryError::Execution(format!(
                    "invalid label name {name:?}"
                )));
            }
            count_values(&m, &groups, &group_of, &name, grid).map(Value::Vector)
        }
        _ => {
            let mut b = StepMatrixBuilder::new(grid.n);
            for (g, mem) in groups.iter().zip(&members) {
                // A kept `__name__` is still dropped at the end if any
                // member's name was to be dropped (delayed name removal).
                let drop = g.contains("__name__") && mem.iter().any(|&s| m.drop_name[s]);
                b.push_row(g.clone(), drop);
            }
            if op == AggOp::Quantile {
                let phi = scalar_param.clone().unwrap_or_default();
                let mut buf: Vec<f64> = Vec::new();
                for k in 0..grid.n {
                    if k % 256 == 0 {
                        ctx.check()?;
                    }
                    for (g, mem) in members.iter().enumerate() {
                        buf.clear();
                        buf.extend(mem.iter().filter_map(|&s| m.get(s, k)));
                        if !buf.is_empty() {
                            b.set(
                                g,
                                k,
                                quantile(phi.get(k).copied().unwrap_or(f64::NAN), &mut buf),
                            );
                        }
                    }
                }
            } else {
                // Row by row: each series' steps are contiguous in the column.
                let steps = grid.n;
                let mut cells = vec![Acc::default(); groups.len() * steps];
                let vals = m.values.values();
                for (s, &g) in group_of.iter().enumerate() {
                    if s % 1024 == 0 {
                        ctx.check()?;
                    }
                    let cell_row = &mut cells[g * steps..(g + 1) * steps];
                    for (k, cell) in cell_row.iter_mut().enumerate() {
                        if m.present(s, k) {
                            cell.push(op, vals[s * steps + k]);
                        }
                    }
                }
                for (i, cell) in cells.iter().enumerate() {
                    if cell.n > 0.0 {
                        b.set(i / steps, i % steps, cell.finish(op));
                    }
                }
            }
            if op == AggOp::Quantile
                && let Some(p) = &scalar_param
                && p.iter().any(|v| !(0.0..=1.0).contains(v))
            {
                let bad = p
                    .iter()
                    .find(|v| !(0.0..=1.0).contains(*v))
                    .copied()
                    .unwrap_or(f64::NAN);
                ctx.warn(
                    &format!(
                        "quantile value should be between 0 and 1, got {}",
                        format_value(bad)
                    ),
                    param.map(|p| p.pos).unwrap_or(pos),
                );
            }
            Ok(Value::Vector(b.finish()))
        }
    }
}

fn count_values(
    m: &StepMatrix,
    groups: &[Labels],
    group_of: &[usize],
    name: &str,
    grid: Grid,
) -> Result<StepMatrix, QueryError> {
    let mut b = StepMatrixBuilder::new(grid.n);
    let mut rows: HashMap<Labels, usize> = HashMap::new();
    let mut counts: Vec<Vec<f64>> = Vec::new();
    for s in 0..m.len() {
        for k in 0..grid.n {
            let Some(v) = m.get(s, k) else { continue };
            let mut lb = groups[group_of[s]].builder();
            lb.set(name, &format_value(v));
            let l = lb
                .build()
                .map_err(|e| QueryError::Execution(e.to_string()))?;
            let r = *rows.entry(l.clone()).or_insert_with(|| {
                counts.push(vec![0.0; grid.n]);
                b.push_row(l, false)
            });
            counts[r][k] += 1.0;
        }
    }
    for (r, c) in counts.iter().enumerate() {
        for (k, v) in c.iter().enumerate() {
            if *v > 0.0 {
                b.set(r, k, *v);
            }
        }
    }
    Ok(b.finish())
}

/// Prometheus's label-set hash (xxHash64 of `name 0xff value 0xff …`), so
/// `limit_ratio` samples the same series Prometheus does.
fn prometheus_hash(l: &Labels) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for lb in l.iter() {
        h.update(lb.name.as_bytes());
        h.update(&[0xff]);
        h.update(lb.value.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// `topk`, `bottomk`, `limitk`, `limit_ratio`: which input series survive
/// at each step. With one step (instant queries) the output rows are in
/// Prometheus's order: group by group, best first.
fn select_series(
    ctx: &Ctx,
    pos: PosRange,
    op: AggOp,
    m: StepMatrix,
    members: &[Vec<usize>],
    param: &[f64],
    grid: Grid,
) -> Result<StepMatrix, QueryError> {
    let mut chosen: Vec<Vec<usize>> = vec![Vec::new(); grid.n];
    for (k, chosen_k) in chosen.iter_mut().enumerate() {
        let p = param.get(k).copied().unwrap_or(f64::NAN);
        if p.is_nan() {
            let what = if op == AggOp::LimitRatio {
                "Ratio"
            } else {
                "Parameter"
            };
            return Err(QueryError::Execution(format!("{what} value is NaN")));
        }
        for mem in members {
            let present: Vec<usize> = mem.iter().copied().filter(|&s| m.present(s, k)).collect();
            match op {
                AggOp::LimitRatio => {
                    let ratio = p.clamp(-1.0, 1.0);
                    if !(-1.0..=1.0).contains(&p) {
                        ctx.warn(
                            &format!(
                                "ratio value should be between -1 and 1, got {}, capping to {}",
                                format_value(p),
                                format_value(ratio)
                            ),
                            pos,
                        );
                    }
                    for s in present {
                        let h = prometheus_hash(&m.labels[s]) as f64 / u64::MAX as f64;
                        let keep = if ratio >= 0.0 {
                            h < ratio
                        } else {
                            h >= 1.0 + ratio
                        };
                        if keep {
                            chosen_k.push(s);
                        }
                    }
                }
                _ => {
                    if p >= 9.2e18 {
                        return Err(QueryError::Execution(format!(
                            "Scalar value {} overflows int64",
                            format_value(p)
                        )));
                    }
                    let kk = if p < 1.0 { 0 } else { p as usize };
                    let mut sel = present;
                    if op != AggOp::Limitk {
                        let top = op == AggOp::Topk;
                        sel.sort_by(|&a, &b| {
                            let (va, vb) = (
                                m.get(a, k).unwrap_or(f64::NAN),
                                m.get(b, k).unwrap_or(f64::NAN),
                            );
                            match (va.is_nan(), vb.is_nan()) {
                                (true, true) => std::cmp::Ordering::Equal,
                                (true, false) => std::cmp::Ordering::Greater,
                                (false, true) => std::cmp::Ordering::Less,
                                _ => {
                                    let o =
                                        va.partial_cmp(&vb).unwrap_or(std::cmp::Ordering::Equal);
                                    if top { o.reverse() } else { o }
                                }
                            }
                        });
                    }
                    sel.truncate(kk);
                    chosen_k.extend(sel);
                }
            }
        }
    }
    let mut b = StepMatrixBuilder::new(grid.n);
    if grid.n == 1 {
        for &s in &chosen[0] {
            let r = b.push_row(m.labels[s].clone(), m.drop_name[s]);
            b.set(r, 0, m.get(s, 0).unwrap_or(f64::NAN));
        }
        return Ok(b.finish());
    }
    let mut rows: Vec<Option<usize>> = vec![None; m.len()];
    for (k, ch) in chosen.iter().enumerate() {
        for &s in ch {
            let r = *rows[s].get_or_insert_with(|| b.push_row(m.labels[s].clone(), m.drop_name[s]));
            b.set(r, k, m.get(s, k).unwrap_or(f64::NAN));
        }
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_hash_is_xxhash64_of_the_separated_pairs() {
        // xxHash64's published value for empty input with seed 0.
        assert_eq!(prometheus_hash(&Labels::empty()), 0xef46_db37_51d8_e999);
        let l = Labels::from_pairs([("a", "b")]).unwrap();
        assert_eq!(
            prometheus_hash(&l),
            xxhash_rust::xxh64::xxh64(b"a\xffb\xff", 0)
        );
    }

    #[test]
    fn streaming_mean_switches_to_incremental_on_overflow() {
        assert_eq!(mean(&[1.0, 2.0, 3.0]), 2.0);
        assert_eq!(mean(&[f64::MAX, f64::MAX]), f64::MAX);
        assert!(mean(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }
}
