//! Storage as the server runs it: logical shards, the heads each runtime
//! thread owns, and the mailboxes through which anyone else reads them.
//!
//! The data directory is split into a fixed number of *logical* shards when
//! it is created (`kiln-layout.json`); each has its own head and WAL under
//! `shard-<k>/`. Runtime thread `r` of `n` owns the logical shards with
//! `k % n == r`, so restarting with another core count re-deals the same
//! directories and loses nothing.
//!
//! A head is `!Send` and touched only by its runtime thread. Other threads
//! (query workers, HTTP handlers on other cores) send a [`ShardRequest`] to
//! the owning thread's mailbox; the thread answers between its own tasks,
//! one logical shard at a time with a yield in between, so a heavy read
//! delays a scrape by at most one shard's slice.
//!
//! Counters the server exposes (`prometheus_tsdb_*`) are published by each
//! thread into [`ShardStats`] atomics once a second and after every
//! committed scrape, so `/metrics` reads them without a message round trip.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kiln_storage::{
    Head, HeadOptions, Labels, Matcher, ReplayStats, Select, SelectError, SelectHints, SeriesBatch,
    WalOptions, merge_batches,
};
use tokio::sync::{mpsc, oneshot};

/// The file that fixes the number of logical shards of a data directory.
pub const LAYOUT_FILE: &str = "kiln-layout.json";

