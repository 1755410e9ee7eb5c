//! kiln-storage: the per-shard storage kernel.
//!
//! A shard owns one storage instance, a [`Db`], and is its only user:
//! appends and reads take no lock and stay on the shard's thread. The
//! exceptions hold no reference into the head: the WAL's writer thread
//! takes committed records off the shard thread (see [`wal`]), and block
//! files are finished and merged on helper threads (see [`db`]). Queries
//! reach the data through [`Select`].
//!
//! Module map (one concept each):
//! * [`labels`]: label sets, the identity of a series, and name validation;
//! * [`matcher`]: `=`, `!=`, `=~`, `!~` with Prometheus/Go semantics;
//! * [`select`]: the read contract, [`SeriesBatch`] in Arrow's list layout;
//! * [`mem`]: the naive reference store used as a test oracle;
//! * [`bitstream`]: bit-granular writer and reader;
//! * [`chunk`]: the Gorilla-style chunk codec with decimal value encoding;
//! * `index`: symbols, series ids, postings and matcher evaluation;
//! * `index`'s `PostingsSource`: matcher evaluation shared by the head's
//!   index and blocks;
//! * [`head`]: the appendable in-memory head and its appenders;
//! * [`wal`]: the head's write-ahead log;
//! * `io`: 4 KiB-aligned O_DIRECT file writing (io_uring or pwrite);
//! * [`block`]: immutable, checksummed blocks on disk, read through mmap;
//! * [`db`]: a shard's head and blocks, cut, merged and retained;
//! * `varint`: the LEB128 integers of the WAL and block files;
//! * [`value_text`]: a sample value as text, as Go writes it.

#![warn(missing_docs)]

pub mod bitstream;
pub mod block;
pub mod chunk;
pub mod db;
pub mod head;
mod index;
mod io;
pub mod labels;
pub mod matcher;
pub mod mem;
pub mod select;
pub mod value_text;
mod varint;
pub mod wal;

pub use block::{Block, BlockError, BlockMeta, BlockWriter};
pub use chunk::{ChunkError, ChunkIter, MAX_CHUNK_SAMPLES, OpenChunk, ValueEncoding};
pub use db::{Db, DbCounters, DbError, HeadCut, select_blocks};
pub use head::{
    AppendError, Appender, CommitStats, Head, HeadCheckpoint, HeadCounters, HeadMemory,
    HeadOptions, HeadRef,
};
pub use labels::{Label, LabelError, Labels, LabelsBuilder, METRIC_NAME, NameValidation};
pub use matcher::{MatchOp, Matcher, MatcherError};
pub use select::{
    STALE_NAN_BITS, Select, SelectError, SelectHints, SeriesBatch, SeriesBatchBuilder, SeriesRef,
    is_stale_nan, merge_batches, stale_nan,
};
pub use value_text::format_value;
pub use wal::{CheckpointDone, ReplayStats, WalError, WalOptions};
