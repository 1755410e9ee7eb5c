//! Shared data builders for the integration tests.

pub mod node_exporter;
