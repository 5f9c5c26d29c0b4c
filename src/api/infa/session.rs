//! Logins and sessions: `POST .../v3/login` checks a password (argon2 on the
//! password workers) and opens a session; every other request names a live
//! one in `INFA-SESSION-ID`. Sessions are engine state (the commands
//! `InfaLogin` and `InfaTouch`, see [`crate::engine::infa::InfaSession`]):
//! logged, kept across a restart, and on every node of a cluster. The log
//! holds only a hash of each session id.

use serde_json::Value;

use super::error::{InfaError, R};
use super::wire;
use crate::app::App;
use crate::engine::infa::{SessionRefusal, INFA_SESSION_TOUCH_MS};
use crate::engine::model::Id;
use crate::engine::Command;
use crate::http::Resp;
use hyper::body::Incoming;
use hyper::Request;

pub use crate::engine::infa::{
    INFA_SESSIONS_MAX as SESSIONS_MAX, INFA_SESSION_IDLE_MS as SESSION_IDLE_MS,
};

/// The key a session is stored under: SHA-256 of its id, hex (the id is a
/// bearer secret; the log and snapshots hold only this).
fn session_key(id: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::util::hex(&Sha256::digest(id.as_bytes()))
}

/// How long a request waits for the record of its session's use.
pub const TOUCH_WAIT_MS: u64 = 250;

/// The session a request runs under.
#[derive(Clone, Debug)]
pub(super) struct Session {
    pub(super) tenant_id: Id,
    pub(super) username: String,
}

/// The tenant whose session `id` names (for the emulated rate limits),
/// live or not.
pub fn tenant_of_session(app: &App, id: &str) -> Option<Id> {
    app.engine.infa_session_tenant(&session_key(id))
}

/// The session named by `INFA-SESSION-ID`, if it is live. A request records
/// itself (its idle time starts again) once the session's last record is
/// [`INFA_SESSION_TOUCH_MS`] old.
pub(super) async fn session(app: &App, req: &Request<Incoming>) -> R<Session> {
    let id = req
        .headers()
        .get("INFA-SESSION-ID")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| InfaError::unauthorized("Missing INFA-SESSION-ID header."))?;
    let now = app.now();
    let key = session_key(id);
    let (org, s) = app.engine.infa_session(&key, now).map_err(|r| match r {
        SessionRefusal::Unknown => InfaError::unauthorized("Invalid session ID."),
        SessionRefusal::Expired => InfaError::unauthorized("Session expired. Log in again."),
        SessionRefusal::Ended => {
            InfaError::unauthorized("Session ended: the user or its password changed.")
        }
    })?;
    if now - s.last_used >= INFA_SESSION_TOUCH_MS {
        let touch = Command::InfaTouch {
            tenant_id: org.tenant_id,
            session: key.into(),
            now,
        };
        // The request goes on if the record fails or is slow (no quorum,
        // say: it waits [`TOUCH_WAIT_MS`] at most): the session then ends
        // idle counted from its last record.
        let wait = std::time::Duration::from_millis(TOUCH_WAIT_MS);
        match tokio::time::timeout(wait, app.commit(&touch)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!("informatica session use not recorded: {e:?}"),
            Err(_) => tracing::debug!("informatica session use not recorded in time"),
        }
    }
    crate::app::set_actor(crate::app::Actor::Named(format!("infa:{}", s.username)));
    Ok(Session {
        tenant_id: org.tenant_id,
        username: s.username,
    })
}

pub(super) async fn login(
    app: &App,
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
    let hash = org.password_hash(username).ok_or_else(denied)?;
    // argon2 takes tens of milliseconds: on the password workers, with
    // backoff per user and per client address.
    let account = crate::credentials::Who::Account(format!("infa:{username}").into());
    let ok = app
        .passwords
        .verify_account(account, hash.clone(), password.to_string(), peer, app.now())
        .await?;
    if !ok {
        return Err(denied());
    }
    let id = crate::util::random_token(32);
    let open = Command::InfaLogin {
        tenant_id: tenant,
        session: session_key(&id).into(),
        username: username.into(),
        password_hash: hash.into(),
        now: app.now(),
    };
    match app.commit(&open).await {
        Ok(_) => {}
        // Removed (or renamed) between the check and the session: refused
        // as a wrong password is.
        Err(crate::app::CommitError::Engine(crate::engine::EngineError::Infa(
            crate::engine::InfaRefusal::UserNotFound | crate::engine::InfaRefusal::OrgNotFound,
        ))) => return Err(denied()),
        Err(e) => return Err(e.into()),
    }
    Ok(wire::login_answer(app, &org, &id, username, host))
}
