//! The hyper front-end: accepts connections (bounded), serves HTTP/1.1
//! keep-alive, routes each request to its surface by path prefix, isolates
//! panics and enforces the time and size limits of [`crate::config::Limits`].

mod guard;

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
use crate::http::{self, Resp};

/// The surfaces' own state (caches, rate-limit windows): owned by
/// the server and handed to each surface's handler, so that no surface
/// state lives in the app layer the surfaces build on.
pub struct Surfaces {
    pub licensespring: crate::api::licensespring::LsState,
    pub qlik: crate::api::qlik::QlikState,
    pub native: crate::api::native::NativeState,
}

impl Surfaces {
    /// The surfaces' state; starts their background work.
    pub fn new(app: &Arc<App>) -> Self {
        crate::api::licensespring::start(app);
        Surfaces {
            licensespring: Default::default(),
            qlik: crate::api::qlik::QlikState::new(app.emulate_rate_limits),
            native: Default::default(),
        }
    }
}

/// Serves `listener` until `shutdown` completes, then lets in-flight requests
/// finish (up to [`SHUTDOWN_GRACE_MS`]); sweeps expired floating seats
/// meanwhile.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app_for_hooks = app.clone();
    let sweeper = tokio::spawn(sweep_leases(app.clone()));
    // In a cluster every node holds the outbox; the holder of the delivery
    // lease delivers (see `Cluster::run_lease`).
    let dispatcher = tokio::spawn(deliver_webhooks(app_for_hooks));
    let surfaces = Arc::new(Surfaces::new(&app));
    let result = serve_listener(listener, app, surfaces, shutdown).await;
    sweeper.abort();
    dispatcher.abort();
    result
}

/// [`run`] without the lease sweeper: what each per-core runtime runs (the
/// process sweeps once, see [`run_per_core`]).
async fn serve_listener(
    listener: TcpListener,
    app: Arc<App>,
    surfaces: Arc<Surfaces>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(app.limits.connections_max));
    let pressure = guard::Pressure::default();
    let limits = guard::ConnLimits {
        head: app.limits.request_head_timeout,
        idle: app.limits.keep_alive_idle,
        write: app.limits.response_write_timeout,
    };
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slot(&slots, &pressure, &app.metrics) => match p { Some(p) => p, None => break },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
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
        let app_for_conns = app.clone();
        let app = app.clone();
        let state = Arc::new(guard::ConnState::default());
        let io = guard::Guarded::new(stream, state.clone(), limits, &pressure);
        let surfaces = surfaces.clone();
        let svc = service_fn(move |req| {
            let (app, surfaces, state) = (app.clone(), surfaces.clone(), state.clone());
            async move {
                state.begin();
                let _end = EndOnDrop(&state);
                let mut resp = handle(app, surfaces, req, peer.ip()).await;
                // A stream keeps its connection busy (not idle, not evictable)
                // for as long as it runs.
                if let Ok(r) = &mut resp {
                    if r.body().is_stream() {
                        state.begin();
                        r.body_mut().hold(Box::new(Busy(state.clone())));
                    }
                }
                resp
            }
        });
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        let open = ConnectionOpen::new(&app_for_conns);
        tokio::spawn(async move {
            let _permit = permit;
            let _open = open;
            let _ = conn.await;
        });
    }
    // Streams end now (their clients resume with Last-Event-ID elsewhere or
    // later), so that the graceful stop does not wait for them.
    app.closing.send_replace(true);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_millis(SHUTDOWN_GRACE_MS)) => {
            tracing::warn!("shutdown grace period over; dropping open connections");
        }
    }
    Ok(())
}

