//! Qlik error bodies: `{"errors": [{"code", "title", "detail"}], "error",
//! "message"}` (the last two deprecated by the vendor, still sent).
//!
//! Codes (see docs/qlik.md for the whole catalogue): the vendor's own
//! LICENSES-011 (no available allotment) and LICENSES-016 (assignment not
//! found), and Tally's for the rest.

use hyper::StatusCode;
use serde_json::json;

use crate::app::CommitError;
use crate::engine::QlikRefusal;
use crate::http::{json_value, Resp};

pub const BAD_REQUEST: &str = "LICENSES-001";
pub const UNAUTHORIZED: &str = "LICENSES-002";
pub const FORBIDDEN: &str = "LICENSES-003";
pub const LICENSE_NOT_FOUND: &str = "LICENSES-004";
pub const RATE_LIMITED: &str = "LICENSES-005";
pub const UNAVAILABLE: &str = "LICENSES-006";
pub const NOT_FOUND: &str = "LICENSES-007";
pub const METHOD_NOT_ALLOWED: &str = "LICENSES-008";
pub const INVALID_QUERY: &str = "LICENSES-009";
pub const NO_ALLOTMENT: &str = "LICENSES-011";
pub const ALREADY_ASSIGNED: &str = "LICENSES-012";
pub const UNKNOWN_TYPE: &str = "LICENSES-013";
pub const NOT_ASSIGNABLE: &str = "LICENSES-014";
pub const INVALID_ITEM: &str = "LICENSES-015";
pub const ASSIGNMENT_NOT_FOUND: &str = "LICENSES-016";
pub const TOO_MANY_ASSIGNMENTS: &str = "LICENSES-017";

#[derive(Debug)]
pub struct QlikError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: Option<String>,
}

impl QlikError {
    fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: Option<String>,
    ) -> Self {
        QlikError {
            status,
            code,
            title,
            detail,
        }
    }
    /// An injected fault (the harness): the vendor's code for the status.
    pub fn fault(status: StatusCode, why: &'static str) -> Self {
        let code = match status.as_u16() {
            429 => RATE_LIMITED,
            401 => UNAUTHORIZED,
            403 => FORBIDDEN,
            404 => NOT_FOUND,
            400..=499 => BAD_REQUEST,
            _ => UNAVAILABLE,
        };
        let (_, message) = crate::http::fault_words(status, why);
        Self::new(
            status,
            code,
            status.canonical_reason().unwrap_or("Error"),
            Some(message.into()),
        )
    }
    pub fn unauthorized(detail: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            UNAUTHORIZED,
            "Unauthorized",
            Some(detail.into()),
        )
    }
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            FORBIDDEN,
            "Insufficient access",
            Some("This action needs an API key with the admin role.".into()),
        )
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "Body is invalid or missing.",
            Some(detail.into()),
        )
    }
    pub fn bad_query(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            INVALID_QUERY,
            "Bad request, invalid query.",
            Some(detail.into()),
        )
    }
    /// A body that could not be read (too large, too slow, broken).
    pub fn body(e: crate::http::BodyError) -> Self {
        let (status, message) = e.status_and_message();
        Self::new(
            status,
            BAD_REQUEST,
            "Body is invalid or missing.",
            Some(message),
        )
    }
    pub fn license_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            LICENSE_NOT_FOUND,
            "License not found.",
            Some("The tenant holds no license.".into()),
        )
    }
    pub fn not_found_endpoint() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            NOT_FOUND,
            "Not found.",
            Some("No such endpoint.".into()),
        )
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            METHOD_NOT_ALLOWED,
            "Method not allowed.",
            None,
        )
    }
    pub fn rate_limited(tier: u8) -> Self {
        let per_minute = if tier == 1 {
            super::TIER1_REQUESTS_PER_MINUTE
        } else {
            super::TIER2_REQUESTS_PER_MINUTE
        };
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            RATE_LIMITED,
            "Too many requests.",
            Some(format!(
                "Tier {tier} allows {per_minute} requests per minute."
            )),
        )
    }

    pub fn response(self) -> Resp {
        crate::app::set_code(self.code);
        let mut e = json!({"code": self.code, "title": self.title});
        if let Some(d) = &self.detail {
            e["detail"] = d.as_str().into();
        }
        json_value(
            self.status,
            &json!({
                "errors": [e],
                "error": self.title,
                "message": self.detail.as_deref().unwrap_or(self.title),
            }),
        )
    }
}

impl From<CommitError> for QlikError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Unavailable => QlikError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "Service unavailable.",
                Some("The change was not made; storage cannot accept changes right now.".into()),
            ),
            CommitError::Engine(crate::engine::EngineError::Qlik(QlikRefusal::LicenseNotFound)) => {
                QlikError::license_not_found()
            }
            CommitError::Engine(e) => QlikError::bad_request(e.to_string()),
        }
    }
}

pub(super) type R<T> = Result<T, QlikError>;
