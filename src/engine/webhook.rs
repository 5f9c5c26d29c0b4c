//! Webhooks: tenants' subscriptions and the outbox of their events.
//!
//! An event is made while the change that causes it is applied, from that
//! change's ledger entries (or, for time and refusals, by a command of its
//! own: [`Command::SweepNotices`], [`Command::FloatingDenied`]), so it is
//! part of the logged command: a replay makes the same events, with the same
//! ids, and a change that was not made makes none. Delivery state changes
//! by commands too ([`Command::WebhookAttempted`], [`Command::WebhookRetry`]):
//! a restart resumes what was not acknowledged by a receiver.
//!
//! Everything here sits behind one mutex, taken by every change while any
//! tenant subscribes (the changes are serialised by the log's commit lock
//! anyway) and by the dispatcher's short reads (pending deliveries are
//! indexed by due time: it looks only at what is due); while no tenant
//! subscribes, [`Hooks::active`] lets every change skip it with one atomic
//! load.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::ledger::{EntryKind, LedgerEntry};
use super::model::Id;
use super::time::{format_instant, Millis, DAY_MS};
use super::{Command, Engine, EngineError, Outcome, R};

/// Subscriptions a tenant may hold.
pub const WEBHOOKS_PER_TENANT_MAX: usize = 32;
/// Length of a subscription's URL, bytes.
pub const WEBHOOK_URL_BYTES_MAX: usize = 2_048;
/// Length of a subscription's description, bytes.
pub const WEBHOOK_DESCRIPTION_BYTES_MAX: usize = 1_024;
/// Threshold percentages one subscription may ask for.
pub const WEBHOOK_THRESHOLDS_MAX: usize = 8;
/// Highest threshold percentage (meters may run past their cap by overage).
pub const WEBHOOK_THRESHOLD_PCT_MAX: u16 = 1_000;
/// Days before a license's end that `license.expiring` may be asked for.
pub const WEBHOOK_EXPIRING_DAYS_MAX: u32 = 365;
/// Events a tenant's outbox keeps (undelivered ones, and delivered ones for
/// [`WEBHOOK_EVENT_RETENTION_MS`]). Past it the oldest event goes: if it was
/// still undelivered its deliveries are marked dropped and counted.
pub const WEBHOOK_EVENTS_PER_TENANT_MAX: usize = 10_000;
/// Events the outbox keeps, every tenant together: past it a tenant's
/// oldest event goes to make room for its new one, as past its own limit.
/// (It bounds the outbox's memory and its snapshot frame: at most 32
/// deliveries an event, about 100 bytes each, and 100,000 attempts keep the
/// frame well below the snapshot's 256 MiB.)
pub const WEBHOOK_EVENTS_MAX: usize = 20_000;
/// Attempts remembered, every subscription together (the oldest go first).
pub const WEBHOOK_ATTEMPTS_MAX: usize = 100_000;
/// How long an event stays retained (for resends) once delivered or failed, ms.
pub const WEBHOOK_EVENT_RETENTION_MS: Millis = 7 * DAY_MS;
/// Attempts remembered per subscription (its deliveries list), newest kept.
pub const WEBHOOK_ATTEMPTS_KEPT_MAX: usize = 1_000;
/// Length of a receiver's error text kept with an attempt, bytes.
pub const WEBHOOK_ERROR_BYTES_MAX: usize = 256;
/// A secret's key, bytes (Standard Webhooks: 24 to 64).
pub const WEBHOOK_SECRET_KEY_BYTES_MIN: usize = 24;
pub const WEBHOOK_SECRET_KEY_BYTES_MAX: usize = 64;
/// Longest overlap of a rotated secret with its successor, ms.
pub const WEBHOOK_SECRET_OVERLAP_MS_MAX: Millis = 7 * DAY_MS;
/// At most one `floating.denied` event per pool per this long, ms: the
/// refusals between are not reported (each would be a logged change).
pub const FLOATING_DENIED_INTERVAL_MS: Millis = 60_000;

/// The kinds of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "meter.threshold")]
    MeterThreshold,
    #[serde(rename = "seats.exhausted")]
    SeatsExhausted,
    #[serde(rename = "seats.available")]
    SeatsAvailable,
    #[serde(rename = "floating.denied")]
    FloatingDenied,
    #[serde(rename = "license.expiring")]
    LicenseExpiring,
    #[serde(rename = "license.expired")]
    LicenseExpired,
    #[serde(rename = "reservation.expired")]
    ReservationExpired,
    #[serde(rename = "qlik.allotment.exhausted")]
    QlikAllotmentExhausted,
    #[serde(rename = "yext.assignment.expired")]
    YextAssignmentExpired,
    #[serde(rename = "license.changed")]
    LicenseChanged,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::MeterThreshold,
        EventType::SeatsExhausted,
        EventType::SeatsAvailable,
        EventType::FloatingDenied,
        EventType::LicenseExpiring,
        EventType::LicenseExpired,
        EventType::ReservationExpired,
        EventType::QlikAllotmentExhausted,
        EventType::YextAssignmentExpired,
        EventType::LicenseChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::MeterThreshold => "meter.threshold",
            EventType::SeatsExhausted => "seats.exhausted",
            EventType::SeatsAvailable => "seats.available",
            EventType::FloatingDenied => "floating.denied",
            EventType::LicenseExpiring => "license.expiring",
            EventType::LicenseExpired => "license.expired",
            EventType::ReservationExpired => "reservation.expired",
            EventType::QlikAllotmentExhausted => "qlik.allotment.exhausted",
            EventType::YextAssignmentExpired => "yext.assignment.expired",
            EventType::LicenseChanged => "license.changed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

fn default_thresholds() -> Vec<u16> {
    vec![80, 100]
}

fn default_expiring_days() -> u32 {
    7
}

fn yes() -> bool {
    true
}

/// What a subscription asks for (written by a tenant, an admin or a catalog).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://` or `https://`.
    pub url: String,
    pub events: Vec<EventType>,
    /// Only events of this license (and, with `feature_id`, of this feature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_id: Option<Id>,
    /// Percentages of a meter's cap that `meter.threshold` reports.
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<u16>,
    /// Days before a license's end that `license.expiring` reports.
    #[serde(default = "default_expiring_days")]
    pub expiring_days: u32,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// A signing secret; `expires_at` is `Millis::MAX` for the current one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    pub secret: String,
    pub expires_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: Id,
    pub tenant_id: Id,
    pub spec: WebhookSpec,
    /// The current secret last; rotated ones before it until they expire.
    pub secrets: Vec<Secret>,
    pub created_at: Millis,
    /// Why the server disabled it (a receiver answered 410 Gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl Subscription {
    /// The secrets valid at `now`, current first.
    pub fn secrets_at(&self, now: Millis) -> Vec<String> {
        self.secrets
            .iter()
            .rev()
            .filter(|s| s.expires_at > now)
            .map(|s| s.secret.clone())
            .collect()
    }

    fn wants(&self, e: &Event) -> bool {
        self.spec.enabled
            && self.spec.events.contains(&e.kind)
            && self.spec.license_id.is_none_or(|l| e.license_id == Some(l))
            && self.spec.feature_id.is_none_or(|f| e.feature_id == Some(f))
            && e.threshold
                .is_none_or(|t| self.spec.thresholds.contains(&t))
            && e.horizon.is_none_or(|(left, reported)| {
                self.spec.expiring_days >= left && self.spec.expiring_days < reported
            })
    }
}