/// A connection slot. While none is free, connections that have been idle,
/// stalled or slow for [`guard::EVICTABLE_AFTER_MS`] are asked to give theirs
/// up, again every such interval. `None` once the semaphore is closed.
async fn slot(
    slots: &Arc<Semaphore>,
    pressure: &guard::Pressure,
    metrics: &crate::metrics::Metrics,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if let Ok(p) = slots.clone().try_acquire_owned() {
        return Some(p);
    }
    metrics
        .connection_limit_hits
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let every = Duration::from_millis(guard::EVICTABLE_AFTER_MS);
    loop {
        pressure.raise();
        tokio::select! {
            p = slots.clone().acquire_owned() => return p.ok(),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// A connection counted open for as long as it lives.
struct ConnectionOpen(Arc<App>);

impl ConnectionOpen {
    fn new(app: &Arc<App>) -> ConnectionOpen {
        app.metrics
            .connections_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ConnectionOpen(app.clone())
    }
}

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.0
            .metrics
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A streaming answer's hold on its connection: busy until the stream ends.
struct Busy(Arc<guard::ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Marks a connection's request as answered, even when the connection
/// drops the handler midway.
struct EndOnDrop<'a>(&'a guard::ConnState);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// What a runtime thread does just before it goes idle (tokio's
/// `on_thread_park`): Tally's writes and syncs the log's pending group
/// ([`idle_hook`]).
pub type OnIdle = Arc<dyn Fn() + Send + Sync>;

/// The idle hook of `app`'s runtimes: a durable group commit led by the
/// thread that would otherwise sleep (`wal::Log::lead_idle`). Tells the log
/// its runtimes lead (`Log::set_idle_leaders`), so call it only for
/// runtimes that install the hook.
pub fn idle_hook(app: &App) -> Option<OnIdle> {
    let store = app.store.clone()?;
    store.log.set_idle_leaders();
    Some(Arc::new(move || store.log.lead_idle()))
}

/// The multi-thread runtime `tally serve --runtime multi-thread` runs on:
/// one worker per core the process may run on (`taskset` narrows it) unless
/// `workers` says otherwise. The load harness's baseline server uses the
/// same.
pub fn runtime(
    workers: Option<usize>,
    on_idle: Option<OnIdle>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(w) = workers {
        rt.worker_threads(w.max(1));
    }
    with_idle_hook(&mut rt, on_idle);
    rt.build()
}

/// Installs `on_idle` as the runtime's park hook.
fn with_idle_hook(rt: &mut tokio::runtime::Builder, on_idle: Option<OnIdle>) {
    if let Some(f) = on_idle {
        rt.on_thread_park(move || f());
    }
}

/// How requests are spread over cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// One work-stealing multi-thread runtime, one listener.
    MultiThread,
    /// One current-thread runtime per core, each with its own SO_REUSEPORT
    /// listener on the same address; the kernel spreads connections.
    CurrentThread,
}

/// Per-core runtimes to start: `workers`, else one per core the process may
/// run on (`taskset` narrows it).
pub fn per_core_threads(workers: Option<usize>) -> usize {
    workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

/// Listener backlog of each SO_REUSEPORT listener, connections.
pub const LISTEN_BACKLOG_CONNECTIONS: u32 = 1024;

/// A listener on `addr` (port 0 picks one), with SO_REUSEPORT when asked
/// (the per-core runtimes share an address), and with `send_buffer_bytes` as
/// the kernel send buffer its connections inherit (Linux; none: the
/// kernel's autotuning).
pub fn listener(
    addr: std::net::SocketAddr,
    reuseport: bool,
    send_buffer_bytes: Option<u32>,
) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    if reuseport {
        sock.set_reuseport(true)?;
    }
    if let Some(n) = send_buffer_bytes {
        sock.set_send_buffer_size(n)?;
    }
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG_CONNECTIONS)
}

/// Starts `threads` threads, each with a current-thread runtime serving its
/// own SO_REUSEPORT listener on `addr` with `serve`; returns the address
/// bound (port 0 picks one) and the threads. Shared with the load harness's
/// reference servers, so that they run exactly as Tally does.
pub fn spawn_per_core<F, Fut>(
    addr: std::net::SocketAddr,
    threads: usize,
    send_buffer_bytes: Option<u32>,
    on_idle: Option<OnIdle>,
    serve: F,
) -> std::io::Result<(
    std::net::SocketAddr,
    Vec<std::thread::JoinHandle<std::io::Result<()>>>,
)>
where
    F: Fn(TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = std::io::Result<()>>,
{
    // The first listener resolves port 0; the others share its address.
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async { listener(addr, true, send_buffer_bytes) })?;
    let bound = first.local_addr()?;
    let mut first = Some(first.into_std()?);
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let serve = serve.clone();
        let std_listener = first.take();
        let on_idle = on_idle.clone();
        let handle = std::thread::Builder::new()
            .name(format!("tally-core-{i}"))
            .spawn(move || -> std::io::Result<()> {
                let mut rt = tokio::runtime::Builder::new_current_thread();
                rt.enable_all();
                with_idle_hook(&mut rt, on_idle);
                let rt = rt.build()?;
                rt.block_on(async move {
                    let listener = match std_listener {
                        Some(l) => TcpListener::from_std(l)?,
                        None => listener(bound, true, send_buffer_bytes)?,
                    };
                    serve(listener).await
                })
            })?;
        handles.push(handle);
    }
    Ok((bound, handles))
}

