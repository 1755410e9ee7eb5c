//! A shard's whole storage: the head (with its WAL) and the persisted
//! blocks, under one directory:
//!
//! * `wal/`: the head's write-ahead log (see [`crate::wal`]);
//! * `blocks/<ulid>/`: one immutable block per persisted range (see
//!   [`crate::block`]); `blocks/<ulid>.tmp/` is one being written, and
//!   `blocks/<ulid>.corrupt/` one found damaged at open, set aside (kept,
//!   never read).
//!
//! Life of a sample: appended to the head and logged to the WAL; once the
//! head spans more than 1.5 block ranges, its oldest whole range
//! `[mint, mint + range)` is written out as a block (a [`HeadCut`], done in
//! slices so the shard keeps serving between them); when the block is in
//! place the head is truncated at its end, which drops those chunks,
//! garbage-collects every series left without samples (those that got no
//! sample for the whole range) and checkpoints the WAL. Later, blocks that
//! fill an aligned window of 3, 9, 27… ranges are merged into one (see
//! [`Db::plan_merge`]), and retention deletes whole blocks.
//!
//! Invariants:
//! * once a cut of `[mint, maxt)` has begun, the head refuses appends below
//!   `maxt`, so the block gets every sample the head has in its range;
//! * a range is in a block before the head forgets it: a crash between the
//!   two leaves both, and reads merge equal timestamps, so nothing is lost
//!   or doubled; opening truncates the head at the newest block's end;
//! * blocks are kept sorted by `min_time` and never overlap each other: a
//!   merged block replaces its sources in one step, and a crash between
//!   its rename and their deletion is undone at open (a block all of whose
//!   sources another block lists is deleted).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::block::{Block, BlockError, BlockMeta, BlockWriter, io_err, merge_blocks};
use crate::head::{Head, HeadOptions};
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::select::{Select, SelectError, SelectHints, SeriesBatch, merge_batches};
use crate::wal::{ReplayStats, WalError, WalOptions};

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The WAL failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// A block could not be written, read or removed.
    #[error(transparent)]
    Block(#[from] BlockError),
}

/// Counters of block activity (Prometheus's `prometheus_tsdb_*` names in
/// the docs of each field).
#[derive(Debug, Default, Clone)]
pub struct DbCounters {
    /// Head ranges written as blocks (with `merges`, `compactions_total`).
    pub compactions: u64,
    /// Head cuts and block merges that failed
    /// (`compactions_failed_total`).
    pub compactions_failed: u64,
    /// Blocks deleted by retention (`time_retentions_total` counts runs
    /// that deleted any).
    pub blocks_deleted: u64,
    /// Block merges done.
    pub merges: u64,
    /// Blocks found damaged at open and set aside as `<ulid>.corrupt`.
    pub blocks_quarantined: u64,
    /// Head truncations (`head_truncations_total`).
    pub head_truncations: u64,
}

/// A shard's head and blocks. See the module documentation.
pub struct Db {
    blocks_dir: PathBuf,
    head: Head,
    blocks: Vec<Arc<Block>>,
    range: i64,
    force_pwrite: bool,
    counters: DbCounters,
}

/// A head range being written to a block, a slice of series at a time:
/// see [`Db::begin_head_cut`].
pub struct HeadCut {
    writer: BlockWriter,
    mint: i64,
    maxt: i64,
    next_slot: usize,
    end_slot: usize,
}

impl HeadCut {
    /// The range being persisted, `[mint, maxt)`.
    pub fn range(&self) -> (i64, i64) {
        (self.mint, self.maxt)
    }

