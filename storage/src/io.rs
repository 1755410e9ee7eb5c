//! Aligned, append-only file writing for the WAL and for block files:
//! 4 KiB-aligned O_DIRECT writes submitted through io_uring, or through
//! `pwrite` where io_uring is refused or disabled.
//!
//! A [`LogFile`] keeps the bytes not yet on disk in an aligned buffer that
//! starts at a block boundary of the file. Writing out sends whole blocks,
//! the last one zero-padded, and keeps that partial last block in the
//! buffer: the next write-out rewrites it, longer. So the file always reads
//! as records followed by zeros, and a crash mid-write leaves a prefix of
//! the records plus a torn or zero tail, which replay detects.
//!
//! Invariants:
//! * `buf` starts at file offset `block_start`, a multiple of [`BLOCK`];
//! * the bytes of `buf` past `len` are zero (they become the padding);
//! * every write is [`BLOCK`]-aligned in memory, offset and length.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{IoUring, opcode, types};

use crate::wal::NO_IO_URING_ENV;

/// The alignment of O_DIRECT I/O.
pub(crate) const BLOCK: usize = 4096;

/// Entries of the io_uring submission queue: one write is in flight at a
/// time, so a tiny ring keeps locked memory far under the 8 MiB limit.
const RING_ENTRIES: u32 = 4;

/// How writes reach the disk.
pub(crate) enum Io {
    /// io_uring `IORING_OP_WRITE`, one in flight.
    Uring(Box<IoUring>),
    /// `pwrite(2)`.
    Pwrite,
}

impl Io {
    /// io_uring unless forced off (`force_pwrite`, or the environment
    /// variable [`NO_IO_URING_ENV`] set to `1`) or refused by the kernel;
    /// a refusal is logged once per process (the WAL's counters say it
    /// per shard).
    pub(crate) fn new(force_pwrite: bool) -> Io {
        if force_pwrite || std::env::var(NO_IO_URING_ENV).is_ok_and(|v| v == "1") {
            return Io::Pwrite;
        }
        match IoUring::new(RING_ENTRIES) {
            Ok(ring) => Io::Uring(Box::new(ring)),
            Err(e) => {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    log::warn!("storage: io_uring unavailable ({e}); writing with pwrite instead");
                }
                Io::Pwrite
            }
        }
    }

    /// Whether writes go through io_uring.
    pub(crate) fn is_uring(&self) -> bool {
        matches!(self, Io::Uring(_))
    }

    /// Writes all of `buf` at `offset`.
    fn write_all_at(&mut self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let ring = match self {
            Io::Pwrite => return file.write_all_at(buf, offset),
            Io::Uring(ring) => ring,
        };
        let mut done = 0usize;
        while done < buf.len() {
            let part = &buf[done..];
            let len = part.len().min(1 << 30) as u32;
            let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), part.as_ptr(), len)
                .offset(offset + done as u64)
                .build();
            // SAFETY: the buffer and the file outlive the operation: we wait
            // for its completion below before returning or touching `buf`.
            unsafe { ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            ring.submit_and_wait(1)?;
            let cqe = ring
                .completion()
                .next()
                .ok_or_else(|| io::Error::other("io_uring completion missing"))?;
            let res = cqe.result();
            if res < 0 {
                return Err(io::Error::from_raw_os_error(-res));
            }
            if res == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "io_uring wrote 0 bytes",
                ));
            }
            done += res as usize;
        }
        Ok(())
    }
}

/// A zeroed buffer whose usable region is [`BLOCK`]-aligned.
struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
}

impl AlignedBuf {
    fn with_capacity(cap: usize) -> Self {
        let raw = vec![0u8; cap + BLOCK];
        let off = raw.as_ptr().align_offset(BLOCK);
        AlignedBuf { raw, off }
    }

    fn capacity(&self) -> usize {
        self.raw.len() - BLOCK
    }

    fn region(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.capacity()]
    }

    fn region_mut(&mut self) -> &mut [u8] {
        let cap = self.capacity();
        &mut self.raw[self.off..self.off + cap]
    }
}

