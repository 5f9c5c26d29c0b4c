//! The Yext surface's one error type and its codes: every refusal, the
//! engine's included, becomes Yext's envelope with one `errors` entry.

use hyper::StatusCode;
use serde_json::json;

use crate::app::CommitError;
use crate::engine::{EngineError, QlikRefusal, YextRefusal};
use crate::http::{json_value, Resp};

/// A Yext error: HTTP status, code and message (type is always FATAL_ERROR).
#[derive(Debug)]
pub struct YextError {
    status: StatusCode,
    code: u32,
    message: String,
}

/// The `name` of an error entry: Yext's schema has the field but documents
/// no values, so Tally names its own codes.
fn error_name(code: u32) -> &'static str {
    match code {
        INVALID_VERSION => "INVALID_VERSION",
        UNAUTHORIZED => "UNAUTHORIZED",
        FORBIDDEN => "FORBIDDEN",
        PACK_NOT_FOUND => "LICENSE_PACK_NOT_FOUND",
        ASSIGNMENT_NOT_FOUND => "LICENSE_ASSIGNMENT_NOT_FOUND",
        NO_LICENSES_LEFT => "NO_LICENSES_AVAILABLE",
        INVALID_REQUEST => "INVALID_REQUEST",
        INVALID_PAGE => "INVALID_PAGE",
        NOT_FOUND => "NOT_FOUND",
        METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        UNAVAILABLE => "UNAVAILABLE",
        TOO_MANY => "LIMIT_REACHED",
        _ => "ERROR",
    }
}

// Error codes (Tally's; docs/yext.md lists them).
pub(super) const INVALID_VERSION: u32 = 2001;
pub(super) const UNAUTHORIZED: u32 = 2002;
pub(super) const FORBIDDEN: u32 = 2003;
pub(super) const PACK_NOT_FOUND: u32 = 2004;
pub(super) const ASSIGNMENT_NOT_FOUND: u32 = 2005;
pub(super) const NO_LICENSES_LEFT: u32 = 2006;
pub(super) const INVALID_REQUEST: u32 = 2007;
pub(super) const INVALID_PAGE: u32 = 2008;
pub(super) const NOT_FOUND: u32 = 2009;
pub(super) const METHOD_NOT_ALLOWED: u32 = 2010;
pub(super) const UNAVAILABLE: u32 = 2011;
pub(super) const TOO_MANY: u32 = 2012;

impl YextError {
    pub(super) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        YextError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(super) fn bad(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub(super) fn response(self) -> Resp {
        crate::app::set_code(error_name(self.code));
        json_value(
            self.status,
            &json!({
                "meta": {"uuid": crate::util::random_uuid(), "errors": [
                    {"name": error_name(self.code), "code": self.code, "type": "FATAL_ERROR",
                     "message": self.message}
                ]},
                "response": {},
            }),
        )
    }
}

impl From<CommitError> for YextError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::Unavailable => YextError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "Changes cannot be stored right now; the change was not made.",
            ),
            CommitError::Engine(e) => match e {
                EngineError::Yext(YextRefusal::PackNotFound) => YextError::new(
                    StatusCode::NOT_FOUND,
                    PACK_NOT_FOUND,
                    "License pack not found.",
                ),
                EngineError::Qlik(QlikRefusal::AssignmentNotFound) => YextError::new(
                    StatusCode::NOT_FOUND,
                    ASSIGNMENT_NOT_FOUND,
                    "The entity holds no license of this pack.",
                ),
                EngineError::Yext(YextRefusal::NoLicensesLeft) => YextError::new(
                    StatusCode::CONFLICT,
                    NO_LICENSES_LEFT,
                    "No licenses of this pack are left to assign.",
                ),
                EngineError::TooMany(what) => YextError::new(
                    StatusCode::CONFLICT,
                    TOO_MANY,
                    format!("The account's {what} limit is reached."),
                ),
                EngineError::Invalid(field, why) => {
                    YextError::bad(INVALID_REQUEST, format!("{field}: {why}."))
                }
                EngineError::Yext(YextRefusal::AccountNotFound) => {
                    YextError::new(StatusCode::NOT_FOUND, NOT_FOUND, "Account not found.")
                }
                other => YextError::bad(INVALID_REQUEST, other.to_string()),
            },
        }
    }
}

pub(super) type R<T> = Result<T, YextError>;