/// Waits for every thread of [`spawn_per_core`]; the first error wins.
pub fn join_all(handles: Vec<std::thread::JoinHandle<std::io::Result<()>>>) -> std::io::Result<()> {
    let mut result = Ok(());
    for h in handles {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("a server thread panicked")));
        if result.is_ok() {
            result = r;
        }
    }
    result
}

/// Serves `addr` on `threads` current-thread runtimes (see
/// [`RuntimeKind::CurrentThread`]) until `shutdown` completes; blocks. The
/// calling thread waits for `shutdown` and tells every runtime to stop.
/// `on_bound` hears the address actually bound (port 0 picks one).
pub fn run_per_core(
    addr: std::net::SocketAddr,
    threads: usize,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    on_bound: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = app.clone();
    let surfaces = Arc::new(Surfaces::new(&app));
    let send_buffer = Some(app.limits.connection_send_buffer_bytes);
    let on_idle = idle_hook(&app);
    let (bound, handles) = spawn_per_core(addr, threads, send_buffer, on_idle, move |listener| {
        let app = serving.clone();
        let surfaces = surfaces.clone();
        let mut stop = stop_rx.clone();
        async move {
            serve_listener(listener, app, surfaces, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        }
    })?;
    on_bound(bound);
    // The calling thread waits for the signal and sweeps leases meanwhile:
    // one sweeper per process, not one per core.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let sweeper = tokio::spawn(sweep_leases(app.clone()));
            let dispatcher = tokio::spawn(deliver_webhooks(app));
            shutdown.await;
            sweeper.abort();
            dispatcher.abort();
        });
    let _ = stop_tx.send(true);
    join_all(handles)
}

/// Per-connection HTTP/1.1 settings (shared with the load harness's
/// baseline). `max_buf_size` bounds both the head and the read-ahead of
/// pipelined requests a connection may buffer, and its write buffer; the
/// time limits are `guard::Guarded`'s (hyper's own head timer would also
/// close idle keep-alive connections at the head limit).
pub fn http1_builder(limits: &crate::config::Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None)
        .max_buf_size(limits.request_head_bytes_max.max(8192));
    builder
}

/// Frees expired floating seats in the background; access paths purge too, so
/// this only bounds how long a dead holder shows in listings. A sweep is a
/// command like any change (logged when it freed a seat), so that a replay
/// frees the same seats at the same point.
async fn sweep_leases(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(LEASE_SWEEP_INTERVAL_MS));
    let mut last_notices = std::time::Instant::now();
    loop {
        tick.tick().await;
        let now = app.now();
        sweep_once(&app, now).await;
        if last_notices.elapsed() >= Duration::from_millis(NOTICE_SWEEP_INTERVAL_MS) {
            last_notices = std::time::Instant::now();
            sweep_notices(&app, now).await;
        }
    }
}

/// How often licenses are looked at for `license.expiring` and
/// `license.expired` webhooks, ms (a pass reads every license of the
/// tenants that asked for them).
pub const NOTICE_SWEEP_INTERVAL_MS: u64 = 10_000;

/// Reports the licenses whose end is near or past (see `App::sweep_notices`).
pub async fn sweep_notices(app: &App, now: crate::engine::time::Millis) {
    if let Err(e) = app.sweep_notices(now).await {
        tracing::debug!("notice sweep not done: {e:?}");
    }
}

/// The webhook dispatcher (see `webhooks`), for as long as the server runs.
async fn deliver_webhooks(app: Arc<App>) {
    match crate::webhooks::Transport::new(app.webhook_ca.as_deref()) {
        Ok(t) => crate::webhooks::run(app, t).await,
        Err(e) => tracing::error!("webhooks will not be delivered: {e}"),
    }
}

/// One pass of the periodic sweeps (see `App::sweep`).
pub async fn sweep_once(app: &App, now: crate::engine::time::Millis) {
    if let Err(e) = app.sweep(now).await {
        tracing::debug!("sweep not done: {e:?}");
    }
}

