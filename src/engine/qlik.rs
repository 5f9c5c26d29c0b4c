//! Qlik-style tenant licenses: a license record per tenant with its
//! allotments, the assignments of allotment seats to subjects, the auto-assign
//! settings and the analyzer-capacity consumption records.
//!
//! The allotments are the engine's primitives: `professional` and `analyzer`
//! are [`SeatPool`]s (usage class `assigned`), `analyzer_time` is a [`Meter`]
//! of capacity minutes that starts again at each calendar month (UTC), used in
//! [`ANALYZER_CHUNK_MINUTES`]-minute chunks.
//!
//! Every change to a tenant's assignments runs under the tenant's `book`
//! mutex, so an item of a batch (add, delete, update) is atomic: an update that
//! moves an assignment to another type takes the new seat before giving the
//! old one back, and no other change sees the state in between.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::meter::{Meter, MeterError, MeterLimits};
use super::model::Id;
use super::seat::{SeatGrant, SeatPool};
use super::time::{parse_instant, Millis, Period, DAY_MS};
use super::EngineError;
use crate::engine::QlikRefusal;

/// Assignments one tenant may hold: a list request sorts them all.
pub const QLIK_ASSIGNMENTS_MAX: usize = 200_000;
/// Known subjects (users) of one tenant's license.
pub const QLIK_USERS_MAX: usize = 200_000;
/// Consumption records kept per tenant; past it the oldest is dropped (the
/// meter keeps the total; records are the detail).
pub const QLIK_CONSUMPTION_RECORDS_MAX: usize = 50_000;
/// Length of an id or a short text field, bytes.
pub const QLIK_TEXT_BYTES_MAX: usize = 256;
/// Length of a subject, bytes. With [`QLIK_ASSIGNMENTS_MAX`] and
/// [`QLIK_CONSUMPTION_RECORDS_MAX`] this keeps a tenant's snapshot frame well
/// under the frame limit even with every character escaped.
pub const QLIK_SUBJECT_BYTES_MAX: usize = 256;
/// Parameter sets of one license.
pub const QLIK_PARAMETERS_MAX: usize = 256;
/// Analyzer capacity is used in chunks of this many minutes of active time.
pub const ANALYZER_CHUNK_MINUTES: i64 = 6;
/// The largest allotment: units and overage beyond this are refused.
pub const QLIK_UNITS_MAX: i64 = 1_000_000_000;

/// An allotment type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllotmentKind {
    Professional,
    Analyzer,
    AnalyzerTime,
}

