//! Blocks on disk: a crash at any step of persisting a head range loses
//! nothing, and a damaged block file fails reads with an error instead of
//! answering wrongly or panicking.

use std::path::{Path, PathBuf};

use kiln_storage::{
    Block, Db, HeadOptions, Labels, Matcher, Select, SelectHints, SeriesBatch, WalOptions,
};
use proptest::prelude::*;

const RANGE: i64 = 1000;

fn open(dir: &Path) -> Db {
    let head = HeadOptions {
        chunk_range_ms: RANGE,
        max_series: 0,
    };
    Db::open(dir, head, WalOptions::default()).unwrap().0
}

/// Forty series over `0..4 * RANGE`, every 10 ms, with values that vary
/// (so chunks hold real XOR and delta data).
fn fill(db: &mut Db) {
    let mut app = db.head_mut().appender();
    for t in (0..4 * RANGE).step_by(10) {
        for s in 0..40 {
            let l = Labels::from_pairs([
                ("__name__", if s % 2 == 0 { "up" } else { "load" }),
                ("instance", &format!("host-{s}")),
                ("job", if s % 3 == 0 { "node" } else { "app" }),
            ])
            .unwrap();
            app.append(&l, t, (t as f64).sin() * f64::from(s)).unwrap();
        }
    }
    app.commit().unwrap();
}

/// A fresh directory and its `Db`, filled.
fn filled() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    fill(&mut db);
    (dir, db)
}

fn everything(db: &impl Select) -> SeriesBatch {
    db.select(&[], &SelectHints::range(i64::MIN, i64::MAX))
        .unwrap()
}

#[test]
fn a_crash_after_the_block_and_before_head_truncation_loses_nothing() {
    let (dir, mut db) = filled();
    let before = everything(&db);
    let mut cut = db.begin_head_cut().unwrap().expect("a range is due");
    assert_eq!(cut.range(), (0, RANGE));
    while !cut.step(db.head(), 7).unwrap() {}
    cut.into_writer().finish().unwrap();
    // The process dies here: no install, no head truncation.
    drop(db);
    let db = open(dir.path());
    assert_eq!(db.blocks().len(), 1);
    assert_eq!(db.head().min_valid_time(), RANGE);
    assert_eq!(everything(&db), before);
}

#[test]
fn an_unfinished_block_is_removed_and_its_range_kept() {
    let (dir, mut db) = filled();
    let before = everything(&db);
    let mut cut = db.begin_head_cut().unwrap().expect("a range is due");
    cut.step(db.head(), 5).unwrap();
    // Dies mid-write: the writer's `.tmp` directory stays behind.
    std::mem::forget(cut);
    drop(db);
    let blocks = dir.path().join("blocks");
    assert_eq!(std::fs::read_dir(&blocks).unwrap().count(), 1);
    let db = open(dir.path());
    assert!(db.blocks().is_empty());
    assert_eq!(std::fs::read_dir(&blocks).unwrap().count(), 0);
    assert_eq!(everything(&db), before);
}

#[test]
fn cut_blocks_hold_the_head_ranges_and_the_head_forgets_them() {
    let (_dir, mut db) = filled();
    let before = everything(&db);
    let metas = db.compact_head().unwrap();
    // 0..3990 spans 4 ranges: ranges are cut while the head spans more
    // than 1.5 of them.
    assert_eq!(
        metas
            .iter()
            .map(|m| (m.min_time, m.max_time))
            .collect::<Vec<_>>(),
        vec![(0, RANGE), (RANGE, 2 * RANGE), (2 * RANGE, 3 * RANGE)]
    );
    for m in &metas {
        assert_eq!(m.stats.num_series, 40);
        assert_eq!(m.stats.num_samples, 40 * 100);
    }
    assert_eq!(db.head().min_time(), Some(3 * RANGE));
    assert_eq!(everything(&db), before);
    // A series that got no sample for a whole range is gone from the head
    // once that range is cut, and still answers from the block.
    let gone = Labels::from_pairs([("__name__", "gone"), ("job", "x")]).unwrap();
    let mut app = db.head_mut().appender();
    app.append(&gone, 3 * RANGE + 5, 1.0).unwrap();
    app.commit().unwrap();
    assert_eq!(db.head().num_series(), 41);
    let mut app = db.head_mut().appender();
    let l =
        Labels::from_pairs([("__name__", "up"), ("instance", "host-0"), ("job", "node")]).unwrap();
    app.append(&l, 5 * RANGE, 1.0).unwrap();
    app.commit().unwrap();
    // The head now spans 3000..5000: one more range is cut, and only the
    // series with a sample at or after 4000 stays.
    assert_eq!(db.compact_head().unwrap().len(), 1);
    assert_eq!(db.head().num_series(), 1);
    let m = [Matcher::equal("__name__", "gone")];
    let got = db
        .select(&m, &SelectHints::range(i64::MIN, i64::MAX))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got.timestamps().values(), &[3 * RANGE + 5]);
}

