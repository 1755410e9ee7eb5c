//! Shards: one OS thread per core, pinned to it, each running its own
//! tokio `current_thread` runtime with a `LocalSet`.
//!
//! A shard owns everything it runs (its connections, its logical shards'
//! heads and WALs, its targets' scrape loops) and shares nothing mutable
//! with other shards; others reach its data through its mailbox
//! (see `tsdb.rs`). Every
//! shard accepts HTTP connections on the same port through its own
//! `SO_REUSEPORT` socket, so the kernel spreads connections over shards
//! without a shared accept queue.
//!
//! Shutdown: the main thread flips a watch channel; each shard stops
//! accepting, lets open connections finish their current request for at most
//! [`DRAIN_TIMEOUT`], and its thread returns.

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Protocol, Socket, Type};
use std::rc::Rc;

use tokio::sync::{mpsc, watch};

use crate::scrape::{ScrapeCommand, run_manager};
use crate::state::ServerState;
use crate::tsdb::{LocalShards, ShardRequest, StorageConfig, housekeeping_loop, serve_requests};

/// How long a shard waits for open connections at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the listeners could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address does not parse or resolve.
    #[error("invalid --web.listen-address {addr:?}: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A socket call failed (address in use, permission denied, …).
    #[error("listen on {addr}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Resolves a Prometheus-style listen address (`:9090` means every
/// interface).
pub fn resolve_listen_address(addr: &str) -> Result<SocketAddr, ListenError> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    };
    let err = |reason: String| ListenError::Address {
        addr: addr.to_owned(),
        reason,
    };
    full.to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("resolves to no address".to_owned()))
}

/// Binds `count` listeners on one address with `SO_REUSEPORT`. With port 0
/// the first socket picks the port and the others join it.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> Result<Vec<StdListener>, ListenError> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let l = bind_one(addr).map_err(|source| ListenError::Socket { addr, source })?;
        if addr.port() == 0 {
            addr = l
                .local_addr()
                .map_err(|source| ListenError::Socket { addr, source })?;
        }
        out.push(l);
    }
    Ok(out)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<StdListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// What a shard thread starts with.
pub struct ShardInit {
    /// The runtime thread's number.
    pub id: usize,
    /// How many runtime threads there are.
    pub threads: usize,
    /// How many logical shards the data directory has.
    pub logical: usize,
    /// Where its storage lives.
    pub storage: StorageConfig,
    /// Its mailbox.
    pub requests: mpsc::UnboundedReceiver<ShardRequest>,
    /// Its target lists, from the main thread.
    pub scrape: mpsc::UnboundedReceiver<ScrapeCommand>,
    /// Told once the shard's storage is open (or why it could not be).
    pub opened: std::sync::mpsc::Sender<Result<(), String>>,
}

/// Starts shard `init.id` on its own thread, pinned to `core` when given.
/// It opens its logical shards (replaying their WALs), reports on
/// `init.opened`, then serves until shutdown.
pub fn spawn(
    init: ShardInit,
    core: Option<core_affinity::CoreId>,
    listener: StdListener,
    state: Arc<ServerState>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    let id = init.id;
    std::thread::Builder::new()
        .name(format!("kiln-shard-{id}"))
        .spawn(move || {
            if let Some(core) = core
                && !core_affinity::set_for_current(core)
            {
                log::warn!("shard {id}: could not pin to core {}", core.id);
            }
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = init
                        .opened
                        .send(Err(format!("shard {id}: cannot start its runtime: {e}")));
                    return;
                }
            };
            let local = match LocalShards::open(
                &init.storage,
                init.logical,
                id,
                init.threads,
                &state.shard_stats,
            ) {
                Ok(l) => Rc::new(l),
                Err(e) => {
                    let _ = init.opened.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = init.opened.send(Ok(()));
            let tasks = tokio::task::LocalSet::new();
            tasks.spawn_local(serve_requests(init.requests, local.clone()));
            tasks.spawn_local(housekeeping_loop(
                local.clone(),
                init.storage.clone(),
                init.logical,
            ));
            tasks.spawn_local(run_manager(
                init.scrape,
                local.shards.clone(),
                state.clone(),
            ));
            tasks.block_on(&rt, run(id, listener, state, shutdown));
            // Scrapes and connections have stopped: make the WAL durable.
            local.publish();
            local.sync();
        })
}

async fn run(
    id: usize,
    listener: StdListener,
    state: Arc<ServerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("shard {id}: cannot register listener: {e}");
            return;
        }
    };
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning on a failing accept.
                        log::warn!("shard {id}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let st = state.clone();
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| crate::http::serve(req, st.clone())),
                    );
                let conn = graceful.watch(conn);
                tokio::task::spawn_local(async move {
                    // A client that disconnects mid-request is not an error
                    // worth a log line.
                    let _ = conn.await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("shard {id}: connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}
