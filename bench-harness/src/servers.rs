//! The servers kiln-bench knows how to drive, and how to read them.
//!
//! Owns the presets (kiln, prometheus, victoria-metrics): how each is found
//! on disk, its command line (placeholders `{config}`, `{data}`, `{listen}`),
//! its readiness path and which of its self-metrics mean "samples
//! appended", "active series" and "failed scrapes". Also owns reading those
//! from a text exposition body.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// A self-metric: a metric name, optionally restricted to lines whose label
/// text contains `label` (e.g. `type="storage/hour_metric_ids"`); values of
/// all matching lines are summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRef {
    pub name: &'static str,
    pub label: Option<&'static str>,
}

const fn metric(name: &'static str) -> MetricRef {
    MetricRef { name, label: None }
}

/// How to start and read one server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Short name used in reports (`prometheus`, `kiln`, …).
    pub name: String,
    /// Program and arguments, with placeholders still in.
    pub command: Vec<String>,
    pub ready_path: &'static str,
    pub samples_appended: Option<MetricRef>,
    pub active_series: Option<MetricRef>,
    pub failed_scrapes: Option<MetricRef>,
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("unknown server preset {0:?}: use kiln, prometheus or victoria-metrics, or --command")]
    UnknownPreset(String),
    #[error("{name}: no executable found (looked for {looked}); pass --program {name}=PATH")]
    NotFound { name: String, looked: String },
    #[error("--program needs NAME=PATH, got {0:?}")]
    BadProgram(String),
    #[error("--command is empty")]
    EmptyCommand,
}

/// Preset names, in the order `compare` runs them.
pub const PRESETS: [&str; 3] = ["kiln", "prometheus", "victoria-metrics"];

const PROMETHEUS_METRICS: (MetricRef, MetricRef) = (
    metric("prometheus_tsdb_head_samples_appended_total"),
    metric("prometheus_tsdb_head_series"),
);

/// Builds the preset `name`, with its executable taken from `programs`
/// (`NAME=PATH` overrides) or searched for.
pub fn preset(name: &str, programs: &[String]) -> Result<ServerSpec, ServerError> {
    if !PRESETS.contains(&name) {
        return Err(ServerError::UnknownPreset(name.to_owned()));
    }
    let program = program_for(name, programs)?;
    let prometheus_args = |program: String| {
        vec![
            program,
            "--config.file={config}".to_owned(),
            "--storage.tsdb.path={data}".to_owned(),
            "--web.listen-address={listen}".to_owned(),
        ]
    };
    Ok(match name {
        "kiln" | "prometheus" => ServerSpec {
            name: name.to_owned(),
            command: prometheus_args(program),
            ready_path: "/-/ready",
            samples_appended: Some(PROMETHEUS_METRICS.0),
            active_series: Some(PROMETHEUS_METRICS.1),
            failed_scrapes: None,
        },
        "victoria-metrics" => ServerSpec {
            name: name.to_owned(),
            command: vec![
                program,
                "-promscrape.config={config}".to_owned(),
                "-storageDataPath={data}".to_owned(),
                "-httpListenAddr={listen}".to_owned(),
            ],
            ready_path: "/-/ready",
            samples_appended: Some(metric("vm_rows_inserted_total")),
            active_series: Some(MetricRef {
                name: "vm_cache_entries",
                label: Some("type=\"storage/hour_metric_ids\""),
            }),
            failed_scrapes: Some(metric("vm_promscrape_scrapes_failed_total")),
        },
        other => return Err(ServerError::UnknownPreset(other.to_owned())),
    })
}

/// A server given as an explicit command line (whitespace-separated, with
/// the placeholders); it is read with Prometheus's metric names.
pub fn explicit(name: Option<&str>, command: &str) -> Result<ServerSpec, ServerError> {
    let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
    let first = words.first().ok_or(ServerError::EmptyCommand)?;
    let name = name.map_or_else(
        || {
            Path::new(first)
                .file_name()
                .map_or_else(|| first.clone(), |n| n.to_string_lossy().into_owned())
        },
        str::to_owned,
    );
    Ok(ServerSpec {
        name,
        command: words,
        ready_path: "/-/ready",
        samples_appended: Some(PROMETHEUS_METRICS.0),
        active_series: Some(PROMETHEUS_METRICS.1),
        failed_scrapes: None,
    })
}

