//! The read contract between storage and query: [`Select`] and [`SeriesBatch`].
//!
//! A select returns one batch for all matching series: their label sets,
//! sorted, plus every sample concatenated into one `Int64Array` of
//! millisecond timestamps and one `Float64Array` of values, with per-series
//! offsets (Arrow's list layout). One batch costs a handful of allocations
//! whatever the number of series.
//!
//! Invariants of a [`SeriesBatch`]:
//! * `offsets.len() == labels.len() + 1`, `offsets[0] == 0`, offsets do not
//!   decrease, and the last offset equals `timestamps.len() == values.len()`;
//! * label sets are strictly increasing (sorted, no duplicates);
//! * within a series, timestamps are strictly increasing and within
//!   `[mint, maxt]` of the select that produced the batch;
//! * values are bit-exact as appended (the staleness NaN included).

use arrow_array::{Float64Array, Int64Array};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};

use crate::labels::Labels;
use crate::matcher::Matcher;

/// The bit pattern of the staleness marker: a NaN that no arithmetic
/// produces, written when a series disappears.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as an `f64`.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the staleness marker (bit-exact, not any NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// What a select reads: the time range (inclusive, in ms) and a cap on the
/// number of samples it may load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelectHints {
    /// Lowest timestamp to return, inclusive.
    pub mint: i64,
    /// Highest timestamp to return, inclusive.
    pub maxt: i64,
    /// The select fails with [`SelectError::TooManySamples`] rather than
    /// load more than this many samples.
    pub max_samples: usize,
}

impl SelectHints {
    /// A range with no sample cap.
    pub fn range(mint: i64, maxt: i64) -> Self {
        SelectHints {
            mint,
            maxt,
            max_samples: usize::MAX,
        }
    }
}

/// Why a select failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// The select would load more samples than allowed.
    #[error("query would load more than {limit} samples")]
    TooManySamples {
        /// The cap that was hit.
        limit: usize,
    },
    /// The storage could not serve the read (I/O, corruption).
    #[error("storage read failed: {0}")]
    Storage(String),
}

/// Anything that can answer a select: a shard's head and blocks, a fan-out
/// over shards, or the naive [`crate::mem::MemStore`].
pub trait Select {
    /// All series whose labels satisfy every matcher, with their samples in
    /// `[hints.mint, hints.maxt]`. A series with no sample in the range is
    /// still returned (with zero samples) when it exists in the range's
    /// blocks or head; callers must not rely on either way.
    fn select(&self, matchers: &[Matcher], hints: &SelectHints)
    -> Result<SeriesBatch, SelectError>;
}

/// Series and their samples in Arrow's list layout. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBatch {
    labels: Vec<Labels>,
    offsets: OffsetBuffer<i64>,
    timestamps: Int64Array,
    values: Float64Array,
}

impl SeriesBatch {
    /// A batch with no series.
    pub fn empty() -> Self {
        SeriesBatchBuilder::default().finish()
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no series.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Total number of samples over all series.
    pub fn sample_count(&self) -> usize {
        self.timestamps.len()
    }

    /// The label sets, sorted.
    pub fn labels(&self) -> &[Labels] {
        &self.labels
    }

    /// Per-series offsets into the sample arrays (`len() + 1` entries).
    pub fn offsets(&self) -> &OffsetBuffer<i64> {
        &self.offsets
    }

    /// All timestamps, series after series.
    pub fn timestamps(&self) -> &Int64Array {
        &self.timestamps
    }

    /// All values, series after series.
    pub fn values(&self) -> &Float64Array {
        &self.values
    }

    /// The sample range of series `i` within the flat arrays.
    pub fn range_of(&self, i: usize) -> std::ops::Range<usize> {
        // Offsets are non-negative and bounded by the array length (invariant).
        self.offsets[i] as usize..self.offsets[i + 1] as usize
    }

    /// Series `i`: its labels, timestamps and values.
    pub fn series(&self, i: usize) -> SeriesRef<'_> {
        let r = self.range_of(i);
        SeriesRef {
            labels: &self.labels[i],
            timestamps: &self.timestamps.values()[r.clone()],
            values: &self.values.values()[r],
        }
    }

