//! kiln's own metrics, exposed on `/metrics` in text format 0.0.4.
//!
//! Where a metric means the same as one of Prometheus's it has Prometheus's
//! name and labels, so existing dashboards and alerts keep working
//! (`prometheus_http_requests_total`, `prometheus_config_last_reload_*`,
//! `prometheus_build_info`, `process_*`).
//!
//! Counters here are updated off the ingest hot path (HTTP requests, reloads);
//! the storage and scrape counters of each shard are read from the shards
//! when `/metrics` is rendered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::tsdb::ShardStats;

/// The version Prometheus API clients are told (see docs/compatibility.md:
/// Grafana gates features on it, so kiln reports the API level it serves).
pub const PROMETHEUS_API_VERSION: &str = "3.0.0";

/// One metric family: name, type, help and its samples (label text, value).
type Family = (&'static str, &'static str, &'static str, Vec<(String, f64)>);

/// Scrape outcomes, counted once per scrape (not per sample).
#[derive(Debug, Default)]
pub struct ScrapeCounters {
    /// Scrapes that succeeded.
    pub ok: AtomicU64,
    /// Scrapes that failed (connection, status, body, limits).
    pub failed: AtomicU64,
    /// Scrapes refused for exceeding `sample_limit`.
    pub exceeded_sample_limit: AtomicU64,
    /// Samples rejected as out of order.
    pub out_of_order: AtomicU64,
    /// Samples rejected as a second value at a timestamp.
    pub duplicate: AtomicU64,
    /// Samples rejected as too old.
    pub out_of_bounds: AtomicU64,
}

/// Process-wide self-metrics.
pub struct SelfMetrics {
    /// Scrape outcomes.
    pub scrapes: ScrapeCounters,
    http_requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    reload_successful: AtomicBool,
    reload_success_time: AtomicU64,
    reloads_total: AtomicU64,
    reload_failures_total: AtomicU64,
    file_sd_read_errors: AtomicU64,
    http_sd_failures: AtomicU64,
}

impl SelfMetrics {
    /// Fresh metrics; the initial config load counts as the first reload.
    pub fn new() -> Self {
        SelfMetrics {
            scrapes: ScrapeCounters::default(),
            http_requests: Mutex::new(BTreeMap::new()),
            reload_successful: AtomicBool::new(false),
            reload_success_time: AtomicU64::new(0),
            reloads_total: AtomicU64::new(0),
            reload_failures_total: AtomicU64::new(0),
            file_sd_read_errors: AtomicU64::new(0),
            http_sd_failures: AtomicU64::new(0),
        }
    }

    /// Sets the total of file discovery read failures.
    pub fn set_file_sd_read_errors(&self, n: u64) {
        self.file_sd_read_errors.store(n, Ordering::Relaxed);
    }

    /// Sets the total of failed HTTP discovery fetches.
    pub fn set_http_sd_failures(&self, n: u64) {
        self.http_sd_failures.store(n, Ordering::Relaxed);
    }

    /// Counts one served request.
    pub fn http_request(&self, handler: &'static str, code: u16) {
        *self
            .http_requests
            .lock()
            .entry((handler, code))
            .or_insert(0) += 1;
    }

    /// Records the outcome of a configuration (re)load.
    pub fn config_loaded(&self, ok: bool) {
        self.reloads_total.fetch_add(1, Ordering::Relaxed);
        self.reload_successful.store(ok, Ordering::Relaxed);
        if ok {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            self.reload_success_time.store(now, Ordering::Relaxed);
        } else {
            self.reload_failures_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the last configuration load succeeded.
    pub fn last_reload_successful(&self) -> bool {
        self.reload_successful.load(Ordering::Relaxed)
    }

    /// Renders every metric in text format 0.0.4.
    pub fn render(
        &self,
        started: SystemTime,
        shards: usize,
        storage: &[Arc<ShardStats>],
    ) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {}", kiln_storage::format_value(*v));
            }
        };
        family(
            "prometheus_build_info",
            "gauge",
            "A metric with a constant '1' value labeled by version, revision, branch, and goversion from which prometheus was built.",
            &[(
                format!(
                    "{{branch=\"kiln\",goversion=\"rust\",revision=\"kiln-{}\",version=\"{PROMETHEUS_API_VERSION}\"}}",
                    env!("CARGO_PKG_VERSION")
                ),
                1.0,
            )],
        );
        family(
            "kiln_shards",
            "gauge",
            "Number of shards (threads pinned to cores) this kiln runs.",
            &[(String::new(), shards as f64)],
        );
        let sum = |f: fn(&ShardStats) -> &AtomicU64| -> f64 {
            storage
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum::<u64>() as f64
        };
        let float = |v: f64| vec![("{type=\"float\"}".to_owned(), v)];
        let plain = |v: f64| vec![(String::new(), v)];
        let storage_families: [Family; 20] = [
            (
                "prometheus_tsdb_head_series",
                "gauge",
                "Total number of series in the head block.",
                plain(sum(|s| &s.head_series)),
            ),
            (
                "prometheus_tsdb_head_samples_appended_total",
                "counter",
                "Total number of appended samples.",
                float(sum(|s| &s.samples_appended)),
            ),
            (
                "prometheus_tsdb_head_chunks",
                "gauge",
                "Total number of chunks in the head block.",
                plain(sum(|s| &s.head_chunks)),
            ),
            (
                "prometheus_tsdb_head_series_created_total",
                "counter",
                "Total number of series created in the head",
                plain(sum(|s| &s.series_created)),
            ),
            (
                "prometheus_tsdb_head_series_removed_total",
                "counter",
                "Total number of series removed in the head",
                plain(sum(|s| &s.series_removed)),
            ),
            (
                "prometheus_tsdb_out_of_order_samples_total",
                "counter",
                "Total number of out of order samples ingestion failed attempts due to out of order being disabled.",
                float(sum(|s| &s.out_of_order)),
            ),
            (
                "prometheus_tsdb_out_of_bound_samples_total",
                "counter",
                "Total number of out of bound samples ingestion failed attempts with out of order support disabled.",
                float(sum(|s| &s.out_of_bounds)),
            ),
            (
                "kiln_tsdb_duplicate_samples_total",
                "counter",
                "Samples rejected because their series already has a different value at that timestamp.",
                plain(sum(|s| &s.duplicate)),
            ),
            (
                "prometheus_tsdb_wal_corruptions_total",
                "counter",
                "Total number of WAL corruptions.",
                plain(sum(|s| &s.wal_corruptions)),
            ),
            (
                "kiln_tsdb_wal_written_bytes_total",
                "counter",
                "Bytes written to the write-ahead logs.",
                plain(sum(|s| &s.wal_bytes)),
            ),
            (
                "kiln_tsdb_head_chunk_bytes",
                "gauge",
                "Bytes of encoded chunk data in the heads.",
                plain(sum(|s| &s.chunk_bytes)),
            ),
            (
                "kiln_tsdb_head_bytes",
                "gauge",
                "Bytes the heads account for in all (series, index, chunks).",
                plain(sum(|s| &s.head_bytes)),
            ),
            (
                "kiln_tsdb_head_samples",
                "gauge",
                "Samples held in the heads.",
                plain(sum(|s| &s.head_samples)),
            ),
            (
                "prometheus_tsdb_blocks_loaded",
                "gauge",
                "Persisted blocks currently open.",
                plain(sum(|s| &s.blocks)),
            ),
            (
                "prometheus_tsdb_storage_blocks_bytes",
                "gauge",
                "Bytes of the files of all persisted blocks.",
                plain(sum(|s| &s.blocks_bytes)),
            ),
            (
                "prometheus_tsdb_compactions_total",
                "counter",
                "Head ranges written out as blocks, plus merges of blocks.",
                plain(sum(|s| &s.compactions)),
            ),
            (
                "prometheus_tsdb_compactions_failed_total",
                "counter",
                "Head cuts and block merges that failed.",
                plain(sum(|s| &s.compactions_failed)),
            ),
            (
                "prometheus_tsdb_head_truncations_total",
                "counter",
                "Times a head dropped the data below a point (after a block, or for retention).",
                plain(sum(|s| &s.head_truncations)),
            ),
            (
                "kiln_tsdb_blocks_deleted_total",
                "counter",
                "Blocks deleted by time or size retention.",
                plain(sum(|s| &s.blocks_deleted)),
            ),
            (
                "kiln_tsdb_blocks_quarantined",
                "gauge",
                "Blocks found damaged when kiln started, renamed <ulid>.corrupt and left out of reads.",
                plain(sum(|s| &s.blocks_quarantined)),
            ),
        ];
        for (name, kind, help, samples) in &storage_families {
            family(name, kind, help, samples);
        }
        let mint = storage
            .iter()
            .map(|s| ShardStats::time(&s.min_time))
            .min()
            .unwrap_or(i64::MAX);
        let maxt = storage
            .iter()
            .map(|s| ShardStats::time(&s.max_time))
            .max()
            .unwrap_or(i64::MIN);
        let lowest = storage
            .iter()
            .map(|s| ShardStats::time(&s.lowest_time))
            .min()
            .unwrap_or(i64::MAX);
        family(
            "prometheus_tsdb_lowest_timestamp",
            "gauge",
            "Lowest sample timestamp held, in blocks or heads (ms).",
            &[(String::new(), lowest as f64)],
        );
        family(
            "prometheus_tsdb_head_min_time",
            "gauge",
            "Minimum time bound of the head block.",
            &[(String::new(), mint as f64)],
        );
        family(
            "prometheus_tsdb_head_max_time",
            "gauge",
            "Maximum timestamp of the head block.",
            &[(String::new(), maxt as f64)],
        );
        let uring = storage
            .iter()
            .all(|s| s.wal_io_uring.load(Ordering::Relaxed) == 1);
        family(
            "kiln_tsdb_wal_io_uring",
            "gauge",
            "1 when every WAL writes through io_uring, 0 when some use the pwrite fallback.",
            &[(String::new(), f64::from(u8::from(uring)))],
        );
        let sc = &self.scrapes;
        let n = |a: &AtomicU64| vec![(String::new(), a.load(Ordering::Relaxed) as f64)];
        family(
            "kiln_scrapes_total",
            "counter",
            "Scrapes by outcome.",
            &[
                (
                    "{result=\"ok\"}".to_owned(),
                    sc.ok.load(Ordering::Relaxed) as f64,
                ),
                (
                    "{result=\"failed\"}".to_owned(),
                    sc.failed.load(Ordering::Relaxed) as f64,
                ),
            ],
        );
        family(
            "prometheus_target_scrapes_exceeded_sample_limit_total",
            "counter",
            "Total number of scrapes that hit the sample limit and were rejected.",
            &n(&sc.exceeded_sample_limit),
        );
        family(
            "prometheus_target_scrapes_sample_out_of_order_total",
            "counter",
            "Total number of samples rejected due to not being out of the expected order.",
            &n(&sc.out_of_order),
        );
        family(
            "prometheus_target_scrapes_sample_duplicate_timestamp_total",
            "counter",
            "Total number of samples rejected due to duplicate timestamps but different values.",
            &n(&sc.duplicate),
        );
        family(
            "prometheus_target_scrapes_sample_out_of_bounds_total",
            "counter",
            "Total number of samples rejected due to timestamp falling outside of the time bounds.",
            &n(&sc.out_of_bounds),
        );
        family(
            "prometheus_sd_file_read_errors_total",
            "counter",
            "The number of File-SD read errors.",
            &[(
                String::new(),
                self.file_sd_read_errors.load(Ordering::Relaxed) as f64,
            )],
        );
        family(
            "prometheus_sd_http_failures_total",
            "counter",
            "Number of HTTP service discovery refresh failures.",
            &[(
                String::new(),
                self.http_sd_failures.load(Ordering::Relaxed) as f64,
            )],
        );
        family(
            "prometheus_config_last_reload_successful",
            "gauge",
            "Whether the last configuration reload attempt was successful.",
            &[(
                String::new(),
                f64::from(u8::from(self.last_reload_successful())),
            )],
        );
        family(
            "prometheus_config_last_reload_success_timestamp_seconds",
            "gauge",
            "Timestamp of the last successful configuration reload.",
            &[(
                String::new(),
                self.reload_success_time.load(Ordering::Relaxed) as f64,
            )],
        );
        let http: Vec<(String, f64)> = self
            .http_requests
            .lock()
            .iter()
            .map(|((h, c), n)| (format!("{{code=\"{c}\",handler=\"{h}\"}}"), *n as f64))
            .collect();
        family(
            "prometheus_http_requests_total",
            "counter",
            "Counter of HTTP requests.",
            &http,
        );
        let started_secs = started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            &[(String::new(), started_secs)],
        );
        if let Some(p) = ProcessStats::read() {
            family(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                &[(String::new(), p.cpu_seconds)],
            );
            family(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                &[(String::new(), p.rss_bytes as f64)],
            );
            family(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                &[(String::new(), p.vsize_bytes as f64)],
            );
            family(
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                &[(String::new(), p.open_fds as f64)],
            );
            family(
                "process_threads",
                "gauge",
                "Number of OS threads in the process.",
                &[(String::new(), p.threads as f64)],
            );
        }
        out
    }
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// This process's resource use, read from `/proc/self`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// utime + stime in seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
    /// Virtual size in bytes.
    pub vsize_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// OS threads.
    pub threads: u64,
}

