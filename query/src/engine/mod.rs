//! The PromQL engine: the public query API, options, limits, results and
//! errors. Evaluation itself lives in the submodules; every instant-vector
//! node is evaluated once for all steps of the query into a
//! [`columns::StepMatrix`] (series × steps, series-major, nulls where a
//! series has no sample), and every selector node calls the store once.
//!
//! Module map: `columns` (the column type), `eval` (dispatch, selectors,
//! subqueries), `binary` (operators and vector matching), `aggregate`,
//! `calls` (instant-vector functions), `window` (range-vector functions),
//! `histogram` (classic-bucket histogram functions), `info` (the `info()`
//! join).

mod aggregate;
mod binary;
mod calls;
pub(crate) mod columns;
mod eval;
mod histogram;
mod info;
mod window;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kiln_storage::{Labels, Select, SelectError};

use crate::parser::{ParseError, parse};

/// Engine settings, fixed for the engine's life.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back a selector looks for a sample (ms).
    pub lookback_delta_ms: i64,
    /// Most samples a query may hold in memory at once.
    pub max_samples: usize,
    /// Subquery step when none is written (ms).
    pub default_subquery_step_ms: i64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 300_000,
            max_samples: 50_000_000,
            default_subquery_step_ms: 60_000,
        }
    }
}

/// Per-query limits set by the caller.
#[derive(Clone, Debug, Default)]
pub struct QueryLimits {
    /// The query fails with a timeout after this instant.
    pub deadline: Option<Instant>,
    /// The query fails as canceled once this is set.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl QueryLimits {
    pub(crate) fn check(&self) -> Result<(), QueryError> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(QueryError::Canceled);
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(QueryError::Timeout);
        }
        Ok(())
    }
}

/// A query's answer.
#[derive(Debug)]
pub struct QueryResult {
    /// The value.
    pub value: QueryValue,
    /// Warning annotations, rendered as Prometheus renders them.
    pub warnings: Vec<String>,
    /// Info annotations, rendered as Prometheus renders them.
    pub infos: Vec<String>,
}

/// The value of a query, as the Prometheus API types it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// A scalar at a time.
    Scalar {
        /// Evaluation time (ms).
        t_ms: i64,
        /// The value.
        v: f64,
    },
    /// A string at a time.
    String {
        /// Evaluation time (ms).
        t_ms: i64,
        /// The string.
        s: String,
    },
    /// An instant vector, in Prometheus's result order.
    Vector(Vec<InstantSample>),
    /// A range vector or range-query result, sorted by labels.
    Matrix(Vec<RangeSeries>),
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantSample {
    /// The series.
    pub labels: Labels,
    /// Timestamp (ms).
    pub t_ms: i64,
    /// Value.
    pub v: f64,
}

/// One series of a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series.
    pub labels: Labels,
    /// Its points, in time order.
    pub samples: Vec<(i64, f64)>,
}

/// The kinds of error of the Prometheus API (`errorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// `bad_data`: the query is malformed.
    BadData,
    /// `execution`: evaluation failed.
    Execution,
    /// `timeout`
    Timeout,
    /// `canceled`
    Canceled,
    /// `internal`
    Internal,
}

impl ErrorType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Internal => "internal",
        }
    }
}

/// Why a query failed. `Display` is the text Prometheus puts in `error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query does not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// Invalid query parameters (e.g. end before start).
    #[error("{0}")]
    BadParam(String),
    /// Evaluation failed (PromQL runtime error).
    #[error("{0}")]
    Execution(String),
    /// The sample limit was hit.
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    /// The deadline passed.
    #[error("query timed out in query execution")]
    Timeout,
    /// The caller canceled.
    #[error("query was canceled in query execution")]
    Canceled,
    /// The store failed.
    #[error("{0}")]
    Storage(String),
}

impl QueryError {
    /// The API's `errorType` for this error.
    pub fn error_type(&self) -> ErrorType {
        match self {
            QueryError::Parse(_) | QueryError::BadParam(_) => ErrorType::BadData,
            QueryError::Execution(_) | QueryError::TooManySamples => ErrorType::Execution,
            QueryError::Timeout => ErrorType::Timeout,
            QueryError::Canceled => ErrorType::Canceled,
            QueryError::Storage(_) => ErrorType::Internal,
        }
    }
}

impl From<SelectError> for QueryError {
    fn from(e: SelectError) -> Self {
        match e {
            SelectError::TooManySamples { .. } => QueryError::TooManySamples,
            SelectError::Storage(m) => QueryError::Storage(m),
        }
    }
}

/// Rejects evaluation times beyond [`crate::ast::MAX_TIMESTAMP_MS`].
fn check_time(t_ms: i64) -> Result<(), QueryError> {
    if t_ms.unsigned_abs() >= crate::ast::MAX_TIMESTAMP_MS as u64 {
        return Err(QueryError::BadParam(format!(
            "timestamp {t_ms} ms is out of range"
        )));
    }
    Ok(())
}

/// The PromQL engine. It holds only options, so it is `Send + Sync` and one
/// instance serves every query.
#[derive(Debug, Clone)]
pub struct Engine {
    opts: EngineOptions,
}

impl Engine {
    /// An engine with these options.
    pub fn new(opts: EngineOptions) -> Engine {
        Engine { opts }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `q` at `t_ms`.
    pub fn instant_query(
        &self,
        store: &dyn Select,
        q: &str,
        t_ms: i64,
        limits: &QueryLimits,
    ) -> Result<QueryResult, QueryError> {
        check_time(t_ms)?;
        let expr = parse(q)?;
        eval::run(&self.opts, store, q, &expr, t_ms, t_ms, 0, limits, true)
    }

    /// Evaluates an already parsed expression at `t_ms`; `q` is its text,
    /// used for the positions in annotations. `expr` must come from
    /// [`crate::parse`] (possibly with `@`/offset modifiers changed): the
    /// evaluator relies on the parser's type and arity checks.
    pub fn instant_query_parsed(
        &self,
        store: &dyn Select,
        q: &str,
        expr: &crate::ast::Expr,
        t_ms: i64,
        limits: &QueryLimits,
    ) -> Result<QueryResult, QueryError> {
        check_time(t_ms)?;
        eval::run(&self.opts, store, q, expr, t_ms, t_ms, 0, limits, true)
    }

    /// Evaluates `q` at every step from `start_ms` to `end_ms`.
    pub fn range_query(
        &self,
        store: &dyn Select,
        q: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        limits: &QueryLimits,
    ) -> Result<QueryResult, QueryError> {
        check_time(start_ms)?;
        check_time(end_ms)?;
        if end_ms < start_ms {
            return Err(QueryError::BadParam(
                "end timestamp must not be before start time".into(),
            ));
        }
        if step_ms <= 0 {
            return Err(QueryError::BadParam(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        let expr = parse(q)?;
        eval::run(
            &self.opts, store, q, &expr, start_ms, end_ms, step_ms, limits, false,
        )
    }
}
