//! Binary operators: scalar–scalar, vector–scalar and vector–vector with
//! Prometheus's vector matching (`on`, `ignoring`, `group_left`,
//! `group_right`, set operators) and its many-to-many and duplicate-series
//! errors, which are checked per step as Prometheus does.
//!
//! Matching signatures are computed once per series, not per step.

use std::collections::HashMap;

use kiln_storage::Labels;

use super::QueryError;
use super::columns::{StepMatrix, StepMatrixBuilder};
use super::eval::{self as ev, Ctx, Grid, Value};
use crate::ast::{BinOp, Card, Expr, VectorMatching};

/// Applies an arithmetic or comparison operator to two floats. Returns the
/// value and, for comparisons, whether the comparison holds.
pub(crate) fn apply(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Add => (l + r, true),
        BinOp::Sub => (l - r, true),
        BinOp::Mul => (l * r, true),
        BinOp::Div => (l / r, true),
        // Rust's `%` on floats is Go's `math.Mod`: the sign of `l`.
        BinOp::Mod => (l % r, true),
        BinOp::Pow => (l.powf(r), true),
        BinOp::Atan2 => (l.atan2(r), true),
        BinOp::Eql => (l, l == r),
        BinOp::Neq => (l, l != r),
        BinOp::Lss => (l, l < r),
        BinOp::Lte => (l, l <= r),
        BinOp::Gtr => (l, l > r),
        BinOp::Gte => (l, l >= r),
        BinOp::And | BinOp::Or | BinOp::Unless => (l, true),
    }
}

