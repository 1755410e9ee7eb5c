//! Node evaluation: dispatch over the syntax tree, vector and range
//! selectors, subqueries, and turning the root's value into the API result.
//!
//! Every node is evaluated once for all steps of a [`Grid`]. Selectors call
//! the store once, with a time range covering every step (lookback, range,
//! offset and `@` included). A node pinned by `@` is evaluated at one time
//! and broadcast to all steps.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use kiln_storage::{
    Labels, Matcher, Select, SelectHints, SeriesBatch, SeriesBatchBuilder, is_stale_nan,
};

use super::columns::{StepMatrix, StepMatrixBuilder};
use super::{
    EngineOptions, InstantSample, QueryError, QueryLimits, QueryResult, QueryValue, RangeSeries,
};
use crate::ast::{
    AtModifier, Boundary, Duration, Expr, ExprKind, MAX_DURATION_MS, PosRange, VectorSelector,
};

/// Evaluation times: `n` steps from `start`, `step` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid {
    pub start: i64,
    pub step: i64,
    pub n: usize,
}

impl Grid {
    pub fn t(&self, k: usize) -> i64 {
        self.start + k as i64 * self.step
    }
}

/// A range-vector value: raw samples per series plus, per step, the end of
/// that step's window; the window of step `k` is `(ends[k] - range, ends[k]]`.
#[derive(Debug, Clone)]
pub(crate) struct RangeInput {
    pub batch: SeriesBatch,
    pub drop_name: Vec<bool>,
    pub ends: Vec<i64>,
    pub range: i64,
    /// How the window's edges are treated (`anchored`, `smoothed`).
    pub boundary: Boundary,
    /// How far outside a window its edge samples may be (lookback delta).
    pub edge_lookback: i64,
}

impl RangeInput {
    /// For each series, calls `f(series, step, window)` with the window of
    /// every step, sliding two cursors over the samples once. Checks the
    /// query's deadline and cancellation every 256 series.
    pub fn windows(
        &self,
        ctx: &Ctx,
        mut f: impl FnMut(usize, usize, Window<'_>),
    ) -> Result<(), QueryError> {
        // resets[i]: how many of samples 1..=i are below their predecessor,
        // so a window knows in O(1) whether it holds a counter reset.
        let mut resets: Vec<u32> = Vec::new();
        for s in 0..self.batch.len() {
            if s % 256 == 0 {
                ctx.check()?;
            }
            let sr = self.batch.series(s);
            let (ts, vs) = (sr.timestamps, sr.values);
            resets.clear();
            let mut n = 0u32;
            resets.push(0);
            for w in vs.windows(2) {
                if w[1] < w[0] {
                    n += 1;
                }
                resets.push(n);
            }
            let (mut lo, mut hi) = (0usize, 0usize);
            for (k, &end) in self.ends.iter().enumerate() {
                let start = end - self.range;
                if k > 0 && end < self.ends[k - 1] {
                    lo = 0;
                    hi = 0;
                }
                while lo < ts.len() && ts[lo] <= start {
                    lo += 1;
                }
                if hi < lo {
                    hi = lo;
                }
                while hi < ts.len() && ts[hi] <= end {
                    hi += 1;
                }
                let has_reset = hi > lo + 1 && resets[hi - 1] > resets[lo];
                let lb = self.edge_lookback;
                let (before, after) = if self.boundary == Boundary::Plain {
                    (None, None)
                } else {
                    (
                        (lo > 0 && ts[lo - 1] > start - lb).then(|| (ts[lo - 1], vs[lo - 1])),
                        (hi < ts.len() && ts[hi] < end + lb).then(|| (ts[hi], vs[hi])),
                    )
                };
                f(
                    s,
                    k,
                    Window {
                        ts: &ts[lo..hi],
                        vs: &vs[lo..hi],
                        has_reset,
                        before,
                        after,
                    },
                );
            }
        }
        Ok(())
    }
}

/// The samples of one series in one step's window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window<'a> {
    pub ts: &'a [i64],
    pub vs: &'a [f64],
    /// Whether some sample is below its predecessor (a counter reset).
    pub has_reset: bool,
    /// For `anchored`/`smoothed` windows: the last sample at or before the
    /// start, within the lookback delta.
    pub before: Option<(i64, f64)>,
    /// For `smoothed` windows: the first sample after the end, within the
    /// lookback delta.
    pub after: Option<(i64, f64)>,
}