/// One append-only file. See the module documentation.
pub(crate) struct LogFile {
    file: File,
    path: PathBuf,
    block_start: u64,
    buf: AlignedBuf,
    len: usize,
    /// Bytes of `buf` already on disk (a prefix).
    flushed: usize,
}

fn round_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

impl LogFile {
    /// Creates `path` (which must not exist) for writing.
    pub(crate) fn create(path: &Path) -> io::Result<LogFile> {
        let file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => f,
            // Some file systems (tmpfs, some overlays) refuse O_DIRECT.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::warn!(
                    "storage: {} does not support O_DIRECT; using buffered writes",
                    path.display()
                );
                let _ = std::fs::remove_file(path);
                OpenOptions::new().write(true).create_new(true).open(path)?
            }
            Err(e) => return Err(e),
        };
        Ok(LogFile {
            file,
            path: path.to_owned(),
            block_start: 0,
            buf: AlignedBuf::with_capacity(1 << 20),
            len: 0,
            flushed: 0,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of records appended so far (written out or not).
    pub(crate) fn logical_len(&self) -> u64 {
        self.block_start + self.len as u64
    }

    /// Bytes appended but not yet written out.
    pub(crate) fn unwritten(&self) -> usize {
        self.len - self.flushed
    }

    /// Appends bytes to the buffer (no I/O).
    pub(crate) fn append(&mut self, data: &[u8]) {
        if self.len + data.len() > self.buf.capacity() {
            let mut bigger = AlignedBuf::with_capacity(round_up((self.len + data.len()) * 2));
            bigger.region_mut()[..self.len].copy_from_slice(&self.buf.region()[..self.len]);
            self.buf = bigger;
        }
        self.buf.region_mut()[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    /// Writes every buffered byte to the file (not synced), keeping the
    /// partial last block for the next write-out.
    pub(crate) fn write_out(&mut self, io: &mut Io) -> io::Result<()> {
        if self.flushed == self.len {
            return Ok(());
        }
        // Rewrite from the block holding the first unwritten byte.
        let from = self.flushed / BLOCK * BLOCK;
        let to = round_up(self.len);
        io.write_all_at(
            &self.file,
            &self.buf.region()[from..to],
            self.block_start + from as u64,
        )?;
        self.flushed = self.len;
        let keep_from = self.len / BLOCK * BLOCK;
        if keep_from > 0 {
            let tail = self.len - keep_from;
            let region = self.buf.region_mut();
            region.copy_within(keep_from..self.len, 0);
            region[tail..self.len].fill(0);
            self.block_start += keep_from as u64;
            self.len = tail;
            self.flushed = tail;
        }
        Ok(())
    }

    /// Makes written data durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Writes out, cuts the zero padding, syncs, and closes.
    pub(crate) fn finish(mut self, io: &mut Io) -> io::Result<()> {
        self.write_out(io)?;
        self.cut_and_sync()
    }

    /// Cuts the zero padding after a write-out and syncs; nothing may be
    /// appended afterwards.
    pub(crate) fn cut_and_sync(&self) -> io::Result<()> {
        self.file.set_len(self.logical_len())?;
        self.file.sync_all()
    }
}

/// Fsyncs a directory so renames and creations in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_through(io: &mut Io) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = LogFile::create(&path).unwrap();
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let piece: Vec<u8> = (0..(i % 17 + 1)).map(|j| (i + j) as u8 | 1).collect();
            f.append(&piece);
            want.extend_from_slice(&piece);
            if i % 100 == 0 {
                f.write_out(io).unwrap();
                // On disk: everything so far, then zeros to a block boundary.
                let disk = std::fs::read(&path).unwrap();
                assert_eq!(&disk[..want.len()], &want[..]);
                assert!(disk[want.len()..].iter().all(|&b| b == 0));
                assert_eq!(disk.len() % BLOCK, 0);
            }
        }
        assert_eq!(f.logical_len(), want.len() as u64);
        f.finish(io).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn pwrite_path_writes_records_then_zeros() {
        write_through(&mut Io::new(true));
    }

    #[test]
    fn io_uring_path_writes_records_then_zeros() {
        let mut io = Io::new(false);
        // Where the kernel refuses io_uring the fallback is what runs; the
        // pwrite test covers it, and this one still checks the data.
        write_through(&mut io);
    }
}
