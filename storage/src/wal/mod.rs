//! The write-ahead log of one head: segmented, checksummed, written by a
//! background thread so that a commit never waits for the disk.
//!
//! Layout of a WAL directory (byte formats in `docs/storage-format.md`):
//! * `00000000`, `00000001`, …: segments of records, each at most
//!   `segment_bytes` (one oversized batch may exceed it);
//! * `checkpoint.NNNNNNNN`: the live series and their chunks when the head
//!   was last truncated, replacing every segment below `NNNNNNNN`;
//! * `lock`: held with `flock` while a head has the directory open, so a
//!   second head (or process) gets [`WalError::Locked`].
//!
//! Durability: a commit encodes its records and hands them to the writer
//! thread. The writer writes them out when 1 MiB has gathered and, every
//! `flush_interval` (default 1 s), writes out and fsyncs. A crash can
//! therefore lose the commits of the last `flush_interval` (plus the time
//! of one write): that interval is the data-loss window. `Head::sync_wal`
//! closes it on demand (shutdown).
//!
//! Back-pressure: at most [`MAX_PENDING_BYTES`] may wait for the writer. A
//! commit that would exceed it blocks until the writer catches up — only
//! when the disk is slower than ingest for that many bytes.
//!
//! Write errors (a full disk): the writer keeps the unwritten bytes, retries
//! them every interval, and until a retry succeeds every commit fails with
//! [`WalError::WriteFailed`] and adds nothing; reads are unaffected.
//!
//! Replay: the newest checkpoint, then the segments from its number on, one
//! record at a time (memory bounded by one record, at most 16 MiB). At the
//! first torn or corrupt record the segment is truncated there, later
//! segments are deleted, a warning is logged and counted; everything before
//! is kept. Writing then resumes in a new segment.

mod record;

use std::fs;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

use crate::chunk::ChunkError;
use crate::labels::Labels;
pub(crate) use record::WalRecord;
use record::{HEADER_LEN, RecordBuf, crc_ok, decode, parse_header};

use crate::io::{Io, LogFile, sync_dir};

/// At most this many bytes wait for the writer thread; see the module docs.
pub const MAX_PENDING_BYTES: u64 = 64 << 20;

/// Environment variable that forces the pwrite fallback (WAL and blocks)
/// when set to `1`.
pub const NO_IO_URING_ENV: &str = "KILN_WAL_NO_IO_URING";

/// Typical encoded size of one sample (id, time delta, value), to size
/// commit buffers in one allocation.
const SAMPLE_BYTES_ESTIMATE: usize = 14;

/// Write out without waiting for the timer once this much is buffered.
const WRITE_OUT_BYTES: usize = 1 << 20;

/// WAL configuration.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// How often buffered records are written and fsynced: the crash
    /// data-loss window. Default 1 s.
    pub flush_interval: Duration,
    /// Segment size. Default 128 MiB.
    pub segment_bytes: u64,
    /// Write with pwrite even where io_uring works (also forced by the
    /// environment variable `KILN_WAL_NO_IO_URING=1`).
    pub force_pwrite: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            flush_interval: Duration::from_secs(1),
            segment_bytes: 128 << 20,
            force_pwrite: false,
        }
    }
}

/// What replay found.
#[derive(Debug, Default)]
pub struct ReplayStats {
    /// Series in the head after replay.
    pub series: usize,
    /// Samples replayed into the head.
    pub samples: u64,
    /// Bytes cut from the torn or corrupt tail (0 when clean).
    pub truncated_bytes: u64,
    /// Corrupt records found (0 or 1: replay stops at the first).
    pub corrupt_records: u64,
}