impl AllotmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AllotmentKind::Professional => "professional",
            AllotmentKind::Analyzer => "analyzer",
            AllotmentKind::AnalyzerTime => "analyzer_time",
        }
    }

    pub fn parse(s: &str) -> Option<AllotmentKind> {
        match s {
            "professional" => Some(AllotmentKind::Professional),
            "analyzer" => Some(AllotmentKind::Analyzer),
            "analyzer_time" => Some(AllotmentKind::AnalyzerTime),
            _ => None,
        }
    }

    /// `assigned` (seats given to subjects) or `time` (capacity minutes).
    pub fn usage_class(self) -> &'static str {
        match self {
            AllotmentKind::AnalyzerTime => "time",
            _ => "assigned",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum QlikOrigin {
    #[default]
    Internal,
    External,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum QlikStatus {
    #[default]
    Ok,
    Blacklisted,
    Expired,
    Missing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum QlikExtensionStatus {
    #[default]
    Unavailable,
    Pending,
    Available,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum QlikKeyType {
    #[default]
    Signed,
    Plain,
    #[serde(rename = "2.0")]
    V2,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QlikAllotmentSpec {
    pub name: AllotmentKind,
    /// Seats (assigned) or capacity minutes per month (time).
    pub units: i64,
    /// Units usable past `units`, each use of one marked excess; -1 unbounded.
    #[serde(default)]
    pub overage: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QlikParameterAccess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allotment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QlikParameter {
    pub name: String,
    /// ISO 8601 interval; `.` for an open end (`./.` always).
    #[serde(default = "open_interval")]
    pub valid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<QlikParameterAccess>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Value>,
}

fn open_interval() -> String {
    "./.".into()
}

/// A tenant's Qlik license as an admin provisions it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QlikSpec {
    pub license_number: String,
    #[serde(default)]
    pub secondary_number: String,
    /// The signed license key (opaque here).
    #[serde(default)]
    pub license_key: String,
    pub product: String,
    /// ISO 8601 interval `start/end` (dates or date-times; `.` an open end).
    pub valid: String,
    #[serde(default)]
    pub trial: bool,
    #[serde(default)]
    pub origin: QlikOrigin,
    #[serde(default)]
    pub status: QlikStatus,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub extension_status: QlikExtensionStatus,
    #[serde(default)]
    pub key_type: QlikKeyType,
    #[serde(default)]
    pub parameters: Vec<QlikParameter>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub license_type: Option<String>,
    #[serde(default)]
    pub capability_bank_id: Option<String>,
    #[serde(default)]
    pub parent_license_number: Option<String>,
    /// ISO 8601 instant; None: the indefinite future.
    #[serde(default)]
    pub latest_valid_time: Option<String>,
    #[serde(default)]
    pub allotments: Vec<QlikAllotmentSpec>,
    /// Known subjects of the tenant: an assignment whose subject is not here
    /// is an orphan.
    #[serde(default)]
    pub users: Vec<String>,
}

/// An interval's ends in ms: `i64::MIN` / `i64::MAX` for open ends.
pub fn parse_interval(s: &str) -> Option<(Millis, Millis)> {
    let (a, b) = s.split_once('/')?;
    let start = match a.trim() {
        "." | "" => i64::MIN,
        v => parse_instant(v)?,
    };
    let end = match b.trim() {
        "." | "" => i64::MAX,
        // A bare date as an end means "through that day".
        v if v.len() == 10 => parse_instant(v)?.checked_add(DAY_MS)?,
        v => parse_instant(v)?,
    };
    (start <= end).then_some((start, end))
}

fn text(field: &'static str, s: &str) -> Result<(), EngineError> {
    if s.len() > QLIK_TEXT_BYTES_MAX {
        return Err(EngineError::Invalid(field, "too long"));
    }
    Ok(())
}

fn check_interval(field: &'static str, s: &str) -> Result<(), EngineError> {
    match parse_interval(s) {
        Some(_) => Ok(()),
        None => Err(EngineError::Invalid(
            field,
            "must be an ISO 8601 interval start/end",
        )),
    }
}

pub fn validate(spec: &QlikSpec) -> Result<(), EngineError> {
    if spec.license_number.trim().is_empty() {
        return Err(EngineError::Invalid("licenseNumber", "must not be empty"));
    }
    text("licenseNumber", &spec.license_number)?;
    text("secondaryNumber", &spec.secondary_number)?;
    text("product", &spec.product)?;
    if spec.license_key.len() > 16 * QLIK_TEXT_BYTES_MAX {
        return Err(EngineError::Invalid("licenseKey", "too long"));
    }
    check_interval("valid", &spec.valid)?;
    if let Some(t) = &spec.latest_valid_time {
        if parse_instant(t).is_none() {
            return Err(EngineError::Invalid(
                "latestValidTime",
                "must be an ISO 8601 date-time",
            ));
        }
    }
    if spec.parameters.len() > QLIK_PARAMETERS_MAX {
        return Err(EngineError::TooMany("parameters"));
    }
    for p in &spec.parameters {
        text("parameters.name", &p.name)?;
        if let Some(v) = &p.values {
            super::check_json_depth("parameters.values", v)?;
        }
        check_interval("parameters.valid", &p.valid)?;
    }
    let mut seen = HashSet::new();
    for a in &spec.allotments {
        if !seen.insert(a.name) {
            return Err(EngineError::Duplicate("allotment"));
        }
        if !(0..=QLIK_UNITS_MAX).contains(&a.units) {
            return Err(EngineError::Invalid("allotments.units", "out of range"));
        }
        if !(-1..=QLIK_UNITS_MAX).contains(&a.overage) {
            return Err(EngineError::Invalid(
                "allotments.overage",
                "must be -1 (unbounded) or more",
            ));
        }
    }
    if spec.users.len() > QLIK_USERS_MAX {
        return Err(EngineError::TooMany("users"));
    }
    for u in &spec.users {
        check_subject(u)?;
    }
    Ok(())
}

pub fn check_subject(s: &str) -> Result<(), EngineError> {
    if s.is_empty() {
        return Err(EngineError::Invalid("subject", "must not be empty"));
    }
    if s.len() > QLIK_SUBJECT_BYTES_MAX {
        return Err(EngineError::Invalid("subject", "too long"));
    }
    if s.chars().any(char::is_control) {
        return Err(EngineError::Invalid(
            "subject",
            "must not hold control characters",
        ));
    }
    Ok(())
}

/// One assignment of an allotment seat to a subject (one per subject).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub subject: String,
    pub kind: AllotmentKind,
    /// Taken past the allotment's units (inside its overage).
    pub excess: bool,
    pub created: Millis,
}

/// One report of analyzer capacity use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumptionRecord {
    pub id: Id,
    pub app_id: String,
    pub user_id: String,
    pub session_id: String,
    pub end_time: Millis,
    pub duration_ms: Millis,
    /// Capacity minutes debited (whole chunks).
    pub minutes_used: i64,
    /// Chunks debited.
    pub capacity_used: i64,
    /// Debited past the month's units (inside the overage).
    pub excess: bool,
}

/// Auto-assign settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct QlikSettings {
    pub auto_assign_professional: bool,
    pub auto_assign_analyzer: bool,
}

/// Settings as an admin or catalog gives them (absent: unchanged).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QlikSettingsInput {
    #[serde(default)]
    pub auto_assign_professional: Option<bool>,
    #[serde(default)]
    pub auto_assign_analyzer: Option<bool>,
}

/// An assignment as a catalog lists it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentInput {
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: AllotmentKind,
}

