//! Health, readiness, lifecycle and the `/api/v1/status/*` endpoints, with
//! Prometheus's JSON shapes.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::Serialize;
use tokio::sync::oneshot;

use super::response::{ErrorType, Reply, TEXT_FORMAT};
use crate::logging::rfc3339_nanos;
use crate::selfmetrics::{PROMETHEUS_API_VERSION, ProcessStats};
use crate::state::{Control, ServerState};

pub fn healthy() -> Reply {
    Reply::text(StatusCode::OK, "kiln is Healthy.\n")
}

pub fn ready(state: &ServerState) -> Reply {
    if state.is_ready() {
        Reply::text(StatusCode::OK, "kiln is Ready.\n")
    } else {
        Reply::text(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
    }
}

pub fn metrics(state: &ServerState) -> Reply {
    Reply::new(
        StatusCode::OK,
        TEXT_FORMAT,
        state
            .metrics
            .render(state.started, state.shards, &state.shard_stats),
    )
}

/// `POST /-/reload`: asks the main thread to reload and waits for the result.
pub async fn reload(state: &ServerState) -> Reply {
    if !state.flags.enable_lifecycle {
        return Reply::text(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n");
    }
    let (tx, rx) = oneshot::channel();
    if state.control.send(Control::Reload(tx)).is_err() {
        return Reply::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    match rx.await {
        Ok(Ok(())) => Reply::text(StatusCode::OK, ""),
        Ok(Err(e)) => Reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        ),
        Err(_) => Reply::text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
    }
}

/// `POST /-/quit`: asks the main thread to shut down.
pub fn quit(state: &ServerState) -> Reply {
    if !state.flags.enable_lifecycle {
        return Reply::text(StatusCode::FORBIDDEN, "Lifecycle API is not enabled.\n");
    }
    // If the main thread is already gone, kiln is shutting down anyway.
    let _ = state.control.send(Control::Quit);
    Reply::text(StatusCode::OK, "Requesting termination... Goodbye!\n")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildInfo {
    version: &'static str,
    revision: String,
    branch: &'static str,
    build_user: &'static str,
    build_date: &'static str,
    go_version: &'static str,
}

pub fn buildinfo() -> Reply {
    Reply::api_success(&BuildInfo {
        version: PROMETHEUS_API_VERSION,
        revision: format!("kiln-{}", env!("CARGO_PKG_VERSION")),
        branch: "kiln",
        build_user: "kiln",
        build_date: "",
        go_version: "rust",
    })
}

#[derive(Serialize)]
struct RuntimeInfo {
    #[serde(rename = "startTime")]
    start_time: String,
    #[serde(rename = "CWD")]
    cwd: String,
    #[serde(rename = "reloadConfigSuccess")]
    reload_config_success: bool,
    #[serde(rename = "lastConfigTime")]
    last_config_time: String,
    #[serde(rename = "corruptionCount")]
    corruption_count: u64,
    #[serde(rename = "goroutineCount")]
    goroutine_count: u64,
    #[serde(rename = "GOMAXPROCS")]
    gomaxprocs: usize,
    #[serde(rename = "GOGC")]
    gogc: &'static str,
    #[serde(rename = "GODEBUG")]
    godebug: &'static str,
    #[serde(rename = "storageRetention")]
    storage_retention: String,
}

pub fn runtimeinfo(state: &ServerState) -> Reply {
    let loaded_at = state.config.read().loaded_at;
    let retention = match state.flags.retention_size {
        0 => crate::cli::format_duration(state.flags.retention_time),
        size => format!(
            "{} or {}",
            crate::cli::format_duration(state.flags.retention_time),
            crate::cli::format_bytes(size)
        ),
    };
    Reply::api_success(&RuntimeInfo {
        start_time: rfc3339_nanos(state.started),
        cwd: std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        reload_config_success: state.metrics.last_reload_successful(),
        last_config_time: rfc3339_nanos(loaded_at),
        corruption_count: 0,
        // kiln has no goroutines; the closest meaning is its OS threads.
        goroutine_count: ProcessStats::read().map(|p| p.threads).unwrap_or(0),
        gomaxprocs: state.shards,
        gogc: "",
        godebug: "",
        storage_retention: retention,
    })
}

pub fn flags(state: &ServerState) -> Reply {
    let map: BTreeMap<&str, String> = state.flags.as_pairs(state.shards).into_iter().collect();
    Reply::api_success(&map)
}

#[derive(Serialize)]
struct ConfigYaml<'a> {
    yaml: &'a str,
}

pub fn config(state: &ServerState) -> Reply {
    let cfg = state.config.read();
    if cfg.yaml.is_empty() {
        return Reply::api_error(ErrorType::Internal, "no configuration loaded");
    }
    Reply::api_success(&ConfigYaml { yaml: &cfg.yaml })
}
