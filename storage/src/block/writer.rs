//! Writing a block: chunk segments while series are added (in any order),
//! then, at [`BlockWriter::finish`], the index (series sorted by labels),
//! `meta.json`, fsyncs and the rename that makes the block visible.
//!
//! Every file goes through [`LogFile`]: 4 KiB-aligned O_DIRECT writes by
//! io_uring, or pwrite where io_uring is refused or forced off.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use roaring::RoaringBitmap;

use super::{
    BlockCompaction, BlockError, BlockMeta, BlockStats, CHUNKS_MAGIC, FORMAT_VERSION, INDEX_MAGIC,
    SEGMENT_BYTES, chunk_samples, io_err, segment_name,
};
use crate::io::{Io, LogFile, sync_dir};
use crate::labels::Labels;
use crate::varint::{put_uvarint, put_varint};

/// Write out a segment's buffer once this much has gathered.
const WRITE_OUT_BYTES: usize = 4 << 20;

/// A series added to the writer: its labels and its encoded chunk metas.
struct Pending {
    labels: Labels,
    /// Range of `BlockWriter::metas` holding the chunk count and metas.
    metas: Range<usize>,
}

/// Builds one block in `<parent>/<ulid>.tmp/`. See the module docs.
pub struct BlockWriter {
    parent: PathBuf,
    ulid: ulid::Ulid,
    tmp: PathBuf,
    io: Io,
    segment: LogFile,
    /// Number of the open segment (from 1).
    segment_no: u32,
    pending: Vec<Pending>,
    /// Chunk metas of all pending series, varint encoded (see the format).
    metas: Vec<u8>,
    meta: BlockMeta,
    /// Reused per series: its chunks' times, references and sample counts.
    entries: Vec<(i64, i64, u64, u64)>,
    /// Reused per chunk: its record's length prefix.
    prefix: Vec<u8>,
}

impl BlockWriter {
    /// Starts a block for `[min_time, max_time)` under `parent`, made of
    /// `sources` at compaction `level` (a block cut from the head is level
    /// 1 and its own source).
    pub fn new(
        parent: &Path,
        min_time: i64,
        max_time: i64,
        level: u32,
        sources: Vec<String>,
        force_pwrite: bool,
    ) -> Result<BlockWriter, BlockError> {
        let ulid = ulid::Ulid::generate();
        let tmp = parent.join(format!("{ulid}.tmp"));
        fs::create_dir_all(tmp.join("chunks")).map_err(io_err(&tmp))?;
        let io = Io::new(force_pwrite);
        let segment = new_segment(&tmp, 1)?;
        let sources = if sources.is_empty() {
            vec![ulid.to_string()]
        } else {
            sources
        };
        Ok(BlockWriter {
            parent: parent.to_owned(),
            ulid,
            tmp,
            io,
            segment,
            segment_no: 1,
            pending: Vec::new(),
            metas: Vec::new(),
            meta: BlockMeta {
                ulid: ulid.to_string(),
                min_time,
                max_time,
                stats: BlockStats::default(),
                compaction: BlockCompaction { level, sources },
                version: 1,
            },
            entries: Vec::new(),
            prefix: Vec::with_capacity(10),
        })
    }

    /// Series added so far.
    pub fn series(&self) -> usize {
        self.pending.len()
    }

    /// Adds a series with its chunks (time ordered, not overlapping, each
    /// `(min_t, max_t, bytes)` in [`crate::chunk`]'s encoding). A series
    /// with no chunk is skipped; a label set must be added once.
    pub fn add_series<'c>(
        &mut self,
        labels: Labels,
        chunks: impl IntoIterator<Item = (i64, i64, &'c [u8])>,
    ) -> Result<(), BlockError> {
        let mut entries = std::mem::take(&mut self.entries);
        entries.clear();
        for (min_t, max_t, bytes) in chunks {
            match self.write_chunk(bytes) {
                Ok(r) => entries.push((min_t, max_t, r, u64::from(chunk_samples(bytes)))),
                Err(e) => {
                    self.entries = entries;
                    return Err(e);
                }
            }
        }
        if entries.is_empty() {
            self.entries = entries;
            return Ok(());
        }
        let start = self.metas.len();
        put_uvarint(&mut self.metas, entries.len() as u64);
        let (mut prev_max, mut prev_ref) = (0i64, 0u64);
        for (i, &(min_t, max_t, r, samples)) in entries.iter().enumerate() {
            if i == 0 {
                put_varint(&mut self.metas, min_t);
            } else {
                put_varint(&mut self.metas, min_t.wrapping_sub(prev_max));
            }
            put_uvarint(&mut self.metas, max_t.wrapping_sub(min_t) as u64);
            put_varint(&mut self.metas, r.wrapping_sub(prev_ref) as i64);
            (prev_max, prev_ref) = (max_t, r);
            self.meta.stats.num_samples += samples;
        }
        self.meta.stats.num_chunks += entries.len() as u64;
        self.entries = entries;
        self.pending.push(Pending {
            labels,
            metas: start..self.metas.len(),
        });
        Ok(())
    }

