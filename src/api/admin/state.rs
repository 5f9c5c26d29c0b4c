//! State fixtures (see `storage::fixtures`): `GET /admin/v1/state` lists
//! them; `POST /admin/v1/state/save` `{"name"}` stores the current state
//! under a name (replacing one of that name); `POST .../restore` `{"name"}`
//! replaces the live state with a fixture's, atomically for requests;
//! `POST .../reset` restores `initial`, the state right after the data
//! directory was first filled (its catalog loaded); `DELETE .../{name}`.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{object, AdminError, R};
use crate::app::{App, StateError};
use crate::engine::time::format_instant;
use crate::http::{json, json_value, Resp};
use crate::storage::fixtures::{FixtureError, FIXTURES_MAX, INITIAL};
use crate::storage::snapshot::SnapshotInfo;

fn error(e: StateError) -> AdminError {
    match e {
        StateError::Clustered => AdminError::new(StatusCode::CONFLICT, "cluster", e.to_string()),
        StateError::Busy => AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()),
        StateError::InsideGate => {
            AdminError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
        StateError::NoDataDirectory => {
            AdminError::new(StatusCode::CONFLICT, "no_data_directory", e.to_string())
        }
        StateError::Fixture(FixtureError::BadName) => AdminError::bad("name", e.to_string()),
        StateError::Fixture(FixtureError::Reserved) => {
            AdminError::new(StatusCode::CONFLICT, "reserved", e.to_string())
        }
        StateError::Fixture(FixtureError::NotFound) => AdminError::not_found("fixture"),
        StateError::Fixture(FixtureError::TooMany) => {
            AdminError::new(StatusCode::CONFLICT, "too_many_fixtures", e.to_string())
        }
        StateError::Fixture(FixtureError::Unreadable(_)) => AdminError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "fixture_unreadable",
            e.to_string(),
        ),
        StateError::Fixture(FixtureError::Io(_)) | StateError::Unavailable(_) => AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        ),
    }
}

/// The `name` of a body `{"name": "..."}` (no other field).
fn name_of(body: Option<&[u8]>) -> R<String> {
    let m = object(body)?;
    if let Some(k) = m.keys().find(|k| k.as_str() != "name") {
        return Err(AdminError::bad(k.clone(), "is not a field of this request"));
    }
    m.get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| AdminError::bad("name", "is required (a string)"))
}

fn described(name: &str, info: &SnapshotInfo) -> Value {
    json!({
        "name": name,
        "record": info.lsn,
        "licenses": info.licenses,
        "features": info.features,
        "devices": info.devices,
        "entities": info.entities,
        "bytes": info.bytes,
    })
}

pub(super) fn list(app: &App) -> R<Resp> {
    let listed = app.list_states().map_err(error)?;
    let items: Vec<Value> = listed
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "bytes": l.bytes,
                "saved_at": format_instant(l.saved_at_ms as i64),
            })
        })
        .collect();
    Ok(json_value(
        StatusCode::OK,
        &json!({ "items": items, "limit": FIXTURES_MAX }),
    ))
}

pub(super) async fn save(app: &App, body: Option<&[u8]>) -> R<Resp> {
    let name = name_of(body)?;
    let info = app.save_state(&name).await.map_err(error)?;
    Ok(json_value(StatusCode::CREATED, &described(&name, &info)))
}

pub(super) async fn restore(app: &std::sync::Arc<App>, body: Option<&[u8]>) -> R<Resp> {
    let name = name_of(body)?;
    restored(app, &name).await
}

/// A reset takes no fields (an empty body or `{}`).
pub(super) async fn reset(app: &std::sync::Arc<App>, body: Option<&[u8]>) -> R<Resp> {
    if body.is_some_and(|b| !b.iter().all(u8::is_ascii_whitespace)) {
        let m = object(body)?;
        if let Some(k) = m.keys().next() {
            return Err(AdminError::bad(k.clone(), "a reset takes no fields"));
        }
    }
    restored(app, INITIAL).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            AdminError::new(
                StatusCode::CONFLICT,
                "no_initial_state",
                "this data directory holds no `initial` fixture: it was first filled by a \
                 Tally without state fixtures; save a fixture and restore it instead",
            )
        } else {
            e
        }
    })
}

async fn restored(app: &std::sync::Arc<App>, name: &str) -> R<Resp> {
    let info = app.restore_state(name).await.map_err(error)?;
    Ok(json_value(StatusCode::OK, &described(name, &info)))
}

pub(super) async fn delete(app: &App, name: &str) -> R<Resp> {
    app.delete_state(name).await.map_err(error)?;
    Ok(json(StatusCode::NO_CONTENT, ""))
}
