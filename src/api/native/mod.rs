//! Tally's native API (`/v1/...`, JSON): its own face over the engine's
//! primitives (seat pools, lease pools, meters), with what no vendor offers:
//! two-phase reservations, idempotent changes (`Idempotency-Key`), dry runs
//! (`?dry_run=true`) and preflights, atomic batches, and signed requests.
//! Errors are `application/problem+json` (RFC 9457). The reference is
//! `docs/native.md`.
//!
//! # Layout
//! - `mod.rs`: the route table, [`handle`], the request context (caller,
//!   clock, dry run, idempotency key) and [`change`], the one path by which
//!   every change is made, previewed or replayed;
//! - `auth.rs`: bearer keys and signed requests (HMAC-SHA256, nonces);
//! - `ops.rs`: every change as an operation (from a path or a batch item)
//!   and the license a request addresses;
//! - `licenses.rs`: reading licenses, devices; `check.rs`: checks (the hot
//!   path); `seats.rs`: floating seats; `usage.rs`: usage and reservations;
//!   `batch.rs`: batches and preflights; `ledger.rs`: the tenant's ledger;
//!   `webhooks.rs`: the tenant's webhook subscriptions and their deliveries;
//! - `error.rs`: [`NativeError`]; `wire.rs`: the answers' shapes.

mod auth;
mod batch;
mod check;
mod error;
mod ledger;
mod licenses;
pub mod ops;
mod seats;
mod usage;
mod webhooks;
mod wire;

use std::borrow::Cow;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::engine::time::Millis;
use crate::engine::{Command, Outcome};
use crate::http::{percent_decode_segment, read_incoming, Query, Resp};
pub use auth::{signature, Nonces};
pub use error::NativeError;

type R<T> = Result<T, NativeError>;

/// This API's contract (OpenAPI 3.1), kept in the repository and served at
/// `GET /v1/openapi.json`; CI runs Schemathesis against the server with it.
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi/native.json");

/// The native API's own state (owned by `server::Surfaces`).
pub struct NativeState {
    /// Nonces of signed requests within the replay window.
    pub nonces: Nonces,
    /// Permits of the open ledger streams.
    pub streams: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Default for NativeState {
    fn default() -> Self {
        NativeState {
            nonces: Nonces::default(),
            streams: std::sync::Arc::new(tokio::sync::Semaphore::new(ledger::LEDGER_STREAMS_MAX)),
        }
    }
}

/// A request the server answered before this surface handled it (an
/// injected fault, a node not caught up), in this surface's shape.
pub fn fault(status: StatusCode, retry_after_s: Option<u32>, why: &'static str) -> Resp {
    let (code, message) = crate::http::fault_words(status, why);
    let mut r = NativeError::new(status, code, message).response();
    if let Some(s) = retry_after_s {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, s.into());
    }
    r
}

/// A request the server refused before reading it, in this surface's shape.
pub fn malformed(m: crate::http::Malformed) -> Resp {
    NativeError::invalid(m.message()).response()
}

pub async fn handle(app: &App, state: &NativeState, req: Request<Incoming>) -> Resp {
    match handle_inner(app, state, req).await {
        Ok(done) => done.response(),
        Err(e) => e.response(),
    }
}