/// Why storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TsdbError {
    /// The layout file could not be read, parsed or written.
    #[error("data directory layout {path:?}: {reason}")]
    Layout {
        /// The layout file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A shard's WAL could not be opened or replayed.
    #[error("opening shard {shard} in {dir:?}: {source}")]
    Open {
        /// The logical shard.
        shard: usize,
        /// Its WAL directory.
        dir: PathBuf,
        /// The storage error.
        source: kiln_storage::WalError,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Layout {
    version: u32,
    logical_shards: usize,
}

/// Reads the data directory's number of logical shards, fixing it at
/// `default` when the directory is new.
pub fn logical_shards(data_dir: &Path, default: usize) -> Result<usize, TsdbError> {
    let path = data_dir.join(LAYOUT_FILE);
    let err = |reason: String| TsdbError::Layout {
        path: path.clone(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let l: Layout = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
            if l.version != 1 || l.logical_shards == 0 {
                return Err(err(format!(
                    "unsupported layout (version {}, {} shards)",
                    l.version, l.logical_shards
                )));
            }
            Ok(l.logical_shards)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let l = Layout {
                version: 1,
                logical_shards: default.max(1),
            };
            let text = serde_json::to_vec_pretty(&l).map_err(|e| err(e.to_string()))?;
            // Written whole, then renamed: a crash leaves no half file.
            let tmp = data_dir.join(format!("{LAYOUT_FILE}.tmp"));
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| err(e.to_string()))?;
            Ok(l.logical_shards)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The runtime thread that owns logical shard `k`.
pub fn owner(k: usize, threads: usize) -> usize {
    k % threads.max(1)
}

/// A read another thread asks a runtime thread to serve.
pub enum ShardRequest {
    /// Series and samples matching `matchers`, merged over the thread's
    /// logical shards. Answered on a blocking channel: the asker is a query
    /// worker thread.
    Select {
        /// The selector.
        matchers: Arc<[Matcher]>,
        /// Range and sample cap.
        hints: SelectHints,
        /// Where the answer goes.
        reply: crossbeam_channel::Sender<Result<SeriesBatch, SelectError>>,
    },
    /// Label names of the series matching any of `sets` (all series when
    /// empty) with samples in `[mint, maxt]`.
    LabelNames {
        /// Selectors, OR-ed.
        sets: Arc<[Vec<Matcher>]>,
        /// Range start (ms).
        mint: i64,
        /// Range end (ms).
        maxt: i64,
        /// Sorted, deduplicated names.
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Values of label `name` over the series matching any of `sets`.
    LabelValues {
        /// The label.
        name: Arc<str>,
        /// Selectors, OR-ed.
        sets: Arc<[Vec<Matcher>]>,
        /// Range start (ms).
        mint: i64,
        /// Range end (ms).
        maxt: i64,
        /// Sorted, deduplicated values.
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Head statistics (read off each shard's postings).
    TsdbStatus {
        /// Where the answer goes.
        reply: oneshot::Sender<TsdbCounts>,
    },
    /// Label sets of the series matching any of `sets`.
    Series {
        /// Selectors, OR-ed.
        sets: Arc<[Vec<Matcher>]>,
        /// Range start (ms).
        mint: i64,
        /// Range end (ms).
        maxt: i64,
        /// Sorted, deduplicated label sets.
        reply: oneshot::Sender<Vec<Labels>>,
    },
}

/// Head statistics of one runtime thread's shards, for
/// `/api/v1/status/tsdb`; summed over threads by the handler.
#[derive(Debug, Default)]
pub struct TsdbCounts {
    /// Series.
    pub num_series: u64,
    /// Chunks, closed and open.
    pub num_chunks: u64,
    /// Lowest sample time, if any.
    pub min_time: Option<i64>,
    /// Highest sample time, if any.
    pub max_time: Option<i64>,
    /// Series per (label name, label value).
    pub pairs: std::collections::HashMap<(String, String), u64>,
}

/// Where to send requests for each runtime thread.
pub type Mailboxes = Arc<[mpsc::UnboundedSender<ShardRequest>]>;

/// Counters of one logical shard, published for `/metrics`.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Series in the head.
    pub head_series: AtomicU64,
    /// Samples appended, ever.
    pub samples_appended: AtomicU64,
    /// Samples rejected as out of order.
    pub out_of_order: AtomicU64,
    /// Samples rejected as a second value for a timestamp.
    pub duplicate: AtomicU64,
    /// Samples rejected as too old.
    pub out_of_bounds: AtomicU64,
    /// Series created, ever.
    pub series_created: AtomicU64,
    /// Series garbage-collected, ever.
    pub series_removed: AtomicU64,
    /// Bytes written to the WAL.
    pub wal_bytes: AtomicU64,
    /// Corruptions found (and truncated) in the WAL.
    pub wal_corruptions: AtomicU64,
    /// Bytes of chunk data in the head.
    pub chunk_bytes: AtomicU64,
    /// Bytes the head holds in all.
    pub head_bytes: AtomicU64,
    /// Samples held in the head.
    pub head_samples: AtomicU64,
    /// Chunks in the head, closed and open.
    pub head_chunks: AtomicU64,
    /// Lowest timestamp in the head (`i64::MAX` when empty).
    pub min_time: AtomicU64,
    /// Highest timestamp in the head (`i64::MIN` when empty).
    pub max_time: AtomicU64,
    /// 1 when the WAL writes through io_uring, 0 with the pwrite fallback.
    pub wal_io_uring: AtomicU64,
}

impl ShardStats {
    fn publish(&self, head: &Head) {
        let c = head.counters();
        let m = head.memory();
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.head_series, head.num_series() as u64);
        set(&self.samples_appended, c.samples_appended);
        set(&self.out_of_order, c.out_of_order);
        set(&self.duplicate, c.duplicate);
        set(&self.out_of_bounds, c.out_of_bounds);
        set(&self.series_created, c.series_created);
        set(&self.series_removed, c.series_removed);
        set(&self.wal_bytes, c.wal_bytes_written);
        set(&self.wal_corruptions, c.wal_corruptions);
        set(&self.chunk_bytes, m.chunk_bytes as u64);
        set(&self.head_bytes, m.bytes_total as u64);
        set(&self.head_samples, m.samples);
        set(&self.head_chunks, m.chunks as u64);
        set(&self.min_time, head.min_time().unwrap_or(i64::MAX) as u64);
        set(&self.max_time, head.max_time().unwrap_or(i64::MIN) as u64);
        set(&self.wal_io_uring, u64::from(c.wal_io_uring));
    }

    /// Reads a timestamp published with [`AtomicU64`] bits.
    pub fn time(a: &AtomicU64) -> i64 {
        a.load(Ordering::Relaxed) as i64
    }
}

/// One logical shard as its runtime thread holds it.
pub struct LogicalShard {
    /// Its number.
    pub id: usize,
    /// Its head.
    pub head: RefCell<Head>,
    /// Its published counters.
    pub stats: Arc<ShardStats>,
}

impl LogicalShard {
    /// Publishes the head's counters for `/metrics`.
    pub fn publish(&self) {
        self.stats.publish(&self.head.borrow());
    }
}

/// The logical shards one runtime thread owns.
pub struct LocalShards {
    /// Owned shards, by ascending id.
    pub shards: Vec<Rc<LogicalShard>>,
}

/// Storage settings from the flags.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Head settings.
    pub head: HeadOptions,
    /// WAL settings.
    pub wal: WalOptions,
    /// How long samples are kept (`--storage.tsdb.retention.time`).
    pub retention: Duration,
}

/// How often a shard checks whether its heads hold samples past retention.
const RETENTION_CHECK: Duration = Duration::from_secs(60);

/// Slack before a head is truncated: truncation checkpoints the WAL, so it
/// runs once per this much expired data rather than every check.
const RETENTION_SLACK_MS: i64 = 3_600_000;

/// Drops samples older than the retention from the thread's heads.
///
/// Until blocks land (a later issue) the head holds everything, so this is
/// what bounds memory and the WAL: a head is truncated to `now - retention`
/// once its oldest sample is an hour past that, which also checkpoints its
/// WAL to the live series.
pub async fn retention_loop(local: Rc<LocalShards>, retention: Duration) {
    let keep_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(RETENTION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let cutoff = now.saturating_sub(keep_ms);
        for s in &local.shards {
            let due = s
                .head
                .borrow()
                .min_time()
                .is_some_and(|t| t < cutoff.saturating_sub(RETENTION_SLACK_MS));
            if due {
                let started = std::time::Instant::now();
                if let Err(e) = s.head.borrow_mut().truncate_below(cutoff) {
                    log::error!("shard {}: truncating the head for retention: {e}", s.id);
                }
                log::info!(
                    "shard {}: head truncated below {cutoff} in {:?}",
                    s.id,
                    started.elapsed()
                );
                s.publish();
            }
            tokio::task::yield_now().await;
        }
    }
}

impl LocalShards {
    /// Opens (replaying their WALs) the logical shards thread `thread` of
    /// `threads` owns.
    pub fn open(
        cfg: &StorageConfig,
        logical: usize,
        thread: usize,
        threads: usize,
        stats: &[Arc<ShardStats>],
    ) -> Result<LocalShards, TsdbError> {
        let mut shards = Vec::new();
        for k in (0..logical).filter(|&k| owner(k, threads) == thread) {
            let dir = cfg.data_dir.join(format!("shard-{k}")).join("wal");
            let started = std::time::Instant::now();
            let (head, replay): (Head, ReplayStats) =
                Head::open(&dir, cfg.head.clone(), cfg.wal.clone()).map_err(|source| {
                    TsdbError::Open {
                        shard: k,
                        dir: dir.clone(),
                        source,
                    }
                })?;
            log::info!(
                "shard {k}: WAL replayed in {:?}: {} series, {} samples{}",
                started.elapsed(),
                replay.series,
                replay.samples,
                if replay.truncated_bytes > 0 || replay.corrupt_records > 0 {
                    format!(
                        "; truncated {} bytes of torn or corrupt tail ({} bad records)",
                        replay.truncated_bytes, replay.corrupt_records
                    )
                } else {
                    String::new()
                }
            );
            let s = LogicalShard {
                id: k,
                head: RefCell::new(head),
                stats: stats[k].clone(),
            };
            s.publish();
            shards.push(Rc::new(s));
        }
        Ok(LocalShards { shards })
    }

    /// Publishes every shard's counters.
    pub fn publish(&self) {
        for s in &self.shards {
            s.publish();
        }
    }

    /// Flushes and syncs every WAL (shutdown).
    pub fn sync(&self) {
        for s in &self.shards {
            if let Err(e) = s.head.borrow_mut().sync_wal() {
                log::error!("shard {}: flushing the WAL at shutdown: {e}", s.id);
            }
        }
    }
}

/// Serves the thread's mailbox until every sender is gone, and publishes
/// counters once a second.
pub async fn serve_requests(mut rx: mpsc::UnboundedReceiver<ShardRequest>, local: Rc<LocalShards>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            req = rx.recv() => match req {
                Some(req) => serve_one(req, &local).await,
                None => break,
            },
            _ = tick.tick() => local.publish(),
        }
    }
}

async fn serve_one(req: ShardRequest, local: &LocalShards) {
    match req {
        ShardRequest::Select {
            matchers,
            hints,
            reply,
        } => {
            let mut parts = Vec::with_capacity(local.shards.len());
            let mut budget = hints.max_samples;
            for s in &local.shards {
                let h = SelectHints {
                    max_samples: budget,
                    ..hints
                };
                let r = s.head.borrow().select(&matchers, &h);
                match r {
                    Ok(b) => {
                        budget = budget.saturating_sub(b.sample_count());
                        parts.push(b);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                tokio::task::yield_now().await;
            }
            // The asker may have given up (timeout): nothing to do then.
            let _ = reply.send(Ok(merge_batches(parts)));
        }
        ShardRequest::LabelNames {
            sets,
            mint,
            maxt,
            reply,
        } => {
            let out = collect_strings(local, &sets, |h, m| h.label_names(m, mint, maxt)).await;
            let _ = reply.send(out);
        }
        ShardRequest::LabelValues {
            name,
            sets,
            mint,
            maxt,
            reply,
        } => {
            let out =
                collect_strings(local, &sets, |h, m| h.label_values(&name, m, mint, maxt)).await;
            let _ = reply.send(out);
        }
        ShardRequest::TsdbStatus { reply } => {
            let mut c = TsdbCounts::default();
            for s in &local.shards {
                {
                    let h = s.head.borrow();
                    c.num_series += h.num_series() as u64;
                    c.num_chunks += h.memory().chunks as u64;
                    if let Some(t) = h.min_time() {
                        c.min_time = Some(c.min_time.map_or(t, |m| m.min(t)));
                    }
                    if let Some(t) = h.max_time() {
                        c.max_time = Some(c.max_time.map_or(t, |m| m.max(t)));
                    }
                    for (name, value, n) in h.label_pair_counts() {
                        *c.pairs.entry((name, value)).or_default() += n;
                    }
                }
                tokio::task::yield_now().await;
            }
            let _ = reply.send(c);
        }
        ShardRequest::Series {
            sets,
            mint,
            maxt,
            reply,
        } => {
            let mut out = Vec::new();
            for s in &local.shards {
                {
                    let h = s.head.borrow();
                    for m in sets.iter() {
                        out.extend(h.series(m, mint, maxt));
                    }
                }
                tokio::task::yield_now().await;
            }
            out.sort_unstable();
            out.dedup();
            let _ = reply.send(out);
        }
    }
}

/// Runs `f` for every selector of `sets` (once with no matchers when there
/// are none) over each shard, a shard at a time with a yield in between;
/// returns the sorted, deduplicated union.
async fn collect_strings(
    local: &LocalShards,
    sets: &[Vec<Matcher>],
    f: impl Fn(&Head, &[Matcher]) -> Vec<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for s in &local.shards {
        {
            let h = s.head.borrow();
            if sets.is_empty() {
                out.extend(f(&h, &[]));
            }
            for m in sets {
                out.extend(f(&h, m));
            }
        }
        tokio::task::yield_now().await;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Reads through every runtime thread's mailbox: the [`Select`] a query
/// worker evaluates against. Blocks the calling (worker) thread until all
/// threads answered or the deadline passed.
pub struct FanoutSelect<'a> {
    /// The mailboxes.
    pub mailboxes: &'a [mpsc::UnboundedSender<ShardRequest>],
    /// When to give up.
    pub deadline: Option<std::time::Instant>,
}

impl Select for FanoutSelect<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> Result<SeriesBatch, SelectError> {
        let matchers: Arc<[Matcher]> = matchers.into();
        let (tx, rx) = crossbeam_channel::bounded(self.mailboxes.len());
        for mb in self.mailboxes {
            mb.send(ShardRequest::Select {
                matchers: matchers.clone(),
                hints: *hints,
                reply: tx.clone(),
            })
            .map_err(|_| SelectError::Storage("kiln is shutting down".into()))?;
        }
        drop(tx);
        let mut parts = Vec::with_capacity(self.mailboxes.len());
        let mut total = 0usize;
        for _ in 0..self.mailboxes.len() {
            let got = match self.deadline {
                Some(d) => rx.recv_deadline(d).map_err(|e| match e {
                    crossbeam_channel::RecvTimeoutError::Timeout => {
                        SelectError::Storage("query timed out waiting for shards".into())
                    }
                    crossbeam_channel::RecvTimeoutError::Disconnected => {
                        SelectError::Storage("kiln is shutting down".into())
                    }
                })?,
                None => rx
                    .recv()
                    .map_err(|_| SelectError::Storage("kiln is shutting down".into()))?,
            };
            let b = got?;
            total += b.sample_count();
            if total > hints.max_samples {
                return Err(SelectError::TooManySamples {
                    limit: hints.max_samples,
                });
            }
            parts.push(b);
        }
        Ok(merge_batches(parts))
    }
}

/// Sends one request to every runtime thread and gathers the answers.
pub async fn gather<T>(
    mailboxes: &[mpsc::UnboundedSender<ShardRequest>],
    make: impl Fn(oneshot::Sender<T>) -> ShardRequest,
) -> Vec<T> {
    let mut waits = Vec::with_capacity(mailboxes.len());
    for mb in mailboxes {
        let (tx, rx) = oneshot::channel();
        if mb.send(make(tx)).is_ok() {
            waits.push(rx);
        }
    }
    let mut out = Vec::with_capacity(waits.len());
    for w in waits {
        if let Ok(v) = w.await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_fixed_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(logical_shards(dir.path(), 4).unwrap(), 4);
        // A restart with another core count keeps the directory's layout.
        assert_eq!(logical_shards(dir.path(), 2).unwrap(), 4);
        std::fs::write(dir.path().join(LAYOUT_FILE), b"{oops").unwrap();
        let e = logical_shards(dir.path(), 2).unwrap_err().to_string();
        assert!(e.contains(LAYOUT_FILE), "{e}");
    }

    #[test]
    fn every_logical_shard_has_exactly_one_owner() {
        for threads in 1..6 {
            for k in 0..17 {
                let owners: Vec<_> = (0..threads).filter(|&t| owner(k, threads) == t).collect();
                assert_eq!(owners.len(), 1);
            }
        }
    }
}
