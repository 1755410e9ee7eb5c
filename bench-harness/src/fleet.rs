//! The fleet process: serves every simulated target of a [`FleetSpec`] over
//! HTTP/1.1 on its own loopback address, all on one port, from one
//! single-threaded tokio runtime.
//!
//! Owns the sockets, the time → slot mapping, content encoding and the
//! fleet's own account of the scrapes it received; what a target answers is
//! [`crate::model`]'s business. The process announces readiness with one
//! JSON line on stdout (`{"ready":true,"port":…,"targets":…}`) once every
//! listener is bound, and ends on SIGTERM, SIGINT or after its duration.
//!
//! gzip: a scrape that sends `Accept-Encoding: gzip` gets a gzip body when
//! the spec enables it (node_exporter does the same). Each target keeps the
//! compressed body of the slot it last compressed, so repeated scrapes in
//! one interval cost one compression; the fast level keeps the fleet's own
//! CPU small next to the server's (the run reports it).
//!
//! Scrape accounting: every `/metrics` request counts, on arrival, for its
//! (target, slot) pair once; [`STATS_PATH`] on any target address answers
//! with those counts per slot as JSON ([`ScrapeStats`]), which is how a run
//! tells whether the server scraped every target in every interval, on any
//! server, without relying on its self-metrics.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{HeaderMap, Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::model::{self, FleetSpec, MAX_TARGETS, TargetKind};
use crate::template::Template;

#[derive(Debug, Error)]
pub enum FleetError {
    #[error("{targets} targets requested; at most {MAX_TARGETS} loopback addresses are available")]
    TooManyTargets { targets: usize },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// Path, on every target address, of the fleet's scrape accounting.
pub const STATS_PATH: &str = "/kiln-bench/stats";

/// Slots the accounting covers (from the origin): 18 h at 1 s, 1.8 h at
/// the shortest interval; scrapes in later slots are not counted per slot.
const MAX_TRACKED_SLOTS: usize = 1 << 16;

/// What the fleet received, as served on [`STATS_PATH`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScrapeStats {
    /// `/metrics` requests received.
    pub requests: u64,
    /// Responses sent with a gzip body.
    pub gzip_responses: u64,
    /// Bodies compressed (one per (target, slot) asked for gzip).
    pub compressions: u64,
    /// Per slot since the fleet's origin: targets scraped at least once in
    /// that slot (index = slot).
    pub targets_per_slot: Vec<u32>,
}

/// Per-target state.
struct TargetState {
    /// Slot of the last `/metrics` request counted (`u64::MAX`: none yet).
    last_slot: Cell<u64>,
    /// The gzip body of the slot last compressed.
    gzip: RefCell<Option<(u64, Bytes)>>,
}

/// Shared by every connection of the fleet (single-threaded, so `Rc`).
struct Fleet {
    spec: FleetSpec,
    template: Template,
    /// Largest body rendered so far, to size the next buffer in one go.
    body_hint: Cell<usize>,
    targets: Vec<TargetState>,
    stats: RefCell<ScrapeStats>,
}

impl Fleet {
    fn new(spec: FleetSpec, template: Template) -> Self {
        let targets = (0..spec.targets)
            .map(|_| TargetState {
                last_slot: Cell::new(u64::MAX),
                gzip: RefCell::new(None),
            })
            .collect();
        Self {
            spec,
            template,
            body_hint: Cell::new(64 * 1024),
            targets,
            stats: RefCell::new(ScrapeStats::default()),
        }
    }

    /// Counts a `/metrics` request to `index` arriving in `slot`.
    fn count_scrape(&self, index: usize, slot: u64) {
        let mut stats = self.stats.borrow_mut();
        stats.requests += 1;
        let target = &self.targets[index];
        if target.last_slot.replace(slot) == slot {
            return;
        }
        let Ok(at) = usize::try_from(slot) else {
            return;
        };
        if at < MAX_TRACKED_SLOTS {
            let per_slot = &mut stats.targets_per_slot;
            if per_slot.len() <= at {
                per_slot.resize(at + 1, 0);
            }
            per_slot[at] += 1;
        }
    }