/// A successful answer: status, JSON body, and the headers that say how it
/// was made (`Idempotent-Replayed`, `Tally-Dry-Run`).
pub struct Done {
    status: StatusCode,
    body: Bytes,
    replayed: bool,
    dry_run: bool,
    /// A stream of Server-Sent Events instead of `body`.
    stream: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl Done {
    pub fn json(status: StatusCode, v: &Value) -> Self {
        Done {
            status,
            body: serde_json::to_vec(v).unwrap_or_default().into(),
            replayed: false,
            dry_run: false,
            stream: None,
        }
    }

    /// A body already serialised as JSON.
    pub fn bytes(status: StatusCode, json: Vec<u8>) -> Self {
        Done {
            status,
            body: json.into(),
            replayed: false,
            dry_run: false,
            stream: None,
        }
    }

    /// A body already written as JSON.
    pub fn raw(status: StatusCode, json: &'static str) -> Self {
        Done {
            status,
            body: Bytes::from_static(json.as_bytes()),
            replayed: false,
            dry_run: false,
            stream: None,
        }
    }

    /// A stream of Server-Sent Events (`text/event-stream`).
    pub fn stream(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        let mut d = Done::bytes(StatusCode::OK, Vec::new());
        d.stream = Some(rx);
        d
    }

    fn response(self) -> Resp {
        if let Some(rx) = self.stream {
            let mut r = hyper::Response::new(crate::http::Body::Stream { rx, hold: None });
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            r.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            return r;
        }
        let mut r = crate::http::json(self.status, self.body);
        if self.replayed {
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        if self.dry_run {
            r.headers_mut()
                .insert("tally-dry-run", HeaderValue::from_static("true"));
        }
        r
    }
}

/// An idempotency key and the fingerprint of the request it came with.
pub struct Idem {
    pub key: String,
    pub fingerprint: String,
}

/// What every handler knows about its request.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub caller: auth::Caller,
    pub now: Millis,
    /// `?dry_run=true`: answer what the change would do, change nothing.
    pub dry_run: bool,
    pub idem: Option<Idem>,
}

/// Makes (or previews, or replays) one change and answers its reply.
pub async fn change(ctx: &Ctx<'_>, op: Command<'_>) -> R<Done> {
    // A dry run changes nothing: read-only keys may ask one.
    if ctx.dry_run {
        let reply = ctx
            .app
            .engine
            .preview(std::slice::from_ref(&op))
            .map_err(|(_, e)| NativeError::from(e))?
            .pop()
            .unwrap_or(crate::engine::native::Reply::Done);
        let (status, body) = wire::reply(ctx.app, &reply);
        let mut done = Done::json(status, &body);
        done.dry_run = true;
        return Ok(done);
    }
    ctx.caller.may_write()?;
    let cmd = idempotent(ctx, op, None);
    let (outcome, reply) = ctx.app.commit_replying(&cmd).await?;
    let (status, body) = wire::reply(ctx.app, &reply);
    let mut done = Done::json(status, &body);
    done.replayed = outcome == (Outcome::Idempotent { replayed: true });
    Ok(done)
}

/// `op` under the request's idempotency key, if it has one (`item`: the
/// index of a batch item applied on its own, which gets a key of its own).
pub fn idempotent<'c>(ctx: &Ctx<'_>, op: Command<'c>, item: Option<usize>) -> Command<'c> {
    match &ctx.idem {
        None => op,
        Some(idem) => Command::Idempotent {
            tenant_id: ctx.caller.tenant_id,
            key: match item {
                None => idem.key.clone(),
                Some(i) => format!("{}#{i}", idem.key),
            },
            fingerprint: idem.fingerprint.clone(),
            now: ctx.now,
            cmd: Box::new(op),
        },
    }
}

/// The request's `Idempotency-Key`, with the fingerprint of the request.
fn idem_of(parts: &hyper::http::request::Parts, body: &[u8]) -> R<Option<Idem>> {
    let Some(v) = parts.headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= crate::engine::native::IDEMPOTENCY_KEY_BYTES_MAX)
        .ok_or_else(|| {
            NativeError::invalid("Idempotency-Key: must be 1 to 255 printable ASCII bytes")
        })?;
    let digest = Sha256::new()
        .chain_update(parts.method.as_str())
        .chain_update(b"\n")
        .chain_update(parts.uri.path())
        .chain_update(b"\n")
        .chain_update(body)
        .finalize();
    Ok(Some(Idem {
        key: key.to_string(),
        fingerprint: auth::hex(&digest),
    }))
}

/// The JSON body of a change (`{}` when empty).
pub fn body_json(body: &[u8]) -> R<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| NativeError::invalid(format!("body: not JSON ({e})")))?;
    crate::engine::check_json_depth("body", &v).map_err(NativeError::from)?;
    Ok(v)
}

fn method_not_allowed() -> NativeError {
    NativeError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This resource does not take that method",
    )
}

fn no_route() -> NativeError {
    NativeError::not_found("not_found", "No such endpoint")
        .detail("see docs/native.md or GET /v1/openapi.json")
}

async fn handle_inner(app: &App, state: &NativeState, req: Request<Incoming>) -> R<Done> {
    // The public documents: no key needed.
    if req.method() == Method::GET {
        match req.uri().path() {
            "/v1/.well-known/jwks.json" => {
                return Ok(Done::json(StatusCode::OK, &app.tokens.jwks()))
            }
            "/v1/openapi.json" => return Ok(Done::raw(StatusCode::OK, OPENAPI_JSON)),
            _ => {}
        }
    }
    let now = app.now();
    let (parts, body) = req.into_parts();
    let body = read_incoming(
        body,
        app.limits.request_body_bytes_max,
        app.limits.request_timeout,
    )
    .await?;
    // Signatures' timestamps are checked on the wall clock under a test clock.
    let caller = auth::authenticate(app, &state.nonces, &parts, &body, app.signing_now())?;
    let query = Query::parse(parts.uri.query());
    let dry_run = match query.get("dry_run") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(NativeError::invalid("dry_run: must be true or false")),
    };
    let ctx = Ctx {
        app,
        caller,
        now,
        dry_run,
        idem: if dry_run {
            None
        } else {
            idem_of(&parts, &body)?
        },
    };
    let path = parts.uri.path().trim_start_matches("/v1").trim_matches('/');
    let segs: Vec<Cow<str>> = path.split('/').map(percent_decode_segment).collect();
    let segs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
    if parts.method == Method::GET && segs.as_slice() == ["ledger", "stream"] {
        let last = parts
            .headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok());
        return ledger::stream(&ctx, &state.streams, &query, last);
    }
    route(&ctx, &parts.method, &segs, &query, &body).await
}

