//! End to end through the HTTP API only: kiln scrapes test targets, and
//! what it answers is checked against the targets' payload function (the
//! independent truth), including staleness when a target goes away and
//! recovery of the data after a restart.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Kiln, eventually, targets};
use serde_json::Value;

const SLOT_MS: i64 = 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn query(kiln: &Kiln, q: &str, t_ms: i64) -> Value {
    let r = kiln.get(&format!(
        "/api/v1/query?query={}&time={}.{:03}",
        enc(q),
        t_ms / 1000,
        t_ms % 1000
    ));
    assert_eq!(r.status, 200, "{q}: {}", r.text());
    r.json()
}

fn write_config(dir: &std::path::Path, addrs: &[std::net::SocketAddr]) -> std::path::PathBuf {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let path = dir.join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
             scrape_configs:\n  - job_name: e2e\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        ),
    )
    .expect("write config");
    path
}

/// The value and timestamp kiln returns for `q` (one series expected).
fn single(v: &Value) -> Option<(f64, f64)> {
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    let p = r[0]["value"].as_array()?;
    Some((p[0].as_f64()?, p[1].as_str()?.parse().ok()?))
}

#[test]
fn scraped_samples_come_back_through_the_query_api() {
    let t = targets::start(2, SLOT_MS);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &t.addrs);
    let kiln = Kiln::start(&[&format!("--config.file={}", cfg.display())]);

    // Both targets up.
    let up = eventually(Duration::from_secs(15), || {
        let v = query(&kiln, "sum(up)", now_ms());
        single(&v).filter(|&(_, v)| v == 2.0)
    });
    assert!(up.is_some(), "targets never came up");

    // Wait for a few slots, then check a whole window against the payload.
    std::thread::sleep(Duration::from_millis(7 * SLOT_MS as u64));
    let eval = (now_ms() - 2 * SLOT_MS) / SLOT_MS * SLOT_MS;
    for (idx, addr) in t.addrs.iter().enumerate() {
        let sel = format!("test_requests_total{{instance=\"{addr}\",path=\"/a\"}}");
        let v = query(&kiln, &sel, eval);
        let (ts, value) = single(&v).unwrap_or_else(|| panic!("{sel}: {v}"));
        // The newest sample at or before `eval` is the slot starting there.
        let want_line = targets::payload(idx, eval / SLOT_MS, SLOT_MS)
            .lines()
            .find(|l| l.starts_with("test_requests_total{path=\"/a\"}"))
            .map(str::to_owned)
            .expect("payload line");
        let want: f64 = want_line.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(ts, eval as f64 / 1000.0, "{sel}: {v}");
        assert_eq!(value, want, "{sel}: {v}");

        // Every sample of a 5-slot window, in order.
        let start = eval - 4 * SLOT_MS;
        let r = kiln
            .get(&format!(
                "/api/v1/query_range?query={}&start={}&end={}&step=1",
                enc(&sel),
                start / 1000,
                eval / 1000
            ))
            .json();
        let values = r["data"]["result"][0]["values"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .clone();
        assert_eq!(values.len(), 5, "{r}");
        for (k, p) in values.iter().enumerate() {
            let slot = start / SLOT_MS + k as i64;
            let line = targets::payload(idx, slot, SLOT_MS);
            let want: f64 = line
                .lines()
                .find(|l| l.starts_with("test_requests_total{path=\"/a\"}"))
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|v| v.parse().ok())
                .expect("payload value");
            assert_eq!(p[1].as_str().unwrap().parse::<f64>().unwrap(), want, "{r}");
        }
    }

    // The report series of a healthy scrape.
    let v = query(
        &kiln,
        &format!("scrape_samples_scraped{{instance=\"{}\"}}", t.addrs[0]),
        now_ms(),
    );
    let samples = targets::payload(0, 1, SLOT_MS)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count();
    assert_eq!(single(&v).map(|p| p.1), Some(samples as f64), "{v}");

    // Series and label APIs agree with the payload's shape.
    let r = kiln
        .get(&format!(
            "/api/v1/series?match[]={}",
            enc("test_requests_total")
        ))
        .json();
    assert_eq!(r["data"].as_array().map(Vec::len), Some(4), "{r}");
    let r = kiln.get("/api/v1/label/path/values").json();
    assert_eq!(r["data"], serde_json::json!(["/a", "/b"]), "{r}");
    let r = kiln.get("/api/v1/labels").json();
    let names: Vec<&str> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for n in ["__name__", "instance", "job", "le", "path"] {
        assert!(names.contains(&n), "{n} missing from {r}");
    }

    // A target that goes away: up drops to 0 (its samples carry their own
    // timestamps, so, as in Prometheus, they are not marked stale).
    drop(t);
    let down = eventually(Duration::from_secs(10), || {
        let v = query(&kiln, "sum(up)", now_ms());
        single(&v).filter(|&(_, v)| v == 0.0)
    });
    assert!(down.is_some(), "up never dropped to 0");
}

