//! `PUT .../settings`: the tenant's auto-assignment flags.

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::Value;

use super::batch::parse_body;
use super::error::{QlikError, R};
use super::wire::settings_json;
use crate::app::App;
use crate::engine::qlik::QlikTenant;
use crate::engine::Command;
use crate::http::{json_value, Resp};

/// The flags a body names change; the others keep their values.
pub(super) async fn put_settings(app: &App, q: &QlikTenant, body: &Bytes) -> R<Resp> {
    let m = parse_body(body)?;
    let flag = |name: &str| -> R<Option<bool>> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(QlikError::bad_request(format!("{name} must be a boolean."))),
        }
    };
    let cmd = Command::QlikSettings {
        tenant_id: q.tenant_id,
        auto_assign_professional: flag("autoAssignProfessional")?,
        auto_assign_analyzer: flag("autoAssignAnalyzer")?,
    };
    app.commit(&cmd).await.map_err(QlikError::from)?;
    Ok(json_value(StatusCode::OK, &settings_json(q)))
}
