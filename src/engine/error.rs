//! The engine's one error type: a cheap enum (no allocation on the hot path).
//! Each surface maps it to its own wire shape and status.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    // Lookups.
    TenantNotFound,
    ApiKeyNotFound,
    ProductNotFound,
    CustomerNotFound,
    UserNotFound,
    LicenseNotFound,
    FeatureNotFound,
    DeviceNotFound,
    // License state.
    LicenseNotEnabled,
    LicenseNotActive,
    LicenseNotStarted,
    LicenseExpired,
    FeatureExpired,
    DeviceBlacklisted,
    VmNotAllowed,
    // Seats.
    ActivationLimitReached,
    TransferLimitReached,
    FloatingNotAvailable,
    /// The license is not floating.
    NotFloating,
    /// The feature is not floating.
    FeatureNotFloating,
    BorrowNotAllowed,
    BorrowTooLong,
    BorrowInPast,
    // Consumption.
    NotConsumption,
    /// The license's meter is spent.
    ConsumptionLimitReached,
    /// The feature's meter is spent (or would overflow).
    FeatureConsumptionLimitReached,
    NegativeConsumptionNotAllowed,
    ConsumptionBelowZero,
    ConsumptionOverflow,
    /// A refusal of a tenant's Qlik license.
    Qlik(QlikRefusal),
    /// A refusal of a tenant's Yext account.
    Yext(YextRefusal),
    /// A refusal of a tenant's Informatica org.
    Infa(InfaRefusal),
    // Admin.
    Duplicate(&'static str),
    /// The object is still referenced (e.g. a product with licenses).
    InUse(&'static str),
    /// A spec field is invalid: (field path, reason).
    Invalid(&'static str, &'static str),
    /// Device variables past their limit.
    TooMany(&'static str),
    // Reservations and idempotency (the native API).
    ReservationNotFound,
    /// The reservation passed its expiry before it was committed.
    ReservationExpired,
    /// The reservation was already committed, voided or expired.
    ReservationClosed,
    /// A commit of more units than were reserved.
    ReservationUnitsExceeded,
    /// An idempotency key re-used with a different request.
    IdempotencyKeyReused,
    // Webhooks.
    WebhookNotFound,
    /// No such event in the tenant's outbox (or no delivery of it pending).
    EventNotFound,
}

/// Refusals of a tenant's Qlik license: only the Qlik surface (and the
/// admin API) name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QlikRefusal {
    /// The tenant has no Qlik license.
    LicenseNotFound,
    /// No seat (or capacity) left in the allotment, or no such allotment.
    NoAvailableAllotment,
    AssignmentNotFound,
    /// The subject already holds an assignment.
    AlreadyAssigned,
    /// The allotment is not assigned to subjects (analyzer_time).
    NotAssignable,
    /// The month's analyzer capacity (with its overage) is spent.
    AnalyzerTimeExhausted,
}

/// Refusals of a tenant's Yext account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YextRefusal {
    /// The tenant has no Yext account, or the path names another account.
    AccountNotFound,
    /// No such (active) pack in the account.
    PackNotFound,
    /// Every license of the pack is assigned.
    NoLicensesLeft,
}

/// Refusals of a tenant's Informatica org.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InfaRefusal {
    /// No org by that id (or the tenant has none).
    OrgNotFound,
    /// An update named a version (ETag) that is no longer current.
    VersionMismatch,
    /// No such custom limit definition.
    LimitNotFound,
    /// The custom limit is used up.
    LimitReached,
    /// A login's user is no longer in the org.
    UserNotFound,
    /// No such session.
    SessionNotFound,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Duplicate(what) => write!(f, "{what} already exists"),
            EngineError::InUse(what) => write!(f, "still referenced by {what}"),
            EngineError::Invalid(field, reason) => write!(f, "{field}: {reason}"),
            EngineError::TooMany(what) => write!(f, "too many {what}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for EngineError {}
