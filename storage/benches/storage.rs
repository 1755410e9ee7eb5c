//! Criterion benches of the storage kernel: chunk encode/decode, head
//! append by ref, a 3-matcher select over 1 M series in the head and in a
//! block. Before measuring, it prints the figures that are not timings:
//! bytes per sample on node-exporter-like data, head memory per series,
//! block bytes per sample, and the time to write a block.
//!
//! Timings are CPU time of the whole process (`CLOCK_PROCESS_CPUTIME_ID`),
//! not wall time: the development machines are shared by several builders,
//! and CPU time does not count the time the bench waits for a core. It does
//! count the WAL writer thread.
//!
//! Run (figures in docs/benchmarks.md):
//! `CARGO_TARGET_DIR=/work/target-storage cargo bench -p kiln-storage --bench storage -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use kiln_storage::{
    Block, BlockWriter, ChunkIter, Head, HeadOptions, HeadRef, Labels, MAX_CHUNK_SAMPLES, MatchOp,
    Matcher, OpenChunk, Select, SelectHints,
};

#[path = "../tests/support/node_exporter.rs"]
mod node_exporter;

const START_MS: i64 = 1_700_000_000_000;

/// CPU time consumed by the process, all threads.
struct ProcessCpu;

fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and an owned, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Durations print the same whatever clock measured them.
static DURATION_FORMAT: WallTime = WallTime;

impl Measurement for ProcessCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        process_cpu()
    }

    fn end(&self, start: Duration) -> Duration {
        process_cpu().saturating_sub(start)
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        DURATION_FORMAT.formatter()
    }
}

/// Resident set size of this process, bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `targets` copies of the node-exporter series, one `instance` each.
fn fleet(targets: usize, scrapes: usize) -> Vec<node_exporter::Series> {
    let mut out = Vec::new();
    for k in 0..targets {
        for s in node_exporter::generate(scrapes, START_MS, k as u64 + 1) {
            let mut b = s.labels.builder();
            b.set("instance", &format!("host-{k}:9100"));
            b.set("job", "node");
            out.push(node_exporter::Series {
                labels: b.build().unwrap(),
                samples: s.samples,
            });
        }
    }
    out
}