/// Assignments and consumption records, behind the tenant's one `book` lock.
#[derive(Debug, Default)]
pub struct Book {
    /// subject -> its assignment.
    pub assignments: HashMap<Box<str>, Assignment>,
    /// Oldest first; at most [`QLIK_CONSUMPTION_RECORDS_MAX`].
    pub consumption: VecDeque<ConsumptionRecord>,
}

#[derive(Debug)]
pub struct QlikTenant {
    pub tenant_id: Id,
    /// Replaced whole by an admin put; read by overview and status.
    pub spec: RwLock<Arc<QlikSpec>>,
    /// Known subjects (from `spec.users`), for `orphans`. Replaced with the spec.
    pub users: RwLock<Arc<HashSet<String>>>,
    /// When the spec was last put (ms).
    pub updated: AtomicI64,
    pub professional: SeatPool,
    pub analyzer: SeatPool,
    pub analyzer_time: Meter,
    pub auto_professional: AtomicBool,
    pub auto_analyzer: AtomicBool,
    /// Serialises every change to assignments and records (see the module doc).
    pub book: Mutex<Book>,
}

/// Seat-pool limits of an allotment: (capacity, overage, unbounded).
fn seat_limits(a: Option<&QlikAllotmentSpec>) -> (u64, u64, bool) {
    match a {
        None => (0, 0, false),
        Some(a) => (a.units as u64, a.overage.max(0) as u64, a.overage == -1),
    }
}

fn time_limits(a: Option<&QlikAllotmentSpec>) -> MeterLimits {
    MeterLimits {
        max: a.map_or(0, |a| a.units),
        allow_overages: a.is_some_and(|a| a.overage != 0),
        max_overages: match a {
            Some(a) if a.overage == -1 => i64::MAX / 2,
            Some(a) => a.overage,
            None => 0,
        },
        unlimited: false,
        allow_negative: false,
        reset: true,
        period: Some(Period::Monthly),
    }
}

impl QlikSpec {
    pub fn allotment(&self, kind: AllotmentKind) -> Option<&QlikAllotmentSpec> {
        self.allotments.iter().find(|a| a.name == kind)
    }
}

/// How an access check let a subject in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessVia {
    /// The subject already holds an assignment of this type.
    Assigned(AllotmentKind),
    /// The check assigned a seat of this type (auto-assign).
    AutoAssigned(AllotmentKind, bool),
    /// No seat: analyzer capacity minutes remain this month.
    AnalyzerTime,
}

