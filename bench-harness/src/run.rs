//! One load run: a fleet process and one server process on loopback, from
//! start to a [`RunReport`].
//!
//! Owns the run's sequence and its failure modes: start the fleet (a child
//! `kiln-bench fleet`), write the scrape config, start the server with a
//! fresh data dir on an ephemeral port, wait (bounded) for readiness, sample
//! `/proc`, the data dir and self-metrics on a fixed tick for the duration
//! (optionally under a query load, see [`crate::load`]), time the query
//! set, stop both processes. Whatever goes wrong — the server
//! cannot start, never gets ready, dies mid-run — the run still ends with a
//! report of what happened and everything measured until then.

use std::io::{BufRead as _, BufReader, IsTerminal as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config;
use crate::fleet::{self, ScrapeStats};
use crate::httpc;
use crate::load::{self, QueryLoadResult};
use crate::model::{self, FleetSpec, TargetKind};
use crate::process::{self, Supervised};
use crate::servers::{self, ServerSpec};

/// Knobs of a run other than the fleet and the server.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub duration: Duration,
    pub sample_every: Duration,
    pub ready_timeout: Duration,
    /// Time after readiness excluded from the rates (first scrapes are
    /// spread over the first interval; series creation costs more).
    pub warmup: Duration,
    pub query_repeat: usize,
    /// Queries per second sent during the measurement (0 = none).
    pub query_rate: f64,
    pub keep_data: bool,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    /// `completed`, `fleet_failed`, `failed_to_start`, `exited_before_ready`,
    /// `never_ready` or `died`.
    pub status: String,
    pub detail: String,
    /// Last lines of the server's output.
    pub log_tail: Vec<String>,
}

/// One tick's measurements; times in seconds since the server started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub t_s: f64,
    pub cpu_s: f64,
    pub rss_bytes: u64,
    pub write_bytes: u64,
    pub disk_bytes: u64,
    pub samples_appended: Option<f64>,
    pub active_series: Option<f64>,
    pub failed_scrapes: Option<f64>,
    pub fleet_cpu_s: Option<f64>,
    /// Busy CPU seconds of the whole machine (`/proc/stat`), to tell how
    /// much else ran during the measurement.
    #[serde(default)]
    pub host_busy_s: Option<f64>,
}

/// Latencies of one query of the query set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryResult {
    pub name: String,
    pub expr: String,
    pub range: bool,
    pub latencies_ms: Vec<f64>,
    pub median_ms: Option<f64>,
    pub result_series: Option<usize>,
    pub error: Option<String>,
}

/// Figures derived from the samples over the steady window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Start of the steady window, seconds since the server started.
    #[serde(default)]
    pub steady_from_s: Option<f64>,
    pub window_s: Option<f64>,
    pub samples_per_s: Option<f64>,
    pub cpu_cores: Option<f64>,
    pub samples_per_cpu_s: Option<f64>,
    pub cpu_s_per_million_samples: Option<f64>,
    pub rss_end_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
    pub active_series: Option<f64>,
    pub rss_bytes_per_series: Option<f64>,
    pub samples_appended_total: Option<f64>,
    pub disk_bytes: Option<u64>,
    pub disk_bytes_per_sample: Option<f64>,
    pub write_bytes_per_s: Option<f64>,
    pub write_bytes_per_sample: Option<f64>,
    pub fleet_cpu_cores: Option<f64>,
    /// Cores used by everything but the server and the fleet during the
    /// window: other builds or runs that make the figures noisy.
    #[serde(default)]
    pub other_load_cores: Option<f64>,
    pub targets_down: Option<f64>,
    pub query_median_ms: Option<f64>,
    /// Of the (target, scrape interval) pairs over the whole intervals
    /// inside the steady window, the share the fleet saw scraped (see
    /// [`scrapes_on_time`]).
    #[serde(default)]
    pub scrapes_on_time: Option<f64>,
    /// How many whole intervals that share is taken over.
    #[serde(default)]
    pub scrape_intervals: Option<usize>,
    /// Increase of the server's failed-scrapes counter over the window.
    #[serde(default)]
    pub failed_scrapes: Option<f64>,
    /// RSS at the window's end over RSS at its start, minus 1.
    #[serde(default)]
    pub rss_growth: Option<f64>,
}