/// WAL failures.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("WAL I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The writer could not write (`kind` is `StorageFull` on a full disk);
    /// commits fail until a retry succeeds.
    #[error("WAL write failed ({kind:?}): {message}; appends are refused until it succeeds")]
    WriteFailed {
        /// The I/O error kind.
        kind: ErrorKind,
        /// Its description.
        message: String,
    },
    /// The writer thread is gone (it panicked or was shut down).
    #[error("WAL writer thread stopped")]
    WriterGone,
    /// A record decoded to something the head cannot accept.
    #[error("invalid WAL record: {0}")]
    Invalid(String),
    /// A checkpoint chunk does not decode.
    #[error("corrupt chunk in WAL: {0}")]
    Chunk(#[from] ChunkError),
    /// Another head (in this or another process) has the directory open.
    #[error("WAL directory {0} is in use by another head")]
    Locked(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Messages to the writer thread.
enum Msg {
    Data(Vec<u8>),
    Sync(Sender<Result<(), WalError>>),
    /// Close the segment, start the next one, `n`, and open checkpoint `n`.
    CheckpointBegin,
    CheckpointData(Vec<u8>),
    /// Finish the checkpoint when `true` (rename it into place and delete
    /// what it replaces), discard it when `false` (it is incomplete).
    CheckpointEnd(bool, Sender<Result<(), WalError>>),
}

/// State shared by the head's thread and the writer thread.
#[derive(Default)]
struct Shared {
    state: Mutex<SharedState>,
    drained: Condvar,
}

#[derive(Default)]
struct SharedState {
    pending: u64,
    error: Option<(ErrorKind, String)>,
}

/// A head's WAL. See the module documentation.
pub(crate) struct Wal {
    /// Holds the directory's `lock` file, `flock`ed, for the WAL's life.
    _lock: fs::File,
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    io_uring: bool,
}

fn segment_name(n: u64) -> String {
    format!("{n:08}")
}

fn checkpoint_name(n: u64) -> String {
    format!("checkpoint.{n:08}")
}

/// Segments and checkpoints found in a directory.
fn list(dir: &Path) -> Result<(Vec<u64>, Vec<u64>), WalError> {
    let mut segments = Vec::new();
    let mut checkpoints = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("checkpoint.") {
            if let Some(tmp) = n.strip_suffix(".tmp") {
                // An unfinished checkpoint: the segments it would replace
                // are still there.
                if tmp.parse::<u64>().is_ok() {
                    let p = entry.path();
                    fs::remove_file(&p).map_err(io_err(&p))?;
                }
            } else if let Ok(n) = n.parse() {
                checkpoints.push(n);
            }
        } else if name.len() == 8
            && let Ok(n) = name.parse()
        {
            segments.push(n);
        }
    }
    segments.sort_unstable();
    checkpoints.sort_unstable();
    Ok((segments, checkpoints))
}

/// Takes an exclusive `flock` on `dir/lock`, so that two heads never
/// write one WAL; the kernel releases it when the process dies.
fn lock_dir(dir: &Path) -> Result<fs::File, WalError> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == ErrorKind::WouldBlock {
            WalError::Locked(dir.to_owned())
        } else {
            WalError::Io { path, source: e }
        });
    }
    Ok(file)
}

/// How reading one file ended.
enum FileEnd {
    /// All records read; the rest (if any) is zero padding.
    Clean,
    /// A torn or corrupt record starts at this offset.
    Corrupt(u64, String),
}

