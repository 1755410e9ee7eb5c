//! The HTTP server every shard runs: one hyper 1 HTTP/1.1 connection task
//! per accepted socket, and the route table.
//!
//! Routing is a match on (method, path) against a fixed table: the Prometheus
//! API is a few dozen paths, and a match compiles to a handful of string
//! comparisons. Paths and status codes are Prometheus's: an unknown path is
//! `404 page not found`, a known path with the wrong method is `405`.
//!
//! No handler panics on any input: handlers return a [`Reply`] for every
//! outcome, and [`serve`] turns each into the wire response (gzipped when the
//! client asks for it).

mod api;
mod federate;
mod json;
mod params;
pub mod response;
mod rules;
mod status;
mod targets;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::state::ServerState;
use params::Params;
use response::{ErrorType, HttpResponse, Reply};

/// Largest form body the API reads (Prometheus reads up to 10 MiB too).
const MAX_FORM_BODY: usize = 10 << 20;

/// Serves one request: route, handle, count, encode.
pub async fn serve(
    req: Request<Incoming>,
    state: Arc<ServerState>,
) -> Result<HttpResponse, Infallible> {
    let gzip = req
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(response::accepts_gzip);
    let (parts, body) = req.into_parts();
    let is_form = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form && parts.method == Method::POST {
        match Limited::new(body, MAX_FORM_BODY).collect().await {
            Ok(b) => Some(b.to_bytes()),
            Err(e) => {
                let reply = Reply::api_error(
                    ErrorType::BadData,
                    &format!("error parsing form values: {e}"),
                );
                return Ok(reply.into_response(false));
            }
        }
    } else {
        None
    };
    let params = Params::parse(parts.uri.query(), form.as_deref());
    let req = Request::from_parts(parts, ());
    let (handler, reply) = route(&req, &params, &state).await;
    if let Some(h) = handler {
        state.metrics.http_request(h, reply.status.as_u16());
    }
    let head = req.method() == Method::HEAD;
    let mut resp = reply.into_response(gzip && !head);
    if head {
        *resp.body_mut() = http_body_util::Full::new(Bytes::new());
    }
    Ok(resp)
}

/// Picks the handler for a request. Returns the handler's label for
/// `prometheus_http_requests_total` (none for unknown paths) and its reply.
async fn route(
    req: &Request<()>,
    p: &Params,
    state: &ServerState,
) -> (Option<&'static str>, Reply) {
    let path = req.uri().path();
    let method = req.method();
    let get = method == Method::GET || method == Method::HEAD;
    let post = method == Method::POST || method == Method::PUT;
    macro_rules! only {
        ($ok:expr, $label:literal, $allowed:literal, $handle:expr) => {
            if $ok {
                (Some($label), $handle)
            } else {
                (Some($label), method_not_allowed($allowed))
            }
        };
    }
    match path {
        "/-/healthy" => only!(get, "/-/healthy", "GET, HEAD", status::healthy()),
        "/-/ready" => only!(get, "/-/ready", "GET, HEAD", status::ready(state)),
        "/-/reload" => only!(post, "/-/reload", "POST, PUT", status::reload(state).await),
        "/-/quit" => only!(post, "/-/quit", "POST, PUT", status::quit(state)),
        "/metrics" => only!(get, "/metrics", "GET", status::metrics(state)),
        "/api/v1/status/buildinfo" => {
            only!(get, "/api/v1/status/buildinfo", "GET", status::buildinfo())
        }
        "/api/v1/status/runtimeinfo" => {
            only!(
                get,
                "/api/v1/status/runtimeinfo",
                "GET",
                status::runtimeinfo(state)
            )
        }
        "/api/v1/status/flags" => only!(get, "/api/v1/status/flags", "GET", status::flags(state)),
        "/api/v1/status/config" => {
            only!(get, "/api/v1/status/config", "GET", status::config(state))
        }
        "/api/v1/query" => only!(
            get || post,
            "/api/v1/query",
            "GET, POST",
            api::query(state, p).await
        ),
        "/api/v1/query_range" => only!(
            get || post,
            "/api/v1/query_range",
            "GET, POST",
            api::query_range(state, p).await
        ),
        "/api/v1/series" => only!(
            get || post,
            "/api/v1/series",
            "GET, POST",
            api::series(state, p).await
        ),
        "/api/v1/targets" => only!(get, "/api/v1/targets", "GET", targets::targets(state, p)),
        "/api/v1/status/tsdb" => {
            only!(
                get,
                "/api/v1/status/tsdb",
                "GET",
                api::tsdb_status(state, p).await
            )
        }
        "/federate" => only!(get, "/federate", "GET", federate::federate(state, p).await),
        "/api/v1/metadata" => only!(get, "/api/v1/metadata", "GET", targets::metadata(state, p)),
        "/api/v1/format_query" => only!(
            get || post,
            "/api/v1/format_query",
            "GET, POST",
            api::format_query(p)
        ),
        "/api/v1/query_exemplars" => only!(
            get || post,
            "/api/v1/query_exemplars",
            "GET, POST",
            api::query_exemplars(p)
        ),
        "/api/v1/rules" => only!(get, "/api/v1/rules", "GET", rules::rules(state, p)),
        "/api/v1/alerts" => only!(get, "/api/v1/alerts", "GET", rules::alerts(state)),
        "/api/v1/labels" => only!(
            get || post,
            "/api/v1/labels",
            "GET, POST",
            api::labels(state, p).await
        ),
        _ => {
            if let Some(name) = path
                .strip_prefix("/api/v1/label/")
                .and_then(|rest| rest.strip_suffix("/values"))
            {
                let name = percent_decode(name);
                return only!(
                    get,
                    "/api/v1/label/:name/values",
                    "GET",
                    api::label_values(state, &name, p).await
                );
            }
            (
                None,
                Reply::text(StatusCode::NOT_FOUND, "404 page not found\n"),
            )
        }
    }
}

/// Decodes `%XX` escapes of a path segment (no `+` rule: that is for
/// forms). Invalid escapes and invalid UTF-8 are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = b.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

fn method_not_allowed(allowed: &'static str) -> Reply {
    Reply::text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method Not Allowed; allowed: {allowed}\n"),
    )
    .with_header(http::header::ALLOW, http::HeaderValue::from_static(allowed))
}
