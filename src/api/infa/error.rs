//! The Informatica surface's one error type: the vendor's
//! `{"error": {"code", "message", "requestId", "details"}}` with its status,
//! and `Retry-After` where the answer asks the client to wait.

use hyper::StatusCode;
use serde_json::json;

use crate::app::CommitError;
use crate::engine::{EngineError, InfaRefusal};
use crate::http::{json_value, Resp};

#[derive(Debug)]
pub struct InfaError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header.
    pub(super) retry_after_s: Option<u64>,
}

impl InfaError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        InfaError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    pub(super) fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "AUTH_01", message)
    }
    pub(super) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AUTH_02", message)
    }
    pub(super) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_01", message)
    }
    pub(super) fn response(self) -> Resp {
        crate::app::set_code(self.code);
        let mut r = json_value(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message,
                               "requestId": crate::util::random_token(22), "details": null}}),
        );
        if let Some(s) = self.retry_after_s {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, s.into());
        }
        r
    }
}

impl From<crate::credentials::Refused> for InfaError {
    fn from(r: crate::credentials::Refused) -> Self {
        match r {
            crate::credentials::Refused::Busy => InfaError {
                retry_after_s: Some(1),
                ..InfaError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SERVICE_02",
                    "Too many logins in progress; try again shortly.",
                )
            },
            crate::credentials::Refused::Throttled { retry_after_ms } => InfaError {
                retry_after_s: Some(((retry_after_ms + 999) / 1000).max(1) as u64),
                ..InfaError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "AUTH_03",
                    "Too many failed logins for this user or address; wait before trying again.",
                )
            },
        }
    }
}

impl From<CommitError> for InfaError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Unavailable => InfaError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_01",
                "Changes cannot be stored right now; the change was not made.",
            ),
            CommitError::Engine(EngineError::Infa(InfaRefusal::VersionMismatch)) => InfaError::new(
                StatusCode::PRECONDITION_FAILED,
                "PRECONDITION_01",
                "The organization's licenses changed since they were read (If-Match).",
            ),
            CommitError::Engine(EngineError::Infa(InfaRefusal::OrgNotFound)) => {
                InfaError::new(StatusCode::NOT_FOUND, "ORG_01", "Organization not found.")
            }
            CommitError::Engine(EngineError::Invalid(field, why)) => {
                InfaError::bad(format!("{field}: {why}."))
            }
            CommitError::Engine(EngineError::Duplicate(what)) => {
                InfaError::bad(format!("Duplicate {what}."))
            }
            CommitError::Engine(e) => InfaError::bad(e.to_string()),
        }
    }
}

pub(super) type R<T> = Result<T, InfaError>;
