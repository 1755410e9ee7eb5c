//! Scrape loops as a shard runs them: timing, the HTTP request, and the
//! hand-off of each body to the shard's head through the target's
//! [`ScrapeCache`].
//!
//! The main thread turns the configuration into [`ScrapeTarget`]s and deals
//! each to the runtime thread owning the logical shard
//! `hash(job, instance) % logical_shards`. A thread's [`ScrapeManager`]
//! keeps one loop per target: a target whose identity (labels, URL,
//! settings) is unchanged after a reload keeps its loop, cache and timing,
//! so reloads leave no gap; a removed target's loop writes staleness markers
//! for everything it scraped and ends.
//!
//! Each loop scrapes at a fixed offset inside its interval,
//! `hash(target) % interval`, so targets spread over the interval instead
//! of firing together. It keeps one keep-alive HTTP/1.1 connection to its
//! target, sends Prometheus's `Accept` header (OpenMetrics first) and
//! accepts gzip; the body is bounded by `body_size_limit` before and after
//! decompression. An `https` target's connection is TLS with its job's
//! [`tls::TlsClient`], built when the configuration is applied; a reload
//! that rebuilds it hands the new one to the running loop, which reconnects
//! with it (its cache and phase stay).

pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, USER_AGENT};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use kiln_ingest::exposition::Format;
use kiln_ingest::scrape::{Metadata, ScrapeCache, ScrapeError, ScrapeSettings, ScrapeStats};
use kiln_storage::Labels;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};

use self::tls::{TlsClient, TlsSetup};

use crate::selfmetrics::ScrapeCounters;
use crate::state::ServerState;
use crate::tsdb::LogicalShard;

/// Largest body kiln reads when a job sets no `body_size_limit`: far above
/// any sane exposition, low enough that one broken target cannot exhaust
/// memory.
const DEFAULT_BODY_LIMIT: u64 = 1 << 30;

/// Everything a loop needs to scrape one target. Sent from the main thread
/// to the owning shard, so it is `Send`.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    /// Identity: a hash of everything below. Equal keys mean "the same
    /// target with the same settings" across reloads.
    pub key: u64,
    /// The logical shard its samples go to.
    pub shard: usize,
    /// The job.
    pub job: String,
    /// The URL scraped.
    pub url: String,
    /// Labels before relabeling, for `/api/v1/targets`.
    pub discovered_labels: Labels,
    /// Scrape interval.
    pub interval: Duration,
    /// Scrape timeout (≤ interval).
    pub timeout: Duration,
    /// `body_size_limit` (0 = none).
    pub body_size_limit: u64,
    /// A ready `Authorization` header value, if the job sets one.
    pub authorization: Option<String>,
    /// The job's TLS client (used when the URL is `https`), or why it
    /// could not be built. Not part of [`ScrapeTarget::key`]: a rebuilt
    /// client is handed to the running loop.
    pub tls: TlsSetup,
    /// How samples are processed.
    pub settings: ScrapeSettings,
}

/// Health of a target as `/api/v1/targets` shows it.
#[derive(Debug, Clone, Default)]
pub struct TargetHealth {
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: &'static str,
    /// The last scrape's error, empty when it succeeded.
    pub last_error: String,
    /// When the last scrape started.
    pub last_scrape: Option<SystemTime>,
    /// How long it took.
    pub last_duration: Duration,
    /// Samples it produced.
    pub last_samples: u64,
}

/// A target's status, shared between its loop and the HTTP handlers.
#[derive(Debug)]
pub struct TargetStatus {
    /// The target.
    pub target: ScrapeTarget,
    /// Its latest health; written once per scrape, off the sample path.
    pub health: Mutex<TargetHealth>,
    /// Its metric families' metadata; replaced only when it changed.
    pub metadata: Mutex<Arc<BTreeMap<String, Metadata>>>,
}

/// What `/api/v1/targets` shows: every shard's running targets, and the
/// targets relabeling dropped.
#[derive(Debug, Default)]
pub struct TargetRegistry {
    /// The targets being scraped, all shards, by [`ScrapeTarget::key`].
    pub active: Mutex<HashMap<u64, Arc<TargetStatus>>>,
    /// Per scrape pool (job), the targets `relabel_configs` dropped at the
    /// last discovery change; replaced whole by the main thread.
    pub dropped: Mutex<BTreeMap<String, DroppedTargets>>,
}

/// The targets one scrape pool's relabeling dropped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DroppedTargets {
    /// Their discovered labels, the first `keep_dropped_targets` of them
    /// in discovery order.
    pub kept: Vec<Labels>,
    /// How many were dropped in all.
    pub count: usize,
}

