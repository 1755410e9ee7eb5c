//! Query load: PromQL queries sent at a fixed rate while a run measures, so
//! ingest is measured under the reads a real server also serves.
//!
//! Owns the load thread (its own single-threaded runtime, one query in
//! flight at a time, paced to the requested rate) and its latency
//! percentiles. The thread ends when told to or at its deadline, and sends
//! at most `rate × deadline` queries: bounded in time and count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::httpc;

/// What the query load achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryLoadResult {
    /// Requested queries per second.
    pub rate_per_s: f64,
    pub sent: usize,
    pub failed: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// A running query load.
pub struct QueryLoad {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<QueryLoadResult>,
}

/// Each query's timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts sending `queries` round-robin to `addr` at `rate` per second,
/// for at most `deadline`. Range queries cover the last 5 minutes.
pub fn start(
    addr: SocketAddr,
    queries: Vec<(String, bool)>,
    rate: f64,
    deadline: Duration,
) -> QueryLoad {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || run_load(addr, &queries, rate, deadline, &flag));
    QueryLoad { stop, thread }
}

impl QueryLoad {
    /// Stops the load and returns what it measured.
    pub fn finish(self) -> QueryLoadResult {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn run_load(
    addr: SocketAddr,
    queries: &[(String, bool)],
    rate: f64,
    deadline: Duration,
    stop: &AtomicBool,
) -> QueryLoadResult {
    let mut result = QueryLoadResult {
        rate_per_s: rate,
        ..QueryLoadResult::default()
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return result;
    };
    if queries.is_empty() || rate <= 0.0 {
        return result;
    }
    let began = Instant::now();
    let most = (rate * deadline.as_secs_f64()).ceil() as usize;
    let mut latencies = Vec::with_capacity(most.min(1 << 20));
    for i in 0..most {
        let due = Duration::from_secs_f64(i as f64 / rate);
        // Sleep in short steps so a stop request is seen promptly.
        while began.elapsed() < due && !stop.load(Ordering::Relaxed) {
            std::thread::sleep((due - began.elapsed()).min(Duration::from_millis(100)));
        }
        if stop.load(Ordering::Relaxed) || began.elapsed() >= deadline {
            break;
        }
        let (expr, range) = &queries[i % queries.len()];
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let path = if *range {
            format!(
                "/api/v1/query_range?query={}&start={:.3}&end={now_s:.3}&step=15",
                httpc::encode(expr),
                now_s - 300.0
            )
        } else {
            format!(
                "/api/v1/query?query={}&time={now_s:.3}",
                httpc::encode(expr)
            )
        };
        let sent = Instant::now();
        let reply = runtime.block_on(httpc::get(addr, &path, QUERY_TIMEOUT));
        result.sent += 1;
        match reply {
            Ok(r) if r.status == 200 => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
            _ => result.failed += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    result.p50_ms = percentile(&latencies, 0.50);
    result.p99_ms = percentile(&latencies, 0.99);
    result.max_ms = latencies.last().copied();
    result
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_load_against_nothing_counts_failures_and_stops() {
        // A port just freed: nothing listens, every query fails fast.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let load = start(
            ([127, 0, 0, 1], port).into(),
            vec![("up".to_owned(), false)],
            50.0,
            Duration::from_secs(5),
        );
        std::thread::sleep(Duration::from_millis(200));
        let result = load.finish();
        assert!(result.sent > 0);
        assert_eq!(result.failed, result.sent);
        assert_eq!(result.p50_ms, None);
    }
}
