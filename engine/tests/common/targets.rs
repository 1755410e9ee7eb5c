//! Scrape targets for end-to-end tests: tiny HTTP/1.1 servers on
//! 127.0.0.1 ephemeral ports whose payload is a pure function of the time
//! slot, with explicit timestamps.
//!
//! A slot is twice the scrape interval long; every sample carries the
//! slot's start as its timestamp and a value computed from (target, slot).
//! Two servers scraping the same target at different phases therefore store
//! the same (timestamp, value) pairs — the repeats within a slot are exact
//! duplicates, which Prometheus and kiln both drop — so their query answers
//! can be compared exactly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bucket bounds of the test histogram. None is integral: Prometheus 3 (and
/// kiln) store `le="1"` as `le="1.0"`, Prometheus 2.42 as written, and the
/// side-by-side test compares with 2.42.
pub const BUCKETS: [f64; 5] = [0.05, 0.1, 0.25, 0.5, 2.5];

/// A running set of targets.
pub struct Targets {
    /// Their addresses, one per target.
    pub addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    /// Requests served, all targets.
    pub requests: Arc<AtomicU64>,
}

impl Drop for Targets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loops so they see the flag.
        for a in &self.addrs {
            let _ = TcpStream::connect_timeout(a, Duration::from_millis(200));
        }
    }
}

/// The payload of target `idx` at slot `slot` (slot length `slot_ms`).
pub fn payload(idx: usize, slot: i64, slot_ms: i64) -> String {
    let ts = slot * slot_ms;
    let i = idx as i64;
    let mut s = String::new();
    s.push_str("# HELP test_requests_total Requests served.\n# TYPE test_requests_total counter\n");
    for (p, path) in ["/a", "/b"].iter().enumerate() {
        // Grows by a per-series rate; resets every 23 slots.
        let v = (slot % 23) * (3 + p as i64 + i) + i;
        s.push_str(&format!(
            "test_requests_total{{path=\"{path}\"}} {v} {ts}\n"
        ));
    }
    s.push_str("# HELP test_temperature_celsius A gauge.\n# TYPE test_temperature_celsius gauge\n");
    let g = ((slot as f64) * 0.7 + i as f64).sin() * 10.0 + 20.0;
    s.push_str(&format!("test_temperature_celsius {g} {ts}\n"));
    s.push_str("# HELP test_latency_seconds A histogram.\n# TYPE test_latency_seconds histogram\n");
    let mut cum = 0i64;
    for (b, le) in BUCKETS.iter().enumerate() {
        cum += slot * (5 - b as i64 + i) + (slot * slot) % (3 + b as i64);
        s.push_str(&format!(
            "test_latency_seconds_bucket{{le=\"{le}\"}} {cum} {ts}\n"
        ));
    }
    cum += slot;
    s.push_str(&format!(
        "test_latency_seconds_bucket{{le=\"+Inf\"}} {cum} {ts}\n"
    ));
    s.push_str(&format!(
        "test_latency_seconds_sum {} {ts}\n",
        cum as f64 * 0.123
    ));
    s.push_str(&format!("test_latency_seconds_count {cum} {ts}\n"));
    s
}

/// The payload without its timestamps: the scraper stamps the samples, and
/// tracks their staleness.
pub fn untimed(payload: &str) -> String {
    payload
        .lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((rest, _)) if !l.starts_with('#') => format!("{rest}\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// Starts `n` targets whose slots are `slot_ms` long.
pub fn start(n: usize, slot_ms: i64) -> Targets {
    start_with(n, slot_ms, true)
}

/// Starts `n` targets serving their payload without timestamps.
pub fn start_untimed(n: usize, slot_ms: i64) -> Targets {
    start_with(n, slot_ms, false)
}

fn start_with(n: usize, slot_ms: i64, timestamps: bool) -> Targets {
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let mut addrs = Vec::new();
    for idx in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind target");
        addrs.push(l.local_addr().expect("addr"));
        let (stop, requests) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (stop, requests) = (stop.clone(), requests.clone());
                std::thread::spawn(move || serve(conn, idx, slot_ms, timestamps, &stop, &requests));
            }
        });
    }
    Targets {
        addrs,
        stop,
        requests,
    }
}

fn serve(
    conn: TcpStream,
    idx: usize,
    slot_ms: i64,
    timestamps: bool,
    stop: &AtomicBool,
    requests: &AtomicU64,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(conn);
    // Keep-alive: one request after another, bounded by the read timeout
    // and the stop flag.
    for _ in 0..100_000 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h
                .to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
            {
                content_length = v.parse().unwrap_or(0);
            }
        }
        if content_length > 0 {
            let mut skip = vec![0; content_length];
            if r.read_exact(&mut skip).is_err() {
                return;
            }
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64;
        let mut body = payload(idx, now / slot_ms, slot_ms);
        if !timestamps {
            body = untimed(&body);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if w.write_all(head.as_bytes()).is_err() || w.write_all(body.as_bytes()).is_err() {
            return;
        }
    }
}
