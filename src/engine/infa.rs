//! Informatica-style organisation licenses: an org (a tenant with an org id)
//! holds custom licenses, assigned editions and custom limits; a parent org's
//! administrator overwrites a sub-organisation's licenses (the tenant
//! hierarchy is the org hierarchy).
//!
//! Beyond the vendor, whose blind overwrite loses concurrent updates, every
//! change of an org's licenses bumps its `version` (the ETag), and an update
//! may name the version it read: a stale one is refused
//! (`EngineError::Infa(InfaRefusal::VersionMismatch)`), checked under the same lock that
//! writes. Custom limits are enforced: each limit definition is a [`Meter`]
//! capped at its value (`-1` unlimited) that a native check-and-consume draws
//! on; licenses and editions past their expiration no longer grant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::meter::{Meter, MeterError, MeterLimits};
use super::model::Id;
use super::time::{parse_instant, Millis};
use super::EngineError;
use crate::engine::InfaRefusal;

/// Entries of each list (licenses, editions, limits) of one org.
pub const INFA_LICENSE_ENTRIES_MAX: usize = 1_000;
/// Users of one org.
pub const INFA_USERS_MAX: usize = 10_000;
/// Length of an id, a name or a username, bytes.
pub const INFA_TEXT_BYTES_MAX: usize = 256;
/// Sessions of one org held at once; past it a login drops the org's
/// expired sessions, then its least recently used one.
pub const INFA_SESSIONS_MAX: usize = 10_000;
/// A session ends after this long without a request.
pub const INFA_SESSION_IDLE_MS: Millis = 30 * super::time::MINUTE_MS;

/// A login's session, as state (logged, replicated, in snapshots): a
/// session opened through one node of a cluster works on every node and
/// survives a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfaSession {
    /// SHA-256 (hex) of the session id: the id is a bearer secret, so the
    /// log and snapshots hold only its hash (made by the surface).
    pub key: String,
    pub username: String,
    /// The user's password hash at login: a changed password (or a removed
    /// user) ends the session.
    pub password_hash: String,
    /// The last request recorded (a request records itself once the last
    /// record is [`INFA_SESSION_TOUCH_MS`] old, so idle ends within that).
    pub last_used: Millis,
}

/// How stale a session's `last_used` may get before a request records a
/// newer one (a command): bounds both the commands per session (one a
/// minute at most) and how early an idle session may end.
pub const INFA_SESSION_TOUCH_MS: Millis = super::time::MINUTE_MS;

