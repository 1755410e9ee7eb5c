//! `GET /api/v1/targets`: the scrape targets and their health, in
//! Prometheus's shape (`activeTargets`, `droppedTargets`, with `state` and
//! `scrapePool` filters).

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
    let mut all: Vec<_> = state.targets.lock().values().cloned().collect();
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
    // Targets dropped by relabeling are not kept yet (see
    // docs/compatibility.md): the list is always empty.
    b.raw(r#"],"droppedTargets":[]}}"#);
    Reply::json(StatusCode::OK, b.finish())
}