impl QlikTenant {
    pub fn new(tenant_id: Id, spec: Arc<QlikSpec>, now: Millis) -> QlikTenant {
        let t = QlikTenant {
            tenant_id,
            spec: RwLock::new(spec.clone()),
            users: RwLock::new(Arc::new(HashSet::new())),
            updated: AtomicI64::new(now),
            professional: SeatPool::new(0, 0, false),
            analyzer: SeatPool::new(0, 0, false),
            analyzer_time: Meter::default(),
            auto_professional: AtomicBool::new(false),
            auto_analyzer: AtomicBool::new(false),
            book: Mutex::new(Book::default()),
        };
        t.set_spec(spec, now);
        t
    }

    /// Replaces the spec and the limits derived from it; assignments stay
    /// (lowered units leave existing seats in place, as for any seat pool).
    pub fn set_spec(&self, spec: Arc<QlikSpec>, now: Millis) {
        let (c, o, u) = seat_limits(spec.allotment(AllotmentKind::Professional));
        self.professional.set_limits(c, o, u);
        let (c, o, u) = seat_limits(spec.allotment(AllotmentKind::Analyzer));
        self.analyzer.set_limits(c, o, u);
        let limits = time_limits(spec.allotment(AllotmentKind::AnalyzerTime));
        if self.analyzer_time.limits() != limits {
            self.analyzer_time.set_limits(limits, now);
        }
        *self.users.write() = Arc::new(spec.users.iter().cloned().collect());
        self.updated.store(now, Ordering::Release);
        *self.spec.write() = spec;
    }

    pub fn pool(&self, kind: AllotmentKind) -> Option<&SeatPool> {
        match kind {
            AllotmentKind::Professional => Some(&self.professional),
            AllotmentKind::Analyzer => Some(&self.analyzer),
            AllotmentKind::AnalyzerTime => None,
        }
    }

    /// The status the license has at `now`: an `Ok` license outside its
    /// validity interval reads as `Expired`.
    pub fn status(&self, now: Millis) -> QlikStatus {
        let spec = self.spec.read();
        let s = spec.status;
        // The spec was validated: its interval parses.
        let (from, to) = parse_interval(&spec.valid).unwrap_or((i64::MIN, i64::MAX));
        if s == QlikStatus::Ok && (now < from || now >= to) {
            QlikStatus::Expired
        } else {
            s
        }
    }

    /// Whether the license grants anything at `now`.
    pub fn grants(&self, now: Millis) -> bool {
        self.status(now) == QlikStatus::Ok && !self.spec.read().deactivated
    }

    /// Units used of an allotment at `now`.
    pub fn units_used(&self, kind: AllotmentKind, now: Millis) -> i64 {
        match self.pool(kind) {
            Some(p) => p.used() as i64,
            None => self.analyzer_time.used(now),
        }
    }

    // ------------------------------------------------------------ changes

    fn take_seat(&self, kind: AllotmentKind) -> Result<bool, EngineError> {
        let pool = self
            .pool(kind)
            .ok_or(EngineError::Qlik(QlikRefusal::NotAssignable))?;
        if !self.spec.read().allotments.iter().any(|a| a.name == kind) {
            return Err(EngineError::Qlik(QlikRefusal::NoAvailableAllotment));
        }
        match pool.try_acquire() {
            Ok(SeatGrant::Within) => Ok(false),
            Ok(SeatGrant::Excess) => Ok(true),
            Err(_) => Err(EngineError::Qlik(QlikRefusal::NoAvailableAllotment)),
        }
    }

    fn give_back(&self, kind: AllotmentKind) {
        if let Some(p) = self.pool(kind) {
            p.release();
        }
    }

    /// Assigns a seat of `kind` to `subject`; returns whether it is excess.
    pub fn assign(
        &self,
        subject: &str,
        kind: AllotmentKind,
        now: Millis,
    ) -> Result<bool, EngineError> {
        check_subject(subject)?;
        let mut book = self.book.lock();
        self.assign_locked(&mut book, subject, kind, now)
    }

    fn assign_locked(
        &self,
        book: &mut Book,
        subject: &str,
        kind: AllotmentKind,
        now: Millis,
    ) -> Result<bool, EngineError> {
        if kind == AllotmentKind::AnalyzerTime {
            return Err(EngineError::Qlik(QlikRefusal::NotAssignable));
        }
        if book.assignments.contains_key(subject) {
            return Err(EngineError::Qlik(QlikRefusal::AlreadyAssigned));
        }
        if book.assignments.len() >= QLIK_ASSIGNMENTS_MAX {
            return Err(EngineError::TooMany("assignments"));
        }
        let excess = self.take_seat(kind)?;
        book.assignments.insert(
            subject.into(),
            Assignment {
                subject: subject.to_string(),
                kind,
                excess,
                created: now,
            },
        );
        Ok(excess)
    }

