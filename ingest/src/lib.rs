//! kiln-ingest: everything between a user's `prometheus.yml` and the head's
//! appender: configuration, discovery, relabeling, exposition parsing and
//! the scrape loop.
//!
//! Module map (one concept each):
//! * [`exposition`]: the text 0.0.4 and OpenMetrics 1.0 scrape-body parser.
#![warn(missing_docs)]

pub mod exposition;
