//! `GET /federate`: the latest sample of every series matching the
//! `match[]` selectors, in text format 0.0.4, for another Prometheus to
//! scrape.
//!
//! As Prometheus does: the sample is the newest within the lookback delta
//! before now, stale series are left out, the configuration's external
//! labels are added where a series lacks them, and series are grouped into
//! families by metric name, each announced as `untyped`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use kiln_storage::{LabelsBuilder, Matcher, SelectHints, is_stale_nan};

use super::params::Params;
use super::response::{Reply, TEXT_FORMAT};
use crate::state::ServerState;

/// `GET /federate`.
pub async fn federate(state: &ServerState, p: &Params) -> Reply {
    let mut sets: Vec<Vec<Matcher>> = Vec::new();
    for s in p.all("match[]") {
        match super::api::parse_selector(s) {
            Ok(m) => sets.push(m),
            Err(e) => return Reply::text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let lookback = state.flags.query_lookback_delta.as_millis() as i64;
    // The same sample cap as queries: a `match[]` of everything must fail
    // with an error, not hold the whole head in memory.
    let hints = SelectHints {
        max_samples: usize::try_from(state.flags.query_max_samples).unwrap_or(usize::MAX),
        ..SelectHints::range(now - lookback, now)
    };
    let external = state.config.read().parsed.global.external_labels.clone();
    // Each series once, even when several selectors match it.
    let mut latest: Vec<(kiln_storage::Labels, i64, f64)> = Vec::new();
    for m in sets {
        let batch = match state.query.select(m, hints).await {
            Ok(b) => b,
            Err(e) => {
                return Reply::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("federation failed: {e}\n"),
                );
            }
        };
        for s in batch.iter() {
            let (Some(&t), Some(&v)) = (s.timestamps.last(), s.values.last()) else {
                continue;
            };
            if is_stale_nan(v) {
                continue;
            }
            let mut b: LabelsBuilder = s.labels.builder();
            for l in external.iter() {
                if s.labels.get(l.name).is_none() {
                    b.set(l.name, l.value);
                }
            }
            if let Ok(labels) = b.build() {
                latest.push((labels, t, v));
            }
        }
    }
    latest.sort_by(|a, b| a.0.cmp(&b.0));
    latest.dedup_by(|a, b| a.0 == b.0);
    let mut out = String::with_capacity(latest.len() * 96);
    let mut family = String::new();
    for (labels, t, v) in &latest {
        let name = labels.metric_name().unwrap_or_default();
        if name != family {
            let _ = writeln!(out, "# TYPE {name} untyped");
            family = name.to_owned();
        }
        out.push_str(name);
        let mut first = true;
        for l in labels
            .iter()
            .filter(|l| l.name != kiln_storage::METRIC_NAME)
        {
            out.push(if first { '{' } else { ',' });
            first = false;
            out.push_str(l.name);
            out.push_str("=\"");
            for c in l.value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        if !first {
            out.push('}');
        }
        let _ = writeln!(out, " {} {t}", kiln_storage::format_value(*v));
    }
    Reply::new(StatusCode::OK, TEXT_FORMAT, out)
}