/// A block written from `fill`, and its directory.
fn sample_block() -> (tempfile::TempDir, PathBuf) {
    let (dir, mut db) = filled();
    db.compact_head().unwrap();
    let block = db.blocks()[0].dir().to_owned();
    drop(db);
    (dir, block)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("chunks")).unwrap();
    for f in ["meta.json", "index", "chunks/000001"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// One flipped byte anywhere in the index or the chunk segment: opening
    /// or reading fails, or the answer is exactly the undamaged one.
    #[test]
    fn a_flipped_byte_is_an_error_never_a_wrong_answer(
        in_index in any::<bool>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        matcher in prop::sample::select(vec!["", "up", "load"]),
    ) {
        let (_keep, block) = sample_block();
        let damaged = tempfile::tempdir().unwrap();
        copy_dir(&block, damaged.path());
        let file = damaged.path().join(if in_index { "index" } else { "chunks/000001" });
        let mut bytes = std::fs::read(&file).unwrap();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        std::fs::write(&file, &bytes).unwrap();
        let Ok(b) = Block::open(damaged.path()) else {
            return Ok(());
        };
        let ms: Vec<Matcher> = if matcher.is_empty() {
            Vec::new()
        } else {
            vec![Matcher::equal("__name__", matcher)]
        };
        let hints = SelectHints::range(i64::MIN, i64::MAX);
        let undamaged = Block::open(&block).unwrap();
        prop_assert_eq!(undamaged.select(&[], &hints).unwrap().len(), 40);
        if let Ok(got) = b.select(&ms, &hints) {
            prop_assert_eq!(got, undamaged.select(&ms, &hints).unwrap());
        }
        if let Ok(got) = b.label_values("instance", &ms, i64::MIN, i64::MAX) {
            prop_assert_eq!(got, undamaged.label_values("instance", &ms, i64::MIN, i64::MAX).unwrap());
        }
        if let Ok(got) = b.label_names(&ms, 0, RANGE / 2) {
            prop_assert_eq!(got, undamaged.label_names(&ms, 0, RANGE / 2).unwrap());
        }
    }
}

#[test]
fn a_crash_between_a_merge_and_deleting_its_sources_loses_and_doubles_nothing() {
    let (dir, mut db) = filled();
    let mut app = db.head_mut().appender();
    let l = Labels::from_pairs([("__name__", "late")]).unwrap();
    app.append(&l, 6 * RANGE, 1.0).unwrap();
    app.commit().unwrap();
    // 0..3990 and 6000: the four ranges 0..4000 are cut into blocks.
    assert_eq!(db.compact_head().unwrap().len(), 4);
    let before = everything(&db);
    let group = db.plan_merge(3 * RANGE).expect("0..3000 is complete");
    assert_eq!(group.len(), 3);
    let (parent, pwrite) = db.block_target();
    let refs: Vec<&Block> = group.iter().map(|b| &**b).collect();
    let (merged, meta) = kiln_storage::block::merge_blocks(&refs, &parent, pwrite).unwrap();
    assert_eq!(
        (meta.min_time, meta.max_time, meta.compaction.level),
        (0, 3 * RANGE, 2)
    );
    assert_eq!(meta.stats.num_series, 40);
    assert_eq!(meta.stats.num_samples, 3 * 40 * 100);
    assert_eq!(meta.compaction.sources.len(), 3);
    // Dies before installing: the merged block and its sources are all on
    // disk.
    drop(refs);
    drop(group);
    drop(db);
    let db = open(dir.path());
    let kept: Vec<(i64, i64)> = db
        .blocks()
        .iter()
        .map(|b| (b.meta().min_time, b.meta().max_time))
        .collect();
    assert_eq!(kept, vec![(0, 3 * RANGE), (3 * RANGE, 4 * RANGE)]);
    assert_eq!(db.blocks()[0].dir(), merged);
    assert_eq!(everything(&db), before);
}

#[test]
fn a_damaged_block_is_set_aside_at_open_and_the_rest_serves() {
    let (dir, mut db) = filled();
    db.compact_head().unwrap();
    let damaged = db.blocks()[1].dir().to_owned();
    let (lo, hi) = (
        db.blocks()[1].meta().min_time,
        db.blocks()[1].meta().max_time,
    );
    let all = SelectHints::range(i64::MIN, i64::MAX);
    // What stays readable: everything outside the damaged block's range.
    let outside = |b: &SeriesBatch| -> Vec<(Labels, Vec<i64>)> {
        b.iter()
            .map(|s| {
                let ts = s.timestamps.iter().copied().filter(|&t| t < lo || t >= hi);
                (s.labels.clone(), ts.collect())
            })
            .collect()
    };
    let before = outside(&db.select(&[], &all).unwrap());
    drop(db);
    let index = damaged.join("index");
    let mut bytes = std::fs::read(&index).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&index, bytes).unwrap();
    let db = open(dir.path());
    assert_eq!(db.counters().blocks_quarantined, 1);
    assert_eq!(db.blocks().len(), 2);
    assert!(damaged.with_extension("corrupt").join("index").is_file());
    let after = db.select(&[], &all).unwrap();
    assert!(
        after
            .timestamps()
            .values()
            .iter()
            .all(|&t| t < lo || t >= hi)
    );
    assert_eq!(outside(&after), before);
    // Set aside once: the next open neither reads nor counts it again.
    drop(db);
    let db = open(dir.path());
    assert_eq!(db.counters().blocks_quarantined, 0);
    assert_eq!(db.blocks().len(), 2);
}
