//! The harness's fault rules: `GET /admin/v1/faults` (the rules with their
//! hits), `PUT /admin/v1/faults` `{"rules": [...]}` (replaces them all, or
//! none if one is wrong), `DELETE /admin/v1/faults`. See docs/harness.md.

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{from_value, object, AdminError, R};
use crate::app::App;
use crate::faults::Rule;
use crate::http::{json, json_value, Resp};

fn listing(app: &App) -> Value {
    let rules: Vec<Value> = app
        .faults
        .rules()
        .iter()
        .map(|a| {
            let mut v = json!(a.rule);
            v["hits"] = a.hits.load(std::sync::atomic::Ordering::Relaxed).into();
            v
        })
        .collect();
    json!({ "rules": rules })
}

pub(super) fn get(app: &App) -> R<Resp> {
    Ok(json_value(StatusCode::OK, &listing(app)))
}

pub(super) fn put(app: &App, body: Option<&[u8]>) -> R<Resp> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        rules: Vec<Rule>,
    }
    let b: Body = from_value(Value::Object(object(body)?))?;
    let rules = b.rules;
    app.faults
        .set(rules, app.now())
        .map_err(|e| AdminError::bad("rules", e))?;
    Ok(json_value(StatusCode::OK, &listing(app)))
}

pub(super) fn delete(app: &App) -> R<Resp> {
    let _ = app.faults.set(Vec::new(), app.now());
    Ok(json(StatusCode::NO_CONTENT, ""))
}
