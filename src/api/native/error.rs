//! Native API errors: one shape, `application/problem+json` (RFC 9457):
//! `type` (`urn:tally:problem:<code>`), `title`, `status`, `detail`, and
//! `code`, the stable name a client matches on. The codes and their statuses
//! are tabled in `docs/native.md`.

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::StatusCode;
use serde_json::json;

use crate::app::CommitError;
use crate::engine::EngineError;
use crate::http::{BodyError, Resp};

pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
}

impl NativeError {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        NativeError {
            status,
            code,
            title,
            detail: String::new(),
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// A request the API cannot read: `detail` says what is wrong.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request",
        )
        .detail(detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").detail(detail)
    }

    pub fn not_found(code: &'static str, title: &'static str) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, title)
    }

    /// The body as JSON (also one result of a batch).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = json!({
            "type": format!("urn:tally:problem:{}", self.code),
            "title": self.title,
            "status": self.status.as_u16(),
            "code": self.code,
        });
        if !self.detail.is_empty() {
            v["detail"] = self.detail.clone().into();
        }
        v
    }

    pub fn response(&self) -> Resp {
        crate::app::set_code(self.code);
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        let mut r = hyper::Response::new(crate::http::Body::full(Bytes::from(body)));
        *r.status_mut() = self.status;
        r.headers_mut().insert(CONTENT_TYPE, PROBLEM_JSON);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<BodyError> for NativeError {
    fn from(e: BodyError) -> Self {
        let (status, message) = e.status_and_message();
        let code = match e {
            BodyError::TooLarge(_) => "payload_too_large",
            BodyError::TimedOut => "request_timeout",
            BodyError::Read => "invalid_request",
        };
        Self::new(status, code, "The request body was refused").detail(message)
    }
}

impl From<CommitError> for NativeError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Engine(e) => e.into(),
            CommitError::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Changes cannot be stored right now",
            )
            .detail("storage failed or the server is stopping; reads still work"),
        }
    }
}

/// The code, status and title of an engine refusal.
#[allow(clippy::too_many_lines, reason = "the table of refusals, one arm each")]
pub fn refusal(e: EngineError) -> (StatusCode, &'static str, &'static str) {
    use EngineError::*;
    const NF: StatusCode = StatusCode::NOT_FOUND;
    const CONFLICT: StatusCode = StatusCode::CONFLICT;
    match e {
        TenantNotFound | ApiKeyNotFound => (NF, "not_found", "Not found"),
        ProductNotFound => (NF, "product_not_found", "No such product"),
        CustomerNotFound => (NF, "customer_not_found", "No such customer"),
        UserNotFound => (NF, "user_not_found", "No such license user"),
        LicenseNotFound => (NF, "license_not_found", "No such license"),
        FeatureNotFound => (NF, "feature_not_found", "No such feature on this license"),
        DeviceNotFound => (
            NF,
            "device_not_found",
            "The device is not activated on this license",
        ),
        ReservationNotFound => (NF, "reservation_not_found", "No such reservation"),
        LicenseNotEnabled => (CONFLICT, "license_not_enabled", "The license is disabled"),
        LicenseNotActive => (CONFLICT, "license_not_active", "The license is not active"),
        LicenseNotStarted => (
            CONFLICT,
            "license_not_started",
            "The license has not started",
        ),
        LicenseExpired => (CONFLICT, "license_expired", "The license has expired"),
        FeatureExpired => (CONFLICT, "feature_expired", "The feature has expired"),
        DeviceBlacklisted => (CONFLICT, "device_blacklisted", "The device is blacklisted"),
        VmNotAllowed => (
            CONFLICT,
            "vm_not_allowed",
            "Virtual machines are not allowed",
        ),
        ActivationLimitReached => (
            CONFLICT,
            "activation_limit_reached",
            "Every activation seat is taken",
        ),
        TransferLimitReached => (
            CONFLICT,
            "transfer_limit_reached",
            "The license's transfers are used up",
        ),
        FloatingNotAvailable => (
            CONFLICT,
            "floating_not_available",
            "Every floating seat is taken",
        ),
        NotFloating | FeatureNotFloating => {
            (CONFLICT, "not_floating", "The feature does not float")
        }
        BorrowNotAllowed => (CONFLICT, "borrow_not_allowed", "Borrowing is not allowed"),
        BorrowTooLong => (
            CONFLICT,
            "borrow_too_long",
            "Borrowed for longer than allowed",
        ),
        BorrowInPast => (CONFLICT, "borrow_in_past", "Borrowed until a past instant"),
        NotConsumption => (
            CONFLICT,
            "not_consumption",
            "The feature does not meter usage",
        ),
        ConsumptionLimitReached | FeatureConsumptionLimitReached | ConsumptionOverflow => (
            CONFLICT,
            "consumption_limit_reached",
            "Not enough units remain",
        ),
        NegativeConsumptionNotAllowed => (
            CONFLICT,
            "negative_not_allowed",
            "Negative usage is not allowed on this feature",
        ),
        ConsumptionBelowZero => (CONFLICT, "below_zero", "Usage cannot go below zero"),
        ReservationExpired => (
            CONFLICT,
            "reservation_expired",
            "The reservation has expired",
        ),
        ReservationClosed => (
            CONFLICT,
            "reservation_closed",
            "The reservation was already committed or voided",
        ),
        ReservationUnitsExceeded => (
            CONFLICT,
            "reservation_units_exceeded",
            "More units than were reserved",
        ),
        IdempotencyKeyReused => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "The idempotency key was used for another request",
        ),
        WebhookNotFound => (
            StatusCode::NOT_FOUND,
            "webhook_not_found",
            "No such webhook",
        ),
        EventNotFound => (
            StatusCode::NOT_FOUND,
            "event_not_found",
            "No such event in this webhook's outbox",
        ),
        TooMany(_) => (CONFLICT, "limit_reached", "A limit was reached"),
        Invalid(..) => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request",
        ),
        Duplicate(_) | InUse(_) => (CONFLICT, "conflict", "Conflict"),
        Qlik(_) | Yext(_) | Infa(_) => (CONFLICT, "conflict", "Conflict"),
    }
}

impl From<EngineError> for NativeError {
    fn from(e: EngineError) -> Self {
        let (status, code, title) = refusal(e);
        let detail = match e {
            EngineError::Invalid(field, reason) => format!("{field}: {reason}"),
            EngineError::TooMany(what) => format!("too many {what}"),
            _ => String::new(),
        };
        NativeError {
            status,
            code,
            title,
            detail,
        }
    }
}
