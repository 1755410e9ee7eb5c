//! What every shard shares: the flags, the loaded configuration, readiness,
//! self-metrics, and the control channel to the main thread.
//!
//! Shards read this state; only the main thread changes the configuration
//! (at start, on SIGHUP, or when a shard forwards `POST /-/reload`). The
//! configuration sits behind a read-write lock that is taken only off the
//! ingest hot path (status requests and reloads).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot};

use kiln_ingest::config::{Config, ConfigError};

use crate::cli::ServerFlags;
use crate::query::QueryService;
use crate::scrape::TargetRegistry;
use crate::selfmetrics::SelfMetrics;
use crate::tsdb::{Mailboxes, ShardStats};

/// The configuration kiln runs when no `--config.file` is given: it scrapes
/// kiln's own `/metrics`, so a fresh `cargo run` shows a working server.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.yml");

/// The address the embedded default configuration scrapes; replaced with
/// the address kiln actually listens on.
pub const DEFAULT_SELF_TARGET: &str = "localhost:9090";

/// A configuration as loaded.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The YAML text, served by `/api/v1/status/config`.
    pub yaml: String,
    /// The parsed, validated configuration.
    pub parsed: Arc<Config>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLoadError {
    /// The file could not be read.
    #[error("couldn't load configuration (--config.file={path:?}): {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("couldn't load configuration (--config.file={path:?}): {source}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with line and column.
        source: ConfigError,
    },
}

/// Loads the configuration file, or the embedded default with its self
/// target set to `self_addr` (the address kiln listens on).
pub fn load_config(path: Option<&Path>, self_addr: &str) -> Result<LoadedConfig, ConfigLoadError> {
    let (yaml, name) = match path {
        None => (
            DEFAULT_CONFIG.replace(DEFAULT_SELF_TARGET, self_addr),
            "<embedded default config>".to_owned(),
        ),
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigLoadError::Read {
                path: p.display().to_string(),
                source,
            })?,
            p.display().to_string(),
        ),
    };
    // A file's relative paths (file_sd, TLS, scrape_config_files) are
    // resolved against its directory, as Prometheus does.
    let parsed = match path {
        None => Config::parse(&yaml, &name),
        Some(p) => Config::load(p),
    }
    .map_err(|source| ConfigLoadError::Invalid {
        path: name.clone(),
        source,
    })?;
    Ok(LoadedConfig {
        yaml,
        parsed: Arc::new(parsed),
        loaded_at: SystemTime::now(),
    })
}

/// Requests a shard sends to the main thread.
#[derive(Debug)]
pub enum Control {
    /// Reload the configuration and report the outcome.
    Reload(oneshot::Sender<Result<(), String>>),
    /// Shut down (`POST /-/quit`).
    Quit,
}

/// State shared by all shards. See the module documentation.
pub struct ServerState {
    /// The flags kiln was started with.
    pub flags: ServerFlags,
    /// Number of shards running.
    pub shards: usize,
    /// When the process started.
    pub started: SystemTime,
    /// The configuration in force.
    pub config: RwLock<LoadedConfig>,
    /// Self-metrics.
    pub metrics: SelfMetrics,
    /// Where shards send reload and quit requests.
    pub control: mpsc::UnboundedSender<Control>,
    /// Each runtime thread's mailbox, for reads of its logical shards.
    pub mailboxes: Mailboxes,
    /// Published counters of every logical shard, by shard number.
    pub shard_stats: Arc<[Arc<ShardStats>]>,
    /// The PromQL workers.
    pub query: QueryService,
    /// Every scrape target and its health.
    pub targets: Arc<TargetRegistry>,
    ready: AtomicBool,
}

/// What [`ServerState::new`] is built from besides flags and config.
pub struct Wiring {
    /// Runtime threads.
    pub shards: usize,
    /// Where shards send reload and quit requests.
    pub control: mpsc::UnboundedSender<Control>,
    /// Each runtime thread's mailbox.
    pub mailboxes: Mailboxes,
    /// Every logical shard's published counters.
    pub shard_stats: Arc<[Arc<ShardStats>]>,
    /// The PromQL workers.
    pub query: QueryService,
}

impl ServerState {
    /// New state, not ready yet.
    pub fn new(flags: ServerFlags, config: LoadedConfig, w: Wiring) -> Self {
        let metrics = SelfMetrics::new();
        metrics.config_loaded(true);
        ServerState {
            flags,
            shards: w.shards,
            started: SystemTime::now(),
            config: RwLock::new(config),
            metrics,
            control: w.control,
            mailboxes: w.mailboxes,
            shard_stats: w.shard_stats,
            query: w.query,
            targets: Arc::default(),
            ready: AtomicBool::new(false),
        }
    }

    /// Whether kiln serves queries yet (`/-/ready`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks kiln ready or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}
