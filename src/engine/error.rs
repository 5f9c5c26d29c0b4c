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
    // Qlik allotments.
    /// The tenant has no Qlik license.
    QlikLicenseNotFound,
    /// No seat (or capacity) left in the allotment, or no such allotment.
    NoAvailableAllotment,
    AssignmentNotFound,
    /// The subject already holds an assignment.
    AlreadyAssigned,
    /// The allotment is not assigned to subjects (analyzer_time).
    NotAssignable,
    /// The month's analyzer capacity (with its overage) is spent.
    AnalyzerTimeExhausted,
    // Yext license packs.
    /// The tenant has no Yext account, or the path names another account.
    YextAccountNotFound,
    /// No such (active) pack in the account.
    PackNotFound,
    /// Every license of the pack is assigned.
    NoLicensesLeft,
    // Informatica orgs.
    /// No org by that id (or the tenant has none).
    InfaOrgNotFound,
    /// An update named a version (ETag) that is no longer current.
    VersionMismatch,
    /// No such custom limit definition.
    LimitNotFound,
    /// The custom limit is used up.
    LimitReached,
    // Admin.
    Duplicate(&'static str),
    /// The object is still referenced (e.g. a product with licenses).
    InUse(&'static str),
    /// A spec field is invalid: (field path, reason).
    Invalid(&'static str, &'static str),
    /// Device variables past their limit.
    TooMany(&'static str),
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
