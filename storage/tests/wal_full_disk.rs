//! A WAL that cannot write: a child process (this test binary re-executed)
//! lowers its file-size limit (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored) so
//! WAL writes fail as on a full disk, and checks that commits then fail
//! with a clear error and add nothing, that reads keep working, and that
//! once the limit is lifted writes resume and every accepted sample is on
//! disk. A checkpoint attempted meanwhile fails without replacing anything.
//! Then, in the same child, a head range cut into a block under the limit
//! fails too, leaving no partial block and the head's data in place, and
//! succeeds once space returns. The limit is per process, so this runs in
//! a child: one per I/O path (io_uring, pwrite), each checked by a test
//! that re-runs this binary and reads what the child printed.

use std::process::Command;
use std::time::{Duration, Instant};

use kiln_storage::{Db, Head, HeadOptions, Labels, Select, SelectHints, WalError, WalOptions};

const CHILD_DIR_ENV: &str = "KILN_WAL_FULL_DISK_CHILD_DIR";

fn labels() -> Labels {
    Labels::from_pairs([("__name__", "disk"), ("k", "v")]).unwrap()
}

fn set_fsize_limit(bytes: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn other() -> Labels {
    Labels::from_pairs([("__name__", "disk"), ("k", "new")]).unwrap()
}

fn samples(head: &Head) -> Vec<i64> {
    let m = [kiln_storage::Matcher::equal("k", "v")];
    head.select(&m, &SelectHints::range(i64::MIN, i64::MAX))
        .unwrap()
        .timestamps()
        .values()
        .to_vec()
}

fn other_samples(head: &Head) -> Vec<i64> {
    let m = [kiln_storage::Matcher::equal("k", "new")];
    head.select(&m, &SelectHints::range(i64::MIN, i64::MAX))
        .unwrap()
        .timestamps()
        .values()
        .to_vec()
}

fn run_child(force_pwrite: bool) {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by wal_write_failure_*");
    // SAFETY: ignoring SIGXFSZ makes over-limit writes fail with EFBIG
    // instead of killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let wal = WalOptions {
        flush_interval: Duration::from_millis(5),
        force_pwrite,
        ..WalOptions::default()
    };
    let (mut head, _) = Head::open(dir.as_ref(), HeadOptions::default(), wal.clone()).unwrap();
    let mut accepted = Vec::new();
    let mut t = 0;
    let commit = |head: &mut Head, t: i64| {
        let mut app = head.appender();
        app.append(&labels(), t, t as f64).unwrap();
        app.commit()
    };
    for _ in 0..10 {
        commit(&mut head, t).unwrap();
        accepted.push(t);
        t += 1;
    }
    head.sync_wal().unwrap();

    set_fsize_limit(4096);
    let deadline = Instant::now() + Duration::from_secs(5);
    let failure = loop {
        assert!(Instant::now() < deadline, "writes never failed");
        match commit(&mut head, t) {
            Ok(_) => accepted.push(t),
            Err(e) => break e,
        }
        t += 1;
        std::thread::sleep(Duration::from_millis(1));
    };
    assert!(matches!(failure, WalError::WriteFailed { .. }), "{failure}");
    assert!(head.counters().wal_write_errors >= 1);
    // Refused commits add nothing; reads still work.
    assert_eq!(samples(&head), accepted);
    t += 1;
    // A checkpoint cannot be written either, and must not replace the
    // segments (the reopen below would miss samples).
    assert!(head.truncate_below(i64::MIN + 1).is_err());
    // A series first seen now is refused too; its definition must be
    // logged with its first accepted sample later.
    let mut app = head.appender();
    app.append(&other(), t, 0.5).unwrap();
    assert!(app.commit().is_err());
    assert!(other_samples(&head).is_empty());

    set_fsize_limit(u64::MAX);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "writes never resumed");
        if commit(&mut head, t).is_ok() {
            accepted.push(t);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    t += 1;
    commit(&mut head, t).unwrap();
    accepted.push(t);
    let mut app = head.appender();
    app.append(&other(), t, 0.5).unwrap();
    app.commit().unwrap();
    head.sync_wal().unwrap();
    drop(head);

    let (head, stats) = Head::open(dir.as_ref(), HeadOptions::default(), wal).unwrap();
    assert_eq!(stats.corrupt_records, 0);
    assert_eq!(samples(&head), accepted);
    assert_eq!(other_samples(&head), [t]);
    println!("wal-write-failure-ok {}", accepted.len());
    drop(head);
    block_case(&std::path::Path::new(&dir).join("db"), force_pwrite);
}

#[test]
#[ignore = "child process of wal_write_failure_*, which run it"]
fn full_disk_child_pwrite() {
    run_child(true);
}

#[test]
#[ignore = "child process of wal_write_failure_*, which run it"]
fn full_disk_child_io_uring() {
    run_child(false);
}

/// The block half of a child: `SIGXFSZ` is already ignored.
fn block_case(dir: &std::path::Path, force_pwrite: bool) {
    let opts = HeadOptions {
        chunk_range_ms: 1000,
        max_series: 0,
    };
    let wal = WalOptions {
        force_pwrite,
        ..WalOptions::default()
    };
    let (mut db, _) = Db::open(dir, opts.clone(), wal.clone()).unwrap();
    let mut app = db.head_mut().appender();
    for t in (0..4000).step_by(10) {
        for s in 0..20 {
            let l = Labels::from_pairs([("__name__", "disk"), ("s", &s.to_string())]).unwrap();
            app.append(&l, t, (t * s) as f64 / 7.0).unwrap();
        }
    }
    app.commit().unwrap();
    db.head_mut().sync_wal().unwrap();
    let all = SelectHints::range(i64::MIN, i64::MAX);
    let before = db.select(&[], &all).unwrap();

    // Each block's chunk segment alone is over 4 KiB.
    set_fsize_limit(4096);
    let err = db.compact_head().unwrap_err();
    assert!(err.to_string().contains("block I/O error"), "{err}");
    assert_eq!(db.counters().compactions_failed, 1);
    assert!(db.blocks().is_empty());
    let left: Vec<_> = std::fs::read_dir(dir.join("blocks")).unwrap().collect();
    assert!(left.is_empty(), "a failed block left {left:?}");
    assert_eq!(db.select(&[], &all).unwrap(), before);

    set_fsize_limit(u64::MAX);
    let metas = db.compact_head().unwrap();
    assert_eq!(metas.len(), 3);
    assert_eq!(db.select(&[], &all).unwrap(), before);
    drop(db);
    let (db, _) = Db::open(dir, opts, wal).unwrap();
    assert_eq!(db.blocks().len(), 3);
    assert_eq!(db.select(&[], &all).unwrap(), before);
    println!("block-write-failure-ok");
}

fn run_parent(child: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            child,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Both halves ran to their end: the WAL's and the block's.
    assert!(
        out.status.success()
            && stdout.contains("wal-write-failure-ok")
            && stdout.contains("block-write-failure-ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wal_write_failure_pwrite() {
    run_parent("full_disk_child_pwrite");
}

#[test]
fn wal_write_failure_io_uring() {
    run_parent("full_disk_child_io_uring");
}