/// Runs the request's handler with panics isolated. The request time limit
/// is enforced where a request can wait: reading its head (hyper's
/// `header_read_timeout`) and reading its body (`http::read_body`); handlers
/// themselves do no I/O, so the hot path arms no timer.
async fn handle(
    app: Arc<App>,
    surfaces: Arc<Surfaces>,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Result<Resp, Closed> {
    let request_id = request_id_of(&req);
    // The surface, by path prefix: found once per request.
    let surface = Surface::of(req.uri().path());
    // The harness's fault rules come first: nothing below sees a request
    // they answer (the rules' own endpoint is never faulted).
    let fault = fault_of(&app, surface, &req);
    match fault {
        Some(crate::faults::Decision::Close) => return Err(Closed),
        Some(crate::faults::Decision::Delay(d)) => tokio::time::sleep(d).await,
        _ => {}
    }
    // What the metrics and the access log say of the request, when either
    // is on: its endpoint (the route's template) and method.
    let observed =
        (app.metrics.enabled || app.access_log || app.journal.is_some()).then(|| Observed {
            started: std::time::Instant::now(),
            endpoint: app.metrics.routes.endpoint(req.uri().path()),
            method: method_label(req.method()),
        });
    // The journal's view of the request (credentials masked), when it keeps one.
    let journaled = app
        .journal
        .as_ref()
        .filter(|_| !req.uri().path().starts_with("/admin/v1/journal"))
        .map(|_| {
            (
                crate::journal::path(req.uri()),
                crate::journal::headers(req.headers()),
            )
        });
    let mut origin = crate::app::Origin {
        surface: surface.name(),
        request_id: request_id.clone(),
        actor: crate::app::Actor::Unknown,
        code: None,
        gated: false,
    };
    // The vendors' emulated rate limits (the request counts only if no
    // fault rule answered it).
    let rate = match fault {
        Some(crate::faults::Decision::Error { .. }) => None,
        _ => rate_limit_of(&app, surface, &req),
    };
    let pass = match admit(&app, surface, &req).await {
        Ok(p) => p,
        Err(mut resp) => {
            stamp_seq(&app, &mut resp);
            resp.headers_mut().insert(REQUEST_ID, request_id);
            return Ok(resp);
        }
    };
    origin.gated = pass.is_some();
    let routed = AssertUnwindSafe(async {
        match (fault, rate) {
            (
                Some(crate::faults::Decision::Error {
                    status,
                    retry_after_s,
                }),
                _,
            ) => surface.fault(status, retry_after_s, http::FAULT_INJECTED),
            (_, Some(v)) if !v.allowed => surface.rate_limited(&v, app.now()),
            _ => route(&app, &surfaces, surface, req, peer).await,
        }
    })
    .catch_unwind();
    let ((routed, origin), body) = if journaled.is_some() {
        http::with_body_tap(crate::app::with_origin(origin, routed)).await
    } else {
        (crate::app::with_origin(origin, routed).await, None)
    };
    // The answer is made: what follows (metrics, journal, a trickle) does
    // not read state.
    drop(pass);
    let resp = match routed {
        Ok(resp) => resp,
        Err(_panic) => {
            tracing::error!("request handler panicked");
            http::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &br#"{"error":"internal error"}"#[..],
            )
        }
    };
    if let (Some(o), Some(origin)) = (observed, origin) {
        let code = observe(&app, &o, &origin, resp.status());
        if let Some((path, headers)) = journaled {
            journal(
                &app,
                &o,
                &origin,
                (path, headers, body),
                resp.status(),
                code,
            );
        }
    }
    Ok(finish(&app, resp, request_id, surface, rate, fault).await)
}

/// The headers every answer carries (request id, the cluster's sequence,
/// Yext's rate-limit headers), a fault's trickle, and `Connection: close`
/// after a body that was not read.
async fn finish(
    app: &App,
    mut resp: Resp,
    request_id: hyper::header::HeaderValue,
    surface: Surface,
    rate: Option<crate::ratelimit::Verdict>,
    fault: Option<crate::faults::Decision>,
) -> Resp {
    resp.headers_mut().insert(REQUEST_ID, request_id);
    stamp_seq(app, &mut resp);
    if let (Surface::Yext, Some(v)) = (surface, rate) {
        yext_rate_headers(&mut resp, &v);
    }
    if let Some(crate::faults::Decision::Trickle { bytes_per_s }) = fault {
        resp = trickle(resp, bytes_per_s).await;
    }
    // A body refused as too large or too slow was not read: the next bytes on
    // the connection are the rest of it, not a request. Tell the client the
    // connection ends with this answer (hyper then closes it).
    if matches!(
        resp.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    ) {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// What must hold before a request is handled: on a cluster node, the
/// stream sequence its `X-Tally-Min-Seq` asks for applied here (read your
/// writes made through another node; bounded wait); then the state gate
/// passed (a restore waits for the requests inside and holds new ones,
/// see `crate::gate`), except by the state fixtures' own routes. Else the
/// answer to send instead (503 in the surface's shape).
async fn admit<'a>(
    app: &'a App,
    surface: Surface,
    req: &Request<Incoming>,
) -> Result<Option<crate::gate::Pass<'a>>, Resp> {
    // The header is looked for on cluster nodes only (a single node's
    // request pays nothing for it).
    if let Some(c) = &app.cluster {
        if let Some(min) = http::min_seq(req) {
            let wait = Duration::from_millis(crate::cluster::MIN_SEQ_WAIT_MS);
            if !c.wait_applied(min, wait).await {
                return Err(surface.fault(503, Some(1), http::NOT_CAUGHT_UP));
            }
        }
    }
    if matches!(surface, Surface::Admin) && crate::api::admin::is_state_route(req.uri().path()) {
        return Ok(None);
    }
    // Broken: a restore failed half-way, nothing may read this state.
    app.gate
        .enter()
        .await
        .map(Some)
        .map_err(|_| surface.fault(503, None, http::STATE_BROKEN))
}

