//! `/api/v1/rules` and `/api/v1/alerts`. kiln does not evaluate rules yet
//! (a later issue). With no `rule_files` in the configuration, Prometheus
//! has no groups and no alerts either, and kiln answers exactly as it does
//! (Grafana asks for the rules of every Prometheus data source). With
//! `rule_files`, Prometheus would evaluate them; kiln says that it does not
//! (`503 unavailable`) instead of pretending there are no rules.

use http::StatusCode;

use super::api::parse_selector;
use super::params::{ParamError, Params};
use super::response::{ErrorType, Reply};
use crate::state::ServerState;

/// Prometheus's answer when rule files are configured but kiln cannot
/// evaluate them.
fn not_evaluated(state: &ServerState) -> Option<Reply> {
    let n = state.config.read().parsed.rule_files.len();
    (n > 0).then(|| {
        Reply::api_error(
            ErrorType::Unavailable,
            &format!(
                "kiln does not evaluate rules yet: the {n} rule_files pattern(s) of the configuration are not loaded"
            ),
        )
    })
}

fn bad(e: ParamError) -> Reply {
    Reply::api_error(ErrorType::BadData, &e.to_string())
}

/// `GET /api/v1/rules`: checks the parameters Prometheus 3 checks (`type`,
/// `exclude_alerts`, `match[]`); `rule_name[]`, `rule_group[]`, `file[]`
/// and `group_limit` filter or page an empty list.
pub fn rules(state: &ServerState, p: &Params) -> Reply {
    for m in p.all("match[]") {
        if let Err(e) = parse_selector(m) {
            return bad(ParamError::new("match[]", e));
        }
    }
    let typ = p.get("type").to_lowercase();
    if !matches!(typ.as_str(), "" | "alert" | "record") {
        return bad(ParamError::new(
            "type",
            format!("not supported value {typ:?}"),
        ));
    }
    let exclude = p.get("exclude_alerts").to_lowercase();
    if !exclude.is_empty() && go_parse_bool(&exclude).is_none() {
        return bad(ParamError::new(
            "exclude_alerts",
            format!(
                "error converting exclude_alerts: strconv.ParseBool: parsing {exclude:?}: invalid syntax"
            ),
        ));
    }
    if let Some(r) = not_evaluated(state) {
        return r;
    }
    Reply::json(
        StatusCode::OK,
        r#"{"status":"success","data":{"groups":[]}}"#.to_owned(),
    )
}

/// `GET /api/v1/alerts` (Prometheus takes no parameters here).
pub fn alerts(state: &ServerState) -> Reply {
    if let Some(r) = not_evaluated(state) {
        return r;
    }
    Reply::json(
        StatusCode::OK,
        r#"{"status":"success","data":{"alerts":[]}}"#.to_owned(),
    )
}

/// Go's `strconv.ParseBool` on a lower-cased value.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}
