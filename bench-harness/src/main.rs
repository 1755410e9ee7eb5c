//! `kiln-bench`: fleet simulator, load runs, side-by-side comparison and
//! capacity planning for kiln and its peers (Prometheus, VictoriaMetrics).
//!
//! This module owns the command line: it turns flags into a [`FleetSpec`],
//! server specs and run options, and dispatches to the modules that do the
//! work. It depends on none of kiln's server crates: servers are driven as
//! processes over HTTP, like any user would.

mod config;
mod fleet;
mod httpc;
mod limit;
mod load;
mod model;
mod plan;
mod process;
mod report;
mod run;
mod servers;
mod sweep;
mod template;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::model::FleetSpec;
use crate::run::{RunOptions, RunReport};
use crate::template::{Template, TemplateError};

/// The node_exporter captures the fleet's payloads are built from.
const CAPTURE_T0: &str = include_str!("../../testdata/exposition/node_exporter-1.5.0.t0.prom");
const CAPTURE_T15: &str = include_str!("../../testdata/exposition/node_exporter-1.5.0.t15.prom");

/// The template built from the embedded captures (15 s apart).
pub fn embedded_template() -> Result<Template, TemplateError> {
    Template::from_captures(CAPTURE_T0, CAPTURE_T15, 15.0)
}