/// On a cluster node, the stream sequence it had applied when it answered.
fn stamp_seq(app: &App, resp: &mut Resp) {
    if let Some(c) = &app.cluster {
        resp.headers_mut()
            .insert(http::SEQ_HEADER, c.applied().into());
    }
}

/// A connection closed without an answer (a fault rule's `close`): hyper
/// drops the connection when its service fails.
#[derive(Debug)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed by a fault rule")
    }
}

impl std::error::Error for Closed {}

/// What the fault rules decide for `req` (None while no rule is set).
fn fault_of(
    app: &App,
    surface: Surface,
    req: &Request<Incoming>,
) -> Option<crate::faults::Decision> {
    if !app.faults.active() || req.uri().path().starts_with("/admin/v1/faults") {
        return None;
    }
    let key = crate::faults::api_key_of(req.headers(), req.uri());
    let tenant_id = key
        .as_deref()
        .and_then(|k| app.engine.api_key(k))
        .map(|k| k.tenant_id);
    let decision = app.faults.decide(&crate::faults::Request {
        surface: surface.name(),
        endpoint: app.metrics.routes.endpoint(req.uri().path()),
        method: method_label(req.method()),
        api_key: key.as_deref(),
        tenant_id,
        now: app.now(),
    });
    decision
}

/// Yext's rate-limit headers, on every answer (its Go SDK reads them).
fn yext_rate_headers(resp: &mut Resp, v: &crate::ratelimit::Verdict) {
    let h = resp.headers_mut();
    h.insert("rate-limit-limit", v.limit.into());
    h.insert("rate-limit-remaining", v.remaining.into());
    h.insert("rate-limit-reset", v.reset_at.div_euclid(1000).into());
}

/// Keeps a request in the journal: its (masked) path, headers and body.
fn journal(
    app: &App,
    o: &Observed,
    origin: &crate::app::Origin,
    (path, headers, body): (String, Vec<(String, String)>, Option<bytes::Bytes>),
    status: StatusCode,
    code: &'static str,
) {
    let Some(journal) = &app.journal else { return };
    let (body, body_truncated) = crate::journal::body(body.as_ref());
    journal.push(crate::journal::Entry {
        seq: 0,
        at: app.now(),
        surface: origin.surface,
        endpoint: o.endpoint,
        method: o.method,
        path,
        headers,
        body,
        body_truncated,
        status: status.as_u16(),
        code,
        latency_us: o.started.elapsed().as_micros() as u64,
        tenant_id: match &origin.actor {
            crate::app::Actor::Key(k) => Some(k.tenant_id),
            _ => None,
        },
        request_id: origin.request_id.to_str().unwrap_or_default().to_string(),
    });
}

/// Counts `req` against its vendor's emulated rate limit (with
/// `--emulate-rate-limits`): LicenseSpring per API key per second (flood
/// protection) and per tenant per rolling minute; Yext per account per
/// hour; Informatica only where a tenant has an override. A tenant's
/// override replaces the default. None: not limited here.
fn rate_limit_of(
    app: &App,
    surface: Surface,
    req: &Request<Incoming>,
) -> Option<crate::ratelimit::Verdict> {
    use crate::ratelimit::{self as rl, Limit};
    if !app.emulate_rate_limits {
        return None;
    }
    let now = app.now();
    let tenant_of_key = |k: &str| app.engine.api_key(k).map(|k| k.tenant_id);
    let (name, tenant, default, rolling) = match surface {
        Surface::LicenseSpring => {
            let key = crate::faults::api_key_of(req.headers(), req.uri())?;
            let per_key = Limit {
                limit: rl::LICENSESPRING_REQUESTS_PER_KEY_PER_SECOND,
                window_ms: 1_000,
            };
            let v = app
                .rate_limits
                .admit("licensespring", "api_key", &key, per_key, false, now);
            if !v.allowed {
                return Some(v);
            }
            let per_company = Limit {
                limit: rl::LICENSESPRING_REQUESTS_PER_MINUTE,
                window_ms: 60_000,
            };
            (
                "licensespring",
                tenant_of_key(&key)?,
                Some(per_company),
                true,
            )
        }
        Surface::Yext => {
            let key = crate::faults::api_key_of(req.headers(), req.uri())?;
            let per_account = Limit {
                limit: rl::YEXT_REQUESTS_PER_HOUR,
                window_ms: 3_600_000,
            };
            ("yext", tenant_of_key(&key)?, Some(per_account), false)
        }
        Surface::Informatica => {
            let tenant = req
                .headers()
                .get("INFA-SESSION-ID")
                .and_then(|v| v.to_str().ok())
                .and_then(|id| crate::api::infa::tenant_of_session(app, id))?;
            ("informatica", tenant, None, false)
        }
        _ => return None,
    };
    let limit = app.rate_limits.override_of(tenant, name).or(default)?;
    Some(
        app.rate_limits
            .admit(name, "tenant", &tenant.to_string(), limit, rolling, now),
    )
}