/// Commands to a shard's scrape manager.
#[derive(Debug)]
pub enum ScrapeCommand {
    /// The complete set of targets this shard scrapes from now on.
    SetTargets(Vec<ScrapeTarget>),
}

struct RunningLoop {
    stop: oneshot::Sender<oneshot::Sender<()>>,
    tls: watch::Sender<TlsSetup>,
}

/// Whether two TLS setups are the same build (a reload builds anew).
fn same_tls(a: &TlsSetup, b: &TlsSetup) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => Arc::ptr_eq(a, b),
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

/// Runs a shard's scrape loops, keeping them in step with the target sets
/// the main thread sends.
pub async fn run_manager(
    mut commands: mpsc::UnboundedReceiver<ScrapeCommand>,
    shards: Vec<Rc<LogicalShard>>,
    state: Arc<ServerState>,
) {
    let registry = &state.targets;
    let mut running: HashMap<u64, RunningLoop> = HashMap::new();
    while let Some(cmd) = commands.recv().await {
        match cmd {
            ScrapeCommand::SetTargets(targets) => {
                let wanted: HashMap<u64, ScrapeTarget> =
                    targets.into_iter().map(|t| (t.key, t)).collect();
                let gone: Vec<u64> = running
                    .keys()
                    .filter(|k| !wanted.contains_key(k))
                    .copied()
                    .collect();
                for k in gone {
                    if let Some(l) = running.remove(&k) {
                        stop_loop(l).await;
                    }
                    registry.active.lock().remove(&k);
                }
                for (k, t) in wanted {
                    if let Some(l) = running.get(&k) {
                        l.tls.send_if_modified(|cur| {
                            let changed = !same_tls(cur, &t.tls);
                            if changed {
                                cur.clone_from(&t.tls);
                            }
                            changed
                        });
                        continue;
                    }
                    let Some(shard) = shards.iter().find(|s| s.id == t.shard).cloned() else {
                        log::error!(
                            "target {} routed to shard {} it does not own",
                            t.url,
                            t.shard
                        );
                        continue;
                    };
                    let (tls, tls_rx) = watch::channel(t.tls.clone());
                    let status = Arc::new(TargetStatus {
                        target: t,
                        health: Mutex::new(TargetHealth {
                            health: "unknown",
                            ..TargetHealth::default()
                        }),
                        metadata: Mutex::default(),
                    });
                    registry.active.lock().insert(k, status.clone());
                    let (stop, stopped) = oneshot::channel();
                    tokio::task::spawn_local(scrape_loop(
                        status,
                        shard,
                        state.clone(),
                        stopped,
                        tls_rx,
                    ));
                    running.insert(k, RunningLoop { stop, tls });
                }
            }
        }
    }
}

async fn stop_loop(l: RunningLoop) {
    let (tx, rx) = oneshot::channel();
    if l.stop.send(tx).is_ok() {
        // The loop answers after writing its staleness markers; a loop that
        // already ended dropped the sender.
        let _ = rx.await;
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds from `now_ms` to the next instant at `offset` within the
/// interval grid.
fn delay_to_slot(now_ms: i64, interval_ms: i64, offset_ms: i64) -> i64 {
    let interval_ms = interval_ms.max(1);
    (offset_ms - now_ms).rem_euclid(interval_ms)
}

async fn scrape_loop(
    status: Arc<TargetStatus>,
    shard: Rc<LogicalShard>,
    state: Arc<ServerState>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
    mut tls: watch::Receiver<TlsSetup>,
) {
    let t = &status.target;
    let interval_ms = t.interval.as_millis().max(1) as i64;
    let offset = (t.key % interval_ms as u64) as i64;
    let first = delay_to_slot(unix_ms(SystemTime::now()), interval_ms, offset);
    let mut next = tokio::time::Instant::now() + Duration::from_millis(first as u64);
    let mut cache = ScrapeCache::new();
    let setup = tls.borrow_and_update().clone();
    let mut client = Client::new(t, &setup);
    let mut metadata_version = cache.metadata_version();
    let done = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            done = &mut stop => break done.ok(),
        }
        if tls.has_changed().unwrap_or(false) {
            // A reload rebuilt the TLS client: reconnect with the new one.
            let setup = tls.borrow_and_update().clone();
            client = Client::new(t, &setup);
        }
        let started = SystemTime::now();
        let t0 = unix_ms(started);
        let clock = Instant::now();
        let fetched = tokio::time::timeout(t.timeout, client.fetch(t)).await;
        let fetched = match fetched {
            Ok(r) => r,
            Err(_) => Err(format!("Get \"{}\": context deadline exceeded", t.url)),
        };
        let duration = clock.elapsed();
        let outcome = ingest(&shard, &mut cache, t, fetched, t0, duration);
        count(&state.metrics.scrapes, &outcome);
        {
            let mut h = status.health.lock();
            h.last_scrape = Some(started);
            h.last_duration = duration;
            match &outcome {
                Ok(stats) => {
                    h.health = "up";
                    h.last_error.clear();
                    h.last_samples = stats.scraped;
                }
                Err(e) => {
                    h.health = "down";
                    h.last_error.clone_from(&e.message);
                    h.last_samples = 0;
                }
            }
        }
        if cache.metadata_version() != metadata_version {
            metadata_version = cache.metadata_version();
            *status.metadata.lock() = Arc::new(cache.metadata().clone());
        }
        shard.publish();
        // Skip slots missed while a scrape overran, keeping the phase.
        next += t.interval;
        let now = tokio::time::Instant::now();
        while next <= now {
            next += t.interval;
        }
    };
    // End of run: everything this target produced goes stale now.
    {
        let mut db = shard.db.borrow_mut();
        let mut app = db.head_mut().appender();
        cache.append_end_of_run(&mut app, unix_ms(SystemTime::now()));
        if let Err(e) = app.commit() {
            log::warn!("target {}: writing end-of-run staleness: {e}", t.url);
        }
    }
    if let Some(done) = done {
        let _ = done.send(());
    }
}

