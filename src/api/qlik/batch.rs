//! The assignment actions `add`, `delete` and `update`: each item of a batch
//! is one engine command, and the answer is a 207 with one result per item.

use std::borrow::Cow;

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Map, Value};

use super::error::{self, QlikError, R};
use super::BATCH_ITEMS_MAX;
use crate::app::App;
use crate::app::CommitError;
use crate::engine::qlik::{AllotmentKind, QlikTenant};
use crate::engine::time::Millis;
use crate::engine::QlikRefusal;
use crate::engine::{Command, EngineError, Outcome};
use crate::http::{json_value, Resp};

pub(super) fn parse_body(body: &Bytes) -> R<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(QlikError::bad_request("Body must be a JSON object.")),
        Err(e) => Err(QlikError::bad_request(format!(
            "Body is not valid JSON: {e}."
        ))),
    }
}

/// The body's batch array under `name`, within [`BATCH_ITEMS_MAX`].
pub(super) fn batch(body: &Bytes, name: &str) -> R<Vec<Value>> {
    let mut m = parse_body(body)?;
    match m.remove(name) {
        Some(Value::Array(items)) if items.len() <= BATCH_ITEMS_MAX => Ok(items),
        Some(Value::Array(items)) => Err(QlikError::bad_request(format!(
            "{name} holds {} items; at most {BATCH_ITEMS_MAX} per request.",
            items.len()
        ))),
        Some(_) => Err(QlikError::bad_request(format!("{name} must be an array."))),
        None => Err(QlikError::bad_request(format!(
            "Body lacks the {name} array."
        ))),
    }
}

/// A string field of a batch item: Ok(None) when absent or null.
pub(super) fn field<'a>(item: &'a Value, name: &str) -> Result<Option<&'a str>, ItemError> {
    match item.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ItemError::invalid(format!("{name} must be a string."))),
    }
}

pub(super) fn kind_field(item: &Value, name: &str) -> Result<Option<AllotmentKind>, ItemError> {
    match field(item, name)? {
        None => Ok(None),
        Some(t) => AllotmentKind::parse(t)
            .map(Some)
            .ok_or(ItemError::unknown_type(t)),
    }
}

/// One item's refusal inside a 207.
pub(super) struct ItemError {
    status: u16,
    code: &'static str,
    title: Cow<'static, str>,
}

impl ItemError {
    fn invalid(title: String) -> Self {
        ItemError {
            status: 400,
            code: error::INVALID_ITEM,
            title: title.into(),
        }
    }
    fn unknown_type(t: &str) -> Self {
        ItemError {
            status: 400,
            code: error::UNKNOWN_TYPE,
            title: format!("Unknown allotment type '{t}'.").into(),
        }
    }
}

impl From<CommitError> for ItemError {
    fn from(e: CommitError) -> Self {
        let (status, code, title) = match e {
            CommitError::Unavailable => (
                503,
                error::UNAVAILABLE,
                "Service unavailable, the change was not made.",
            ),
            CommitError::Engine(e) => match e {
                EngineError::Qlik(QlikRefusal::NoAvailableAllotment) => (
                    403,
                    error::NO_ALLOTMENT,
                    "No available allotment error, No available allotment.",
                ),
                EngineError::Qlik(QlikRefusal::AssignmentNotFound) => {
                    (404, error::ASSIGNMENT_NOT_FOUND, "Assignment not found.")
                }
                EngineError::Qlik(QlikRefusal::AlreadyAssigned) => (
                    409,
                    error::ALREADY_ASSIGNED,
                    "Subject already has an assignment.",
                ),
                EngineError::Qlik(QlikRefusal::NotAssignable) => (
                    400,
                    error::NOT_ASSIGNABLE,
                    "Allotment type cannot be assigned.",
                ),
                EngineError::TooMany(_) => (
                    403,
                    error::TOO_MANY_ASSIGNMENTS,
                    "Assignment limit of the tenant reached.",
                ),
                EngineError::Qlik(QlikRefusal::LicenseNotFound) => {
                    (404, error::LICENSE_NOT_FOUND, "License not found.")
                }
                EngineError::Invalid(..) => (400, error::INVALID_ITEM, "Invalid subject."),
                _ => (400, error::INVALID_ITEM, "Invalid assignment."),
            },
        };
        ItemError {
            status,
            code,
            title: title.into(),
        }
    }
}

