//! Logins and sessions: `POST .../v3/login` checks a password (argon2 on the
//! password workers) and opens a session; every other request names a live
//! one in `INFA-SESSION-ID`. Sessions live in memory only.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde_json::Value;

use super::error::{InfaError, R};
use super::wire;
use crate::app::App;
use crate::engine::model::Id;
use crate::engine::time::{Millis, MINUTE_MS};
use crate::http::Resp;
use hyper::body::Incoming;
use hyper::Request;

/// A session ends after this long without a request.
pub const SESSION_IDLE_MS: Millis = 30 * MINUTE_MS;
/// Sessions held at once; past it expired ones are dropped, then the oldest.
pub const SESSIONS_MAX: usize = 100_000;

#[derive(Clone, Debug)]
pub(super) struct Session {
    pub(super) tenant_id: Id,
    pub(super) username: String,
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

impl InfaState {
    /// The tenant of a session id (for the emulated rate limits), without
    /// touching the session.
    pub fn tenant_of_session(&self, id: &str) -> Option<Id> {
        self.sessions.lock().get(id).map(|s| s.tenant_id)
    }
}

/// The session named by `INFA-SESSION-ID`, if it is live (its idle clock restarts).
pub(super) fn session(app: &App, state: &InfaState, req: &Request<Incoming>) -> R<Session> {
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
    crate::app::set_actor(crate::app::Actor::Named(format!("infa:{}", s.username)));
    Ok(s.clone())
}

pub(super) async fn login(
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
    Ok(wire::login_answer(app, &org, &id, username, host))
}
