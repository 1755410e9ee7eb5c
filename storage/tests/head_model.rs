//! The head against the naive `MemStore` model: random appends (by labels
//! and by ref, committed or rolled back), rejections, truncations, selects
//! and label queries must agree; with a WAL, dropping and reopening the
//! head at random points must lose nothing.

use std::collections::{BTreeSet, HashMap};

use kiln_storage::mem::{MemAppend, MemStore};
use kiln_storage::{
    AppendError, Head, HeadOptions, HeadRef, Labels, MatchOp, Matcher, Select, SelectHints,
    WalOptions,
};
use model::{SERIES, VALUES, flatten, labels, matcher, names_of, value, values_of};
use proptest::prelude::*;

#[path = "support/model.rs"]
mod model;

#[derive(Debug, Clone)]
enum Op {
    /// Samples `(series, t, value index, by ref)`, then commit or roll back.
    Append(Vec<(usize, i64, usize, bool)>, bool),
    Truncate(i64),
    Select(Vec<(MatchOp, &'static str, &'static str)>, i64, i64),
    /// Drop and reopen the head (WAL runs only).
    Reopen,
}

fn op(with_reopen: bool) -> impl Strategy<Value = Op> {
    let sample = (0..SERIES.len(), 0i64..400, 0..=VALUES.len(), any::<bool>());
    let matcher = matcher();
    let reopen_weight = if with_reopen { 1 } else { 0 };
    prop_oneof![
        6 => (prop::collection::vec(sample, 0..12), prop::bool::weighted(0.8))
            .prop_map(|(s, c)| Op::Append(s, c)),
        1 => (0i64..400).prop_map(Op::Truncate),
        3 => (prop::collection::vec(matcher, 0..3), -10i64..400, 0i64..420)
            .prop_map(|(m, lo, hi)| Op::Select(m, lo, hi)),
        reopen_weight => Just(Op::Reopen),
    ]
}

/// The model's answer without series that have no sample in range.
fn model_select(
    model: &MemStore,
    ms: &[Matcher],
    lo: i64,
    hi: i64,
) -> Vec<(Labels, Vec<(i64, u64)>)> {
    flatten(&model.select(ms, &SelectHints::range(lo, hi)).unwrap())
}

struct Run {
    head: Head,
    model: MemStore,
    min_valid: i64,
    refs: HashMap<usize, HeadRef>,
    dead: Vec<HeadRef>,
    dir: Option<tempfile::TempDir>,
    wal: WalOptions,
}