/// What a license's end makes ([`Engine::sweep_notices`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notice {
    Expired,
    /// `left` days left (rounded up); `reported`: the nearest horizon
    /// already reported for this end (`u32::MAX`: none).
    Expiring {
        left: u32,
        reported: u32,
    },
}

/// One event of the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The outbox's order (one counter for every tenant).
    pub seq: u64,
    pub tenant_id: Id,
    pub kind: EventType,
    pub at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_id: Option<Id>,
    /// For `meter.threshold`: the percentage crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u16>,
    /// For `license.expiring`: (days left rounded up, the nearest horizon
    /// reported before): it goes to the subscriptions whose
    /// `expiring_days` is at least the first and below the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<(u32, u32)>,
    pub data: Value,
}

impl Event {
    /// An event about to be made (the outbox numbers it), of no threshold.
    fn new(
        tenant_id: Id,
        kind: EventType,
        at: Millis,
        license_id: Option<Id>,
        feature_id: Option<Id>,
        data: Value,
    ) -> Event {
        Event {
            seq: 0,
            tenant_id,
            kind,
            at,
            license_id,
            feature_id,
            threshold: None,
            horizon: None,
            data,
        }
    }

    /// The id receivers deduplicate by (`webhook-id`): the same on every
    /// attempt and every replay.
    pub fn id(&self) -> String {
        event_id(self.seq)
    }

    /// The body delivered (Standard Webhooks' payload shape).
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": self.id(),
            "type": self.kind.as_str(),
            "timestamp": format_instant(self.at),
            "data": self.data,
        }))
        .unwrap_or_default()
    }
}

pub fn event_id(seq: u64) -> String {
    format!("evt_{seq:016x}")
}

/// An event's seq from its id.
pub fn parse_event_id(id: &str) -> Option<u64> {
    u64::from_str_radix(id.strip_prefix("evt_")?, 16).ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
    /// The tenant's outbox was full: the event went before it was delivered.
    Dropped,
}

/// One event's delivery to one subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (while pending).
    pub next_at: Millis,
    /// When this delivery began (the event, or a resend): attempts stop
    /// a day after it.
    pub since: Millis,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptResult {
    /// A 2xx answer.
    Delivered,
    /// Another answer or none; tried again at `next_at`.
    Retrying,
    /// Another answer or none, and no time left: given up.
    Failed,
    /// 410 Gone: the subscription is disabled.
    Gone,
    /// The outbox was full (not an attempt: the drop, listed with them).
    Dropped,
}

/// One attempt, as the deliveries list shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub event: u64,
    pub kind: EventType,
    /// 1 for the first attempt (0 for a drop).
    pub attempt: u32,
    pub at: Millis,
    /// How it ended (its `next_at` only while retrying).
    #[serde(flatten)]
    pub report: AttemptReport,
}

/// What the dispatcher needs to make one attempt.
#[derive(Clone, Debug)]
pub struct Due {
    pub tenant_id: Id,
    pub subscription_id: Id,
    pub url: String,
    pub secrets: Vec<String>,
    pub event: u64,
    pub event_id: String,
    pub body: Vec<u8>,
    pub attempts: u32,
    pub since: Millis,
}

/// The outbox and its subscriptions, as a snapshot stores them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookImage {
    pub subscriptions: Vec<Subscription>,
    pub events: Vec<Event>,
    pub deliveries: Vec<(u64, Id, Delivery)>,
    pub attempts: Vec<(Id, Vec<Attempt>)>,
    /// (license, feature, highest percentage of the cap reached this period).
    pub peaks: Vec<(Id, Option<Id>, u16)>,
    /// (license, its end when reported, bit 0 expiring and bit 1 expired reported).
    pub notices: Vec<(Id, Millis, u8)>,
    /// (license, the nearest expiring horizon reported, days).
    #[serde(default)]
    pub horizons: Vec<(Id, u32)>,
    /// (license, feature, last `floating.denied` event, refusals since).
    pub denied: Vec<(Id, Option<Id>, Millis, u64)>,
    pub next_event: u64,
    pub dropped: Vec<(Id, u64)>,
}

#[derive(Debug, Default)]
struct Inner {
    subs: BTreeMap<Id, Subscription>,
    events: BTreeMap<u64, Event>,
    /// Each tenant's retained events, oldest first.
    by_tenant: HashMap<Id, VecDeque<u64>>,
    deliveries: BTreeMap<(u64, Id), Delivery>,
    /// The keys of `deliveries` still pending.
    pending: std::collections::BTreeSet<(u64, Id)>,
    /// The pending deliveries by when they are due: what the dispatcher
    /// scans (only those due, not every pending one).
    due: std::collections::BTreeSet<(Millis, u64, Id)>,
    /// Pending deliveries per subscription.
    pending_by_sub: HashMap<Id, u64>,
    /// Each tenant's subscriptions (ids), so that a change looks at its
    /// tenant's only.
    tenant_index: HashMap<Id, Vec<Id>>,
    attempts: HashMap<Id, VecDeque<Attempt>>,
    /// Attempts kept, all subscriptions, and the subscription of each in
    /// the order they were recorded (what the global bound drops first).
    attempts_total: usize,
    attempt_order: VecDeque<Id>,
    peaks: HashMap<(Id, Option<Id>), u16>,
    notices: HashMap<Id, (Millis, u8)>,
    /// license -> the nearest `license.expiring` horizon reported (days)
    /// for its end in `notices`.
    horizons: HashMap<Id, u32>,
    denied: HashMap<(Id, Option<Id>), (Millis, u64)>,
    next_event: u64,
    dropped: HashMap<Id, u64>,
}

/// The engine's webhook state (see the module's docs).
#[derive(Debug, Default)]
pub struct Hooks {
    /// Subscriptions in the engine: 0 lets every change skip the mutex.
    active: AtomicUsize,
    /// The next event's seq (mirrors `Inner::next_event` for lock-free reads).
    next_event: AtomicU64,
    inner: Mutex<Inner>,
}

impl Hooks {
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// Seq of the next event to be made: every event made so far is below it.
    pub fn next_event(&self) -> u64 {
        self.next_event.load(Ordering::Acquire)
    }

    fn sync_counts(&self, inner: &Inner) {
        self.active.store(inner.subs.len(), Ordering::Release);
        self.next_event.store(inner.next_event, Ordering::Release);
    }
}

impl Inner {
    fn tenant_subs(&self, tenant: Id) -> impl Iterator<Item = &Subscription> {
        self.tenant_index
            .get(&tenant)
            .into_iter()
            .flatten()
            .filter_map(|id| self.subs.get(id))
    }

