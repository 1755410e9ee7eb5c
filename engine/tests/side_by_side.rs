//! kiln next to a real Prometheus (Debian's package; `scripts/test.sh`
//! installs it): both scrape the same targets with the same prometheus.yml
//! for about a minute, then must give the same answers to the same queries.
//!
//! The targets put explicit timestamps on their samples (one slot = two
//! scrape intervals), so both servers store identical data whatever their
//! scrape phases; answers are compared exactly for labels and timestamps
//! and with promqltest's float tolerance for values (sums may add in a
//! different order).
//!
//! A second kiln scrapes the same targets with 10-second blocks, so that
//! its answers come from blocks (cut, merged into 30-second windows) and
//! its head together; it must answer as Prometheus does too.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::prometheus::start_prometheus;
use common::{Kiln, request, targets};
use serde_json::Value;

const SCRAPE_MS: i64 = 1000;
const SLOT_MS: i64 = 2 * SCRAPE_MS;
const RUN: Duration = Duration::from_secs(60);

fn get_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let r = request(addr, "GET", path, &[], b"");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{addr}{path}: not JSON ({e}): {}",
            String::from_utf8_lossy(&r.body)
        )
    })
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sample values (the string of a `[t, "v"]` point) compare with
/// promqltest's tolerance; everything else — labels included — exactly.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) if is_point(x) && is_point(y) => {
            x[0] == y[0] && same_value(&x[1], &y[1])
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn is_point(v: &[Value]) -> bool {
    v.len() == 2 && v[0].is_number() && v[1].is_string()
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (
        a.as_str().map(str::parse::<f64>),
        b.as_str().map(str::parse::<f64>),
    ) {
        (Some(Ok(x)), Some(Ok(y))) => {
            x == y
                || (x.is_nan() && y.is_nan())
                || (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1e-300)
        }
        _ => a == b,
    }
}

/// Orders vector/matrix results by their label sets (Prometheus does not
/// promise an order unless the query sorts), and drops `infos`: info
/// annotations are Prometheus 3's, which 2.42 does not send.
fn canonical(mut v: Value, sorted: bool) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("infos");
    }
    if !sorted && let Some(Value::Array(items)) = v.pointer_mut("/data/result") {
        items.sort_by_key(|i| i.get("metric").map(|m| m.to_string()).unwrap_or_default());
    }
    v
}

