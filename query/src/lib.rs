//! kiln-query: the PromQL parser (with source positions), the engine that
//! evaluates over Arrow columns, and the promqltest script runner.
//!
//! Module map:
//! * [`ast`]: the syntax tree, with positions on every node;
//! * `lexer` and [`parser`]: query text to [`ast::Expr`], Prometheus's errors;
//! * [`functions`]: the function signature table;
//! * [`printer`]: syntax tree back to text (`Display`, `format_query`'s `pretty`);
//! * [`engine`]: evaluation over series-major Arrow columns, limits, errors;
//! * [`promqltest`]: the `.test` script runner.
#![warn(missing_docs)]

pub mod ast;
pub mod engine;
pub mod functions;
mod lexer;
pub mod parser;
pub mod printer;
pub mod promqltest;

pub use ast::{Expr, ExprKind, PosRange, ValueType};
pub use engine::{
    Engine, EngineOptions, ErrorType, InstantSample, QueryError, QueryLimits, QueryResult,
    QueryValue, RangeSeries,
};
pub use parser::{ParseError, parse};
