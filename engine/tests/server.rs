//! End-to-end tests of the `kiln` binary over HTTP only: start-up, the
//! status API's shapes, errors for unknown paths and methods, gzip,
//! lifecycle, and clean shutdown on signals.

mod common;

use std::io::Read;
use std::time::Duration;

use common::Kiln;

#[test]
fn health_readiness_and_unknown_paths() {
    let k = Kiln::start(&["--shards=2"]);
    let r = k.get("/-/healthy");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Healthy"));
    assert_eq!(k.get("/-/ready").status, 200);
    let head = k.request("HEAD", "/-/healthy", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    let r = k.get("/no/such/path");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "404 page not found\n");
    assert_eq!(k.get("/api/v1/nope").status, 404);
    assert_eq!(k.request("DELETE", "/-/healthy", &[], b"").status, 405);
}

#[test]
fn status_endpoints_have_prometheus_shapes() {
    let k = Kiln::start(&["--shards=1", "--query.lookback-delta=1m"]);
    let b = k.get("/api/v1/status/buildinfo").json();
    assert_eq!(b["status"], "success");
    for key in [
        "version",
        "revision",
        "branch",
        "buildUser",
        "buildDate",
        "goVersion",
    ] {
        assert!(b["data"][key].is_string(), "buildinfo lacks {key}: {b}");
    }

    let f = k.get("/api/v1/status/flags").json();
    assert_eq!(f["data"]["query.lookback-delta"], "1m");
    assert_eq!(f["data"]["storage.tsdb.retention.time"], "15d");
    assert_eq!(f["data"]["web.listen-address"], "127.0.0.1:0");

    let r = k.get("/api/v1/status/runtimeinfo").json();
    assert_eq!(r["data"]["reloadConfigSuccess"], true);
    assert_eq!(r["data"]["storageRetention"], "15d");
    assert_eq!(r["data"]["GOMAXPROCS"], 1);
    let start = r["data"]["startTime"].as_str().unwrap();
    assert!(
        start.ends_with('Z') && start.len() >= 20,
        "RFC 3339 start time: {start}"
    );

    let c = k.get("/api/v1/status/config").json();
    assert!(
        c["data"]["yaml"]
            .as_str()
            .unwrap()
            .contains("job_name: kiln")
    );
}

#[test]
fn self_metrics_keep_prometheus_names() {
    let k = Kiln::start(&["--shards=2"]);
    let _ = k.get("/-/healthy");
    let r = k.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    for name in [
        "prometheus_build_info{",
        "prometheus_config_last_reload_successful 1",
        "prometheus_http_requests_total{code=\"200\",handler=\"/-/healthy\"} 1",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "kiln_shards 2",
    ] {
        assert!(text.contains(name), "/metrics lacks {name:?}:\n{text}");
    }
}

#[test]
fn gzip_when_asked() {
    let k = Kiln::start(&["--shards=1"]);
    let r = k.request("GET", "/metrics", &[("Accept-Encoding", "gzip")], b"");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("prometheus_build_info"));
    let plain = k.get("/metrics");
    assert!(plain.header("content-encoding").is_none());
}

#[test]
fn lifecycle_endpoints_need_the_flag() {
    let k = Kiln::start(&["--shards=1"]);
    assert_eq!(k.request("POST", "/-/reload", &[], b"").status, 403);
    assert_eq!(k.request("POST", "/-/quit", &[], b"").status, 403);
    assert_eq!(k.get("/-/reload").status, 405);
}

#[test]
fn reload_keeps_running_config_on_error_and_quit_stops() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 15s\n").unwrap();
    let arg = format!("--config.file={}", cfg.display());
    let mut k = Kiln::start(&["--shards=1", "--web.enable-lifecycle", &arg]);

    std::fs::write(&cfg, "global:\n  scrape_interval: 30s\n").unwrap();
    assert_eq!(k.request("POST", "/-/reload", &[], b"").status, 200);
    assert!(
        k.get("/api/v1/status/config").json()["data"]["yaml"]
            .as_str()
            .unwrap()
            .contains("30s")
    );

    std::fs::remove_file(&cfg).unwrap();
    let r = k.request("POST", "/-/reload", &[], b"");
    assert_eq!(r.status, 500);
    assert!(r.text().contains("failed to reload config"));
    assert!(
        k.get("/api/v1/status/config").json()["data"]["yaml"]
            .as_str()
            .unwrap()
            .contains("30s")
    );
    assert!(
        k.get("/metrics")
            .text()
            .contains("prometheus_config_last_reload_successful 0")
    );
    let line = k
        .wait_log("Error reloading config", Duration::from_secs(5))
        .expect("the failed reload is logged");
    assert!(line.contains("level=error"), "{line}");

    assert_eq!(k.request("POST", "/-/quit", &[], b"").status, 200);
    let status = k
        .wait_exit(Duration::from_secs(15))
        .expect("kiln exits after /-/quit");
    assert!(status.success());
}

