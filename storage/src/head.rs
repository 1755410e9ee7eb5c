//! The head: the in-memory, appendable part of a shard's storage.
//!
//! A [`Head`] owns its series (labels interned in the `index` module,
//! samples in Gorilla chunks), answers [`Select`] and the label APIs, and —
//! when opened on a directory — logs every committed sample to its WAL
//! before making it visible. Appends go through an [`Appender`], which
//! stages samples and makes them visible all at once on
//! [`Appender::commit`], or not at all.
//!
//! Invariants:
//! * within a process, series ids are never reused: a [`HeadRef`] names
//!   one series for as long as it lives, and [`AppendError::UnknownRef`]
//!   afterwards (a restart keeps the ids of the series it replays; ids of
//!   series collected before the last checkpoint may be given out again);
//! * within a series, committed timestamps strictly increase; chunks are
//!   time ordered and do not overlap; a chunk holds at most
//!   [`MAX_CHUNK_SAMPLES`] samples and lies within one `chunk_range_ms`
//!   aligned window;
//! * no committed sample is below `min_valid` (the last truncation point)
//!   as seen by readers: truncation drops chunks wholly below it, and every
//!   read clamps its range to it;
//! * a series is visible to reads only once it has a committed sample;
//! * staged samples live in the head's staging buffer, which every
//!   appender starts empty; a series remembers the position of its newest
//!   staged sample, valid only while that position of the buffer holds a
//!   sample of this very series (a position left over from an earlier
//!   appender points past the end or at another series' sample), which is
//!   how rollback is O(1);
//! * a series' newest committed sample is the last sample of its open
//!   chunk: a series with samples always has a non-empty open chunk.

use std::path::Path;

use roaring::RoaringBitmap;

use crate::chunk::{ChunkError, ChunkIter, MAX_CHUNK_SAMPLES, OpenChunk};
use crate::index::Index;
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::select::{Select, SelectError, SelectHints, SeriesBatch, SeriesBatchBuilder};
use crate::wal::{
    CheckpointDone, CheckpointWriter, ReplayStats, Wal, WalError, WalOptions, WalRecord,
};

/// Head configuration.
#[derive(Clone, Debug)]
pub struct HeadOptions {
    /// Chunks never span an aligned window of this many ms; it is also the
    /// head's block range. Default 2 h.
    pub chunk_range_ms: i64,
    /// Series limit; [`AppendError::TooManySeries`] beyond it. 0 = none.
    pub max_series: usize,
}

impl Default for HeadOptions {
    fn default() -> Self {
        HeadOptions {
            chunk_range_ms: 7_200_000,
            max_series: 0,
        }
    }
}

/// A handle on a head series: the fast path for appends.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HeadRef(u32);

/// Why one sample was refused. The others of the appender are unaffected.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// Older than the newest sample of its series.
    #[error("out of order sample")]
    OutOfOrder,
    /// Same timestamp as the newest sample, different value.
    #[error("duplicate sample for timestamp")]
    DuplicateTimestamp,
    /// Below the head's truncation point.
    #[error("out of bounds")]
    OutOfBounds,
    /// The ref names no live series (it was garbage-collected).
    #[error("unknown series reference")]
    UnknownRef,
    /// A series needs at least one label.
    #[error("empty label set")]
    EmptyLabels,
    /// The head holds `max_series` series already.
    #[error("too many series in the head")]
    TooManySeries,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Samples made visible.
    pub samples: usize,
    /// Series this appender created.
    pub series_created: usize,
    /// Samples this appender refused.
    pub rejected: usize,
}

/// Monotonic counters of a head (Prometheus's `prometheus_tsdb_*`).
#[derive(Debug, Clone, Default)]
pub struct HeadCounters {
    /// Samples committed.
    pub samples_appended: u64,
    /// Samples refused as out of order.
    pub out_of_order: u64,
    /// Samples refused for a second value at an existing timestamp.
    pub duplicate: u64,
    /// Samples refused below the truncation point.
    pub out_of_bounds: u64,
    /// Series created.
    pub series_created: u64,
    /// Series garbage-collected.
    pub series_removed: u64,
    /// Record bytes handed to the WAL writer.
    pub wal_bytes_written: u64,
    /// Torn or corrupt WAL tails truncated at open.
    pub wal_truncations: u64,
    /// Corrupt WAL records found at open.
    pub wal_corruptions: u64,
    /// WAL writes failed (full disk, I/O error); appends fail meanwhile.
    pub wal_write_errors: u64,
    /// Whether the WAL writes through io_uring (false: pwrite fallback).
    pub wal_io_uring: bool,
}

/// Memory held by a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadMemory {
    /// All heap and inline bytes the head accounts for.
    pub bytes_total: usize,
    /// Live series.
    pub series: usize,
    /// Samples held in chunks.
    pub samples: u64,
    /// Bytes of encoded chunks (the samples' share of `bytes_total`).
    pub chunk_bytes: usize,
    /// Chunks, closed and open (Prometheus's `chunkCount`).
    pub chunks: usize,
}