    /// Adds the next `max_series` series slots of `head` to the block;
    /// returns whether every slot has been visited.
    pub fn step(&mut self, head: &Head, max_series: usize) -> Result<bool, BlockError> {
        let from = self.next_slot;
        let to = from.saturating_add(max_series.max(1)).min(self.end_slot);
        let mut failed = None;
        head.series_chunks(from..to, self.mint, self.maxt, |labels, chunks| {
            if failed.is_none()
                && let Err(e) = self.writer.add_series(labels, chunks)
            {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        self.next_slot = to;
        Ok(to >= self.end_slot)
    }

    /// The finished block's writer: [`BlockWriter::finish`] sorts and
    /// writes the index, and may run on any thread.
    pub fn into_writer(self) -> BlockWriter {
        self.writer
    }
}

impl Db {
    /// Opens the storage in `dir` (created if missing): loads the blocks,
    /// removes unfinished ones, sets damaged ones aside (renamed
    /// `<ulid>.corrupt`, logged, counted in
    /// [`DbCounters::blocks_quarantined`]), and replays the WAL into the
    /// head. Other I/O errors fail the open.
    pub fn open(
        dir: &Path,
        head_opts: HeadOptions,
        wal: WalOptions,
    ) -> Result<(Db, ReplayStats), DbError> {
        let blocks_dir = dir.join("blocks");
        fs::create_dir_all(&blocks_dir).map_err(io_err(&blocks_dir))?;
        let mut blocks = Vec::new();
        let mut quarantined = 0;
        let entries = fs::read_dir(&blocks_dir).map_err(io_err(&blocks_dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&blocks_dir))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.ends_with(".tmp")) {
                // A block whose writing was interrupted: its range is still
                // in the head and WAL.
                log::info!("removing unfinished block {}", path.display());
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
                continue;
            }
            if name.to_str().is_some_and(|n| n.ends_with(".corrupt")) || !path.is_dir() {
                continue;
            }
            match Block::open(&path) {
                Ok(b) => blocks.push(Arc::new(b)),
                // Damaged, or missing a file (`meta.json`, `index`).
                Err(e)
                    if matches!(&e, BlockError::Corrupt { .. })
                        || matches!(&e, BlockError::Io { source, .. }
                            if source.kind() == std::io::ErrorKind::NotFound) =>
                {
                    // Availability first: serve everything else, and keep
                    // the damaged files for inspection rather than delete
                    // them.
                    let aside = path.with_extension("corrupt");
                    log::error!(
                        "{e}; block set aside as {} and left out of reads",
                        aside.display()
                    );
                    fs::rename(&path, &aside).map_err(io_err(&aside))?;
                    quarantined += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        remove_superseded(&mut blocks)?;
        blocks.sort_by_key(|b| b.meta().min_time);
        let force_pwrite = wal.force_pwrite;
        let range = head_opts.chunk_range_ms.max(1);
        let (head, stats) = Head::open(&dir.join("wal"), head_opts, wal)?;
        let mut db = Db {
            blocks_dir,
            head,
            blocks,
            range,
            force_pwrite,
            counters: DbCounters {
                blocks_quarantined: quarantined,
                ..DbCounters::default()
            },
        };
        if let Some(end) = db.blocks.last().map(|b| b.meta().max_time)
            && end > db.head.min_valid_time()
        {
            // The last block was written but the head not yet truncated.
            db.head.truncate_below(end)?;
        }
        Ok((db, stats))
    }

    /// The head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The head, to append to.
    pub fn head_mut(&mut self) -> &mut Head {
        &mut self.head
    }

    /// The blocks, oldest first.
    pub fn blocks(&self) -> &[Arc<Block>] {
        &self.blocks
    }

    /// Block counters.
    pub fn counters(&self) -> &DbCounters {
        &self.counters
    }

    /// The head range due to be persisted: the aligned range holding the
    /// head's oldest sample, once the head spans more than 1.5 ranges.
    pub fn head_range_due(&self) -> Option<(i64, i64)> {
        let (lo, hi) = (self.head.min_time()?, self.head.max_time()?);
        if hi.saturating_sub(lo) <= self.range / 2 * 3 {
            return None;
        }
        let mint = lo.div_euclid(self.range).saturating_mul(self.range);
        Some((mint, mint.saturating_add(self.range)))
    }

    /// Starts persisting the due head range, if any: from now on the head
    /// refuses appends below its end. Feed the head to [`HeadCut::step`]
    /// until it is done, finish its writer, then [`Db::install_block`].
    pub fn begin_head_cut(&mut self) -> Result<Option<HeadCut>, DbError> {
        let Some((mint, maxt)) = self.head_range_due() else {
            return Ok(None);
        };
        self.head.raise_append_floor(maxt);
        let writer = BlockWriter::new(
            &self.blocks_dir,
            mint,
            maxt,
            1,
            Vec::new(),
            self.force_pwrite,
        )
        .inspect_err(|_| self.counters.compactions_failed += 1)?;
        Ok(Some(HeadCut {
            writer,
            mint,
            maxt,
            next_slot: 0,
            end_slot: self.head.series_slots(),
        }))
    }

    /// Counts a head cut or block merge that failed after it began (a
    /// failed write removes its `.tmp` directory, or the next open does;
    /// the head still holds the range, the sources stay).
    pub fn compaction_failed(&mut self) {
        self.counters.compactions_failed += 1;
    }

    /// Makes the block written by a cut of `[mint, maxt)` visible, or —
    /// when `written` is `None` because the range had no series — nothing;
    /// then drops the range from the head's memory ([`Head::drop_below`]).
    /// The caller then checkpoints the WAL ([`Head::checkpoint`], or in
    /// slices from [`Head::begin_checkpoint`]); until it does, the WAL
    /// still holds the range, which opening skips (the head is truncated
    /// at the newest block's end).
    pub fn install_block(
        &mut self,
        written: Option<&Path>,
        maxt: i64,
    ) -> Result<Option<BlockMeta>, DbError> {
        let mut meta = None;
        if let Some(dir) = written {
            let block = Block::open(dir)?;
            meta = Some(block.meta().clone());
            self.blocks.push(Arc::new(block));
            self.blocks.sort_by_key(|b| b.meta().min_time);
        }
        self.counters.compactions += 1;
        self.head.drop_below(maxt);
        self.counters.head_truncations += 1;
        Ok(meta)
    }

    /// Persists every due head range now, on this thread: for tools and
    /// tests (the server cuts in slices, see [`HeadCut`]).
    pub fn compact_head(&mut self) -> Result<Vec<BlockMeta>, DbError> {
        let mut out = Vec::new();
        while let Some(mut cut) = self.begin_head_cut()? {
            let (_, maxt) = cut.range();
            let written = (|| {
                while !cut.step(&self.head, 4096)? {}
                let w = cut.into_writer();
                if w.series() == 0 {
                    w.discard()?;
                    return Ok(None);
                }
                w.finish().map(|(dir, _)| Some(dir))
            })();
            let written = written.inspect_err(|_: &BlockError| self.compaction_failed())?;
            out.extend(self.install_block(written.as_deref(), maxt)?);
            self.head.checkpoint()?;
        }
        Ok(out)
    }

    /// The blocks to merge next, if any: for window sizes 3, 9, 27…
    /// block ranges up to `max_ms`, smallest first, the first aligned
    /// window that holds two blocks or more and that no new block can join
    /// any more (it ends at or before the head's truncation point).
    pub fn plan_merge(&self, max_ms: i64) -> Option<Vec<Arc<Block>>> {
        let done_below = self.head.min_valid_time();
        let mut window = self.range.saturating_mul(3);
        while window <= max_ms {
            let mut i = 0;
            while i < self.blocks.len() {
                let w = self.blocks[i].meta().min_time.div_euclid(window);
                let end = w.saturating_add(1).saturating_mul(window);
                let group: Vec<Arc<Block>> = self.blocks[i..]
                    .iter()
                    .take_while(|b| b.meta().min_time.div_euclid(window) == w)
                    .cloned()
                    .collect();
                i += group.len();
                if group.len() >= 2
                    && end <= done_below
                    && group.iter().all(|b| b.meta().max_time <= end)
                {
                    return Some(group);
                }
            }
            window = window.saturating_mul(3);
        }
        None
    }

    /// The directory new blocks are written in, and whether their writes
    /// are forced to pwrite: what [`merge_blocks`] needs on another thread.
    pub fn block_target(&self) -> (PathBuf, bool) {
        (self.blocks_dir.clone(), self.force_pwrite)
    }

    /// Replaces `sources` by the block they were merged into, written in
    /// `dir`, and deletes their files.
    pub fn install_merged(
        &mut self,
        dir: &Path,
        sources: &[Arc<Block>],
    ) -> Result<BlockMeta, DbError> {
        let block = Block::open(dir)?;
        let meta = block.meta().clone();
        let gone: Vec<&str> = sources.iter().map(|b| b.meta().ulid.as_str()).collect();
        let (old, kept): (Vec<Arc<Block>>, Vec<Arc<Block>>) = std::mem::take(&mut self.blocks)
            .into_iter()
            .partition(|b| gone.contains(&b.meta().ulid.as_str()));
        self.blocks = kept;
        self.blocks.push(Arc::new(block));
        self.blocks.sort_by_key(|b| b.meta().min_time);
        for b in old {
            remove_block(b)?;
        }
        self.counters.merges += 1;
        Ok(meta)
    }

    /// Merges every block [`Db::plan_merge`] proposes, on this thread: for
    /// tools and tests (the server merges on a helper thread).
    pub fn compact_blocks(&mut self, max_ms: i64) -> Result<Vec<BlockMeta>, DbError> {
        let mut out = Vec::new();
        while let Some(group) = self.plan_merge(max_ms) {
            let refs: Vec<&Block> = group.iter().map(|b| &**b).collect();
            let (dir, _) = merge_blocks(&refs, &self.blocks_dir, self.force_pwrite)?;
            out.push(self.install_merged(&dir, &group)?);
        }
        Ok(out)
    }

    /// Deletes every block wholly below `t` and truncates the head below
    /// it; returns how many blocks went.
    pub fn apply_retention(&mut self, t: i64) -> Result<usize, DbError> {
        let (gone, kept): (Vec<Arc<Block>>, Vec<Arc<Block>>) = std::mem::take(&mut self.blocks)
            .into_iter()
            .partition(|b| b.meta().max_time <= t);
        self.blocks = kept;
        let n = gone.len();
        for b in gone {
            remove_block(b)?;
            self.counters.blocks_deleted += 1;
        }
        if self.head.min_time().is_some_and(|m| m < t) {
            self.head.truncate_below(t)?;
            self.counters.head_truncations += 1;
        }
        Ok(n)
    }

    /// Deletes the oldest blocks while all blocks take more than
    /// `max_bytes` (0: no limit), keeping the newest; returns how many went.
    pub fn apply_size_retention(&mut self, max_bytes: u64) -> Result<usize, DbError> {
        let mut n = 0;
        while max_bytes > 0 && self.blocks_bytes() > max_bytes && self.blocks.len() > 1 {
            remove_block(self.blocks.remove(0))?;
            self.counters.blocks_deleted += 1;
            n += 1;
        }
        Ok(n)
    }

    /// Lowest sample time over blocks and head.
    pub fn min_time(&self) -> Option<i64> {
        self.blocks
            .first()
            .map(|b| b.meta().min_time)
            .or(self.head.min_time())
    }

    /// Bytes of all block files.
    pub fn blocks_bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.size_bytes()).sum()
    }

    fn overlapping(&self, mint: i64, maxt: i64) -> impl Iterator<Item = &Arc<Block>> {
        self.blocks.iter().filter(move |b| b.overlaps(mint, maxt))
    }

    /// The blocks whose range meets `[mint, maxt]`, shared: for readers on
    /// other threads (blocks are immutable).
    pub fn blocks_overlapping(&self, mint: i64, maxt: i64) -> Vec<Arc<Block>> {
        self.overlapping(mint, maxt).cloned().collect()
    }

    /// Label names of the series matching `matchers` with samples in
    /// `[mint, maxt]`, over blocks and head; sorted, deduplicated.
    pub fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, SelectError> {
        let mut out = self.head.label_names(matchers, mint, maxt);
        for b in self.overlapping(mint, maxt) {
            out.extend(b.label_names(matchers, mint, maxt)?);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Values of label `name` over the matching series, over blocks and
    /// head; sorted, deduplicated.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, SelectError> {
        let mut out = self.head.label_values(name, matchers, mint, maxt);
        for b in self.overlapping(mint, maxt) {
            out.extend(b.label_values(name, matchers, mint, maxt)?);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Label sets of the matching series, over blocks and head; sorted,
    /// deduplicated.
    pub fn series(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, SelectError> {
        let mut out = self.head.series(matchers, mint, maxt);
        for b in self.overlapping(mint, maxt) {
            out.extend(b.series_labels(matchers, mint, maxt)?);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// Unmaps a block (this handle; readers on other threads keep theirs,
/// which stay readable after the unlink) and deletes its directory.
fn remove_block(b: Arc<Block>) -> Result<(), BlockError> {
    let dir = b.dir().to_owned();
    drop(b);
    fs::remove_dir_all(&dir).map_err(io_err(&dir))
}

/// Deletes the blocks whose data another block holds (all of their sources
/// are among its sources): the sources of a merge that a crash kept from
/// being deleted.
fn remove_superseded(blocks: &mut Vec<Arc<Block>>) -> Result<(), BlockError> {
    let all = blocks.clone();
    let superseded = |b: &Block| {
        all.iter().any(|other| {
            other.meta().ulid != b.meta().ulid
                && other.meta().compaction.level > b.meta().compaction.level
                && b.meta()
                    .compaction
                    .sources
                    .iter()
                    .all(|s| other.meta().compaction.sources.contains(s))
        })
    };
    let (gone, kept): (Vec<Arc<Block>>, Vec<Arc<Block>>) = std::mem::take(blocks)
        .into_iter()
        .partition(|b| superseded(b));
    *blocks = kept;
    for b in gone {
        let dir = b.dir().to_owned();
        log::info!(
            "removing block {}: a merged block holds its data",
            dir.display()
        );
        remove_block(b)?;
    }
    Ok(())
}

impl Db {
    /// The head's part of a select, and the blocks that may hold the rest.
    /// Blocks are immutable and shared, so a reader on another thread can
    /// select from them itself ([`select_blocks`]): the server does, so that
    /// reading block files never occupies the shard's thread.
    pub fn select_head(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> Result<(SeriesBatch, Vec<Arc<Block>>), SelectError> {
        let head = self.head.select(matchers, hints)?;
        Ok((head, self.blocks_overlapping(hints.mint, hints.maxt)))
    }
}

/// Selects from `blocks` within what is left of `hints.max_samples` after
/// `taken` samples; returns the parts (unmerged) and the samples taken in
/// all. `keep_going` is asked before each block (a deadline).
pub fn select_blocks(
    blocks: &[Arc<Block>],
    matchers: &[Matcher],
    hints: &SelectHints,
    mut taken: usize,
    mut keep_going: impl FnMut() -> Result<(), SelectError>,
) -> Result<(Vec<SeriesBatch>, usize), SelectError> {
    let mut parts = Vec::with_capacity(blocks.len());
    for b in blocks {
        keep_going()?;
        let left = hints
            .max_samples
            .checked_sub(taken)
            .ok_or(SelectError::TooManySamples {
                limit: hints.max_samples,
            })?;
        let part = b.select(
            matchers,
            &SelectHints {
                max_samples: left,
                ..*hints
            },
        )?;
        taken += part.sample_count();
        parts.push(part);
    }
    Ok((parts, taken))
}

impl Select for Db {
    fn select(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> Result<SeriesBatch, SelectError> {
        let (head, blocks) = self.select_head(matchers, hints)?;
        let taken = head.sample_count();
        let (mut parts, _) = select_blocks(&blocks, matchers, hints, taken, || Ok(()))?;
        parts.push(head);
        Ok(merge_batches(parts))
    }
}