    /// Removes `subject`'s assignment of `kind` and frees its seat.
    pub fn unassign(&self, subject: &str, kind: AllotmentKind) -> Result<(), EngineError> {
        let mut book = self.book.lock();
        match book.assignments.get(subject) {
            Some(a) if a.kind == kind => {}
            _ => return Err(EngineError::Qlik(QlikRefusal::AssignmentNotFound)),
        }
        book.assignments.remove(subject);
        self.give_back(kind);
        Ok(())
    }

    /// Moves the assignment of `from` (of `from_kind` when given) to
    /// `subject` and `kind` (its own type when None). Returns (excess, whether
    /// a new subject got it). All or nothing.
    pub fn update(
        &self,
        from: &str,
        from_kind: Option<AllotmentKind>,
        subject: &str,
        kind: Option<AllotmentKind>,
        now: Millis,
    ) -> Result<(bool, bool), EngineError> {
        check_subject(subject)?;
        let mut book = self.book.lock();
        let cur = match book.assignments.get(from) {
            Some(a) if from_kind.is_none_or(|k| k == a.kind) => a.clone(),
            _ => return Err(EngineError::Qlik(QlikRefusal::AssignmentNotFound)),
        };
        let kind = kind.unwrap_or(cur.kind);
        if kind == AllotmentKind::AnalyzerTime {
            return Err(EngineError::Qlik(QlikRefusal::NotAssignable));
        }
        let moved = subject != from;
        if moved && book.assignments.contains_key(subject) {
            return Err(EngineError::Qlik(QlikRefusal::AlreadyAssigned));
        }
        let excess = if kind != cur.kind {
            // The new seat first: if none is left nothing has changed.
            let excess = self.take_seat(kind)?;
            self.give_back(cur.kind);
            excess
        } else {
            cur.excess
        };
        book.assignments.remove(from);
        book.assignments.insert(
            subject.into(),
            Assignment {
                subject: subject.to_string(),
                kind,
                excess,
                created: if moved { now } else { cur.created },
            },
        );
        Ok((excess, moved))
    }

    /// Debits a session's capacity minutes and keeps its record.
    pub fn consume(
        &self,
        rec: &ConsumptionRecord,
        now: Millis,
    ) -> Result<(i64, bool), EngineError> {
        if rec.minutes_used < 0 || rec.capacity_used < 0 {
            return Err(EngineError::Invalid("minutes", "must not be negative"));
        }
        if self
            .spec
            .read()
            .allotment(AllotmentKind::AnalyzerTime)
            .is_none()
        {
            return Err(EngineError::Qlik(QlikRefusal::NoAvailableAllotment));
        }
        let mut book = self.book.lock();
        let add = self
            .analyzer_time
            .add(rec.minutes_used, now)
            .map_err(|e| match e {
                MeterError::LimitReached | MeterError::Overflow => {
                    EngineError::Qlik(QlikRefusal::AnalyzerTimeExhausted)
                }
                _ => EngineError::Invalid("minutes", "must not be negative"),
            })?;
        if book.consumption.len() >= QLIK_CONSUMPTION_RECORDS_MAX {
            book.consumption.pop_front();
        }
        let mut rec = rec.clone();
        rec.excess = add.excess;
        book.consumption.push_back(rec);
        Ok((add.total, add.excess))
    }

