//! Damaged WAL directories: a torn tail, garbage after the last record, a
//! flipped byte in an early segment. Replay must keep every record before
//! the damage, drop the rest with a count, never panic, and leave a
//! directory that reopens cleanly and keeps accepting writes.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_storage::{Head, HeadOptions, Labels, Select, SelectHints, WalOptions};

const SERIES: usize = 5;

fn labels(i: usize) -> Labels {
    Labels::from_pairs([("__name__", "c"), ("i", &i.to_string())]).unwrap()
}

fn wal_options() -> WalOptions {
    WalOptions {
        segment_bytes: 8 << 10,
        ..WalOptions::default()
    }
}

/// Writes `batches` commits of one sample per series, then closes.
fn write(dir: &Path, batches: i64) {
    let (mut head, _) = Head::open(dir, HeadOptions::default(), wal_options()).unwrap();
    for b in 0..batches {
        let mut app = head.appender();
        for i in 0..SERIES {
            app.append(&labels(i), b, b as f64 + i as f64).unwrap();
        }
        app.commit().unwrap();
    }
    head.sync_wal().unwrap();
}

/// Per series, the timestamps replayed; asserts every value is right.
fn read(head: &Head) -> Vec<Vec<i64>> {
    let b = head
        .select(&[], &SelectHints::range(i64::MIN, i64::MAX))
        .unwrap();
    b.iter()
        .map(|s| {
            let i: usize = s.labels.get("i").unwrap().parse().unwrap();
            for (&t, &v) in s.timestamps.iter().zip(s.values) {
                assert_eq!(v, t as f64 + i as f64);
            }
            s.timestamps.to_vec()
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 8 && fs::metadata(p).unwrap().len() > 0)
        .collect();
    v.sort();
    v
}

fn reopen_is_clean(dir: &Path, want: &[Vec<i64>]) {
    let (head, stats) = Head::open(dir, HeadOptions::default(), wal_options()).unwrap();
    assert_eq!((stats.corrupt_records, stats.truncated_bytes), (0, 0));
    assert_eq!(read(&head), want);
}

#[test]
fn garbage_after_the_last_record_is_cut_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 50);
    let last = segments(dir.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0x02, 0xff, 0x13, 0x77, 0x01]);
    fs::write(&last, &bytes).unwrap();

    let (head, stats) = Head::open(dir.path(), HeadOptions::default(), wal_options()).unwrap();
    assert_eq!(stats.corrupt_records, 1);
    assert_eq!(stats.truncated_bytes, 5);
    assert_eq!(head.counters().wal_corruptions, 1);
    assert_eq!(head.counters().wal_truncations, 1);
    assert_eq!((stats.series, stats.samples), (SERIES, 50 * SERIES as u64));
    let all: Vec<i64> = (0..50).collect();
    assert_eq!(read(&head), vec![all.clone(); SERIES]);
    drop(head);
    reopen_is_clean(dir.path(), &vec![all; SERIES]);
}

#[test]
fn a_torn_record_is_cut_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 50);
    let last = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    // Cut the last record (one commit of 5 samples) in its middle.
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 20)
        .unwrap();

    let (mut head, stats) = Head::open(dir.path(), HeadOptions::default(), wal_options()).unwrap();
    assert_eq!(stats.corrupt_records, 1);
    assert!(stats.truncated_bytes > 0);
    let kept: Vec<i64> = (0..49).collect();
    assert_eq!(read(&head), vec![kept; SERIES]);
    let mut app = head.appender();
    for i in 0..SERIES {
        app.append(&labels(i), 100, 100.0 + i as f64).unwrap();
    }
    app.commit().unwrap();
    drop(head);
    let mut want: Vec<i64> = (0..49).collect();
    want.push(100);
    reopen_is_clean(dir.path(), &vec![want; SERIES]);
}

#[test]
fn a_flipped_byte_early_keeps_the_prefix_and_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1000);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "{segs:?}");
    let mut bytes = fs::read(&segs[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&segs[1], &bytes).unwrap();

    let (head, stats) = Head::open(dir.path(), HeadOptions::default(), wal_options()).unwrap();
    assert_eq!(stats.corrupt_records, 1);
    let got = read(&head);
    assert_eq!(got.len(), SERIES);
    // Every series keeps the same gap-free prefix, ending inside segment 1.
    let n = got[0].len() as i64;
    assert!(n > 0 && n < 1000, "{n}");
    for ts in &got {
        assert_eq!(ts, &(0..n).collect::<Vec<i64>>());
    }
    assert!(segments(dir.path()).len() <= 2);
    drop(head);
    reopen_is_clean(dir.path(), &got);
}