/// The answer's body sent at `bytes_per_s` (a fault rule's `trickle`): a
/// tenth of a second's worth at a time.
async fn trickle(resp: Resp, bytes_per_s: u64) -> Resp {
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        http::Body::Full(full) => http_body_util::BodyExt::collect(full)
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default(),
        stream => return hyper::Response::from_parts(parts, stream),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let chunk = (bytes_per_s / 10).max(1) as usize;
    let pause = Duration::from_millis(chunk as u64 * 1000 / bytes_per_s.max(1));
    tokio::spawn(async move {
        for piece in bytes.chunks(chunk) {
            if tx.send(bytes::Bytes::copy_from_slice(piece)).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    let mut parts = parts;
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    hyper::Response::from_parts(parts, http::Body::Stream { rx, hold: None })
}

/// A request's endpoint and method, and when it began.
struct Observed {
    started: std::time::Instant,
    endpoint: &'static str,
    method: &'static str,
}

/// A method as a label (others than the usual ones are `other`).
fn method_label(m: &hyper::Method) -> &'static str {
    match *m {
        hyper::Method::GET => "GET",
        hyper::Method::POST => "POST",
        hyper::Method::PUT => "PUT",
        hyper::Method::PATCH => "PATCH",
        hyper::Method::DELETE => "DELETE",
        hyper::Method::HEAD => "HEAD",
        hyper::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The result code of an answer no surface named.
fn code_of_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "ok",
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "body_too_large",
        429 => "rate_limited",
        500 => "internal",
        503 => "unavailable",
        _ => "error",
    }
}

/// Counts an answered request and writes its access log line; returns
/// the result code it counted.
fn observe(
    app: &App,
    o: &Observed,
    origin: &crate::app::Origin,
    status: StatusCode,
) -> &'static str {
    let elapsed = o.started.elapsed();
    let code = match origin.code {
        Some(c) if !status.is_success() => c,
        _ => code_of_status(status),
    };
    let tenant = match &origin.actor {
        crate::app::Actor::Key(k) => Some(k.tenant_id),
        _ => None,
    };
    app.metrics.request(
        crate::metrics::RequestKey {
            surface: origin.surface,
            endpoint: o.endpoint,
            method: o.method,
            class: status.as_u16() / 100,
            code,
            tenant,
        },
        status.as_u16(),
        elapsed.as_nanos() as u64,
    );
    if app.access_log {
        tracing::info!(
            target: "tally::access",
            request_id = origin.request_id.to_str().unwrap_or_default(),
            surface = origin.surface,
            method = o.method,
            endpoint = o.endpoint,
            status = status.as_u16(),
            code,
            latency_us = elapsed.as_micros() as u64,
            tenant = tenant.map(|t| t.to_string()).unwrap_or_default(),
            "request"
        );
    }
    code
}

/// The header that names a request (taken from the client, else made up,
/// and echoed on the answer); changes record it with their origin.
const REQUEST_ID: &str = "x-request-id";
/// Longest request id taken from a client, bytes.
pub const REQUEST_ID_BYTES_MAX: usize = 128;

/// The client's `X-Request-Id` (1 to 128 visible ASCII characters), or a
/// new random one: made once, shared by the origin and the answer.
fn request_id_of<B>(req: &Request<B>) -> hyper::header::HeaderValue {
    req.headers()
        .get(REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            (1..=REQUEST_ID_BYTES_MAX).contains(&b.len()) && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let id = bytes::Bytes::from(format!("{:016x}", rand::random::<u64>()));
            hyper::header::HeaderValue::from_maybe_shared(id)
                .expect("hex digits are a valid header value")
        })
}

