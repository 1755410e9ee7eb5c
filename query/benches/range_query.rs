//! The range query of the performance budget: `sum by (mode)
//! (rate(node_cpu_seconds_total[5m]))` over 10k series, 1 h at a 15 s step,
//! with the samples already in memory (a MemStore).

use criterion::{Criterion, criterion_group, criterion_main};
use kiln_query::{Engine, EngineOptions, QueryLimits, QueryValue};
use kiln_storage::{Labels, mem::MemStore};

const MODES: [&str; 8] = [
    "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
];
const HOUR_MS: i64 = 3_600_000;
const SCRAPE_MS: i64 = 15_000;

/// 250 instances × 5 CPUs × 8 modes = 10 000 counters, scraped every 15 s
/// from 10 minutes before the query's start to its end.
fn node_cpu_store() -> MemStore {
    let mut s = MemStore::new();
    for inst in 0..250 {
        for cpu in 0..5 {
            for (m, mode) in MODES.iter().enumerate() {
                let instance = format!("host-{inst:03}:9100");
                let cpu = cpu.to_string();
                let l = Labels::from_pairs([
                    ("__name__", "node_cpu_seconds_total"),
                    ("cpu", cpu.as_str()),
                    ("instance", instance.as_str()),
                    ("job", "node"),
                    ("mode", mode),
                ])
                .expect("valid labels");
                let rate = 0.01 * (m as f64 + 1.0);
                let mut v = 1000.0 * (inst as f64 + 1.0);
                let mut t = -600_000;
                while t <= HOUR_MS {
                    s.insert(&l, t, v);
                    v += rate * 15.0;
                    t += SCRAPE_MS;
                }
            }
        }
    }
    s
}

fn bench(c: &mut Criterion) {
    let store = node_cpu_store();
    let engine = Engine::new(EngineOptions::default());
    let q = "sum by (mode) (rate(node_cpu_seconds_total[5m]))";
    let limits = QueryLimits::default();
    let run = || {
        engine
            .range_query(&store, q, 0, HOUR_MS, SCRAPE_MS, &limits)
            .expect("query runs")
    };
    let QueryValue::Matrix(m) = run().value else {
        panic!("a range query returns a matrix")
    };
    assert_eq!(m.len(), MODES.len());
    assert_eq!(m[0].samples.len(), 241);
    c.bench_function("sum_by_mode_rate_10k_series_1h_15s", |b| b.iter(run));
}

criterion_group!(benches, bench);
criterion_main!(benches);
