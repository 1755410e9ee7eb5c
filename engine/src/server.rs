//! The server's lifecycle on the main thread: load the configuration, bind,
//! start the shards, then wait for signals and control requests (SIGHUP and
//! `/-/reload` reload; SIGTERM, SIGINT and `/-/quit` stop), and shut down in
//! order.

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use kiln_query::EngineOptions;
use kiln_storage::{HeadOptions, WalOptions};

use crate::cli::ServerFlags;
use crate::query::QueryService;
use crate::shard::{self, ShardInit};
use crate::state::{Control, ServerState, Wiring, load_config};
use crate::targets::{FILE_SD_CHECK, TargetManager};
use crate::tsdb::{self, ShardStats, StorageConfig};

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration could not be loaded at start.
    #[error(transparent)]
    Config(#[from] crate::state::ConfigLoadError),
    /// The listeners could not be set up.
    #[error(transparent)]
    Listen(#[from] shard::ListenError),
    /// The data directory could not be created.
    #[error("cannot create data directory {path:?}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data directory's layout is unreadable.
    #[error(transparent)]
    Layout(#[from] tsdb::TsdbError),
    /// A shard's storage could not be opened.
    #[error("opening storage: {0}")]
    Storage(String),
    /// An OS resource (thread, runtime, signal handler) was refused.
    #[error("{what}: {source}")]
    Os {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Runs the server until it is told to stop.
pub fn run(flags: ServerFlags) -> Result<(), ServerError> {
    // A configuration file is checked before anything else happens.
    if let Some(path) = flags.config_file.as_deref() {
        load_config(Some(path), "")?;
    }
    std::fs::create_dir_all(&flags.storage_path).map_err(|source| ServerError::DataDir {
        path: flags.storage_path.display().to_string(),
        source,
    })?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let shards = flags
        .shards
        .map(usize::from)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    let addr = shard::resolve_listen_address(&flags.listen_address)?;
    let listeners = shard::bind_listeners(addr, shards)?;
    let bound = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(addr);
    let self_addr = if bound.ip().is_unspecified() {
        format!("localhost:{}", bound.port())
    } else {
        bound.to_string()
    };
    let config = load_config(flags.config_file.as_deref(), &self_addr)?;

    // Signal handlers are installed before anything is announced, so a
    // signal sent as soon as kiln reports its address is never missed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| ServerError::Os {
            what: "main runtime",
            source,
        })?;
    let (mut term, mut int, mut hup) = {
        let _ctx = rt.enter();
        let os = |source| ServerError::Os {
            what: "signal handler",
            source,
        };
        (
            signal(SignalKind::terminate()).map_err(os)?,
            signal(SignalKind::interrupt()).map_err(os)?,
            signal(SignalKind::hangup()).map_err(os)?,
        )
    };

    let logical = tsdb::logical_shards(&flags.storage_path, shards)?;
    let storage = StorageConfig {
        data_dir: flags.storage_path.clone(),
        head: HeadOptions {
            chunk_range_ms: i64::try_from(flags.min_block_duration.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
            ..HeadOptions::default()
        },
        wal: WalOptions::default(),
        // Prometheus: 0 means the default, 15 days.
        retention: if flags.retention_time.is_zero() {
            std::time::Duration::from_secs(15 * 86_400)
        } else {
            flags.retention_time
        },
        retention_bytes: flags.retention_size,
    };
    let (mut mailboxes, mut inboxes) = (Vec::new(), Vec::new());
    let (mut scrape_txs, mut scrape_rxs) = (Vec::new(), Vec::new());
    for _ in 0..shards {
        let (tx, rx) = mpsc::unbounded_channel();
        mailboxes.push(tx);
        inboxes.push(rx);
        let (tx, rx) = mpsc::unbounded_channel();
        scrape_txs.push(tx);
        scrape_rxs.push(rx);
    }
    let mailboxes: tsdb::Mailboxes = mailboxes.into();
    let shard_stats: Arc<[Arc<ShardStats>]> = (0..logical)
        .map(|_| Arc::new(ShardStats::default()))
        .collect();
    let engine_opts = EngineOptions {
        lookback_delta_ms: flags.query_lookback_delta.as_millis() as i64,
        max_samples: usize::try_from(flags.query_max_samples).unwrap_or(usize::MAX),
        ..EngineOptions::default()
    };
    // Query workers: enough to overlap a slow query with others, few enough
    // that PromQL cannot crowd out the shards.
    let workers = shards.clamp(2, 8);
    let query = QueryService::start(workers, engine_opts, mailboxes.clone(), flags.query_timeout)
        .map_err(|source| ServerError::Os {
        what: "spawn query workers",
        source,
    })?;

    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let state = Arc::new(ServerState::new(
        flags,
        config,
        Wiring {
            shards,
            control: control_tx,
            mailboxes,
            shard_stats,
            query,
        },
    ));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut threads = Vec::with_capacity(shards);
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    for (((id, listener), requests), scrape) in listeners
        .into_iter()
        .enumerate()
        .zip(inboxes)
        .zip(scrape_rxs)
    {
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let init = ShardInit {
            id,
            threads: shards,
            logical,
            storage: storage.clone(),
            requests,
            scrape,
            opened: opened_tx.clone(),
        };
        let t = shard::spawn(init, core, listener, state.clone(), shutdown_rx.clone()).map_err(
            |source| ServerError::Os {
                what: "spawn shard thread",
                source,
            },
        )?;
        threads.push(t);
    }
    drop(opened_tx);
    // Every shard must have its storage open before kiln reports ready.
    let mut failure = None;
    for _ in 0..shards {
        match opened_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a shard thread ended while opening storage".to_owned()),
        }
    }
    if let Some(e) = failure {
        let _ = shutdown_tx.send(true);
        for t in threads {
            let _ = t.join();
        }
        return Err(ServerError::Storage(e));
    }
    let mut targets = TargetManager::new(logical, scrape_txs, state.targets.clone());
    let parsed = state.config.read().parsed.clone();
    targets.apply(&parsed);

    // Ready before the address is announced, so that whoever waits for the
    // announcement finds `/-/ready` answering 200.
    state.set_ready(true);
    log::info!(
        "kiln {} listening on {bound} with {shards} shards",
        env!("CARGO_PKG_VERSION")
    );
    log::info!("Server is ready to receive web requests.");

    rt.block_on(async {
        let mut file_sd = tokio::time::interval(FILE_SD_CHECK);
        file_sd.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = term.recv() => { log::warn!("Received SIGTERM, exiting gracefully..."); break; }
                _ = int.recv() => { log::warn!("Received SIGINT, exiting gracefully..."); break; }
                _ = hup.recv() => { let _ = reload(&state, &self_addr, &mut targets); }
                _ = targets.file_changes() => {
                    state.metrics.set_file_sd_read_errors(targets.file_failures());
                }
                _ = file_sd.tick() => {
                    targets.refresh().await;
                    state.metrics.set_file_sd_read_errors(targets.file_failures());
                    state.metrics.set_http_sd_failures(targets.http_failures());
                }
                msg = control_rx.recv() => match msg {
                    Some(Control::Reload(reply)) => { let _ = reply.send(reload(&state, &self_addr, &mut targets)); }
                    Some(Control::Quit) => { log::warn!("Received termination request via web service, exiting gracefully..."); break; }
                    None => break,
                },
            }
        }
        Ok::<(), ServerError>(())
    })?;

    state.set_ready(false);
    // Receivers only disappear when their shard has already stopped.
    let _ = shutdown_tx.send(true);
    for t in threads {
        if t.join().is_err() {
            log::error!("a shard thread panicked during shutdown");
        }
    }
    log::info!("See you next time!");
    Ok(())
}

/// Reloads the configuration file; on failure the running configuration
/// stays in force.
fn reload(state: &ServerState, self_addr: &str, targets: &mut TargetManager) -> Result<(), String> {
    log::info!("Loading configuration file");
    match load_config(state.flags.config_file.as_deref(), self_addr) {
        Ok(cfg) => {
            targets.apply(&cfg.parsed);
            *state.config.write() = cfg;
            state.metrics.config_loaded(true);
            log::info!("Completed loading of configuration file");
            Ok(())
        }
        Err(e) => {
            state.metrics.config_loaded(false);
            log::error!("Error reloading config: {e}");
            Err(e.to_string())
        }
    }
}