/// The surfaces, by path prefix.
#[derive(Clone, Copy)]
enum Surface {
    LicenseSpring,
    Informatica,
    Yext,
    Qlik,
    Admin,
    Native,
    Server,
}

impl Surface {
    /// The surface's name in origins and logs.
    fn name(self) -> &'static str {
        match self {
            Surface::LicenseSpring => "licensespring",
            Surface::Informatica => "informatica",
            Surface::Yext => "yext",
            Surface::Qlik => "qlik",
            Surface::Admin => "admin",
            Surface::Native => "native",
            Surface::Server => "server",
        }
    }

    fn of(path: &str) -> Surface {
        if path.starts_with("/api/v4/") {
            Surface::LicenseSpring
        } else if path.starts_with("/saas/") || path.starts_with("/public/core/") {
            Surface::Informatica
        } else if path.starts_with("/v2/accounts/") {
            Surface::Yext
        } else if path.starts_with("/api/v1/licenses") {
            Surface::Qlik
        } else if path.starts_with("/admin/v1/") || path == "/admin/v1" {
            Surface::Admin
        } else if path.starts_with("/v1/") || path == "/v1" {
            Surface::Native
        } else {
            Surface::Server
        }
    }

    /// An emulated rate limit's refusal, in the surface's shape.
    fn rate_limited(self, v: &crate::ratelimit::Verdict, now: crate::engine::time::Millis) -> Resp {
        let wait_s = u32::try_from((v.reset_at - now).max(0).div_euclid(1000) + 1).unwrap_or(1);
        match self {
            Surface::LicenseSpring => crate::api::licensespring::rate_limited(wait_s),
            Surface::Yext => crate::api::yext::rate_limited(wait_s),
            Surface::Informatica => crate::api::infa::rate_limited(wait_s),
            other => other.fault(429, Some(wait_s), http::RATE_LIMITED),
        }
    }

    /// An injected fault's answer, in the surface's shape.
    fn fault(self, status: u16, retry_after_s: Option<u32>, why: &'static str) -> Resp {
        use crate::api::*;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        match self {
            Surface::LicenseSpring => licensespring::fault(status, retry_after_s, why),
            Surface::Informatica => infa::fault(status, retry_after_s, why),
            Surface::Yext => yext::fault(status, retry_after_s, why),
            Surface::Qlik => qlik::fault(status, retry_after_s, why),
            Surface::Admin => admin::fault(status, retry_after_s, why),
            Surface::Native => native::fault(status, retry_after_s, why),
            Surface::Server => {
                let (code, message) = http::fault_words(status, why);
                http::json_value(status, &serde_json::json!({"error": message, "code": code}))
            }
        }
    }

    /// A refusal before the surface reads the request, in its shape.
    fn malformed(self, m: http::Malformed) -> Resp {
        use crate::api::*;
        match self {
            Surface::LicenseSpring => licensespring::malformed(m),
            Surface::Informatica => infa::malformed(m),
            Surface::Yext => yext::malformed(m),
            Surface::Qlik => qlik::malformed(m),
            Surface::Admin => admin::malformed(m),
            Surface::Native => native::malformed(m),
            Surface::Server => http::json_value(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"error": m.message()}),
            ),
        }
    }
}

/// `peer`: the client's address (password backoff counts failures per source).
async fn route(
    app: &Arc<App>,
    surfaces: &Surfaces,
    surface: Surface,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Resp {
    if let Some(m) = http::Malformed::of(&req) {
        return surface.malformed(m);
    }
    match surface {
        // Each surface's future on the heap: they are 3-5 KB (Qlik's 3.1,
        // admin's 5.1), and inline the request's whole future was moved by
        // value through its wrappers (the unwind guard, the origin scope)
        // several times a request: memmove was 7 % of the core under the
        // Yext churn load.
        Surface::LicenseSpring => {
            Box::pin(crate::api::licensespring::handle(
                app,
                &surfaces.licensespring,
                req,
                peer,
            ))
            .await
        }
        Surface::Informatica => Box::pin(crate::api::infa::handle(app, req, peer)).await,
        Surface::Yext => Box::pin(crate::api::yext::handle(app, req)).await,
        Surface::Qlik => Box::pin(crate::api::qlik::handle(app, &surfaces.qlik, req)).await,
        Surface::Admin => Box::pin(crate::api::admin::handle(app, req)).await,
        Surface::Native => Box::pin(crate::api::native::handle(app, &surfaces.native, req)).await,
        Surface::Server if req.uri().path() == "/healthz" => healthz(app),
        Surface::Server if req.uri().path() == "/metrics" => metrics(app, &req, peer),
        Surface::Server if req.uri().path() == "/ui" || req.uri().path().starts_with("/ui/") => {
            console(req.uri().path())
        }
        Surface::Server
            if req.method() == hyper::Method::GET && openapi(req.uri().path()).is_some() =>
        {
            http::json(
                StatusCode::OK,
                openapi(req.uri().path()).unwrap_or("{}").as_bytes(),
            )
        }
        Surface::Server => http::json(
            StatusCode::NOT_FOUND,
            &br#"{"error":"no such endpoint"}"#[..],
        ),
    }
}

/// The OpenAPI documents of every surface, kept in `docs/openapi/` and
/// served under `/openapi/` (the native one also at `/v1/openapi.json`).
fn openapi(path: &str) -> Option<&'static str> {
    Some(match path.strip_prefix("/openapi/")? {
        "native.json" => crate::api::native::OPENAPI_JSON,
        "yext.json" => include_str!("../../docs/openapi/yext.json"),
        "informatica.json" => include_str!("../../docs/openapi/informatica.json"),
        "qlik.json" => include_str!("../../docs/openapi/qlik.json"),
        "licensespring.json" => include_str!("../../docs/openapi/licensespring.json"),
        _ => return None,
    })
}