/// A closed chunk with its time bounds.
#[derive(Debug)]
struct ClosedChunk {
    min_t: i64,
    max_t: i64,
    bytes: Box<[u8]>,
}

impl ClosedChunk {
    fn samples(&self) -> u64 {
        u64::from(u16::from_be_bytes([self.bytes[2], self.bytes[3]]))
    }
}

/// One series of the head.
#[derive(Debug)]
struct MemSeries {
    /// Interned label pairs (name, value, …) in label order.
    syms: Box<[u32]>,
    closed: Vec<ClosedChunk>,
    /// Sum of the closed chunks' byte lengths.
    closed_bytes: usize,
    open: OpenChunk,
    /// Position in the head's staging buffer of this series' newest staged
    /// sample (see the module invariants).
    staged_at: u32,
    /// Whether the WAL has this series' definition.
    logged: bool,
}

impl MemSeries {
    fn first_time(&self) -> Option<i64> {
        match self.closed.first() {
            Some(c) => Some(c.min_t),
            None if !self.open.is_empty() => Some(self.open.first_time()),
            None => None,
        }
    }

    /// Appends a committed sample, cutting the open chunk when it is full
    /// or the sample leaves its window.
    fn push(&mut self, t: i64, v: f64, range: i64) {
        // The open chunk's window: the aligned `range` holding its first
        // sample (derived, not stored: every byte of a series counts).
        let window_end = |first: i64| {
            first
                .div_euclid(range)
                .saturating_add(1)
                .saturating_mul(range)
        };
        if !self.open.is_empty()
            && (self.open.len() >= MAX_CHUNK_SAMPLES || t >= window_end(self.open.first_time()))
        {
            let open_first_last = (self.open.first_time(), self.open.last_time());
            let open = std::mem::take(&mut self.open);
            let bytes = open.finish();
            self.closed_bytes += bytes.len();
            self.closed.push(ClosedChunk {
                min_t: open_first_last.0,
                max_t: open_first_last.1,
                bytes,
            });
        }
        self.open.append(t, v);
    }

    /// Newest committed sample: time and value bits.
    fn last(&self) -> Option<(i64, u64)> {
        (!self.open.is_empty()).then(|| (self.open.last_time(), self.open.last_value_bits()))
    }

    /// The encoded chunks in time order with their bounds.
    fn chunks(&self) -> impl Iterator<Item = (i64, i64, &[u8])> {
        let open = (!self.open.is_empty()).then(|| {
            (
                self.open.first_time(),
                self.open.last_time(),
                self.open.bytes(),
            )
        });
        self.closed
            .iter()
            .map(|c| (c.min_t, c.max_t, &c.bytes[..]))
            .chain(open)
    }

    /// Calls `f` on every sample in `[lo, hi]`, in time order, until it
    /// returns false.
    fn for_each_in(
        &self,
        lo: i64,
        hi: i64,
        mut f: impl FnMut(i64, f64) -> bool,
    ) -> Result<(), ChunkError> {
        for (min_t, max_t, bytes) in self.chunks() {
            if max_t < lo {
                continue;
            }
            if min_t > hi {
                break;
            }
            let mut it = ChunkIter::new(bytes)?;
            let mut next = it.seek(lo)?;
            while let Some((t, v)) = next {
                if t > hi || !f(t, v) {
                    return Ok(());
                }
                next = it.next_sample()?;
            }
        }
        Ok(())
    }

    /// Whether a committed sample lies in `[lo, hi]`.
    fn has_sample_in(&self, lo: i64, hi: i64) -> bool {
        let (Some(first), Some((last, _))) = (self.first_time(), self.last()) else {
            return false;
        };
        if last < lo || first > hi {
            return false;
        }
        if first >= lo && last <= hi {
            return true;
        }
        let mut found = false;
        // A corrupt chunk counts as no sample here; select reports it.
        let _ = self.for_each_in(lo, hi, |_, _| {
            found = true;
            false
        });
        found
    }

    fn samples(&self) -> u64 {
        self.closed.iter().map(ClosedChunk::samples).sum::<u64>() + u64::from(self.open.len())
    }

    /// Chunk bytes (open chunk at its capacity), other bytes and the
    /// number of chunks, in O(1).
    fn footprint(&self) -> Footprint {
        Footprint {
            chunk_bytes: self.closed_bytes + self.open.heap_bytes(),
            other: std::mem::size_of::<MemSeries>()
                + self.syms.len() * 4
                + self.closed.capacity() * std::mem::size_of::<ClosedChunk>(),
            chunks: self.closed.len() + usize::from(!self.open.is_empty()),
        }
    }
}

/// What one series holds, for the running totals.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    chunk_bytes: usize,
    other: usize,
    chunks: usize,
}