/// Reads records of `path`, calling `apply` for each.
fn replay_file(
    path: &Path,
    apply: &mut dyn FnMut(WalRecord<'_>) -> Result<(), WalError>,
) -> Result<FileEnd, WalError> {
    let file = fs::File::open(path).map_err(io_err(path))?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut payload = Vec::new();
    let mut header = [0u8; HEADER_LEN];
    loop {
        let got = read_full(&mut r, &mut header).map_err(io_err(path))?;
        if got == 0 {
            return Ok(FileEnd::Clean);
        }
        if header[..got].iter().all(|&b| b == 0) && rest_is_zero(&mut r).map_err(io_err(path))? {
            return Ok(FileEnd::Clean);
        }
        if got < HEADER_LEN {
            return Ok(FileEnd::Corrupt(offset, "torn record header".into()));
        }
        let Some((ty, len, crc)) = parse_header(&header) else {
            return Ok(FileEnd::Corrupt(offset, "bad record header".into()));
        };
        payload.resize(len, 0);
        if read_full(&mut r, &mut payload).map_err(io_err(path))? < len {
            return Ok(FileEnd::Corrupt(offset, "torn record".into()));
        }
        if !crc_ok(ty, &payload, crc) {
            return Ok(FileEnd::Corrupt(offset, "checksum mismatch".into()));
        }
        if let Err(e) = decode(ty, &payload).and_then(&mut *apply) {
            return Ok(FileEnd::Corrupt(offset, e.to_string()));
        }
        offset += (HEADER_LEN + len) as u64;
    }
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn rest_is_zero(r: &mut impl Read) -> std::io::Result<bool> {
    let mut buf = [0u8; 8192];
    loop {
        let n = read_full(r, &mut buf)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        if n < buf.len() {
            return Ok(true);
        }
    }
}

impl Wal {
    /// Replays `dir` (created if missing) through `apply`, then starts the
    /// writer on a fresh segment.
    pub(crate) fn open(
        dir: &Path,
        opts: WalOptions,
        mut apply: impl FnMut(WalRecord<'_>) -> Result<(), WalError>,
    ) -> Result<(Wal, ReplayStats), WalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock_dir(dir)?;
        let (segments, checkpoints) = list(dir)?;
        let mut stats = ReplayStats::default();
        let mut first_segment = 0;
        if let Some(&n) = checkpoints.last() {
            let path = dir.join(checkpoint_name(n));
            if let FileEnd::Corrupt(at, why) = replay_file(&path, &mut apply)? {
                // A checkpoint is renamed into place only once synced, so
                // this is disk corruption: keep what decodes.
                log::warn!(
                    "WAL: checkpoint {} corrupt at byte {at} ({why}); kept the records before it",
                    path.display()
                );
                stats.corrupt_records += 1;
            }
            first_segment = n;
            for &old in &checkpoints[..checkpoints.len() - 1] {
                let p = dir.join(checkpoint_name(old));
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        let mut next = first_segment;
        let mut corrupt_from: Option<usize> = None;
        for (i, &n) in segments.iter().enumerate() {
            let path = dir.join(segment_name(n));
            if n < first_segment {
                // Replaced by the checkpoint; its deletion was interrupted.
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            next = n + 1;
            if let FileEnd::Corrupt(at, why) = replay_file(&path, &mut apply)? {
                let len = fs::metadata(&path).map_err(io_err(&path))?.len();
                stats.truncated_bytes += len - at;
                stats.corrupt_records += 1;
                log::warn!(
                    "WAL: segment {} torn or corrupt at byte {at} ({why}); truncated {} bytes, kept everything before",
                    path.display(),
                    len - at
                );
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(at).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                corrupt_from = Some(i + 1);
                break;
            }
        }
        if let Some(from) = corrupt_from {
            for &n in &segments[from..] {
                let path = dir.join(segment_name(n));
                stats.truncated_bytes += fs::metadata(&path).map_err(io_err(&path))?.len();
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        let io = Io::new(opts.force_pwrite);
        let io_uring = io.is_uring();
        let path = dir.join(segment_name(next));
        let file = LogFile::create(&path).map_err(io_err(&path))?;
        sync_dir(dir).map_err(io_err(dir))?;
        let shared = Arc::new(Shared::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer {
            dir: dir.to_owned(),
            opts,
            io,
            file,
            segment: next,
            checkpoint: None,
            shared: shared.clone(),
            dirty: false,
        };
        let thread = std::thread::Builder::new()
            .name("kiln-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok((
            Wal {
                _lock: lock,
                tx: Some(tx),
                thread: Some(thread),
                shared,
                io_uring,
            },
            stats,
        ))
    }

    /// Whether the writer uses io_uring.
    pub(crate) fn uses_io_uring(&self) -> bool {
        self.io_uring
    }

    /// A batch of records for one commit of about `samples` samples.
    pub(crate) fn batch(&mut self, samples: usize) -> WalBatch<'_> {
        WalBatch {
            wal: self,
            buf: RecordBuf::with_capacity(samples * SAMPLE_BYTES_ESTIMATE),
        }
    }

    fn send(&self, msg: Msg) -> Result<(), WalError> {
        self.tx
            .as_ref()
            .ok_or(WalError::WriterGone)?
            .send(msg)
            .map_err(|_| WalError::WriterGone)
    }

    /// Hands `bytes` to the writer, waiting while too much is pending;
    /// fails while the writer is in a write error.
    fn submit(&self, bytes: Vec<u8>, checkpoint: bool) -> Result<(), WalError> {
        let n = bytes.len() as u64;
        {
            let mut st = self.shared.state.lock();
            loop {
                if let Some((kind, message)) = &st.error {
                    return Err(WalError::WriteFailed {
                        kind: *kind,
                        message: message.clone(),
                    });
                }
                if st.pending == 0 || st.pending + n <= MAX_PENDING_BYTES {
                    break;
                }
                if self.thread.as_ref().is_none_or(JoinHandle::is_finished) {
                    return Err(WalError::WriterGone);
                }
                self.shared
                    .drained
                    .wait_for(&mut st, Duration::from_millis(100));
            }
            st.pending += n;
        }
        self.send(if checkpoint {
            Msg::CheckpointData(bytes)
        } else {
            Msg::Data(bytes)
        })
    }

    fn ask(&self, make: impl FnOnce(Sender<Result<(), WalError>>) -> Msg) -> Result<(), WalError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(make(tx))?;
        rx.recv().map_err(|_| WalError::WriterGone)?
    }

    /// Writes out and fsyncs everything submitted so far.
    pub(crate) fn sync(&mut self) -> Result<(), WalError> {
        self.ask(Msg::Sync)
    }

    /// Starts a checkpoint with truncation point `min_valid` that will
    /// replace every segment written so far. Its records are added through
    /// the returned writer, in as many pieces as the caller likes, while
    /// commits go on into the next segment; [`Wal::end_checkpoint`] ends it.
    pub(crate) fn begin_checkpoint(
        &mut self,
        min_valid: i64,
    ) -> Result<CheckpointWriter, WalError> {
        self.send(Msg::CheckpointBegin)?;
        let mut w = CheckpointWriter {
            buf: RecordBuf::default(),
        };
        w.buf.min_valid(min_valid);
        Ok(w)
    }

    /// Ends a checkpoint: when `complete`, flushes its last records and
    /// has the writer put it in place of the segments it replaces;
    /// otherwise (or when that fails) discards it, and those segments stay.
    /// Always ends the writer's checkpoint mode. Does not wait for the
    /// writer: the outcome arrives through the returned [`CheckpointDone`].
    pub(crate) fn end_checkpoint(
        &mut self,
        mut w: CheckpointWriter,
        complete: bool,
    ) -> Result<CheckpointDone, WalError> {
        let flushed = if complete { w.flush(self) } else { Ok(()) };
        let complete = complete && flushed.is_ok();
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Msg::CheckpointEnd(complete, tx))?;
        flushed.map(|()| CheckpointDone(rx))
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Closing the channel makes the writer write out, sync and exit.
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The records of one commit.
pub(crate) struct WalBatch<'a> {
    wal: &'a mut Wal,
    buf: RecordBuf,
}

impl WalBatch<'_> {
    /// Adds a series definition.
    pub(crate) fn series(&mut self, id: u32, labels: &Labels) {
        self.buf.series(id, labels);
    }

    /// Adds a sample.
    pub(crate) fn sample(&mut self, id: u32, t: i64, v: f64) {
        self.buf.sample(id, t, v);
    }

    /// Hands the batch to the writer; returns its size in bytes.
    pub(crate) fn submit(mut self) -> Result<u64, WalError> {
        let bytes = self.buf.take();
        let n = bytes.len() as u64;
        self.wal.submit(bytes, false)?;
        Ok(n)
    }
}

/// The outcome of a checkpoint the writer thread is finishing.
pub struct CheckpointDone(Receiver<Result<(), WalError>>);

impl CheckpointDone {
    /// The outcome, if the writer is done.
    pub fn try_result(&self) -> Option<Result<(), WalError>> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Err(WalError::WriterGone)),
        }
    }

    /// Waits for the outcome.
    pub fn wait(self) -> Result<(), WalError> {
        self.0.recv().map_err(|_| WalError::WriterGone)?
    }
}

/// Streams a checkpoint's records to the writer in bounded pieces.
pub(crate) struct CheckpointWriter {
    buf: RecordBuf,
}

impl CheckpointWriter {
    /// Adds a live series.
    pub(crate) fn series(&mut self, wal: &Wal, id: u32, labels: &Labels) -> Result<(), WalError> {
        self.buf.series(id, labels);
        self.maybe_flush(wal)
    }

    /// Adds one chunk of a live series.
    pub(crate) fn chunk(&mut self, wal: &Wal, id: u32, bytes: &[u8]) -> Result<(), WalError> {
        self.buf.chunk(id, bytes);
        self.maybe_flush(wal)
    }

    fn maybe_flush(&mut self, wal: &Wal) -> Result<(), WalError> {
        if self.buf.len() >= WRITE_OUT_BYTES {
            self.flush(wal)?;
        }
        Ok(())
    }

    fn flush(&mut self, wal: &Wal) -> Result<(), WalError> {
        let bytes = self.buf.take();
        if bytes.is_empty() {
            return Ok(());
        }
        wal.submit(bytes, true)
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    opts: WalOptions,
    io: Io,
    file: LogFile,
    segment: u64,
    /// The checkpoint being written: its number and file, or why it could
    /// not start.
    checkpoint: Option<Result<(u64, LogFile), WalError>>,
    shared: Arc<Shared>,
    /// Written out since the last fsync.
    dirty: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let interval = self.opts.flush_interval.max(Duration::from_millis(1));
        let mut deadline = Instant::now() + interval;
        loop {
            match rx.recv_deadline(deadline) {
                Ok(Msg::Data(bytes)) => {
                    self.rotate_if_full(bytes.len());
                    self.file.append(&bytes);
                    if self.file.unwritten() >= WRITE_OUT_BYTES {
                        // A failure is recorded in the shared state and
                        // retried on the next tick.
                        let _ = self.write_out(false);
                    }
                }
                Ok(Msg::Sync(reply)) => {
                    let _ = reply.send(self.write_out(true));
                }
                Ok(Msg::CheckpointBegin) => {
                    // A failure is reported when the checkpoint ends.
                    self.checkpoint = Some(self.begin_checkpoint());
                }
                Ok(Msg::CheckpointData(bytes)) => {
                    let n = bytes.len() as u64;
                    if let Some(Ok((_, f))) = &mut self.checkpoint {
                        f.append(&bytes);
                        let _ = f.write_out(&mut self.io);
                    }
                    self.release(n);
                }
                Ok(Msg::CheckpointEnd(complete, reply)) => {
                    let _ = reply.send(self.end_checkpoint(complete));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.write_out(true);
                    deadline = Instant::now() + interval;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Shutdown: write out, cut the padding, sync. A failure
                    // was logged by write_out; the next open replays what
                    // reached the disk.
                    if self.write_out(true).is_ok() {
                        let _ = self.file.finish(&mut self.io);
                    }
                    return;
                }
            }
        }
    }

    fn release(&self, n: u64) {
        let mut st = self.shared.state.lock();
        st.pending = st.pending.saturating_sub(n);
        self.shared.drained.notify_all();
    }

    /// Writes out the segment (and fsyncs when `sync`); records or clears
    /// the shared error.
    fn write_out(&mut self, sync: bool) -> Result<(), WalError> {
        let n = self.file.unwritten() as u64;
        let result = self.file.write_out(&mut self.io).and_then(|()| {
            if sync && (self.dirty || n > 0) {
                self.dirty = false;
                self.file.sync()
            } else {
                self.dirty |= n > 0;
                Ok(())
            }
        });
        let mut st = self.shared.state.lock();
        match result {
            Ok(()) => {
                if st.error.take().is_some() {
                    log::info!("WAL: writes succeed again");
                }
                st.pending = st.pending.saturating_sub(n);
                self.shared.drained.notify_all();
                Ok(())
            }
            Err(e) => {
                if st.error.is_none() {
                    log::error!("WAL: write to {} failed: {e}", self.file.path().display());
                }
                st.error = Some((e.kind(), e.to_string()));
                Err(WalError::WriteFailed {
                    kind: e.kind(),
                    message: e.to_string(),
                })
            }
        }
    }

    fn rotate_if_full(&mut self, incoming: usize) {
        let len = self.file.logical_len();
        if len > 0 && len + incoming as u64 > self.opts.segment_bytes {
            // On failure the current segment simply grows past its size.
            let _ = self.rotate(self.segment + 1);
        }
    }

    /// Finishes the current segment and starts segment `n`.
    fn rotate(&mut self, n: u64) -> Result<(), WalError> {
        self.write_out(true)?;
        let path = self.dir.join(segment_name(n));
        let next = LogFile::create(&path).map_err(io_err(&path))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        let old = std::mem::replace(&mut self.file, next);
        self.segment = n;
        let old_path = old.path().to_owned();
        old.finish(&mut self.io).map_err(io_err(&old_path))
    }

    fn begin_checkpoint(&mut self) -> Result<(u64, LogFile), WalError> {
        let n = self.segment + 1;
        self.rotate(n)?;
        let path = self.dir.join(format!("{}.tmp", checkpoint_name(n)));
        let _ = fs::remove_file(&path);
        let f = LogFile::create(&path).map_err(io_err(&path))?;
        Ok((n, f))
    }

    fn end_checkpoint(&mut self, complete: bool) -> Result<(), WalError> {
        let (n, f) = match self.checkpoint.take() {
            Some(started) => started?,
            None => return Err(WalError::Invalid("checkpoint end without a start".into())),
        };
        let tmp = f.path().to_owned();
        if !complete {
            drop(f);
            return fs::remove_file(&tmp).map_err(io_err(&tmp));
        }
        f.finish(&mut self.io).map_err(io_err(&tmp))?;
        let done = self.dir.join(checkpoint_name(n));
        fs::rename(&tmp, &done).map_err(io_err(&done))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        let (segments, checkpoints) = list(&self.dir)?;
        for s in segments.into_iter().filter(|&s| s < n) {
            let p = self.dir.join(segment_name(s));
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
        for c in checkpoints.into_iter().filter(|&c| c < n) {
            let p = self.dir.join(checkpoint_name(c));
            fs::remove_file(&p).map_err(io_err(&p))?;
        }
        Ok(())
    }
}
