//! The hyper front-end: accepts connections (bounded), serves HTTP/1.1
//! keep-alive, routes each request to its surface by path prefix, isolates
//! panics and enforces the time and size limits of [`crate::config::Limits`].

pub mod http;

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app::App;
use crate::config::{LEASE_SWEEP_INTERVAL_MS, SHUTDOWN_GRACE_MS};
use http::Resp;

/// Serves `listener` until `shutdown` completes, then lets in-flight requests
/// finish (up to [`SHUTDOWN_GRACE_MS`]).
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(app.limits.connections_max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let sweeper = tokio::spawn(sweep_leases(app.clone()));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = http1_builder(&app.limits);
        let app = app.clone();
        let svc = service_fn(move |req| handle(app.clone(), req));
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = conn.await;
        });
    }
    sweeper.abort();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_millis(SHUTDOWN_GRACE_MS)) => {
            tracing::warn!("shutdown grace period over; dropping open connections");
        }
    }
    Ok(())
}

/// The runtime `tally serve` runs on: multi-threaded, one worker per core the
/// process may run on (`taskset` narrows it) unless `workers` says otherwise.
/// The load harness's baseline server uses the same.
pub fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(w) = workers {
        rt.worker_threads(w.max(1));
    }
    rt.build()
}

/// Per-connection HTTP/1.1 settings (shared with the load harness's baseline).
pub fn http1_builder(limits: &crate::config::Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.request_head_timeout)
        .max_buf_size(limits.request_head_bytes_max.max(8192));
    builder
}

/// Frees expired floating seats in the background; access paths purge too, so
/// this only bounds how long a dead holder shows in listings.
async fn sweep_leases(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(LEASE_SWEEP_INTERVAL_MS));
    loop {
        tick.tick().await;
        let now = app.now();
        let engine = app.clone();
        let _ = tokio::task::spawn_blocking(move || engine.engine.sweep_leases(now)).await;
    }
}

/// Runs the request's handler with panics isolated. The request time limit
/// is enforced where a request can wait: reading its head (hyper's
/// `header_read_timeout`) and reading its body (`http::read_body`); handlers
/// themselves do no I/O, so the hot path arms no timer.
async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    Ok(
        match AssertUnwindSafe(route(app, req)).catch_unwind().await {
            Ok(resp) => resp,
            Err(_panic) => {
                tracing::error!("request handler panicked");
                http::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &br#"{"error":"internal error"}"#[..],
                )
            }
        },
    )
}

async fn route(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path();
    if path.starts_with("/api/v4/") {
        crate::api::licensespring::handle(&app, req).await
    } else if path.starts_with("/admin/v1/") || path == "/admin/v1" {
        crate::api::admin::handle(&app, req).await
    } else if path == "/healthz" {
        let stats: serde_json::Map<String, serde_json::Value> = app
            .engine
            .stats()
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        http::json_value(
            StatusCode::OK,
            &serde_json::json!({"status": "ok", "objects": stats}),
        )
    } else {
        http::json(
            StatusCode::NOT_FOUND,
            &br#"{"error":"no such endpoint"}"#[..],
        )
    }
}