/// Everything a run produced; serialised as `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    pub kiln_bench_version: String,
    pub server: String,
    pub command: Vec<String>,
    pub fleet: FleetSpec,
    /// Samples per second the fleet offers (series of targets that answer
    /// within the scrape timeout, over the interval), before the server's
    /// own `up`/`scrape_*` series.
    pub offered_samples_per_s: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub started_unix_ms: i64,
    /// Unix milliseconds at which the server was started (its `t_s` 0).
    #[serde(default)]
    pub server_started_unix_ms: Option<i64>,
    pub ready_after_s: Option<f64>,
    pub outcome: Outcome,
    pub samples: Vec<Sample>,
    pub queries: Vec<QueryResult>,
    /// The query load sent during the measurement, when asked for.
    #[serde(default)]
    pub query_load: Option<QueryLoadResult>,
    /// The fleet's account of the scrapes it received, read at the end of
    /// the measurement.
    #[serde(default)]
    pub fleet_scrapes: Option<ScrapeStats>,
    pub summary: Summary,
}

/// The query set timed at the end of a run: (name, expression, is range).
const QUERIES: [(&str, &str, bool); 4] = [
    ("up", "up", false),
    (
        "cpu by mode",
        "sum by (mode) (rate(node_cpu_seconds_total[1m]))",
        false,
    ),
    (
        "cpu by mode, range",
        "sum by (mode) (rate(node_cpu_seconds_total[5m]))",
        true,
    ),
    (
        "network receive series",
        "count({__name__=~\"node_network_receive_.+\"})",
        false,
    ),
];

/// Time after which the query set stops repeating queries.
const QUERY_BUDGET: Duration = Duration::from_secs(120);

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The fleet's child process and its announced port.
struct FleetProcess {
    process: Supervised,
    port: u16,
}

fn start_fleet(spec: &FleetSpec, lifetime: Duration) -> Result<FleetProcess, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find kiln-bench itself: {e}"))?;
    let spec_json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    let mut process = Supervised::spawn(
        Command::new(me)
            .args(["fleet", "--port", "0", "--duration-s"])
            .arg(lifetime.as_secs().to_string())
            .args(["--spec-json", &spec_json])
            .stdin(Stdio::null())
            .stdout(Stdio::piped()),
    )
    .map_err(|e| format!("cannot start the fleet: {e}"))?;
    let stdout = process.take_stdout().ok_or("fleet stdout missing")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "the fleet did not announce readiness within 60 s".to_owned())?;
    let port = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v.get("port")?.as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("the fleet failed to start: {:?}", line.trim()))?;
    Ok(FleetProcess { process, port })
}

/// Samples per second the fleet can deliver: failing targets never do,
/// slow ones only when they answer within the scrape timeout.
fn offered_samples_per_s(spec: &FleetSpec) -> f64 {
    let timeout_ms = config::scrape_timeout_ms(spec);
    let answering = |i: &usize| match spec.kind(*i) {
        TargetKind::Failing => false,
        TargetKind::Slow => spec.slow_delay_ms < timeout_ms,
        TargetKind::Normal | TargetKind::Histogram => true,
    };
    (0..spec.targets)
        .filter(answering)
        .map(|i| spec.series_of(i))
        .sum::<usize>() as f64
        / (spec.interval_ms as f64 / 1000.0)
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.chars().take(400).collect())
        .collect()
}