    fn insert_sub(&mut self, s: Subscription) {
        let ids = self.tenant_index.entry(s.tenant_id).or_default();
        if !ids.contains(&s.id) {
            ids.push(s.id);
        }
        self.subs.insert(s.id, s);
    }

    fn remove_sub(&mut self, id: Id) {
        if let Some(s) = self.subs.remove(&id) {
            if let Some(ids) = self.tenant_index.get_mut(&s.tenant_id) {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    self.tenant_index.remove(&s.tenant_id);
                }
            }
        }
        if let Some(l) = self.attempts.remove(&id) {
            self.attempts_total -= l.len();
        }
        let keys: Vec<(u64, Id)> = self
            .deliveries
            .keys()
            .filter(|(_, s)| *s == id)
            .copied()
            .collect();
        for k in keys {
            self.unpend(k);
            self.deliveries.remove(&k);
        }
    }

    /// Takes a delivery out of the pending indexes (if it is there).
    fn unpend(&mut self, key: (u64, Id)) {
        if !self.pending.remove(&key) {
            return;
        }
        if let Some(d) = self.deliveries.get(&key) {
            self.due.remove(&(d.next_at, key.0, key.1));
        }
        if let Some(n) = self.pending_by_sub.get_mut(&key.1) {
            *n -= 1;
            if *n == 0 {
                self.pending_by_sub.remove(&key.1);
            }
        }
    }

    /// Settles every pending delivery of `sub` as failed (a subscription
    /// disabled: its events are not kept for it meanwhile).
    fn fail_pending_of(&mut self, sub: Id) {
        if !self.pending_by_sub.contains_key(&sub) {
            return;
        }
        let keys: Vec<(u64, Id)> = self
            .pending
            .iter()
            .filter(|(_, s)| *s == sub)
            .copied()
            .collect();
        for k in keys {
            if let Some(mut d) = self.deliveries.get(&k).cloned() {
                d.state = DeliveryState::Failed;
                self.set_delivery(k, d);
            }
        }
    }

    /// Puts a delivery in, keeping the pending indexes in step (every
    /// change of a delivery goes through here).
    fn set_delivery(&mut self, key: (u64, Id), d: Delivery) {
        self.unpend(key);
        if d.state == DeliveryState::Pending {
            self.pending.insert(key);
            self.due.insert((d.next_at, key.0, key.1));
            *self.pending_by_sub.entry(key.1).or_default() += 1;
        }
        self.deliveries.insert(key, d);
    }

    fn wanted(&self, tenant: Id, kind: EventType) -> bool {
        self.tenant_subs(tenant)
            .any(|s| s.spec.enabled && s.spec.events.contains(&kind))
    }

    /// Puts an event in the outbox with a delivery to each subscription that
    /// wants it (none: the event is not kept).
    fn emit(&mut self, mut event: Event) {
        event.seq = self.next_event;
        let (tenant, at) = (event.tenant_id, event.at);
        let subs: Vec<Id> = self
            .tenant_subs(tenant)
            .filter(|s| s.wants(&event))
            .map(|s| s.id)
            .collect();
        if subs.is_empty() {
            return;
        }
        self.next_event += 1;
        if let Value::Object(m) = &mut event.data {
            m.insert("tenant_id".into(), json!(tenant.to_string()));
        }
        self.make_room(tenant, at);
        for sub in subs {
            self.set_delivery(
                (event.seq, sub),
                Delivery {
                    state: DeliveryState::Pending,
                    attempts: 0,
                    next_at: at,
                    since: at,
                },
            );
        }
        self.by_tenant
            .entry(tenant)
            .or_default()
            .push_back(event.seq);
        self.events.insert(event.seq, event);
    }

    /// Forgets the tenant's settled events past their retention, then, if
    /// the outbox is still full, its oldest event (dropping what of it was
    /// undelivered).
    fn make_room(&mut self, tenant: Id, now: Millis) {
        let Some(mut q) = self.by_tenant.remove(&tenant) else {
            return;
        };
        while let Some(&oldest) = q.front() {
            let settled = self.settled(oldest);
            let old = self
                .events
                .get(&oldest)
                .is_none_or(|e| e.at + WEBHOOK_EVENT_RETENTION_MS <= now);
            let full =
                q.len() >= WEBHOOK_EVENTS_PER_TENANT_MAX || self.events.len() >= WEBHOOK_EVENTS_MAX;
            if !(full || settled && old) {
                break;
            }
            q.pop_front();
            self.forget(oldest, tenant, now);
        }
        self.by_tenant.insert(tenant, q);
    }

    fn settled(&self, event: u64) -> bool {
        self.deliveries
            .range((event, 0)..=(event, Id::MAX))
            .all(|(_, d)| d.state != DeliveryState::Pending)
    }

    fn forget(&mut self, event: u64, tenant: Id, now: Millis) {
        let kind = self.events.remove(&event).map(|e| e.kind);
        let keys: Vec<(u64, Id)> = self
            .deliveries
            .range((event, 0)..=(event, Id::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.unpend(k);
            let Some(d) = self.deliveries.remove(&k) else {
                continue;
            };
            if d.state == DeliveryState::Pending {
                *self.dropped.entry(tenant).or_default() += 1;
                if let Some(kind) = kind {
                    self.record(
                        k.1,
                        Attempt {
                            event,
                            kind,
                            attempt: 0,
                            at: now,
                            report: AttemptReport {
                                result: AttemptResult::Dropped,
                                status_code: None,
                                error: Some("the tenant's outbox was full".into()),
                                next_at: None,
                                duration_ms: 0,
                            },
                        },
                    );
                }
            }
        }
    }

    fn record(&mut self, sub: Id, a: Attempt) {
        let list = self.attempts.entry(sub).or_default();
        if list.len() >= WEBHOOK_ATTEMPTS_KEPT_MAX {
            list.pop_front();
        } else {
            self.attempts_total += 1;
        }
        list.push_back(a);
        self.attempt_order.push_back(sub);
        // Past the global bound the oldest attempt of all goes: subscriptions'
        // lists are oldest first, so it heads the list of the first recorded.
        while self.attempts_total > WEBHOOK_ATTEMPTS_MAX {
            let Some(oldest) = self.attempt_order.pop_front() else {
                break;
            };
            if let Some(l) = self.attempts.get_mut(&oldest) {
                if l.pop_front().is_some() {
                    self.attempts_total -= 1;
                }
            }
        }
        if self.attempt_order.len() > 2 * WEBHOOK_ATTEMPTS_MAX {
            // Entries of attempts already gone by the per-subscription bound.
            let live: std::collections::HashMap<Id, usize> =
                self.attempts.iter().map(|(k, v)| (*k, v.len())).collect();
            let mut seen: std::collections::HashMap<Id, usize> = Default::default();
            let mut kept = VecDeque::new();
            for s in self.attempt_order.iter().rev() {
                let n = seen.entry(*s).or_default();
                if *n < live.get(s).copied().unwrap_or(0) {
                    *n += 1;
                    kept.push_front(*s);
                }
            }
            self.attempt_order = kept;
        }
    }
}