    /// All series in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = SeriesRef<'_>> + '_ {
        (0..self.len()).map(|i| self.series(i))
    }

    /// Takes the batch apart: labels, offsets, timestamps, values.
    pub fn into_parts(self) -> (Vec<Labels>, OffsetBuffer<i64>, Int64Array, Float64Array) {
        (self.labels, self.offsets, self.timestamps, self.values)
    }
}

/// One series of a [`SeriesBatch`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesRef<'a> {
    /// Its label set.
    pub labels: &'a Labels,
    /// Its timestamps (ms), strictly increasing.
    pub timestamps: &'a [i64],
    /// Its values, one per timestamp.
    pub values: &'a [f64],
}

/// Builds a [`SeriesBatch`] series by series. Series must be pushed in label
/// order and samples in time order; `finish` checks this in debug builds.
#[derive(Debug, Default)]
pub struct SeriesBatchBuilder {
    labels: Vec<Labels>,
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
    values: Vec<f64>,
}

impl SeriesBatchBuilder {
    /// A builder with room for `series` series and `samples` samples.
    pub fn with_capacity(series: usize, samples: usize) -> Self {
        SeriesBatchBuilder {
            labels: Vec::with_capacity(series),
            offsets: Vec::with_capacity(series + 1),
            timestamps: Vec::with_capacity(samples),
            values: Vec::with_capacity(samples),
        }
    }

    /// Starts a new series; following samples belong to it.
    pub fn push_series(&mut self, labels: Labels) {
        debug_assert!(
            self.labels.last().is_none_or(|l| *l < labels),
            "series out of order"
        );
        self.offsets.push(self.timestamps.len() as i64);
        self.labels.push(labels);
    }

    /// Appends a sample to the current series.
    pub fn push_sample(&mut self, t: i64, v: f64) {
        debug_assert!(!self.labels.is_empty(), "sample before any series");
        self.timestamps.push(t);
        self.values.push(v);
    }

    /// Appends many samples to the current series.
    pub fn extend_samples(&mut self, ts: &[i64], vs: &[f64]) {
        debug_assert_eq!(ts.len(), vs.len());
        self.timestamps.extend_from_slice(ts);
        self.values.extend_from_slice(vs);
    }

    /// Number of samples pushed so far.
    pub fn sample_count(&self) -> usize {
        self.timestamps.len()
    }

    /// Finishes the batch.
    pub fn finish(mut self) -> SeriesBatch {
        self.offsets.push(self.timestamps.len() as i64);
        SeriesBatch {
            labels: self.labels,
            // Offsets start at 0 and never decrease: each is the sample count
            // at the time its series was pushed.
            offsets: OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            timestamps: Int64Array::new(ScalarBuffer::from(self.timestamps), None),
            values: Float64Array::new(ScalarBuffer::from(self.values), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_lays_out_lists() {
        let mut b = SeriesBatchBuilder::default();
        b.push_series(Labels::from_pairs([("a", "1")]).unwrap());
        b.push_sample(1, 1.0);
        b.push_sample(2, stale_nan());
        b.push_series(Labels::from_pairs([("a", "2")]).unwrap());
        b.push_series(Labels::from_pairs([("a", "3")]).unwrap());
        b.extend_samples(&[5], &[-0.0]);
        let batch = b.finish();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.sample_count(), 3);
        assert_eq!(batch.offsets().as_ref(), &[0, 2, 2, 3]);
        assert!(is_stale_nan(batch.series(0).values[1]));
        assert!(batch.series(1).timestamps.is_empty());
        assert_eq!(batch.series(2).values[0].to_bits(), (-0.0f64).to_bits());
        assert!(SeriesBatch::empty().is_empty());
    }
}
