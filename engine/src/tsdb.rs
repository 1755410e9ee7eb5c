//! Storage as the server runs it: logical shards, the heads each runtime
//! thread owns, and the mailboxes through which anyone else reads them.
//!
//! The data directory is split into a fixed number of *logical* shards when
//! it is created (`kiln-layout.json`); each has its own [`Db`] (head, WAL
//! and blocks) under `shard-<k>/`. Runtime thread `r` of `n` owns the logical shards with
//! `k % n == r`, so restarting with another core count re-deals the same
//! directories and loses nothing.
//!
//! A shard's storage is `!Send` and touched only by its runtime thread. Other threads
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
    Db, DbError, HeadOptions, Labels, Matcher, ReplayStats, Select, SelectError, SelectHints,
    SeriesBatch, WalOptions, merge_batches, select_blocks,
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
    /// A shard's blocks or WAL could not be opened or replayed.
    #[error("opening shard {shard} in {dir:?}: {source}")]
    Open {
        /// The logical shard.
        shard: usize,
        /// Its directory.
        dir: PathBuf,
        /// The storage error.
        source: DbError,
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
        reply: crossbeam_channel::Sender<Result<ShardPart, SelectError>>,
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
        /// The heads' sorted, deduplicated names, and the blocks.
        reply: oneshot::Sender<Result<LabelPart<String>, SelectError>>,
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
        /// The heads' sorted, deduplicated values, and the blocks.
        reply: oneshot::Sender<Result<LabelPart<String>, SelectError>>,
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
        /// The heads' sorted, deduplicated label sets, and the blocks.
        reply: oneshot::Sender<Result<LabelPart<Labels>, SelectError>>,
    },
}

/// A runtime thread's answer to a select: its heads' series, merged, and
/// the blocks that may hold more, for the asker to read on its own thread.
pub struct ShardPart {
    /// The heads' part.
    pub head: SeriesBatch,
    /// Blocks overlapping the range.
    pub blocks: Vec<Arc<kiln_storage::Block>>,
}

/// A runtime thread's answer to a label or series request: its heads'
/// part and the blocks overlapping the range, which the asker reads off
/// the shard threads ([`merge_label_parts`]).
pub struct LabelPart<T> {
    /// The heads' answer, sorted and deduplicated.
    pub head: Vec<T>,
    /// Blocks overlapping the range.
    pub blocks: Vec<Arc<kiln_storage::Block>>,
}

/// Merges every runtime thread's answer to a label or series request:
/// their heads' parts, plus `f` run over each of their blocks for every
/// selector of `sets` (once with none when there are none) on tokio's
/// blocking pool, so block indexes are read off the shard threads. Sorted,
/// deduplicated; the first error fails it all.
pub async fn merge_label_parts<T, F>(
    parts: Vec<Result<LabelPart<T>, SelectError>>,
    sets: Arc<[Vec<Matcher>]>,
    f: F,
) -> Result<Vec<T>, SelectError>
where
    T: Ord + Send + 'static,
    F: Fn(&kiln_storage::Block, &[Matcher]) -> Result<Vec<T>, SelectError> + Send + 'static,
{
    let mut out = Vec::new();
    let mut blocks = Vec::new();
    for p in parts {
        let p = p?;
        out.extend(p.head);
        blocks.extend(p.blocks);
    }
    if !blocks.is_empty() {
        let read = tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            for b in &blocks {
                if sets.is_empty() {
                    v.extend(f(b, &[])?);
                }
                for m in sets.iter() {
                    v.extend(f(b, m)?);
                }
            }
            Ok::<_, SelectError>(v)
        })
        .await
        .map_err(|e| SelectError::Storage(format!("reading blocks failed: {e}")))?;
        out.extend(read?);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
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
    /// Blocks on disk.
    pub blocks: AtomicU64,
    /// Bytes of the blocks' files.
    pub blocks_bytes: AtomicU64,
    /// Head ranges persisted as blocks, plus block merges.
    pub compactions: AtomicU64,
    /// Head cuts and block merges that failed.
    pub compactions_failed: AtomicU64,
    /// Head truncations.
    pub head_truncations: AtomicU64,
    /// Blocks deleted by retention.
    pub blocks_deleted: AtomicU64,
    /// Blocks found damaged at open and set aside.
    pub blocks_quarantined: AtomicU64,
    /// Lowest timestamp in blocks and head (`i64::MAX` when empty).
    pub lowest_time: AtomicU64,
}