/// Evaluates `lhs op rhs` at every step.
pub(crate) fn eval(
    ctx: &Ctx,
    op: BinOp,
    lhs: &Expr,
    rhs: &Expr,
    return_bool: bool,
    matching: Option<&VectorMatching>,
    grid: Grid,
) -> Result<Value, QueryError> {
    let l = ev::eval(ctx, lhs, grid)?;
    let r = ev::eval(ctx, rhs, grid)?;
    match (l, r) {
        (Value::Scalar(a), Value::Scalar(b)) => Ok(Value::Scalar(
            a.iter()
                .zip(&b)
                .map(|(x, y)| {
                    let (v, keep) = apply(op, *x, *y);
                    if op.is_comparison() {
                        if keep { 1.0 } else { 0.0 }
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Value::Vector(m), Value::Scalar(s)) => {
            Ok(Value::Vector(vector_scalar(op, m, &s, false, return_bool)))
        }
        (Value::Scalar(s), Value::Vector(m)) => {
            Ok(Value::Vector(vector_scalar(op, m, &s, true, return_bool)))
        }
        (Value::Vector(a), Value::Vector(b)) => {
            let default = VectorMatching {
                card: if op.is_set() {
                    Card::ManyToMany
                } else {
                    Card::OneToOne
                },
                on: false,
                labels: Vec::new(),
                include: Vec::new(),
                fill_left: None,
                fill_right: None,
            };
            let m = matching.unwrap_or(&default);
            let out = match op {
                BinOp::And | BinOp::Unless => set_and_unless(ctx, op, a, b, m, grid)?,
                BinOp::Or => set_or(ctx, a, b, m, grid)?,
                _ => vector_vector(ctx, op, a, b, m, return_bool, grid)?,
            };
            Ok(Value::Vector(out))
        }
        _ => Err(QueryError::Execution(
            "binary expression must contain only scalar and instant vector types".into(),
        )),
    }
}

fn drops_name(op: BinOp, return_bool: bool) -> bool {
    return_bool || !op.is_comparison()
}

fn vector_scalar(op: BinOp, m: StepMatrix, s: &[f64], swap: bool, return_bool: bool) -> StepMatrix {
    let mut b = StepMatrixBuilder::new(m.steps);
    for i in 0..m.len() {
        let r = b.push_row(
            m.labels[i].clone(),
            m.drop_name[i] || drops_name(op, return_bool),
        );
        for (k, sv) in s.iter().enumerate() {
            let Some(v) = m.get(i, k) else { continue };
            let (l, rr) = if swap { (*sv, v) } else { (v, *sv) };
            let (mut out, keep) = apply(op, l, rr);
            if op.is_comparison() {
                // The vector's value is kept even when it is on the right.
                out = v;
                if return_bool {
                    b.set(r, k, if keep { 1.0 } else { 0.0 });
                } else if keep {
                    b.set(r, k, out);
                }
            } else {
                b.set(r, k, out);
            }
        }
    }
    b.finish()
}

/// The matching signature of a label set.
fn signature(l: &Labels, m: &VectorMatching) -> Vec<u8> {
    let mut sig = Vec::new();
    for lb in l.iter() {
        let used = if m.on {
            m.labels.iter().any(|n| n == lb.name)
        } else {
            lb.name != "__name__" && !m.labels.iter().any(|n| n == lb.name)
        };
        if used {
            sig.extend_from_slice(lb.name.as_bytes());
            sig.push(0xff);
            sig.extend_from_slice(lb.value.as_bytes());
            sig.push(0xff);
        }
    }
    sig
}

/// The labels a signature is made of, for error messages.
fn match_labels(l: &Labels, m: &VectorMatching) -> Labels {
    let mut b = l.builder();
    b.retain(|n, _| {
        if m.on {
            m.labels.iter().any(|x| x == n)
        } else {
            n != "__name__" && !m.labels.iter().any(|x| x == n)
        }
    });
    b.build().unwrap_or_default()
}

/// The labels of a result from the "many" side and its match on the "one"
/// side (`None` when the one side was filled in).
fn result_labels(
    many: &Labels,
    one: Option<&Labels>,
    m: &VectorMatching,
) -> Result<Labels, QueryError> {
    let mut b = many.builder();
    if m.card == Card::OneToOne {
        if m.on {
            b.retain(|n, _| m.labels.iter().any(|x| x == n));
        } else {
            for n in &m.labels {
                b.del(n);
            }
        }
    }
    for n in &m.include {
        match one.and_then(|o| o.get(n)) {
            Some(v) => b.set(n, v),
            None => b.del(n),
        };
    }
    b.build().map_err(|e| QueryError::Execution(e.to_string()))
}

fn vector_vector(
    ctx: &Ctx,
    op: BinOp,
    lhs: StepMatrix,
    rhs: StepMatrix,
    m: &VectorMatching,
    return_bool: bool,
    grid: Grid,
) -> Result<StepMatrix, QueryError> {
    let swap = m.card == Card::OneToMany;
    let (many, one) = if swap { (&rhs, &lhs) } else { (&lhs, &rhs) };
    let mut one_by_sig: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for i in 0..one.len() {
        one_by_sig
            .entry(signature(&one.labels[i], m))
            .or_default()
            .push(i);
    }
    let many_sigs: Vec<Vec<u8>> = (0..many.len())
        .map(|i| signature(&many.labels[i], m))
        .collect();
    let mut b = StepMatrixBuilder::new(grid.n);
    // (many, one) pair → output row.
    let mut pair_rows: HashMap<(usize, usize), usize> = HashMap::new();
    let mut rows_by_labels: HashMap<Labels, usize> = HashMap::new();
    // For one-to-one: which signature already produced an output at a step.
    let mut matched: HashMap<&[u8], usize> = HashMap::new();
    let drop = drops_name(op, return_bool);
    // Prometheus fills after putting the "many" side on the left: fill_left
    // stands in for a missing many-side series, fill_right for a missing
    // one-side series.
    let (fill_many, fill_one) = (m.fill_left, m.fill_right);
    let one_sigs: Vec<Vec<u8>> = if fill_many.is_some() {
        (0..one.len())
            .map(|c| signature(&one.labels[c], m))
            .collect()
    } else {
        Vec::new()
    };
    let shared_sigs: Vec<&Vec<usize>> = one_by_sig.values().filter(|v| v.len() > 1).collect();
    let mut many_present: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    // Output rows: (many series, one series or usize::MAX when filled).
    let mut row_of = |b: &mut StepMatrixBuilder,
                      key: (usize, usize),
                      labels: &dyn Fn() -> Result<Labels, QueryError>,
                      dn: bool|
     -> Result<usize, QueryError> {
        if let Some(r) = pair_rows.get(&key) {
            return Ok(*r);
        }
        let labels = labels()?;
        let r = match rows_by_labels.get(&labels) {
            Some(r) => *r,
            None => {
                let r = b.push_row(labels.clone(), dn);
                rows_by_labels.insert(labels, r);
                r
            }
        };
        pair_rows.insert(key, r);
        Ok(r)
    };
    let finish_value = |lv: f64, rv: f64| -> Option<f64> {
        let (v, keep) = apply(op, lv, rv);
        if !op.is_comparison() {
            Some(v)
        } else if return_bool {
            Some(if keep { 1.0 } else { 0.0 })
        } else {
            keep.then_some(v)
        }
    };
    for k in 0..grid.n {
        if k % 256 == 0 {
            ctx.check()?;
        }
        matched.clear();
        many_present.clear();
        // A match group with two series on the "one" side is an error
        // whenever both sides have samples, as in Prometheus.
        if (0..many.len()).any(|i| many.present(i, k)) {
            for group in &shared_sigs {
                let mut present = group.iter().filter(|&&c| one.present(c, k));
                if let (Some(&a), Some(&c)) = (present.next(), present.next()) {
                    let side = if swap { "left" } else { "right" };
                    return Err(QueryError::Execution(format!(
                        "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                        match_labels(&one.labels[c], m),
                        one.labels[a],
                        one.labels[c],
                    )));
                }
            }
        }
        for (i, sig) in many_sigs.iter().enumerate() {
            let Some(mv) = many.get(i, k) else { continue };
            if fill_many.is_some() {
                many_present.insert(sig.as_slice());
            }
            let found = one_by_sig
                .get(sig)
                .and_then(|cands| cands.iter().copied().find(|&c| one.present(c, k)));
            let ov = match (found, fill_one) {
                (Some(c), _) => one.get(c, k).unwrap_or(f64::NAN),
                (None, Some(f)) => f,
                (None, None) => continue,
            };
            // Prometheus checks the matching before the comparison filters.
            if m.card == Card::OneToOne && matched.insert(sig.as_slice(), i).is_some() {
                return Err(QueryError::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                ));
            }
            let (lv, rv) = if swap { (ov, mv) } else { (mv, ov) };
            let Some(v) = finish_value(lv, rv) else {
                continue;
            };
            let one_labels = found.map(|c| &one.labels[c]);
            let row = row_of(
                &mut b,
                (i, found.unwrap_or(usize::MAX)),
                &|| result_labels(&many.labels[i], one_labels, m),
                drop || many.drop_name[i],
            )?;
            if b.is_set(row, k) {
                let msg = if m.card == Card::OneToOne {
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                } else {
                    "multiple matches for labels: grouping labels must ensure unique matches"
                };
                return Err(QueryError::Execution(msg.into()));
            }
            b.set(row, k, v);
        }
        let Some(fm) = fill_many else { continue };
        // One-side series with no many-side match: the result carries the
        // match group's labels.
        for (c, sig) in one_sigs.iter().enumerate() {
            let Some(ov) = one.get(c, k) else { continue };
            if many_present.contains(sig.as_slice()) {
                continue;
            }
            let (lv, rv) = if swap { (ov, fm) } else { (fm, ov) };
            let Some(v) = finish_value(lv, rv) else {
                continue;
            };
            let row = row_of(
                &mut b,
                (usize::MAX, c),
                &|| Ok(match_labels(&one.labels[c], m)),
                false,
            )?;
            b.set(row, k, v);
        }
    }
    Ok(b.finish())
}

fn set_and_unless(
    ctx: &Ctx,
    op: BinOp,
    lhs: StepMatrix,
    rhs: StepMatrix,
    m: &VectorMatching,
    grid: Grid,
) -> Result<StepMatrix, QueryError> {
    let mut rhs_by_sig: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for i in 0..rhs.len() {
        rhs_by_sig
            .entry(signature(&rhs.labels[i], m))
            .or_default()
            .push(i);
    }
    let mut b = StepMatrixBuilder::new(grid.n);
    for i in 0..lhs.len() {
        ctx.check()?;
        let sig = signature(&lhs.labels[i], m);
        let cands = rhs_by_sig.get(&sig);
        let r = b.push_row(lhs.labels[i].clone(), lhs.drop_name[i]);
        for k in 0..grid.n {
            let Some(v) = lhs.get(i, k) else { continue };
            let hit = cands.is_some_and(|c| c.iter().any(|&j| rhs.present(j, k)));
            if hit == (op == BinOp::And) {
                b.set(r, k, v);
            }
        }
    }
    Ok(b.finish())
}

fn set_or(
    ctx: &Ctx,
    lhs: StepMatrix,
    rhs: StepMatrix,
    m: &VectorMatching,
    grid: Grid,
) -> Result<StepMatrix, QueryError> {
    let mut lhs_by_sig: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    let mut b = StepMatrixBuilder::new(grid.n);
    for i in 0..lhs.len() {
        lhs_by_sig
            .entry(signature(&lhs.labels[i], m))
            .or_default()
            .push(i);
        let r = b.push_row(lhs.labels[i].clone(), lhs.drop_name[i]);
        for k in 0..grid.n {
            if let Some(v) = lhs.get(i, k) {
                b.set(r, k, v);
            }
        }
    }
    for j in 0..rhs.len() {
        ctx.check()?;
        let sig = signature(&rhs.labels[j], m);
        let cands = lhs_by_sig.get(&sig);
        let r = b.push_row(rhs.labels[j].clone(), rhs.drop_name[j]);
        for k in 0..grid.n {
            let Some(v) = rhs.get(j, k) else { continue };
            let hit = cands.is_some_and(|c| c.iter().any(|&i| lhs.present(i, k)));
            if !hit {
                b.set(r, k, v);
            }
        }
    }
    Ok(b.finish())
}