/// Running totals behind [`Head::memory`], so that it is O(1): updated on
/// every append, series creation and removal, recounted at truncation.
#[derive(Debug, Clone, Copy, Default)]
struct MemTotals {
    samples: u64,
    chunk_bytes: usize,
    series_bytes: usize,
    chunks: usize,
}

impl MemTotals {
    fn add(&mut self, f: Footprint) {
        self.chunk_bytes += f.chunk_bytes;
        self.series_bytes += f.other;
        self.chunks += f.chunks;
    }

    fn sub(&mut self, f: Footprint) {
        self.chunk_bytes = self.chunk_bytes.saturating_sub(f.chunk_bytes);
        self.series_bytes = self.series_bytes.saturating_sub(f.other);
        self.chunks = self.chunks.saturating_sub(f.chunks);
    }
}

/// Appends a committed sample to `series`, keeping `totals` current.
fn push_sample(series: &mut MemSeries, totals: &mut MemTotals, t: i64, v: f64, range: i64) {
    let before = series.footprint();
    series.push(t, v, range);
    totals.sub(before);
    totals.add(series.footprint());
    totals.samples += 1;
}

/// A staged sample.
#[derive(Debug, Clone, Copy)]
struct Staged {
    id: u32,
    t: i64,
    v: f64,
}

/// The in-memory head of a shard. See the module documentation.
pub struct Head {
    opts: HeadOptions,
    index: Index,
    series: Vec<Option<Box<MemSeries>>>,
    live: usize,
    min_valid: i64,
    /// Appends below this are out of bounds. Never below `min_valid` (the
    /// one comparison an append makes), and raised above it while a range
    /// is being persisted, so that the range gets no new sample.
    append_floor: i64,
    min_time: Option<i64>,
    max_time: Option<i64>,
    counters: HeadCounters,
    totals: MemTotals,
    /// Reused staging buffer (kept here so appenders do not allocate).
    staging: Vec<Staged>,
    wal: Option<Wal>,
    /// A [`HeadCheckpoint`] has begun and not ended.
    checkpointing: bool,
}

impl Head {
    /// A memory-only head, with no WAL.
    pub fn new(opts: HeadOptions) -> Head {
        let opts = HeadOptions {
            chunk_range_ms: opts.chunk_range_ms.max(1),
            ..opts
        };
        Head {
            opts,
            index: Index::default(),
            series: Vec::new(),
            live: 0,
            min_valid: i64::MIN,
            append_floor: i64::MIN,
            min_time: None,
            max_time: None,
            counters: HeadCounters::default(),
            totals: MemTotals::default(),
            staging: Vec::new(),
            wal: None,
            checkpointing: false,
        }
    }

    /// Opens the head logged in `wal_dir` (created if missing): replays the
    /// WAL into memory, then logs every commit to it.
    pub fn open(
        wal_dir: &Path,
        opts: HeadOptions,
        wal: WalOptions,
    ) -> Result<(Head, ReplayStats), WalError> {
        let mut head = Head::new(opts);
        let (wal, mut stats) = Wal::open(wal_dir, wal, |rec| head.replay(rec))?;
        stats.series = head.live;
        stats.samples = head.counters.samples_appended;
        // Replayed samples were appended before this process started; the
        // counter counts this process's appends, as Prometheus's does.
        head.counters.samples_appended = 0;
        head.counters.wal_io_uring = wal.uses_io_uring();
        head.counters.wal_truncations = u64::from(stats.truncated_bytes > 0);
        head.counters.wal_corruptions = stats.corrupt_records;
        head.wal = Some(wal);
        Ok((head, stats))
    }

    /// Applies one replayed record.
    fn replay(&mut self, rec: WalRecord<'_>) -> Result<(), WalError> {
        match rec {
            WalRecord::Series { id, labels } => {
                if labels.is_empty() {
                    return Err(WalError::Invalid("series record with no labels".into()));
                }
                let hash = labels.hash();
                if let Some(existing) = self.lookup(&labels, hash) {
                    if existing != id {
                        return Err(WalError::Invalid(format!(
                            "series {labels} defined as {existing} and {id}"
                        )));
                    }
                    return Ok(());
                }
                self.create_series_with_id(id, &labels, hash)?;
                if let Some(s) = self.series_mut(id) {
                    s.logged = true;
                }
            }
            WalRecord::Samples(samples) => {
                for s in samples {
                    let (id, t, v) = s?;
                    // Samples of unknown series, or not newer than their
                    // series, cannot come from a valid log: skip them.
                    if t < self.min_valid {
                        continue;
                    }
                    let range = self.opts.chunk_range_ms;
                    let Some(series) = self
                        .series
                        .get_mut(id as usize)
                        .and_then(|x| x.as_deref_mut())
                    else {
                        continue;
                    };
                    if series.last().is_some_and(|(lt, _)| t <= lt) {
                        continue;
                    }
                    push_sample(series, &mut self.totals, t, v, range);
                    self.note_time(t);
                    self.counters.samples_appended += 1;
                }
            }
            WalRecord::Chunk { id, bytes } => {
                let range = self.opts.chunk_range_ms;
                let min_valid = self.min_valid;
                let Some(series) = self
                    .series
                    .get_mut(id as usize)
                    .and_then(|x| x.as_deref_mut())
                else {
                    return Ok(());
                };
                let mut appended = Vec::new();
                for s in ChunkIter::new(bytes)? {
                    let (t, v) = s?;
                    if t >= min_valid && series.last().is_none_or(|(lt, _)| t > lt) {
                        push_sample(series, &mut self.totals, t, v, range);
                        appended.push(t);
                    }
                }
                for t in appended {
                    self.note_time(t);
                    self.counters.samples_appended += 1;
                }
            }
            WalRecord::MinValid(t) => {
                self.min_valid = self.min_valid.max(t);
                self.append_floor = self.append_floor.max(t);
            }
        }
        Ok(())
    }

