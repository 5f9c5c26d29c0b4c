//! LicenseSpring error bodies: `{"status": N, "code": "...", "message": "..."}`.
//! The SDKs raise on any 4xx and read `code`; the codes and statuses here
//! follow LicenseSpring's published lists (License API error responses, the
//! authorization page, the SDK error table and each endpoint's exceptions).
//! Where LicenseSpring publishes no code for a situation Tally distinguishes
//! (a start date in the future, an expired feature, a VM refusal, a full
//! license-level meter, a latched store), the code is Tally's own; docs/licensespring.md
//! marks those with *.

use bytes::Bytes;
use hyper::StatusCode;

use crate::engine::EngineError;
use crate::http::{json, Resp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LicenseSpringError {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
    /// Seconds for a `Retry-After` header (0: none).
    pub retry_after_s: u32,
}

const fn e(status: u16, code: &'static str, message: &'static str) -> LicenseSpringError {
    LicenseSpringError {
        status,
        code,
        message,
        retry_after_s: 0,
    }
}

// Authentication.
pub const MISSING_HEADERS: LicenseSpringError =
    e(400, "missing_headers", "Some headers are missing");
/// Tally's own: a header the request may carry once came twice.
pub const INVALID_HEADERS: LicenseSpringError =
    e(400, "invalid_headers", "A header is repeated or malformed");
pub const AUTHORIZATION_MALFORMED: LicenseSpringError = e(
    400,
    "authorization_invalid_headers",
    "Authorization header is malformed: expected algorithm, headers, signature and apikey",
);
pub const UNSUPPORTED_ALGORITHM: LicenseSpringError = e(
    400,
    "hmac_required",
    "Only algorithm hmac-sha256 over headers \"date\" is supported",
);
pub const DATE_INVALID: LicenseSpringError = e(
    400,
    "date_header_invalid",
    "Date header is not an RFC 7231 date",
);
pub const DATE_DIFFERENCE: LicenseSpringError = e(
    400,
    "date_header_diff",
    "Date header differs from server time by more than 15 minutes",
);
pub const INVALID_SIGNATURE: LicenseSpringError = e(
    401,
    "signature_mismatch",
    "Request signature does not match",
);
pub const INVALID_API_KEY: LicenseSpringError = e(400, "invalid_api_key", "API key is invalid");
pub const API_KEY_REVOKED: LicenseSpringError =
    e(400, "revoked_api_key", "API key has been revoked");
pub const READ_ONLY_KEY: LicenseSpringError = e(
    400,
    "read_only_api_key",
    "API key is read-only and cannot make changes",
);
// Request.
pub const MISSING_PARAMETERS: LicenseSpringError =
    e(400, "missing_parameters", "Some parameters are missing");
pub const INVALID_PARAMETERS: LicenseSpringError =
    e(400, "validation_error", "Some parameters are invalid");
pub const INVALID_JSON: LicenseSpringError =
    e(400, "invalid_json", "Request body is not a JSON object");
pub const BODY_TOO_LARGE: LicenseSpringError =
    e(413, "request_too_large", "Request body is too large");
pub const REQUEST_TIMEOUT: LicenseSpringError = e(
    408,
    "request_timeout",
    "The request body did not arrive in time",
);
pub const NOT_FOUND: LicenseSpringError = e(404, "not_found", "No such endpoint");
pub const METHOD_NOT_ALLOWED: LicenseSpringError = e(
    405,
    "method_not_allowed",
    "Method not allowed for this endpoint",
);
pub const INTERNAL: LicenseSpringError = e(500, "internal_error", "Internal error");
// Entitlements.
pub const UNKNOWN_PRODUCT: LicenseSpringError =
    e(400, "unknown_product", "Provided product was not found");
pub const LICENSE_NOT_FOUND: LicenseSpringError = e(
    400,
    "license_not_found",
    "License with the provided license key or license user not found",
);
pub const WRONG_CREDENTIALS: LicenseSpringError =
    e(400, "wrong_credentials", "Wrong username or password");
pub const LICENSE_NOT_ENABLED: LicenseSpringError =
    e(400, "license_not_enabled", "The license is not enabled");
pub const LICENSE_NOT_ACTIVE: LicenseSpringError =
    e(400, "license_not_active", "The license is not active");
pub const LICENSE_NOT_STARTED: LicenseSpringError = e(
    400,
    "license_not_started",
    "The license start date is in the future",
);
pub const LICENSE_EXPIRED: LicenseSpringError =
    e(400, "license_expired", "The license has expired");
pub const DEVICE_NOT_FOUND: LicenseSpringError = e(
    400,
    "device_not_found",
    "An active device matching the hardware_id not found",
);
pub const BLACKLISTED: LicenseSpringError = e(400, "blacklisted", "This device is blacklisted");
pub const INVALID_FEATURE: LicenseSpringError = e(
    400,
    "invalid_license_feature_code",
    "License feature code is invalid or not assigned to the license",
);
pub const FEATURE_EXPIRED: LicenseSpringError = e(
    400,
    "license_feature_expired",
    "The license feature has expired",
);
pub const FLOATING_NOT_AVAILABLE: LicenseSpringError = e(
    400,
    "floating_not_available",
    "No available slots for floating license",
);
pub const NOT_FLOATING: LicenseSpringError = e(
    400,
    "license_not_floating",
    "The license or feature is not floating",
);
pub const ACTIVATIONS_LIMIT: LicenseSpringError = e(
    400,
    "license_activated_max_times",
    "The license has reached its maximum number of activations",
);
pub const TRANSFER_LIMIT: LicenseSpringError = e(
    400,
    "license_transferred_max_times",
    "The license has reached its maximum number of transfers",
);
pub const VM_NOT_ALLOWED: LicenseSpringError = e(
    400,
    "vm_not_allowed",
    "Activation on virtual machines is not allowed for this license",
);
pub const BORROW_NOT_ALLOWED: LicenseSpringError = e(
    400,
    "license_borrow_not_allowed",
    "Borrowing is not allowed for this license",
);
pub const BORROW_TOO_LONG: LicenseSpringError = e(
    400,
    "borrow_until_not_valid",
    "borrowed_until is past the maximum borrow time",
);
pub const BORROW_IN_PAST: LicenseSpringError = e(
    400,
    "borrow_until_not_valid",
    "borrowed_until must be in the future",
);
pub const NOT_CONSUMPTION: LicenseSpringError = e(
    400,
    "license_not_consumption",
    "The license or feature is not of consumption type",
);
pub const CONSUMPTION_LIMIT: LicenseSpringError = e(
    400,
    "not_enough_consumptions",
    "Not enough consumptions left",
);
/// The published code for a feature meter that is spent.
pub const FEATURE_CONSUMPTION_LIMIT: LicenseSpringError = e(
    400,
    "feature_not_enough_consumptions",
    "Not enough consumptions left",
);
/// The published code for a floating operation on a feature that is not floating.
pub const FEATURE_NOT_FLOATING: LicenseSpringError = e(
    400,
    "feature_not_floating",
    "License feature is not floating cloud feature.",
);
pub const NEGATIVE_CONSUMPTION: LicenseSpringError = e(
    400,
    "negative_consumptions_not_allowed",
    "Negative consumptions are not allowed for this license",
);
pub const CONSUMPTION_BELOW_ZERO: LicenseSpringError = e(
    400,
    "consumption_below_zero",
    "Consumption total cannot go below zero",
);
pub const TRIAL_NOT_ALLOWED: LicenseSpringError = e(
    400,
    "trial_not_allowed",
    "This product does not offer trials",
);
pub const CUSTOMER_NOT_FOUND: LicenseSpringError =
    e(400, "customer_not_found", "Customer not found");
/// Tally's own: every password worker is busy and the queue is full.
pub const PASSWORDS_BUSY: LicenseSpringError = e(
    503,
    "service_busy",
    "Too many password checks in progress; try again shortly",
);
/// Tally's own: too many failed password checks for this user or address.
pub const TOO_MANY_ATTEMPTS: LicenseSpringError = e(
    429,
    "too_many_attempts",
    "Too many failed password attempts; wait before trying again",
);
pub const ACTIVE_LICENSE_REQUIRED: LicenseSpringError =
    e(400, "active_license_required", "Active license is required");
pub const VERSION_NOT_FOUND: LicenseSpringError = e(
    400,
    "version_not_found",
    "File at requested version does not exist",
);
/// Tally has no identity provider: every customer account is one without SSO.
pub const SSO_NOT_CONFIGURED: LicenseSpringError = e(
    400,
    "sso_customer_account_url_error",
    "Single sign-on is not set up for this customer account",
);
pub const SSO_TOKEN_ERROR: LicenseSpringError = e(
    400,
    "sso_customer_account_token_error",
    "Single sign-on token is invalid: single sign-on is not set up",
);
/// Tally's own: the product named as a bundle has no bundled products.
pub const NOT_A_BUNDLE: LicenseSpringError =
    e(400, "product_not_bundle", "Product is not a bundle");
pub const MISSING_CONTENT: LicenseSpringError =
    e(400, "missing_content", "Offline request is empty");
pub const OFFLINE_REQUEST_INVALID: LicenseSpringError = e(
    400,
    "authorization_missing_params",
    "Offline request is not base64 of a JSON request with its data, signature, date and api_key",
);
pub const OFFLINE_SIGNATURE_MISMATCH: LicenseSpringError = e(
    401,
    "signature_mismatch",
    "Offline request signature does not match",
);
pub const TOO_MANY: LicenseSpringError = e(400, "limit_exceeded", "Too many items");
/// A failed write latches the server read-only (see storage); mutations answer this.
pub const UNAVAILABLE: LicenseSpringError = e(
    503,
    "service_unavailable",
    "Server cannot accept changes right now",
);

impl From<EngineError> for LicenseSpringError {
    fn from(err: EngineError) -> Self {
        use EngineError::*;
        match err {
            ProductNotFound => UNKNOWN_PRODUCT,
            LicenseNotFound | UserNotFound => LICENSE_NOT_FOUND,
            CustomerNotFound => CUSTOMER_NOT_FOUND,
            FeatureNotFound => INVALID_FEATURE,
            DeviceNotFound => DEVICE_NOT_FOUND,
            LicenseNotEnabled => LICENSE_NOT_ENABLED,
            LicenseNotActive => LICENSE_NOT_ACTIVE,
            LicenseNotStarted => LICENSE_NOT_STARTED,
            LicenseExpired => LICENSE_EXPIRED,
            FeatureExpired => FEATURE_EXPIRED,
            DeviceBlacklisted => BLACKLISTED,
            VmNotAllowed => VM_NOT_ALLOWED,
            ActivationLimitReached => ACTIVATIONS_LIMIT,
            TransferLimitReached => TRANSFER_LIMIT,
            FloatingNotAvailable => FLOATING_NOT_AVAILABLE,
            NotFloating => NOT_FLOATING,
            FeatureNotFloating => FEATURE_NOT_FLOATING,
            BorrowNotAllowed => BORROW_NOT_ALLOWED,
            BorrowTooLong => BORROW_TOO_LONG,
            BorrowInPast => BORROW_IN_PAST,
            NotConsumption => NOT_CONSUMPTION,
            ConsumptionLimitReached | ConsumptionOverflow => CONSUMPTION_LIMIT,
            FeatureConsumptionLimitReached => FEATURE_CONSUMPTION_LIMIT,
            NegativeConsumptionNotAllowed => NEGATIVE_CONSUMPTION,
            ConsumptionBelowZero => CONSUMPTION_BELOW_ZERO,
            TooMany(_) => TOO_MANY,
            Invalid(..) => INVALID_PARAMETERS,
            TenantNotFound | ApiKeyNotFound | Duplicate(_) | InUse(_) => INTERNAL,
            // Other surfaces' state is not reachable from here.
            Qlik(_) | Yext(_) | Infa(_) => INTERNAL,
            // Native API state is not reachable from here.
            ReservationNotFound
            | ReservationExpired
            | ReservationClosed
            | ReservationUnitsExceeded
            | IdempotencyKeyReused
            | WebhookNotFound
            | EventNotFound => INTERNAL,
        }
    }
}

/// A change the app did not make: the engine's refusal, or storage that
/// cannot take changes.
impl From<crate::app::CommitError> for LicenseSpringError {
    fn from(e: crate::app::CommitError) -> Self {
        match e {
            crate::app::CommitError::Engine(e) => LicenseSpringError::from(e),
            crate::app::CommitError::Unavailable => UNAVAILABLE,
        }
    }
}

impl From<crate::credentials::Refused> for LicenseSpringError {
    fn from(r: crate::credentials::Refused) -> Self {
        match r {
            crate::credentials::Refused::Busy => LicenseSpringError {
                retry_after_s: 1,
                ..PASSWORDS_BUSY
            },
            crate::credentials::Refused::Throttled { retry_after_ms } => LicenseSpringError {
                retry_after_s: ((retry_after_ms + 999) / 1000).clamp(1, u32::MAX as i64) as u32,
                ..TOO_MANY_ATTEMPTS
            },
        }
    }
}

impl LicenseSpringError {
    /// The error body; built from constants, so it never fails.
    pub fn response(self) -> Resp {
        crate::app::set_code(self.code);
        let body = format!(
            r#"{{"status":{},"code":"{}","message":"{}"}}"#,
            self.status,
            self.code,
            self.message.replace('"', "\\\"")
        );
        let mut r = json(
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST),
            Bytes::from(body),
        );
        if self.retry_after_s > 0 {
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, self.retry_after_s.into());
        }
        r
    }
}
