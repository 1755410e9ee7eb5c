//! Persisted blocks: immutable, self-contained files holding every series
//! of a shard over one time range `[min_time, max_time)`.
//!
//! A block is a directory `<ulid>/` with `meta.json`, `index` and
//! `chunks/000001…` (byte formats in `docs/storage-format.md`). It is
//! written under `<ulid>.tmp/` by a [`BlockWriter`], fsynced, and renamed
//! into place: a directory without the suffix is always complete.
//!
//! [`Block`] reads one through `mmap`: opening it validates the header, the
//! table of contents (checksummed), every table's bounds and the symbols;
//! series entries, postings and chunks carry their own CRC32C and are
//! checked when read, so a corrupt block fails the read that touches the
//! damage with [`SelectError::Storage`] instead of answering wrongly.
//!
//! Invariants of a block's index:
//! * symbols are sorted and unique, so comparing refs compares strings;
//! * series are sorted by labels and numbered from 0 in that order: a
//!   posting list of ordinals is therefore also label-ordered;
//! * postings table entries are sorted by (name ref, value ref);
//! * every series has at least one chunk, chunks are time ordered and lie
//!   within `[min_time, max_time)`.

mod writer;

use std::cell::RefCell;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::chunk::ChunkIter;
use crate::index::{PostingsSource, select_postings};
use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::select::{SelectError, SelectHints, SeriesBatch, SeriesBatchBuilder};
use crate::varint::{get_uvarint, get_varint};
pub use writer::BlockWriter;

/// First four bytes of an index file.
const INDEX_MAGIC: [u8; 4] = *b"KLNI";
/// First four bytes of a chunk segment.
const CHUNKS_MAGIC: [u8; 4] = *b"KLNC";
/// The format version, the fifth byte of both files.
const FORMAT_VERSION: u8 = 1;
/// Bytes before the first chunk of a segment.
const SEGMENT_HEADER: usize = 8;
/// Bytes of the index's table of contents, at its end.
const TOC_LEN: usize = 6 * 8 + 4 * 4;
/// Bytes of one postings table entry.
const POSTING_ENTRY: usize = 4 + 4 + 8 + 4 + 4;
/// The largest `meta.json` read.
const MAX_META_BYTES: u64 = 16 << 20;
/// A chunk segment is closed before it would pass this size.
const SEGMENT_BYTES: u64 = 512 << 20;

/// `meta.json`: what a block holds (Prometheus's field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockMeta {
    /// The block's ULID, also its directory name.
    pub ulid: String,
    /// Lowest timestamp the block may hold (inclusive, ms).
    pub min_time: i64,
    /// End of the block's range (exclusive, ms).
    pub max_time: i64,
    /// Counts.
    pub stats: BlockStats,
    /// Where the block came from.
    pub compaction: BlockCompaction,
    /// Format version (1).
    pub version: u32,
}

/// Counts of a block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStats {
    /// Samples.
    pub num_samples: u64,
    /// Series.
    pub num_series: u64,
    /// Chunks.
    pub num_chunks: u64,
}

/// A block's lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCompaction {
    /// 1 for a block cut from the head, one more than its highest source's
    /// level for a merged one.
    pub level: u32,
    /// ULIDs of the level-1 blocks whose data it holds.
    pub sources: Vec<String>,
}

/// Block failures.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// A file operation failed.
    #[error("block I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what the format says it must.
    #[error("corrupt block file {path}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlockError + '_ {
    move |source| BlockError::Io {
        path: path.to_owned(),
        source,
    }
}

fn segment_name(n: u32) -> String {
    format!("{n:06}")
}