/// A node's value at every step.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(Vec<f64>),
    Str(String),
    Vector(StepMatrix),
    Range(RangeInput),
}

/// Per-query evaluation state.
pub(crate) struct Ctx<'a> {
    pub opts: &'a EngineOptions,
    pub store: &'a dyn Select,
    pub limits: &'a QueryLimits,
    pub query: &'a str,
    /// The query's own start, end and step (for `@ start()`, `step()`, …).
    pub start: i64,
    pub end: i64,
    pub interval: i64,
    samples: Cell<usize>,
    warnings: RefCell<Vec<String>>,
    infos: RefCell<Vec<String>>,
}

impl Ctx<'_> {
    pub fn check(&self) -> Result<(), QueryError> {
        self.limits.check()
    }

    /// Accounts for `n` more samples held in memory.
    pub fn account(&self, n: usize) -> Result<(), QueryError> {
        let total = self.samples.get().saturating_add(n);
        if total > self.opts.max_samples {
            return Err(QueryError::TooManySamples);
        }
        self.samples.set(total);
        Ok(())
    }

    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<SeriesBatch, QueryError> {
        self.check()?;
        let hints = SelectHints {
            mint,
            maxt,
            max_samples: self.opts.max_samples.saturating_sub(self.samples.get()),
        };
        let batch = self.store.select(matchers, &hints)?;
        self.account(batch.sample_count())?;
        Ok(batch)
    }

    fn annotate(&self, list: &RefCell<Vec<String>>, kind: &str, msg: &str, pos: PosRange) {
        let (line, col) = pos.line_col(self.query);
        let text = format!("PromQL {kind}: {msg} ({line}:{col})");
        let mut l = list.borrow_mut();
        if !l.contains(&text) {
            l.push(text);
        }
    }

    /// Records a warning annotation about the node at `pos`.
    pub fn warn(&self, msg: &str, pos: PosRange) {
        self.annotate(&self.warnings, "warning", msg, pos);
    }

    /// Records an info annotation about the node at `pos`.
    pub fn info(&self, msg: &str, pos: PosRange) {
        self.annotate(&self.infos, "info", msg, pos);
    }

    /// The time of `@`.
    fn at_time(&self, at: &AtModifier) -> i64 {
        match at {
            AtModifier::Timestamp(t) => *t,
            AtModifier::Start => self.start,
            AtModifier::End => self.end,
        }
    }

    /// A duration's value in this query (duration expressions may use the
    /// query's step and range).
    pub fn duration(&self, d: &Duration) -> i64 {
        let v = d.resolve(self.interval, self.end - self.start).round();
        // NaN becomes 0; the clamp keeps every time shift in range.
        (v as i64).clamp(-MAX_DURATION_MS, MAX_DURATION_MS)
    }
}

/// Runs a parsed query and builds the API result.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    opts: &EngineOptions,
    store: &dyn Select,
    query: &str,
    expr: &Expr,
    start: i64,
    end: i64,
    step: i64,
    limits: &QueryLimits,
    instant: bool,
) -> Result<QueryResult, QueryError> {
    let ctx = Ctx {
        opts,
        store,
        limits,
        query,
        start,
        end,
        interval: step,
        samples: Cell::new(0),
        warnings: RefCell::new(Vec::new()),
        infos: RefCell::new(Vec::new()),
    };
    let n = if instant || step <= 0 {
        1
    } else {
        ((end - start) / step) as usize + 1
    };
    let grid = Grid {
        start,
        step: step.max(1),
        n,
    };
    ctx.account(n)?;
    let value = eval(&ctx, expr, grid)?;
    let value = if instant {
        match value {
            Value::Scalar(v) => QueryValue::Scalar {
                t_ms: start,
                v: v[0],
            },
            Value::Str(s) => QueryValue::String { t_ms: start, s },
            Value::Vector(m) => QueryValue::Vector(instant_samples(m, start)?),
            Value::Range(r) => QueryValue::Matrix(range_series(&ctx, &r)?),
        }
    } else {
        match value {
            Value::Scalar(v) => QueryValue::Matrix(vec![RangeSeries {
                labels: Labels::empty(),
                samples: (0..n).map(|k| (grid.t(k), v[k])).collect(),
            }]),
            Value::Vector(m) => QueryValue::Matrix(matrix_of(m, grid)?),
            Value::Str(_) => {
                return Err(QueryError::Execution(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                ));
            }
            Value::Range(_) => {
                return Err(QueryError::Execution(
                    "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector".into(),
                ));
            }
        }
    };
    Ok(QueryResult {
        value,
        warnings: ctx.warnings.into_inner(),
        infos: ctx.infos.into_inner(),
    })
}