    /// May `subject` use the tenant's analytics now? Assigns a seat when the
    /// settings allow (professional first, then analyzer), else admits on
    /// analyzer capacity if minutes remain, else refuses.
    pub fn access(&self, subject: &str, now: Millis) -> Result<AccessVia, EngineError> {
        check_subject(subject)?;
        if !self.grants(now) {
            return Err(EngineError::LicenseNotActive);
        }
        let mut book = self.book.lock();
        if let Some(a) = book.assignments.get(subject) {
            return Ok(AccessVia::Assigned(a.kind));
        }
        let order = [
            (
                self.auto_professional.load(Ordering::Acquire),
                AllotmentKind::Professional,
            ),
            (
                self.auto_analyzer.load(Ordering::Acquire),
                AllotmentKind::Analyzer,
            ),
        ];
        for (enabled, kind) in order {
            if !enabled {
                continue;
            }
            match self.assign_locked(&mut book, subject, kind, now) {
                Ok(excess) => return Ok(AccessVia::AutoAssigned(kind, excess)),
                Err(EngineError::Qlik(QlikRefusal::NoAvailableAllotment)) => continue,
                Err(e) => return Err(e),
            }
        }
        if self.analyzer_time_left(now) > 0 {
            return Ok(AccessVia::AnalyzerTime);
        }
        Err(EngineError::Qlik(QlikRefusal::NoAvailableAllotment))
    }

    /// Capacity minutes that can still be debited this month (overage included).
    /// Whether `subject` holds an assignment (the console's search).
    pub fn has_subject(&self, subject: &str) -> bool {
        self.book.lock().assignments.contains_key(subject)
    }

    pub fn analyzer_time_left(&self, now: Millis) -> i64 {
        if self
            .spec
            .read()
            .allotment(AllotmentKind::AnalyzerTime)
            .is_none()
        {
            return 0;
        }
        self.analyzer_time.headroom(now)
    }

    pub fn set_settings(&self, professional: Option<bool>, analyzer: Option<bool>) {
        if let Some(p) = professional {
            self.auto_professional.store(p, Ordering::Release);
        }
        if let Some(a) = analyzer {
            self.auto_analyzer.store(a, Ordering::Release);
        }
    }

    pub fn settings(&self) -> QlikSettings {
        QlikSettings {
            auto_assign_professional: self.auto_professional.load(Ordering::Acquire),
            auto_assign_analyzer: self.auto_analyzer.load(Ordering::Acquire),
        }
    }

    // ------------------------------------------------------------ images

    pub fn image(&self) -> QlikImage {
        let book = self.book.lock();
        let mut assignments: Vec<Assignment> = book.assignments.values().cloned().collect();
        assignments.sort_by(|a, b| a.subject.cmp(&b.subject));
        let (used, next_reset) = self.analyzer_time.state();
        QlikImage {
            tenant_id: self.tenant_id,
            spec: (**self.spec.read()).clone(),
            updated: self.updated.load(Ordering::Acquire),
            settings: self.settings(),
            assignments,
            consumption: book.consumption.iter().cloned().collect(),
            analyzer_time_used: used,
            analyzer_time_next_reset: next_reset,
        }
    }

    /// Builds a tenant's Qlik state back from its image, counters included.
    pub fn from_image(img: QlikImage) -> Result<QlikTenant, EngineError> {
        validate(&img.spec)?;
        let t = QlikTenant::new(img.tenant_id, Arc::new(img.spec), img.updated);
        t.set_settings(
            Some(img.settings.auto_assign_professional),
            Some(img.settings.auto_assign_analyzer),
        );
        t.analyzer_time
            .restore(img.analyzer_time_used, img.analyzer_time_next_reset);
        let mut book = t.book.lock();
        for a in img.assignments {
            if let Some(p) = t.pool(a.kind) {
                p.force_acquire();
            } else {
                return Err(EngineError::Qlik(QlikRefusal::NotAssignable));
            }
            book.assignments.insert(a.subject.as_str().into(), a);
        }
        book.consumption = img.consumption.into();
        drop(book);
        Ok(t)
    }
}

/// A tenant's Qlik state as plain values (snapshots).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QlikImage {
    pub tenant_id: Id,
    pub spec: QlikSpec,
    pub updated: Millis,
    pub settings: QlikSettings,
    pub assignments: Vec<Assignment>,
    pub consumption: Vec<ConsumptionRecord>,
    pub analyzer_time_used: i64,
    pub analyzer_time_next_reset: Millis,
}