/// The result of an attempt, as the dispatcher logs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub result: AttemptResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<Millis>,
    #[serde(default)]
    pub duration_ms: u64,
}

/// Checks a spec a client wrote.
pub fn validate_spec(s: &WebhookSpec) -> R<()> {
    let url = s.url.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or(EngineError::Invalid(
            "url",
            "must be an http:// or https:// URL",
        ))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains('@') || url.len() != s.url.len() {
        return Err(EngineError::Invalid(
            "url",
            "must name a host, without user information or spaces",
        ));
    }
    if s.url.len() > WEBHOOK_URL_BYTES_MAX || s.url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(EngineError::Invalid(
            "url",
            "must be at most 2048 bytes of printable characters",
        ));
    }
    if s.events.is_empty() {
        return Err(EngineError::Invalid(
            "events",
            "must name at least one event type",
        ));
    }
    if s.thresholds.is_empty()
        || s.thresholds.len() > WEBHOOK_THRESHOLDS_MAX
        || s.thresholds
            .iter()
            .any(|t| *t == 0 || *t > WEBHOOK_THRESHOLD_PCT_MAX)
    {
        return Err(EngineError::Invalid(
            "thresholds",
            "must be 1 to 8 percentages from 1 to 1000",
        ));
    }
    if s.expiring_days == 0 || s.expiring_days > WEBHOOK_EXPIRING_DAYS_MAX {
        return Err(EngineError::Invalid("expiring_days", "must be 1 to 365"));
    }
    if s.description.len() > WEBHOOK_DESCRIPTION_BYTES_MAX {
        return Err(EngineError::Invalid(
            "description",
            "must be at most 1024 bytes",
        ));
    }
    if s.feature_id.is_some() && s.license_id.is_none() {
        return Err(EngineError::Invalid("feature", "needs a license"));
    }
    Ok(())
}

/// Checks a secret: `whsec_` and the base64 of 24 to 64 bytes.
pub fn validate_secret(secret: &str) -> R<()> {
    use base64::Engine as _;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or(EngineError::Invalid(
            "secret",
            "must be whsec_ followed by base64",
        ))?;
    if !(WEBHOOK_SECRET_KEY_BYTES_MIN..=WEBHOOK_SECRET_KEY_BYTES_MAX).contains(&key.len()) {
        return Err(EngineError::Invalid("secret", "must hold 24 to 64 bytes"));
    }
    Ok(())
}

impl Engine {
    pub fn webhooks_active(&self) -> bool {
        self.hooks.active()
    }

    /// Seq of the next event: every event made so far is below it.
    pub fn webhook_event_mark(&self) -> u64 {
        self.hooks.next_event()
    }

    /// (subscriptions, deliveries pending).
    pub fn webhook_counts(&self) -> (u64, u64) {
        let inner = self.hooks.inner.lock();
        (inner.subs.len() as u64, inner.pending.len() as u64)
    }

    pub fn webhook(&self, tenant: Id, id: Id) -> Option<Subscription> {
        let inner = self.hooks.inner.lock();
        inner
            .subs
            .get(&id)
            .filter(|s| s.tenant_id == tenant)
            .cloned()
    }

    /// A tenant's subscriptions (every tenant's: None), by id.
    pub fn webhooks(&self, tenant: Option<Id>) -> Vec<Subscription> {
        let inner = self.hooks.inner.lock();
        inner
            .subs
            .values()
            .filter(|s| tenant.is_none_or(|t| s.tenant_id == t))
            .cloned()
            .collect()
    }

    /// Deliveries of a subscription after `after` (an index into its list,
    /// oldest first), at most `limit`; and how many events its tenant lost.
    pub fn webhook_attempts(&self, sub: Id, after: usize, limit: usize) -> (Vec<Attempt>, u64) {
        let inner = self.hooks.inner.lock();
        let tenant = inner.subs.get(&sub).map_or(0, |s| s.tenant_id);
        let list = inner
            .attempts
            .get(&sub)
            .map(|l| l.iter().skip(after).take(limit).cloned().collect())
            .unwrap_or_default();
        (list, inner.dropped.get(&tenant).copied().unwrap_or(0))
    }

    /// How many deliveries of a subscription are pending.
    pub fn webhook_pending_count(&self, sub: Id) -> u64 {
        let inner = self.hooks.inner.lock();
        inner.pending_by_sub.get(&sub).copied().unwrap_or(0)
    }

    /// Pending deliveries of a subscription, oldest first (at most `limit`).
    pub fn webhook_pending(&self, sub: Id, limit: usize) -> Vec<(u64, Delivery)> {
        let inner = self.hooks.inner.lock();
        if !inner.pending_by_sub.contains_key(&sub) {
            return Vec::new();
        }
        inner
            .pending
            .iter()
            .filter(|(_, s)| *s == sub)
            .take(limit)
            .filter_map(|k| inner.deliveries.get(k).map(|d| (k.0, d.clone())))
            .collect()
    }

    pub fn webhook_event(&self, tenant: Id, seq: u64) -> Option<Event> {
        let inner = self.hooks.inner.lock();
        inner
            .events
            .get(&seq)
            .filter(|e| e.tenant_id == tenant)
            .cloned()
    }

    /// Deliveries due at `now` of events below `released` (made by changes
    /// known to be durable), skipping `busy` ones, at most `limit`; and
    /// when the next one not yet due is (`Millis::MAX`: none).
    pub fn webhooks_due(
        &self,
        now: Millis,
        released: u64,
        busy: impl Fn(u64, Id) -> bool,
        limit: usize,
    ) -> (Vec<Due>, Millis) {
        let inner = self.hooks.inner.lock();
        let mut out = Vec::new();
        // The first delivery due after now (the index is in due order).
        let mut next = inner
            .due
            .range((now.saturating_add(1), 0, 0)..)
            .next()
            .map_or(Millis::MAX, |(at, _, _)| *at);
        for &(_, event, sub) in inner.due.range(..(now.saturating_add(1), 0, 0)) {
            if event >= released || busy(event, sub) {
                continue;
            }
            let Some(d) = inner.deliveries.get(&(event, sub)) else {
                continue;
            };
            let (Some(s), Some(e)) = (inner.subs.get(&sub), inner.events.get(&event)) else {
                continue;
            };
            if !s.spec.enabled {
                continue;
            }
            if out.len() == limit {
                next = now;
                break;
            }
            out.push(Due {
                tenant_id: s.tenant_id,
                subscription_id: sub,
                url: s.spec.url.clone(),
                secrets: s.secrets_at(now),
                event,
                event_id: e.id(),
                body: e.body(),
                attempts: d.attempts,
                since: d.since,
            });
        }
        (out, next)
    }

    /// Whether a refused floating take at `now` would make a
    /// `floating.denied` event (so that the refusal is worth a command).
    pub fn floating_denied_due(&self, license_id: Id, feature_id: Option<Id>, now: Millis) -> bool {
        if !self.hooks.active() {
            return false;
        }
        let Some(l) = self.license(license_id) else {
            return false;
        };
        let inner = self.hooks.inner.lock();
        inner.wanted(l.tenant_id, EventType::FloatingDenied)
            && inner
                .denied
                .get(&(license_id, feature_id))
                .is_none_or(|(last, _)| now >= last.saturating_add(FLOATING_DENIED_INTERVAL_MS))
    }