/// Why a session does not let a request in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRefusal {
    Unknown,
    Expired,
    /// Its user was removed or its password changed.
    Ended,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InfaLicenseType {
    Trial,
    Subscription,
    Free,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomLicense {
    pub license_def: String,
    /// ISO 8601 instant; None: no expiry.
    #[serde(default)]
    pub expiration_date: Option<String>,
    pub license_type: InfaLicenseType,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignedEdition {
    pub edition: String,
    #[serde(default)]
    pub expiration_date: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomLimit {
    pub limit_definition: String,
    /// Maximum uses; -1: no maximum.
    pub value: i64,
}

/// What the license resource reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InfaLicenses {
    #[serde(default)]
    pub custom_licenses: Vec<CustomLicense>,
    #[serde(default)]
    pub assigned_editions: Vec<AssignedEdition>,
    #[serde(default)]
    pub custom_limits: Vec<CustomLimit>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InfaUser {
    pub username: String,
    /// argon2id PHC string (commands carry the hash, never the password).
    pub password_hash: String,
    /// An administrator of this org (may update its sub-organisations).
    #[serde(default)]
    pub admin: bool,
}

/// An org as an admin provisions it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InfaSpec {
    pub org_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub users: Vec<InfaUser>,
    #[serde(default)]
    pub licenses: InfaLicenses,
}

fn text(field: &'static str, s: &str) -> Result<(), EngineError> {
    if s.is_empty() {
        return Err(EngineError::Invalid(field, "must not be empty"));
    }
    if s.len() > INFA_TEXT_BYTES_MAX || s.contains('/') || s.chars().any(char::is_control) {
        return Err(EngineError::Invalid(
            field,
            "too long, or holds '/' or control characters",
        ));
    }
    Ok(())
}

fn date(field: &'static str, d: &Option<String>) -> Result<(), EngineError> {
    match d {
        Some(s) if parse_instant(s).is_none() => {
            Err(EngineError::Invalid(field, "must be an ISO 8601 date-time"))
        }
        _ => Ok(()),
    }
}

pub fn validate_licenses(l: &InfaLicenses) -> Result<(), EngineError> {
    if l.custom_licenses.len() > INFA_LICENSE_ENTRIES_MAX
        || l.assigned_editions.len() > INFA_LICENSE_ENTRIES_MAX
        || l.custom_limits.len() > INFA_LICENSE_ENTRIES_MAX
    {
        return Err(EngineError::TooMany("license entries"));
    }
    for c in &l.custom_licenses {
        text("customLicenses.licenseDef", &c.license_def)?;
        date("customLicenses.expirationDate", &c.expiration_date)?;
    }
    for e in &l.assigned_editions {
        text("assignedEditions.edition", &e.edition)?;
        date("assignedEditions.expirationDate", &e.expiration_date)?;
    }
    let mut seen = std::collections::HashSet::new();
    for c in &l.custom_limits {
        text("customLimits.limitDefinition", &c.limit_definition)?;
        if c.value < -1 {
            return Err(EngineError::Invalid(
                "customLimits.value",
                "must be -1 (no maximum) or more",
            ));
        }
        if !seen.insert(c.limit_definition.as_str()) {
            return Err(EngineError::Duplicate("limit definition"));
        }
    }
    Ok(())
}

pub fn validate(spec: &InfaSpec) -> Result<(), EngineError> {
    text("orgId", &spec.org_id)?;
    if spec.name.len() > INFA_TEXT_BYTES_MAX {
        return Err(EngineError::Invalid("name", "too long"));
    }
    if spec.users.len() > INFA_USERS_MAX {
        return Err(EngineError::TooMany("users"));
    }
    let mut seen = std::collections::HashSet::new();
    for u in &spec.users {
        text("users.username", &u.username)?;
        if !seen.insert(u.username.as_str()) {
            return Err(EngineError::Duplicate("username"));
        }
    }
    validate_licenses(&spec.licenses)
}

/// What grants at an instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Granted, until this instant (None: no expiry).
    Until(Option<String>),
    /// Known but past its expiration.
    Expired(String),
    /// Not among the org's licenses or editions.
    Unknown,
}

#[derive(Debug)]
pub struct InfaOrg {
    pub tenant_id: Id,
    /// Replaced whole by an admin put or a licenses update.
    pub spec: RwLock<Arc<InfaSpec>>,
    /// Bumped by every change of the licenses: the ETag.
    pub version: AtomicU64,
    /// limit definition -> its meter. Behind a mutex so that "compare the
    /// version, then write spec and meters" is one step.
    pub limits: Mutex<HashMap<String, Arc<Meter>>>,
    /// session key -> session. One mutex: a login inserts (and may evict),
    /// a request reads one, a touch writes one.
    sessions: Mutex<HashMap<String, InfaSession>>,
}

fn limit_meter_limits(value: i64) -> MeterLimits {
    MeterLimits {
        max: value.max(0),
        unlimited: value == -1,
        ..MeterLimits::default()
    }
}

impl InfaOrg {
    pub fn new(tenant_id: Id, spec: Arc<InfaSpec>, version: u64) -> InfaOrg {
        let org = InfaOrg {
            tenant_id,
            spec: RwLock::new(spec.clone()),
            version: AtomicU64::new(version),
            limits: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        };
        let mut limits = org.limits.lock();
        Self::sync_limits(&mut limits, &spec.licenses);
        drop(limits);
        org
    }

    /// Meters follow the limits: new ones start at zero, changed caps keep
    /// their use, removed definitions are dropped.
    fn sync_limits(limits: &mut HashMap<String, Arc<Meter>>, l: &InfaLicenses) {
        limits.retain(|k, _| l.custom_limits.iter().any(|c| &c.limit_definition == k));
        for c in &l.custom_limits {
            let want = limit_meter_limits(c.value);
            match limits.get(&c.limit_definition) {
                Some(m) => m.set_limits(want, 0),
                None => {
                    limits.insert(c.limit_definition.clone(), Arc::new(Meter::new(want, 0, 0)));
                }
            }
        }
    }

    /// Replaces the whole spec (admin), bumping the version.
    pub fn set_spec(&self, spec: Arc<InfaSpec>) {
        let mut limits = self.limits.lock();
        Self::sync_limits(&mut limits, &spec.licenses);
        *self.spec.write() = spec;
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Overwrites the licenses if `expected` (when given) is the current
    /// version; returns the new version.
    pub fn set_licenses(
        &self,
        l: &InfaLicenses,
        expected: Option<u64>,
    ) -> Result<u64, EngineError> {
        validate_licenses(l)?;
        let mut limits = self.limits.lock();
        let cur = self.version.load(Ordering::Acquire);
        if expected.is_some_and(|e| e != cur) {
            return Err(EngineError::Infa(InfaRefusal::VersionMismatch));
        }
        Self::sync_limits(&mut limits, l);
        let mut spec = (**self.spec.read()).clone();
        spec.licenses = l.clone();
        *self.spec.write() = Arc::new(spec);
        self.version.store(cur + 1, Ordering::Release);
        Ok(cur + 1)
    }

    /// Draws `amount` on a custom limit; returns the total used.
    pub fn consume(&self, limit: &str, amount: i64) -> Result<i64, EngineError> {
        if amount <= 0 {
            return Err(EngineError::Invalid("amount", "must be positive"));
        }
        let m = self
            .limits
            .lock()
            .get(limit)
            .cloned()
            .ok_or(EngineError::Infa(InfaRefusal::LimitNotFound))?;
        m.add(amount, 0).map(|a| a.total).map_err(|e| match e {
            MeterError::LimitReached | MeterError::Overflow => {
                EngineError::Infa(InfaRefusal::LimitReached)
            }
            _ => EngineError::Invalid("amount", "must be positive"),
        })
    }

    /// (value, used) of each limit, in the spec's order.
    pub fn limit_use(&self) -> Vec<(String, i64, i64)> {
        let spec = self.spec.read().clone();
        let limits = self.limits.lock();
        spec.licenses
            .custom_limits
            .iter()
            .map(|c| {
                let used = limits.get(&c.limit_definition).map_or(0, |m| m.used_raw());
                (c.limit_definition.clone(), c.value, used)
            })
            .collect()
    }

    fn grant(expiration: &Option<String>, now: Millis) -> Grant {
        match expiration {
            Some(d) if parse_instant(d).is_some_and(|t| now >= t) => Grant::Expired(d.clone()),
            other => Grant::Until(other.clone()),
        }
    }

    /// Whether a custom license grants at `now`.
    pub fn license_grant(&self, def: &str, now: Millis) -> Grant {
        let spec = self.spec.read();
        match spec
            .licenses
            .custom_licenses
            .iter()
            .find(|c| c.license_def == def)
        {
            Some(c) if c.license_type == InfaLicenseType::None => {
                Grant::Expired(c.expiration_date.clone().unwrap_or_default())
            }
            Some(c) => Self::grant(&c.expiration_date, now),
            None => Grant::Unknown,
        }
    }

    /// Whether an assigned edition grants at `now`.
    pub fn edition_grant(&self, edition: &str, now: Millis) -> Grant {
        let spec = self.spec.read();
        match spec
            .licenses
            .assigned_editions
            .iter()
            .find(|e| e.edition == edition)
        {
            Some(e) => Self::grant(&e.expiration_date, now),
            None => Grant::Unknown,
        }
    }

    /// The password hash of the org's user `username`.
    pub fn password_hash(&self, username: &str) -> Option<String> {
        self.spec
            .read()
            .users
            .iter()
            .find(|u| u.username == username)
            .map(|u| u.password_hash.clone())
    }

    /// Opens a session for `username` at `now`; returns the keys of the
    /// sessions it evicted (the org was full).
    /// `checked` is the hash the password was verified against: a user
    /// removed or given another password since then opens nothing.
    pub fn open_session(
        &self,
        key: &str,
        username: &str,
        checked: &str,
        now: Millis,
    ) -> Result<Vec<String>, EngineError> {
        let password_hash = self
            .password_hash(username)
            .filter(|h| h == checked)
            .ok_or(EngineError::Infa(InfaRefusal::UserNotFound))?;
        let mut sessions = self.sessions.lock();
        let mut evicted = Vec::new();
        if sessions.len() >= INFA_SESSIONS_MAX && !sessions.contains_key(key) {
            sessions.retain(|k, s| {
                let live = now - s.last_used < INFA_SESSION_IDLE_MS;
                if !live {
                    evicted.push(k.clone());
                }
                live
            });
        }
        if sessions.len() >= INFA_SESSIONS_MAX && !sessions.contains_key(key) {
            // The same on every node: ties broken by key.
            if let Some(oldest) = sessions
                .values()
                .min_by(|a, b| (a.last_used, &a.key).cmp(&(b.last_used, &b.key)))
                .map(|s| s.key.clone())
            {
                sessions.remove(&oldest);
                evicted.push(oldest);
            }
        }
        sessions.insert(
            key.to_string(),
            InfaSession {
                key: key.to_string(),
                username: username.to_string(),
                password_hash,
                last_used: now,
            },
        );
        Ok(evicted)
    }

    /// Records a request of the session at `now`.
    pub fn touch_session(&self, key: &str, now: Millis) -> Result<(), EngineError> {
        let mut sessions = self.sessions.lock();
        let s = sessions
            .get_mut(key)
            .ok_or(EngineError::Infa(InfaRefusal::SessionNotFound))?;
        s.last_used = s.last_used.max(now);
        Ok(())
    }

    /// The session under `key`, if it lets a request in at `now` (reads only:
    /// an expired session stays until a login evicts it).
    pub fn session(&self, key: &str, now: Millis) -> Result<InfaSession, SessionRefusal> {
        let s = self
            .sessions
            .lock()
            .get(key)
            .cloned()
            .ok_or(SessionRefusal::Unknown)?;
        if now - s.last_used >= INFA_SESSION_IDLE_MS {
            return Err(SessionRefusal::Expired);
        }
        let still = self
            .spec
            .read()
            .users
            .iter()
            .any(|u| u.username == s.username && u.password_hash == s.password_hash);
        if !still {
            return Err(SessionRefusal::Ended);
        }
        Ok(s)
    }

    /// The keys of this org's sessions.
    pub fn session_keys(&self) -> Vec<String> {
        self.sessions.lock().keys().cloned().collect()
    }

    pub fn image(&self) -> InfaImage {
        let limits = self.limits.lock();
        // Sorted: the image (and so a snapshot, and the state's digest) is
        // the same whatever order the map iterates in.
        let mut used: Vec<(String, i64)> = limits
            .iter()
            .map(|(k, m)| (k.clone(), m.used_raw()))
            .collect();
        used.sort();
        let mut sessions: Vec<InfaSession> = self.sessions.lock().values().cloned().collect();
        sessions.sort_by(|a, b| a.key.cmp(&b.key));
        InfaImage {
            tenant_id: self.tenant_id,
            spec: (**self.spec.read()).clone(),
            version: self.version.load(Ordering::Acquire),
            used,
            sessions,
        }
    }

    pub fn from_image(img: InfaImage) -> Result<InfaOrg, EngineError> {
        validate(&img.spec)?;
        let org = InfaOrg::new(img.tenant_id, Arc::new(img.spec), img.version);
        let limits = org.limits.lock();
        for (k, used) in img.used {
            if let Some(m) = limits.get(&k) {
                m.set_used(used);
            }
        }
        drop(limits);
        let mut sessions = org.sessions.lock();
        for s in img.sessions.into_iter().take(INFA_SESSIONS_MAX) {
            sessions.insert(s.key.clone(), s);
        }
        drop(sessions);
        Ok(org)
    }
}

/// An org's state as plain values (snapshots).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfaImage {
    pub tenant_id: Id,
    pub spec: InfaSpec,
    pub version: u64,
    /// limit definition -> uses so far.
    pub used: Vec<(String, i64)>,
    /// Logins' sessions, by key (absent in snapshots written before they
    /// were state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<InfaSession>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> InfaOrg {
        InfaOrg::new(
            1,
            Arc::new(InfaSpec {
                org_id: "o1".into(),
                name: String::new(),
                users: vec![],
                licenses: InfaLicenses {
                    custom_licenses: vec![CustomLicense {
                        license_def: "L".into(),
                        expiration_date: Some("2026-12-01T00:00:00Z".into()),
                        license_type: InfaLicenseType::Subscription,
                    }],
                    assigned_editions: vec![],
                    custom_limits: vec![
                        CustomLimit {
                            limit_definition: "rows".into(),
                            value: 10,
                        },
                        CustomLimit {
                            limit_definition: "any".into(),
                            value: -1,
                        },
                    ],
                },
            }),
            1,
        )
    }

    /// A full org's login drops its expired sessions first, then the least
    /// recently used (ties by key): the same choice on every node.
    #[test]
    fn a_full_org_evicts_expired_then_least_recently_used_sessions() {
        let o = org();
        let mut spec = (**o.spec.read()).clone();
        spec.users.push(InfaUser {
            username: "u".into(),
            password_hash: "h".into(),
            admin: false,
        });
        o.set_spec(Arc::new(spec));
        for i in 0..INFA_SESSIONS_MAX {
            let at = i64::try_from(i).expect("small");
            assert!(o
                .open_session(&format!("k{i:05}"), "u", "h", at)
                .expect("open")
                .is_empty());
        }
        // Nothing expired yet: the least recently used goes.
        let gone = o.open_session("new-1", "u", "h", 1_000_000).expect("open");
        assert_eq!(gone, ["k00000"]);
        // Long after: every old one expired, all go at the next login.
        let later = 1_000_000 + INFA_SESSION_IDLE_MS;
        o.touch_session("new-1", later).expect("touch");
        let gone = o.open_session("new-2", "u", "h", later).expect("open");
        assert_eq!(gone.len(), INFA_SESSIONS_MAX - 1);
        assert!(o.session("new-1", later).is_ok());
        assert_eq!(o.session("k00001", later), Err(SessionRefusal::Unknown));
        // An unknown user opens nothing.
        assert!(o.open_session("x", "nobody", "h", later).is_err());
        // A password changed since the check opens nothing.
        assert!(o.open_session("y", "u", "old-hash", later).is_err());
    }

    #[test]
    fn limits_cap_and_unlimited() {
        let o = org();
        assert_eq!(o.consume("rows", 10), Ok(10));
        assert_eq!(
            o.consume("rows", 1),
            Err(EngineError::Infa(InfaRefusal::LimitReached))
        );
        assert_eq!(o.consume("any", 1_000_000), Ok(1_000_000));
        assert_eq!(
            o.consume("nope", 1),
            Err(EngineError::Infa(InfaRefusal::LimitNotFound))
        );
    }

    #[test]
    fn stale_version_is_refused_and_use_survives_a_cap_change() {
        let o = org();
        o.consume("rows", 4).unwrap();
        let mut l = o.spec.read().licenses.clone();
        l.custom_limits[0].value = 5;
        assert_eq!(
            o.set_licenses(&l, Some(7)),
            Err(EngineError::Infa(InfaRefusal::VersionMismatch))
        );
        assert_eq!(o.set_licenses(&l, Some(1)), Ok(2));
        assert_eq!(o.consume("rows", 1), Ok(5));
        assert_eq!(
            o.consume("rows", 1),
            Err(EngineError::Infa(InfaRefusal::LimitReached))
        );
    }

    #[test]
    fn expired_licenses_do_not_grant() {
        let o = org();
        let before = parse_instant("2026-11-30T23:00:00Z").unwrap();
        let after = parse_instant("2026-12-01T00:00:00Z").unwrap();
        assert!(matches!(
            o.license_grant("L", before),
            Grant::Until(Some(_))
        ));
        assert!(matches!(o.license_grant("L", after), Grant::Expired(_)));
        assert_eq!(o.license_grant("X", before), Grant::Unknown);
    }
}