fn report_sizes() {
    // Bytes per sample: two hours of scrapes, 120-sample chunks.
    let series = node_exporter::generate(480, START_MS, 42);
    let (mut bytes, mut samples) = (0usize, 0usize);
    for s in &series {
        for part in s.samples.chunks(usize::from(MAX_CHUNK_SAMPLES)) {
            let mut c = OpenChunk::new();
            for &(t, v) in part {
                c.append(t, v);
            }
            bytes += c.bytes().len();
            samples += part.len();
        }
    }
    eprintln!(
        "chunk size: {:.3} bytes/sample on node-exporter-like data ({samples} samples, {} series)",
        bytes as f64 / samples as f64,
        series.len()
    );

    // Head memory: 20 targets, one hour of scrapes.
    let targets = fleet(20, 240);
    let before = rss();
    let mut head = Head::new(HeadOptions::default());
    let mut refs: Vec<HeadRef> = Vec::new();
    for k in 0..240 {
        let mut app = head.appender();
        if k == 0 {
            for s in &targets {
                let (t, v) = s.samples[0];
                refs.push(app.append(&s.labels, t, v).unwrap());
            }
        } else {
            for (s, &r) in targets.iter().zip(&refs) {
                let (t, v) = s.samples[k];
                app.append_ref(r, t, v).unwrap();
            }
        }
        app.commit().unwrap();
    }
    let grown = rss().saturating_sub(before);
    let m = head.memory();
    eprintln!(
        "head memory: {} series, {} samples: {} bytes accounted ({} in chunks) = {:.0} bytes/series besides chunks, {:.2} chunk bytes/sample; RSS grew {} bytes = {:.0} bytes/series",
        m.series,
        m.samples,
        m.bytes_total,
        m.chunk_bytes,
        (m.bytes_total - m.chunk_bytes) as f64 / m.series as f64,
        m.chunk_bytes as f64 / m.samples as f64,
        grown,
        grown as f64 / m.series as f64
    );
    report_wal(&targets);
    let (dir, _, meta) = write_block(&head, START_MS, START_MS + 7_200_000);
    let bytes = Block::open(&dir).unwrap().size_bytes();
    eprintln!(
        "block: the hour of 20 node exporters in {} bytes = {:.3} bytes/sample (chunks, index and meta)",
        bytes,
        bytes as f64 / meta.stats.num_samples as f64
    );
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// Writes every chunk of `head` inside `[mint, maxt)` as a block in a new
/// temporary directory, timing it (wall and process CPU).
fn write_block(
    head: &Head,
    mint: i64,
    maxt: i64,
) -> (
    std::path::PathBuf,
    (Duration, Duration),
    kiln_storage::BlockMeta,
) {
    let parent = tempfile::tempdir().unwrap().keep();
    let (cpu, wall) = (process_cpu(), std::time::Instant::now());
    let mut w = BlockWriter::new(&parent, mint, maxt, 1, Vec::new(), false).unwrap();
    let mut failed = None;
    head.series_chunks(0..head.series_slots(), mint, maxt, |l, c| {
        if let Err(e) = w.add_series(l, c) {
            failed = Some(e);
        }
    });
    assert!(failed.is_none(), "{failed:?}");
    let copied = wall.elapsed();
    let (dir, meta) = w.finish().unwrap();
    eprintln!(
        "block write: copying {} series' chunks (the shard's part) took {copied:.2?}, sorting and writing the index {:.2?}",
        meta.stats.num_series,
        wall.elapsed() - copied
    );
    (dir, (wall.elapsed(), process_cpu() - cpu), meta)
}

/// WAL bytes per sample and replay speed: one hour of 20 node exporters
/// written through a WAL-backed head, then reopened.
fn report_wal(targets: &[node_exporter::Series]) {
    let dir = tempfile::tempdir().unwrap();
    let (mut head, _) = Head::open(dir.path(), HeadOptions::default(), Default::default()).unwrap();
    let mut refs: Vec<HeadRef> = Vec::new();
    for k in 0..240 {
        let mut app = head.appender();
        for (i, s) in targets.iter().enumerate() {
            let (t, v) = s.samples[k];
            match refs.get(i) {
                Some(&r) => app.append_ref(r, t, v).unwrap(),
                None => refs.push(app.append(&s.labels, t, v).unwrap()),
            }
        }
        app.commit().unwrap();
    }
    head.sync_wal().unwrap();
    let written = head.counters().wal_bytes_written;
    let samples = head.counters().samples_appended;
    drop(head);
    let cpu = process_cpu();
    let wall = std::time::Instant::now();
    let (head, stats) = Head::open(dir.path(), HeadOptions::default(), Default::default()).unwrap();
    let (wall, cpu) = (wall.elapsed(), process_cpu() - cpu);
    assert_eq!(stats.samples, samples);
    eprintln!(
        "WAL: {:.2} bytes/sample written; replay of {} series, {} samples: {:.2?} wall, {:.2?} CPU = {:.1} M samples per CPU-second",
        written as f64 / samples as f64,
        stats.series,
        stats.samples,
        wall,
        cpu,
        stats.samples as f64 / cpu.as_secs_f64() / 1e6
    );
    drop(head);
}

fn chunks(c: &mut Criterion<ProcessCpu>) {
    report_sizes();
    let series = node_exporter::generate(120, START_MS, 7);
    let samples: usize = series.iter().map(|s| s.samples.len()).sum();
    let encoded: Vec<Box<[u8]>> = series
        .iter()
        .map(|s| {
            let mut c = OpenChunk::new();
            for &(t, v) in &s.samples {
                c.append(t, v);
            }
            c.finish()
        })
        .collect();
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Elements(samples as u64));
    g.bench_function("encode node-exporter", |b| {
        b.iter(|| {
            for s in &series {
                let mut c = OpenChunk::new();
                for &(t, v) in &s.samples {
                    c.append(t, v);
                }
                black_box(c.bytes().len());
            }
        })
    });
    g.bench_function("decode node-exporter", |b| {
        b.iter(|| {
            let mut sum = 0.0;
            for bytes in &encoded {
                let mut it = ChunkIter::new(bytes).unwrap();
                while let Some((_, v)) = it.next_sample().unwrap() {
                    sum += v;
                }
            }
            black_box(sum)
        })
    });
    g.finish();
}