impl Run {
    fn new(with_wal: bool, force_pwrite: bool) -> Run {
        let wal = WalOptions {
            force_pwrite,
            segment_bytes: 4096,
            ..WalOptions::default()
        };
        let opts = HeadOptions {
            chunk_range_ms: 100,
            max_series: 0,
        };
        let (head, dir) = if with_wal {
            let dir = tempfile::tempdir().unwrap();
            let (head, stats) = Head::open(dir.path(), opts, wal.clone()).unwrap();
            assert_eq!(stats.samples, 0);
            (head, Some(dir))
        } else {
            (Head::new(opts), None)
        };
        Run {
            head,
            model: MemStore::new(),
            min_valid: i64::MIN,
            refs: HashMap::new(),
            dead: Vec::new(),
            dir,
            wal,
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(samples, commit) => {
                let mut staged = self.model.clone();
                let mut app = self.head.appender();
                let mut accepted = 0;
                let mut rejected = 0;
                for &(i, t, vi, by_ref) in samples {
                    let l = labels(i);
                    let v = value(vi);
                    let want = if t < self.min_valid {
                        Err(AppendError::OutOfBounds)
                    } else {
                        match staged.append(&l, t, v) {
                            MemAppend::Stored => Ok(true),
                            MemAppend::Duplicate => Ok(false),
                            MemAppend::DuplicateTimestamp => Err(AppendError::DuplicateTimestamp),
                            MemAppend::OutOfOrder => Err(AppendError::OutOfOrder),
                        }
                    };
                    let got = match self.refs.get(&i) {
                        Some(&r) if by_ref => app.append_ref(r, t, v),
                        _ => app.append(&l, t, v).map(|r| {
                            self.refs.insert(i, r);
                        }),
                    };
                    prop_assert_eq!(got, want.map(|_| ()), "{} t={}", l, t);
                    match want {
                        Ok(true) => accepted += 1,
                        Ok(false) => {}
                        Err(_) => rejected += 1,
                    }
                }
                for &r in &self.dead {
                    prop_assert_eq!(app.append_ref(r, 1000, 1.0), Err(AppendError::UnknownRef));
                    rejected += 1;
                }
                if *commit {
                    let stats = app.commit().unwrap();
                    prop_assert_eq!(stats.samples, accepted);
                    prop_assert_eq!(stats.rejected, rejected);
                    self.model = staged;
                } else {
                    app.rollback();
                }
            }
            Op::Truncate(t) => {
                self.head.truncate_below(*t).unwrap();
                self.min_valid = self.min_valid.max(*t);
                self.model.truncate_below(self.min_valid);
                let all = model_select(&self.model, &[], i64::MIN, i64::MAX);
                let live: BTreeSet<&Labels> = all.iter().map(|s| &s.0).collect();
                let refs = std::mem::take(&mut self.refs);
                for (i, r) in refs {
                    if live.contains(&labels(i)) {
                        self.refs.insert(i, r);
                    } else {
                        self.dead.push(r);
                    }
                }
                prop_assert_eq!(self.head.num_series(), live.len());
            }
            Op::Select(ms, lo, hi) => {
                let ms: Vec<Matcher> = ms
                    .iter()
                    .map(|&(op, n, v)| Matcher::new(op, n, v).unwrap())
                    .collect();
                self.check(&ms, *lo, *hi)?;
            }
            Op::Reopen => {
                let dir = self.dir.as_ref().map(|d| d.path().to_owned()).unwrap();
                let opts = HeadOptions {
                    chunk_range_ms: 100,
                    max_series: 0,
                };
                // Dropping the head flushes its WAL.
                self.head = Head::new(opts.clone());
                let (head, stats) = Head::open(&dir, opts, self.wal.clone()).unwrap();
                prop_assert_eq!(stats.corrupt_records, 0);
                self.head = head;
                self.refs.clear();
                self.dead.clear();
                self.check(&[], i64::MIN, i64::MAX)?;
            }
        }
        Ok(())
    }