    /// Whether [`Command::SweepNotices`] at `now` would report anything.
    pub fn notices_due(&self, now: Millis) -> bool {
        self.hooks.active() && !self.notices(now).is_empty()
    }

    // ------------------------------------------------------------ apply

    pub(super) fn put_webhook(
        &self,
        id: Id,
        tenant_id: Id,
        spec: &WebhookSpec,
        secret: Option<&str>,
        now: Millis,
    ) -> R<Outcome> {
        validate_spec(spec)?;
        self.tenant(tenant_id).ok_or(EngineError::TenantNotFound)?;
        if let Some(l) = spec.license_id {
            let lic = self
                .license(l)
                .filter(|x| x.tenant_id == tenant_id)
                .ok_or(EngineError::LicenseNotFound)?;
            if let Some(f) = spec.feature_id {
                self.feature_by_id(&lic, f)?;
            }
        }
        if let Some(s) = secret {
            validate_secret(s)?;
        }
        let mut inner = self.hooks.inner.lock();
        match inner.subs.get_mut(&id) {
            Some(sub) if sub.tenant_id != tenant_id => return Err(EngineError::WebhookNotFound),
            Some(sub) => {
                sub.spec = spec.clone();
                if spec.enabled {
                    sub.disabled_reason = None;
                }
                if let Some(s) = secret {
                    sub.secrets = vec![Secret {
                        secret: s.to_string(),
                        expires_at: Millis::MAX,
                    }];
                }
                if !spec.enabled {
                    inner.fail_pending_of(id);
                }
            }
            None => {
                let secret = secret.ok_or(EngineError::Invalid("secret", "is required"))?;
                if inner.tenant_subs(tenant_id).count() >= WEBHOOKS_PER_TENANT_MAX {
                    return Err(EngineError::TooMany("webhooks"));
                }
                inner.insert_sub(Subscription {
                    id,
                    tenant_id,
                    spec: spec.clone(),
                    secrets: vec![Secret {
                        secret: secret.to_string(),
                        expires_at: Millis::MAX,
                    }],
                    created_at: now,
                    disabled_reason: None,
                });
            }
        }
        self.see_id(id);
        self.hooks.sync_counts(&inner);
        Ok(Outcome::Done)
    }

    pub(super) fn delete_webhook(&self, tenant_id: Id, id: Id) -> R<Outcome> {
        let mut inner = self.hooks.inner.lock();
        if inner.subs.get(&id).is_none_or(|s| s.tenant_id != tenant_id) {
            return Err(EngineError::WebhookNotFound);
        }
        inner.remove_sub(id);
        self.hooks.sync_counts(&inner);
        Ok(Outcome::Done)
    }

    pub(super) fn rotate_webhook_secret(
        &self,
        tenant_id: Id,
        id: Id,
        secret: &str,
        overlap_ms: Millis,
        now: Millis,
    ) -> R<Outcome> {
        validate_secret(secret)?;
        if !(0..=WEBHOOK_SECRET_OVERLAP_MS_MAX).contains(&overlap_ms) {
            return Err(EngineError::Invalid(
                "overlap_ms",
                "must be 0 to 604800000 (7 days)",
            ));
        }
        let mut inner = self.hooks.inner.lock();
        let sub = inner
            .subs
            .get_mut(&id)
            .filter(|s| s.tenant_id == tenant_id)
            .ok_or(EngineError::WebhookNotFound)?;
        sub.secrets.retain(|s| s.expires_at > now);
        for s in &mut sub.secrets {
            s.expires_at = s.expires_at.min(now.saturating_add(overlap_ms));
        }
        sub.secrets.retain(|s| s.expires_at > now);
        sub.secrets.push(Secret {
            secret: secret.to_string(),
            expires_at: Millis::MAX,
        });
        Ok(Outcome::Done)
    }

    pub(super) fn webhook_attempted(
        &self,
        tenant_id: Id,
        sub: Id,
        event: u64,
        at: Millis,
        report: &AttemptReport,
    ) -> R<Outcome> {
        let mut inner = self.hooks.inner.lock();
        if inner
            .subs
            .get(&sub)
            .is_none_or(|s| s.tenant_id != tenant_id)
        {
            return Err(EngineError::WebhookNotFound);
        }
        let kind = inner
            .events
            .get(&event)
            .map(|e| e.kind)
            .ok_or(EngineError::EventNotFound)?;
        let mut d = inner
            .deliveries
            .get(&(event, sub))
            .filter(|d| d.state == DeliveryState::Pending)
            .cloned()
            .ok_or(EngineError::EventNotFound)?;
        d.attempts += 1;
        let attempt = d.attempts;
        match report.result {
            AttemptResult::Delivered => d.state = DeliveryState::Delivered,
            AttemptResult::Retrying => d.next_at = report.next_at.unwrap_or(at),
            AttemptResult::Failed | AttemptResult::Gone => d.state = DeliveryState::Failed,
            AttemptResult::Dropped => {
                return Err(EngineError::Invalid("result", "a drop is not an attempt"))
            }
        }
        inner.set_delivery((event, sub), d);
        if report.result == AttemptResult::Gone {
            if let Some(s) = inner.subs.get_mut(&sub) {
                s.spec.enabled = false;
                s.disabled_reason = Some("the receiver answered 410 Gone".into());
            }
            inner.fail_pending_of(sub);
        }
        let mut report = report.clone();
        if let Some(e) = &mut report.error {
            truncate(e, WEBHOOK_ERROR_BYTES_MAX);
        }
        if report.result != AttemptResult::Retrying {
            report.next_at = None;
        } else if report.next_at.is_none() {
            report.next_at = Some(at);
        }
        inner.record(
            sub,
            Attempt {
                event,
                kind,
                attempt,
                at,
                report,
            },
        );
        Ok(Outcome::Done)
    }

    pub(super) fn webhook_retry(
        &self,
        tenant_id: Id,
        sub: Id,
        event: u64,
        now: Millis,
    ) -> R<Outcome> {
        let mut inner = self.hooks.inner.lock();
        if inner
            .subs
            .get(&sub)
            .is_none_or(|s| s.tenant_id != tenant_id)
        {
            return Err(EngineError::WebhookNotFound);
        }
        if inner
            .events
            .get(&event)
            .is_none_or(|e| e.tenant_id != tenant_id)
        {
            return Err(EngineError::EventNotFound);
        }
        inner.set_delivery(
            (event, sub),
            Delivery {
                state: DeliveryState::Pending,
                attempts: 0,
                next_at: now,
                since: now,
            },
        );
        Ok(Outcome::Done)
    }

