//! End-to-end tests of the `kiln-bench` binary: the fleet over real HTTP,
//! and `run` facing servers that fail in each way a server can fail.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kiln-bench");

/// Kills the child when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a fleet on a free port for at most a minute, with `args` after
/// the fixed ones; returns it (killed on drop) and its port.
fn start_fleet(args: &[&str]) -> (Killed, u64) {
    let mut child = Killed(
        Command::new(BIN)
            .args(["fleet", "--port", "0", "--duration-s", "60"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let port = ready["port"].as_u64().unwrap();
    (child, port)
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let status = reply[9..12].parse().unwrap();
    let body = reply.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn fleet_serves_stable_payloads_on_loopback_addresses() {
    // One slot per hour: two requests in a row share a slot.
    let (_child, port) = start_fleet(&[
        "--targets",
        "3",
        "--series-per-target",
        "1100",
        "--failing-targets",
        "1",
        "--interval",
        "1h",
    ]);
    let first = format!("127.0.1.1:{port}");
    let (status, a) = http_get(&first, "/metrics");
    assert_eq!(status, 200);
    let (_, mut b) = http_get(&first, "/metrics");
    if a != b {
        // The hour turned between the two requests; the next must agree.
        let (_, c) = http_get(&first, "/metrics");
        assert_eq!(b, c);
        b = c;
    }
    let samples = b.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(samples, 1100);
    let (_, other) = http_get(&format!("127.0.1.2:{port}"), "/metrics");
    assert_ne!(other, b, "targets differ");
    assert_eq!(http_get(&format!("127.0.1.3:{port}"), "/metrics").0, 503);
    assert_eq!(http_get(&first, "/other").0, 404);
}

/// GETs `path` with extra request headers; status, headers (lowercase
/// text) and raw body.
fn http_get_raw(addr: &str, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    let split = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&reply[..split]).to_lowercase();
    (
        head[9..12].parse().unwrap(),
        head,
        reply[split + 4..].to_vec(),
    )
}

#[test]
fn fleet_answers_gzip_when_asked_and_counts_scrapes() {
    let (_child, port) = start_fleet(&[
        "--targets",
        "2",
        "--series-per-target",
        "1521",
        "--interval",
        "1h",
    ]);
    let addr = format!("127.0.1.1:{port}");
    // Up to three tries: the hour may turn between the requests once.
    let mut same_slot = None;
    for _ in 0..3 {
        let (status, head, plain) = http_get_raw(&addr, "/metrics", "");
        assert_eq!(status, 200);
        assert!(!head.contains("content-encoding"), "{head}");
        let (_, head, packed) = http_get_raw(&addr, "/metrics", "Accept-Encoding: gzip\r\n");
        assert!(head.contains("content-encoding: gzip"), "{head}");
        let (_, _, again) = http_get_raw(&addr, "/metrics", "");
        if again == plain {
            same_slot = Some((plain, packed));
            break;
        }
    }
    let (plain, packed) = same_slot.expect("two requests in one slot");
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain);
    assert!(
        packed.len() * 4 < plain.len(),
        "{} of {}",
        packed.len(),
        plain.len()
    );
    let (status, _, stats) = http_get_raw(&addr, "/kiln-bench/stats", "");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    assert!(stats["requests"].as_u64().unwrap() >= 3, "{stats}");
    // One target, asked repeatedly within one slot: counted once.
    let per_slot = stats["targets_per_slot"].as_array().unwrap();
    assert_eq!(per_slot.last().unwrap(), 1, "{stats}");
}

fn run_report(out: &Path, command: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let status = Command::new(BIN)
        .args(["run", "--targets", "2", "--series-per-target", "50"])
        .args(["--command", command, "--out"])
        .arg(out)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let json = std::fs::read_to_string(out.join("run.json")).unwrap();
    (
        status.code().unwrap_or(-1),
        serde_json::from_str(&json).unwrap(),
    )
}

#[test]
fn run_reports_a_server_that_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = run_report(dir.path(), "/nonexistent/server {config}", &[]);
    assert_eq!(code, 2);
    assert_eq!(report["outcome"]["status"], "failed_to_start");
    assert!(
        report["outcome"]["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/server")
    );
    assert!(dir.path().join("report.html").exists());
}

#[test]
fn run_reports_a_server_that_exits_before_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = run_report(dir.path(), "false {config}", &[]);
    assert_eq!(code, 2);
    assert_eq!(report["outcome"]["status"], "exited_before_ready");
}

#[test]
fn run_reports_a_server_that_never_gets_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (code, report) = run_report(dir.path(), "sleep 30", &["--ready-timeout", "2s"]);
    assert_eq!(code, 2);
    assert_eq!(report["outcome"]["status"], "never_ready");
    assert!(report["samples"].as_array().unwrap().is_empty());
}

/// A stand-in server (python3's http.server) that is ready at once, serves
/// one self-metric and is killed by `timeout` 6 s after it starts.
const DYING_SERVER: &str = r#"#!/bin/sh
exec timeout 6 python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"prometheus_tsdb_head_series 5\n")
    def log_message(self, *a):
        pass
port = int(sys.argv[1].rsplit(":", 1)[1])
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
' "$1"
"#;

#[test]
fn run_reports_a_server_that_dies_mid_run_with_what_it_measured() {
    if Command::new("python3").arg("-V").output().is_err() {
        eprintln!("SKIPPED: python3 (the stand-in server) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("server.sh");
    std::fs::write(&script, DYING_SERVER).unwrap();
    let command = format!("sh {} {{listen}}", script.display());
    let (code, report) = run_report(
        dir.path(),
        &command,
        &["--duration", "60s", "--sample-every", "500ms"],
    );
    assert_eq!(code, 2);
    assert_eq!(report["outcome"]["status"], "died", "{report}");
    let samples = report["samples"].as_array().unwrap();
    // Ticks racing the death may miss the self-metrics; the others kept them.
    assert!(
        samples.iter().any(|s| s["active_series"] == 5.0),
        "samples before the death are kept: {report}"
    );
}