const DUP_LABELSET: &str = "vector cannot contain metrics with the same labelset";

/// Labels that go with the metric name: `__type__` and `__unit__` are
/// dropped wherever `__name__` is.
pub(crate) const NAME_LABELS: [&str; 3] = ["__name__", "__type__", "__unit__"];

fn final_labels(l: &Labels, drop: bool) -> Labels {
    if drop && NAME_LABELS.iter().any(|n| l.contains(n)) {
        let mut b = l.builder();
        for n in NAME_LABELS {
            b.del(n);
        }
        b.build().unwrap_or_default()
    } else {
        l.clone()
    }
}

fn instant_samples(m: StepMatrix, t: i64) -> Result<Vec<InstantSample>, QueryError> {
    let mut out = Vec::with_capacity(m.len());
    let mut seen = std::collections::HashSet::new();
    for s in 0..m.len() {
        if let Some(v) = m.get(s, 0) {
            let labels = final_labels(&m.labels[s], m.drop_name[s]);
            if !seen.insert(labels.clone()) {
                return Err(QueryError::Execution(DUP_LABELSET.into()));
            }
            out.push(InstantSample { labels, t_ms: t, v });
        }
    }
    Ok(out)
}

fn matrix_of(m: StepMatrix, grid: Grid) -> Result<Vec<RangeSeries>, QueryError> {
    let mut by_labels: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<(Labels, Vec<Option<f64>>)> = Vec::new();
    for s in 0..m.len() {
        let labels = final_labels(&m.labels[s], m.drop_name[s]);
        let idx = *by_labels.entry(labels.clone()).or_insert_with(|| {
            out.push((labels, vec![None; grid.n]));
            out.len() - 1
        });
        for k in 0..grid.n {
            if let Some(v) = m.get(s, k) {
                if out[idx].1[k].is_some() {
                    return Err(QueryError::Execution(DUP_LABELSET.into()));
                }
                out[idx].1[k] = Some(v);
            }
        }
    }
    let mut series: Vec<RangeSeries> = out
        .into_iter()
        .map(|(labels, vals)| RangeSeries {
            labels,
            samples: vals
                .into_iter()
                .enumerate()
                .filter_map(|(k, v)| v.map(|v| (grid.t(k), v)))
                .collect(),
        })
        .filter(|s| !s.samples.is_empty())
        .collect();
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(series)
}

fn range_series(ctx: &Ctx, r: &RangeInput) -> Result<Vec<RangeSeries>, QueryError> {
    let mut out: Vec<RangeSeries> = Vec::new();
    r.windows(ctx, |s, _, w| {
        let (ts, vs) = (w.ts, w.vs);
        if !ts.is_empty() {
            out.push(RangeSeries {
                labels: final_labels(&r.batch.labels()[s], r.drop_name[s]),
                samples: ts.iter().copied().zip(vs.iter().copied()).collect(),
            });
        }
    })?;
    Ok(out)
}

