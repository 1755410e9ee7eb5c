//! kiln scraping a real node_exporter (Debian's `prometheus-node-exporter`,
//! which `scripts/test.sh` installs): the series it stores are the ones the
//! exporter serves, with the exporter's own metadata.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Kiln, request};
use serde_json::Value;

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[test]
fn scrapes_a_real_node_exporter() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _exporter = Exporter(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter must be installed (scripts/test.sh installs it)"),
    );
    let sock = addr.parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if std::net::TcpStream::connect(sock).is_ok() {
            let r = request(sock, "GET", "/metrics", &[], b"");
            if r.status == 200 {
                break r.text();
            }
        }
        assert!(Instant::now() < deadline, "node_exporter did not start");
        std::thread::sleep(Duration::from_millis(100));
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: [\"{addr}\"]\n"
        ),
    )
    .expect("write config");
    let kiln = Kiln::start(&[&format!("--config.file={}", cfg.display())]);
    let q = |expr: &str| -> Value {
        let path = format!(
            "/api/v1/query?query={}&time={:.3}",
            expr.bytes()
                .map(|b| format!("%{b:02X}"))
                .collect::<String>(),
            now_s()
        );
        kiln.get(&path).json()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = q("up{job=\"node\"}");
        if v["data"]["result"][0]["value"][1] == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node_exporter never came up: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));

    // Every metric family the exporter served is in kiln under job="node".
    let mut families: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    families.sort_unstable();
    families.dedup();
    assert!(
        families.len() > 50,
        "a real node_exporter serves many families"
    );
    let names = kiln
        .get("/api/v1/label/__name__/values?match[]=%7Bjob%3D%22node%22%7D")
        .json();
    let names: Vec<&str> = names["data"]
        .as_array()
        .expect("names")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in &families {
        // Histograms and summaries appear as their _bucket/_sum/_count.
        let present = names
            .iter()
            .any(|n| n == f || n.strip_prefix(f).is_some_and(|s| s.starts_with('_')));
        assert!(present, "family {f} missing from kiln");
    }
    // The scrape report counts what was served.
    let served = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count() as f64;
    let v = q("scrape_samples_scraped{job=\"node\"}");
    let scraped: f64 = v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("scrape_samples_scraped");
    // A few collectors' series come and go between scrapes.
    assert!(
        (scraped - served).abs() <= served * 0.05,
        "{scraped} vs {served}"
    );
    // Metadata comes through as the exporter declared it.
    let m = kiln
        .get("/api/v1/metadata?metric=node_cpu_seconds_total")
        .json();
    assert_eq!(
        m["data"]["node_cpu_seconds_total"][0]["type"], "counter",
        "{m}"
    );
    // A counter grows from scrape to scrape: CPU seconds never stop.
    let total = |v: &Value| -> f64 {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("a value")
    };
    let first = total(&q("sum(node_cpu_seconds_total{job=\"node\"})"));
    std::thread::sleep(Duration::from_millis(2500));
    let second = total(&q("sum(node_cpu_seconds_total{job=\"node\"})"));
    assert!(second > first, "{first} then {second}");
    // And PromQL works on it.
    let v = q("sum by (mode) (rate(node_cpu_seconds_total[5s]))");
    let modes = v["data"]["result"].as_array().map_or(0, Vec::len);
    assert!(modes >= 4, "{v}");
}
