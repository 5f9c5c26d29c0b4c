//! Admin API errors: `{"error": {"code", "message", "path"?}}`.

use hyper::StatusCode;
use serde_json::json;

use crate::engine::EngineError;
use crate::engine::{InfaRefusal, QlikRefusal, YextRefusal};
use crate::http::{json_value, Resp};

#[derive(Debug)]
pub struct AdminError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub path: Option<String>,
}

impl AdminError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AdminError {
            status,
            code,
            message: message.into(),
            path: None,
        }
    }
    pub fn bad(path: impl Into<String>, message: impl Into<String>) -> Self {
        AdminError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: message.into(),
            path: Some(path.into()),
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn into_response(self) -> Resp {
        crate::app::set_code(self.code);
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(p) = self.path {
            e["path"] = p.into();
        }
        json_value(self.status, &json!({ "error": e }))
    }
}

/// A change the app did not make: the engine's refusal, or storage that
/// cannot take changes (503; reads go on).
impl From<crate::app::CommitError> for AdminError {
    fn from(e: crate::app::CommitError) -> Self {
        match e {
            crate::app::CommitError::Engine(e) => AdminError::from(e),
            crate::app::CommitError::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "changes cannot be stored right now (storage failed); reads still work",
            ),
        }
    }
}

/// The password workers are busy (admin writes that hash passwords).
impl From<crate::credentials::Refused> for AdminError {
    fn from(_: crate::credentials::Refused) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many password hashes in progress; try again shortly",
        )
    }
}

/// Maps an engine refusal of an admin command. Unknown ids referenced from a
/// body are the body's fault (400 at that field); duplicates and objects still
/// in use conflict (409).
impl From<EngineError> for AdminError {
    fn from(e: EngineError) -> Self {
        use EngineError::*;
        match e {
            TenantNotFound => Self::bad("tenant_id", "no such tenant"),
            ProductNotFound => Self::bad("product_id", "no such product"),
            CustomerNotFound => Self::bad("customer_id", "no such customer"),
            UserNotFound => Self::bad("user_id", "no such license user in this tenant"),
            LicenseNotFound => Self::not_found("license"),
            FeatureNotFound => Self::not_found("feature"),
            DeviceNotFound => Self::not_found("device"),
            ApiKeyNotFound => Self::not_found("api key"),
            WebhookNotFound => Self::not_found("webhook"),
            EventNotFound => Self::not_found("event"),
            Qlik(QlikRefusal::LicenseNotFound) => Self::not_found("qlik license"),
            Qlik(QlikRefusal::AssignmentNotFound) => Self::not_found("assignment"),
            Yext(YextRefusal::AccountNotFound) => Self::not_found("yext account"),
            Yext(YextRefusal::PackNotFound) => Self::not_found("license pack"),
            Infa(InfaRefusal::OrgNotFound) => Self::not_found("informatica org"),
            Infa(InfaRefusal::LimitNotFound) => Self::not_found("custom limit"),
            Duplicate(what) => Self::new(
                StatusCode::CONFLICT,
                "duplicate",
                format!("{what} already exists"),
            ),
            InUse(what) => Self::new(
                StatusCode::CONFLICT,
                "in_use",
                format!("still referenced by {what}"),
            ),
            Invalid(field, reason) => Self::bad(field, reason),
            TooMany(what) => Self::new(
                StatusCode::BAD_REQUEST,
                "too_many",
                format!("too many {what}"),
            ),
            other => Self::new(StatusCode::CONFLICT, "refused", format!("{other}")),
        }
    }
}