#[test]
fn data_survives_a_restart() {
    let t = targets::start(1, SLOT_MS);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &t.addrs);
    let arg = format!("--config.file={}", cfg.display());
    let kiln = Kiln::start(&[&arg]);
    let seen = eventually(Duration::from_secs(15), || {
        let v = query(&kiln, "count(test_requests_total)", now_ms());
        single(&v).filter(|&(_, v)| v == 2.0)
    });
    assert!(seen.is_some(), "no samples scraped");
    std::thread::sleep(Duration::from_millis(2 * SLOT_MS as u64));
    let eval = now_ms() - SLOT_MS;
    let before = query(&kiln, "test_requests_total", eval);
    drop(t);
    let (status, data) = kiln.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "kiln did not exit cleanly: {status:?}"
    );

    let kiln = Kiln::start_in(data, &[&arg]);
    let after = query(&kiln, "test_requests_total", eval);
    assert_eq!(
        before["data"], after["data"],
        "data changed across a restart"
    );
}

#[test]
fn sample_limit_fails_the_scrape_visibly() {
    let t = targets::start(1, SLOT_MS);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
             scrape_configs:\n  - job_name: limited\n    sample_limit: 5\n    static_configs:\n      - targets: [\"{}\"]\n",
            t.addrs[0]
        ),
    )
    .expect("write config");
    let kiln = Kiln::start(&[&format!("--config.file={}", path.display())]);
    let target = eventually(Duration::from_secs(15), || {
        let r = kiln.get("/api/v1/targets").json();
        let t = r["data"]["activeTargets"][0].clone();
        (t["health"] == "down").then_some(t)
    })
    .expect("the target never went down");
    assert_eq!(target["lastError"], "sample limit exceeded", "{target}");
    assert_eq!(target["scrapePool"], "limited");
    let v = query(&kiln, "up", now_ms());
    assert_eq!(single(&v).map(|p| p.1), Some(0.0), "{v}");
    // Nothing of the refused scrapes was stored.
    let v = query(&kiln, "count(test_requests_total)", now_ms());
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");
    let metrics = kiln.get("/metrics").text();
    let limited = metrics
        .lines()
        .find_map(|l| l.strip_prefix("prometheus_target_scrapes_exceeded_sample_limit_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("metric present");
    assert!(limited >= 1.0, "{metrics}");
}

#[test]
fn reload_keeps_unchanged_targets_and_stales_removed_ones() {
    let t = targets::start_untimed(2, SLOT_MS);
    let (a, b) = (t.addrs[0], t.addrs[1]);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &t.addrs);
    let kiln = Kiln::start(&[
        &format!("--config.file={}", cfg.display()),
        "--web.enable-lifecycle",
    ]);
    let up = eventually(Duration::from_secs(15), || {
        let v = query(&kiln, "sum(up)", now_ms());
        single(&v).filter(|&(_, v)| v == 2.0)
    });
    assert!(up.is_some(), "targets never came up");
    std::thread::sleep(Duration::from_millis(1500));

    // Drop target b.
    write_config(dir.path(), &[a]);
    let r = kiln.request("POST", "/-/reload", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let reloaded = now_ms();
    std::thread::sleep(Duration::from_millis(2000));

    // b's series went stale at once: nothing at a time after the reload.
    let v = query(
        &kiln,
        &format!("test_temperature_celsius{{instance=\"{b}\"}}"),
        now_ms(),
    );
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");
    let v = query(&kiln, &format!("up{{instance=\"{b}\"}}"), now_ms());
    assert_eq!(v["data"]["result"], serde_json::json!([]), "{v}");
    // a kept its loop and cache: no scrape after the reload added series,
    // and it kept scraping every 500 ms.
    let v = query(
        &kiln,
        &format!("max_over_time(scrape_series_added{{instance=\"{a}\"}}[1500ms])"),
        now_ms(),
    );
    assert_eq!(single(&v).map(|p| p.1), Some(0.0), "{v}");
    let v = query(
        &kiln,
        &format!(
            "count_over_time(up{{instance=\"{a}\"}}[{}ms])",
            now_ms() - reloaded
        ),
        now_ms(),
    );
    let scrapes = single(&v).map_or(0.0, |p| p.1);
    assert!(scrapes >= 3.0, "a stopped scraping across the reload: {v}");
}

#[test]
fn tsdb_analyze_reports_what_the_server_stored() {
    let t = targets::start(1, SLOT_MS);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &t.addrs);
    let kiln = Kiln::start(&[&format!("--config.file={}", cfg.display())]);
    let seen = eventually(Duration::from_secs(15), || {
        let v = query(&kiln, "count(test_requests_total)", now_ms());
        single(&v).filter(|&(_, v)| v == 2.0)
    });
    assert!(seen.is_some(), "no samples scraped");
    drop(t);
    std::thread::sleep(Duration::from_millis(600));
    let v = query(&kiln, "count({__name__=~\".+\"})", now_ms());
    let series = single(&v).map(|p| p.1).expect("series count");
    let (status, data) = kiln.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["tsdb", "analyze"])
        .arg(data.path())
        .output()
        .expect("run kiln tsdb analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reported: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Series: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no series line in:\n{text}"));
    assert_eq!(reported, series, "{text}");
    // The histogram's buckets make `le` the widest label after __name__.
    assert!(text.contains("Highest cardinality labels"), "{text}");
    assert!(text.lines().any(|l| l.ends_with(" le")), "{text}");
}

