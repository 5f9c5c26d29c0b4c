//! Every change to engine state is a `Command` value applied by
//! [`Engine::apply`](super::Engine::apply). Commands are serialisable and carry
//! everything they need, ids and `now` included, so applying the same sequence to
//! an empty engine rebuilds the same state (the write-ahead log replays them).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::infa::{InfaLicenses, InfaSpec};
use super::model::{
    ApiKeySpec, CustomerSpec, DeviceInfo, FeatureSpec, Id, LicenseSpec, ProductSpec, TenantSpec,
    UserSpec,
};
use super::qlik::{AllotmentKind, ConsumptionRecord, QlikSpec};
use super::time::Millis;
use super::webhook::{AttemptReport, WebhookSpec};
use super::yext::YextSpec;

/// The device a seat reservation's commit activates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeatDevice {
    pub hardware_id: String,
    pub info: DeviceInfo,
    /// The device's id if it is new (allocated before the command is built).
    pub device_id: Id,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command<'a> {
    // ------------------------------------------------------------ admin
    /// Create (id unused) or replace the tenant `id`.
    PutTenant {
        id: Id,
        spec: TenantSpec,
    },
    DeleteTenant {
        id: Id,
    },
    PutApiKey {
        spec: ApiKeySpec,
    },
    RevokeApiKey {
        api_key: String,
    },
    DeleteApiKey {
        api_key: String,
    },
    PutProduct {
        id: Id,
        spec: ProductSpec,
    },
    DeleteProduct {
        id: Id,
    },
    PutCustomer {
        id: Id,
        spec: CustomerSpec,
    },
    DeleteCustomer {
        id: Id,
    },
    PutUser {
        id: Id,
        spec: UserSpec,
    },
    DeleteUser {
        id: Id,
    },
    /// Create or replace a license; on create, `features` are created with it
    /// (ids given); on replace, `features` is ignored (features have their own commands).
    PutLicense {
        id: Id,
        spec: LicenseSpec,
        features: Vec<(Id, FeatureSpec)>,
        now: Millis,
    },
    DeleteLicense {
        id: Id,
    },
    PutFeature {
        license_id: Id,
        id: Id,
        spec: FeatureSpec,
        now: Millis,
    },
    DeleteFeature {
        license_id: Id,
        id: Id,
        /// When (0 in records written before it was kept).
        #[serde(default)]
        now: Millis,
    },
    /// Set a license's consumption total (admin correction).
    SetConsumption {
        license_id: Id,
        feature_id: Option<Id>,
        total: i64,
        /// When (0 in records written before it was kept).
        #[serde(default)]
        now: Millis,
    },
    SetDeviceBlacklisted {
        license_id: Id,
        #[serde(borrow)]
        hardware_id: Cow<'a, str>,
        blacklisted: bool,
        device_id: Id,
        now: Millis,
    },
    /// Create or replace a tenant's Qlik license (assignments stay).
    PutQlik {
        tenant_id: Id,
        spec: QlikSpec,
        now: Millis,
    },
    /// Remove a tenant's Qlik license with its assignments and records.
    DeleteQlik {
        tenant_id: Id,
    },
    QlikSettings {
        tenant_id: Id,
        auto_assign_professional: Option<bool>,
        auto_assign_analyzer: Option<bool>,
    },
    /// Create or replace a tenant's Yext account and packs (assignments stay).
    PutYext {
        tenant_id: Id,
        spec: YextSpec,
    },
    DeleteYext {
        tenant_id: Id,
    },
    /// Create or replace a tenant's Informatica org (users, licenses). A new
    /// org's version (its ETag) starts at `first_version`, a fresh id, so an
    /// ETag of an earlier org of the same id never matches it.
    PutInfa {
        tenant_id: Id,
        spec: InfaSpec,
        first_version: u64,
    },
    DeleteInfa {
        tenant_id: Id,
    },
    // ------------------------------------------------------------ runtime
    /// Overwrite an org's licenses, if `expected_version` (when given) is current.
    InfaSetLicenses {
        tenant_id: Id,
        licenses: InfaLicenses,
        expected_version: Option<u64>,
    },
    /// Open a session (a login whose password was verified) under `session`,
    /// the SHA-256 of its id, in hex (the id itself is never logged).
    InfaLogin {
        tenant_id: Id,
        #[serde(borrow)]
        session: Cow<'a, str>,
        #[serde(borrow)]
        username: Cow<'a, str>,
        /// The password hash the login's password was checked against (as
        /// the org's spec holds it, already in the log): a password
        /// changed between the check and this command refuses the login.
        #[serde(borrow)]
        password_hash: Cow<'a, str>,
        now: Millis,
    },
    /// Record a request of a session (its idle time starts again).
    InfaTouch {
        tenant_id: Id,
        #[serde(borrow)]
        session: Cow<'a, str>,
        now: Millis,
    },
    /// Draw `amount` on one of an org's custom limits.
    InfaConsume {
        tenant_id: Id,
        #[serde(borrow)]
        limit: Cow<'a, str>,
        amount: i64,
    },
    YextAssign {
        tenant_id: Id,
        #[serde(borrow)]
        pack: Cow<'a, str>,
        #[serde(borrow)]
        entity: Cow<'a, str>,
        now: Millis,
    },
    YextUnassign {
        tenant_id: Id,
        #[serde(borrow)]
        pack: Cow<'a, str>,
        #[serde(borrow)]
        entity: Cow<'a, str>,
        now: Millis,
    },
    /// Schedule (a `YYYY-MM-DD` day) or cancel (None) an assignment's removal.
    YextSchedule {
        tenant_id: Id,
        #[serde(borrow)]
        pack: Cow<'a, str>,
        #[serde(borrow)]
        entity: Cow<'a, str>,
        expiration: Option<String>,
        now: Millis,
    },
    /// Remove every scheduled assignment due by `now` (the expiry sweep).
    SweepExpired {
        now: Millis,
    },
    QlikAssign {
        tenant_id: Id,
        #[serde(borrow)]
        subject: Cow<'a, str>,
        kind: AllotmentKind,
        now: Millis,
    },
    QlikUnassign {
        tenant_id: Id,
        #[serde(borrow)]
        subject: Cow<'a, str>,
        kind: AllotmentKind,
    },
    /// Move `source_subject`'s assignment (of `source_kind`, when given) to
    /// `subject` and `kind` (unchanged when None).
    QlikUpdate {
        tenant_id: Id,
        #[serde(borrow)]
        source_subject: Cow<'a, str>,
        source_kind: Option<AllotmentKind>,
        #[serde(borrow)]
        subject: Cow<'a, str>,
        kind: Option<AllotmentKind>,
        now: Millis,
    },
    /// An analyzer session's capacity use (debits analyzer_time, keeps the record).
    QlikConsume {
        tenant_id: Id,
        record: ConsumptionRecord,
        now: Millis,
    },
    /// An access check for `subject` (may auto-assign a seat).
    QlikAccess {
        tenant_id: Id,
        #[serde(borrow)]
        subject: Cow<'a, str>,
        now: Millis,
    },
    Activate {
        license_id: Id,
        #[serde(borrow)]
        hardware_id: Cow<'a, str>,
        info: DeviceInfo,
        device_id: Id,
        now: Millis,
    },
    Deactivate {
        license_id: Id,
        #[serde(borrow)]
        hardware_id: Cow<'a, str>,
        now: Millis,
    },
    /// Take or renew a floating seat (license-level when `feature_id` is None)
    /// for the pool's timeout, or for `ttl_ms` when given (at most the
    /// timeout; a renewal never shortens a seat).
    FloatingAcquire {
        license_id: Id,
        feature_id: Option<Id>,
        #[serde(borrow)]
        hardware_id: Cow<'a, str>,
        now: Millis,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<Millis>,
    },
    FloatingRelease {
        license_id: Id,
        feature_id: Option<Id>,
        #[serde(borrow)]
        hardware_id: Cow<'a, str>,
        now: Millis,
    },
    /// Hold a seat until `until` (checked against max_borrow_time).
    FloatingBorrow {
        license_id: Id,
        feature_id: Option<Id>,
        #[serde(borrow)]
        hardware_id: Cow<'a, str>,
        until: Millis,
        now: Millis,
    },
    AddConsumption {
        license_id: Id,
        feature_id: Option<Id>,
        amount: i64,
        now: Millis,
    },
    /// Free every floating seat that expired by `now` (the periodic sweep; a
    /// command so that a replay frees the same seats at the same point).
    SweepLeases {
        now: Millis,
    },
    /// Hold `units` of a consumption feature against its limit until
    /// `now + timeout_ms`, or (`feature_id` None) one activation seat of the
    /// license (a two-phase use; see `engine::reserve`).
    Reserve {
        reservation_id: Id,
        tenant_id: Id,
        license_id: Id,
        feature_id: Option<Id>,
        units: i64,
        timeout_ms: Millis,
        now: Millis,
    },
    /// Use `units` (all when None, at most the reserved units) of a pending
    /// reservation; the rest is free again. A seat reservation is committed
    /// by activating `device` on the seat it holds.
    CommitReservation {
        tenant_id: Id,
        reservation_id: Id,
        units: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<SeatDevice>,
        now: Millis,
    },
    /// Free a pending reservation's units.
    VoidReservation {
        tenant_id: Id,
        reservation_id: Id,
        now: Millis,
    },
    /// Release the reservations pending past their expiry, and forget the
    /// finished reservations and idempotency records past their retention.
    SweepPending {
        now: Millis,
    },
    /// `cmd` under an idempotency key: applied once; the same key with the
    /// same request `fingerprint` within the retention answers the first
    /// answer, with another request it is refused.
    Idempotent {
        tenant_id: Id,
        key: String,
        fingerprint: String,
        now: Millis,
        #[serde(borrow)]
        cmd: Box<Command<'a>>,
    },
    /// Every one of `ops` or none of them, as one record.
    Batch {
        #[serde(borrow)]
        ops: Vec<Command<'a>>,
        now: Millis,
    },
    TrackDeviceVariables {
        license_id: Id,
        #[serde(borrow)]
        hardware_id: Cow<'a, str>,
        variables: Vec<(String, String)>,
        now: Millis,
    },
    // ------------------------------------------------------------ webhooks
    /// Create or replace the subscription `id` of `tenant_id`; `secret` is
    /// required on create and replaces every secret when given on replace.
    PutWebhook {
        id: Id,
        tenant_id: Id,
        spec: WebhookSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        now: Millis,
    },
    DeleteWebhook {
        tenant_id: Id,
        id: Id,
    },
    /// A new current secret; the old ones stay valid for `overlap_ms`.
    RotateWebhookSecret {
        tenant_id: Id,
        id: Id,
        secret: String,
        overlap_ms: Millis,
        now: Millis,
    },
    /// How an attempt to deliver `event` to `subscription_id` ended.
    WebhookAttempted {
        tenant_id: Id,
        subscription_id: Id,
        event: u64,
        at: Millis,
        report: AttemptReport,
    },
    /// Deliver `event` to `subscription_id` again (a resend).
    WebhookRetry {
        tenant_id: Id,
        subscription_id: Id,
        event: u64,
        now: Millis,
    },
    /// A floating take was refused (a `floating.denied` event, at most one
    /// per pool per minute).
    FloatingDenied {
        license_id: Id,
        feature_id: Option<Id>,
        #[serde(borrow)]
        hardware_id: Cow<'a, str>,
        now: Millis,
    },
    /// Report the licenses whose end is near or past (`license.expiring`,
    /// `license.expired`), once each.
    SweepNotices {
        now: Millis,
    },
    /// The whole state replaced by a state fixture's (`POST
    /// /admin/v1/state/restore`, `.../reset`). The state is not in the
    /// record but in the file `restore-<lsn>.snap` beside the log, written
    /// before the record is, because the engine does no I/O: storage applies
    /// this command (the live restore, recovery, shadow snapshots; see
    /// `storage::fixtures`), and [`Engine::apply`](super::Engine::apply)
    /// refuses it.
    RestoreState {
        /// The fixture's name (`initial` for a reset), for the ledger.
        #[serde(borrow)]
        fixture: Cow<'a, str>,
        now: Millis,
    },
}
