//! Informatica IICS REST API v3: `POST /saas/public/core/v3/login` and the
//! `license` resource (`GET|PUT /saas/public/core/v3/license/org/{orgId}`,
//! also without the `/saas` prefix), on the engine's orgs
//! ([`crate::engine::infa`]).
//!
//! A login gives a session (`INFA-SESSION-ID`) that expires after
//! [`SESSION_IDLE_MS`] without use; sessions live in memory only (a restart
//! asks clients to log in again, as an expired session does). Errors are the
//! vendor's `{"error": {"code", "message", "requestId", "details"}}`.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ETAG};
use hyper::{Method, Request, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::app::App;
use crate::app::CommitError;
use crate::engine::infa::{InfaLicenses, InfaOrg};
use crate::engine::model::Id;
use crate::engine::time::{Millis, MINUTE_MS};
use crate::engine::InfaRefusal;
use crate::engine::{Command, EngineError};
use crate::http::{json_value, read_body, Resp};

/// A session ends after this long without a request.
pub const SESSION_IDLE_MS: Millis = 30 * MINUTE_MS;
/// Sessions held at once; past it expired ones are dropped, then the oldest.
pub const SESSIONS_MAX: usize = 100_000;

#[derive(Clone, Debug)]
struct Session {
    tenant_id: Id,
    username: String,
    /// The user's password hash at login: a changed password (or a removed
    /// user) ends the session.
    password_hash: String,
    last_used: Millis,
}

/// Surface state: sessions (no entitlement state lives here).
#[derive(Default)]
pub struct InfaState {
    /// session id -> session. One mutex: logins and session checks are a
    /// lookup and a timestamp each.
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Debug)]
pub struct InfaError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header.
    retry_after_s: Option<u64>,
}

impl InfaError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        InfaError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AUTH_01", message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AUTH_02", message)
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_01", message)
    }
    fn response(self) -> Resp {
        let mut r = json_value(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message,
                               "requestId": crate::util::random_token(22), "details": null}}),
        );
        if let Some(s) = self.retry_after_s {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, s.into());
        }
        r
    }
}

impl From<crate::credentials::Refused> for InfaError {
    fn from(r: crate::credentials::Refused) -> Self {
        match r {
            crate::credentials::Refused::Busy => InfaError {
                retry_after_s: Some(1),
                ..InfaError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_02",
                    "Too many logins in progress; try again shortly.",
                )
            },
            crate::credentials::Refused::Throttled { retry_after_ms } => InfaError {
                retry_after_s: Some(((retry_after_ms + 999) / 1000).max(1) as u64),
                ..InfaError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "AUTH_03",
                    "Too many failed logins for this user or address; wait before trying again.",
                )
            },
        }
    }
}

impl From<CommitError> for InfaError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Unavailable => InfaError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_01",
                "Changes cannot be stored right now; the change was not made.",
            ),
            CommitError::Engine(EngineError::Infa(InfaRefusal::VersionMismatch)) => InfaError::new(
                StatusCode::PRECONDITION_FAILED,
                "PRECONDITION_01",
                "The organization's licenses changed since they were read (If-Match).",
            ),
            CommitError::Engine(EngineError::Infa(InfaRefusal::OrgNotFound)) => {
                InfaError::new(StatusCode::NOT_FOUND, "ORG_01", "Organization not found.")
            }
            CommitError::Engine(EngineError::Invalid(field, why)) => {
                InfaError::bad(format!("{field}: {why}."))
            }
            CommitError::Engine(EngineError::Duplicate(what)) => {
                InfaError::bad(format!("Duplicate {what}."))
            }
            CommitError::Engine(e) => InfaError::bad(e.to_string()),
        }
    }
}

type R<T> = Result<T, InfaError>;

/// A request the server refused before reading it, in this surface's shape.
pub fn malformed(m: crate::http::Malformed) -> Resp {
    InfaError::bad(m.message()).response()
}