    /// Stages samples; see [`Appender`].
    pub fn appender(&mut self) -> Appender<'_> {
        self.staging.clear();
        Appender {
            head: self,
            series_created: 0,
            rejected: 0,
        }
    }

    /// Live series, including those without samples yet.
    pub fn num_series(&self) -> usize {
        self.live
    }

    /// Lowest visible sample time (a lower bound when a chunk straddles the
    /// last truncation point).
    pub fn min_time(&self) -> Option<i64> {
        self.min_time
    }

    /// Highest sample time.
    pub fn max_time(&self) -> Option<i64> {
        self.max_time
    }

    /// The counters.
    pub fn counters(&self) -> &HeadCounters {
        &self.counters
    }

    /// The truncation point: samples below it are refused and invisible.
    pub fn min_valid_time(&self) -> i64 {
        self.min_valid
    }

    /// Refuses appends below `t` from now on, as out of bounds (it never
    /// lowers the floor). Readers are unaffected.
    pub fn raise_append_floor(&mut self, t: i64) {
        self.append_floor = self.append_floor.max(t);
    }

    /// One past the highest series slot: [`Head::series_chunks`] takes
    /// ranges of `0..series_slots()`.
    pub fn series_slots(&self) -> usize {
        self.series.len()
    }

    /// For each series in `slots` (a range of series ids) with chunks
    /// wholly inside `[mint, maxt)`, calls `f` with its labels and those
    /// chunks (`(min_t, max_t, bytes)`, time ordered). A chunk crossing
    /// either bound is skipped: callers pass ranges aligned to the chunk
    /// range, which chunks never cross.
    pub fn series_chunks(
        &self,
        slots: std::ops::Range<usize>,
        mint: i64,
        maxt: i64,
        mut f: impl FnMut(Labels, &mut dyn Iterator<Item = (i64, i64, &[u8])>),
    ) {
        let end = slots.end.min(self.series.len());
        for s in self.series[slots.start.min(end)..end].iter().flatten() {
            let mut inside = s
                .chunks()
                .skip_while(|c| c.0 < mint)
                .take_while(|c| c.1 < maxt)
                .peekable();
            if inside.peek().is_some() {
                f(self.index.labels(&s.syms), &mut inside);
            }
        }
    }

    /// Memory accounting, in O(1) (running totals; the index part is an
    /// estimate between truncations).
    pub fn memory(&self) -> HeadMemory {
        let t = &self.totals;
        HeadMemory {
            series: self.live,
            samples: t.samples,
            chunk_bytes: t.chunk_bytes,
            chunks: t.chunks,
            bytes_total: self.index.heap_bytes()
                + self.series.capacity() * std::mem::size_of::<Option<Box<MemSeries>>>()
                + self.staging.capacity() * std::mem::size_of::<Staged>()
                + t.chunk_bytes
                + t.series_bytes,
        }
    }

    /// Flushes everything pending to the WAL and fsyncs it (no-op without
    /// a WAL).
    pub fn sync_wal(&mut self) -> Result<(), WalError> {
        match &mut self.wal {
            Some(w) => w.sync(),
            None => Ok(()),
        }
    }

    /// Drops chunks wholly below `t`, garbage-collects series left without
    /// samples (which also removes series that never got one), makes `t`
    /// the truncation point, and checkpoints the WAL to the live series.
    pub fn truncate_below(&mut self, t: i64) -> Result<(), WalError> {
        self.drop_below(t);
        self.checkpoint()
    }

    /// The memory half of [`Head::truncate_below`], without the
    /// checkpoint: one pass over the series.
    pub fn drop_below(&mut self, t: i64) {
        if t > self.min_valid {
            self.min_valid = t;
            self.append_floor = self.append_floor.max(t);
        }
        let t = self.min_valid;
        let mut min_time: Option<i64> = None;
        let mut max_time: Option<i64> = None;
        for slot in 0..self.series.len() {
            let Some(s) = self.series[slot].as_deref_mut() else {
                continue;
            };
            s.closed.retain(|c| c.max_t >= t);
            s.closed_bytes = s.closed.iter().map(|c| c.bytes.len()).sum();
            if !s.open.is_empty() && s.open.last_time() < t {
                s.open = OpenChunk::new();
            }
            match s.first_time() {
                Some(first) => {
                    let first = first.max(t);
                    min_time = Some(min_time.map_or(first, |m| m.min(first)));
                    let last = s.last().map_or(first, |l| l.0);
                    max_time = Some(max_time.map_or(last, |m| m.max(last)));
                }
                None => {
                    // Slot index fits u32: ids are u32 and slots are indexed by id.
                    let id = slot as u32;
                    self.remove_series(id);
                }
            }
        }
        self.min_time = min_time;
        self.max_time = max_time;
        let mut totals = MemTotals::default();
        for s in self.series.iter().flatten() {
            totals.add(s.footprint());
            totals.samples += s.samples();
        }
        self.totals = totals;
        self.index.recount();
    }

    /// Checkpoints the WAL to the live series at once (no-op without a
    /// WAL); [`Head::begin_checkpoint`] does it in slices.
    pub fn checkpoint(&mut self) -> Result<(), WalError> {
        let Some(mut cp) = self.begin_checkpoint()? else {
            return Ok(());
        };
        match cp.step(self, usize::MAX) {
            Ok(_) => cp.finish(self)?.wait(),
            Err(e) => {
                if let Ok(done) = cp.abandon(self) {
                    let _ = done.wait();
                }
                Err(e)
            }
        }
    }

    /// Starts replacing the WAL written so far by a checkpoint of the live
    /// series and their chunks (`None` without a WAL). Feed it the head
    /// with [`HeadCheckpoint::step`], then [`HeadCheckpoint::finish`];
    /// commits go on meanwhile, into the next segment. One checkpoint at a
    /// time: another fails to begin until this one is finished or
    /// abandoned (dropping it without either leaves the head unable to
    /// checkpoint; the unfinished file is discarded at the next open).
    pub fn begin_checkpoint(&mut self) -> Result<Option<HeadCheckpoint>, WalError> {
        let min_valid = self.min_valid;
        let end = self.series.len();
        if self.checkpointing {
            return Err(WalError::Invalid(
                "a checkpoint is already being written".into(),
            ));
        }
        let Some(wal) = self.wal.as_mut() else {
            return Ok(None);
        };
        self.checkpointing = true;
        Ok(Some(HeadCheckpoint {
            writer: wal.begin_checkpoint(min_valid)?,
            next: 0,
            end,
        }))
    }

    fn series_ref(&self, id: u32) -> Option<&MemSeries> {
        self.series.get(id as usize)?.as_deref()
    }

    fn series_mut(&mut self, id: u32) -> Option<&mut MemSeries> {
        self.series.get_mut(id as usize)?.as_deref_mut()
    }

    fn lookup(&self, labels: &Labels, hash: u64) -> Option<u32> {
        self.index
            .lookup(labels, hash, |id| self.series_ref(id).map(|s| &s.syms[..]))
    }

    fn create_series_with_id(
        &mut self,
        id: u32,
        labels: &Labels,
        hash: u64,
    ) -> Result<(), WalError> {
        let slot = id as usize;
        if self.series.get(slot).is_some_and(Option::is_some) {
            return Err(WalError::Invalid(format!("series id {id} defined twice")));
        }
        if self.series.len() <= slot {
            self.series.resize_with(slot + 1, || None);
        }
        let syms = self.index.add(id, labels, hash);
        let series = Box::new(MemSeries {
            syms,
            closed: Vec::new(),
            closed_bytes: 0,
            open: OpenChunk::new(),
            staged_at: u32::MAX,
            logged: false,
        });
        self.totals.add(series.footprint());
        self.series[slot] = Some(series);
        self.live += 1;
        self.counters.series_created += 1;
        Ok(())
    }

    fn remove_series(&mut self, id: u32) {
        if let Some(s) = self.series.get_mut(id as usize).and_then(Option::take) {
            self.totals.sub(s.footprint());
            // The hash is recomputed rather than kept per series: removal
            // is rare (truncation), series are many.
            let hash = self.index.labels(&s.syms).hash();
            self.index.remove(id, &s.syms, hash);
            self.live -= 1;
            self.counters.series_removed += 1;
        }
    }

    fn note_time(&mut self, t: i64) {
        self.min_time = Some(self.min_time.map_or(t, |m| m.min(t)));
        self.max_time = Some(self.max_time.map_or(t, |m| m.max(t)));
    }

    /// Ids of series matching `matchers` with a sample in `[mint, maxt]`.
    fn matching(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> RoaringBitmap {
        let lo = mint.max(self.min_valid);
        let mut ids = self.index.select(matchers);
        if lo > maxt {
            return RoaringBitmap::new();
        }
        ids.retain(|id| {
            self.series_ref(id)
                .is_some_and(|s| s.has_sample_in(lo, maxt))
        });
        ids
    }

    /// Label names of the series matching `matchers` (all series when
    /// empty) with a sample in `[mint, maxt]`; sorted, deduplicated.
    pub fn label_names(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<String> {
        let ids = self.matching(matchers, mint, maxt);
        // Every series selected: every name qualifies, no bitmap test.
        let all = ids.len() == self.index.series_count();
        let mut names: Vec<String> = self
            .index
            .names()
            .filter_map(|(n, mut values)| {
                (all || values.any(|b| !b.is_disjoint(&ids))).then(|| n.to_owned())
            })
            .collect();
        names.sort_unstable();
        names
    }

    /// Values of label `name` over the series matching `matchers` with a
    /// sample in `[mint, maxt]`; sorted, deduplicated.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Vec<String> {
        let ids = self.matching(matchers, mint, maxt);
        let all = ids.len() == self.index.series_count();
        let mut values: Vec<String> = self
            .index
            .values(name)
            .filter(|(_, b)| all || !b.is_disjoint(&ids))
            .map(|(v, _)| v.to_owned())
            .collect();
        values.sort_unstable();
        values
    }

    /// Every (label name, label value) pair of the head's series with the
    /// number of series carrying it, read off the postings: O(pairs), no
    /// work per series. For cardinality statistics
    /// (`/api/v1/status/tsdb`).
    pub fn label_pair_counts(&self) -> Vec<(String, String, u64)> {
        let names: Vec<&str> = self
            .index
            .names()
            .map(|(n, _)| n)
            .filter(|n| !n.is_empty())
            .collect();
        let mut out = Vec::new();
        for name in names {
            for (value, ids) in self.index.values(name) {
                if !ids.is_empty() {
                    out.push((name.to_owned(), value.to_owned(), ids.len()));
                }
            }
        }
        out
    }

    /// Label sets of the series matching `matchers` with a sample in
    /// `[mint, maxt]`, sorted.
    pub fn series(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Labels> {
        let mut out: Vec<Labels> = self
            .matching(matchers, mint, maxt)
            .iter()
            .filter_map(|id| self.series_ref(id))
            .map(|s| self.index.labels(&s.syms))
            .collect();
        out.sort_unstable();
        out
    }

    /// Commits staged samples: WAL first, then memory.
    fn commit_staged(&mut self) -> Result<usize, WalError> {
        let staging = std::mem::take(&mut self.staging);
        let result = self.apply(&staging);
        self.staging = staging;
        self.staging.clear();
        result
    }

    fn apply(&mut self, staged: &[Staged]) -> Result<usize, WalError> {
        if staged.is_empty() {
            return Ok(0);
        }
        if let Some(wal) = self.wal.as_mut() {
            let mut batch = wal.batch(staged.len());
            // Series first logged by this batch; marked now so each is
            // defined once, unmarked again if the batch fails.
            let mut defined = Vec::new();
            for s in staged {
                let Some(series) = self
                    .series
                    .get_mut(s.id as usize)
                    .and_then(|x| x.as_deref_mut())
                else {
                    continue;
                };
                if !series.logged {
                    batch.series(s.id, &self.index.labels(&series.syms));
                    series.logged = true;
                    defined.push(s.id);
                }
            }
            for s in staged {
                batch.sample(s.id, s.t, s.v);
            }
            match batch.submit() {
                Ok(bytes) => self.counters.wal_bytes_written += bytes,
                Err(e) => {
                    self.counters.wal_write_errors += 1;
                    for id in defined {
                        if let Some(series) = self.series_mut(id) {
                            series.logged = false;
                        }
                    }
                    return Err(e);
                }
            }
        }
        let range = self.opts.chunk_range_ms;
        let mut applied = 0;
        for s in staged {
            if let Some(series) = self
                .series
                .get_mut(s.id as usize)
                .and_then(|x| x.as_deref_mut())
            {
                push_sample(series, &mut self.totals, s.t, s.v, range);
                applied += 1;
                self.note_time(s.t);
            }
        }
        self.counters.samples_appended += applied as u64;
        Ok(applied)
    }
}

impl Select for Head {
    fn select(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> Result<SeriesBatch, SelectError> {
        let lo = hints.mint.max(self.min_valid);
        let hi = hints.maxt;
        let ids = self.matching(matchers, hints.mint, hints.maxt);
        let mut found: Vec<(Labels, &MemSeries)> = ids
            .iter()
            .filter_map(|id| self.series_ref(id))
            .map(|s| (self.index.labels(&s.syms), s))
            .collect();
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut b = SeriesBatchBuilder::with_capacity(found.len(), 0);
        let mut over = false;
        for (labels, s) in found {
            b.push_series(labels);
            s.for_each_in(lo, hi, |t, v| {
                if b.sample_count() >= hints.max_samples {
                    over = true;
                    return false;
                }
                b.push_sample(t, v);
                true
            })
            .map_err(|e| SelectError::Storage(e.to_string()))?;
            if over {
                return Err(SelectError::TooManySamples {
                    limit: hints.max_samples,
                });
            }
        }
        Ok(b.finish())
    }
}

/// A WAL checkpoint written a slice of series at a time: see
/// [`Head::begin_checkpoint`]. Series created after it began are logged
/// by their commits, into segments the checkpoint does not replace; a
/// series whose samples are in both is replayed once (replay skips samples
/// not newer than its series' last).
pub struct HeadCheckpoint {
    writer: CheckpointWriter,
    next: usize,
    end: usize,
}

impl HeadCheckpoint {
    /// Writes the next `max_series` series slots of `head`; returns whether
    /// every slot has been visited.
    pub fn step(&mut self, head: &mut Head, max_series: usize) -> Result<bool, WalError> {
        let to = self
            .next
            .saturating_add(max_series.max(1))
            .min(self.end)
            .min(head.series.len());
        let Some(wal) = head.wal.as_ref() else {
            return Err(WalError::WriterGone);
        };
        for id in self.next..to {
            let Some(s) = head.series[id].as_deref_mut() else {
                continue;
            };
            if s.last().is_none() {
                continue;
            }
            // Ids are u32 (slot index == id).
            self.writer
                .series(wal, id as u32, &head.index.labels(&s.syms))?;
            s.logged = true;
            for (_, _, bytes) in s.chunks() {
                self.writer.chunk(wal, id as u32, bytes)?;
            }
        }
        self.next = to;
        Ok(to >= self.end.min(head.series.len()))
    }

    /// Hands the rest to the WAL writer, which puts the checkpoint in place
    /// of the segments it replaces; its outcome arrives through the
    /// returned [`CheckpointDone`] (this does not wait for the disk).
    pub fn finish(self, head: &mut Head) -> Result<CheckpointDone, WalError> {
        head.checkpointing = false;
        match head.wal.as_mut() {
            Some(wal) => wal.end_checkpoint(self.writer, true),
            None => Err(WalError::WriterGone),
        }
    }

    /// Discards the checkpoint; the segments stay.
    pub fn abandon(self, head: &mut Head) -> Result<CheckpointDone, WalError> {
        head.checkpointing = false;
        match head.wal.as_mut() {
            Some(wal) => wal.end_checkpoint(self.writer, false),
            None => Err(WalError::WriterGone),
        }
    }
}

/// Stages samples for one head; nothing is visible until [`Self::commit`],
/// and [`Self::rollback`] (or dropping the appender) discards them all.
pub struct Appender<'a> {
    head: &'a mut Head,
    series_created: usize,
    rejected: usize,
}

impl Appender<'_> {
    /// Appends by label set, creating the series if needed; returns its ref
    /// for [`Self::append_ref`].
    pub fn append(&mut self, labels: &Labels, t: i64, v: f64) -> Result<HeadRef, AppendError> {
        let r = self
            .get_or_create(labels)
            .inspect_err(|_| self.rejected += 1)?;
        self.append_ref(r, t, v)?;
        Ok(r)
    }

    fn get_or_create(&mut self, labels: &Labels) -> Result<HeadRef, AppendError> {
        if labels.is_empty() {
            return Err(AppendError::EmptyLabels);
        }
        let hash = labels.hash();
        if let Some(id) = self.head.lookup(labels, hash) {
            return Ok(HeadRef(id));
        }
        let head = &mut *self.head;
        if head.opts.max_series > 0 && head.live >= head.opts.max_series {
            return Err(AppendError::TooManySeries);
        }
        let id = u32::try_from(head.series.len()).map_err(|_| AppendError::TooManySeries)?;
        head.create_series_with_id(id, labels, hash)
            .map_err(|_| AppendError::TooManySeries)?;
        self.series_created += 1;
        Ok(HeadRef(id))
    }

    /// Appends by ref: no hashing, no allocation beyond the amortised
    /// staging buffer.
    pub fn append_ref(&mut self, r: HeadRef, t: i64, v: f64) -> Result<(), AppendError> {
        let head = &mut *self.head;
        let floor = head.append_floor;
        let Some(s) = head
            .series
            .get_mut(r.0 as usize)
            .and_then(|x| x.as_deref_mut())
        else {
            self.rejected += 1;
            return Err(AppendError::UnknownRef);
        };
        if t < floor {
            head.counters.out_of_bounds += 1;
            self.rejected += 1;
            return Err(AppendError::OutOfBounds);
        }
        let staged = head
            .staging
            .get(s.staged_at as usize)
            .filter(|st| st.id == r.0)
            .map(|st| (st.t, st.v.to_bits()));
        let last = staged.or_else(|| s.last());
        if let Some((lt, lv)) = last {
            if t == lt {
                if lv == v.to_bits() {
                    return Ok(());
                }
                head.counters.duplicate += 1;
                self.rejected += 1;
                return Err(AppendError::DuplicateTimestamp);
            }
            if t < lt {
                head.counters.out_of_order += 1;
                self.rejected += 1;
                return Err(AppendError::OutOfOrder);
            }
        }
        s.staged_at = u32::try_from(head.staging.len()).unwrap_or(u32::MAX);
        head.staging.push(Staged { id: r.0, t, v });
        Ok(())
    }

    /// Makes every staged sample visible (after logging it to the WAL).
    /// On a WAL error nothing becomes visible.
    pub fn commit(mut self) -> Result<CommitStats, WalError> {
        let samples = self.head.commit_staged()?;
        Ok(CommitStats {
            samples,
            series_created: std::mem::take(&mut self.series_created),
            rejected: self.rejected,
        })
    }

    /// Discards every staged sample. Series created meanwhile stay
    /// registered, invisible until they get a sample.
    pub fn rollback(self) {}
}

