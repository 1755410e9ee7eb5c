//! The WAL under SIGKILL: a child process (this test binary, re-executed
//! with `--ignored --exact crash_child`) appends deterministic batches
//! through a WAL-backed head, fsyncs now and then and reports the last
//! synced batch on stdout; the parent kills it with SIGKILL at a random
//! moment, replays the directory and checks that every synced batch is
//! back, that what is back is exactly a gap-free run of whole batches with
//! the right values, and that the next child continues on top of it. Half
//! the rounds force the pwrite fallback through the environment.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use kiln_storage::{Head, HeadOptions, Labels, Select, SelectHints, WalOptions};

const CHILD_DIR_ENV: &str = "KILN_WAL_CRASH_CHILD_DIR";
const SERIES: usize = 40;
const STEP_MS: i64 = 10;

fn labels(i: usize) -> Labels {
    Labels::from_pairs([("__name__", "crash"), ("i", &i.to_string())]).unwrap()
}

fn value(batch: i64, series: usize) -> f64 {
    (batch * 31 + series as i64) as f64 * 0.25
}

fn options() -> (HeadOptions, WalOptions) {
    (
        HeadOptions {
            chunk_range_ms: 2_000,
            max_series: 0,
        },
        WalOptions {
            flush_interval: Duration::from_millis(5),
            segment_bytes: 64 << 10,
            force_pwrite: false,
        },
    )
}

#[test]
#[ignore = "child process of wal_survives_sigkill, which runs it"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by wal_survives_sigkill");
    let (opts, wal) = options();
    let (mut head, _) = Head::open(dir.as_ref(), opts, wal).unwrap();
    println!("io_uring {}", head.counters().wal_io_uring);
    let mut batch = head.max_time().map_or(0, |t| t / STEP_MS + 1);
    let mut refs = Vec::new();
    loop {
        let mut app = head.appender();
        if refs.is_empty() {
            for i in 0..SERIES {
                refs.push(
                    app.append(&labels(i), batch * STEP_MS, value(batch, i))
                        .unwrap(),
                );
            }
        } else {
            for (i, &r) in refs.iter().enumerate() {
                app.append_ref(r, batch * STEP_MS, value(batch, i)).unwrap();
            }
        }
        app.commit().unwrap();
        if batch % 7 == 0 {
            head.sync_wal().unwrap();
            println!("synced {batch}");
        }
        if batch % 400 == 399 {
            head.truncate_below((batch - 250) * STEP_MS).unwrap();
        }
        batch += 1;
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// xorshift, for kill delays.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn wal_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut synced_ever = -1i64;
    for round in 0..22 {
        let force_pwrite = round % 2 == 1;
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .env("KILN_WAL_NO_IO_URING", if force_pwrite { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + next(&mut rng) % 150));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(
            out.contains("io_uring "),
            "round {round}: child did not start: {out}"
        );
        if force_pwrite {
            assert!(!out.contains("io_uring true"), "round {round}: {out}");
        }
        for line in out.lines() {
            if let Some(b) = line.strip_prefix("synced ") {
                synced_ever = synced_ever.max(b.parse().unwrap());
            }
        }

        let (opts, wal) = options();
        let (head, stats) = Head::open(dir.path(), opts, wal).unwrap();
        let batch = head
            .select(&[], &SelectHints::range(i64::MIN, i64::MAX))
            .unwrap();
        let newest = head.max_time().map_or(-1, |t| t / STEP_MS);
        assert!(
            newest >= synced_ever,
            "round {round}: synced batch {synced_ever} lost (newest {newest}, {stats:?})"
        );
        println!(
            "round {round}: synced {synced_ever}, replayed up to batch {newest}, {stats:?}, child io_uring: {}",
            out.lines()
                .find_map(|l| l.split_once("io_uring ").map(|x| x.1))
                .unwrap_or("no output")
        );
        let first = (head.min_valid_time().max(0) + STEP_MS - 1) / STEP_MS;
        assert_eq!(batch.len(), if newest >= 0 { SERIES } else { 0 });
        for s in batch.iter() {
            let i: usize = s.labels.get("i").unwrap().parse().unwrap();
            let want: Vec<i64> = (first..=newest).map(|b| b * STEP_MS).collect();
            assert_eq!(s.timestamps, &want[..], "round {round} series {i}");
            for (&t, &v) in s.timestamps.iter().zip(s.values) {
                assert_eq!(v, value(t / STEP_MS, i));
            }
        }
    }
    assert!(synced_ever > 0, "the children never synced");
}