fn assert_has_checkpoint(dir: &Path) {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("checkpoint.")),
        "{names:?}"
    );
}

#[test]
fn truncation_checkpoints_live_series_only() {
    let dir = tempfile::tempdir().unwrap();
    let opts = HeadOptions {
        chunk_range_ms: 100,
        max_series: 0,
    };
    let (mut head, _) = Head::open(dir.path(), opts.clone(), wal_options()).unwrap();
    let mut app = head.appender();
    app.append(&labels(0), 10, 10.0).unwrap();
    for t in 10..500 {
        app.append(&labels(1), t, t as f64 + 1.0).unwrap();
    }
    app.commit().unwrap();
    head.truncate_below(300).unwrap();
    // Series 0 had nothing at or after 300: collected.
    assert_eq!(head.num_series(), 1);
    assert_eq!(head.counters().series_removed, 1);
    let before = read(&head);
    drop(head);
    assert_has_checkpoint(dir.path());
    let (head, stats) = Head::open(dir.path(), opts, wal_options()).unwrap();
    assert_eq!(stats.series, 1);
    assert_eq!(head.min_valid_time(), 300);
    assert_eq!(read(&head), before);
    assert_eq!(before, vec![(300..500).collect::<Vec<i64>>()]);
}

#[test]
fn a_checkpoint_written_in_slices_while_commits_go_on_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut head, _) = Head::open(dir.path(), HeadOptions::default(), wal_options()).unwrap();
    let commit = |head: &mut Head, series: std::ops::Range<usize>, t: i64| {
        let mut app = head.appender();
        for i in series {
            app.append(&labels(i), t, t as f64 + i as f64).unwrap();
        }
        app.commit().unwrap();
    };
    for t in 0..50 {
        commit(&mut head, 0..SERIES, t);
    }
    let mut cp = head.begin_checkpoint().unwrap().expect("a WAL");
    // A second checkpoint cannot start while this one is open.
    assert!(head.begin_checkpoint().is_err());
    let mut t = 50;
    while !cp.step(&mut head, 2).unwrap() {
        // Commits between slices: to series already written to the
        // checkpoint, to series not yet written, and to new series.
        commit(&mut head, 0..SERIES + 2, t);
        t += 1;
    }
    commit(&mut head, 0..SERIES + 2, t);
    cp.finish(&mut head).unwrap().wait().unwrap();
    let before = read(&head);
    assert_eq!(before.len(), SERIES + 2);
    drop(head);
    assert_has_checkpoint(dir.path());
    let (head, stats) = Head::open(dir.path(), HeadOptions::default(), wal_options()).unwrap();
    assert_eq!(stats.corrupt_records, 0);
    assert_eq!(read(&head), before);
}

#[test]
fn a_wal_directory_opens_once_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = Head::open(dir.path(), HeadOptions::default(), wal_options()).unwrap();
    assert!(matches!(
        Head::open(dir.path(), HeadOptions::default(), wal_options()),
        Err(kiln_storage::WalError::Locked(_))
    ));
    drop(first);
    assert!(Head::open(dir.path(), HeadOptions::default(), wal_options()).is_ok());
}

mod damage {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Damage {
        Flip(prop::sample::Index, u8),
        Cut(prop::sample::Index),
        Append(Vec<u8>),
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<prop::sample::Index>(), 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
            any::<prop::sample::Index>().prop_map(Damage::Cut),
            prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Append),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the damage, replay does not panic, keeps a gap-free
        /// prefix of whole commits, and leaves a directory that reopens
        /// cleanly with the same content.
        #[test]
        fn damaged_segments_replay_to_a_prefix(damages in prop::collection::vec(damage(), 1..4)) {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), 30);
            let seg = segments(dir.path()).pop().unwrap();
            let mut bytes = fs::read(&seg).unwrap();
            for d in &damages {
                match d {
                    Damage::Flip(i, x) if !bytes.is_empty() => {
                        let at = i.index(bytes.len());
                        bytes[at] ^= x;
                    }
                    Damage::Cut(i) if !bytes.is_empty() => bytes.truncate(i.index(bytes.len())),
                    Damage::Append(extra) => bytes.extend_from_slice(extra),
                    _ => {}
                }
            }
            fs::write(&seg, &bytes).unwrap();
            let (head, _) = Head::open(dir.path(), HeadOptions::default(), wal_options()).unwrap();
            let got = read(&head);
            if let Some(first) = got.first() {
                prop_assert_eq!(first, &(0..first.len() as i64).collect::<Vec<i64>>());
                for ts in &got {
                    prop_assert_eq!(ts, first);
                }
            }
            drop(head);
            reopen_is_clean(dir.path(), &got);
        }
    }
}
