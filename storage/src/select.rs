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
//!
//! [`merge_batches`] combines batches that each keep these invariants (one
//! per shard, or head and blocks) into one batch that keeps them too.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

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

/// The head of one input of [`merge_batches`]: the label set at its cursor,
/// ordered by labels and then by input position so that equal label sets pop
/// in input order.
#[derive(PartialEq, Eq)]
struct MergeHead {
    labels: Labels,
    input: usize,
}

impl Ord for MergeHead {
    fn cmp(&self, other: &Self) -> Ordering {
        self.labels
            .cmp(&other.labels)
            .then(self.input.cmp(&other.input))
    }
}

impl PartialOrd for MergeHead {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One input of [`merge_batches`], taken apart, with its read position.
struct MergeInput {
    labels: std::vec::IntoIter<Labels>,
    offsets: OffsetBuffer<i64>,
    timestamps: Int64Array,
    values: Float64Array,
    /// Index of the series whose labels sit in the heap.
    series: usize,
}

impl MergeInput {
    fn samples(&self, series: usize) -> (&[i64], &[f64]) {
        // Offsets are within the arrays by the batch invariant.
        let r = self.offsets[series] as usize..self.offsets[series + 1] as usize;
        (
            &self.timestamps.values()[r.clone()],
            &self.values.values()[r],
        )
    }
}

/// Merges label-sorted batches into one label-sorted batch (a k-way merge).
///
/// A label set present in several inputs becomes one series whose samples
/// are the union by timestamp; on an equal timestamp the sample of the
/// earliest input (lowest position in `batches`) wins. Each input must keep
/// the [`SeriesBatch`] invariants; the output then keeps them too.
pub fn merge_batches(batches: Vec<SeriesBatch>) -> SeriesBatch {
    let mut batches: Vec<SeriesBatch> = batches.into_iter().filter(|b| !b.is_empty()).collect();
    if batches.len() <= 1 {
        return batches.pop().unwrap_or_else(SeriesBatch::empty);
    }
    let series: usize = batches.iter().map(SeriesBatch::len).sum();
    let samples: usize = batches.iter().map(SeriesBatch::sample_count).sum();
    let mut out = SeriesBatchBuilder::with_capacity(series, samples);
    let mut inputs: Vec<MergeInput> = Vec::with_capacity(batches.len());
    let mut heap = BinaryHeap::with_capacity(batches.len());
    for (input, b) in batches.into_iter().enumerate() {
        let (labels, offsets, timestamps, values) = b.into_parts();
        let mut labels = labels.into_iter();
        if let Some(first) = labels.next() {
            heap.push(Reverse(MergeHead {
                labels: first,
                input,
            }));
        }
        inputs.push(MergeInput {
            labels,
            offsets,
            timestamps,
            values,
            series: 0,
        });
    }
    // Inputs holding the current label set, in input order.
    let mut same: Vec<usize> = Vec::with_capacity(inputs.len());
    let (mut ts, mut vs) = (Vec::new(), Vec::new());
    while let Some(Reverse(head)) = heap.pop() {
        same.clear();
        same.push(head.input);
        while heap
            .peek()
            .is_some_and(|Reverse(next)| next.labels == head.labels)
        {
            // The peek above just saw an element.
            let Some(Reverse(next)) = heap.pop() else {
                break;
            };
            same.push(next.input);
        }
        out.push_series(head.labels);
        if let [only] = same[..] {
            let (t, v) = inputs[only].samples(inputs[only].series);
            out.extend_samples(t, v);
        } else {
            ts.clear();
            vs.clear();
            for &i in &same {
                let (t, v) = inputs[i].samples(inputs[i].series);
                merge_earlier_wins(&mut ts, &mut vs, t, v);
            }
            out.extend_samples(&ts, &vs);
        }
        for &i in &same {
            let input = &mut inputs[i];
            input.series += 1;
            if let Some(labels) = input.labels.next() {
                heap.push(Reverse(MergeHead { labels, input: i }));
            }
        }
    }
    out.finish()
}

/// Merges the time-sorted samples `(t, v)` into the time-sorted `(ts, vs)`;
/// on an equal timestamp the sample already in `(ts, vs)` stays.
fn merge_earlier_wins(ts: &mut Vec<i64>, vs: &mut Vec<f64>, t: &[i64], v: &[f64]) {
    if ts
        .last()
        .is_none_or(|&last| t.first().is_none_or(|&f| f > last))
    {
        ts.extend_from_slice(t);
        vs.extend_from_slice(v);
        return;
    }
    let (old_t, old_v) = (std::mem::take(ts), std::mem::take(vs));
    ts.reserve(old_t.len() + t.len());
    vs.reserve(old_v.len() + v.len());
    let (mut i, mut j) = (0, 0);
    while i < old_t.len() && j < t.len() {
        match old_t[i].cmp(&t[j]) {
            Ordering::Less => {
                ts.push(old_t[i]);
                vs.push(old_v[i]);
                i += 1;
            }
            Ordering::Greater => {
                ts.push(t[j]);
                vs.push(v[j]);
                j += 1;
            }
            Ordering::Equal => {
                ts.push(old_t[i]);
                vs.push(old_v[i]);
                i += 1;
                j += 1;
            }
        }
    }
    ts.extend_from_slice(&old_t[i..]);
    vs.extend_from_slice(&old_v[i..]);
    ts.extend_from_slice(&t[j..]);
    vs.extend_from_slice(&v[j..]);
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

    fn batch(series: &[(&str, &[(i64, f64)])]) -> SeriesBatch {
        let mut b = SeriesBatchBuilder::default();
        for (name, samples) in series {
            b.push_series(Labels::from_pairs([("a", *name)]).unwrap());
            for &(t, v) in *samples {
                b.push_sample(t, v);
            }
        }
        b.finish()
    }

    #[test]
    fn merge_interleaves_series_and_earlier_input_wins() {
        let merged = merge_batches(vec![
            batch(&[("b", &[(1, 1.0), (3, 3.0)]), ("d", &[])]),
            batch(&[
                ("a", &[(7, 7.0)]),
                ("b", &[(2, 20.0), (3, 30.0), (4, 40.0)]),
            ]),
            SeriesBatch::empty(),
            batch(&[("c", &[(5, stale_nan())])]),
        ]);
        let names: Vec<_> = merged
            .labels()
            .iter()
            .map(|l| l.get("a").unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(merged.series(1).timestamps, &[1, 2, 3, 4]);
        assert_eq!(merged.series(1).values, &[1.0, 20.0, 3.0, 40.0]);
        assert!(is_stale_nan(merged.series(2).values[0]));
        assert!(merged.series(3).timestamps.is_empty());
        assert_eq!(merged.offsets().as_ref(), &[0, 1, 5, 6, 6]);
        assert!(merge_batches(vec![]).is_empty());
    }

    mod prop {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::super::*;

        /// One input: series keyed by a small label value, samples keyed by
        /// timestamp (value bits, so NaN payloads compare exactly).
        type Model = BTreeMap<u8, BTreeMap<i64, u64>>;

        fn labels_of(k: u8) -> Labels {
            // Two shapes of label set, so some sets are prefixes of others.
            if k.is_multiple_of(3) {
                Labels::from_pairs([("a", format!("{}", k / 3))]).unwrap()
            } else {
                Labels::from_pairs([("a", format!("{}", k / 3)), ("b", format!("{k}"))]).unwrap()
            }
        }

        fn to_batch(m: &Model) -> SeriesBatch {
            let sorted: BTreeMap<Labels, &BTreeMap<i64, u64>> =
                m.iter().map(|(k, s)| (labels_of(*k), s)).collect();
            let mut b = SeriesBatchBuilder::default();
            for (l, s) in sorted {
                b.push_series(l);
                for (&t, &v) in s {
                    b.push_sample(t, f64::from_bits(v));
                }
            }
            b.finish()
        }

        fn input() -> impl Strategy<Value = Model> {
            prop::collection::btree_map(
                0u8..12,
                prop::collection::btree_map(0i64..40, any::<u64>(), 0..8),
                0..6,
            )
        }

        proptest! {
            #[test]
            fn merge_matches_naive_union(inputs in prop::collection::vec(input(), 0..5)) {
                let mut want: BTreeMap<Labels, BTreeMap<i64, u64>> = BTreeMap::new();
                for m in &inputs {
                    for (k, s) in m {
                        let series = want.entry(labels_of(*k)).or_default();
                        for (&t, &v) in s {
                            series.entry(t).or_insert(v);
                        }
                    }
                }
                let got = merge_batches(inputs.iter().map(to_batch).collect());
                let got: BTreeMap<Labels, BTreeMap<i64, u64>> = got
                    .iter()
                    .map(|s| {
                        let samples = s.timestamps.iter().zip(s.values)
                            .map(|(&t, v)| (t, v.to_bits()))
                            .collect();
                        (s.labels.clone(), samples)
                    })
                    .collect();
                prop_assert_eq!(got, want);
            }

            #[test]
            fn merge_output_keeps_batch_invariants(inputs in prop::collection::vec(input(), 0..5)) {
                let got = merge_batches(inputs.iter().map(to_batch).collect());
                prop_assert!(got.labels().windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(got.offsets().len(), got.len() + 1);
                for s in got.iter() {
                    prop_assert!(s.timestamps.windows(2).all(|w| w[0] < w[1]));
                }
            }
        }
    }
}
