//! The command line: Prometheus's server flags, kiln's own, and subcommands.
//!
//! Flag names are Prometheus's (`--config.file`, `--web.listen-address`, …)
//! so that existing unit files and scripts start kiln unchanged. Every flag
//! keeps its value as given in [`ServerFlags::as_pairs`], which feeds
//! `/api/v1/status/flags`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
pub use kiln_ingest::config::format_duration;
use kiln_ingest::config::{parse_bytes, parse_duration};

/// `kiln`: a Prometheus-compatible monitoring server.
///
/// Without a subcommand, kiln runs the server with the flags below.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A tool to run instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The server's flags.
    #[command(flatten)]
    pub server: ServerFlags,
}

/// kiln's tools, in the spirit of `promtool`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check files for validity, as `promtool check` does.
    #[command(subcommand)]
    Check(CheckCommand),
    /// Run PromQL test scripts (Prometheus's promqltest format) against
    /// kiln's engine and print `N passed, M failed, K skipped`.
    #[command(name = "promql-test")]
    PromqlTest {
        /// The script files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Inspect a data directory.
    #[command(subcommand)]
    Tsdb(TsdbCommand),
}

/// `kiln check …`.
#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Check that Prometheus configuration files are valid.
    Config {
        /// The configuration files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `kiln tsdb …`.
#[derive(Debug, Subcommand)]
pub enum TsdbCommand {
    /// Series count, top label cardinalities and bytes per sample of a data
    /// directory (of a stopped server, or a copy).
    Analyze {
        /// The data directory (`--storage.tsdb.path`).
        dir: PathBuf,
        /// How many entries each top list shows.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// The server's flags, named as Prometheus names them.
#[derive(Debug, Clone, Args)]
pub struct ServerFlags {
    /// Prometheus configuration file. Without it, kiln runs an embedded
    /// default configuration that scrapes kiln itself.
    #[arg(long = "config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Base path for metrics storage.
    #[arg(
        long = "storage.tsdb.path",
        value_name = "DIR",
        default_value = "data/"
    )]
    pub storage_path: PathBuf,

    /// How long to retain samples in storage (Prometheus duration; 0 = default 15d).
    #[arg(long = "storage.tsdb.retention.time", value_name = "DURATION", default_value = "15d", value_parser = parse_duration_flag)]
    pub retention_time: Duration,

    /// Time range of the head's chunks and of each block cut from the head
    /// (Prometheus's hidden flag; changing it is for tests).
    #[arg(long = "storage.tsdb.min-block-duration", value_name = "DURATION", default_value = "2h", value_parser = parse_block_duration, hide = true)]
    pub min_block_duration: Duration,

    /// Maximum bytes of storage blocks to retain (e.g. 512MB, 10GB; 0 = no limit).
    #[arg(long = "storage.tsdb.retention.size", value_name = "BYTES", default_value = "0B", value_parser = parse_bytes_flag)]
    pub retention_size: u64,

    /// Address to listen on for the API and /metrics.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub listen_address: String,

    /// Enable shutdown and reload via HTTP request.
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,

    /// Maximum number of samples a single query can load into memory.
    #[arg(
        long = "query.max-samples",
        value_name = "N",
        default_value_t = 50_000_000
    )]
    pub query_max_samples: u64,

    /// Maximum time a query may take before being aborted.
    #[arg(long = "query.timeout", value_name = "DURATION", default_value = "2m", value_parser = parse_duration_flag)]
    pub query_timeout: Duration,

    /// How far back to look for a sample in instant-vector selection.
    #[arg(long = "query.lookback-delta", value_name = "DURATION", default_value = "5m", value_parser = parse_duration_flag)]
    pub query_lookback_delta: Duration,

    /// Only log messages with the given severity or above: debug, info, warn, error.
    #[arg(long = "log.level", value_name = "LEVEL", default_value = "info", value_parser = ["debug", "info", "warn", "error"])]
    pub log_level: String,

    /// Number of shards (threads pinned to cores). Default: the cores
    /// available to the process.
    #[arg(long = "shards", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,
}

impl ServerFlags {
    /// Every flag with its value as Prometheus renders it in
    /// `/api/v1/status/flags` (durations in Prometheus syntax, bytes with a
    /// unit), sorted by name.
    pub fn as_pairs(&self, shards: usize) -> Vec<(&'static str, String)> {
        let mut v = vec![
            (
                "config.file",
                self.config_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("log.level", self.log_level.clone()),
            (
                "query.lookback-delta",
                format_duration(self.query_lookback_delta),
            ),
            ("query.max-samples", self.query_max_samples.to_string()),
            ("query.timeout", format_duration(self.query_timeout)),
            ("shards", shards.to_string()),
            (
                "storage.tsdb.min-block-duration",
                format_duration(self.min_block_duration),
            ),
            ("storage.tsdb.path", self.storage_path.display().to_string()),
            (
                "storage.tsdb.retention.size",
                format_bytes(self.retention_size),
            ),
            (
                "storage.tsdb.retention.time",
                format_duration(self.retention_time),
            ),
            ("web.enable-lifecycle", self.enable_lifecycle.to_string()),
            ("web.listen-address", self.listen_address.clone()),
        ];
        v.sort_by_key(|(k, _)| *k);
        v
    }
}

fn parse_duration_flag(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A block range: at least a second (smaller ranges would make the head
/// cut a block per few scrapes; 0 would be a block per millisecond).
fn parse_block_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s}: a block range must be at least 1s"));
    }
    Ok(d)
}

fn parse_bytes_flag(s: &str) -> Result<u64, String> {
    parse_bytes(s)
}

/// Units of Prometheus byte sizes (powers of 1024), largest first.
const BYTE_UNITS: [(&str, u64); 7] = [
    ("EB", 1 << 60),
    ("PB", 1 << 50),
    ("TB", 1 << 40),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

/// Renders a byte size with the largest unit that divides it.
pub fn format_bytes(n: u64) -> String {
    let (unit, size) = BYTE_UNITS
        .iter()
        .find(|(_, size)| n != 0 && n.is_multiple_of(*size))
        .copied()
        .unwrap_or(("B", 1));
    format!("{}{unit}", n / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_range_under_a_second_is_refused() {
        assert!(parse_block_duration("0s").is_err());
        assert!(parse_block_duration("500ms").is_err());
        assert_eq!(parse_block_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(512 << 20), "512MB");
        assert_eq!(format_bytes(1500), "1500B");
    }

    #[test]
    fn flags_parse_with_prometheus_names() {
        let cli = Cli::try_parse_from([
            "kiln",
            "--config.file=/etc/p.yml",
            "--web.listen-address=127.0.0.1:0",
            "--query.lookback-delta=1m",
            "--storage.tsdb.retention.size=1GB",
            "--shards=3",
        ])
        .unwrap();
        assert_eq!(cli.server.query_lookback_delta, Duration::from_secs(60));
        assert_eq!(cli.server.retention_size, 1 << 30);
        assert_eq!(cli.server.shards, Some(3));
        let pairs = cli.server.as_pairs(3);
        assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(pairs.contains(&("storage.tsdb.retention.time", "15d".to_owned())));
        assert!(Cli::try_parse_from(["kiln", "--query.timeout=soon"]).is_err());
        assert!(Cli::try_parse_from(["kiln", "--shards=0"]).is_err());
    }
}