/// Serves `body` as JSON to every request, on a loopback port, until the
/// returned flag is set.
fn serve_json(
    body: String,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().take(1000) {
            if flag.load(Ordering::Relaxed) {
                break;
            }
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut r = BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, stop)
}

#[test]
fn http_service_discovery_finds_targets() {
    let t = targets::start(1, SLOT_MS);
    let (sd, stop) = serve_json(format!(
        r#"[{{"targets":["{}"],"labels":{{"team":"a","__meta_x":"y"}}}}]"#,
        t.addrs[0]
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n\
             scrape_configs:\n  - job_name: httpsd\n    http_sd_configs:\n      - url: http://{sd}/targets\n        refresh_interval: 1s\n\
             \x20   relabel_configs:\n      - source_labels: [__meta_x]\n        target_label: x\n"
        ),
    )
    .expect("write config");
    let kiln = Kiln::start(&[&format!("--config.file={}", cfg.display())]);
    let up = eventually(Duration::from_secs(15), || {
        let v = query(&kiln, "up{job=\"httpsd\",team=\"a\",x=\"y\"}", now_ms());
        single(&v).filter(|&(_, v)| v == 1.0)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(up.is_some(), "the HTTP-discovered target was never scraped");
    let r = kiln.get("/api/v1/targets").json();
    assert_eq!(
        r["data"]["activeTargets"][0]["discoveredLabels"]["__meta_url"],
        format!("http://{sd}/targets"),
        "{r}"
    );
}

#[test]
fn a_target_that_vanishes_leaves_stale_series_and_up_zero() {
    let t = targets::start_untimed(1, SLOT_MS);
    let addr = t.addrs[0];
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &t.addrs);
    let kiln = Kiln::start(&[&format!("--config.file={}", cfg.display())]);
    let sel = format!("test_temperature_celsius{{instance=\"{addr}\"}}");
    let seen = eventually(Duration::from_secs(15), || {
        let v = query(&kiln, &sel, now_ms());
        single(&v)
    });
    assert!(seen.is_some(), "never scraped");
    drop(t);
    // The next scrape fails: up = 0 and every series it had goes stale, so
    // an instant query finds nothing although the last sample is recent.
    let gone = eventually(Duration::from_secs(10), || {
        let v = query(&kiln, &sel, now_ms());
        (v["data"]["result"] == serde_json::json!([])).then_some(())
    });
    assert!(gone.is_some(), "series never went stale");
    let v = query(&kiln, &format!("up{{instance=\"{addr}\"}}"), now_ms());
    assert_eq!(single(&v).map(|p| p.1), Some(0.0), "{v}");
    // The samples before the failure are still there.
    let v = query(&kiln, &format!("count_over_time({sel}[1m])"), now_ms());
    assert!(single(&v).is_some_and(|p| p.1 >= 1.0), "{v}");
}

#[test]
fn a_target_serving_garbage_is_down_with_its_error() {
    let (garbage, stop) = serve_json("this is {not an exposition\n".to_owned());
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &[garbage]);
    let kiln = Kiln::start(&[&format!("--config.file={}", cfg.display())]);
    let target = eventually(Duration::from_secs(15), || {
        let r = kiln.get("/api/v1/targets").json();
        let t = r["data"]["activeTargets"][0].clone();
        (t["health"] == "down").then_some(t)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let target = target.expect("the garbage target never went down");
    let err = target["lastError"].as_str().unwrap_or_default();
    assert!(
        err.contains("line 1"),
        "the parse error is kept with its position: {target}"
    );
    let v = query(&kiln, &format!("up{{instance=\"{garbage}\"}}"), now_ms());
    assert_eq!(single(&v).map(|p| p.1), Some(0.0), "{v}");
    let metrics = kiln.get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kiln_scrapes_total{result=\"failed\"} ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// A metric of kiln's own `/metrics`, summed over its series.
fn self_metric(kiln: &Kiln, name: &str) -> f64 {
    kiln.get("/metrics")
        .text()
        .lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn head_ranges_move_to_blocks_and_answer_after_a_restart() {
    let t = targets::start(1, SLOT_MS);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &t.addrs);
    // One-second blocks: the head is cut every second once it spans 1.5 s,
    // and blocks are merged into 3 s, 9 s… windows.
    let args = [
        format!("--config.file={}", cfg.display()),
        "--storage.tsdb.min-block-duration=1s".to_owned(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let kiln = Kiln::start(&args);
    let started = now_ms();
    // Cut blocks are merged into 3 s windows once those are complete.
    let merged = kiln.wait_log("merged 3 blocks", Duration::from_secs(30));
    assert!(merged.is_some(), "no blocks were cut and merged");
    assert!(self_metric(&kiln, "prometheus_tsdb_blocks_loaded") >= 1.0);
    assert!(self_metric(&kiln, "prometheus_tsdb_compactions_total") >= 4.0);
    assert!(self_metric(&kiln, "prometheus_tsdb_compactions_failed_total") == 0.0);
    // The head forgot what the blocks hold: its oldest sample is recent.
    let head_min = self_metric(&kiln, "prometheus_tsdb_head_min_time");
    assert!(
        head_min > started as f64 + 1000.0,
        "head still starts at {head_min}"
    );
    let at = now_ms();
    let window = at - started + 5_000;
    let q = format!("count_over_time(up[{window}ms])");
    let before = single(&query(&kiln, &q, at))
        .map(|p| p.1)
        .expect("up count");
    // Every 500 ms since the start, blocks included: the head alone holds
    // at most 2.5 s of it. (60 %, not all: a loaded machine may skip a
    // scrape now and then.)
    let expected = (at - started) as f64 / 500.0;
    assert!(before >= expected * 0.6, "{before} scrapes of ~{expected}");
    let (status, data) = kiln.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let on_disk: usize = (0..64)
        .map(|k| data.path().join(format!("shard-{k}/blocks")))
        .filter_map(|d| std::fs::read_dir(d).ok())
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().join("meta.json").is_file())
            })
            .count()
        })
        .sum();
    assert!(on_disk >= 1, "{on_disk} block directories");

    let kiln = Kiln::start_in(data, &args);
    let after = single(&query(&kiln, &q, at))
        .map(|p| p.1)
        .expect("up count");
    assert_eq!(after, before, "the restart changed what the range holds");
    let names = kiln.get(&format!(
        "/api/v1/label/__name__/values?start={}&end={}",
        started / 1000,
        (started + 2_000) / 1000
    ));
    assert!(names.text().contains("\"up\""), "{}", names.text());
}

#[test]
fn retention_deletes_whole_blocks_by_time_and_by_size() {
    let t = targets::start(1, SLOT_MS);
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(dir.path(), &t.addrs);
    let cfg = format!("--config.file={}", cfg.display());
    let blocks = "--storage.tsdb.min-block-duration=1s";
    let by_time = Kiln::start(&[&cfg, blocks, "--storage.tsdb.retention.time=4s"]);
    let started = now_ms();
    // 2 KB over two logical shards: each keeps only its newest block.
    let by_size = Kiln::start(&[
        &cfg,
        blocks,
        "--storage.tsdb.retention.size=2KB",
        "--shards=2",
    ]);
    for (kiln, what) in [(&by_time, "time"), (&by_size, "size")] {
        let deleted = eventually(Duration::from_secs(30), || {
            let n = self_metric(kiln, "kiln_tsdb_blocks_deleted_total");
            (n >= 2.0).then_some(n)
        });
        assert!(deleted.is_some(), "{what} retention deleted no blocks");
    }
    // Once the run is longer than the retention plus a few blocks, the
    // time-retained kiln holds only the last few seconds: at most 8 s of
    // scrapes every 500 ms, however long the run.
    std::thread::sleep(Duration::from_millis(
        u64::try_from(started + 10_000 - now_ms()).unwrap_or(0),
    ));
    let kept = eventually(Duration::from_secs(20), || {
        let v = query(&by_time, "count_over_time(up[1m])", now_ms());
        single(&v)
            .map(|p| p.1)
            .filter(|&n| (1.0..=16.0).contains(&n))
    });
    assert!(kept.is_some(), "time retention kept more than 8 s");
    let lowest = self_metric(&by_time, "prometheus_tsdb_lowest_timestamp");
    assert!(
        lowest > (started + 1_000) as f64,
        "oldest sample at {lowest}"
    );
    let loaded = self_metric(&by_size, "prometheus_tsdb_blocks_loaded");
    assert!((1.0..=2.0).contains(&loaded), "{loaded} blocks kept");
    // The data that is left still answers.
    let v = query(&by_size, "count_over_time(up[1m])", now_ms());
    assert!(single(&v).is_some_and(|p| p.1 >= 2.0), "{v}");
}