/// Whether preset `name` can be found (for `compare`'s "when installed").
pub fn available(name: &str, programs: &[String]) -> bool {
    program_for(name, programs).is_ok_and(|p| is_executable(Path::new(&p)))
}

fn program_for(name: &str, programs: &[String]) -> Result<String, ServerError> {
    for entry in programs {
        let (key, path) = entry
            .split_once('=')
            .ok_or_else(|| ServerError::BadProgram(entry.clone()))?;
        if key == name {
            return Ok(path.to_owned());
        }
    }
    let candidates = candidates(name);
    candidates
        .iter()
        .find(|p| is_executable(p))
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| ServerError::NotFound {
            name: name.to_owned(),
            looked: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Where a preset's executable may be: kiln in the workspace's release
/// build (`./target/release`, `$CARGO_TARGET_DIR/release`, next to a
/// release kiln-bench) or on `$PATH`, the peers on `$PATH`.
fn candidates(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if name == "kiln" {
        found.push(PathBuf::from("target/release/kiln"));
        if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
            found.push(Path::new(&dir).join("release/kiln"));
        }
        // Next to a release kiln-bench only: a debug kiln would be measured
        // as if it were the real thing.
        if let Ok(me) = std::env::current_exe()
            && let Some(dir) = me.parent()
            && dir.ends_with("release")
        {
            found.push(dir.join("kiln"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        found.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
    }
    found
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Replaces the placeholders in a server command.
pub fn instantiate(command: &[String], config: &Path, data: &Path, listen: &str) -> Vec<String> {
    command
        .iter()
        .map(|word| {
            word.replace("{config}", &config.to_string_lossy())
                .replace("{data}", &data.to_string_lossy())
                .replace("{listen}", listen)
        })
        .collect()
}

/// Sum of the values of `metric` in a text exposition body; `None` when no
/// line matches.
pub fn read_metric(body: &str, metric: &MetricRef) -> Option<f64> {
    let mut sum = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(metric.name) else {
            continue;
        };
        let (labels, value_part) = if let Some(after) = rest.strip_prefix('{') {
            let Some(close) = after.rfind('}') else {
                continue;
            };
            (&after[..close], &after[close + 1..])
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // a longer name sharing the prefix
        };
        if metric.label.is_some_and(|wanted| !labels.contains(wanted)) {
            continue;
        }
        if let Some(value) = value_part
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sums_and_filters() {
        let body = "# TYPE a counter\na_total{type=\"float\"} 10\na_total{type=\"histogram\"} 5\n\
a_total_more 99\nb 3 1700000000000\nvm_cache_entries{type=\"storage/hour_metric_ids\"} 7\n\
vm_cache_entries{type=\"other\", x=\"}\"} 1\n";
        assert_eq!(read_metric(body, &metric("a_total")), Some(15.0));
        assert_eq!(read_metric(body, &metric("b")), Some(3.0));
        assert_eq!(read_metric(body, &metric("c")), None);
        let hour = MetricRef {
            name: "vm_cache_entries",
            label: Some("type=\"storage/hour_metric_ids\""),
        };
        assert_eq!(read_metric(body, &hour), Some(7.0));
    }

    #[test]
    fn presets_fill_placeholders() {
        let spec = preset("prometheus", &["prometheus=/opt/p".to_owned()]).unwrap();
        let cmd = instantiate(
            &spec.command,
            Path::new("/c.yml"),
            Path::new("/d"),
            "127.0.0.1:9",
        );
        assert_eq!(
            cmd,
            [
                "/opt/p",
                "--config.file=/c.yml",
                "--storage.tsdb.path=/d",
                "--web.listen-address=127.0.0.1:9"
            ]
        );
        assert!(matches!(
            preset("nope", &[]),
            Err(ServerError::UnknownPreset(_))
        ));
        assert!(matches!(
            preset("kiln", &["kiln".to_owned()]),
            Err(ServerError::BadProgram(_))
        ));
        let own = explicit(None, "/x/y/srv --a {listen}").unwrap();
        assert_eq!(own.name, "srv");
    }
}