    fn render(&self, index: usize, slot: u64) -> String {
        let mut body = String::with_capacity(self.body_hint.get());
        model::render(&self.spec, &self.template, index, slot, &mut body);
        self.body_hint.set(self.body_hint.get().max(body.len()));
        body
    }

    /// The body of target `index` in `slot` and whether it is gzip: gzip
    /// when asked for and enabled, compressed once per (target, slot).
    fn metrics_body(&self, index: usize, slot: u64, wants_gzip: bool) -> (Bytes, bool) {
        if !(wants_gzip && self.spec.gzip) {
            return (Bytes::from(self.render(index, slot)), false);
        }
        let mut stats = self.stats.borrow_mut();
        stats.gzip_responses += 1;
        let mut cached = self.targets[index].gzip.borrow_mut();
        if let Some((at, body)) = cached.as_ref()
            && *at == slot
        {
            return (body.clone(), true);
        }
        stats.compressions += 1;
        let body = Bytes::from(gzip(self.render(index, slot).as_bytes()));
        *cached = Some((slot, body.clone()));
        (body, true)
    }
}

/// `data` as one gzip member at the fast level.
fn gzip(data: &[u8]) -> Vec<u8> {
    use flate2::{Compression, write::GzEncoder};
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 6), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// Whether `Accept-Encoding` admits gzip: a `gzip` (or `x-gzip`) coding
/// without `q=0`. A bare `*` is not taken as a request for gzip: the
/// scrapers this fleet stands in for name gzip when they want it.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip")) && !refused
        })
}

/// Serves the fleet until a signal arrives or `duration` passes.
/// `port` 0 picks a free port (the same on every address).
pub fn serve(
    spec: FleetSpec,
    template: Template,
    port: u16,
    duration: Duration,
) -> Result<(), FleetError> {
    if spec.targets > MAX_TARGETS {
        return Err(FleetError::TooManyTargets {
            targets: spec.targets,
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FleetError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let fleet = Rc::new(Fleet::new(spec, template));
        let mut port = port;
        let mut listeners = Vec::with_capacity(fleet.spec.targets);
        for index in 0..fleet.spec.targets {
            let addr = SocketAddr::from((model::target_addr(index), port));
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| FleetError::Bind { addr, source })?;
            if port == 0 {
                port = listener
                    .local_addr()
                    .map_err(|source| FleetError::Bind { addr, source })?
                    .port();
            }
            listeners.push(listener);
        }
        for (index, listener) in listeners.into_iter().enumerate() {
            tokio::task::spawn_local(accept_loop(Rc::clone(&fleet), index, listener));
        }
        announce(port, fleet.spec.targets);
        wait_for_end(duration).await;
        Ok(())
    })
}