fn count(c: &ScrapeCounters, outcome: &Result<ScrapeStats, ScrapeFailure>) {
    let add = |a: &std::sync::atomic::AtomicU64, n: u64| {
        if n > 0 {
            a.fetch_add(n, Ordering::Relaxed);
        }
    };
    match outcome {
        Ok(s) => {
            add(&c.ok, 1);
            add(&c.out_of_order, s.out_of_order);
            add(&c.duplicate, s.duplicate);
            add(&c.out_of_bounds, s.out_of_bounds);
        }
        Err(f) => {
            add(&c.failed, 1);
            add(&c.exceeded_sample_limit, u64::from(f.sample_limit));
        }
    }
}

/// Why a scrape failed, for the target's health and the counters.
#[derive(Debug)]
pub struct ScrapeFailure {
    /// The error text `/api/v1/targets` shows.
    pub message: String,
    /// Whether `sample_limit` refused it.
    pub sample_limit: bool,
}

/// Appends one scrape's outcome to the head: the samples and report series
/// on success; staleness markers and `up` = 0 on failure.
fn ingest(
    shard: &LogicalShard,
    cache: &mut ScrapeCache,
    t: &ScrapeTarget,
    fetched: Result<(Bytes, Option<String>), String>,
    t0: i64,
    duration: Duration,
) -> Result<ScrapeStats, ScrapeFailure> {
    let mut db = shard.db.borrow_mut();
    let head = db.head_mut();
    let target_labels = &t.settings.target_labels;
    let dur_s = duration.as_secs_f64();
    let mut sample_limit = false;
    let message = match fetched {
        Ok((body, content_type)) => {
            let format = Format::from_content_type(content_type.as_deref());
            let mut app = head.appender();
            match cache.append_body(&mut app, &body, format, &t.settings, t0) {
                Ok(pending) => {
                    let stats = pending.stats();
                    let report =
                        cache.append_report(&mut app, target_labels, t0, true, dur_s, &stats);
                    if let Err(e) = report {
                        log::warn!("target {}: report series: {e}", t.url);
                    }
                    match app.commit() {
                        Ok(_) => return Ok(cache.commit(pending)),
                        Err(e) => format!("writing samples: {e}"),
                    }
                }
                Err(e) => {
                    app.rollback();
                    sample_limit = matches!(e, ScrapeError::SampleLimit);
                    e.to_string()
                }
            }
        }
        Err(e) => e,
    };
    let mut app = head.appender();
    let pending = cache.append_failed(&mut app, t0);
    let zero = ScrapeStats::default();
    if let Err(e) = cache.append_report(&mut app, target_labels, t0, false, dur_s, &zero) {
        log::warn!("target {}: report series: {e}", t.url);
    }
    if let Err(e) = app.commit() {
        log::warn!("target {}: writing staleness markers: {e}", t.url);
    }
    cache.commit(pending);
    Err(ScrapeFailure {
        message,
        sample_limit,
    })
}

/// Bytes of each target connection's read buffer.
const READ_BUFFER: usize = 16 * 1024;

/// One target's HTTP client: a single keep-alive connection, reopened
/// when it breaks; TLS for an `https` URL.
struct Client {
    uri: Result<Uri, String>,
    /// The TLS client, for an `https` URL.
    tls: Option<Arc<TlsClient>>,
    conn: Option<SendRequest<Empty<Bytes>>>,
}