    /// Abandons the block, removing what was written of it.
    pub fn discard(self) -> Result<(), BlockError> {
        let tmp = self.tmp.clone();
        drop(self);
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))
    }

    /// Appends one chunk record to the open segment; returns its reference.
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<u64, BlockError> {
        let record = varint_len(bytes.len() as u64) + bytes.len() + 4;
        if self.segment.logical_len() + record as u64 > SEGMENT_BYTES
            && self.segment.logical_len() > super::SEGMENT_HEADER as u64
        {
            self.segment_no += 1;
            let next = new_segment(&self.tmp, self.segment_no)?;
            let done = std::mem::replace(&mut self.segment, next);
            let path = done.path().to_owned();
            done.finish(&mut self.io).map_err(io_err(&path))?;
        }
        let offset = self.segment.logical_len();
        self.prefix.clear();
        put_uvarint(&mut self.prefix, bytes.len() as u64);
        self.segment.append(&self.prefix);
        self.segment.append(bytes);
        self.segment.append(&crc32c::crc32c(bytes).to_le_bytes());
        if self.segment.unwritten() >= WRITE_OUT_BYTES {
            let path = self.segment.path().to_owned();
            self.segment
                .write_out(&mut self.io)
                .map_err(io_err(&path))?;
        }
        Ok((u64::from(self.segment_no) << 32) | offset)
    }

    /// Writes the index and `meta.json`, syncs, and renames the block into
    /// place; returns its directory and meta. On any error the `.tmp`
    /// directory is removed (or, failing that, at the next open).
    pub fn finish(self) -> Result<(PathBuf, BlockMeta), BlockError> {
        let tmp = self.tmp.clone();
        self.write_all().inspect_err(|_| {
            // Best effort: opening the parent removes it otherwise.
            let _ = fs::remove_dir_all(&tmp);
        })
    }

    fn write_all(mut self) -> Result<(PathBuf, BlockMeta), BlockError> {
        let seg_path = self.segment.path().to_owned();
        self.segment
            .write_out(&mut self.io)
            .and_then(|()| self.segment.cut_and_sync())
            .map_err(io_err(&seg_path))?;
        self.pending
            .sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        self.meta.stats.num_series = self.pending.len() as u64;
        self.write_index()?;
        let meta_path = self.tmp.join("meta.json");
        let json = serde_json::to_vec_pretty(&self.meta).map_err(|e| BlockError::Corrupt {
            path: meta_path.clone(),
            what: e.to_string(),
        })?;
        let mut f = LogFile::create(&meta_path).map_err(io_err(&meta_path))?;
        f.append(&json);
        f.finish(&mut self.io).map_err(io_err(&meta_path))?;
        let chunks = self.tmp.join("chunks");
        sync_dir(&chunks).map_err(io_err(&chunks))?;
        sync_dir(&self.tmp).map_err(io_err(&self.tmp))?;
        let dir = self.parent.join(self.ulid.to_string());
        fs::rename(&self.tmp, &dir).map_err(io_err(&dir))?;
        sync_dir(&self.parent).map_err(io_err(&self.parent))?;
        Ok((dir, self.meta))
    }

    fn write_index(&mut self) -> Result<(), BlockError> {
        let path = self.tmp.join("index");
        let mut f = LogFile::create(&path).map_err(io_err(&path))?;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(&INDEX_MAGIC);
        buf.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0]);

        // Symbols: every name and value, sorted, so that the order of refs
        // is the order of strings.
        // Deduplicated while collected: series repeat names and values
        // many times over.
        let unique: HashSet<&str> = self
            .pending
            .iter()
            .flat_map(|p| p.labels.iter().flat_map(|l| [l.name, l.value]))
            .collect();
        let mut symbols: Vec<&str> = unique.into_iter().collect();
        symbols.sort_unstable();
        let refs: HashMap<&str, u32> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, i as u32))
            .collect();
        let mut table: Vec<u64> = Vec::with_capacity(symbols.len());
        let mut at = 0u64;
        // Checksums of the symbols with their table, of the series table
        // and of the postings table (series entries and postings carry
        // their own).
        let (mut symbols_crc, mut series_crc, mut postings_crc) = (0u32, 0u32, 0u32);
        let mut item = Vec::with_capacity(64);
        for s in &symbols {
            table.push(at + buf.len() as u64);
            item.clear();
            put_uvarint(&mut item, s.len() as u64);
            item.extend_from_slice(s.as_bytes());
            symbols_crc = crc32c::crc32c_append(symbols_crc, &item);
            buf.extend_from_slice(&item);
            spill(&mut f, &mut buf, &mut at, &mut self.io)?;
        }
        let symbol_table = at + buf.len() as u64;
        for off in &table {
            symbols_crc = crc32c::crc32c_append(symbols_crc, &off.to_le_bytes());
            buf.extend_from_slice(&off.to_le_bytes());
            spill(&mut f, &mut buf, &mut at, &mut self.io)?;
        }

        // Series, in label order; the ordinal is the series' id in postings.
        let mut postings: HashMap<(u32, u32), RoaringBitmap> = HashMap::new();
        let mut series_table: Vec<u64> = Vec::with_capacity(self.pending.len());
        let mut body = Vec::with_capacity(256);
        for (ord, p) in self.pending.iter().enumerate() {
            body.clear();
            put_uvarint(&mut body, p.labels.len() as u64);
            for l in p.labels.iter() {
                let (n, v) = (refs[l.name], refs[l.value]);
                put_uvarint(&mut body, u64::from(n));
                put_uvarint(&mut body, u64::from(v));
                postings.entry((n, v)).or_default().insert(ord as u32);
            }
            body.extend_from_slice(&self.metas[p.metas.clone()]);
            series_table.push(at + buf.len() as u64);
            put_uvarint(&mut buf, body.len() as u64);
            buf.extend_from_slice(&body);
            buf.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            spill(&mut f, &mut buf, &mut at, &mut self.io)?;
        }
        let series_table_at = at + buf.len() as u64;
        for off in &series_table {
            series_crc = crc32c::crc32c_append(series_crc, &off.to_le_bytes());
            buf.extend_from_slice(&off.to_le_bytes());
            spill(&mut f, &mut buf, &mut at, &mut self.io)?;
        }

        // Postings, by (name, value) in string order.
        let mut pairs: Vec<((u32, u32), RoaringBitmap)> = postings.into_iter().collect();
        pairs.sort_unstable_by_key(|(k, _)| *k);
        let mut entries = Vec::with_capacity(pairs.len());
        let mut ser = Vec::new();
        for ((n, v), ids) in &pairs {
            ser.clear();
            ids.serialize_into(&mut ser).map_err(io_err(&path))?;
            entries.push((
                *n,
                *v,
                at + buf.len() as u64,
                ser.len() as u32,
                crc32c::crc32c(&ser),
            ));
            buf.extend_from_slice(&ser);
            spill(&mut f, &mut buf, &mut at, &mut self.io)?;
        }
        let postings_table = at + buf.len() as u64;
        for (n, v, off, len, crc) in entries {
            item.clear();
            item.extend_from_slice(&n.to_le_bytes());
            item.extend_from_slice(&v.to_le_bytes());
            item.extend_from_slice(&off.to_le_bytes());
            item.extend_from_slice(&len.to_le_bytes());
            item.extend_from_slice(&crc.to_le_bytes());
            postings_crc = crc32c::crc32c_append(postings_crc, &item);
            buf.extend_from_slice(&item);
            spill(&mut f, &mut buf, &mut at, &mut self.io)?;
        }

        let toc_at = buf.len();
        for x in [
            symbols.len() as u64,
            symbol_table,
            series_table.len() as u64,
            series_table_at,
            pairs.len() as u64,
            postings_table,
        ] {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        for c in [symbols_crc, series_crc, postings_crc] {
            buf.extend_from_slice(&c.to_le_bytes());
        }
        let crc = crc32c::crc32c(&buf[toc_at..]);
        buf.extend_from_slice(&crc.to_le_bytes());
        f.append(&buf);
        f.finish(&mut self.io).map_err(io_err(&path))
    }
}

/// Moves `buf` into the file's buffer (and out to disk) once it is large;
/// `at` counts the bytes moved so far, so `at + buf.len()` is the offset of
/// the next byte.
fn spill(f: &mut LogFile, buf: &mut Vec<u8>, at: &mut u64, io: &mut Io) -> Result<(), BlockError> {
    if buf.len() >= 1 << 16 {
        f.append(buf);
        *at += buf.len() as u64;
        buf.clear();
        if f.unwritten() >= WRITE_OUT_BYTES {
            let path = f.path().to_owned();
            f.write_out(io).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

fn new_segment(tmp: &Path, n: u32) -> Result<LogFile, BlockError> {
    let path = tmp.join("chunks").join(segment_name(n));
    let mut f = LogFile::create(&path).map_err(io_err(&path))?;
    f.append(&CHUNKS_MAGIC);
    f.append(&[FORMAT_VERSION, 0, 0, 0]);
    Ok(f)
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}
