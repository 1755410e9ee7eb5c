//! What the model tests (head_model, db_model) share: a small universe of
//! label sets and values, matchers over it, and a batch flattened for
//! comparison with the naive `MemStore`.

use std::collections::BTreeSet;

use kiln_storage::{Labels, MatchOp, SeriesBatch, stale_nan};
use proptest::prelude::*;

/// The label sets samples are appended to.
pub const SERIES: &[&[(&str, &str)]] = &[
    &[("__name__", "a"), ("job", "x")],
    &[("__name__", "a"), ("job", "y"), ("inst", "1")],
    &[("__name__", "b"), ("job", "x")],
    &[("__name__", "b")],
    &[("__name__", "a"), ("inst", "2")],
    &[("job", "z")],
];

/// Label set `i` of [`SERIES`].
pub fn labels(i: usize) -> Labels {
    Labels::from_pairs(SERIES[i].iter().copied()).unwrap()
}

/// Values worth a round trip; index `VALUES.len()` is the staleness marker.
pub const VALUES: [f64; 5] = [1.0, 2.5, -0.0, f64::INFINITY, 1e300];

/// Value `i`: one of [`VALUES`], or the staleness marker past them.
pub fn value(i: usize) -> f64 {
    VALUES.get(i).copied().unwrap_or_else(stale_nan)
}

/// A matcher over the names and values of [`SERIES`], regexes included.
pub fn matcher() -> impl Strategy<Value = (MatchOp, &'static str, &'static str)> {
    (
        prop::sample::select(vec![
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::Regex,
            MatchOp::NotRegex,
        ]),
        prop::sample::select(vec!["__name__", "job", "inst"]),
        prop::sample::select(vec!["", "a", "x", "1", "a|b", ".*", ".+", "x.*", "[12]"]),
    )
}

/// The series with samples, and their samples as `(t, value bits)`.
pub fn flatten(b: &SeriesBatch) -> Vec<(Labels, Vec<(i64, u64)>)> {
    b.iter()
        .filter(|s| !s.timestamps.is_empty())
        .map(|s| {
            let samples = s
                .timestamps
                .iter()
                .zip(s.values)
                .map(|(&t, v)| (t, v.to_bits()))
                .collect();
            (s.labels.clone(), samples)
        })
        .collect()
}

/// The label names of a flattened answer, sorted, unique.
pub fn names_of(series: &[(Labels, Vec<(i64, u64)>)]) -> Vec<String> {
    let names: BTreeSet<String> = series
        .iter()
        .flat_map(|s| s.0.iter().map(|l| l.name.to_owned()))
        .collect();
    names.into_iter().collect()
}

/// The values of label `name` in a flattened answer, sorted, unique.
pub fn values_of(series: &[(Labels, Vec<(i64, u64)>)], name: &str) -> Vec<String> {
    let values: BTreeSet<String> = series
        .iter()
        .filter_map(|s| s.0.get(name).map(str::to_owned))
        .collect();
    values.into_iter().collect()
}