/// The sample count in a chunk's header (see [`crate::chunk`]).
fn chunk_samples(bytes: &[u8]) -> u16 {
    match bytes {
        [_, _, a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

/// One chunk of a block series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// First sample time.
    pub min_t: i64,
    /// Last sample time.
    pub max_t: i64,
    /// Segment number (high 32 bits) and offset in it.
    pub chunk_ref: u64,
}

/// The index's table of contents.
#[derive(Debug, Clone, Copy)]
struct Toc {
    symbols: u64,
    symbol_table: u64,
    series: u64,
    series_table: u64,
    pairs: u64,
    postings_table: u64,
}

/// An open, immutable block. See the module documentation.
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: Mmap,
    /// Segment `n` is `segments[n - 1]`.
    segments: Vec<Mmap>,
    toc: Toc,
    all: RoaringBitmap,
    bytes: u64,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn map(path: &Path) -> Result<Mmap, BlockError> {
    let f = fs::File::open(path).map_err(io_err(path))?;
    // SAFETY: block files are immutable once renamed into place; kiln
    // never writes to them, and deletes a block only after dropping it.
    unsafe { Mmap::map(&f) }.map_err(io_err(path))
}

impl Block {
    /// Opens and validates the block in `dir`.
    pub fn open(dir: &Path) -> Result<Block, BlockError> {
        let meta_path = dir.join("meta.json");
        let bad_meta = |what: String| BlockError::Corrupt {
            path: meta_path.clone(),
            what,
        };
        // A meta.json is a few hundred bytes (a merge lists its sources);
        // anything far larger is not one, and is not read into memory.
        let meta_len = fs::metadata(&meta_path).map_err(io_err(&meta_path))?.len();
        if meta_len > MAX_META_BYTES {
            return Err(bad_meta(format!("{meta_len} bytes, over {MAX_META_BYTES}")));
        }
        let meta_bytes = fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: BlockMeta =
            serde_json::from_slice(&meta_bytes).map_err(|e| bad_meta(e.to_string()))?;
        if meta.min_time >= meta.max_time {
            return Err(bad_meta(format!(
                "empty range {}..{}",
                meta.min_time, meta.max_time
            )));
        }
        let index_path = dir.join("index");
        let index = map(&index_path)?;
        let corrupt = |what: &str| BlockError::Corrupt {
            path: index_path.clone(),
            what: what.to_owned(),
        };
        if index.len() < 8 + TOC_LEN || index[..4] != INDEX_MAGIC || index[4] != FORMAT_VERSION {
            return Err(corrupt("not a version 1 kiln index"));
        }
        let toc_at = index.len() - TOC_LEN;
        if crc32c::crc32c(&index[toc_at..index.len() - 4]) != le_u32(&index, index.len() - 4) {
            return Err(corrupt("table of contents checksum mismatch"));
        }
        let t = |i: usize| le_u64(&index, toc_at + i * 8);
        let toc = Toc {
            symbols: t(0),
            symbol_table: t(1),
            series: t(2),
            series_table: t(3),
            pairs: t(4),
            postings_table: t(5),
        };
        let fits = |at: u64, n: u64, width: u64| {
            n.checked_mul(width)
                .and_then(|b| b.checked_add(at))
                .is_some_and(|end| end <= toc_at as u64)
        };
        if toc.symbol_table < 8
            || !fits(toc.symbol_table, toc.symbols, 8)
            || !fits(toc.series_table, toc.series, 8)
            || !fits(toc.postings_table, toc.pairs, POSTING_ENTRY as u64)
            || toc.series > u64::from(u32::MAX)
            || toc.symbols > u64::from(u32::MAX)
            || toc.series != meta.stats.num_series
        {
            return Err(corrupt("table of contents out of bounds"));
        }
        let crc_at = |i: usize| le_u32(&index, toc_at + 48 + i * 4);
        let table = |at: u64, n: u64, width: u64| &index[at as usize..(at + n * width) as usize];
        let symbols_end = toc.symbol_table + toc.symbols * 8;
        if crc32c::crc32c(&index[8..symbols_end as usize]) != crc_at(0)
            || crc32c::crc32c(table(toc.series_table, toc.series, 8)) != crc_at(1)
            || crc32c::crc32c(table(toc.postings_table, toc.pairs, POSTING_ENTRY as u64))
                != crc_at(2)
        {
            return Err(corrupt(
                "symbols, series table or postings table checksum mismatch",
            ));
        }
        let mut segments = Vec::new();
        let mut bytes = (meta_bytes.len() + index.len()) as u64;
        for n in 1.. {
            let path = dir.join("chunks").join(segment_name(n));
            if !path.exists() {
                break;
            }
            let m = map(&path)?;
            if m.len() < SEGMENT_HEADER || m[..4] != CHUNKS_MAGIC || m[4] != FORMAT_VERSION {
                return Err(BlockError::Corrupt {
                    path,
                    what: "not a version 1 kiln chunk segment".into(),
                });
            }
            bytes += m.len() as u64;
            segments.push(m);
        }
        let mut all = RoaringBitmap::new();
        all.insert_range(0..toc.series as u32);
        let block = Block {
            dir: dir.to_owned(),
            meta,
            index,
            segments,
            toc,
            all,
            bytes,
        };
        // Symbols are read on every lookup: check them all once, and that
        // they are sorted (lookups binary-search them).
        let mut prev: Option<&str> = None;
        for i in 0..block.toc.symbols as u32 {
            let s = block.symbol(i)?;
            if prev.is_some_and(|p| p >= s) {
                return Err(corrupt("symbols not sorted"));
            }
            prev = Some(s);
        }
        for i in 0..block.toc.pairs as usize {
            let (n, v, range, _) = block.posting_entry(i);
            if n as u64 >= block.toc.symbols || v as u64 >= block.toc.symbols || range.end > toc_at
            {
                return Err(corrupt("postings table entry out of bounds"));
            }
            if i > 0 && block.posting_entry(i - 1).0 > n {
                return Err(corrupt("postings table not sorted"));
            }
        }
        Ok(block)
    }

    /// The block's meta.
    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// The block's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of its files.
    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    fn corrupt(&self, what: impl Into<String>) -> SelectError {
        SelectError::Storage(format!(
            "corrupt block {}: {}",
            self.dir.display(),
            what.into()
        ))
    }

    /// Symbol `r`.
    fn symbol(&self, r: u32) -> Result<&str, BlockError> {
        let corrupt = |what: &str| BlockError::Corrupt {
            path: self.dir.join("index"),
            what: format!("symbol {r}: {what}"),
        };
        if u64::from(r) >= self.toc.symbols {
            return Err(corrupt("no such symbol"));
        }
        let at = le_u64(
            &self.index,
            (self.toc.symbol_table + u64::from(r) * 8) as usize,
        );
        let mut pos = usize::try_from(at).map_err(|_| corrupt("offset"))?;
        let len = get_uvarint(&self.index, &mut pos).ok_or_else(|| corrupt("bad length"))?;
        let end = pos
            .checked_add(len as usize)
            .filter(|&e| e <= self.index.len())
            .ok_or_else(|| corrupt("past the end"))?;
        std::str::from_utf8(&self.index[pos..end]).map_err(|_| corrupt("not UTF-8"))
    }

    /// The ref of symbol `s`, if the block has it. Symbols were checked at
    /// open, so reading one cannot fail here.
    fn find_symbol(&self, s: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0u32, self.toc.symbols as u32);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.symbol(mid).ok()?.cmp(s) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Postings table entry `i`: name ref, value ref, byte range, CRC.
    fn posting_entry(&self, i: usize) -> (u32, u32, Range<usize>, u32) {
        let at = self.toc.postings_table as usize + i * POSTING_ENTRY;
        let b = &self.index;
        let off = le_u64(b, at + 8) as usize;
        let len = le_u32(b, at + 16) as usize;
        (
            le_u32(b, at),
            le_u32(b, at + 4),
            off..off.saturating_add(len),
            le_u32(b, at + 20),
        )
    }

    /// The postings table entries of label name ref `n`.
    fn entries_of(&self, n: u32) -> Range<usize> {
        let pairs = self.toc.pairs as usize;
        let first = partition_point(pairs, |i| self.posting_entry(i).0 < n);
        let end = first + partition_point(pairs - first, |i| self.posting_entry(first + i).0 <= n);
        first..end
    }

    fn postings(&self, i: usize) -> Result<RoaringBitmap, SelectError> {
        let (_, _, range, crc) = self.posting_entry(i);
        let bytes = &self.index[range];
        if crc32c::crc32c(bytes) != crc {
            return Err(self.corrupt(format!("postings entry {i} checksum mismatch")));
        }
        RoaringBitmap::deserialize_from(bytes)
            .map_err(|e| self.corrupt(format!("postings entry {i}: {e}")))
    }

    /// Number of series.
    pub fn num_series(&self) -> u32 {
        // At most u32::MAX: checked at open.
        self.toc.series as u32
    }

    /// Labels and chunks of series `ord` (series are numbered from 0 in
    /// label order).
    pub fn series(&self, ord: u32) -> Result<(Labels, Vec<ChunkMeta>), SelectError> {
        let (mut refs, mut chunks) = (Vec::new(), Vec::new());
        self.entry(ord, &mut refs, &mut chunks)?;
        Ok((self.labels_of(ord, &refs)?, chunks))
    }

    /// Reads series `ord`'s entry, checksum verified, into `refs` (its
    /// label pairs as symbol refs) and `chunks`, both cleared first: the
    /// buffers are the caller's so that a loop over series allocates
    /// nothing, and labels are built ([`Block::labels_of`]) only when
    /// needed.
    fn entry(
        &self,
        ord: u32,
        refs: &mut Vec<(u32, u32)>,
        chunks: &mut Vec<ChunkMeta>,
    ) -> Result<(), SelectError> {
        let bad = |what: &str| self.corrupt(format!("series {ord}: {what}"));
        refs.clear();
        chunks.clear();
        if u64::from(ord) >= self.toc.series {
            return Err(bad("no such series"));
        }
        let at = le_u64(
            &self.index,
            (self.toc.series_table + u64::from(ord) * 8) as usize,
        );
        let mut pos = usize::try_from(at).map_err(|_| bad("offset"))?;
        let len = get_uvarint(&self.index, &mut pos).ok_or_else(|| bad("bad length"))? as usize;
        let body = pos
            .checked_add(len)
            .and_then(|e| e.checked_add(4))
            .filter(|&e| e <= self.index.len())
            .map(|_| &self.index[pos..pos + len])
            .ok_or_else(|| bad("past the end"))?;
        if crc32c::crc32c(body) != le_u32(&self.index, pos + len) {
            return Err(bad("checksum mismatch"));
        }
        let mut p = 0;
        let mut num = || get_uvarint(body, &mut p).ok_or_else(|| bad("truncated"));
        let sym = |r: u64| {
            u32::try_from(r)
                .ok()
                .filter(|&r| u64::from(r) < self.toc.symbols)
                .ok_or_else(|| bad("bad symbol"))
        };
        // Every count is bounded by the body: each item takes bytes of it.
        let n = num()?;
        for _ in 0..n {
            let (name, value) = (sym(num()?)?, sym(num()?)?);
            if refs.last().is_some_and(|&(last, _)| last >= name) {
                return Err(bad("label names not sorted"));
            }
            refs.push((name, value));
        }
        let n = num()?;
        let (mut prev_max, mut prev_ref) = (0i64, 0u64);
        for i in 0..n {
            let d = get_varint(body, &mut p).ok_or_else(|| bad("truncated"))?;
            let min_t = if i == 0 { d } else { prev_max.wrapping_add(d) };
            let span = get_uvarint(body, &mut p).ok_or_else(|| bad("truncated"))?;
            let max_t = min_t.wrapping_add(span as i64);
            let dr = get_varint(body, &mut p).ok_or_else(|| bad("truncated"))?;
            let chunk_ref = prev_ref.wrapping_add(dr as u64);
            chunks.push(ChunkMeta {
                min_t,
                max_t,
                chunk_ref,
            });
            (prev_max, prev_ref) = (max_t, chunk_ref);
        }
        Ok(())
    }

    /// The label set of series `ord` from its entry's symbol refs.
    fn labels_of(&self, ord: u32, refs: &[(u32, u32)]) -> Result<Labels, SelectError> {
        let bad = |what: &str| self.corrupt(format!("series {ord}: {what}"));
        let sym = |r: u32| {
            self.symbol(r)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("bad symbol"))
        };
        let pairs = refs
            .iter()
            .map(|&(n, v)| Ok((sym(n)?, sym(v)?)))
            .collect::<Result<Vec<_>, SelectError>>()?;
        Labels::from_sorted_unchecked(pairs).map_err(|e| bad(&e.to_string()))
    }

    /// The bytes of chunk `r`, checksum verified.
    pub fn chunk(&self, r: u64) -> Result<&[u8], SelectError> {
        let bad = |what: &str| self.corrupt(format!("chunk {r:#x}: {what}"));
        let seg = (r >> 32) as usize;
        let m = seg
            .checked_sub(1)
            .and_then(|i| self.segments.get(i))
            .ok_or_else(|| bad("no such segment"))?;
        let mut pos = (r & 0xffff_ffff) as usize;
        let len = get_uvarint(m, &mut pos).ok_or_else(|| bad("bad length"))? as usize;
        let end = pos
            .checked_add(len)
            .and_then(|e| e.checked_add(4))
            .filter(|&e| e <= m.len())
            .ok_or_else(|| bad("past the end"))?;
        let bytes = &m[pos..pos + len];
        if crc32c::crc32c(bytes) != le_u32(m, end - 4) {
            return Err(bad("checksum mismatch"));
        }
        Ok(bytes)
    }

    /// Whether the block's range meets `[mint, maxt]`.
    pub fn overlaps(&self, mint: i64, maxt: i64) -> bool {
        self.meta.min_time <= maxt && mint < self.meta.max_time
    }

    /// Series ordinals matching `matchers`, ascending (which is label
    /// order), when the block's range meets `[mint, maxt]`; they may have
    /// no sample in it (see [`Block::matching`]).
    fn matching_postings(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<RoaringBitmap, SelectError> {
        if !self.overlaps(mint, maxt) {
            return Ok(RoaringBitmap::new());
        }
        let src = BlockPostings {
            block: self,
            err: RefCell::new(None),
        };
        let ids = select_postings(&src, matchers);
        match src.err.into_inner() {
            Some(e) => Err(e),
            None => Ok(ids),
        }
    }

    /// Series ordinals matching `matchers` with a sample in `[mint, maxt]`,
    /// ascending (which is label order).
    fn matching(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<RoaringBitmap, SelectError> {
        let mut ids = self.matching_postings(matchers, mint, maxt)?;
        // Every series has a sample in the block's range: only a partial
        // overlap needs a look at the series' chunks.
        if mint > self.meta.min_time || maxt < self.meta.max_time.saturating_sub(1) {
            let mut keep = RoaringBitmap::new();
            let (mut refs, mut chunks) = (Vec::new(), Vec::new());
            for ord in &ids {
                self.entry(ord, &mut refs, &mut chunks)?;
                if self.has_sample_in(&chunks, mint, maxt)? {
                    keep.insert(ord);
                }
            }
            ids = keep;
        }
        Ok(ids)
    }

    /// Whether one of `chunks` holds a sample in `[mint, maxt]`: decided by
    /// the metas unless a chunk only partly overlaps the range.
    fn has_sample_in(
        &self,
        chunks: &[ChunkMeta],
        mint: i64,
        maxt: i64,
    ) -> Result<bool, SelectError> {
        for c in chunks.iter().filter(|c| c.min_t <= maxt && c.max_t >= mint) {
            if c.min_t >= mint || c.max_t <= maxt {
                // The chunk's first or last sample is inside.
                return Ok(true);
            }
            let bytes = self.chunk(c.chunk_ref)?;
            let mut it = ChunkIter::new(bytes).map_err(|e| self.corrupt(e.to_string()))?;
            if it
                .seek(mint)
                .map_err(|e| self.corrupt(e.to_string()))?
                .is_some_and(|(t, _)| t <= maxt)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Series matching `matchers` with their samples in the hints' range,
    /// sorted by labels; series without a sample in it are left out.
    pub fn select(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> Result<SeriesBatch, SelectError> {
        let (lo, hi) = (hints.mint, hints.maxt);
        // Series without a sample in the range push nothing below, so the
        // postings need no filtering by time first.
        let ids = self.matching_postings(matchers, lo, hi)?;
        let mut b = SeriesBatchBuilder::with_capacity(ids.len() as usize, 0);
        let (mut refs, mut chunks) = (Vec::new(), Vec::new());
        for ord in &ids {
            self.entry(ord, &mut refs, &mut chunks)?;
            let mut pushed = false;
            for c in chunks.iter().filter(|c| c.min_t <= hi && c.max_t >= lo) {
                let bytes = self.chunk(c.chunk_ref)?;
                let mut it = ChunkIter::new(bytes).map_err(|e| self.corrupt(e.to_string()))?;
                let mut next = it.seek(lo).map_err(|e| self.corrupt(e.to_string()))?;
                while let Some((t, v)) = next {
                    if t > hi {
                        break;
                    }
                    if b.sample_count() >= hints.max_samples {
                        return Err(SelectError::TooManySamples {
                            limit: hints.max_samples,
                        });
                    }
                    if !pushed {
                        // Built only for a series with a sample in range.
                        b.push_series(self.labels_of(ord, &refs)?);
                        pushed = true;
                    }
                    b.push_sample(t, v);
                    next = it.next_sample().map_err(|e| self.corrupt(e.to_string()))?;
                }
            }
        }
        Ok(b.finish())
    }

    /// Label sets of the series matching `matchers` with a chunk meeting
    /// `[mint, maxt]`, sorted.
    pub fn series_labels(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<Labels>, SelectError> {
        self.matching(matchers, mint, maxt)?
            .iter()
            .map(|ord| self.series(ord).map(|(l, _)| l))
            .collect()
    }

    /// Label names of the matching series, sorted.
    pub fn label_names(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, SelectError> {
        let ids = self.matching(matchers, mint, maxt)?;
        let mut names: Vec<String> = Vec::new();
        if ids.len() == self.toc.series {
            // Every series: the names are the postings table's.
            let mut i = 0;
            while i < self.toc.pairs as usize {
                let n = self.posting_entry(i).0;
                names.push(
                    self.symbol(n)
                        .map_err(|e| self.corrupt(e.to_string()))?
                        .to_owned(),
                );
                i = self.entries_of(n).end;
            }
        } else {
            for ord in &ids {
                let (labels, _) = self.series(ord)?;
                names.extend(labels.iter().map(|l| l.name.to_owned()));
            }
            names.sort_unstable();
            names.dedup();
        }
        Ok(names)
    }

    /// Values of label `name` over the matching series, sorted.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<String>, SelectError> {
        let ids = self.matching(matchers, mint, maxt)?;
        let Some(n) = self.find_symbol(name) else {
            return Ok(Vec::new());
        };
        let all = ids.len() == self.toc.series;
        let mut values = Vec::new();
        for i in self.entries_of(n) {
            if all || !self.postings(i)?.is_disjoint(&ids) {
                let v = self.posting_entry(i).1;
                values.push(
                    self.symbol(v)
                        .map_err(|e| self.corrupt(e.to_string()))?
                        .to_owned(),
                );
            }
        }
        Ok(values)
    }
}

/// The first `i` in `0..n` for which `pred` is false (`pred` must be true
/// then false along the range).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A block's postings for matcher evaluation; the first read error is kept
/// in `err` (the evaluation itself cannot fail), and the caller reports it.
struct BlockPostings<'a> {
    block: &'a Block,
    err: RefCell<Option<SelectError>>,
}

impl BlockPostings<'_> {
    fn read(&self, i: usize, f: &mut dyn FnMut(&RoaringBitmap)) {
        match self.block.postings(i) {
            Ok(ids) => f(&ids),
            Err(e) => {
                self.err.borrow_mut().get_or_insert(e);
            }
        }
    }
}

impl PostingsSource for BlockPostings<'_> {
    fn all(&self) -> &RoaringBitmap {
        &self.block.all
    }

    fn with_exact(&self, name: &str, value: &str, f: &mut dyn FnMut(&RoaringBitmap)) {
        let b = self.block;
        let (Some(n), Some(v)) = (b.find_symbol(name), b.find_symbol(value)) else {
            return;
        };
        let range = b.entries_of(n);
        let i =
            range.start + partition_point(range.len(), |i| b.posting_entry(range.start + i).1 < v);
        if i < range.end && b.posting_entry(i).1 == v {
            self.read(i, f);
        }
    }

    fn with_values(
        &self,
        name: &str,
        keep: &mut dyn FnMut(&str) -> bool,
        f: &mut dyn FnMut(&RoaringBitmap),
    ) {
        let b = self.block;
        let Some(n) = b.find_symbol(name) else {
            return;
        };
        for i in b.entries_of(n) {
            // Value refs were checked at open.
            let Ok(v) = b.symbol(b.posting_entry(i).1) else {
                continue;
            };
            if keep(v) {
                self.read(i, f);
            }
        }
    }
}

/// Writes one block holding every series of `sources` (blocks that do not
/// overlap, in any order) under `parent`, copying chunks as they are: the
/// merge of Prometheus's compaction. Its range spans the sources', its
/// level is one more than their highest, its sources are theirs.
pub fn merge_blocks(
    sources: &[&Block],
    parent: &Path,
    force_pwrite: bool,
) -> Result<(PathBuf, BlockMeta), BlockError> {
    let mut sources: Vec<&Block> = sources.to_vec();
    sources.sort_by_key(|b| b.meta.min_time);
    let (Some(first), Some(last)) = (sources.first(), sources.last()) else {
        return Err(BlockError::Corrupt {
            path: parent.to_owned(),
            what: "a merge needs at least one block".into(),
        });
    };
    let level = sources
        .iter()
        .map(|b| b.meta.compaction.level)
        .max()
        .unwrap_or(1)
        + 1;
    let mut lineage: Vec<String> = sources
        .iter()
        .flat_map(|b| b.meta.compaction.sources.iter().cloned())
        .collect();
    lineage.sort_unstable();
    lineage.dedup();
    let mut w = BlockWriter::new(
        parent,
        first.meta.min_time,
        last.meta.max_time,
        level,
        lineage,
        force_pwrite,
    )?;
    let failed = |b: &Block, e: SelectError| BlockError::Corrupt {
        path: b.dir.clone(),
        what: e.to_string(),
    };
    // One cursor per source: its next series (ordinal, labels, chunks).
    let mut cursors: Vec<Option<(u32, Labels, Vec<ChunkMeta>)>> = Vec::new();
    for b in &sources {
        cursors.push(if b.num_series() > 0 {
            let (l, c) = b.series(0).map_err(|e| failed(b, e))?;
            Some((0, l, c))
        } else {
            None
        });
    }
    while let Some(least) = cursors.iter().flatten().map(|c| &c.1).min().cloned() {
        let mut chunks: Vec<(i64, i64, &[u8])> = Vec::new();
        for (b, cursor) in sources.iter().zip(cursors.iter_mut()) {
            let Some((ord, labels, metas)) = cursor.as_ref() else {
                continue;
            };
            if *labels != least {
                continue;
            }
            for m in metas {
                chunks.push((
                    m.min_t,
                    m.max_t,
                    b.chunk(m.chunk_ref).map_err(|e| failed(b, e))?,
                ));
            }
            let next = ord + 1;
            *cursor = if next < b.num_series() {
                let (l, c) = b.series(next).map_err(|e| failed(b, e))?;
                Some((next, l, c))
            } else {
                None
            };
        }
        w.add_series(least, chunks)?;
    }
    w.finish()
}