    /// A refused floating take: a `floating.denied` event at most once per
    /// [`FLOATING_DENIED_INTERVAL_MS`] per pool (the refusals between are
    /// counted into the next one).
    pub(super) fn floating_denied(
        &self,
        license_id: Id,
        feature_id: Option<Id>,
        holder: &str,
        now: Millis,
    ) -> R<Outcome> {
        let l = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let (code, capacity) = match feature_id {
            Some(f) => {
                let f = self.feature_by_id(&l, f)?;
                let cap = f.spec.load().floating_users;
                (Some(f.code.to_string()), cap)
            }
            None => (None, l.spec.read().floating_users),
        };
        let mut inner = self.hooks.inner.lock();
        if !inner.wanted(l.tenant_id, EventType::FloatingDenied) {
            return Ok(Outcome::Swept { freed: 0 });
        }
        let slot = inner
            .denied
            .entry((license_id, feature_id))
            .or_insert((Millis::MIN, 0));
        if slot.0 != Millis::MIN && now < slot.0.saturating_add(FLOATING_DENIED_INTERVAL_MS) {
            return Ok(Outcome::Swept { freed: 0 });
        }
        slot.1 += 1;
        let refusals = slot.1;
        slot.0 = now;
        let mut data = license_data(&l, code.as_deref());
        data["holder"] = json!(holder);
        data["capacity"] = json!(capacity);
        // Events of this pool so far (refusals between them are not counted:
        // each would be a logged change).
        data["events"] = json!(refusals);
        inner.emit(Event::new(
            l.tenant_id,
            EventType::FloatingDenied,
            now,
            Some(license_id),
            feature_id,
            data,
        ));
        self.hooks.sync_counts(&inner);
        Ok(Outcome::Swept { freed: 1 })
    }

    /// Licenses to report at `now`: (license, its end, the bits to set).
    /// Licenses to report at `now`: (license, its end, what to report).
    /// A subscription hears of a license's end once, at its own
    /// `expiring_days`; a license is reported again only for a horizon
    /// nearer than the nearest already reported (or a new end).
    fn notices(&self, now: Millis) -> Vec<(std::sync::Arc<super::model::License>, Millis, Notice)> {
        // tenant -> (the expiring horizons asked for, days; expired asked).
        let (tenants, known, horizons) = {
            let inner = self.hooks.inner.lock();
            let mut t: HashMap<Id, (Vec<u32>, bool)> = HashMap::new();
            for s in inner.subs.values().filter(|s| s.spec.enabled) {
                let e = t.entry(s.tenant_id).or_default();
                if s.spec.events.contains(&EventType::LicenseExpiring) {
                    e.0.push(s.spec.expiring_days);
                }
                e.1 |= s.spec.events.contains(&EventType::LicenseExpired);
            }
            t.retain(|_, v| !v.0.is_empty() || v.1);
            (t, inner.notices.clone(), inner.horizons.clone())
        };
        if tenants.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for l in self.licenses.iter() {
            let Some((asked, expired)) = tenants.get(&l.tenant_id) else {
                continue;
            };
            let end = l.valid_until(&l.spec.read());
            if end == Millis::MAX {
                continue;
            }
            let same_end = known.get(&l.id).filter(|(e, _)| *e == end);
            let done = same_end.map_or(0, |(_, b)| *b);
            if *expired && now >= end && done & 2 == 0 {
                out.push((l.clone(), end, Notice::Expired));
                continue;
            }
            if now >= end {
                continue;
            }
            // Days left, rounded up: horizons of at least that many apply.
            let left = ((end - now + DAY_MS - 1) / DAY_MS) as u32;
            // The nearest horizon reported for this end (legacy: bit 0 alone
            // means every horizon was).
            let reported = match (same_end, horizons.get(&l.id)) {
                (Some(_), Some(h)) => *h,
                (Some(_), None) if done & 1 != 0 => 0,
                _ => u32::MAX,
            };
            if asked.iter().any(|d| *d >= left && *d < reported) {
                out.push((l.clone(), end, Notice::Expiring { left, reported }));
            }
        }
        out.sort_by_key(|(l, _, _)| l.id);
        out
    }

    pub(super) fn sweep_notices(&self, now: Millis) -> R<Outcome> {
        let due = self.notices(now);
        let mut inner = self.hooks.inner.lock();
        for (l, end, notice) in &due {
            let slot = inner.notices.entry(l.id).or_insert((*end, 0));
            if slot.0 != *end {
                *slot = (*end, 0);
                inner.horizons.remove(&l.id);
            }
            let mut data = license_data(l, None);
            data["valid_until"] = json!(format_instant(*end));
            let event = match notice {
                Notice::Expired => {
                    if let Some(slot) = inner.notices.get_mut(&l.id) {
                        slot.1 |= 2;
                    }
                    Event::new(
                        l.tenant_id,
                        EventType::LicenseExpired,
                        now,
                        Some(l.id),
                        None,
                        data,
                    )
                }
                Notice::Expiring { left, reported } => {
                    if let Some(slot) = inner.notices.get_mut(&l.id) {
                        slot.1 |= 1;
                    }
                    inner.horizons.insert(l.id, *left);
                    data["days_left"] = json!((end - now) / DAY_MS);
                    let mut e = Event::new(
                        l.tenant_id,
                        EventType::LicenseExpiring,
                        now,
                        Some(l.id),
                        None,
                        data,
                    );
                    e.horizon = Some((*left, *reported));
                    e
                }
            };
            inner.emit(event);
        }
        self.hooks.sync_counts(&inner);
        Ok(Outcome::Swept { freed: due.len() })
    }

    /// The events a change made, from its ledger entries (and the command,
    /// for admin writes), in the state right after it.
    pub(super) fn webhook_events(
        &self,
        cmd: &Command<'_>,
        outcome: &Outcome,
        entries: &[LedgerEntry],
    ) {
        if !self.hooks.active() {
            return;
        }
        let mut inner = self.hooks.inner.lock();
        for (i, e) in entries.iter().enumerate() {
            if inner.tenant_subs(e.tenant_id).next().is_none() {
                continue;
            }
            // What later entries of this command did to the same pool: a
            // sweep frees several seats of one pool, one entry each.
            let later: i64 = entries[i + 1..]
                .iter()
                .filter(|x| same_pool(x, e))
                .map(|x| x.amount)
                .sum();
            self.entry_events(&mut inner, e, later);
        }
        if let Some((license_id, change)) = license_change(cmd) {
            if let Some(l) = self.license(license_id) {
                if inner.wanted(l.tenant_id, EventType::LicenseChanged) {
                    let mut data = license_data(&l, None);
                    data["change"] = json!(change);
                    if let Some(f) = changed_feature(cmd) {
                        data["feature_id"] = json!(f.to_string());
                    }
                    inner.emit(Event::new(
                        l.tenant_id,
                        EventType::LicenseChanged,
                        command_time(cmd),
                        Some(license_id),
                        changed_feature(cmd),
                        data,
                    ));
                }
            }
        }
        self.qlik_events(&mut inner, cmd, outcome, entries);
        self.hooks.sync_counts(&inner);
    }