impl ShardStats {
    fn publish(&self, db: &Db) {
        let head = db.head();
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
        let d = db.counters();
        set(&self.blocks, db.blocks().len() as u64);
        set(&self.blocks_bytes, db.blocks_bytes());
        set(&self.compactions, d.compactions + d.merges);
        set(&self.compactions_failed, d.compactions_failed);
        set(&self.head_truncations, d.head_truncations);
        set(&self.blocks_deleted, d.blocks_deleted);
        set(&self.blocks_quarantined, d.blocks_quarantined);
        set(&self.lowest_time, db.min_time().unwrap_or(i64::MAX) as u64);
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
    /// Its head, WAL and blocks.
    pub db: RefCell<Db>,
    /// Its published counters.
    pub stats: Arc<ShardStats>,
}

impl LogicalShard {
    /// Publishes the storage's counters for `/metrics`.
    pub fn publish(&self) {
        self.stats.publish(&self.db.borrow());
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
    /// Most bytes of blocks kept, over all shards (0 = no limit;
    /// `--storage.tsdb.retention.size`).
    pub retention_bytes: u64,
}

/// Slack before a head is truncated for retention: truncation checkpoints
/// the WAL, so it runs once per this much expired data rather than every
/// check. (Normally the head never holds expired data: ranges move to
/// blocks long before.)
const RETENTION_SLACK_MS: i64 = 3_600_000;

/// Series a head cut copies per slice, between which the thread serves
/// scrapes and reads.
const CUT_SLICE_SERIES: usize = 5_000;

/// Keeps the thread's storage within bounds: every `check` (a quarter of
/// the block range, at least 250 ms, at most a minute) it
/// * persists each head's due ranges as blocks (see [`cut_head`]), which
///   truncates the head and garbage-collects the series without samples
///   since;
/// * merges blocks into windows of 3, 9, 27… block ranges, up to a tenth
///   of the retention or 31 days, as Prometheus sizes them (see
///   [`merge_blocks`]);
/// * deletes blocks wholly older than `now - retention`, and the oldest
///   blocks while all shards' blocks exceed the size retention (each
///   shard keeps its share of it), like Prometheus.
pub async fn housekeeping_loop(local: Rc<LocalShards>, cfg: StorageConfig, logical: usize) {
    let keep_ms = i64::try_from(cfg.retention.as_millis()).unwrap_or(i64::MAX);
    let range = u64::try_from(cfg.head.chunk_range_ms.max(1)).unwrap_or(u64::MAX);
    let check = Duration::from_millis((range / 4).clamp(250, 60_000));
    let share = cfg.retention_bytes / logical.max(1) as u64;
    let max_block_ms = (keep_ms / 10).min(31 * 86_400_000);
    let mut tick = tokio::time::interval(check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for s in &local.shards {
            cut_head(s).await;
            merge_blocks(s, max_block_ms).await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            apply_retention(s, now.saturating_sub(keep_ms), share);
            s.publish();
            tokio::task::yield_now().await;
        }
    }
}

/// Deletes what retention expires in one shard.
fn apply_retention(s: &LogicalShard, cutoff: i64, max_bytes: u64) {
    let mut db = s.db.borrow_mut();
    // Blocks wholly below the cutoff go at once; the head is truncated only
    // once its oldest sample is an hour past it.
    let head_due = db
        .head()
        .min_time()
        .is_some_and(|t| t < cutoff.saturating_sub(RETENTION_SLACK_MS));
    let blocks_due = db
        .blocks()
        .first()
        .is_some_and(|b| b.meta().max_time <= cutoff);
    if head_due || blocks_due {
        match db.apply_retention(cutoff) {
            Ok(n) => log::info!(
                "shard {}: retention below {cutoff}: {n} blocks deleted",
                s.id
            ),
            Err(e) => log::error!("shard {}: applying retention: {e}", s.id),
        }
    }
    match db.apply_size_retention(max_bytes) {
        Ok(0) => {}
        Ok(n) => log::info!("shard {}: size retention: {n} blocks deleted", s.id),
        Err(e) => log::error!("shard {}: applying size retention: {e}", s.id),
    }
}

/// Runs `f` on a helper thread and waits for it without blocking this
/// runtime; `None` when the thread could not start or died.
async fn off_thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        log::error!("starting thread {name}: {e}");
        return None;
    }
    rx.await.ok()
}

