//! A scrape's body into the head through a warm scrape cache: the steady
//! state of every scrape loop, where each series is already known. One
//! iteration is one node_exporter 1.5.0 body (507 samples) parsed, looked up
//! in the cache, appended by reference and committed, 15 s after the
//! previous one. The head is memory-only (no WAL), so the figure is the
//! parse + cache + head path the budget names ("scrape cache hit + head
//! append", ≥ 5 M samples/s on one core).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_ingest::exposition::Format;
use kiln_ingest::scrape::{ScrapeCache, ScrapeSettings};
use kiln_storage::{Head, HeadOptions, Labels};

const BODY: &[u8] = include_bytes!("../../testdata/exposition/node_exporter-1.5.0.t0.prom");

fn settings() -> ScrapeSettings {
    ScrapeSettings::new(
        Labels::from_pairs([("instance", "10.0.0.1:9100"), ("job", "node")]).expect("valid labels"),
    )
}

fn scrape_into_head(c: &mut Criterion) {
    let samples = kiln_ingest::exposition::Parser::new(BODY, Format::PromText)
        .filter(|e| matches!(e, Ok(kiln_ingest::exposition::Entry::Sample(_))))
        .count();
    let s = settings();
    let mut head = Head::new(HeadOptions::default());
    let mut cache = ScrapeCache::new();
    let mut t = 1_700_000_000_000i64;
    // Warm the cache: the first scrape creates every series.
    {
        let mut app = head.appender();
        let p = cache
            .append_body(&mut app, BODY, Format::PromText, &s, t)
            .expect("body parses");
        app.commit().expect("memory-only head");
        cache.commit(p);
    }
    let mut g = c.benchmark_group("scrape");
    g.throughput(Throughput::Elements(samples as u64));
    g.bench_function("cache_hit_append_commit", |b| {
        b.iter(|| {
            t += 15_000;
            let mut app = head.appender();
            let p = cache
                .append_body(&mut app, black_box(BODY), Format::PromText, &s, t)
                .expect("body parses");
            app.commit().expect("memory-only head");
            black_box(cache.commit(p))
        })
    });
    g.finish();
}

criterion_group!(benches, scrape_into_head);
criterion_main!(benches);