    fn entry_events(&self, inner: &mut Inner, e: &LedgerEntry, later: i64) {
        use EntryKind as K;
        match e.kind {
            K::UnitsConsumed
            | K::UnitsReserved
            | K::UnitsCommitted
            | K::ConsumptionSet
            | K::PeriodReset
            | K::LimitChanged => self.meter_events(inner, e),
            K::DeviceActivated
            | K::DeviceDeactivated
            | K::SeatReserved
            | K::SeatReservationVoided
            | K::SeatReservationExpired
            | K::SeatTaken
            | K::SeatBorrowed
            | K::SeatReleased
            | K::SeatExpired => self.seat_events(inner, e, later),
            _ => {}
        }
        match e.kind {
            K::UnitsExpired | K::SeatReservationExpired => {
                let Some(l) = e.license_id.and_then(|l| self.license(l)) else {
                    return;
                };
                let code = self.code_of(&l, e.feature_id);
                let mut data = license_data(&l, code.as_deref());
                data["reservation_id"] = json!(e.reservation_id.map(|r| r.to_string()));
                data["units"] = json!(-e.amount);
                inner.emit(Event::new(
                    e.tenant_id,
                    EventType::ReservationExpired,
                    e.at,
                    e.license_id,
                    e.feature_id,
                    data,
                ));
            }
            K::YextExpired => {
                let subject = e.subject.clone().unwrap_or_default();
                let (pack, entity) = subject.split_once('/').unwrap_or(("", &subject));
                inner.emit(Event::new(
                    e.tenant_id,
                    EventType::YextAssignmentExpired,
                    e.at,
                    None,
                    None,
                    json!({"pack": pack, "entity": entity}),
                ));
            }
            _ => {}
        }
    }

    fn code_of(&self, l: &super::model::License, feature: Option<Id>) -> Option<String> {
        feature.and_then(|f| self.feature_by_id(l, f).ok().map(|f| f.code.to_string()))
    }

    /// `meter.threshold`: the percentages of the cap crossed for the first
    /// time this period (the period's highest percentage is remembered; a
    /// new period or a new cap starts it again).
    fn meter_events(&self, inner: &mut Inner, e: &LedgerEntry) {
        let Some(license_id) = e.license_id else {
            return;
        };
        let key = (license_id, e.feature_id);
        let Some(l) = self.license(license_id) else {
            inner.peaks.remove(&key);
            return;
        };
        let (meter_used, limits, code) = match e.feature_id {
            Some(f) => match self.feature_by_id(&l, f) {
                Ok(f) => (
                    f.meter.used(e.at),
                    f.meter.limits(),
                    Some(f.code.to_string()),
                ),
                Err(_) => return,
            },
            None => (l.consumption.used(e.at), l.consumption.limits(), None),
        };
        if limits.unlimited || limits.max <= 0 {
            return;
        }
        let pct =
            (meter_used.max(0).saturating_mul(100) / limits.max).min(i64::from(u16::MAX)) as u16;
        let peak = match e.kind {
            EntryKind::PeriodReset | EntryKind::LimitChanged | EntryKind::ConsumptionSet => {
                inner.peaks.remove(&key);
                // A correction or a new cap is a fresh start at what is used
                // now: crossings below it are not reported again.
                if e.kind != EntryKind::PeriodReset {
                    inner.peaks.insert(key, pct);
                }
                return;
            }
            _ => inner.peaks.get(&key).copied().unwrap_or(0),
        };
        if pct <= peak {
            return;
        }
        inner.peaks.insert(key, pct);
        let mut crossed: Vec<u16> = inner
            .tenant_subs(e.tenant_id)
            .filter(|s| s.spec.enabled && s.spec.events.contains(&EventType::MeterThreshold))
            .flat_map(|s| s.spec.thresholds.iter().copied())
            .filter(|t| peak < *t && *t <= pct)
            .collect();
        crossed.sort_unstable();
        crossed.dedup();
        for t in crossed {
            let mut data = license_data(&l, code.as_deref());
            data["threshold"] = json!(t);
            data["used"] = json!(meter_used);
            data["limit"] = json!(limits.max);
            let mut event = Event::new(
                e.tenant_id,
                EventType::MeterThreshold,
                e.at,
                Some(license_id),
                e.feature_id,
                data,
            );
            event.threshold = Some(t);
            inner.emit(event);
        }
    }

    /// `seats.exhausted` when a change fills a pool, `seats.available` when
    /// one frees a full pool.
    /// `later`: the change of the pool by the command's entries after `e`.
    fn seat_events(&self, inner: &mut Inner, e: &LedgerEntry, later: i64) {
        use EntryKind as K;
        let Some(l) = e.license_id.and_then(|l| self.license(l)) else {
            return;
        };
        let activations = matches!(
            e.kind,
            K::DeviceActivated
                | K::DeviceDeactivated
                | K::SeatReserved
                | K::SeatReservationVoided
                | K::SeatReservationExpired
        );
        let (pool, in_use, capacity, code) = if activations {
            if l.activations.unlimited() {
                return;
            }
            let cap = l.activations.capacity() + l.activations.overage();
            ("activations", l.activations.used() as i64, cap as i64, None)
        } else {
            match e.feature_id {
                Some(f) => match self.feature_by_id(&l, f) {
                    Ok(f) => (
                        "floating",
                        i64::from(f.floating.in_use(e.at)),
                        i64::from(f.spec.load().floating_users),
                        Some(f.code.to_string()),
                    ),
                    Err(_) => return,
                },
                None => (
                    "floating",
                    i64::from(l.floating.in_use(e.at)),
                    i64::from(l.spec.read().floating_users),
                    None,
                ),
            }
        };
        if capacity <= 0 {
            return;
        }
        // The pool's count right after this entry, and right before it.
        let in_use = in_use - later;
        let before = in_use - e.amount;
        let kind = if e.amount > 0 && in_use >= capacity && before < capacity {
            EventType::SeatsExhausted
        } else if e.amount < 0 && before >= capacity && in_use < capacity {
            EventType::SeatsAvailable
        } else {
            return;
        };
        let mut data = license_data(&l, code.as_deref());
        data["pool"] = json!(pool);
        data["in_use"] = json!(in_use);
        data["capacity"] = json!(capacity);
        inner.emit(Event::new(
            e.tenant_id,
            kind,
            e.at,
            Some(l.id),
            e.feature_id,
            data,
        ));
    }

    /// `qlik.allotment.exhausted`: an assignment (or auto-assignment) took
    /// the last seat of an allotment.
    fn qlik_events(
        &self,
        inner: &mut Inner,
        cmd: &Command<'_>,
        outcome: &Outcome,
        entries: &[LedgerEntry],
    ) {
        use super::qlik::AccessVia;
        let (tenant_id, kind) = match (cmd, outcome) {
            (
                Command::QlikAssign {
                    tenant_id, kind, ..
                },
                _,
            ) => (*tenant_id, *kind),
            (
                Command::QlikAccess { tenant_id, .. },
                Outcome::Access(AccessVia::AutoAssigned(kind, _)),
            ) => (*tenant_id, *kind),
            _ => return,
        };
        let Some(e) = entries.iter().find(|e| e.kind == EntryKind::QlikAssigned) else {
            return;
        };
        let Some(q) = self.qlik.get(&tenant_id).map(|q| q.clone()) else {
            return;
        };
        let Some(units) = q.spec.read().allotment(kind).map(|a| a.units) else {
            return;
        };
        let (Some(before), Some(after)) = (e.before, e.after) else {
            return;
        };
        if units <= 0 || !(before < units && after >= units) {
            return;
        }
        inner.emit(Event::new(
            tenant_id,
            EventType::QlikAllotmentExhausted,
            e.at,
            None,
            None,
            json!({"allotment": kind.as_str(), "used": after, "units": units}),
        ));
    }