#[test]
fn sigterm_and_sigint_shut_down_cleanly() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut k = Kiln::start(&["--shards=2"]);
        assert_eq!(k.get("/-/ready").status, 200);
        k.signal(sig);
        let status = k
            .wait_exit(Duration::from_secs(15))
            .expect("kiln exits on signal");
        assert!(
            status.success(),
            "exit status {status:?} after signal {sig}"
        );
    }
}

#[test]
fn bad_start_exits_with_code_1() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--config.file=/nonexistent/prometheus.yml")
        .arg("--web.listen-address=127.0.0.1:0")
        .arg(format!("--storage.tsdb.path={}", data.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/prometheus.yml"));

    // An address already held by a listener without SO_REUSEPORT.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg(format!(
            "--web.listen-address={}",
            taken.local_addr().unwrap()
        ))
        .arg(format!("--storage.tsdb.path={}", data.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen on"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--query.timeout=never")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn query_api_renders_and_validates_as_prometheus() {
    let k = Kiln::start(&[]);
    // Bodies as Prometheus 2.42 writes them for the same requests.
    let cases = [
        (
            "/api/v1/query?query=1%2B1&time=1.5",
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1.500,"2"]}}"#,
        ),
        (
            "/api/v1/query?query=%22a%3Cb%22&time=100",
            200,
            r#"{"status":"success","data":{"resultType":"string","result":[100,"a\u003cb"]}}"#,
        ),
        (
            "/api/v1/query?query=vector(1)%2F0&time=2015-07-01T20:10:51.781Z",
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1435781451.781,"+Inf"]}]}}"#,
        ),
        (
            "/api/v1/query_range?query=time()&start=0&end=4&step=2",
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[0,"0"],[2,"2"],[4,"4"]]}]}}"#,
        ),
        (
            "/api/v1/query?query=sum(",
            400,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis"}"#,
        ),
        (
            "/api/v1/query?query=1&time=yesterday",
            400,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"time\": Invalid time value for 'time': cannot parse \"yesterday\" to a valid timestamp"}"#,
        ),
        (
            "/api/v1/query_range?query=1&start=10&end=1&step=1",
            400,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"end\": end timestamp must not be before start time"}"#,
        ),
        (
            "/api/v1/query_range?query=1&start=1&end=10&step=0",
            400,
            r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer"}"#,
        ),
        (
            "/api/v1/query_range?query=1&start=0&end=100000&step=1",
            400,
            r#"{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"}"#,
        ),
        (
            // The widest accepted range: its length overflows an i64.
            "/api/v1/query_range?query=1&start=-9223309901257974&end=9223309901257974&step=1",
            400,
            r#"{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"}"#,
        ),
        (
            "/api/v1/series",
            400,
            r#"{"status":"error","errorType":"bad_data","error":"no match[] parameter provided"}"#,
        ),
        ("/api/v1/labels", 200, r#"{"status":"success","data":[]}"#),
    ];
    for (path, status, body) in cases {
        let r = k.get(path);
        assert_eq!((r.status, r.text().as_str()), (status, body), "{path}");
    }
    // Grafana's form POST.
    let r = k.request(
        "POST",
        "/api/v1/query",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"query=2*3&time=7",
    );
    assert_eq!(
        r.text(),
        r#"{"status":"success","data":{"resultType":"scalar","result":[7,"6"]}}"#
    );
    let r = k.request("DELETE", "/api/v1/query", &[], b"");
    assert_eq!(r.status, 405);
}
