//! `info(v, {selector})` (experimental in Prometheus): adds the data labels
//! of info series (`target_info` unless the selector names others) to the
//! series of `v` they identify by their `instance` and `job` labels. A
//! series of `v` that is itself one of the selected info metrics passes
//! through unchanged.
//!
//! The info series are read as of each sample's own reference time: the
//! step time shifted by the `@` and `offset` of the first selector or
//! subquery in `v`, as Prometheus does. At each step, per info metric the
//! series with the latest sample wins; two info metrics giving one label
//! different values is an error.

use std::collections::HashMap;

use kiln_storage::{Labels, MatchOp, Matcher, SelectHints, is_stale_nan};

use super::QueryError;
use super::columns::StepMatrixBuilder;
use super::eval::{Ctx, Grid, Value, eval_vector};
use crate::ast::{AtModifier, Expr, ExprKind};

/// The labels that tie a series to its info series.
const IDENTIFYING: [&str; 2] = ["instance", "job"];

/// The time the info series are read at for step time `t`.
fn reference_time(ctx: &Ctx, e: &Expr, t: i64) -> i64 {
    let shift = |at: Option<&AtModifier>, offset: i64, t: i64| {
        let base = match at {
            Some(AtModifier::Timestamp(ts)) => *ts,
            Some(AtModifier::Start) => ctx.start,
            Some(AtModifier::End) => ctx.end,
            None => t,
        };
        base - offset
    };
    match &e.kind {
        ExprKind::Vector(sel) | ExprKind::Matrix { sel, .. } => {
            shift(sel.at.as_ref(), ctx.duration(&sel.offset), t)
        }
        ExprKind::Subquery {
            expr, offset, at, ..
        } => reference_time(ctx, expr, shift(at.as_ref(), ctx.duration(offset), t)),
        ExprKind::Call { args, .. } => args
            .iter()
            .find(|a| has_selector(a))
            .map_or(t, |a| reference_time(ctx, a, t)),
        ExprKind::Aggregate { expr, .. } | ExprKind::Neg(expr) | ExprKind::Paren(expr) => {
            reference_time(ctx, expr, t)
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            let side = if has_selector(lhs) { lhs } else { rhs };
            reference_time(ctx, side, t)
        }
        ExprKind::Number(_) | ExprKind::String(_) => t,
    }
}

fn has_selector(e: &Expr) -> bool {
    let mut hit = false;
    e.walk(&mut |x| {
        if matches!(x.kind, ExprKind::Vector(_) | ExprKind::Matrix { .. }) {
            hit = true;
        }
    });
    hit
}

/// One info series: its identity, metric name and samples.
struct InfoSeries<'a> {
    key: [Option<&'a str>; 2],
    name: &'a str,
    labels: &'a Labels,
    ts: &'a [i64],
    vs: &'a [f64],
}

impl InfoSeries<'_> {
    /// The timestamp of the sample current at `t`, if any.
    fn current_at(&self, t: i64, lookback: i64) -> Option<i64> {
        let i = self.ts.partition_point(|x| *x <= t);
        let j = i.checked_sub(1)?;
        (self.ts[j] > t - lookback && !is_stale_nan(self.vs[j])).then_some(self.ts[j])
    }
}