/// One scrape of 20 node exporters per iteration, appended by ref and
/// committed, into `head`.
fn bench_scrapes(g: &mut BenchmarkGroup<'_, ProcessCpu>, name: &str, head: &mut Head) {
    let targets = fleet(20, 1);
    let mut app = head.appender();
    let refs: Vec<HeadRef> = targets
        .iter()
        .map(|s| app.append(&s.labels, START_MS, s.samples[0].1).unwrap())
        .collect();
    app.commit().unwrap();
    let values: Vec<f64> = targets.iter().map(|s| s.samples[0].1).collect();
    g.throughput(Throughput::Elements(refs.len() as u64));
    let mut t = START_MS;
    g.bench_function(name, |b| {
        b.iter(|| {
            t += 15_000;
            let mut app = head.appender();
            for (i, (&r, &v)) in refs.iter().zip(&values).enumerate() {
                // Counters grow a little each scrape; constants stay.
                let v = if i % 3 == 0 { v + (t % 97) as f64 } else { v };
                app.append_ref(r, t, v).unwrap();
            }
            app.commit().unwrap()
        })
    });
}

fn append(c: &mut Criterion<ProcessCpu>) {
    let mut g = c.benchmark_group("head");
    let mut head = Head::new(HeadOptions::default());
    bench_scrapes(
        &mut g,
        "append_ref + commit, 20 node exporters, no WAL",
        &mut head,
    );
    drop(head);
    let dir = tempfile::tempdir().unwrap();
    let (mut head, _) = Head::open(dir.path(), HeadOptions::default(), Default::default()).unwrap();
    bench_scrapes(
        &mut g,
        "append_ref + commit, 20 node exporters, WAL",
        &mut head,
    );
    g.finish();
}

fn select(c: &mut Criterion<ProcessCpu>) {
    // 1 M series: 100 metrics × 10 jobs × 1000 instances.
    let mut head = Head::new(HeadOptions::default());
    for m in 0..100 {
        let mut app = head.appender();
        for j in 0..10 {
            for i in 0..1000 {
                let l = Labels::from_pairs([
                    ("__name__", format!("metric_{m}")),
                    ("job", format!("job_{j}")),
                    ("instance", format!("host-{i}:9100")),
                ])
                .unwrap();
                app.append(&l, START_MS, 1.0).unwrap();
            }
        }
        app.commit().unwrap();
    }
    let matchers = [
        Matcher::equal("__name__", "metric_42"),
        Matcher::new(MatchOp::Regex, "job", "job_1|job_2|job_3").unwrap(),
        Matcher::new(MatchOp::Regex, "instance", "host-1.*").unwrap(),
    ];
    let hints = SelectHints::range(START_MS - 1000, START_MS + 1000);
    let n = head.select(&matchers, &hints).unwrap().len();
    eprintln!(
        "select: {} series in the head, {n} match {{__name__=\"metric_42\", job=~\"job_1|job_2|job_3\", instance=~\"host-1.*\"}}",
        head.num_series()
    );
    let range = HeadOptions::default().chunk_range_ms;
    let mint = START_MS.div_euclid(range) * range;
    let (dir, (wall, cpu), meta) = write_block(&head, mint, mint + range);
    let block = Block::open(&dir).unwrap();
    assert_eq!(block.select(&matchers, &hints).unwrap().len(), n);
    eprintln!(
        "block write: {} series in {wall:.2?} wall, {cpu:.2?} CPU; {} bytes",
        meta.stats.num_series,
        block.size_bytes()
    );
    let mut g = c.benchmark_group("select");
    g.bench_function("3 matchers over 1M series", |b| {
        b.iter_batched(
            || (),
            |()| head.select(&matchers, &hints).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("3 matchers over 1M series, block", |b| {
        b.iter_batched(
            || (),
            |()| block.select(&matchers, &hints).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    drop(block);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ProcessCpu);
    targets = chunks, append, select
}
criterion_main!(benches);
