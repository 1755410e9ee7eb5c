//! kiln-ingest: everything between a user's `prometheus.yml` and the head's
//! appender: configuration, discovery, relabeling, exposition parsing and
//! the scrape loop.
#![warn(missing_docs)]