#[test]
fn kiln_answers_as_prometheus_does_on_the_same_data() {
    let t = targets::start(3, SLOT_MS);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    let list: Vec<String> = t.addrs.iter().map(|a| format!("\"{a}\"")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: {SCRAPE_MS}ms\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: sbs\n    static_configs:\n      - targets: [{}]\n        labels:\n          env: test\n",
            list.join(", ")
        ),
    )
    .expect("write config");
    let prom = start_prometheus(&config);
    let kiln = Kiln::start(&[&format!("--config.file={}", config.display())]);
    let blocks = Kiln::start(&[
        &format!("--config.file={}", config.display()),
        "--storage.tsdb.min-block-duration=10s",
    ]);
    let started = now_ms();
    std::thread::sleep(RUN);

    // Evaluate a few slots back, so both servers have scraped every slot up
    // to it, and half a slot off the sample grid: Prometheus 2.42 (the
    // Debian package) includes a sample exactly at a range's left edge,
    // Prometheus 3 and kiln do not (docs/compatibility.md), and off-grid
    // windows never have one there.
    let eval = (now_ms() - 3 * SLOT_MS) / SLOT_MS * SLOT_MS + SLOT_MS / 2;
    let range_start = (started + 8 * SLOT_MS) / SLOT_MS * SLOT_MS + SLOT_MS / 2;
    assert!(range_start + 10 * SLOT_MS < eval, "run too short");
    let mut failures = differences(prom.addr, kiln.addr, eval, range_start, true);
    for f in differences(prom.addr, blocks.addr, eval, range_start, false) {
        failures.push(format!("(kiln with 10-s blocks) {f}"));
    }
    let cut = blocks.get("/metrics").text();
    assert!(
        cut.lines()
            .any(|l| l.starts_with("prometheus_tsdb_compactions_total ") && !l.ends_with(" 0")),
        "the kiln with 10-s blocks cut none"
    );
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// What `kiln` answers differently from `prom`: queries at `eval`, ranges
/// from `range_start`, metadata, federation, errors, and — when
/// `head_stats` (both heads then hold the same data) — `status/tsdb`.
fn differences(
    prom: std::net::SocketAddr,
    kiln: std::net::SocketAddr,
    eval: i64,
    range_start: i64,
    head_stats: bool,
) -> Vec<String> {
    let instant = [
        ("test_requests_total", false),
        ("test_temperature_celsius", false),
        ("rate(test_requests_total[10s])", false),
        ("increase(test_requests_total[20s])", false),
        ("sum by (path) (rate(test_requests_total[10s]))", false),
        ("topk(2, test_temperature_celsius)", false),
        ("sort_desc(test_requests_total)", true),
        (
            "histogram_quantile(0.9, sum by (le) (rate(test_latency_seconds_bucket[10s])))",
            false,
        ),
        ("avg_over_time(test_temperature_celsius[30s])", false),
        ("test_temperature_celsius[30s]", false),
        ("test_requests_total offset 10s", false),
        ("count by (instance) (test_requests_total)", false),
        (
            "test_requests_total / on(instance, job, env) group_left test_temperature_celsius",
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (q, sorted) in instant {
        let path = format!("/api/v1/query?query={}&time={}", enc(q), secs(eval));
        let a = canonical(get_json(prom, &path), sorted);
        let b = canonical(get_json(kiln, &path), sorted);
        if a["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            failures.push(format!("{q}: prometheus returned no data: {a}"));
        } else if !same(&a, &b) {
            failures.push(format!("{q}:\n  prometheus: {a}\n  kiln:       {b}"));
        }
    }
    // Every range below is a whole number of slots, so with off-grid
    // evaluation times no window edge falls on a sample.
    let range = [
        "test_requests_total",
        "rate(test_requests_total[10s])",
        "sum by (path) (rate(test_requests_total[10s]))",
        "histogram_quantile(0.5, rate(test_latency_seconds_bucket[6s]))",
        "max_over_time(test_temperature_celsius[4s])",
    ];
    for q in range {
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={}",
            enc(q),
            secs(range_start),
            secs(eval),
            secs(SLOT_MS)
        );
        let a = canonical(get_json(prom, &path), false);
        let b = canonical(get_json(kiln, &path), false);
        if a["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            failures.push(format!("{q}: prometheus returned no data: {a}"));
        } else if !same(&a, &b) {
            failures.push(format!("range {q}:\n  prometheus: {a}\n  kiln:       {b}"));
        }
    }
    let window = format!("start={}&end={}", secs(range_start), secs(eval));
    let metadata = [
        format!(
            "/api/v1/series?match[]={}&{window}",
            enc("{__name__=~\"test_.*\"}")
        ),
        format!(
            "/api/v1/labels?match[]={}&{window}",
            enc("test_requests_total")
        ),
        format!(
            "/api/v1/label/instance/values?match[]={}&{window}",
            enc("test_temperature_celsius")
        ),
        format!("/api/v1/label/path/values?{window}"),
        "/api/v1/metadata".to_owned(),
        "/api/v1/metadata?metric=test_latency_seconds".to_owned(),
    ];
    for path in &metadata {
        let mut a = get_json(prom, path);
        let mut b = get_json(kiln, path);
        for v in [&mut a, &mut b] {
            if let Some(Value::Array(items)) = v.pointer_mut("/data") {
                items.sort_by_key(|i| i.to_string());
            }
        }
        if !same(&a, &b) {
            failures.push(format!("{path}:\n  prometheus: {a}\n  kiln:       {b}"));
        }
    }
    if head_stats {
        failures.extend(status_differences(prom, kiln));
    }
    failures.extend(federation_and_error_differences(prom, kiln));
    failures
}

/// `status/tsdb` of two servers whose heads hold the same data.
fn status_differences(prom: std::net::SocketAddr, kiln: std::net::SocketAddr) -> Vec<String> {
    let mut failures = Vec::new();
    // Cardinality statistics over the same series (times and chunk counts
    // aside: report series carry each server's own scrape times).
    let a = get_json(prom, "/api/v1/status/tsdb?limit=1000");
    let b = get_json(kiln, "/api/v1/status/tsdb?limit=1000");
    for key in [
        "seriesCountByMetricName",
        "labelValueCountByLabelName",
        "memoryInBytesByLabelName",
        "seriesCountByLabelValuePair",
    ] {
        let sorted = |v: &Value| {
            let mut items = v["data"][key].as_array().cloned().unwrap_or_default();
            items.sort_by_key(|i| i.to_string());
            items
        };
        // 2.42 caps the label-pair list at 10 whatever `limit` says (ties
        // broken its own way): each of its entries must be among kiln's.
        let (pa, pb) = (sorted(&a), sorted(&b));
        let agree = if key == "seriesCountByLabelValuePair" {
            pa.iter().all(|e| pb.contains(e))
        } else {
            pa == pb
        };
        if !agree || pa.is_empty() {
            failures.push(format!(
                "status/tsdb {key}:\n  prometheus: {}\n  kiln:       {}",
                a["data"][key], b["data"][key]
            ));
        }
    }
    // Both servers cut chunks at 120 samples and at the same aligned
    // 2-h boundaries, so on identical data they hold as many chunks.
    let head = |v: &serde_json::Value, k: &str| v["data"]["headStats"][k].clone();
    if head(&a, "numSeries") != head(&b, "numSeries")
        || head(&a, "chunkCount") != head(&b, "chunkCount")
        || head(&b, "chunkCount").as_u64().is_none_or(|n| n == 0)
    {
        failures.push(format!(
            "status/tsdb headStats:\n  prometheus: {a}\n  kiln:       {b}"
        ));
    }
    failures
}

/// Federation and error answers of two servers.
fn federation_and_error_differences(
    prom: std::net::SocketAddr,
    kiln: std::net::SocketAddr,
) -> Vec<String> {
    let mut failures = Vec::new();
    // Federation: the newest sample of each series, as text. Both answer
    // "now", so a new slot may land between the two requests: retry.
    let fed = format!(
        "/federate?match[]={}&match[]={}",
        enc("test_temperature_celsius"),
        enc("{__name__=~\"test_requests_total\",path=\"/a\"}")
    );
    let lines = |addr| {
        let r = request(addr, "GET", &fed, &[], b"");
        let mut l: Vec<String> = String::from_utf8_lossy(&r.body)
            .lines()
            .map(str::to_owned)
            .collect();
        l.sort();
        l
    };
    let mut agreed = false;
    for _ in 0..5 {
        let (a, b) = (lines(prom), lines(kiln));
        if a == b && a.len() > 3 {
            agreed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    if !agreed {
        failures.push(format!(
            "{fed}:\n  prometheus: {:?}\n  kiln:       {:?}",
            lines(prom),
            lines(kiln)
        ));
    }
    // Errors: same type and text for the same mistake.
    for path in [
        "/api/v1/query?query=sum(",
        "/api/v1/query_range?query=up&start=10&end=1&step=1",
        "/api/v1/query_range?query=up&start=1&end=10&step=0",
        "/api/v1/query?query=up&time=yesterday",
        "/api/v1/series",
    ] {
        let a = request(prom, "GET", path, &[], b"");
        let b = request(kiln, "GET", path, &[], b"");
        let (ja, jb): (Value, Value) = (
            serde_json::from_slice(&a.body).unwrap_or_default(),
            serde_json::from_slice(&b.body).unwrap_or_default(),
        );
        if a.status != b.status || ja != jb {
            failures.push(format!(
                "{path}:\n  prometheus: {} {ja}\n  kiln:       {} {jb}",
                a.status, b.status
            ));
        }
    }
    failures
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}