#[derive(Parser)]
#[command(
    name = "kiln-bench",
    version,
    about = "Fleet simulator, load runs, comparison and capacity planning for kiln"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a simulated fleet: every target on its own 127.0.X.Y address, one port.
    Fleet {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Port on every target address (0 picks a free one).
        #[arg(long, default_value_t = 19100)]
        port: u16,
        /// Stop after this many seconds at the latest.
        #[arg(long, default_value_t = 3600)]
        duration_s: u64,
        /// The whole fleet spec as JSON (used by `run`; overrides the fleet flags).
        #[arg(long, hide = true)]
        spec_json: Option<String>,
    },
    /// Write the prometheus.yml that scrapes a fleet (kiln, Prometheus and VictoriaMetrics accept it).
    Config {
        #[command(flatten)]
        fleet: FleetArgs,
        /// The fleet's port.
        #[arg(long, default_value_t = 19100)]
        port: u16,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run one server against a fleet and report what it costs.
    Run {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Server preset: kiln, prometheus or victoria-metrics.
        #[arg(long, conflicts_with = "command")]
        server: Option<String>,
        /// Explicit server command line, with {config}, {data} and {listen}
        /// placeholders; read with Prometheus's self-metric names.
        #[arg(long)]
        command: Option<String>,
        /// Name for an explicit command in reports.
        #[arg(long, requires = "command")]
        name: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run the same scenario against several servers, one after another.
    Compare {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Servers to compare, run in this order (default: every installed
        /// preset, kiln first).
        #[arg(long, value_delimiter = ',')]
        servers: Vec<String>,
        /// The server ratios are taken against (default: prometheus when
        /// compared, else the first); its column comes first.
        #[arg(long)]
        reference: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Search the largest fleet each server sustains: geometric ramp, then
    /// bisection, a fresh fleet, server and data dir per step (what
    /// "sustains" means: docs/benchmarks.md, or the module doc of limit.rs).
    Limit(LimitArgs),
    /// Cores, RAM, disk and disk writes for N machines × M series.
    Plan(PlanArgs),
    /// Re-derive the summaries of saved runs and render them again (table,
    /// HTML, ratios against the first run).
    Report {
        /// Run files (run.json, or the per-server files of a compare).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Directory for report.html and the re-summarised runs.json.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "kiln-bench report")]
        title: String,
    },
}

#[derive(Args, Clone)]
struct FleetArgs {
    /// Number of simulated targets.
    #[arg(long, default_value_t = 100)]
    targets: usize,
    /// Series per target (replicas of the 507-series node_exporter capture,
    /// extra copies marked with a `replica` label).
    #[arg(long, default_value_t = 1521)]
    series_per_target: usize,
    /// Scrape interval.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    interval: Duration,
    /// Share of series replaced per hour (0.1 = 10 %/h).
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Targets that also serve histograms.
    #[arg(long, default_value_t = 0)]
    histogram_targets: usize,
    /// Extra histogram series per histogram target (whole families of 14).
    #[arg(long, default_value_t = 504)]
    histogram_series: usize,
    /// Targets that answer only after --slow-delay.
    #[arg(long, default_value_t = 0)]
    slow_targets: usize,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    slow_delay: Duration,
    /// Targets that always answer 503.
    #[arg(long, default_value_t = 0)]
    failing_targets: usize,
    /// Give every sample an explicit timestamp (the scrape slot's start).
    #[arg(long)]
    timestamps: bool,
    /// Answer plain text even when the scraper asks for gzip (by default
    /// the fleet compresses, like node_exporter).
    #[arg(long)]
    no_gzip: bool,
}

impl FleetArgs {
    fn spec(&self) -> Result<FleetSpec, String> {
        if self.targets == 0 || self.targets > model::MAX_TARGETS {
            return Err(format!("--targets must be 1..={}", model::MAX_TARGETS));
        }
        if self.slow_targets + self.failing_targets > self.targets {
            return Err("--slow-targets + --failing-targets exceed --targets".to_owned());
        }
        if !(0.0..=3600.0).contains(&self.churn) {
            return Err("--churn must be between 0 and 3600 per hour".to_owned());
        }
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        if interval_ms < 100 {
            return Err("--interval must be at least 100ms".to_owned());
        }
        Ok(FleetSpec {
            targets: self.targets,
            series_per_target: self.series_per_target,
            interval_ms,
            churn_per_hour: self.churn,
            histogram_targets: self.histogram_targets.min(self.targets),
            histogram_series: self.histogram_series,
            slow_targets: self.slow_targets,
            slow_delay_ms: u64::try_from(self.slow_delay.as_millis()).unwrap_or(u64::MAX),
            failing_targets: self.failing_targets,
            timestamps: self.timestamps,
            origin_ms: now_interval_start(interval_ms),
            gzip: !self.no_gzip,
        })
    }
}

#[derive(Args, Clone)]
struct RunArgs {
    /// How long to measure after the server is ready (at most 1 h).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    duration: Duration,
    /// Time after readiness left out of the rates (default: 2 intervals).
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Sampling period of /proc, the data dir and self-metrics.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    sample_every: Duration,
    /// Give up when the server is not ready within this time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    ready_timeout: Duration,
    /// Times each query of the query set is repeated.
    #[arg(long, default_value_t = 5)]
    query_repeat: usize,
    /// Queries per second sent while measuring (the query set, round-robin).
    #[arg(long, default_value_t = 0.0)]
    query_rate: f64,
    /// Executable of a preset: NAME=PATH (repeatable), e.g. kiln=target/release/kiln.
    #[arg(long = "program")]
    programs: Vec<String>,
    /// Keep the server's data dir after the run.
    #[arg(long)]
    keep_data: bool,
    /// Directory for the report, logs and data (default: target/kiln-bench/<time>-<server>).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl RunArgs {
    fn options(&self, interval: Duration) -> Result<RunOptions, String> {
        if self.duration > Duration::from_secs(3600) || self.duration.is_zero() {
            return Err("--duration must be between 1s and 1h".to_owned());
        }
        if self.sample_every < Duration::from_millis(200) {
            return Err("--sample-every must be at least 200ms".to_owned());
        }
        if !(0.0..=1000.0).contains(&self.query_rate) {
            return Err("--query-rate must be between 0 and 1000 per second".to_owned());
        }
        if self.ready_timeout > Duration::from_secs(600) {
            return Err("--ready-timeout must be at most 10m".to_owned());
        }
        Ok(RunOptions {
            duration: self.duration,
            sample_every: self.sample_every,
            ready_timeout: self.ready_timeout,
            warmup: self.warmup.unwrap_or(interval * 2),
            query_repeat: self.query_repeat.clamp(1, 100),
            query_rate: self.query_rate,
            keep_data: self.keep_data,
        })
    }
}

#[derive(Args)]
struct LimitArgs {
    /// Servers to search, one after another (presets).
    #[arg(long, value_delimiter = ',', required = true)]
    servers: Vec<String>,
    /// The fleet: --targets is the first step's size; the other fleet
    /// flags hold for every step.
    #[command(flatten)]
    fleet: FleetArgs,
    /// Largest fleet tried.
    #[arg(long, default_value_t = 20_000)]
    max_targets: usize,
    /// Factor between the sizes of the ramp (up, or down when the first
    /// size already fails).
    #[arg(long, default_value_t = 2.0)]
    growth: f64,
    /// Bisect until the gap between the largest sustained and the smallest
    /// unsustained size is at most this share of the former.
    #[arg(long, default_value_t = 0.1)]
    precision: f64,
    /// Most steps per server.
    #[arg(long, default_value_t = 10)]
    max_steps: usize,
    /// Cores of the machine (default: those available to kiln-bench).
    #[arg(long)]
    cores: Option<f64>,
    /// Run options; --duration is each step's.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct PlanArgs {
    /// Machines (targets) to monitor.
    #[arg(long)]
    machines: f64,
    /// Series per machine.
    #[arg(long)]
    series: f64,
    #[arg(long, default_value = "15s")]
    interval: String,
    #[arg(long, default_value = "15d")]
    retention: String,
    /// Costs from a run's JSON (run.json, or one server's file of a compare).
    #[arg(long, conflicts_with = "docs")]
    from: Option<PathBuf>,
    /// Costs from a `plan-constants` block in a markdown file (with --server).
    #[arg(long, requires = "server")]
    docs: Option<PathBuf>,
    /// Server whose constants to read from --docs or a file of several runs,
    /// or to measure with --sweep.
    #[arg(long)]
    server: Option<String>,
    /// Measure --server at these fleet sizes (machines of --series series at
    /// --interval), fit the cost curves and plan with the marginal costs.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["from", "docs"], requires = "server")]
    sweep: Vec<usize>,
    #[command(flatten)]
    run: RunArgs,
    /// Overrides of single costs.
    #[arg(long)]
    cpu_s_per_million_samples: Option<f64>,
    #[arg(long)]
    rss_bytes_per_series: Option<f64>,
    #[arg(long)]
    disk_bytes_per_sample: Option<f64>,
    #[arg(long)]
    write_bytes_per_sample: Option<f64>,
    /// Factor on cores and RAM for queries, compaction, rules and restarts.
    #[arg(long, default_value_t = 1.5)]
    headroom: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    plan::parse_duration_s(text)
        .map(Duration::from_secs_f64)
        .map_err(|e| e.to_string())
}

fn now_interval_start(interval_ms: u64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    now - now.rem_euclid(i64::try_from(interval_ms).unwrap_or(i64::MAX).max(1))
}

fn main() -> ExitCode {
    process::raise_fd_limit();
    match dispatch(Cli::parse().command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("kiln-bench: {message}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Fleet {
            fleet,
            port,
            duration_s,
            spec_json,
        } => {
            let spec = match spec_json {
                Some(json) => {
                    serde_json::from_str(&json).map_err(|e| format!("--spec-json: {e}"))?
                }
                None => fleet.spec()?,
            };
            let template = embedded_template().map_err(|e| e.to_string())?;
            eprintln!(
                "kiln-bench fleet: {} targets, {} series per round every {} ms",
                spec.targets,
                spec.total_series(),
                spec.interval_ms
            );
            fleet::serve(spec, template, port, Duration::from_secs(duration_s))
                .map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { fleet, port, out } => {
            let yml = config::prometheus_yml(&fleet.spec()?, port);
            match out {
                Some(path) => {
                    std::fs::write(&path, yml).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => print!("{yml}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            fleet,
            server,
            command,
            name,
            run,
        } => {
            let spec = fleet.spec()?;
            let server = match (server, command) {
                (Some(preset), None) => servers::preset(&preset, &run.programs),
                (None, Some(command)) => servers::explicit(name.as_deref(), &command),
                _ => return Err("give --server PRESET or --command 'CMD …'".to_owned()),
            }
            .map_err(|e| e.to_string())?;
            let options = run.options(fleet.interval)?;
            let out = run
                .out
                .clone()
                .unwrap_or_else(|| run::default_out_dir(&server.name));
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let report = run::run(&spec, &server, &options, &out);
            let ok = report.outcome.status == "completed";
            write_reports(
                &out,
                std::slice::from_ref(&report),
                &format!("kiln-bench run: {}", server.name),
            )?;
            write_json(&out.join("run.json"), &report)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Compare {
            fleet,
            servers,
            reference,
            run,
        } => compare(&fleet, servers, reference.as_deref(), &run),
        Command::Limit(args) => limit_command(&args),
        Command::Plan(args) => plan_command(&args),
        Command::Report { runs, out, title } => {
            let mut reports = Vec::new();
            for path in &runs {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let mut report: RunReport =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                report.summary = run::summarise(&report);
                reports.push(report);
            }
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            write_json(
                &out.join("runs.json"),
                &serde_json::json!({ "runs": &reports, "ratios": report::ratios(&reports) }),
            )?;
            write_reports(&out, &reports, &title)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_reports(out: &Path, runs: &[RunReport], title: &str) -> Result<(), String> {
    let html_path = out.join("report.html");
    std::fs::write(&html_path, report::html(runs, title))
        .map_err(|e| format!("{}: {e}", html_path.display()))?;
    println!("{}", report::table(runs));
    println!("report: {}", html_path.display());
    Ok(())
}

fn compare(
    fleet: &FleetArgs,
    servers: Vec<String>,
    reference: Option<&str>,
    run: &RunArgs,
) -> Result<ExitCode, String> {
    let spec = fleet.spec()?;
    let options = run.options(fleet.interval)?;
    let names: Vec<String> = if servers.is_empty() {
        let found: Vec<String> = servers::PRESETS
            .iter()
            .filter(|p| servers::available(p, &run.programs))
            .map(|p| (*p).to_owned())
            .collect();
        for missing in servers::PRESETS
            .iter()
            .filter(|p| !found.iter().any(|f| f == *p))
        {
            eprintln!(
                "kiln-bench compare: {missing} not found, left out (see --program, scripts/install-peers.sh)"
            );
        }
        found
    } else {
        servers
    };
    if names.is_empty() {
        return Err("no server to compare".to_owned());
    }
    let specs = names
        .iter()
        .map(|n| servers::preset(n, &run.programs).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let out = run
        .out
        .clone()
        .unwrap_or_else(|| run::default_out_dir("compare"));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut reports = Vec::new();
    for server in &specs {
        eprintln!(
            "kiln-bench compare: running {} ({} targets)",
            server.name, spec.targets
        );
        let report = run::run(&spec, server, &options, &out);
        write_json(&out.join(format!("{}.json", server.name)), &report)?;
        eprintln!(
            "kiln-bench compare: {} {}",
            server.name, report.outcome.status
        );
        reports.push(report);
    }
    let all_ok = reports.iter().all(|r| r.outcome.status == "completed");
    let reference = reference.unwrap_or(if names.iter().any(|n| n == "prometheus") {
        "prometheus"
    } else {
        &names[0]
    });
    let first = reports
        .iter()
        .position(|r| r.server == reference)
        .ok_or_else(|| format!("--reference {reference} is not among the compared servers"))?;
    reports[..=first].rotate_right(1);
    write_json(
        &out.join("compare.json"),
        &serde_json::json!({ "runs": &reports, "ratios": report::ratios(&reports) }),
    )?;
    write_reports(
        &out,
        &reports,
        &format!("kiln-bench compare: {}", names.join(" vs ")),
    )?;
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `kiln-bench limit`: searches each server in turn, then renders the
/// servers side by side, each at its limit.
fn limit_command(args: &LimitArgs) -> Result<ExitCode, String> {
    let base = args.fleet.spec()?;
    if base.failing_targets + base.slow_targets > 0 {
        return Err(
            "limit: failing or slow targets can never be sustained; leave them out".to_owned(),
        );
    }
    if !(1.1..=16.0).contains(&args.growth) {
        return Err("--growth must be between 1.1 and 16".to_owned());
    }
    if !(0.0..=1.0).contains(&args.precision) || args.precision == 0.0 {
        return Err("--precision must be in (0, 1]".to_owned());
    }
    if !(1..=30).contains(&args.max_steps) {
        return Err("--max-steps must be 1..=30".to_owned());
    }
    if !(base.targets..=model::MAX_TARGETS).contains(&args.max_targets) {
        return Err(format!(
            "--max-targets must be between --targets and {}",
            model::MAX_TARGETS
        ));
    }
    let options = args.run.options(args.fleet.interval)?;
    let needed = options.warmup + args.fleet.interval * 2 + options.sample_every;
    if options.duration < needed {
        return Err(format!(
            "--duration must cover the warm-up, two scrape intervals and a tick ({needed:?}) for a step to be judged"
        ));
    }
    let cores = match args.cores {
        Some(cores) if cores > 0.0 => cores,
        Some(_) => return Err("--cores must be positive".to_owned()),
        None => std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
    };
    let criteria = limit::Criteria::new(cores);
    let params = limit::SearchParams {
        from: base.targets,
        max: args.max_targets,
        growth: args.growth,
        precision: args.precision,
        max_steps: args.max_steps,
    };
    let specs = args
        .servers
        .iter()
        .map(|n| servers::preset(n, &args.run.programs).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let out = args
        .run
        .out
        .clone()
        .unwrap_or_else(|| run::default_out_dir("limit"));
    let mut at_limit = Vec::new();
    let mut conclusions = Vec::new();
    for server in &specs {
        let (found, limit_run) = find_limit(
            server,
            &base,
            &options,
            &params,
            &criteria,
            &out.join(&server.name),
        )?;
        conclusions.push(found.describe());
        at_limit.extend(limit_run);
    }
    if at_limit.len() > 1 {
        // Ratios against Prometheus when it is among them, as in `compare`.
        if let Some(i) = at_limit.iter().position(|r| r.server == "prometheus") {
            at_limit[..=i].rotate_right(1);
        }
        write_json(
            &out.join("limits.json"),
            &serde_json::json!({ "runs": &at_limit, "ratios": report::ratios(&at_limit) }),
        )?;
        write_reports(
            &out,
            &at_limit,
            "kiln-bench limit: each server at its limit",
        )?;
    }
    for conclusion in &conclusions {
        println!("{conclusion}");
    }
    Ok(if at_limit.len() == specs.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// One server's search: every step is a whole [`run::run`] in its own
/// directory under `dir`, judged by [`limit::judge`]. Writes each step's
/// `run.json`, the search's `limit.json` and a report of all steps; returns
/// the search and the run at the limit.
fn find_limit(
    server: &servers::ServerSpec,
    base: &FleetSpec,
    options: &RunOptions,
    params: &limit::SearchParams,
    criteria: &limit::Criteria,
    dir: &Path,
) -> Result<(limit::LimitReport, Option<RunReport>), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut runs: Vec<RunReport> = Vec::new();
    let mut steps = Vec::new();
    let mut failure = None;
    let found = limit::search(params, |targets| {
        // After a failure to write, the remaining steps end at once.
        if failure.is_some() {
            return false;
        }
        let spec = FleetSpec {
            targets,
            ..base.clone()
        };
        let step_dir = dir.join(format!("step{:02}-{targets}", steps.len() + 1));
        eprintln!(
            "kiln-bench limit: {} step {}: {targets} targets, {} series every {} ms",
            server.name,
            steps.len() + 1,
            spec.total_series(),
            spec.interval_ms
        );
        let report = match std::fs::create_dir_all(&step_dir) {
            Ok(()) => run::run(&spec, server, options, &step_dir),
            Err(e) => {
                failure.get_or_insert(format!("{}: {e}", step_dir.display()));
                return false;
            }
        };
        let verdict = limit::judge(&report, criteria);
        let run_path = step_dir.join("run.json");
        if let Err(e) = write_json(&run_path, &report) {
            failure.get_or_insert(e);
        }
        eprintln!(
            "kiln-bench limit: {} at {targets} targets: {}",
            server.name,
            if verdict.sustained {
                "sustained".to_owned()
            } else {
                format!("not sustained: {}", verdict.failures())
            }
        );
        let sustained = verdict.sustained;
        steps.push(limit::LimitStep {
            targets,
            series: spec.total_series(),
            offered_samples_per_s: report.offered_samples_per_s,
            verdict,
            run: run_path.display().to_string(),
        });
        runs.push(report);
        sustained
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let result = limit::LimitReport::new(
        &server.name,
        base.clone(),
        criteria.clone(),
        params.clone(),
        &found,
        steps,
    );
    write_json(&dir.join("limit.json"), &result)?;
    write_reports(dir, &runs, &format!("kiln-bench limit: {}", server.name))?;
    let limit_run = found
        .limit
        .and_then(|n| runs.into_iter().find(|r| r.fleet.targets == n));
    Ok((result, limit_run))
}

/// Costs from a run's JSON (`run.json`, a server's file of a compare), a
/// sweep's (`sweep.json`) or a file of several runs (`compare.json`,
/// `runs.json`: the run of `server`).
fn costs_from_file(path: &Path, server: Option<&str>) -> Result<plan::Costs, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(fit) = json.get("fit").filter(|f| !f.is_null()) {
        let fit: sweep::SweepFit =
            serde_json::from_value(fit.clone()).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(fit.costs);
    }
    let json = match json.get("runs").and_then(|r| r.as_array()) {
        Some(runs) => {
            let wanted = server.ok_or_else(|| {
                format!(
                    "{} holds several runs: pick one with --server",
                    path.display()
                )
            })?;
            runs.iter()
                .find(|r| r["server"] == wanted)
                .cloned()
                .ok_or_else(|| format!("{} has no run of {wanted}", path.display()))?
        }
        None => json,
    };
    let report: RunReport =
        serde_json::from_value(json).map_err(|e| format!("{}: {e}", path.display()))?;
    plan::costs_from_run(&report, &path.display().to_string()).map_err(|e| e.to_string())
}

/// Runs the sweep of `plan --sweep` and returns the fitted costs; the runs,
/// the fit and an HTML report go to the run's out dir.
fn run_sweep(args: &PlanArgs) -> Result<plan::Costs, String> {
    let name = args.server.as_deref().ok_or("--sweep needs --server")?;
    let server = servers::preset(name, &args.run.programs).map_err(|e| e.to_string())?;
    let interval = parse_duration(&args.interval)?;
    let options = args.run.options(interval)?;
    let out = args
        .run
        .out
        .clone()
        .unwrap_or_else(|| run::default_out_dir(&format!("sweep-{name}")));
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut reports = Vec::new();
    for &targets in &args.sweep {
        let fleet = FleetArgs {
            targets,
            series_per_target: args.series as usize,
            interval,
            churn: 0.0,
            histogram_targets: 0,
            histogram_series: 0,
            slow_targets: 0,
            slow_delay: Duration::ZERO,
            failing_targets: 0,
            timestamps: false,
            no_gzip: false,
        };
        eprintln!("kiln-bench plan --sweep: {name} at {targets} targets");
        let report = run::run(&fleet.spec()?, &server, &options, &out);
        write_json(&out.join(format!("{name}-{targets}.json")), &report)?;
        reports.push(report);
    }
    let fit = sweep::fit_runs(&reports);
    write_json(
        &out.join("sweep.json"),
        &serde_json::json!({ "runs": &reports, "fit": &fit }),
    )?;
    let html_path = out.join("report.html");
    std::fs::write(
        &html_path,
        report::html(&reports, &format!("kiln-bench sweep: {name}")),
    )
    .map_err(|e| format!("{}: {e}", html_path.display()))?;
    eprintln!("{}", report::table(&reports));
    let fit = fit.ok_or("the sweep needs at least two completed runs of different sizes")?;
    eprintln!("{}", sweep::describe(&fit));
    eprintln!("sweep: {}", out.join("sweep.json").display());
    Ok(fit.costs)
}

fn plan_command(args: &PlanArgs) -> Result<ExitCode, String> {
    let mut costs = if !args.sweep.is_empty() {
        run_sweep(args)?
    } else if let Some(path) = &args.from {
        costs_from_file(path, args.server.as_deref())?
    } else if let (Some(path), Some(server)) = (&args.docs, &args.server) {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        plan::costs_from_docs(&text, &path.display().to_string(), server)
            .map_err(|e| e.to_string())?
    } else {
        let all = [
            args.cpu_s_per_million_samples,
            args.rss_bytes_per_series,
            args.disk_bytes_per_sample,
            args.write_bytes_per_sample,
        ];
        if all.iter().any(Option::is_none) {
            return Err(
                "give --from RUN.json, --docs FILE --server NAME, or all four cost flags"
                    .to_owned(),
            );
        }
        plan::Costs {
            source: "the command line".to_owned(),
            cpu_s_per_million_samples: 0.0,
            rss_bytes_per_series: 0.0,
            disk_bytes_per_sample: 0.0,
            write_bytes_per_sample: 0.0,
        }
    };
    if let Some(v) = args.cpu_s_per_million_samples {
        costs.cpu_s_per_million_samples = v;
    }
    if let Some(v) = args.rss_bytes_per_series {
        costs.rss_bytes_per_series = v;
    }
    if let Some(v) = args.disk_bytes_per_sample {
        costs.disk_bytes_per_sample = v;
    }
    if let Some(v) = args.write_bytes_per_sample {
        costs.write_bytes_per_sample = v;
    }
    if args.machines <= 0.0 || args.series <= 0.0 || args.headroom < 1.0 {
        return Err("--machines and --series must be positive, --headroom at least 1".to_owned());
    }
    let load = plan::Load {
        machines: args.machines,
        series_per_machine: args.series,
        interval_s: plan::parse_duration_s(&args.interval).map_err(|e| e.to_string())?,
        retention_s: plan::parse_duration_s(&args.retention).map_err(|e| e.to_string())?,
    };
    if args.json {
        let need = plan::plan(&load, &costs, args.headroom);
        let json = serde_json::json!({ "load": load, "costs": costs, "headroom": args.headroom, "need": need });
        println!(
            "{}",
            serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", plan::explain(&load, &costs, args.headroom));
    }
    Ok(ExitCode::SUCCESS)
}