/// Merges a shard's blocks as [`Db::plan_merge`] proposes, one window at a
/// time, on a helper thread (blocks are immutable and shared); the shard
/// only swaps the merged block in.
pub async fn merge_blocks(s: &LogicalShard, max_ms: i64) {
    loop {
        let Some(group) = s.db.borrow().plan_merge(max_ms) else {
            return;
        };
        let started = std::time::Instant::now();
        let (parent, pwrite) = s.db.borrow().block_target();
        let sources = group.clone();
        let merged = off_thread("kiln-merge", move || {
            let refs: Vec<&kiln_storage::Block> = sources.iter().map(|b| &**b).collect();
            kiln_storage::block::merge_blocks(&refs, &parent, pwrite)
        })
        .await;
        let installed = match merged {
            Some(Ok((dir, _))) => {
                s.db.borrow_mut()
                    .install_merged(&dir, &group)
                    .map_err(|e| e.to_string())
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err("the merge thread died".to_owned()),
        };
        match installed {
            Ok(m) => log::info!(
                "shard {}: merged {} blocks into {} ({}..{}, {} series) in {:?}",
                s.id,
                group.len(),
                m.ulid,
                m.min_time,
                m.max_time,
                m.stats.num_series,
                started.elapsed()
            ),
            Err(e) => {
                log::error!("shard {}: merging blocks: {e}", s.id);
                s.db.borrow_mut().compaction_failed();
                return;
            }
        }
        s.publish();
        tokio::task::yield_now().await;
    }
}

/// Checkpoints a shard's WAL to its head's live series, a slice of
/// [`CUT_SLICE_SERIES`] series at a time, and waits (without blocking the
/// thread) for the WAL writer to put it in place. A failure is logged: the
/// segments it would have replaced stay, and the next truncation retries.
async fn checkpoint(s: &LogicalShard) {
    let begun = s.db.borrow_mut().head_mut().begin_checkpoint();
    let mut cp = match begun {
        Ok(Some(cp)) => cp,
        Ok(None) => return,
        Err(e) => {
            log::error!("shard {}: starting a WAL checkpoint: {e}", s.id);
            return;
        }
    };
    let stepped = loop {
        let r = cp.step(s.db.borrow_mut().head_mut(), CUT_SLICE_SERIES);
        match r {
            Ok(true) => break Ok(()),
            Ok(false) => tokio::task::yield_now().await,
            Err(e) => break Err(e),
        }
    };
    let ended = match stepped {
        Ok(()) => cp.finish(s.db.borrow_mut().head_mut()),
        Err(e) => {
            log::error!("shard {}: writing a WAL checkpoint: {e}", s.id);
            cp.abandon(s.db.borrow_mut().head_mut())
        }
    };
    let done = match ended {
        Ok(done) => done,
        Err(e) => {
            log::error!("shard {}: ending a WAL checkpoint: {e}", s.id);
            return;
        }
    };
    // Bounded: the writer answers once it has written what is queued.
    for _ in 0..60_000 {
        match done.try_result() {
            None => tokio::time::sleep(Duration::from_millis(10)).await,
            Some(Ok(())) => return,
            Some(Err(e)) => {
                log::error!("shard {}: finishing a WAL checkpoint: {e}", s.id);
                return;
            }
        }
    }
    log::error!("shard {}: the WAL checkpoint took over 10 minutes", s.id);
}

/// Persists every due range of a shard's head as a block.
///
/// Copying chunks into the block's files happens on this thread in slices
/// of [`CUT_SLICE_SERIES`] series with a yield in between, so scrapes and
/// reads wait at most one slice; sorting the series and writing the index
/// run on a helper thread. Appends below the range's end are refused from
/// the cut's start (see [`Db::begin_head_cut`]); a failed cut is logged,
/// counted and retried at the next check, the head still holding the range.
pub async fn cut_head(s: &LogicalShard) {
    loop {
        let started = std::time::Instant::now();
        let cut = s.db.borrow_mut().begin_head_cut();
        let mut cut = match cut {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                log::error!("shard {}: starting a block: {e}", s.id);
                return;
            }
        };
        let (mint, maxt) = cut.range();
        let stepped = loop {
            let done = cut.step(s.db.borrow().head(), CUT_SLICE_SERIES);
            match done {
                Ok(true) => break Ok(()),
                Ok(false) => tokio::task::yield_now().await,
                Err(e) => break Err(e),
            }
        };
        let writer = cut.into_writer();
        let written = match stepped {
            Err(e) => Err(e),
            Ok(()) if writer.series() == 0 => writer.discard().map(|()| None),
            Ok(()) => match off_thread("kiln-block", move || writer.finish()).await {
                Some(r) => r.map(|(dir, _)| Some(dir)),
                None => {
                    log::error!("shard {}: the block writer thread died", s.id);
                    s.db.borrow_mut().compaction_failed();
                    return;
                }
            },
        };
        let installed = match written {
            Ok(dir) => s.db.borrow_mut().install_block(dir.as_deref(), maxt),
            Err(e) => Err(e.into()),
        };
        if installed.is_ok() {
            checkpoint(s).await;
        }
        match installed {
            Ok(meta) => log::info!(
                "shard {}: head range {mint}..{maxt} persisted in {:?}{}",
                s.id,
                started.elapsed(),
                meta.map_or_else(
                    || " (no series)".to_owned(),
                    |m| format!(
                        ": block {}, {} series, {} samples",
                        m.ulid, m.stats.num_series, m.stats.num_samples
                    )
                )
            ),
            Err(e) => {
                log::error!("shard {}: persisting head range {mint}..{maxt}: {e}", s.id);
                s.db.borrow_mut().compaction_failed();
                return;
            }
        }
        s.publish();
        tokio::task::yield_now().await;
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
            let dir = cfg.data_dir.join(format!("shard-{k}"));
            let started = std::time::Instant::now();
            let (db, replay): (Db, ReplayStats) = Db::open(&dir, cfg.head.clone(), cfg.wal.clone())
                .map_err(|source| TsdbError::Open {
                    shard: k,
                    dir: dir.clone(),
                    source,
                })?;
            log::info!(
                "shard {k}: {} blocks loaded, WAL replayed in {:?}: {} series, {} samples{}",
                db.blocks().len(),
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
                db: RefCell::new(db),
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
            if let Err(e) = s.db.borrow_mut().head_mut().sync_wal() {
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
            // Only the heads are read here; blocks go back to the asker.
            let mut parts = Vec::with_capacity(local.shards.len());
            let mut blocks = Vec::new();
            let mut budget = hints.max_samples;
            for s in &local.shards {
                let h = SelectHints {
                    max_samples: budget,
                    ..hints
                };
                let r = s.db.borrow().select_head(&matchers, &h);
                match r {
                    Ok((b, bs)) => {
                        budget = budget.saturating_sub(b.sample_count());
                        parts.push(b);
                        blocks.extend(bs);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                tokio::task::yield_now().await;
            }
            // The asker may have given up (timeout): nothing to do then.
            let _ = reply.send(Ok(ShardPart {
                head: merge_batches(parts),
                blocks,
            }));
        }
        ShardRequest::LabelNames {
            sets,
            mint,
            maxt,
            reply,
        } => {
            let out = collect(local, &sets, mint, maxt, |db, m| {
                db.head().label_names(m, mint, maxt)
            })
            .await;
            let _ = reply.send(Ok(out));
        }
        ShardRequest::LabelValues {
            name,
            sets,
            mint,
            maxt,
            reply,
        } => {
            let out = collect(local, &sets, mint, maxt, |db, m| {
                db.head().label_values(&name, m, mint, maxt)
            })
            .await;
            let _ = reply.send(Ok(out));
        }
        ShardRequest::TsdbStatus { reply } => {
            let mut c = TsdbCounts::default();
            for s in &local.shards {
                {
                    let db = s.db.borrow();
                    let h = db.head();
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
            let out = collect(local, &sets, mint, maxt, |db, m| {
                db.head().series(m, mint, maxt)
            })
            .await;
            let _ = reply.send(Ok(out));
        }
    }
}

/// Runs `f` (a head read) for every selector of `sets` (once with no
/// matchers when there are none) over each shard, a shard at a time with a
/// yield in between; returns the sorted, deduplicated union with the
/// shards' blocks overlapping `[mint, maxt]`, for the asker to read.
async fn collect<T: Ord>(
    local: &LocalShards,
    sets: &[Vec<Matcher>],
    mint: i64,
    maxt: i64,
    f: impl Fn(&Db, &[Matcher]) -> Vec<T>,
) -> LabelPart<T> {
    let mut head = Vec::new();
    let mut blocks = Vec::new();
    for s in &local.shards {
        {
            let db = s.db.borrow();
            if sets.is_empty() {
                head.extend(f(&db, &[]));
            }
            for m in sets {
                head.extend(f(&db, m));
            }
            blocks.extend(db.blocks_overlapping(mint, maxt));
        }
        tokio::task::yield_now().await;
    }
    head.sort_unstable();
    head.dedup();
    LabelPart { head, blocks }
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
        let mut blocks = Vec::new();
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
            let part = got?;
            total += part.head.sample_count();
            if total > hints.max_samples {
                return Err(SelectError::TooManySamples {
                    limit: hints.max_samples,
                });
            }
            parts.push(part.head);
            blocks.extend(part.blocks);
        }
        // The blocks are read here, on the asking (worker) thread.
        let deadline = self.deadline;
        let (from_blocks, _) =
            select_blocks(&blocks, &matchers, hints, total, || match deadline {
                Some(d) if std::time::Instant::now() >= d => Err(SelectError::Storage(
                    "query timed out reading blocks".into(),
                )),
                _ => Ok(()),
            })?;
        parts.extend(from_blocks);
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