fn announce(port: u16, targets: usize) {
    let line = serde_json::json!({ "ready": true, "port": port, "targets": targets });
    let mut stdout = std::io::stdout().lock();
    // The parent may have stopped reading; the fleet keeps serving anyway.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

async fn wait_for_end(duration: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tokio::time::sleep(duration).await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

async fn accept_loop(fleet: Rc<Fleet>, index: usize, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let fleet = Rc::clone(&fleet);
                tokio::task::spawn_local(async move {
                    let service = hyper::service::service_fn(move |request| {
                        respond(Rc::clone(&fleet), index, request)
                    });
                    // A scraper hanging up mid-response is its own business.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Out of descriptors or a reset before accept: back off briefly
            // rather than spin; the scraper will retry on its next interval.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn respond(
    fleet: Rc<Fleet>,
    index: usize,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    match request.uri().path() {
        "/metrics" => {}
        STATS_PATH => {
            let json = serde_json::to_vec(&*fleet.stats.borrow()).unwrap_or_default();
            let mut response = Response::new(Full::new(Bytes::from(json)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            return Ok(response);
        }
        _ => return Ok(plain(StatusCode::NOT_FOUND, "only /metrics is served\n")),
    }
    // Counted on arrival: whether the server asked on time, whatever the
    // target then does.
    fleet.count_scrape(index, fleet.spec.slot_at(now_ms()));
    match fleet.spec.kind(index) {
        TargetKind::Failing => {
            return Ok(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "simulated failing target\n",
            ));
        }
        TargetKind::Slow => {
            tokio::time::sleep(Duration::from_millis(fleet.spec.slow_delay_ms)).await;
        }
        TargetKind::Normal | TargetKind::Histogram => {}
    }
    let slot = fleet.spec.slot_at(now_ms());
    let (body, gzipped) = fleet.metrics_body(index, slot, accepts_gzip(request.headers()));
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    if gzipped {
        headers.insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::model::HISTOGRAM_FAMILY_SERIES;

    fn fleet(gzip: bool) -> Fleet {
        let spec = FleetSpec {
            targets: 4,
            series_per_target: 1521,
            interval_ms: 15_000,
            churn_per_hour: 0.0,
            histogram_targets: 1,
            histogram_series: 2 * HISTOGRAM_FAMILY_SERIES,
            slow_targets: 0,
            slow_delay_ms: 0,
            failing_targets: 0,
            timestamps: false,
            origin_ms: 0,
            gzip,
        };
        Fleet::new(
            spec,
            crate::embedded_template().expect("embedded capture parses"),
        )
    }

    fn gunzip(body: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .expect("a valid gzip stream");
        text
    }

    #[test]
    fn gzip_decodes_to_the_plain_body_and_is_compressed_once_per_slot() {
        let f = fleet(true);
        for target in [0, 2] {
            let (plain, gzipped) = f.metrics_body(target, 7, false);
            assert!(!gzipped);
            let (packed, gzipped) = f.metrics_body(target, 7, true);
            assert!(gzipped);
            assert!(
                packed.len() * 4 < plain.len(),
                "{} of {}",
                packed.len(),
                plain.len()
            );
            assert_eq!(gunzip(&packed), std::str::from_utf8(&plain).unwrap());
            // Same slot again: the very same bytes, no new compression.
            let (again, _) = f.metrics_body(target, 7, true);
            assert_eq!(again.as_ptr(), packed.as_ptr());
            // The next slot's body differs and is compressed anew.
            let (next, _) = f.metrics_body(target, 8, true);
            assert_ne!(gunzip(&next), gunzip(&packed));
            assert_eq!(
                gunzip(&next),
                std::str::from_utf8(&f.metrics_body(target, 8, false).0).unwrap()
            );
        }
        let stats = f.stats.borrow();
        assert_eq!((stats.gzip_responses, stats.compressions), (6, 4));
    }

    #[test]
    fn gzip_can_be_turned_off() {
        let f = fleet(false);
        let (body, gzipped) = f.metrics_body(1, 3, true);
        assert!(!gzipped);
        assert_eq!(body, f.metrics_body(1, 3, false).0);
        assert_eq!(f.stats.borrow().compressions, 0);
    }

    #[test]
    fn accept_encoding_is_negotiated() {
        let accepts = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::ACCEPT_ENCODING, v.parse().unwrap());
            }
            accepts_gzip(&headers)
        };
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["identity, GZIP;q=0.5"]));
        assert!(accepts(&["br", "x-gzip"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&["identity"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip; q=0.0, deflate"]));
        assert!(!accepts(&["*"]));
    }

    #[test]
    fn scrapes_count_once_per_target_and_slot() {
        let f = fleet(true);
        f.count_scrape(0, 2);
        f.count_scrape(0, 2); // a retry in the same slot
        f.count_scrape(1, 2);
        f.count_scrape(0, 3);
        f.count_scrape(3, 5);
        f.count_scrape(1, MAX_TRACKED_SLOTS as u64); // past the tracked range
        let stats = f.stats.borrow();
        assert_eq!(stats.requests, 6);
        assert_eq!(stats.targets_per_slot, [0, 0, 2, 1, 0, 1]);
    }
}