    fn check(&self, ms: &[Matcher], lo: i64, hi: i64) -> Result<(), TestCaseError> {
        let want = model_select(&self.model, ms, lo, hi);
        let got = self.head.select(ms, &SelectHints::range(lo, hi)).unwrap();
        prop_assert_eq!(flatten(&got), want.clone());
        prop_assert!(got.iter().all(|s| !s.timestamps.is_empty()));
        let want_series: Vec<Labels> = want.iter().map(|s| s.0.clone()).collect();
        prop_assert_eq!(self.head.series(ms, lo, hi), want_series);
        prop_assert_eq!(self.head.label_names(ms, lo, hi), names_of(&want));
        prop_assert_eq!(
            self.head.label_values("job", ms, lo, hi),
            values_of(&want, "job")
        );
        // The running memory totals count every stored sample: exactly the
        // visible ones until a truncation leaves invisible samples in a
        // chunk that straddles it.
        let visible: usize = model_select(&self.model, &[], i64::MIN, i64::MAX)
            .iter()
            .map(|s| s.1.len())
            .sum();
        let stored = self.head.memory().samples;
        if self.min_valid == i64::MIN {
            prop_assert_eq!(stored, visible as u64);
        } else {
            prop_assert!(stored >= visible as u64);
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn head_matches_model(ops in prop::collection::vec(op(false), 1..40)) {
        let mut run = Run::new(false, false);
        for op in &ops {
            run.apply(op)?;
        }
        run.check(&[], i64::MIN, i64::MAX)?;
        let mem = run.head.memory();
        prop_assert_eq!(mem.series, run.head.num_series());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn head_with_wal_survives_reopen(ops in prop::collection::vec(op(true), 1..30),
                                     force_pwrite in any::<bool>()) {
        let mut run = Run::new(true, force_pwrite);
        for op in &ops {
            run.apply(op)?;
        }
        run.apply(&Op::Reopen)?;
    }
}

#[test]
fn limits_and_empty_labels() {
    let mut head = Head::new(HeadOptions {
        chunk_range_ms: 1000,
        max_series: 1,
    });
    let mut app = head.appender();
    assert_eq!(
        app.append(&Labels::empty(), 1, 1.0),
        Err(AppendError::EmptyLabels)
    );
    app.append(&labels(0), 1, 1.0).unwrap();
    assert_eq!(
        app.append(&labels(1), 1, 1.0),
        Err(AppendError::TooManySeries)
    );
    let stats = app.commit().unwrap();
    assert_eq!(
        (stats.samples, stats.series_created, stats.rejected),
        (1, 1, 2)
    );
    assert_eq!(head.counters().samples_appended, 1);
}

#[test]
fn staged_samples_are_invisible_until_commit() {
    let mut head = Head::new(HeadOptions::default());
    let all = SelectHints::range(i64::MIN, i64::MAX);
    let mut app = head.appender();
    app.append(&labels(0), 10, 1.0).unwrap();
    app.rollback();
    // The series stays registered but has no sample: invisible everywhere.
    assert_eq!(head.num_series(), 1);
    assert!(head.select(&[], &all).unwrap().is_empty());
    assert!(head.label_names(&[], i64::MIN, i64::MAX).is_empty());
    assert_eq!(head.min_time(), None);
    let mut app = head.appender();
    app.append(&labels(0), 10, 1.0).unwrap();
    let stats = app.commit().unwrap();
    assert_eq!(stats.samples, 1);
    assert_eq!(head.select(&[], &all).unwrap().sample_count(), 1);
    assert_eq!((head.min_time(), head.max_time()), (Some(10), Some(10)));
}

#[test]
fn chunks_cut_at_120_samples_and_at_the_range_boundary() {
    let mut head = Head::new(HeadOptions {
        chunk_range_ms: 10_000,
        max_series: 0,
    });
    let mut app = head.appender();
    let r = app.append(&labels(0), 0, 0.0).unwrap();
    // 300 samples 10 ms apart: 120 + 120 + 60 within the first window.
    for i in 1..300 {
        app.append_ref(r, i * 10, i as f64).unwrap();
    }
    // Then one in the next window.
    app.append_ref(r, 10_000, 1.0).unwrap();
    app.commit().unwrap();
    let m = head.memory();
    assert_eq!(m.samples, 301);
    // Truncating below 3000 drops the first two chunks only (max t 1190
    // and 2390); the third (2400..2990) straddles nothing and stays.
    head.truncate_below(2395).unwrap();
    assert_eq!(head.memory().samples, 61);
    let b = head.select(&[], &SelectHints::range(0, 20_000)).unwrap();
    assert_eq!(b.series(0).timestamps.first(), Some(&2400));
    assert_eq!(b.sample_count(), 61);
}

#[test]
fn select_respects_max_samples() {
    let mut head = Head::new(HeadOptions::default());
    let mut app = head.appender();
    for t in 0..10 {
        app.append(&labels(0), t, 1.0).unwrap();
    }
    app.commit().unwrap();
    let hints = SelectHints {
        max_samples: 5,
        ..SelectHints::range(0, 100)
    };
    assert!(head.select(&[], &hints).is_err());
    let hints = SelectHints {
        max_samples: 10,
        ..SelectHints::range(0, 100)
    };
    assert_eq!(head.select(&[], &hints).unwrap().sample_count(), 10);
}

/// A head may be built on one thread and moved to its shard's thread.
#[test]
fn head_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let head = Head::new(HeadOptions::default());
    assert_send(&head);
    let moved = std::thread::spawn(move || head.num_series())
        .join()
        .unwrap();
    assert_eq!(moved, 0);
}
