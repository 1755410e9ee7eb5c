//! The data endpoints of the Prometheus API: `/api/v1/query`,
//! `/api/v1/query_range`, `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`, `/api/v1/format_query` and
//! `/api/v1/query_exemplars`.
//!
//! Validation order, error types and texts follow Prometheus's handlers, so
//! a client sees the same answer for the same mistake: bad parameters are
//! `400 bad_data`, evaluation failures `422 execution`, timeouts
//! `503 timeout`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use kiln_query::{ErrorType as QueryErrorType, ExprKind, QueryResult, QueryValue};
use kiln_storage::{Labels, Matcher, SelectError};

use super::json::JsonBuf;
use super::params::{MAX_TIME_MS, MIN_TIME_MS, ParamError, Params, parse_duration_ms, time_param};
use super::response::{ErrorType, Reply};
use crate::query::{QuerySpec, RunError};
use crate::state::ServerState;
use crate::tsdb::{ShardRequest, gather, merge_label_parts};

/// Most points a range query may return per series (Prometheus's limit).
const MAX_POINTS: i64 = 11_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn bad(e: impl std::fmt::Display) -> Reply {
    Reply::api_error(ErrorType::BadData, &e.to_string())
}

fn timeout_param(p: &Params) -> Result<Option<std::time::Duration>, ParamError> {
    let v = p.get("timeout");
    if v.is_empty() {
        return Ok(None);
    }
    let ms = parse_duration_ms(v).map_err(|r| ParamError::new("timeout", r))?;
    Ok(Some(std::time::Duration::from_millis(ms.max(0) as u64)))
}

/// `GET|POST /api/v1/query`.
pub async fn query(state: &ServerState, p: &Params) -> Reply {
    let t = match time_param(p, "time", now_ms()) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    let timeout = match timeout_param(p) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    let spec = QuerySpec::Instant {
        query: p.get("query").to_owned(),
        t_ms: t,
    };
    run(state, spec, timeout).await
}

/// `GET|POST /api/v1/query_range`.
pub async fn query_range(state: &ServerState, p: &Params) -> Reply {
    let parse = || -> Result<(i64, i64, i64), Reply> {
        let start = super::params::parse_time(p.get("start"))
            .map_err(|r| bad(ParamError::new("start", r)))?;
        let end =
            super::params::parse_time(p.get("end")).map_err(|r| bad(ParamError::new("end", r)))?;
        if end < start {
            return Err(bad(ParamError::new(
                "end",
                "end timestamp must not be before start time",
            )));
        }
        let step = parse_duration_ms(p.get("step")).map_err(|r| bad(ParamError::new("step", r)))?;
        if step <= 0 {
            return Err(bad(ParamError::new(
                "step",
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            )));
        }
        // In i128: the accepted time range spans more than i64 can hold.
        if (i128::from(end) - i128::from(start)) / i128::from(step) > i128::from(MAX_POINTS) {
            return Err(bad(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
            ));
        }
        Ok((start, end, step))
    };
    let (start_ms, end_ms, step_ms) = match parse() {
        Ok(v) => v,
        Err(r) => return r,
    };
    let timeout = match timeout_param(p) {
        Ok(t) => t,
        Err(e) => return bad(e),
    };
    let spec = QuerySpec::Range {
        query: p.get("query").to_owned(),
        start_ms,
        end_ms,
        step_ms,
    };
    run(state, spec, timeout).await
}

async fn run(state: &ServerState, spec: QuerySpec, timeout: Option<std::time::Duration>) -> Reply {
    match state.query.run(spec, timeout).await {
        Ok(r) => Reply::json(StatusCode::OK, render_result(&r)),
        Err(RunError::Query(e)) => {
            let kind = match e.error_type() {
                QueryErrorType::BadData => ErrorType::BadData,
                QueryErrorType::Execution => ErrorType::Execution,
                QueryErrorType::Timeout => ErrorType::Timeout,
                QueryErrorType::Canceled => ErrorType::Canceled,
                QueryErrorType::Internal => ErrorType::Internal,
            };
            let msg = match kind {
                ErrorType::BadData => ParamError::new("query", e.to_string()).to_string(),
                _ => e.to_string(),
            };
            Reply::api_error(kind, &msg)
        }
        Err(e @ RunError::Overloaded) => Reply::api_error(ErrorType::Unavailable, &e.to_string()),
        Err(e @ RunError::Shutdown) => Reply::api_error(ErrorType::Unavailable, &e.to_string()),
        Err(e @ RunError::Select(_)) => Reply::api_error(ErrorType::Internal, &e.to_string()),
    }
}

