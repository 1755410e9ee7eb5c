//! The fleet process: serves every simulated target of a [`FleetSpec`] over
//! HTTP/1.1 on its own loopback address, all on one port, from one
//! single-threaded tokio runtime.
//!
//! Owns the sockets and the time → slot mapping; what a target answers is
//! [`crate::model`]'s business. The process announces readiness with one
//! JSON line on stdout (`{"ready":true,"port":…,"targets":…}`) once every
//! listener is bound, and ends on SIGTERM, SIGINT or after its duration.

use std::cell::Cell;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpListener;

use crate::model::{self, FleetSpec, MAX_TARGETS, TargetKind};
use crate::template::Template;

#[derive(Debug, Error)]
pub enum FleetError {
    #[error("{targets} targets requested; at most {MAX_TARGETS} loopback addresses are available")]
    TooManyTargets { targets: usize },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
}

/// Shared by every connection of the fleet (single-threaded, so `Rc`).
struct Fleet {
    spec: FleetSpec,
    template: Template,
    /// Largest body rendered so far, to size the next buffer in one go.
    body_hint: Cell<usize>,
}

/// Serves the fleet until a signal arrives or `duration` passes.
/// `port` 0 picks a free port (the same on every address).
pub fn serve(
    spec: FleetSpec,
    template: Template,
    port: u16,
    duration: Duration,
) -> Result<(), FleetError> {
    if spec.targets > MAX_TARGETS {
        return Err(FleetError::TooManyTargets {
            targets: spec.targets,
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(FleetError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let fleet = Rc::new(Fleet {
            spec,
            template,
            body_hint: Cell::new(64 * 1024),
        });
        let mut port = port;
        let mut listeners = Vec::with_capacity(fleet.spec.targets);
        for index in 0..fleet.spec.targets {
            let addr = SocketAddr::from((model::target_addr(index), port));
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| FleetError::Bind { addr, source })?;
            if port == 0 {
                port = listener
                    .local_addr()
                    .map_err(|source| FleetError::Bind { addr, source })?
                    .port();
            }
            listeners.push(listener);
        }
        for (index, listener) in listeners.into_iter().enumerate() {
            tokio::task::spawn_local(accept_loop(Rc::clone(&fleet), index, listener));
        }
        announce(port, fleet.spec.targets);
        wait_for_end(duration).await;
        Ok(())
    })
}

fn announce(port: u16, targets: usize) {
    let line = serde_json::json!({ "ready": true, "port": port, "targets": targets });
    let mut stdout = std::io::stdout().lock();
    // The parent may have stopped reading; the fleet keeps serving anyway.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

async fn wait_for_end(duration: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tokio::time::sleep(duration).await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

async fn accept_loop(fleet: Rc<Fleet>, index: usize, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let fleet = Rc::clone(&fleet);
                tokio::task::spawn_local(async move {
                    let service = hyper::service::service_fn(move |request| {
                        respond(Rc::clone(&fleet), index, request)
                    });
                    // A scraper hanging up mid-response is its own business.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            // Out of descriptors or a reset before accept: back off briefly
            // rather than spin; the scraper will retry on its next interval.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn respond(
    fleet: Rc<Fleet>,
    index: usize,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "only /metrics is served\n"));
    }
    match fleet.spec.kind(index) {
        TargetKind::Failing => {
            return Ok(plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "simulated failing target\n",
            ));
        }
        TargetKind::Slow => {
            tokio::time::sleep(Duration::from_millis(fleet.spec.slow_delay_ms)).await;
        }
        TargetKind::Normal | TargetKind::Histogram => {}
    }
    let slot = fleet.spec.slot_at(now_ms());
    let mut body = String::with_capacity(fleet.body_hint.get());
    model::render(&fleet.spec, &fleet.template, index, slot, &mut body);
    fleet.body_hint.set(fleet.body_hint.get().max(body.len()));
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
