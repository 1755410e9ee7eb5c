//! kiln-ingest: everything between a user's `prometheus.yml` and the head's
//! appender: configuration, discovery, relabeling, exposition parsing and
//! the scrape loop.
//!
//! Module map (one concept each):
//! * [`config`]: `prometheus.yml` read into typed, validated values;
//! * [`relabel`]: the relabeling actions and their pipeline;
//! * [`exposition`]: the text 0.0.4 and OpenMetrics 1.0 scrape-body parser.
#![warn(missing_docs)]

pub mod config;
pub mod exposition;
pub mod relabel;
