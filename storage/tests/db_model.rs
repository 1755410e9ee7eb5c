//! A shard's storage (head + blocks) against the naive `MemStore` model:
//! random appends, head cuts into blocks, retention and reopening must
//! never change what selects and the label APIs answer.

use std::path::Path;

use kiln_storage::mem::{MemAppend, MemStore};
use kiln_storage::{
    AppendError, Db, HeadOptions, Labels, MatchOp, Matcher, Select, SelectHints, WalOptions,
};
use model::{SERIES, VALUES, flatten, labels, matcher, names_of, value, values_of};
use proptest::prelude::*;

#[path = "support/model.rs"]
mod model;

/// Chunk and block range of these tests, in ms.
const RANGE: i64 = 100;

#[derive(Debug, Clone)]
enum Op {
    /// Samples `(series, time offset from the clock, value index)`,
    /// committed; the clock then moves on by `RANGE / 4`.
    Append(Vec<(usize, i64, usize)>),
    /// Persist every due head range.
    Compact,
    /// Merge blocks into windows of up to 27 ranges.
    Merge,
    /// Drop blocks and head data below the clock's range minus this many
    /// ranges (a block is dropped only when wholly below).
    Retain(i64),
    /// Matchers, then a range: its start this far behind the clock, its
    /// length.
    Select(Vec<(MatchOp, &'static str, &'static str)>, i64, i64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    // Times are multiples of 5, as are select bounds: bounds often hit a
    // sample exactly.
    let sample = (
        0..SERIES.len(),
        (-6i64..12).prop_map(|d| d * 5),
        0..=VALUES.len(),
    );
    let matcher = matcher();
    prop_oneof![
        6 => prop::collection::vec(sample, 0..12).prop_map(Op::Append),
        2 => Just(Op::Compact),
        1 => Just(Op::Merge),
        1 => (2i64..8).prop_map(Op::Retain),
        4 => (prop::collection::vec(matcher, 0..3), -4i64..120, 0i64..80)
            .prop_map(|(m, back, len)| Op::Select(m, back * 5, len * 5)),
        1 => Just(Op::Reopen),
    ]
}

fn open(dir: &Path, force_pwrite: bool) -> Db {
    let head = HeadOptions {
        chunk_range_ms: RANGE,
        max_series: 0,
    };
    let wal = WalOptions {
        force_pwrite,
        segment_bytes: 4096,
        ..WalOptions::default()
    };
    Db::open(dir, head, wal).unwrap().0
}

struct Run {
    /// `None` only while reopening.
    db: Option<Db>,
    model: MemStore,
    clock: i64,
    dir: tempfile::TempDir,
    force_pwrite: bool,
}

impl Run {
    fn new(force_pwrite: bool) -> Run {
        let dir = tempfile::tempdir().unwrap();
        Run {
            db: Some(open(dir.path(), force_pwrite)),
            model: MemStore::new(),
            clock: 0,
            dir,
            force_pwrite,
        }
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("open")
    }