impl Drop for Appender<'_> {
    fn drop(&mut self) {
        // After a commit the staging buffer is already empty; otherwise this
        // is a rollback, and an empty buffer voids every series' staged
        // position.
        self.head.staging.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_pair_counts_match_a_count_over_the_series() {
        let mut head = Head::new(HeadOptions::default());
        let mut app = head.appender();
        for i in 0..50u32 {
            let l = Labels::from_pairs([
                ("__name__", if i % 3 == 0 { "a" } else { "b" }),
                ("i", &i.to_string()),
                ("mod", &(i % 4).to_string()),
            ])
            .unwrap();
            app.append(&l, 1000, 1.0).unwrap();
        }
        app.commit().unwrap();
        let mut naive = std::collections::BTreeMap::new();
        for l in head.series(&[], i64::MIN, i64::MAX) {
            for p in l.iter() {
                *naive
                    .entry((p.name.to_owned(), p.value.to_owned()))
                    .or_insert(0u64) += 1;
            }
        }
        let got: std::collections::BTreeMap<_, _> = head
            .label_pair_counts()
            .into_iter()
            .map(|(n, v, c)| ((n, v), c))
            .collect();
        assert_eq!(got, naive);
    }

    /// The running totals against a full scan of the series.
    fn assert_totals_match_scan(head: &Head) {
        let mut scan = MemTotals::default();
        for s in head.series.iter().flatten() {
            scan.add(s.footprint());
            scan.samples += s.samples();
        }
        let m = head.memory();
        assert_eq!(m.samples, scan.samples);
        assert_eq!(m.chunk_bytes, scan.chunk_bytes);
        assert_eq!(head.totals.series_bytes, scan.series_bytes);
        assert_eq!(m.chunks, scan.chunks);
    }

    #[test]
    fn collected_series_leave_nothing_in_the_lookup() {
        let mut head = Head::new(HeadOptions::default());
        let mut app = head.appender();
        for i in 0..40u32 {
            let l = Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]).unwrap();
            app.append(&l, i64::from(i % 2) * 10_000, 1.0).unwrap();
        }
        app.commit().unwrap();
        assert_eq!(head.index.lookup_entries(), 40);
        // Half the series have their only sample below 5000.
        head.truncate_below(5000).unwrap();
        assert_eq!(head.num_series(), 20);
        assert_eq!(head.index.lookup_entries(), 20);
        head.truncate_below(20_000).unwrap();
        assert_eq!(head.index.lookup_entries(), 0);
    }

    #[test]
    fn memory_totals_follow_appends_cuts_and_truncation() {
        let mut head = Head::new(HeadOptions {
            chunk_range_ms: 1000,
            max_series: 0,
        });
        for round in 0..5i64 {
            let mut app = head.appender();
            for i in 0..20 {
                let l = Labels::from_pairs([("s", format!("{i}"))]).unwrap();
                for k in 0..100 {
                    let t = round * 1000 + k * 7;
                    app.append(&l, t, (t * i) as f64 * 0.5).unwrap();
                }
            }
            if round == 3 {
                app.rollback();
            } else {
                app.commit().unwrap();
            }
            assert_totals_match_scan(&head);
        }
        // Four committed rounds, each in its own 1-s chunk window.
        assert_eq!(head.memory().chunks, 20 * 4);
        head.truncate_below(2500).unwrap();
        assert_totals_match_scan(&head);
        let m = head.memory();
        assert_eq!(m.chunks, 20 * 2, "rounds 2 and 4 are at or above 2500");
        assert!(m.bytes_total > m.chunk_bytes && m.chunk_bytes > 0);
        head.truncate_below(10_000).unwrap();
        assert_totals_match_scan(&head);
        assert_eq!(head.memory().samples, 0);
        assert_eq!(head.num_series(), 0);
    }
}