/// Evaluates `expr` at every step of `grid`.
pub(crate) fn eval(ctx: &Ctx, expr: &Expr, grid: Grid) -> Result<Value, QueryError> {
    ctx.check()?;
    match &expr.kind {
        ExprKind::Number(v) => Ok(Value::Scalar(vec![*v; grid.n])),
        ExprKind::String(s) => Ok(Value::Str(s.clone())),
        ExprKind::Paren(e) => eval(ctx, e, grid),
        ExprKind::Neg(e) => Ok(match eval(ctx, e, grid)? {
            Value::Scalar(v) => Value::Scalar(v.into_iter().map(|x| -x).collect()),
            Value::Vector(m) => {
                let mut out = super::calls::map_values(m, |x| -x);
                out.drop_name.iter_mut().for_each(|d| *d = true);
                Value::Vector(out)
            }
            other => other,
        }),
        ExprKind::Vector(sel) => Ok(Value::Vector(eval_vector_selector(ctx, sel, grid, false)?)),
        ExprKind::Matrix {
            sel,
            range,
            boundary,
        } => Ok(Value::Range(eval_matrix_selector(
            ctx,
            sel,
            ctx.duration(range),
            *boundary,
            grid,
        )?)),
        ExprKind::Subquery {
            expr: inner,
            range,
            step,
            offset,
            at,
        } => Ok(Value::Range(eval_subquery(
            ctx,
            inner,
            ctx.duration(range),
            step.as_ref().map(|s| ctx.duration(s)),
            ctx.duration(offset),
            at.as_ref(),
            grid,
        )?)),
        ExprKind::Call { func, args } => super::calls::eval_call(ctx, expr, func, args, grid),
        ExprKind::Aggregate {
            op,
            expr: inner,
            param,
            grouping,
            without,
        } => super::aggregate::eval(
            ctx,
            expr.pos,
            *op,
            inner,
            param.as_deref(),
            grouping,
            *without,
            grid,
        ),
        ExprKind::Binary {
            op,
            lhs,
            rhs,
            return_bool,
            matching,
        } => super::binary::eval(ctx, *op, lhs, rhs, *return_bool, matching.as_ref(), grid),
    }
}

/// Evaluates a scalar-typed expression.
pub(crate) fn eval_scalar(ctx: &Ctx, expr: &Expr, grid: Grid) -> Result<Vec<f64>, QueryError> {
    match eval(ctx, expr, grid)? {
        Value::Scalar(v) => Ok(v),
        _ => Err(QueryError::Execution("expected scalar".into())),
    }
}

/// Evaluates an instant-vector-typed expression.
pub(crate) fn eval_vector(ctx: &Ctx, expr: &Expr, grid: Grid) -> Result<StepMatrix, QueryError> {
    match eval(ctx, expr, grid)? {
        Value::Vector(m) => Ok(m),
        _ => Err(QueryError::Execution("expected instant vector".into())),
    }
}

/// Evaluates a range-vector-typed expression.
pub(crate) fn eval_range(ctx: &Ctx, expr: &Expr, grid: Grid) -> Result<RangeInput, QueryError> {
    match eval(ctx, expr, grid)? {
        Value::Range(r) => Ok(r),
        _ => Err(QueryError::Execution("expected range vector".into())),
    }
}

/// The effective time of every step for a node with `offset` and `@`.
fn effective_times(ctx: &Ctx, offset: i64, at: Option<&AtModifier>, grid: Grid) -> Vec<i64> {
    match at {
        Some(a) => vec![ctx.at_time(a) - offset; grid.n],
        None => (0..grid.n).map(|k| grid.t(k) - offset).collect(),
    }
}

/// Evaluates an instant vector selector. With `timestamps`, the values are
/// the sample timestamps in seconds (for `timestamp()`).
pub(crate) fn eval_vector_selector(
    ctx: &Ctx,
    sel: &VectorSelector,
    grid: Grid,
    timestamps: bool,
) -> Result<StepMatrix, QueryError> {
    let times = effective_times(ctx, ctx.duration(&sel.offset), sel.at.as_ref(), grid);
    let lookback = ctx.opts.lookback_delta_ms;
    let mint = times.iter().min().copied().unwrap_or(0) - lookback + 1;
    // `smoothed` also reads the first sample after each step.
    let ahead = if sel.smoothed { lookback } else { 0 };
    let maxt = times.iter().max().copied().unwrap_or(0) + ahead;
    let batch = ctx.select(&sel.matchers, mint, maxt)?;
    let mut b = StepMatrixBuilder::new(grid.n);
    let mut points = 0usize;
    for s in 0..batch.len() {
        let sr = batch.series(s);
        let (ts, vs) = (sr.timestamps, sr.values);
        if ts.is_empty() {
            continue;
        }
        let r = b.push_row(sr.labels.clone(), false);
        let mut j = 0usize;
        for (k, &t) in times.iter().enumerate() {
            if k > 0 && t < times[k - 1] {
                j = 0;
            }
            while j < ts.len() && ts[j] <= t {
                j += 1;
            }
            if j == 0 {
                continue;
            }
            let (st, sv) = (ts[j - 1], vs[j - 1]);
            if st > t - lookback && !is_stale_nan(sv) {
                let v = if timestamps {
                    st as f64 / 1000.0
                } else if sel.smoothed
                    && st < t
                    && j < ts.len()
                    && ts[j] < t + lookback
                    && !is_stale_nan(vs[j])
                {
                    // Linear interpolation to the evaluation time.
                    sv + (vs[j] - sv) * (t - st) as f64 / (ts[j] - st) as f64
                } else {
                    sv
                };
                b.set(r, k, v);
                points += 1;
            }
        }
        if s % 1024 == 0 {
            ctx.check()?;
        }
    }
    ctx.account(points)?;
    Ok(b.finish())
}