pub(crate) fn eval(ctx: &Ctx, args: &[Expr], grid: Grid) -> Result<Value, QueryError> {
    let base = eval_vector(ctx, &args[0], grid)?;
    let mut name_matchers: Vec<Matcher> = Vec::new();
    let mut data_matchers: Vec<Matcher> = Vec::new();
    if let Some(ExprKind::Vector(sel)) = args.get(1).map(|a| &a.kind) {
        for m in &sel.matchers {
            if m.name() == "__name__" {
                name_matchers.push(m.clone());
            } else {
                data_matchers.push(m.clone());
            }
        }
    }
    // Without a name, the info metric is target_info; with only negative
    // name matchers, it is any `*_info` metric they do not exclude.
    let positive = |m: &Matcher| matches!(m.op(), MatchOp::Equal | MatchOp::Regex);
    let implicit = if name_matchers.is_empty() {
        Some(Matcher::new(MatchOp::Equal, "__name__", "target_info"))
    } else if !name_matchers.iter().any(positive) {
        Some(Matcher::new(MatchOp::Regex, "__name__", ".+_info"))
    } else {
        None
    };
    if let Some(m) = implicit {
        name_matchers.push(m.map_err(|e| QueryError::Execution(e.to_string()))?);
    }
    let refs: Vec<i64> = (0..grid.n)
        .map(|k| reference_time(ctx, &args[0], grid.t(k)))
        .collect();
    let lookback = ctx.opts.lookback_delta_ms;
    let mint = refs.iter().min().copied().unwrap_or(0) - lookback + 1;
    let maxt = refs.iter().max().copied().unwrap_or(0);
    let matchers: Vec<Matcher> = name_matchers
        .iter()
        .chain(&data_matchers)
        .cloned()
        .collect();
    let batch = ctx.store.select(
        &matchers,
        &SelectHints {
            mint,
            maxt,
            max_samples: ctx.opts.max_samples,
        },
    )?;
    ctx.account(batch.sample_count())?;
    let infos: Vec<InfoSeries> = batch
        .iter()
        .map(|s| InfoSeries {
            key: IDENTIFYING.map(|n| s.labels.get(n)),
            name: s.labels.metric_name().unwrap_or(""),
            labels: s.labels,
            ts: s.timestamps,
            vs: s.values,
        })
        .collect();
    let mut by_key: HashMap<[Option<&str>; 2], Vec<usize>> = HashMap::new();
    for (i, s) in infos.iter().enumerate() {
        by_key.entry(s.key).or_default().push(i);
    }
    let keep_unmatched = data_matchers.iter().all(|m| m.matches_empty());
    let wanted = |n: &str| data_matchers.is_empty() || data_matchers.iter().any(|m| m.name() == n);
    let mut b = StepMatrixBuilder::new(grid.n);
    let mut rows: HashMap<(Labels, bool), usize> = HashMap::new();
    for s in 0..base.len() {
        ctx.check()?;
        let l = &base.labels[s];
        let is_info_source = l
            .metric_name()
            .is_some_and(|n| name_matchers.iter().all(|m| m.matches(n)));
        let candidates = by_key.get(&IDENTIFYING.map(|n| l.get(n)));
        for (k, &r) in refs.iter().enumerate() {
            let Some(v) = base.get(s, k) else { continue };
            let labels = if is_info_source {
                l.clone()
            } else {
                // Per info metric, the series with the latest sample.
                let mut chosen: HashMap<&str, (i64, usize)> = HashMap::new();
                for &i in candidates.into_iter().flatten() {
                    if let Some(t) = infos[i].current_at(r, lookback) {
                        let e = chosen.entry(infos[i].name).or_insert((t, i));
                        if t > e.0 {
                            *e = (t, i);
                        }
                    }
                }
                if chosen.is_empty() {
                    if !keep_unmatched {
                        continue;
                    }
                    l.clone()
                } else {
                    let mut added: Vec<(&str, &str)> = Vec::new();
                    for (_, i) in chosen.values() {
                        for lb in infos[*i].labels.iter() {
                            if lb.name == "__name__"
                                || IDENTIFYING.contains(&lb.name)
                                || l.contains(lb.name)
                                || !wanted(lb.name)
                            {
                                continue;
                            }
                            match added.iter().find(|(n, _)| *n == lb.name) {
                                Some((_, v)) if *v != lb.value => {
                                    return Err(QueryError::Execution(format!(
                                        "conflicting label {:?}: {v:?} and {:?} from different info metrics",
                                        lb.name, lb.value
                                    )));
                                }
                                Some(_) => {}
                                None => added.push((lb.name, lb.value)),
                            }
                        }
                    }
                    let mut lb = l.builder();
                    for (n, v) in added {
                        lb.set(n, v);
                    }
                    lb.build()
                        .map_err(|e| QueryError::Execution(e.to_string()))?
                }
            };
            let key = (labels, base.drop_name[s]);
            let row = match rows.get(&key) {
                Some(r) => *r,
                None => {
                    let r = b.push_row(key.0.clone(), key.1);
                    rows.insert(key, r);
                    r
                }
            };
            b.set(row, k, v);
        }
    }
    Ok(Value::Vector(b.finish()))
}
