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

pub mod response;
mod status;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::ACCEPT_ENCODING;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::state::ServerState;
use response::{HttpResponse, Reply};

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
    let (handler, reply) = route(&req, &state).await;
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
async fn route(req: &Request<Incoming>, state: &ServerState) -> (Option<&'static str>, Reply) {
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
        _ => (
            None,
            Reply::text(StatusCode::NOT_FOUND, "404 page not found\n"),
        ),
    }
}

fn method_not_allowed(allowed: &'static str) -> Reply {
    Reply::text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method Not Allowed; allowed: {allowed}\n"),
    )
    .with_header(http::header::ALLOW, http::HeaderValue::from_static(allowed))
}
