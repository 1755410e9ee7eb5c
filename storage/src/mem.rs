//! A naive in-memory store: the reference model for property tests of the
//! head, and the store the query engine's tests load promqltest data into.
//!
//! Every series is a sorted map from timestamp to value; a select scans all
//! series and evaluates every matcher directly. Nothing here is fast, which is
//! the point: it is simple enough to be obviously right.
//!
//! Append semantics match the head's contract: a sample at an existing
//! timestamp with the same value bits is a silent duplicate, with different
//! bits it is rejected; a sample older than the series' newest is rejected.

use std::collections::BTreeMap;

use crate::labels::Labels;
use crate::matcher::Matcher;
use crate::select::{Select, SelectError, SelectHints, SeriesBatch, SeriesBatchBuilder};

/// What happened to one appended sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemAppend {
    /// Stored.
    Stored,
    /// Same timestamp and same value bits as a stored sample: dropped.
    Duplicate,
    /// Same timestamp, different value: rejected.
    DuplicateTimestamp,
    /// Older than the newest sample of the series: rejected.
    OutOfOrder,
}

/// The naive store. See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    series: BTreeMap<Labels, BTreeMap<i64, f64>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one sample under the head's ordering rules.
    pub fn append(&mut self, labels: &Labels, t: i64, v: f64) -> MemAppend {
        let samples = self.series.entry(labels.clone()).or_default();
        if let Some((&last_t, &last_v)) = samples.last_key_value() {
            if t == last_t {
                return if last_v.to_bits() == v.to_bits() {
                    MemAppend::Duplicate
                } else {
                    MemAppend::DuplicateTimestamp
                };
            }
            if t < last_t {
                return MemAppend::OutOfOrder;
            }
        }
        samples.insert(t, v);
        MemAppend::Stored
    }

    /// Inserts a sample with no ordering rule (a later insert at the same
    /// timestamp replaces the earlier), as promqltest `load` blocks need.
    pub fn insert(&mut self, labels: &Labels, t: i64, v: f64) {
        self.series.entry(labels.clone()).or_default().insert(t, v);
    }

    /// Drops every sample below `mint` and every series left empty.
    pub fn truncate_below(&mut self, mint: i64) {
        for samples in self.series.values_mut() {
            *samples = samples.split_off(&mint);
        }
        self.series.retain(|_, s| !s.is_empty());
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.series.clear();
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.series.len()
    }
}

impl Select for MemStore {
    fn select(
        &self,
        matchers: &[Matcher],
        hints: &SelectHints,
    ) -> Result<SeriesBatch, SelectError> {
        let mut b = SeriesBatchBuilder::default();
        for (labels, samples) in &self.series {
            if !matchers
                .iter()
                .all(|m| m.matches(labels.get(m.name()).unwrap_or("")))
            {
                continue;
            }
            if hints.mint > hints.maxt {
                continue;
            }
            let in_range = samples.range(hints.mint..=hints.maxt);
            b.push_series(labels.clone());
            for (&t, &v) in in_range {
                if b.sample_count() >= hints.max_samples {
                    return Err(SelectError::TooManySamples {
                        limit: hints.max_samples,
                    });
                }
                b.push_sample(t, v);
            }
        }
        Ok(b.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::MatchOp;

    #[test]
    fn append_rules_and_select() {
        let mut s = MemStore::new();
        let a = Labels::from_pairs([("__name__", "x"), ("job", "a")]).unwrap();
        let b = Labels::from_pairs([("__name__", "x")]).unwrap();
        assert_eq!(s.append(&a, 10, 1.0), MemAppend::Stored);
        assert_eq!(s.append(&a, 10, 1.0), MemAppend::Duplicate);
        assert_eq!(s.append(&a, 10, 2.0), MemAppend::DuplicateTimestamp);
        assert_eq!(s.append(&a, 5, 2.0), MemAppend::OutOfOrder);
        assert_eq!(s.append(&a, 20, 2.0), MemAppend::Stored);
        assert_eq!(s.append(&b, 15, 3.0), MemAppend::Stored);

        // `job=""` selects only the series without a job label.
        let m = [Matcher::new(MatchOp::Equal, "job", "").unwrap()];
        let batch = s.select(&m, &SelectHints::range(0, 100)).unwrap();
        assert_eq!(batch.labels(), std::slice::from_ref(&b));

        let m = [Matcher::equal("__name__", "x")];
        let batch = s.select(&m, &SelectHints::range(11, 20)).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.series(1).timestamps, &[20]);

        let capped = SelectHints {
            max_samples: 1,
            ..SelectHints::range(0, 100)
        };
        assert_eq!(
            s.select(&m, &capped),
            Err(SelectError::TooManySamples { limit: 1 })
        );

        s.truncate_below(16);
        assert_eq!(s.series_count(), 1);
    }
}