    // ------------------------------------------------------------ image

    pub fn webhook_image(&self) -> Option<WebhookImage> {
        let inner = self.hooks.inner.lock();
        if inner.subs.is_empty() && inner.events.is_empty() && inner.next_event == 0 {
            return None;
        }
        Some(WebhookImage {
            subscriptions: inner.subs.values().cloned().collect(),
            events: inner.events.values().cloned().collect(),
            deliveries: inner
                .deliveries
                .iter()
                .map(|((e, s), d)| (*e, *s, d.clone()))
                .collect(),
            attempts: sorted(
                inner
                    .attempts
                    .iter()
                    .map(|(k, v)| (*k, v.iter().cloned().collect())),
            ),
            peaks: {
                let mut v: Vec<_> = inner.peaks.iter().map(|((l, f), p)| (*l, *f, *p)).collect();
                v.sort_unstable();
                v
            },
            horizons: {
                let mut v: Vec<_> = inner.horizons.iter().map(|(l, h)| (*l, *h)).collect();
                v.sort_unstable();
                v
            },
            notices: {
                let mut v: Vec<_> = inner
                    .notices
                    .iter()
                    .map(|(l, (e, b))| (*l, *e, *b))
                    .collect();
                v.sort_unstable();
                v
            },
            denied: {
                let mut v: Vec<_> = inner
                    .denied
                    .iter()
                    .map(|((l, f), (t, n))| (*l, *f, *t, *n))
                    .collect();
                v.sort_unstable();
                v
            },
            next_event: inner.next_event,
            dropped: sorted(inner.dropped.iter().map(|(k, v)| (*k, *v))),
        })
    }

    /// Forgets every subscription, event and delivery (a restore of the
    /// whole state) but the event sequence, which [`Engine::clear`] keeps.
    pub(super) fn clear_webhooks(&self) {
        let mut inner = self.hooks.inner.lock();
        let next_event = inner.next_event;
        *inner = Inner {
            next_event,
            ..Inner::default()
        };
        self.hooks.sync_counts(&inner);
    }

    /// Raises the event sequence to `seq` at least: after a restore, event
    /// ids go on from the highest ever made (receivers deduplicate by id,
    /// so an id must never name two events).
    pub(super) fn keep_event_seq(&self, seq: u64) {
        let mut inner = self.hooks.inner.lock();
        inner.next_event = inner.next_event.max(seq);
        self.hooks.sync_counts(&inner);
    }

    pub fn restore_webhooks(&self, img: WebhookImage) -> R<()> {
        let mut inner = self.hooks.inner.lock();
        for s in img.subscriptions {
            self.see_id(s.id);
            inner.insert_sub(s);
        }
        for e in img.events {
            inner
                .by_tenant
                .entry(e.tenant_id)
                .or_default()
                .push_back(e.seq);
            inner.events.insert(e.seq, e);
        }
        for (e, s, d) in img.deliveries {
            inner.set_delivery((e, s), d);
        }
        inner.attempts = img
            .attempts
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        inner.attempts_total = inner.attempts.values().map(VecDeque::len).sum();
        // The global order is not stored: by time of the attempts.
        let mut order: Vec<(Millis, Id)> = inner
            .attempts
            .iter()
            .flat_map(|(s, l)| l.iter().map(move |a| (a.at, *s)))
            .collect();
        order.sort_unstable();
        inner.attempt_order = order.into_iter().map(|(_, s)| s).collect();
        inner.peaks = img.peaks.into_iter().map(|(l, f, p)| ((l, f), p)).collect();
        inner.horizons = img.horizons.into_iter().collect();
        inner.notices = img
            .notices
            .into_iter()
            .map(|(l, e, b)| (l, (e, b)))
            .collect();
        inner.denied = img
            .denied
            .into_iter()
            .map(|(l, f, t, n)| ((l, f), (t, n)))
            .collect();
        inner.next_event = img.next_event;
        inner.dropped = img.dropped.into_iter().collect();
        self.hooks.sync_counts(&inner);
        Ok(())
    }
}

/// Whether two seat entries count in one pool (a license's activations,
/// or one floating pool).
fn same_pool(a: &LedgerEntry, b: &LedgerEntry) -> bool {
    use EntryKind as K;
    let class = |k: EntryKind| match k {
        K::DeviceActivated
        | K::DeviceDeactivated
        | K::SeatReserved
        | K::SeatReservationVoided
        | K::SeatReservationExpired => Some(0),
        K::SeatTaken | K::SeatBorrowed | K::SeatReleased | K::SeatExpired => Some(1),
        _ => None,
    };
    let (ca, cb) = (class(a.kind), class(b.kind));
    ca.is_some()
        && ca == cb
        && a.license_id == b.license_id
        && (ca == Some(0) || a.feature_id == b.feature_id)
}

fn sorted<T>(it: impl Iterator<Item = (Id, T)>) -> Vec<(Id, T)> {
    let mut v: Vec<(Id, T)> = it.collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The fields every license event carries.
fn license_data(l: &super::model::License, feature: Option<&str>) -> Value {
    let mut v = json!({
        "license_id": l.id.to_string(),
        "license_key": l.license_key.as_deref(),
        "product_id": l.product_id.to_string(),
    });
    if let Some(f) = feature {
        v["feature"] = json!(f);
    }
    v
}

/// The admin writes that are a `license.changed`: (license, what changed).
fn license_change(cmd: &Command<'_>) -> Option<(Id, &'static str)> {
    Some(match cmd {
        Command::PutLicense { id, .. } => (*id, "license_written"),
        Command::PutFeature { license_id, .. } => (*license_id, "feature_written"),
        Command::DeleteFeature { license_id, .. } => (*license_id, "feature_deleted"),
        Command::SetConsumption { license_id, .. } => (*license_id, "consumption_set"),
        Command::SetDeviceBlacklisted { license_id, .. } => (*license_id, "device_blacklist"),
        _ => return None,
    })
}

fn changed_feature(cmd: &Command<'_>) -> Option<Id> {
    match cmd {
        Command::PutFeature { id, .. } | Command::DeleteFeature { id, .. } => Some(*id),
        Command::SetConsumption { feature_id, .. } => *feature_id,
        _ => None,
    }
}

fn command_time(cmd: &Command<'_>) -> Millis {
    match cmd {
        Command::PutLicense { now, .. }
        | Command::PutFeature { now, .. }
        | Command::DeleteFeature { now, .. }
        | Command::SetConsumption { now, .. }
        | Command::SetDeviceBlacklisted { now, .. } => *now,
        _ => 0,
    }
}
