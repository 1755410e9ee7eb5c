//! kiln-ingest: everything between a user's `prometheus.yml` and the head's
//! appender: configuration, discovery, relabeling, exposition parsing and
//! the scrape loop.
//!
//! Module map (one concept each):
//! * [`config`]: `prometheus.yml` read into typed, validated values;
//! * [`discovery`]: static, file and HTTP target groups of a scrape config;
//! * [`target`]: the target label pipeline, from a group to a [`target::Target`];
//! * [`relabel`]: the relabeling actions and their pipeline;
//! * [`exposition`]: the text 0.0.4 and OpenMetrics 1.0 scrape-body parser.
#![warn(missing_docs)]

pub mod config;
pub mod discovery;
pub mod exposition;
pub mod relabel;
pub mod scrape;
pub mod target;