/// `peer`: the client's address (failed logins back off per source).
/// `state`: this surface's sessions, owned by the server; `peer`: the
/// client's address (failed logins back off per source).
pub async fn handle(
    app: &App,
    state: &InfaState,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Resp {
    match handle_inner(app, state, req, peer).await {
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

#[allow(
    clippy::too_many_lines,
    reason = "the Informatica surface's route table, in one place"
)]
async fn handle_inner(
    app: &App,
    state: &InfaState,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> R<Resp> {
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
        return login(app, state, &body, &host, Some(peer)).await;
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
    let session = session(app, state, &req)?;
    let if_match = req
        .headers()
        .get(hyper::header::IF_MATCH)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string());
    let target_tenant = app.engine.infa_org_tenant(&org_id).ok_or_else(|| {
        InfaError::new(
            StatusCode::NOT_FOUND,
            "ORG_01",
            format!("Organization {org_id} not found."),
        )
    })?;
    let org = app.engine.infa(target_tenant).ok_or_else(|| {
        InfaError::new(
            StatusCode::NOT_FOUND,
            "ORG_01",
            format!("Organization {org_id} not found."),
        )
    })?;
    let is_child = app
        .engine
        .tenant(target_tenant)
        .is_some_and(|t| t.spec.read().parent_id == Some(session.tenant_id));
    if method == Method::GET {
        if target_tenant != session.tenant_id && !is_child {
            return Err(InfaError::forbidden(format!(
                "Organization {org_id} is neither your organization nor one of its sub-organizations."
            )));
        }
        return Ok(license_response(app, &org));
    }
    // PUT: an administrator of the parent organization, on a child.
    if target_tenant == session.tenant_id {
        return Err(InfaError::forbidden(
            "An organization cannot update its own licenses.",
        ));
    }
    if !is_child {
        return Err(InfaError::forbidden(format!(
            "Organization {org_id} is not a sub-organization of yours."
        )));
    }
    let admin = app.engine.infa(session.tenant_id).is_some_and(|o| {
        o.spec
            .read()
            .users
            .iter()
            .any(|u| u.username == session.username && u.admin)
    });
    if !admin {
        return Err(InfaError::forbidden(
            "Only an administrator of the parent organization may update licenses.",
        ));
    }
    let expected = match if_match.as_deref() {
        None => None,
        Some("*") => None,
        Some(tag) => Some(
            tag.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse::<u64>()
                // A tag this server never issued matches nothing.
                .unwrap_or(u64::MAX),
        ),
    };
    let body = body_of(app, req).await?;
    let licenses = licenses_of(&body, &org_id)?;
    app.commit(&Command::InfaSetLicenses {
        tenant_id: target_tenant,
        licenses,
        expected_version: expected,
    })
    .await?;
    Ok(license_response(app, &org))
}

/// The session named by `INFA-SESSION-ID`, if it is live (its idle clock restarts).
fn session(app: &App, state: &InfaState, req: &Request<Incoming>) -> R<Session> {
    let id = req
        .headers()
        .get("INFA-SESSION-ID")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| InfaError::unauthorized("Missing INFA-SESSION-ID header."))?;
    let now = app.now();
    let mut sessions = state.sessions.lock();
    let s = match sessions.get_mut(id) {
        Some(s) if now - s.last_used < SESSION_IDLE_MS => s,
        Some(_) => {
            sessions.remove(id);
            return Err(InfaError::unauthorized("Session expired. Log in again."));
        }
        None => return Err(InfaError::unauthorized("Invalid session ID.")),
    };
    // The user must still exist with the password it logged in with.
    let still = app.engine.infa(s.tenant_id).is_some_and(|o| {
        o.spec
            .read()
            .users
            .iter()
            .any(|u| u.username == s.username && u.password_hash == s.password_hash)
    });
    if !still {
        sessions.remove(id);
        return Err(InfaError::unauthorized(
            "Session ended: the user or its password changed.",
        ));
    }
    s.last_used = now;
    Ok(s.clone())
}

fn parent_org_id(app: &App, org: &InfaOrg) -> Value {
    app.engine
        .tenant(org.tenant_id)
        .and_then(|t| t.spec.read().parent_id)
        .and_then(|p| app.engine.infa(p))
        .map_or(Value::Null, |p| p.spec.read().org_id.clone().into())
}