/// Adds `code` and `title` to a result item.
pub(super) fn failed(mut v: Value, e: ItemError) -> Value {
    v["status"] = e.status.into();
    v["code"] = e.code.into();
    v["title"] = e.title.into();
    v
}

pub(super) fn multi_status(results: Vec<Value>) -> Resp {
    json_value(StatusCode::MULTI_STATUS, &json!({ "data": results }))
}

/// Echo of an item's string field into its result (when it is a string).
pub(super) fn echo(v: &mut Value, item: &Value, from: &str, to: &str) {
    if let Some(Value::String(s)) = item.get(from) {
        v[to] = s.as_str().into();
    }
}

/// An add or delete item's `subject` and `type`, both required.
pub(super) fn subject_and_type(item: &Value) -> Result<(&str, AllotmentKind), ItemError> {
    let kind =
        kind_field(item, "type")?.ok_or_else(|| ItemError::invalid("type is required.".into()))?;
    let subject =
        field(item, "subject")?.ok_or_else(|| ItemError::invalid("subject is required.".into()))?;
    Ok((subject, kind))
}

/// Add and delete: each item makes one command from its subject and type;
/// a success answers `ok_status`.
pub(super) async fn simple_batch(
    app: &App,
    body: &Bytes,
    name: &str,
    ok_status: u16,
    command: impl for<'a> Fn(&'a str, AllotmentKind) -> Command<'a>,
) -> R<Resp> {
    let items = batch(body, name)?;
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        let mut v = json!({});
        echo(&mut v, item, "type", "type");
        echo(&mut v, item, "subject", "subject");
        let r = match subject_and_type(item) {
            Ok((subject, kind)) => app
                .commit(&command(subject, kind))
                .await
                .map_err(ItemError::from),
            Err(e) => Err(e),
        };
        results.push(match r {
            Ok(_) => {
                v["status"] = ok_status.into();
                v
            }
            Err(e) => failed(v, e),
        });
    }
    Ok(multi_status(results))
}

pub(super) async fn add(app: &App, q: &QlikTenant, body: &Bytes, now: Millis) -> R<Resp> {
    let tenant_id = q.tenant_id;
    simple_batch(app, body, "add", 201, |subject, kind| Command::QlikAssign {
        tenant_id,
        subject: Cow::Borrowed(subject),
        kind,
        now,
    })
    .await
}

pub(super) async fn delete(app: &App, q: &QlikTenant, body: &Bytes) -> R<Resp> {
    let tenant_id = q.tenant_id;
    simple_batch(app, body, "delete", 200, |subject, kind| {
        Command::QlikUnassign {
            tenant_id,
            subject: Cow::Borrowed(subject),
            kind,
        }
    })
    .await
}

pub(super) async fn update(app: &App, q: &QlikTenant, body: &Bytes, now: Millis) -> R<Resp> {
    let items = batch(body, "update")?;
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        let mut v = json!({});
        echo(&mut v, item, "type", "type");
        echo(&mut v, item, "subject", "subject");
        echo(&mut v, item, "sourceType", "sourceType");
        echo(&mut v, item, "sourceSubject", "sourceSubject");
        let r = async {
            let subject = field(item, "subject")?
                .ok_or_else(|| ItemError::invalid("subject is required.".into()))?;
            let kind = kind_field(item, "type")?;
            let source_kind = kind_field(item, "sourceType")?;
            let source_subject = field(item, "sourceSubject")?.unwrap_or(subject);
            if kind.is_none() && source_subject == subject {
                return Err(ItemError::invalid(
                    "Nothing to update: give type or sourceSubject.".into(),
                ));
            }
            let cmd = Command::QlikUpdate {
                tenant_id: q.tenant_id,
                source_subject: Cow::Borrowed(source_subject),
                source_kind,
                subject: Cow::Borrowed(subject),
                kind,
                now,
            };
            let out = app.commit(&cmd).await.map_err(ItemError::from)?;
            Ok(matches!(out, Outcome::Assigned { created: true, .. }))
        }
        .await;
        results.push(match r {
            Ok(created) => {
                v["status"] = if created { 201 } else { 200 }.into();
                if v.get("type").is_none() {
                    if let Some(a) = q.book.lock().assignments.get(
                        item.get("subject")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    ) {
                        v["type"] = a.kind.as_str().into();
                    }
                }
                v
            }
            Err(e) => failed(v, e),
        });
    }
    Ok(multi_status(results))
}
