//! Exposition parsing throughput on a real node_exporter 1.5.0 body
//! (testdata/exposition/node_exporter-1.5.0.t0.prom, 507 samples).
//!
//! * `parse`: the scrape hot path: every entry yielded, every sample's
//!   series bytes, value and timestamp read; no label sets built.
//! * `parse_and_build_labels`: the same plus `to_labels` for every sample,
//!   the cost of a scrape whose series are all new to the cache.
//!
//! Throughput is reported in elements = samples. Time is the bench
//! thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the bench
//! machines are shared, and time spent descheduled is not parsing time.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_ingest::exposition::{Entry, Format, Parser};

/// CPU time of the calling thread, as a criterion measurement.
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the
    // call, and CLOCK_THREAD_CPUTIME_ID is supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now() - start
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

const BODY: &[u8] = include_bytes!("../../testdata/exposition/node_exporter-1.5.0.t0.prom");

fn samples(body: &[u8]) -> u64 {
    Parser::new(body, Format::PromText)
        .filter(|e| matches!(e, Ok(Entry::Sample(_))))
        .count() as u64
}

fn bench(c: &mut Criterion<ThreadCpuTime>) {
    let n = samples(BODY);
    let mut g = c.benchmark_group("exposition");
    g.throughput(Throughput::Elements(n));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut acc = 0.0;
            let mut p = Parser::new(black_box(BODY), Format::PromText);
            while let Some(e) = p.next_entry() {
                if let Ok(Entry::Sample(s)) = e {
                    black_box(s.series());
                    acc += s.value();
                    black_box(s.timestamp_ms());
                }
            }
            acc
        })
    });
    g.bench_function("parse_and_build_labels", |b| {
        b.iter(|| {
            let mut p = Parser::new(black_box(BODY), Format::PromText);
            while let Some(e) = p.next_entry() {
                if let Ok(Entry::Sample(s)) = e {
                    black_box(s.to_labels().ok());
                }
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = bench
}
criterion_main!(benches);