fn license_response(app: &App, org: &InfaOrg) -> Resp {
    let spec = org.spec.read().clone();
    let version = org.version.load(std::sync::atomic::Ordering::Acquire);
    let mut v = serde_json::to_value(&spec.licenses).unwrap_or_else(|_| json!({}));
    v["id"] = spec.org_id.clone().into();
    v["parentOrg"] = parent_org_id(app, org);
    let mut r = json_value(StatusCode::OK, &v);
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(ETAG, tag);
    }
    r
}

/// The PUT body: the licenses, with the GET answer's `id` and `parentOrg`
/// allowed (a client sends back what it read) but not changing anything.
fn licenses_of(body: &[u8], org_id: &str) -> R<InfaLicenses> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| InfaError::bad(format!("The body is not valid JSON: {e}.")))?;
    let Value::Object(mut m) = v else {
        return Err(InfaError::bad("The body must be a JSON object."));
    };
    if let Some(id) = m.remove("id") {
        if id != Value::String(org_id.to_string()) {
            return Err(InfaError::bad(
                "id does not match the organization in the path.",
            ));
        }
    }
    m.remove("parentOrg");
    let l: InfaLicenses = serde_path_to_error::deserialize(Value::Object(m)).map_err(|e| {
        let path = e.path().to_string();
        InfaError::bad(format!("{path}: {}", e.into_inner()))
    })?;
    crate::engine::infa::validate_licenses(&l)
        .map_err(|e| InfaError::from(CommitError::Engine(e)))?;
    Ok(l)
}

async fn login(
    app: &App,
    state: &InfaState,
    body: &[u8],
    host: &str,
    peer: Option<std::net::IpAddr>,
) -> R<Resp> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| InfaError::bad("The body must be JSON with username and password."))?;
    let (Some(username), Some(password)) = (v["username"].as_str(), v["password"].as_str()) else {
        return Err(InfaError::bad("username and password are required."));
    };
    let denied = || InfaError::unauthorized("Invalid user name or password.");
    let tenant = app.engine.infa_user_tenant(username).ok_or_else(denied)?;
    let org = app.engine.infa(tenant).ok_or_else(denied)?;
    let hash = org
        .spec
        .read()
        .users
        .iter()
        .find(|u| u.username == username)
        .map(|u| u.password_hash.clone())
        .ok_or_else(denied)?;
    let current_hash = hash.clone();
    // argon2 takes tens of milliseconds: on the password workers, with
    // backoff per user and per client address.
    let account = crate::credentials::Who::Account(format!("infa:{username}").into());
    let ok = app
        .passwords
        .verify_account(account, hash, password.to_string(), peer, app.now())
        .await?;
    if !ok {
        return Err(denied());
    }
    let now = app.now();
    let id = crate::util::random_token(32);
    {
        let mut sessions = state.sessions.lock();
        if sessions.len() >= SESSIONS_MAX {
            sessions.retain(|_, s| now - s.last_used < SESSION_IDLE_MS);
        }
        if sessions.len() >= SESSIONS_MAX {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                tenant_id: tenant,
                username: username.to_string(),
                password_hash: current_hash,
                last_used: now,
            },
        );
    }
    let spec = org.spec.read().clone();
    Ok(json_value(
        StatusCode::OK,
        &json!({
            "products": [{"name": "Integration Cloud", "baseApiUrl": format!("http://{host}/saas")}],
            "userInfo": {
                "sessionId": id,
                "id": format!("{}-{}", spec.org_id, username),
                "name": username,
                "parentOrgId": parent_org_id(app, &org),
                "orgId": spec.org_id,
                "orgName": spec.name,
                "groups": {},
                "status": "Active",
            },
        }),
    ))
}

/// Everything this surface parses from a client's bytes, for the fuzz
/// targets (`fuzz/`) and their corpus replay (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzz {
    /// A license document (`PUT .../license/org/{id}`).
    pub fn document(data: &[u8]) {
        let _ = super::licenses_of(data, "org");
    }
}
