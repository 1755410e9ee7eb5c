//! [`StepMatrix`]: the value of an instant-vector node over all steps of a
//! query — a list of series and one series-major Arrow `Float64Array` of
//! `series × steps` values, null where the series has no sample at a step.
//!
//! Invariant: `values.len() == labels.len() * steps`, and `drop_name` has
//! one flag per series (Prometheus's delayed `__name__` removal: the name
//! is dropped when the query's result is built, not where the function
//! that drops it runs, so `label_replace` can still read it).

use arrow_array::{Array, Float64Array};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, ScalarBuffer};
use kiln_storage::Labels;

/// An instant vector at every step. See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct StepMatrix {
    pub labels: Vec<Labels>,
    pub drop_name: Vec<bool>,
    pub steps: usize,
    pub values: Float64Array,
}

impl StepMatrix {
    /// A vector with no series.
    pub fn empty(steps: usize) -> Self {
        StepMatrixBuilder::new(steps).finish()
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// The value of series `s` at step `k`, if present.
    #[inline]
    pub fn get(&self, s: usize, k: usize) -> Option<f64> {
        let i = s * self.steps + k;
        self.values.is_valid(i).then(|| self.values.value(i))
    }

    /// Whether series `s` has a value at step `k`.
    #[inline]
    pub fn present(&self, s: usize, k: usize) -> bool {
        self.values.is_valid(s * self.steps + k)
    }
}

/// Builds a [`StepMatrix`] row by row; rows start absent at every step.
#[derive(Debug)]
pub(crate) struct StepMatrixBuilder {
    labels: Vec<Labels>,
    drop_name: Vec<bool>,
    steps: usize,
    vals: Vec<f64>,
    valid: BooleanBufferBuilder,
}

impl StepMatrixBuilder {
    pub fn new(steps: usize) -> Self {
        StepMatrixBuilder {
            labels: Vec::new(),
            drop_name: Vec::new(),
            steps,
            vals: Vec::new(),
            valid: BooleanBufferBuilder::new(0),
        }
    }

    /// Adds an all-absent row and returns its index.
    pub fn push_row(&mut self, labels: Labels, drop_name: bool) -> usize {
        self.labels.push(labels);
        self.drop_name.push(drop_name);
        self.vals.resize(self.vals.len() + self.steps, 0.0);
        self.valid.append_n(self.steps, false);
        self.labels.len() - 1
    }

    /// Sets row `r` at step `k`.
    #[inline]
    pub fn set(&mut self, r: usize, k: usize, v: f64) {
        let i = r * self.steps + k;
        self.vals[i] = v;
        self.valid.set_bit(i, true);
    }

    /// Whether row `r` has a value at step `k`.
    #[inline]
    pub fn is_set(&self, r: usize, k: usize) -> bool {
        self.valid.get_bit(r * self.steps + k)
    }

    /// Finishes, dropping rows that are absent at every step.
    pub fn finish(mut self) -> StepMatrix {
        let steps = self.steps;
        let valid = self.valid.finish();
        let rows = self.labels.len();
        let keep: Vec<bool> = (0..rows)
            .map(|r| steps > 0 && valid.slice(r * steps, steps).count_set_bits() > 0)
            .collect();
        if keep.iter().all(|k| *k) {
            return StepMatrix {
                labels: self.labels,
                drop_name: self.drop_name,
                steps,
                values: Float64Array::new(
                    ScalarBuffer::from(self.vals),
                    Some(NullBuffer::new(valid)),
                ),
            };
        }
        let mut b = StepMatrixBuilder::new(steps);
        let labels = std::mem::take(&mut self.labels);
        for (r, l) in labels.into_iter().enumerate() {
            if !keep[r] {
                continue;
            }
            let nr = b.push_row(l, self.drop_name[r]);
            for k in 0..steps {
                let i = r * steps + k;
                if valid.value(i) {
                    b.set(nr, k, self.vals[i]);
                }
            }
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_absent_at_every_step_are_dropped() {
        let mut b = StepMatrixBuilder::new(3);
        let a = b.push_row(Labels::from_pairs([("a", "1")]).unwrap(), false);
        b.push_row(Labels::from_pairs([("a", "2")]).unwrap(), true);
        let c = b.push_row(Labels::from_pairs([("a", "3")]).unwrap(), true);
        b.set(a, 1, 5.0);
        b.set(c, 2, -1.0);
        let m = b.finish();
        assert_eq!(m.len(), 2);
        assert_eq!(m.values.len(), 6);
        assert_eq!((m.get(0, 0), m.get(0, 1)), (None, Some(5.0)));
        assert_eq!(m.get(1, 2), Some(-1.0));
        assert_eq!(m.drop_name, vec![false, true]);
    }
}
