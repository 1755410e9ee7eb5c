//! kiln-query: the PromQL parser (with source positions), the engine that
//! evaluates over Arrow columns, and the promqltest script runner.
#![warn(missing_docs)]
