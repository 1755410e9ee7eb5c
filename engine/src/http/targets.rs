//! What kiln knows about its targets: `GET /api/v1/targets` (health, in
//! Prometheus 3's shape: `activeTargets`, `droppedTargets` with their
//! discovered labels and pool, `droppedTargetCounts`, with `state` and
//! `scrapePool` filters) and `GET /api/v1/metadata` (the metric families'
//! TYPE, HELP and UNIT as the targets declared them).

use std::collections::{BTreeMap, BTreeSet};

use http::StatusCode;

use super::json::JsonBuf;
use super::params::Params;
use super::response::{ErrorType, Reply};
use crate::cli::format_duration;
use crate::logging::rfc3339_nanos;
use crate::state::ServerState;

/// `GET /api/v1/targets`.
pub fn targets(state: &ServerState, p: &Params) -> Reply {
    let which = match p.get("state") {
        "" | "any" => (true, true),
        "active" => (true, false),
        "dropped" => (false, true),
        other => {
            return Reply::api_error(
                ErrorType::BadData,
                &format!("invalid parameter \"state\": unknown state {other:?}"),
            );
        }
    };
    let pool = p.get("scrapePool");
    let mut all: Vec<_> = state.targets.active.lock().values().cloned().collect();
    all.retain(|t| pool.is_empty() || t.target.job == pool);
    all.sort_by(|a, b| {
        (a.target.job.as_str(), a.target.url.as_str())
            .cmp(&(b.target.job.as_str(), b.target.url.as_str()))
    });
    let mut b = JsonBuf::with_capacity(512 + all.len() * 512);
    b.raw(r#"{"status":"success","data":{"activeTargets":["#);
    if which.0 {
        for (i, t) in all.iter().enumerate() {
            if i > 0 {
                b.raw(",");
            }
            let h = t.health.lock().clone();
            let tg = &t.target;
            b.raw(r#"{"discoveredLabels":"#)
                .labels(&tg.discovered_labels)
                .raw(r#","labels":"#)
                .labels(&tg.settings.target_labels)
                .raw(r#","scrapePool":"#)
                .string(&tg.job)
                .raw(r#","scrapeUrl":"#)
                .string(&tg.url)
                .raw(r#","globalUrl":"#)
                .string(&tg.url)
                .raw(r#","lastError":"#)
                .string(&h.last_error)
                .raw(r#","lastScrape":"#)
                .string(
                    &h.last_scrape
                        .map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339_nanos),
                )
                .raw(r#","lastScrapeDuration":"#)
                .raw(&h.last_duration.as_secs_f64().to_string())
                .raw(r#","health":"#)
                .string(h.health)
                .raw(r#","scrapeInterval":"#)
                .string(&format_duration(tg.interval))
                .raw(r#","scrapeTimeout":"#)
                .string(&format_duration(tg.timeout))
                .raw("}");
        }
    }
    b.raw(r#"],"droppedTargets":["#);
    if which.1 {
        let dropped = state.targets.dropped.lock();
        let pools = dropped
            .iter()
            .filter(|(job, _)| pool.is_empty() || job.as_str() == pool);
        let mut first = true;
        for (job, d) in pools.clone() {
            for labels in &d.kept {
                if !first {
                    b.raw(",");
                }
                first = false;
                b.raw(r#"{"discoveredLabels":"#)
                    .labels(labels)
                    .raw(r#","scrapePool":"#)
                    .string(job)
                    .raw("}");
            }
        }
        // Prometheus 3: every pool's count of dropped targets, including
        // those beyond `keep_dropped_targets`.
        b.raw(r#"],"droppedTargetCounts":{"#);
        for (i, (job, d)) in pools.enumerate() {
            if i > 0 {
                b.raw(",");
            }
            b.string(job).raw(":").raw(&d.count.to_string());
        }
        b.raw("}}}");
    } else {
        b.raw(r#"],"droppedTargetCounts":null}}"#);
    }
    Reply::json(StatusCode::OK, b.finish())
}

/// `GET /api/v1/metadata`: `metric` filters by family name, `limit` caps
/// the number of families and `limit_per_metric` the entries per family
/// (negative or absent: no cap).
pub fn metadata(state: &ServerState, p: &Params) -> Reply {
    let cap = |name: &'static str| -> Result<Option<usize>, Reply> {
        match p.get(name) {
            "" => Ok(None),
            v => match v.parse::<i64>() {
                Ok(n) if n < 0 => Ok(None),
                Ok(n) => Ok(Some(n as usize)),
                Err(_) => Err(Reply::api_error(
                    ErrorType::BadData,
                    &format!("invalid parameter \"{name}\": {v:?} is not a number"),
                )),
            },
        }
    };
    let (limit, per_metric) = match (cap("limit"), cap("limit_per_metric")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let only = p.get("metric");
    let maps: Vec<_> = state
        .targets
        .active
        .lock()
        .values()
        .map(|t| t.metadata.lock().clone())
        .collect();
    // Family → distinct (type, help, unit), in a stable order.
    let mut all: BTreeMap<&str, BTreeSet<(&str, &str, &str)>> = BTreeMap::new();
    for m in &maps {
        for (name, md) in m.iter() {
            if only.is_empty() || name == only {
                all.entry(name)
                    .or_default()
                    .insert((md.kind.as_str(), &md.help, &md.unit));
            }
        }
    }
    let mut b = JsonBuf::with_capacity(64 + all.len() * 96);
    b.raw(r#"{"status":"success","data":{"#);
    for (i, (name, entries)) in all.iter().take(limit.unwrap_or(usize::MAX)).enumerate() {
        if i > 0 {
            b.raw(",");
        }
        b.string(name).raw(":[");
        for (j, (kind, help, unit)) in entries
            .iter()
            .take(per_metric.unwrap_or(usize::MAX))
            .enumerate()
        {
            if j > 0 {
                b.raw(",");
            }
            b.raw(r#"{"type":"#)
                .string(kind)
                .raw(r#","help":"#)
                .string(help)
                .raw(r#","unit":"#)
                .string(unit)
                .raw("}");
        }
        b.raw("]");
    }
    b.raw("}}");
    Reply::json(StatusCode::OK, b.finish())
}