/// Runs `server` against a fleet of `spec`; files go to `out_dir`.
pub fn run(
    spec: &FleetSpec,
    server: &ServerSpec,
    options: &RunOptions,
    out_dir: &Path,
) -> RunReport {
    let mut spec = spec.clone();
    let started_unix_ms = unix_ms();
    spec.origin_ms = started_unix_ms - started_unix_ms.rem_euclid(spec.interval_ms.max(1) as i64);
    let offered = offered_samples_per_s(&spec);
    let mut report = RunReport {
        kiln_bench_version: env!("CARGO_PKG_VERSION").to_owned(),
        server: server.name.clone(),
        command: server.command.clone(),
        fleet: spec.clone(),
        offered_samples_per_s: offered,
        duration_s: options.duration.as_secs_f64(),
        warmup_s: options.warmup.as_secs_f64(),
        started_unix_ms,
        server_started_unix_ms: None,
        ready_after_s: None,
        outcome: Outcome {
            status: "completed".to_owned(),
            detail: String::new(),
            log_tail: Vec::new(),
        },
        samples: Vec::new(),
        queries: Vec::new(),
        query_load: None,
        fleet_scrapes: None,
        summary: Summary::default(),
    };
    let fail = |report: &mut RunReport, status: &str, detail: String, log: Option<&Path>| {
        report.outcome = Outcome {
            status: status.to_owned(),
            detail,
            log_tail: log.map(|p| log_tail(p, 20)).unwrap_or_default(),
        };
    };
    // The harness's own HTTP client runs here (it needs an epoll fd and a
    // timer, which a process out of descriptors may not get).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            fail(
                &mut report,
                "failed_to_start",
                format!("kiln-bench's runtime: {e}"),
                None,
            );
            return report;
        }
    };
    let fleet_lifetime = options.ready_timeout + options.duration + Duration::from_secs(300);
    let mut fleet = match start_fleet(&spec, fleet_lifetime) {
        Ok(fleet) => fleet,
        Err(e) => {
            fail(&mut report, "fleet_failed", e, None);
            return report;
        }
    };
    let config_path = out_dir.join("prometheus.yml");
    let data_dir = out_dir.join(format!("data-{}", server.name));
    let log_path = out_dir.join(format!("{}.log", server.name));
    let prepared = std::fs::write(&config_path, config::prometheus_yml(&spec, fleet.port))
        .and_then(|()| match std::fs::remove_dir_all(&data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => std::fs::create_dir_all(&data_dir),
        })
        .and_then(|()| free_loopback_port());
    let port = match prepared {
        Ok(port) => port,
        Err(e) => {
            fail(
                &mut report,
                "failed_to_start",
                format!("preparing {}: {e}", out_dir.display()),
                None,
            );
            return report;
        }
    };
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut argv = servers::instantiate(&server.command, &config_path, &data_dir, &listen);
    if argv[0].contains('/')
        && let Ok(absolute) = Path::new(&argv[0]).canonicalize()
    {
        argv[0] = absolute.to_string_lossy().into_owned();
    }
    report.command.clone_from(&argv);
    let log_file = std::fs::File::create(&log_path).and_then(|f| Ok((f.try_clone()?, f)));
    let spawned = log_file.and_then(|(out, err)| {
        Supervised::spawn(
            Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(out_dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
        )
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            fail(
                &mut report,
                "failed_to_start",
                format!("{}: {e}", argv[0]),
                None,
            );
            return report;
        }
    };
    let started = Instant::now();
    report.server_started_unix_ms = Some(unix_ms());
    let pid = child.pid();

    // Readiness, bounded by the timeout.
    loop {
        if let Some(status) = child.exit_status() {
            let detail = format!(
                "{} exited with {status} after {:.1} s, before it was ready",
                server.name,
                started.elapsed().as_secs_f64()
            );
            fail(&mut report, "exited_before_ready", detail, Some(&log_path));
            return finish(report, child, fleet, &data_dir, options);
        }
        let probe = runtime.block_on(httpc::get(addr, server.ready_path, Duration::from_secs(2)));
        if probe.is_ok_and(|r| r.status == 200) {
            report.ready_after_s = Some(started.elapsed().as_secs_f64());
            break;
        }
        if started.elapsed() >= options.ready_timeout {
            let detail = format!(
                "{} did not answer 200 on {} within {:?}",
                server.name, server.ready_path, options.ready_timeout
            );
            fail(&mut report, "never_ready", detail, Some(&log_path));
            return finish(report, child, fleet, &data_dir, options);
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // Sampling, one tick per `sample_every`, a bounded number of ticks.
    let ready_at = started.elapsed();
    let ticks = (options.duration.as_secs_f64() / options.sample_every.as_secs_f64()).ceil() as u64;
    let progress = Progress::new(options.duration);
    let query_load = (options.query_rate > 0.0).then(|| {
        let set = QUERIES
            .iter()
            .map(|(_, e, r)| ((*e).to_owned(), *r))
            .collect();
        load::start(addr, set, options.query_rate, options.duration)
    });
    for tick in 1..=ticks.max(1) {
        let due = ready_at + options.sample_every * u32::try_from(tick).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        if let Some(status) = child.exit_status() {
            let detail = format!(
                "{} exited with {status} {:.1} s into the run",
                server.name,
                (started.elapsed() - ready_at).as_secs_f64()
            );
            fail(&mut report, "died", detail, Some(&log_path));
            break;
        }
        if fleet.process.exit_status().is_some() {
            fail(
                &mut report,
                "fleet_failed",
                "the fleet process ended mid-run".to_owned(),
                None,
            );
            break;
        }
        let sample = take_sample(
            &runtime,
            server,
            addr,
            pid,
            fleet.process.pid(),
            &data_dir,
            started,
        );
        if let Some(sample) = sample {
            progress.show(started.elapsed() - ready_at, &sample, report.samples.last());
            report.samples.push(sample);
        }
    }
    progress.done();
    report.fleet_scrapes = fleet_scrapes(&runtime, fleet.port);
    report.query_load = query_load.map(load::QueryLoad::finish);
    if report.outcome.status == "completed" {
        report.queries = time_queries(&runtime, addr, options, ready_at, started);
    }
    finish(report, child, fleet, &data_dir, options)
}

/// The fleet's scrape accounting, from its first target's address.
fn fleet_scrapes(runtime: &tokio::runtime::Runtime, port: u16) -> Option<ScrapeStats> {
    let addr = SocketAddr::from((model::target_addr(0), port));
    let reply = runtime.block_on(httpc::get(addr, fleet::STATS_PATH, Duration::from_secs(5)));
    serde_json::from_str(&reply.ok().filter(|r| r.status == 200)?.body).ok()
}

fn take_sample(
    runtime: &tokio::runtime::Runtime,
    server: &ServerSpec,
    addr: SocketAddr,
    pid: u32,
    fleet_pid: u32,
    data_dir: &Path,
    started: Instant,
) -> Option<Sample> {
    let usage = process::usage(pid)?;
    let metrics = runtime
        .block_on(httpc::get(addr, "/metrics", Duration::from_secs(5)))
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.body)
        .unwrap_or_default();
    let read =
        |m: &Option<servers::MetricRef>| m.as_ref().and_then(|m| servers::read_metric(&metrics, m));
    Some(Sample {
        t_s: started.elapsed().as_secs_f64(),
        cpu_s: usage.cpu_s,
        rss_bytes: usage.rss_bytes,
        write_bytes: usage.write_bytes,
        disk_bytes: process::dir_bytes(data_dir),
        samples_appended: read(&server.samples_appended),
        active_series: read(&server.active_series),
        failed_scrapes: read(&server.failed_scrapes),
        fleet_cpu_s: process::usage(fleet_pid).map(|u| u.cpu_s),
        host_busy_s: process::host_busy_s(),
    })
}

fn time_queries(
    runtime: &tokio::runtime::Runtime,
    addr: SocketAddr,
    options: &RunOptions,
    ready_at: Duration,
    started: Instant,
) -> Vec<QueryResult> {
    let end_s = unix_ms() as f64 / 1000.0;
    let span = (started.elapsed() - ready_at).as_secs_f64().min(3600.0);
    let start_s = end_s - span;
    let mut all: Vec<(String, String, bool)> = QUERIES
        .iter()
        .map(|(n, e, r)| ((*n).to_owned(), (*e).to_owned(), *r))
        .collect();
    all.push((
        "targets down".to_owned(),
        "count(up == 0) or vector(0)".to_owned(),
        false,
    ));
    // The whole query phase is bounded: repeats stop once the budget is
    // spent (each query still runs at least once, within its own timeout).
    let deadline = Instant::now() + QUERY_BUDGET;
    all.into_iter()
        .map(|(name, expr, range)| {
            let path = if range {
                format!(
                    "/api/v1/query_range?query={}&start={start_s:.3}&end={end_s:.3}&step=15",
                    httpc::encode(&expr)
                )
            } else {
                format!(
                    "/api/v1/query?query={}&time={end_s:.3}",
                    httpc::encode(&expr)
                )
            };
            let mut result = QueryResult {
                name,
                expr,
                range,
                latencies_ms: Vec::new(),
                median_ms: None,
                result_series: None,
                error: None,
            };
            for repeat in 0..options.query_repeat.max(1) {
                if repeat > 0 && Instant::now() >= deadline {
                    break;
                }
                let began = Instant::now();
                let reply = runtime.block_on(httpc::get(addr, &path, Duration::from_secs(30)));
                let ms = began.elapsed().as_secs_f64() * 1000.0;
                match reply.map(|r| (r.status, serde_json::from_str::<serde_json::Value>(&r.body)))
                {
                    Ok((200, Ok(json))) if json["status"] == "success" => {
                        result.latencies_ms.push(ms);
                        let data = &json["data"]["result"];
                        result.result_series = data.as_array().map(Vec::len);
                        if result.name == "targets down" {
                            result.result_series = data[0]["value"][1]
                                .as_str()
                                .and_then(|v| v.parse::<f64>().ok())
                                .map(|v| v as usize);
                        }
                    }
                    Ok((status, json)) => {
                        result.error = Some(format!(
                            "HTTP {status}: {}",
                            json.map_or_else(|e| e.to_string(), |j| j["error"].to_string())
                        ));
                        break;
                    }
                    Err(e) => {
                        result.error = Some(e);
                        break;
                    }
                }
            }
            result.median_ms = median(&result.latencies_ms);
            result
        })
        .collect()
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn finish(
    mut report: RunReport,
    mut child: Supervised,
    mut fleet: FleetProcess,
    data_dir: &Path,
    options: &RunOptions,
) -> RunReport {
    let (status, killed) = child.stop(process::STOP_GRACE);
    if killed {
        report.outcome.detail.push_str(&format!(
            " (needed SIGKILL after {:?})",
            process::STOP_GRACE
        ));
    } else if report.outcome.status == "completed" {
        report.outcome.detail = format!(
            "ran {:.0} s after readiness; stopped with SIGTERM ({})",
            report.duration_s,
            status.map_or_else(|| "status unknown".to_owned(), |s| s.to_string())
        );
    }
    fleet.process.stop(process::STOP_GRACE);
    report.summary = summarise(&report);
    if !options.keep_data {
        // Best effort: a data dir that cannot be removed is only disk space.
        let _ = std::fs::remove_dir_all(data_dir);
    }
    report
}

/// Share of the final active series from which the series set counts as
/// settled: creating series costs far more than appending to them, so the
/// steady window starts only once (almost) all exist.
const SERIES_SETTLED: f64 = 0.99;

/// Derives the summary from the samples: rates over the steady window,
/// from the first sample that is both past the warm-up and past the last
/// time the active series were below their settled level, to the last
/// sample.
pub fn summarise(report: &RunReport) -> Summary {
    let mut summary = Summary::default();
    let Some(last) = report.samples.last() else {
        return summary;
    };
    let warm = report.ready_after_s.unwrap_or(0.0) + report.warmup_s;
    let settled = last.active_series.map(|end| {
        let samples = &report.samples;
        samples
            .iter()
            // A tick whose self-metrics did not answer counts as unsettled.
            .rposition(|s| s.active_series.is_none_or(|n| n < SERIES_SETTLED * end))
            .map_or(samples[0].t_s, |i| {
                samples.get(i + 1).map_or(last.t_s, |s| s.t_s)
            })
    });
    let steady_from = settled.map_or(warm, |t| t.max(warm));
    // Both ends of the window need the appended counter when the server
    // has one; a tick where /metrics timed out cannot anchor a rate.
    let anchored = |s: &&Sample| s.samples_appended.is_some() || last.samples_appended.is_none();
    let mut candidates = report.samples.iter().filter(anchored);
    let earliest = candidates.clone().next().unwrap_or(&report.samples[0]);
    // A run too short for its warm-up falls back to its whole length.
    let first = candidates
        .find(|s| s.t_s >= steady_from)
        .filter(|s| s.t_s < last.t_s)
        .unwrap_or(earliest);
    summary.steady_from_s = Some(first.t_s);
    let window = last.t_s - first.t_s;
    let per_s = |a: f64, b: f64| (window > 0.0).then(|| (b - a) / window);
    summary.window_s = (window > 0.0).then_some(window);
    summary.cpu_cores = per_s(first.cpu_s, last.cpu_s);
    if let (Some(a), Some(b)) = (first.samples_appended, last.samples_appended) {
        summary.samples_per_s = per_s(a, b);
        let cpu = last.cpu_s - first.cpu_s;
        if cpu > 0.0 && b > a {
            summary.samples_per_cpu_s = Some((b - a) / cpu);
            summary.cpu_s_per_million_samples = Some(cpu / (b - a) * 1e6);
            summary.write_bytes_per_sample =
                Some(last.write_bytes.saturating_sub(first.write_bytes) as f64 / (b - a));
        }
    }
    summary.write_bytes_per_s = per_s(first.write_bytes as f64, last.write_bytes as f64);
    summary.rss_end_bytes = Some(last.rss_bytes);
    summary.rss_peak_bytes = report.samples.iter().map(|s| s.rss_bytes).max();
    summary.active_series = last.active_series;
    summary.rss_bytes_per_series = last
        .active_series
        .filter(|s| *s > 0.0)
        .map(|s| last.rss_bytes as f64 / s);
    summary.samples_appended_total = last.samples_appended;
    summary.disk_bytes = Some(last.disk_bytes);
    summary.disk_bytes_per_sample = last
        .samples_appended
        .filter(|s| *s > 0.0)
        .map(|s| last.disk_bytes as f64 / s);
    if let (Some(a), Some(b)) = (first.fleet_cpu_s, last.fleet_cpu_s) {
        summary.fleet_cpu_cores = per_s(a, b);
    }
    if let (Some(a), Some(b)) = (first.failed_scrapes, last.failed_scrapes) {
        summary.failed_scrapes = Some(b - a);
    }
    summary.rss_growth = (first.rss_bytes > 0 && window > 0.0)
        .then(|| last.rss_bytes as f64 / first.rss_bytes as f64 - 1.0);
    if let Some((share, intervals)) = scrapes_on_time(report, first.t_s, last.t_s) {
        summary.scrapes_on_time = Some(share);
        summary.scrape_intervals = Some(intervals);
    }
    if let (Some(a), Some(b), Some(server), Some(fleet)) = (
        first.host_busy_s,
        last.host_busy_s,
        summary.cpu_cores,
        summary.fleet_cpu_cores,
    ) {
        summary.other_load_cores = per_s(a, b).map(|host| (host - server - fleet).max(0.0));
    }
    summary.targets_down = report
        .queries
        .iter()
        .find(|q| q.name == "targets down")
        .and_then(|q| q.result_series)
        .map(|n| n as f64);
    let medians: Vec<f64> = report
        .queries
        .iter()
        .filter(|q| q.name != "targets down")
        .filter_map(|q| q.median_ms)
        .collect();
    summary.query_median_ms = median(&medians);
    summary
}

/// Of every (target, slot) pair whose slot lies wholly between `from_s` and
/// `to_s` (seconds since the server started), the share the fleet saw
/// scraped, and the number of such slots. A server that keeps up scrapes
/// each target once per interval, so each of those slots counts every
/// target; a scrape that comes later than its interval leaves a gap.
/// `None` without the fleet's counts or without one whole slot.
pub fn scrapes_on_time(report: &RunReport, from_s: f64, to_s: f64) -> Option<(f64, usize)> {
    let stats = report.fleet_scrapes.as_ref()?;
    let started = report.server_started_unix_ms?;
    let spec = &report.fleet;
    let interval = i64::try_from(spec.interval_ms).ok()?.max(1);
    let since_origin = |t_s: f64| started + (t_s * 1000.0).round() as i64 - spec.origin_ms;
    // First slot starting at or after `from_s`; slots ending by `to_s`.
    let first = (since_origin(from_s).max(0) + interval - 1).div_euclid(interval);
    let end = since_origin(to_s).div_euclid(interval);
    if end <= first || spec.targets == 0 {
        return None;
    }
    let slots = usize::try_from(end - first).ok()?;
    let first = usize::try_from(first).ok()?;
    let scraped: u64 = (first..first + slots)
        .map(|slot| u64::from(stats.targets_per_slot.get(slot).copied().unwrap_or(0)))
        .sum();
    Some((scraped as f64 / (spec.targets * slots) as f64, slots))
}

/// What a reader of the report should distrust or check: a server that
/// appends nothing or much less than offered, missing self-metrics, failed
/// queries, a noisy machine, a fleet too costly next to the server.
pub fn warnings(report: &RunReport) -> Vec<String> {
    let mut found = Vec::new();
    if report.outcome.status != "completed" {
        return found;
    }
    let s = &report.summary;
    match s.samples_per_s {
        None if s.samples_appended_total.is_some() => found.push(
            "samples/s unknown: too few ticks with self-metrics (lengthen --duration)".to_owned(),
        ),
        None => found.push("samples/s unknown: the server exposes no samples-appended metric".to_owned()),
        Some(rate) if rate < 0.9 * report.offered_samples_per_s => found.push(format!(
            "the server appended {:.0} samples/s of {:.0} offered ({:.0} %): is it scraping every target? (see its log)",
            rate,
            report.offered_samples_per_s,
            100.0 * rate / report.offered_samples_per_s.max(1e-9)
        )),
        Some(_) => {}
    }
    if s.active_series.is_none() {
        found.push("active series unknown: the server exposes no head-series metric".to_owned());
    }
    if let Some(load) = report.query_load.as_ref().filter(|l| l.failed > 0) {
        found.push(format!(
            "{} of {} queries of the query load failed",
            load.failed, load.sent
        ));
    }
    for q in &report.queries {
        if let Some(error) = &q.error {
            found.push(format!(
                "query {:?} failed: {}",
                q.expr,
                error.chars().take(200).collect::<String>()
            ));
        }
    }
    if let Some(other) = s.other_load_cores.filter(|o| *o > 0.25) {
        found.push(format!(
            "other processes used {other:.2} cores during the steady window: the figures are noisy"
        ));
    }
    if let (Some(fleet), Some(server)) = (s.fleet_cpu_cores, s.cpu_cores)
        && fleet > 0.25 * server
    {
        found.push(format!(
            "the fleet used {fleet:.3} cores, {:.0} % of the server's: build kiln-bench in release mode",
            100.0 * fleet / server.max(1e-9)
        ));
    }
    found
}

/// The progress line on stderr: redrawn in place on a terminal, one line
/// every 30 s otherwise.
struct Progress {
    total: Duration,
    terminal: bool,
}

impl Progress {
    fn new(total: Duration) -> Self {
        Self {
            total,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, elapsed: Duration, now: &Sample, before: Option<&Sample>) {
        let done = (elapsed.as_secs_f64() / self.total.as_secs_f64().max(1e-9)).min(1.0);
        let width = 30;
        let filled = (done * width as f64) as usize;
        let rate = before
            .zip(now.samples_appended)
            .and_then(|(b, n)| Some((n - b.samples_appended?) / (now.t_s - b.t_s)))
            .map_or_else(|| "-".to_owned(), |r| format!("{:.0}k", r / 1000.0));
        let cpu = before
            .map(|b| (now.cpu_s - b.cpu_s) / (now.t_s - b.t_s))
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}"));
        let line = format!(
            "[{}{}] {:>4.0}/{:.0} s  samples/s {rate}  cores {cpu}  rss {:.0} MiB",
            "#".repeat(filled),
            ".".repeat(width - filled),
            elapsed.as_secs_f64(),
            self.total.as_secs_f64(),
            now.rss_bytes as f64 / 1_048_576.0
        );
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r{line}");
        } else if (elapsed.as_secs() % 30) < 5 || done >= 1.0 {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// Where a run's files go by default: `target/kiln-bench/<unix
/// seconds>-<label>`, inside the ignored build dir so reports and data dirs
/// never end up in a commit.
pub fn default_out_dir(label: &str) -> PathBuf {
    PathBuf::from("target/kiln-bench").join(format!("{}-{label}", unix_ms() / 1000))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn sample(t_s: f64, cpu_s: f64, appended: f64, rss: u64) -> Sample {
        Sample {
            t_s,
            cpu_s,
            rss_bytes: rss,
            write_bytes: (appended * 2.0) as u64,
            disk_bytes: 1000,
            samples_appended: Some(appended),
            active_series: Some(100.0),
            failed_scrapes: None,
            fleet_cpu_s: Some(t_s / 100.0),
            host_busy_s: Some(t_s),
        }
    }

    /// 10 targets: 2 histogram (1,000 + 2 families × 14), 2 slow, 1
    /// failing, 5 normal; slow ones count only within the 10 s timeout.
    #[test]
    fn offered_load_counts_answering_targets() {
        let mut spec = FleetSpec {
            targets: 10,
            series_per_target: 1_000,
            interval_ms: 10_000,
            churn_per_hour: 0.0,
            histogram_targets: 2,
            histogram_series: 20,
            slow_targets: 2,
            slow_delay_ms: 2_000,
            failing_targets: 1,
            timestamps: false,
            origin_ms: 0,
            gzip: false,
        };
        assert_eq!(
            offered_samples_per_s(&spec),
            (2.0 * 1_028.0 + 7.0 * 1_000.0) / 10.0
        );
        spec.slow_delay_ms = 10_000;
        assert_eq!(
            offered_samples_per_s(&spec),
            (2.0 * 1_028.0 + 5.0 * 1_000.0) / 10.0
        );
    }

    /// A completed run of a 1-target fleet at 15 s: ready at 2 s, 10 s of
    /// warm-up, ticks every 10 s from 5 s to 35 s.
    pub(crate) fn fixture() -> RunReport {
        RunReport {
            kiln_bench_version: String::new(),
            server: "x".into(),
            command: vec![],
            fleet: crate::model::FleetSpec {
                targets: 1,
                series_per_target: 1,
                interval_ms: 15_000,
                churn_per_hour: 0.0,
                histogram_targets: 0,
                histogram_series: 0,
                slow_targets: 0,
                slow_delay_ms: 0,
                failing_targets: 0,
                timestamps: false,
                origin_ms: 0,
                gzip: false,
            },
            offered_samples_per_s: 2000.0,
            duration_s: 30.0,
            warmup_s: 10.0,
            started_unix_ms: 0,
            server_started_unix_ms: Some(0),
            ready_after_s: Some(2.0),
            outcome: Outcome {
                status: "completed".into(),
                detail: String::new(),
                log_tail: vec![],
            },
            // Warm-up ends at 12 s: the window is 15 s → 35 s.
            samples: vec![
                sample(5.0, 9.0, 0.0, 10),
                sample(15.0, 10.0, 1_000.0, 30),
                sample(25.0, 11.0, 11_000.0, 20),
                sample(35.0, 12.0, 21_000.0, 40),
            ],
            queries: vec![],
            query_load: None,
            fleet_scrapes: None,
            summary: Summary::default(),
        }
    }

    #[test]
    fn summary_uses_the_steady_window() {
        let mut report = fixture();
        report.summary = summarise(&report);
        assert_eq!(
            warnings(&report),
            [
                "the server appended 1000 samples/s of 2000 offered (50 %): is it scraping every target? (see its log)",
                "other processes used 0.89 cores during the steady window: the figures are noisy"
            ]
        );
        let s = &report.summary;
        assert_eq!(s.window_s, Some(20.0));
        assert_eq!(s.samples_per_s, Some(1_000.0));
        assert_eq!(s.cpu_cores, Some(0.1));
        assert_eq!(s.samples_per_cpu_s, Some(10_000.0));
        assert_eq!(s.cpu_s_per_million_samples, Some(100.0));
        assert_eq!(s.rss_peak_bytes, Some(40));
        assert_eq!(s.rss_bytes_per_series, Some(0.4));
        assert_eq!(s.disk_bytes_per_sample, Some(1000.0 / 21_000.0));
        assert_eq!(s.write_bytes_per_sample, Some(2.0));
        let fleet = s.fleet_cpu_cores.unwrap();
        assert!((fleet - 0.01).abs() < 1e-12, "{fleet}");
        // The machine was fully busy on one core: 1 - 0.1 - 0.01 for others.
        let other = s.other_load_cores.unwrap();
        assert!((other - 0.89).abs() < 1e-12, "{other}");
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));

        // Series still being created until 25 s: the window moves there.
        report.samples[1].active_series = Some(50.0);
        report.samples[2].active_series = Some(99.5);
        report.summary = summarise(&report);
        assert_eq!(report.summary.steady_from_s, Some(25.0));
        assert_eq!(report.summary.samples_per_s, Some(1_000.0));
        assert_eq!(report.summary.cpu_cores, Some(0.1));

        // A tick without self-metrics neither settles the series nor
        // anchors the window.
        report.samples[2].active_series = None;
        report.samples[2].samples_appended = None;
        report.samples.push(sample(45.0, 13.0, 31_000.0, 40));
        report.summary = summarise(&report);
        assert_eq!(report.summary.steady_from_s, Some(35.0));
        assert_eq!(report.summary.samples_per_s, Some(1_000.0));

        // A warm-up longer than the run: the whole run is the window.
        report.warmup_s = 1_000.0;
        report.summary = summarise(&report);
        assert_eq!(report.summary.steady_from_s, Some(5.0));
        assert_eq!(report.summary.samples_per_s, Some(31_000.0 / 40.0));
    }

    #[test]
    fn scrapes_on_time_counts_whole_intervals_in_the_window() {
        let mut report = fixture();
        report.fleet.targets = 4;
        // Slots of 15 s from the origin; the server started 1 s after it.
        report.fleet.origin_ms = 1_000_000;
        report.server_started_unix_ms = Some(1_001_000);
        report.fleet_scrapes = Some(ScrapeStats {
            targets_per_slot: vec![4, 4, 3, 4, 2, 4],
            ..ScrapeStats::default()
        });
        // 14 s → 44 s since the start is 15 s → 45 s since the origin:
        // slots 1 and 2 lie wholly inside (slot 0 started before, slot 3
        // had not ended).
        assert_eq!(scrapes_on_time(&report, 14.0, 44.0), Some((7.0 / 8.0, 2)));
        // 14 s → 59 s: slots 1, 2 and 3.
        assert_eq!(scrapes_on_time(&report, 14.0, 59.0), Some((11.0 / 12.0, 3)));
        // Slots past the fleet's last count were not scraped at all.
        assert_eq!(scrapes_on_time(&report, 74.0, 104.0), Some((4.0 / 8.0, 2)));
        // Less than one whole slot, or no counts: unknown.
        assert_eq!(scrapes_on_time(&report, 15.0, 28.0), None);
        report.fleet_scrapes = None;
        assert_eq!(scrapes_on_time(&report, 14.0, 44.0), None);
    }

    #[test]
    fn summary_takes_failed_scrapes_and_rss_growth_over_the_window() {
        let mut report = fixture();
        for (sample, failed) in report.samples.iter_mut().zip([7.0, 8.0, 8.0, 9.0]) {
            sample.failed_scrapes = Some(failed);
        }
        report.summary = summarise(&report);
        // The window is 15 s → 35 s: RSS 30 → 40, failed 8 → 9.
        assert_eq!(report.summary.failed_scrapes, Some(1.0));
        let growth = report.summary.rss_growth.unwrap();
        assert!((growth - 1.0 / 3.0).abs() < 1e-12, "{growth}");
    }
}