impl Client {
    fn new(t: &ScrapeTarget, setup: &TlsSetup) -> Client {
        let mut tls = None;
        let uri = t
            .url
            .parse::<Uri>()
            .map_err(|e| format!("invalid target URL {:?}: {e}", t.url))
            .and_then(|u| match u.scheme_str() {
                Some("http") => Ok(u),
                Some("https") => {
                    let c = setup.as_ref().map_err(|e| format!("tls_config: {e}"))?;
                    tls = Some(c.clone());
                    Ok(u)
                }
                Some(s) => Err(format!("unsupported scheme {s:?} in target URL")),
                None => Err(format!("target URL {:?} has no scheme", t.url)),
            });
        Client {
            uri,
            tls,
            conn: None,
        }
    }

    async fn connect(
        uri: &Uri,
        tls: Option<&TlsClient>,
    ) -> Result<SendRequest<Empty<Bytes>>, String> {
        let host = uri.host().ok_or("target URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("Get \"{uri}\": dial tcp {host}:{port}: {e}"))?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => handshake(stream, uri).await,
            Some(c) => {
                let stream = c
                    .connect(stream, host)
                    .await
                    .map_err(|e| format!("Get \"{uri}\": {e}"))?;
                handshake(stream, uri).await
            }
        }
    }

    /// The text of a request's failure, precise about TLS when that is
    /// the cause.
    fn failure(&self, uri: &Uri, e: &(dyn std::error::Error + 'static)) -> String {
        let tls = self.tls.as_ref().and_then(|c| c.describe(e));
        format!("Get \"{uri}\": {}", tls.unwrap_or_else(|| e.to_string()))
    }

    /// GETs the target; returns the (decompressed) body and its content
    /// type.
    async fn fetch(&mut self, t: &ScrapeTarget) -> Result<(Bytes, Option<String>), String> {
        let uri = self.uri.clone()?;
        let tls = self.tls.clone();
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.conn = None;
            self.conn = Some(Self::connect(&uri, tls.as_deref()).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".to_owned());
        };
        if conn.ready().await.is_err() {
            self.conn = Some(Self::connect(&uri, tls.as_deref()).await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".to_owned());
        };
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = Request::get(path)
            .header(http::header::HOST, authority)
            .header(ACCEPT, Format::ACCEPT)
            .header(ACCEPT_ENCODING, "gzip")
            .header(USER_AGENT, concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", t.timeout.as_secs_f64()),
            );
        if let Some(a) = &t.authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("building request: {e}"))?;
        let resp = match conn.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(self.failure(&uri, &e));
            }
        };
        let status = resp.status();
        if status != http::StatusCode::OK {
            return Err(format!(
                "server returned HTTP status {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ));
        }
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header(CONTENT_TYPE);
        let gzip = header(CONTENT_ENCODING).is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
        let limit = match t.body_size_limit {
            0 => DEFAULT_BODY_LIMIT,
            n => n,
        };
        let body = Limited::new(resp.into_body(), limit as usize)
            .collect()
            .await
            .map_err(|e| {
                self.conn = None;
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("body size limit exceeded ({limit} bytes)")
                } else {
                    let tls = self.tls.as_ref().and_then(|c| c.describe(&*e));
                    format!("reading body: {}", tls.unwrap_or_else(|| e.to_string()))
                }
            })?
            .to_bytes();
        if !gzip {
            return Ok((body, content_type));
        }
        let mut out = Vec::with_capacity(body.len() * 4);
        let read = flate2::read::GzDecoder::new(&body[..])
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("decompressing body: {e}"))?;
        if read as u64 > limit {
            return Err(format!("body size limit exceeded ({limit} bytes)"));
        }
        Ok((Bytes::from(out), content_type))
    }
}

/// HTTP/1.1 over `io`; the connection is driven by a task of this shard.
async fn handshake<T>(io: T, uri: &Uri) -> Result<SendRequest<Empty<Bytes>>, String>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    // A fixed read buffer: hyper's adaptive one grows to the body size
    // (100+ KiB for a node_exporter) and keeps it between scrapes, which
    // across thousands of idle keep-alive connections is a large share of
    // the server's memory. The body is collected chunk by chunk, so a small
    // buffer costs only a few more reads.
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .read_buf_exact_size(Some(READ_BUFFER))
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("Get \"{uri}\": {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(send)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_phase() {
        assert_eq!(delay_to_slot(0, 15_000, 4_000), 4_000);
        assert_eq!(delay_to_slot(5_000, 15_000, 4_000), 14_000);
        assert_eq!(delay_to_slot(19_000, 15_000, 4_000), 0);
        assert_eq!(
            delay_to_slot(1_700_000_000_123, 15_000, 0),
            15_000 - 123 - 5_000
        );
    }
}