impl ProcessStats {
    /// Reads the stats; `None` where `/proc` is not available.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may
        // itself contain spaces or parentheses: split after the last `)`.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        // Field numbers from proc(5), minus 3 for pid, comm and the offset.
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
        let (utime, stime) = (num(11)?, num(12)?);
        let threads = num(17)?;
        let vsize = num(20)?;
        let rss_pages = num(21)?;
        // SAFETY: sysconf has no preconditions; it only reads system constants.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / ticks.max(1) as f64,
            rss_bytes: rss_pages * page.max(1) as u64,
            vsize_bytes: vsize,
            open_fds,
            threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_plausible() {
        let p = ProcessStats::read().expect("/proc is mounted on Linux");
        assert!(p.rss_bytes > 0);
        assert!(p.vsize_bytes >= p.rss_bytes);
        assert!(p.threads >= 1);
        assert!(p.open_fds >= 3);
    }

    #[test]
    fn render_counts_requests_and_reloads() {
        let m = SelfMetrics::new();
        m.http_request("/metrics", 200);
        m.http_request("/metrics", 200);
        m.config_loaded(false);
        let text = m.render(SystemTime::now(), 2, &[]);
        assert!(
            text.contains("prometheus_http_requests_total{code=\"200\",handler=\"/metrics\"} 2\n")
        );
        assert!(text.contains("prometheus_config_last_reload_successful 0\n"));
        assert!(text.contains("kiln_shards 2\n"));
        m.config_loaded(true);
        assert!(
            m.render(SystemTime::now(), 2, &[])
                .contains("prometheus_config_last_reload_successful 1\n")
        );
    }
}