/// The route table.
async fn route(ctx: &Ctx<'_>, m: &Method, segs: &[&str], q: &Query<'_>, body: &[u8]) -> R<Done> {
    match segs {
        ["check"] if m == Method::POST => check::post(ctx, body).await,
        ["ledger"] if m == Method::GET => ledger::list(ctx, q).await,
        ["preflight"] if m == Method::POST => batch::preflight(ctx, body),
        ["batch"] if m == Method::POST => batch::batch(ctx, body).await,
        ["webhooks"] if m == Method::GET => webhooks::list(ctx),
        ["webhooks"] if m == Method::POST => webhooks::create(ctx, body).await,
        ["webhooks", id] if m == Method::GET => webhooks::get(ctx, id),
        ["webhooks", id] if m == Method::PATCH => webhooks::patch(ctx, id, body).await,
        ["webhooks", id] if m == Method::DELETE => webhooks::delete(ctx, id).await,
        ["webhooks", id, "secret", "rotate"] if m == Method::POST => {
            webhooks::rotate(ctx, id, body).await
        }
        ["webhooks", id, "deliveries"] if m == Method::GET => webhooks::deliveries(ctx, id, q),
        ["webhooks", id, "deliveries", event, "retry"] if m == Method::POST => {
            webhooks::retry(ctx, id, event).await
        }
        ["reservations", id] if m == Method::GET => usage::get_reservation(ctx, id),
        ["reservations", id, "commit"] if m == Method::POST => usage::commit(ctx, id, body).await,
        ["reservations", id, "void"] if m == Method::POST => usage::void(ctx, id, body).await,
        ["products", p, "users", u, "licenses"] if m == Method::GET => licenses::of_user(ctx, p, u),
        ["products", p, "users", u, "licenses", id, rest @ ..] => {
            let l = licenses::user_license(ctx, p, u, id)?;
            license_route(ctx, m, &l, rest, q, body).await
        }
        ["licenses", key, rest @ ..] => {
            let l = ops::license_by_key(ctx.app, ctx.caller.tenant_id, key)?;
            license_route(ctx, m, &l, rest, q, body).await
        }
        ["check" | "preflight" | "batch" | "ledger" | "webhooks"]
        | ["reservations", ..]
        | ["webhooks", _]
        | ["webhooks", _, "secret", "rotate"]
        | ["webhooks", _, "deliveries"]
        | ["webhooks", _, "deliveries", _, "retry"] => Err(method_not_allowed()),
        _ => Err(no_route()),
    }
}

/// The routes below one license.
async fn license_route(
    ctx: &Ctx<'_>,
    m: &Method,
    l: &crate::engine::model::License,
    rest: &[&str],
    q: &Query<'_>,
    body: &[u8],
) -> R<Done> {
    match rest {
        [] if m == Method::GET => licenses::read(ctx, l),
        ["token"] if m == Method::POST => licenses::token(ctx, l, body),
        ["reservations"] if m == Method::POST => usage::reserve_seat(ctx, l, body).await,
        ["devices", hw] if m == Method::PUT => licenses::activate(ctx, l, hw, body).await,
        ["devices", hw] if m == Method::DELETE => licenses::deactivate(ctx, l, hw).await,
        ["features", code, "check"] if m == Method::GET => {
            check::get(ctx, l, code, q.get("device")).await
        }
        ["features", code, "seats"] if m == Method::GET => seats::list(ctx, l, code),
        ["features", code, "seats", holder] if m == Method::PUT => {
            seats::take(ctx, l, code, holder, body).await
        }
        ["features", code, "seats", holder] if m == Method::DELETE => {
            seats::release(ctx, l, code, holder).await
        }
        ["features", code, "usage"] if m == Method::POST => usage::add(ctx, l, code, body).await,
        ["features", code, "reservations"] if m == Method::POST => {
            usage::reserve(ctx, l, code, body).await
        }
        []
        | ["token"]
        | ["devices", _]
        | ["features", _, "check" | "seats" | "usage" | "reservations"]
        | ["features", _, "seats", _] => Err(method_not_allowed()),
        _ => Err(no_route()),
    }
}

/// Entry points for the fuzz targets: everything this surface parses.
pub mod fuzz {
    use super::*;

    /// A body as the changes read it: JSON, its depth, an operation's fields,
    /// and a device's details.
    pub fn body(data: &[u8]) {
        let Ok(v) = body_json(data) else { return };
        let _ = ops::device_info(&v, "body".into());
        if let Ok(mut f) = ops::Fields::of(&v, "body") {
            let _ = f.str_opt("op");
            let _ = f.int_opt("units");
            let _ = f.bool_opt("atomic");
            let _ = f.done();
        }
    }
}