/// Drops staleness markers: range windows never contain them.
fn without_stale(batch: SeriesBatch) -> SeriesBatch {
    if !batch.values().values().iter().any(|v| is_stale_nan(*v)) {
        return batch;
    }
    let mut b = SeriesBatchBuilder::with_capacity(batch.len(), batch.sample_count());
    for sr in batch.iter() {
        b.push_series(sr.labels.clone());
        for (t, v) in sr.timestamps.iter().zip(sr.values) {
            if !is_stale_nan(*v) {
                b.push_sample(*t, *v);
            }
        }
    }
    b.finish()
}

fn eval_matrix_selector(
    ctx: &Ctx,
    sel: &VectorSelector,
    range: i64,
    boundary: Boundary,
    grid: Grid,
) -> Result<RangeInput, QueryError> {
    let ends = effective_times(ctx, ctx.duration(&sel.offset), sel.at.as_ref(), grid);
    let lookback = ctx.opts.lookback_delta_ms;
    let (before, after) = match boundary {
        Boundary::Plain => (0, 0),
        Boundary::Anchored => (lookback, 0),
        Boundary::Smoothed => (lookback, lookback),
    };
    let mint = ends.iter().min().copied().unwrap_or(0) - range - before + 1;
    let maxt = ends.iter().max().copied().unwrap_or(0) + after;
    let batch = without_stale(ctx.select(&sel.matchers, mint, maxt)?);
    let n = batch.len();
    Ok(RangeInput {
        batch,
        drop_name: vec![false; n],
        ends,
        range,
        boundary,
        edge_lookback: lookback,
    })
}

fn eval_subquery(
    ctx: &Ctx,
    inner: &Expr,
    range: i64,
    step: Option<i64>,
    offset: i64,
    at: Option<&AtModifier>,
    grid: Grid,
) -> Result<RangeInput, QueryError> {
    let step = step.unwrap_or(ctx.opts.default_subquery_step_ms).max(1);
    let ends = effective_times(ctx, offset, at, grid);
    let first = ends.iter().min().copied().unwrap_or(0);
    let last = ends.iter().max().copied().unwrap_or(0);
    // The first step-aligned time after `first - range` (Go truncating
    // division, as Prometheus computes it).
    let lo = first - range;
    let mut start = step * (lo / step);
    if start < lo {
        start += step;
    }
    let n = if last < start {
        0
    } else {
        ((last - start) / step) as usize + 1
    };
    ctx.account(n)?;
    let inner_grid = Grid { start, step, n };
    let m = if n == 0 {
        StepMatrix::empty(0)
    } else {
        eval_vector(ctx, inner, inner_grid)?
    };
    // Series must be in label order for the batch; keep their drop flags.
    let mut order: Vec<usize> = (0..m.len()).collect();
    order.sort_by(|a, b| m.labels[*a].cmp(&m.labels[*b]));
    let mut b = SeriesBatchBuilder::default();
    let mut drop_name = Vec::with_capacity(order.len());
    let mut prev: Option<&Labels> = None;
    for &s in &order {
        if prev == Some(&m.labels[s]) {
            return Err(QueryError::Execution(DUP_LABELSET.into()));
        }
        prev = Some(&m.labels[s]);
        b.push_series(m.labels[s].clone());
        drop_name.push(m.drop_name[s]);
        for k in 0..n {
            if let Some(v) = m.get(s, k) {
                b.push_sample(inner_grid.t(k), v);
            }
        }
    }
    Ok(RangeInput {
        batch: b.finish(),
        drop_name,
        ends,
        range,
        boundary: Boundary::Plain,
        edge_lookback: 0,
    })
}