/// The success envelope of a query result, as Prometheus writes it.
pub fn render_result(r: &QueryResult) -> String {
    let mut b = JsonBuf::with_capacity(4096);
    b.raw(r#"{"status":"success","data":{"resultType":"#);
    match &r.value {
        QueryValue::Scalar { t_ms, v } => {
            b.raw(r#""scalar","result":"#).point(*t_ms, *v);
        }
        QueryValue::String { t_ms, s } => {
            b.raw(r#""string","result":["#)
                .timestamp(*t_ms)
                .raw(",")
                .string(s)
                .raw("]");
        }
        QueryValue::Vector(v) => {
            b.raw(r#""vector","result":["#);
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    b.raw(",");
                }
                b.raw(r#"{"metric":"#)
                    .labels(&s.labels)
                    .raw(r#","value":"#)
                    .point(s.t_ms, s.v)
                    .raw("}");
            }
            b.raw("]");
        }
        QueryValue::Matrix(m) => {
            b.raw(r#""matrix","result":["#);
            for (i, s) in m.iter().enumerate() {
                if i > 0 {
                    b.raw(",");
                }
                b.raw(r#"{"metric":"#)
                    .labels(&s.labels)
                    .raw(r#","values":["#);
                for (j, &(t, v)) in s.samples.iter().enumerate() {
                    if j > 0 {
                        b.raw(",");
                    }
                    b.point(t, v);
                }
                b.raw("]}");
            }
            b.raw("]");
        }
    }
    b.raw("}");
    if !r.warnings.is_empty() {
        b.raw(r#","warnings":"#)
            .strings(r.warnings.iter().map(String::as_str));
    }
    if !r.infos.is_empty() {
        b.raw(r#","infos":"#)
            .strings(r.infos.iter().map(String::as_str));
    }
    b.raw("}");
    b.finish()
}

/// Parses the `match[]` selectors.
fn matcher_sets(p: &Params) -> Result<Vec<Vec<Matcher>>, Reply> {
    p.all("match[]")
        .into_iter()
        .map(|s| parse_selector(s).map_err(|e| bad(ParamError::new("match[]", e))))
        .collect()
}

/// Parses a series selector (`match[]`): a vector selector and nothing
/// else, as Prometheus's `ParseMetricSelector` requires.
pub fn parse_selector(s: &str) -> Result<Vec<Matcher>, String> {
    let e = kiln_query::parse(s).map_err(|e| e.to_string())?;
    match e.kind {
        ExprKind::Vector(sel) => Ok(sel.matchers),
        _ => Err("1:1: parse error: expected series selector".to_owned()),
    }
}

/// `start`/`end` of the metadata endpoints: absent means unbounded.
fn meta_range(p: &Params) -> Result<(i64, i64), Reply> {
    let start = time_param(p, "start", MIN_TIME_MS).map_err(bad)?;
    let end = time_param(p, "end", MAX_TIME_MS).map_err(bad)?;
    Ok((start, end))
}

fn limit_param(p: &Params) -> Result<usize, Reply> {
    let v = p.get("limit");
    if v.is_empty() {
        return Ok(0);
    }
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n as usize),
        _ => Err(bad(ParamError::new("limit", "limit must be non-negative"))),
    }
}

/// Truncates to `limit` (0 = none) and reports whether it did.
fn apply_limit<T>(v: &mut Vec<T>, limit: usize) -> bool {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
        true
    } else {
        false
    }
}

fn strings_reply(values: Vec<String>, truncated: bool) -> Reply {
    let mut b = JsonBuf::with_capacity(64 + values.len() * 16);
    b.raw(r#"{"status":"success","data":"#)
        .strings(values.iter().map(String::as_str));
    if truncated {
        b.raw(r#","warnings":["results truncated due to limit"]"#);
    }
    b.raw("}");
    Reply::json(StatusCode::OK, b.finish())
}

/// A read error (a damaged block) fails the request as Prometheus fails
/// it, with `execution`.
fn read_failed(e: SelectError) -> Reply {
    Reply::api_error(ErrorType::Execution, &e.to_string())
}

/// `GET|POST /api/v1/labels`.
pub async fn labels(state: &ServerState, p: &Params) -> Reply {
    let (sets, (mint, maxt), limit) = match (matcher_sets(p), meta_range(p), limit_param(p)) {
        (Ok(s), Ok(r), Ok(l)) => (s, r, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    let sets: Arc<[Vec<Matcher>]> = sets.into();
    let parts = gather(&state.mailboxes, |reply| ShardRequest::LabelNames {
        sets: sets.clone(),
        mint,
        maxt,
        reply,
    })
    .await;
    let merged = merge_label_parts(parts, sets, move |b, m| b.label_names(m, mint, maxt)).await;
    let mut names = match merged {
        Ok(v) => v,
        Err(e) => return read_failed(e),
    };
    let truncated = apply_limit(&mut names, limit);
    strings_reply(names, truncated)
}

/// `GET /api/v1/label/<name>/values`. A name written `U__…` is decoded
/// from Prometheus 3's value escaping (Grafana writes UTF-8 label names so).
pub async fn label_values(state: &ServerState, name: &str, p: &Params) -> Reply {
    let name = unescape_label_name(name);
    let name = name.as_str();
    if name.is_empty() {
        return bad(format!("invalid label name: {name:?}"));
    }
    let (sets, (mint, maxt), limit) = match (matcher_sets(p), meta_range(p), limit_param(p)) {
        (Ok(s), Ok(r), Ok(l)) => (s, r, l),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    let sets: Arc<[Vec<Matcher>]> = sets.into();
    let name: Arc<str> = name.into();
    let parts = gather(&state.mailboxes, |reply| ShardRequest::LabelValues {
        name: name.clone(),
        sets: sets.clone(),
        mint,
        maxt,
        reply,
    })
    .await;
    let merged = merge_label_parts(parts, sets, move |b, m| {
        b.label_values(&name, m, mint, maxt)
    })
    .await;
    let mut values = match merged {
        Ok(v) => v,
        Err(e) => return read_failed(e),
    };
    let truncated = apply_limit(&mut values, limit);
    strings_reply(values, truncated)
}

/// `GET|POST /api/v1/series`.
pub async fn series(state: &ServerState, p: &Params) -> Reply {
    let sets = match matcher_sets(p) {
        Ok(s) => s,
        Err(e) => return e,
    };
    if sets.is_empty() {
        return bad("no match[] parameter provided");
    }
    let ((mint, maxt), limit) = match (meta_range(p), limit_param(p)) {
        (Ok(r), Ok(l)) => (r, l),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let sets: Arc<[Vec<Matcher>]> = sets.into();
    let parts = gather(&state.mailboxes, |reply| ShardRequest::Series {
        sets: sets.clone(),
        mint,
        maxt,
        reply,
    })
    .await;
    let merged = merge_label_parts(parts, sets, move |b, m| b.series_labels(m, mint, maxt)).await;
    let mut all: Vec<Labels> = match merged {
        Ok(v) => v,
        Err(e) => return read_failed(e),
    };
    let truncated = apply_limit(&mut all, limit);
    let mut b = JsonBuf::with_capacity(64 + all.len() * 64);
    b.raw(r#"{"status":"success","data":["#);
    for (i, l) in all.iter().enumerate() {
        if i > 0 {
            b.raw(",");
        }
        b.labels(l);
    }
    b.raw("]");
    if truncated {
        b.raw(r#","warnings":["results truncated due to limit"]"#);
    }
    b.raw("}");
    Reply::json(StatusCode::OK, b.finish())
}

/// `GET /api/v1/status/tsdb`: head statistics and the top `limit` (default
/// 10) entries of each cardinality list, computed as Prometheus computes
/// them from its postings (`memoryInBytesByLabelName` is the total length
/// of a label's distinct values).
pub async fn tsdb_status(state: &ServerState, p: &Params) -> Reply {
    let limit = match p.get("limit") {
        "" => 10,
        v => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return bad(ParamError::new(
                    "limit",
                    format!("{v:?} is not a positive number"),
                ));
            }
        },
    };
    let parts = gather(&state.mailboxes, |reply| ShardRequest::TsdbStatus { reply }).await;
    let mut num_series = 0;
    let mut num_chunks = 0;
    let (mut mint, mut maxt) = (None::<i64>, None::<i64>);
    let mut pairs: std::collections::HashMap<(String, String), u64> = Default::default();
    for c in parts {
        num_series += c.num_series;
        num_chunks += c.num_chunks;
        mint = match (mint, c.min_time) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        maxt = match (maxt, c.max_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (k, n) in c.pairs {
            *pairs.entry(k).or_default() += n;
        }
    }
    let mut by_metric: Vec<(String, u64)> = Vec::new();
    let mut values_by_name: std::collections::HashMap<&str, u64> = Default::default();
    let mut bytes_by_name: std::collections::HashMap<&str, u64> = Default::default();
    let mut by_pair: Vec<(String, u64)> = Vec::with_capacity(pairs.len());
    for ((name, value), &n) in &pairs {
        if name == kiln_storage::METRIC_NAME {
            by_metric.push((value.clone(), n));
        }
        *values_by_name.entry(name).or_default() += 1;
        *bytes_by_name.entry(name).or_default() += value.len() as u64;
        by_pair.push((format!("{name}={value}"), n));
    }
    let owned = |m: std::collections::HashMap<&str, u64>| -> Vec<(String, u64)> {
        m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    };
    let lists = [
        ("seriesCountByMetricName", by_metric),
        ("labelValueCountByLabelName", owned(values_by_name)),
        ("memoryInBytesByLabelName", owned(bytes_by_name)),
        ("seriesCountByLabelValuePair", by_pair),
    ];
    let mut b = JsonBuf::with_capacity(4096);
    b.raw(r#"{"status":"success","data":{"headStats":{"numSeries":"#)
        .raw(&num_series.to_string())
        .raw(r#","numLabelPairs":"#)
        .raw(&pairs.len().to_string())
        .raw(r#","chunkCount":"#)
        .raw(&num_chunks.to_string())
        .raw(r#","minTime":"#)
        .raw(&mint.unwrap_or(i64::MAX).to_string())
        .raw(r#","maxTime":"#)
        .raw(&maxt.unwrap_or(i64::MIN).to_string())
        .raw("}");
    for (key, mut list) in lists {
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list.truncate(limit);
        b.raw(",").string(key).raw(":[");
        for (i, (name, n)) in list.iter().enumerate() {
            if i > 0 {
                b.raw(",");
            }
            b.raw(r#"{"name":"#)
                .string(name)
                .raw(r#","value":"#)
                .raw(&n.to_string())
                .raw("}");
        }
        b.raw("]");
    }
    b.raw("}}");
    Reply::json(StatusCode::OK, b.finish())
}

/// Decodes Prometheus 3's value escaping of a name: after the `U__`
/// prefix, `__` is `_` and `_<hex>_` is the character with that code
/// point; other characters stand for themselves. A name without the prefix,
/// or one that is not a valid escaping, is returned as it is.
fn unescape_label_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("U__") else {
        return name.to_owned();
    };
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        let mut code: u32 = 0;
        let mut digits = 0;
        loop {
            match chars.next() {
                Some('_') if digits == 0 => {
                    out.push('_');
                    break;
                }
                Some('_') => match char::from_u32(code) {
                    Some(ch) => {
                        out.push(ch);
                        break;
                    }
                    None => return name.to_owned(),
                },
                Some(h) if digits < 6 => match h.to_digit(16) {
                    Some(d) => {
                        code = code * 16 + d;
                        digits += 1;
                    }
                    None => return name.to_owned(),
                },
                _ => return name.to_owned(),
            }
        }
    }
    out
}

/// `GET|POST /api/v1/format_query`: the expression as Prometheus's
/// `format_query` prints it ([`kiln_query::Expr::pretty`]).
pub fn format_query(p: &Params) -> Reply {
    match kiln_query::parse(p.get("query")) {
        Ok(e) => {
            let text = e.pretty();
            let mut b = JsonBuf::with_capacity(40 + text.len());
            b.raw(r#"{"status":"success","data":"#)
                .string(&text)
                .raw("}");
            Reply::json(StatusCode::OK, b.finish())
        }
        Err(e) => bad(ParamError::new("query", e.to_string())),
    }
}

/// `GET|POST /api/v1/query_exemplars`. kiln stores no exemplars, so the
/// answer is Prometheus's without exemplars: `[]` for a query with a
/// selector, `204 No Content` for one without (Prometheus has nothing to
/// look up then), after the same checks (`start`, `end`, their order, the
/// query's syntax; its parse error carries no parameter prefix).
pub fn query_exemplars(p: &Params) -> Reply {
    let (start, end) = match meta_range(p) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if end < start {
        return bad("end timestamp must not be before start timestamp");
    }
    let e = match kiln_query::parse(p.get("query")) {
        Ok(e) => e,
        Err(e) => return bad(e),
    };
    let mut selects = false;
    e.walk(&mut |x| {
        selects |= matches!(x.kind, ExprKind::Vector(_) | ExprKind::Matrix { .. });
    });
    if !selects {
        return Reply::no_content();
    }
    Reply::json(
        StatusCode::OK,
        r#"{"status":"success","data":[]}"#.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::unescape_label_name;

    #[test]
    fn u_escaped_label_names_are_decoded() {
        for (raw, want) in [
            ("job", "job"),
            ("U__job", "job"),
            ("U__my_2e_label", "my.label"),
            ("U__a__b", "a_b"),
            ("U___1f600_", "\u{1f600}"),
            // Not a valid escaping: kept as written.
            ("U__a_zz_", "U__a_zz_"),
            ("U__a_", "U__a_"),
            ("U__a_1234567_", "U__a_1234567_"),
            ("U___d800_", "U___d800_"),
        ] {
            assert_eq!(unescape_label_name(raw), want, "{raw}");
        }
    }
}