    fn db_mut(&mut self) -> &mut Db {
        self.db.as_mut().expect("open")
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append(samples) => {
                let db = self.db.as_mut().expect("open");
                let floor = db.head().min_valid_time();
                let mut app = db.head_mut().appender();
                for &(i, dt, vi) in samples {
                    let (l, t, v) = (labels(i), self.clock + dt, value(vi));
                    let want = if t < floor {
                        Err(AppendError::OutOfBounds)
                    } else {
                        match self.model.append(&l, t, v) {
                            MemAppend::Stored | MemAppend::Duplicate => Ok(()),
                            MemAppend::DuplicateTimestamp => Err(AppendError::DuplicateTimestamp),
                            MemAppend::OutOfOrder => Err(AppendError::OutOfOrder),
                        }
                    };
                    let got = app.append(&l, t, v).map(|_| ());
                    prop_assert_eq!(got, want, "{} t={}", l, t);
                }
                app.commit().unwrap();
                self.clock += RANGE / 4;
            }
            Op::Compact => {
                let before = self.db().blocks().len();
                let metas = self.db_mut().compact_head().unwrap();
                prop_assert_eq!(self.db().blocks().len(), before + metas.len());
                // The head keeps at most 1.5 ranges once cut.
                if let (Some(lo), Some(hi)) =
                    (self.db().head().min_time(), self.db().head().max_time())
                {
                    prop_assert!(hi - lo <= RANGE / 2 * 3 + RANGE, "head spans {lo}..{hi}");
                }
                for m in &metas {
                    prop_assert!(m.stats.num_series > 0 && m.stats.num_samples > 0);
                    prop_assert_eq!(m.max_time - m.min_time, RANGE);
                }
                self.check(&[], i64::MIN, i64::MAX)?;
            }
            Op::Merge => {
                let metas = self.db_mut().compact_blocks(RANGE * 27).unwrap();
                for m in &metas {
                    prop_assert!(m.compaction.level >= 2);
                    prop_assert!(m.max_time - m.min_time <= 27 * RANGE);
                }
                for w in self.db().blocks().windows(2) {
                    prop_assert!(
                        w[0].meta().max_time <= w[1].meta().min_time,
                        "blocks overlap"
                    );
                }
                self.check(&[], i64::MIN, i64::MAX)?;
            }
            Op::Retain(k) => {
                let t = (self.clock.div_euclid(RANGE) - k) * RANGE;
                self.db_mut().apply_retention(t).unwrap();
                prop_assert!(self.db().blocks().iter().all(|b| b.meta().max_time > t));
                // Blocks go whole: a merged block across `t` keeps its
                // samples below it (the head holds nothing below a block's
                // end, so nothing else is kept below `t`).
                let kept_from = self
                    .db()
                    .blocks()
                    .iter()
                    .map(|b| b.meta().min_time)
                    .find(|&m| m < t)
                    .unwrap_or(t);
                self.model.truncate_below(kept_from);
                self.check(&[], i64::MIN, i64::MAX)?;
            }
            Op::Select(ms, back, len) => {
                let ms: Vec<Matcher> = ms
                    .iter()
                    .map(|&(op, n, v)| Matcher::new(op, n, v).unwrap())
                    .collect();
                let lo = self.clock - back;
                self.check(&ms, lo, lo + len)?;
            }
            Op::Reopen => {
                // Drop first: the WAL's directory lock is held until then.
                drop(self.db.take());
                self.db = Some(open(self.dir.path(), self.force_pwrite));
                self.check(&[], i64::MIN, i64::MAX)?;
            }
        }
        Ok(())
    }

    fn check(&self, ms: &[Matcher], lo: i64, hi: i64) -> Result<(), TestCaseError> {
        let want = flatten(&self.model.select(ms, &SelectHints::range(lo, hi)).unwrap());
        let got = self.db().select(ms, &SelectHints::range(lo, hi)).unwrap();
        prop_assert_eq!(flatten(&got), want.clone());
        prop_assert!(got.iter().all(|s| !s.timestamps.is_empty()));
        let want_series: Vec<Labels> = want.iter().map(|s| s.0.clone()).collect();
        prop_assert_eq!(self.db().series(ms, lo, hi).unwrap(), want_series);
        prop_assert_eq!(self.db().label_names(ms, lo, hi).unwrap(), names_of(&want));
        prop_assert_eq!(
            self.db().label_values("job", ms, lo, hi).unwrap(),
            values_of(&want, "job")
        );
        // A sample cap below the answer's size fails the select.
        let total: usize = want.iter().map(|s| s.1.len()).sum();
        if total > 0 {
            let capped = SelectHints {
                max_samples: total - 1,
                ..SelectHints::range(lo, hi)
            };
            prop_assert!(self.db().select(ms, &capped).is_err());
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn db_matches_model(ops in prop::collection::vec(op(), 1..50), force_pwrite in any::<bool>()) {
        let mut run = Run::new(force_pwrite);
        for op in &ops {
            run.apply(op)?;
        }
        run.apply(&Op::Reopen)?;
    }
}
