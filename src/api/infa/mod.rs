//! Informatica IICS REST API v3: `POST /saas/public/core/v3/login` and the
//! `license` resource (`GET|PUT /saas/public/core/v3/license/org/{orgId}`,
//! also without the `/saas` prefix), on the engine's orgs
//! ([`crate::engine::infa`]).
//!
//! A login gives a session (`INFA-SESSION-ID`) that expires after
//! [`SESSION_IDLE_MS`] without use; sessions are engine state (logged, kept
//! across restarts, the same on every node of a cluster). Errors are the
//! vendor's `{"error": {"code", "message", "requestId", "details"}}`.
//!
//! # Layout
//! - `mod.rs`: the route table;
//! - `session.rs`: logins and sessions;
//! - `license.rs`: the license resource's `GET` and `PUT`;
//! - `error.rs`: [`InfaError`]; `wire.rs`: the answers' shapes.

mod error;
mod license;
mod session;
mod wire;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

pub use error::InfaError;
use error::R;
pub use session::{tenant_of_session, SESSIONS_MAX, SESSION_IDLE_MS};

use crate::app::App;
use crate::http::{read_body, Resp};

/// A request the server refused before reading it, in this surface's shape.
/// The emulated rate limit's refusal (a tenant's override; Informatica
/// documents the message "too many requests" and no number).
pub fn rate_limited(retry_after_s: u32) -> Resp {
    let mut e = InfaError::new(
        hyper::StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS",
        "too many requests",
    );
    e.retry_after_s = Some(u64::from(retry_after_s.max(1)));
    e.response()
}

/// A request the server answered before this surface handled it (an
/// injected fault, a node not caught up), in this surface's shape.
pub fn fault(status: hyper::StatusCode, retry_after_s: Option<u32>, why: &'static str) -> Resp {
    let (_, message) = crate::http::fault_words(status, why);
    let mut e = InfaError::new(status, "INJECTED_FAULT", message);
    e.retry_after_s = retry_after_s.map(u64::from);
    e.response()
}

pub fn malformed(m: crate::http::Malformed) -> Resp {
    InfaError::bad(m.message()).response()
}

/// `peer`: the client's address (failed logins back off per source).
pub async fn handle(app: &App, req: Request<Incoming>, peer: std::net::IpAddr) -> Resp {
    match handle_inner(app, req, peer).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

async fn body_of(app: &App, req: Request<Incoming>) -> R<Bytes> {
    match read_body(
        req,
        app.limits.request_body_bytes_max,
        app.limits.request_timeout,
    )
    .await
    {
        Ok(b) => Ok(b),
        Err(e) => {
            let (status, message) = e.status_and_message();
            Err(InfaError::new(status, "VALIDATION_02", message))
        }
    }
}

/// The route table: the login, then the license resource behind a session.
async fn handle_inner(app: &App, req: Request<Incoming>, peer: std::net::IpAddr) -> R<Resp> {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/saas").unwrap_or(&path);
    let method = req.method().clone();
    if rest == "/public/core/v3/login" {
        if method != Method::POST {
            return Err(InfaError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "REQUEST_02",
                "Use POST to log in.",
            ));
        }
        let host = crate::http::host_of(&req);
        let body = body_of(app, req).await?;
        return session::login(app, &body, &host, Some(peer)).await;
    }
    let Some(org_id) = rest.strip_prefix("/public/core/v3/license/org/") else {
        return Err(InfaError::new(
            StatusCode::NOT_FOUND,
            "REQUEST_01",
            "No such resource.",
        ));
    };
    let org_id = crate::http::percent_decode_segment(org_id.trim_end_matches('/')).into_owned();
    if method != Method::GET && method != Method::PUT {
        return Err(InfaError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "REQUEST_02",
            "Use GET or PUT.",
        ));
    }
    let session = session::session(app, &req).await?;
    let target = license::Target::find(app, org_id)?;
    if method == Method::GET {
        license::get(app, &session, &target)
    } else {
        license::put(app, &session, &target, req).await
    }
}

/// Everything this surface parses from a client's bytes, for the fuzz
/// targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzz {
    /// A license document (`PUT .../license/org/{id}`).
    pub fn document(data: &[u8]) {
        let _ = super::license::licenses_of(data, "org");
    }
}