/// Minutes of a session rounded up to whole chunks: (chunks, minutes debited).
pub fn chunks_of(minutes: i64) -> (i64, i64) {
    let m = minutes.clamp(0, i64::MAX - ANALYZER_CHUNK_MINUTES);
    let chunks = (m + ANALYZER_CHUNK_MINUTES - 1) / ANALYZER_CHUNK_MINUTES;
    (chunks, chunks * ANALYZER_CHUNK_MINUTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pro: i64, pro_over: i64) -> Arc<QlikSpec> {
        Arc::new(QlikSpec {
            license_number: "9999000000001204".into(),
            secondary_number: "12345".into(),
            license_key: "k".into(),
            product: "Qlik Sense Enterprise SaaS".into(),
            valid: "2020-01-01/2099-12-31".into(),
            trial: false,
            origin: QlikOrigin::Internal,
            status: QlikStatus::Ok,
            deactivated: false,
            extension_status: QlikExtensionStatus::Unavailable,
            key_type: QlikKeyType::Signed,
            parameters: vec![],
            customer_id: None,
            license_type: None,
            capability_bank_id: None,
            parent_license_number: None,
            latest_valid_time: None,
            allotments: vec![
                QlikAllotmentSpec {
                    name: AllotmentKind::Professional,
                    units: pro,
                    overage: pro_over,
                },
                QlikAllotmentSpec {
                    name: AllotmentKind::Analyzer,
                    units: 1,
                    overage: 0,
                },
                QlikAllotmentSpec {
                    name: AllotmentKind::AnalyzerTime,
                    units: 12,
                    overage: 0,
                },
            ],
            users: vec!["u1".into()],
        })
    }

    #[test]
    fn assign_overage_then_refuse() {
        let t = QlikTenant::new(1, spec(1, 1), 0);
        assert_eq!(t.assign("a", AllotmentKind::Professional, 0), Ok(false));
        assert_eq!(t.assign("b", AllotmentKind::Professional, 0), Ok(true));
        assert_eq!(
            t.assign("c", AllotmentKind::Professional, 0),
            Err(EngineError::Qlik(QlikRefusal::NoAvailableAllotment))
        );
        assert_eq!(
            t.assign("a", AllotmentKind::Analyzer, 0),
            Err(EngineError::Qlik(QlikRefusal::AlreadyAssigned))
        );
        assert_eq!(t.professional.used(), 2);
    }

    #[test]
    fn update_moves_type_and_subject_atomically() {
        let t = QlikTenant::new(1, spec(1, 0), 0);
        t.assign("a", AllotmentKind::Analyzer, 0).unwrap();
        t.assign("b", AllotmentKind::Professional, 0).unwrap();
        // No professional seat left: nothing changes.
        assert_eq!(
            t.update("a", None, "a", Some(AllotmentKind::Professional), 1),
            Err(EngineError::Qlik(QlikRefusal::NoAvailableAllotment))
        );
        assert_eq!((t.analyzer.used(), t.professional.used()), (1, 1));
        t.unassign("b", AllotmentKind::Professional).unwrap();
        assert_eq!(
            t.update(
                "a",
                Some(AllotmentKind::Analyzer),
                "z",
                Some(AllotmentKind::Professional),
                1
            ),
            Ok((false, true))
        );
        assert_eq!((t.analyzer.used(), t.professional.used()), (0, 1));
        assert_eq!(
            t.unassign("a", AllotmentKind::Professional),
            Err(EngineError::Qlik(QlikRefusal::AssignmentNotFound))
        );
    }

    #[test]
    fn analyzer_time_in_chunks_until_spent() {
        let t = QlikTenant::new(1, spec(0, 0), 0);
        assert_eq!(chunks_of(7), (2, 12));
        let rec = |m| ConsumptionRecord {
            id: 1,
            app_id: String::new(),
            user_id: String::new(),
            session_id: String::new(),
            end_time: 0,
            duration_ms: 0,
            minutes_used: m,
            capacity_used: m / 6,
            excess: false,
        };
        assert_eq!(t.consume(&rec(12), 0), Ok((12, false)));
        assert_eq!(
            t.consume(&rec(6), 0),
            Err(EngineError::Qlik(QlikRefusal::AnalyzerTimeExhausted))
        );
        // A new month starts from zero.
        let next = Period::Monthly.next_start(0);
        assert_eq!(t.consume(&rec(6), next), Ok((6, false)));
    }

    #[test]
    fn intervals() {
        assert!(parse_interval("2018-01-01/2018-12-31").is_some());
        assert_eq!(parse_interval("./."), Some((i64::MIN, i64::MAX)));
        assert!(parse_interval("2018-12-31/2018-01-01").is_none());
        assert!(parse_interval("2018-01-01").is_none());
    }
}