/// `GET /metrics`: with `--metrics-token`, for its bearer only; without,
/// for loopback clients only. OpenMetrics when the scraper accepts it,
/// else the Prometheus text format.
fn metrics(app: &App, req: &Request<Incoming>, peer: std::net::IpAddr) -> Resp {
    let refuse = |status: StatusCode, why: &str| {
        http::json_value(status, &serde_json::json!({ "error": why }))
    };
    if req.method() != hyper::Method::GET {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics only");
    }
    let given = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some((status, why)) = scrape_refusal(app.metrics_token.as_deref(), given, peer) {
        return refuse(status, why);
    }
    let openmetrics = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let body = app.metrics.render(app, openmetrics);
    let mut r = hyper::Response::new(http::Body::full(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(if openmetrics {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        } else {
            "text/plain; version=0.0.4; charset=utf-8"
        }),
    );
    r
}

/// The web console's files, built into the binary (no network at run
/// time): (path, content type, bytes).
const CONSOLE: [(&str, &str, &str); 3] = [
    (
        "/ui/",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/app.css"),
    ),
];

/// `GET /ui/`: the console (it asks the admin API for everything, with
/// the token its user gives it). Its own files only: the page may load
/// nothing from elsewhere (Content-Security-Policy).
fn console(path: &str) -> Resp {
    let path = if path == "/ui" || path == "/ui/index.html" {
        "/ui/"
    } else {
        path
    };
    let Some((_, kind, body)) = CONSOLE.iter().find(|(p, _, _)| *p == path) else {
        return http::json(
            StatusCode::NOT_FOUND,
            &br#"{"error":"no such file of the console"}"#[..],
        );
    };
    let mut r = hyper::Response::new(http::Body::full(*body));
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(kind),
    );
    h.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        hyper::header::HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        hyper::header::REFERRER_POLICY,
        hyper::header::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    r
}

/// Why a scrape is refused: with a token, anyone without it; without
/// one, any client that is not on a loopback address.
fn scrape_refusal(
    token: Option<&str>,
    given: Option<&str>,
    peer: std::net::IpAddr,
) -> Option<(StatusCode, &'static str)> {
    match token {
        Some(t)
            if !crate::credentials::constant_time_eq(
                given.unwrap_or("").as_bytes(),
                t.as_bytes(),
            ) =>
        {
            Some((
                StatusCode::UNAUTHORIZED,
                "missing or wrong metrics bearer token",
            ))
        }
        None if !peer.is_loopback() => Some((
            StatusCode::FORBIDDEN,
            "metrics are served to loopback clients unless --metrics-token is set",
        )),
        _ => None,
    }
}

fn healthz(app: &App) -> Resp {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_are_for_loopback_or_the_token() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
        let lo6: std::net::IpAddr = "::1".parse().expect("ip");
        let far: std::net::IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(scrape_refusal(None, None, lo), None);
        assert_eq!(scrape_refusal(None, None, lo6), None);
        assert_eq!(
            scrape_refusal(None, Some("x"), far).map(|r| r.0),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(scrape_refusal(Some("t"), Some("t"), far), None);
        assert_eq!(
            scrape_refusal(Some("t"), None, lo).map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED),
            "a token is wanted from loopback too"
        );
        assert_eq!(
            scrape_refusal(Some("t"), Some("u"), far).map(|r| r.0),
            Some(StatusCode::UNAUTHORIZED)
        );
    }
}
