//! What hangs off a license: its features, its devices' blacklist flag and
//! its consumption totals.

use std::borrow::Cow;

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::app::App;
use crate::engine::model::*;
use crate::engine::Command;
use crate::http::{json, json_value, Resp};

use super::{apply, from_value, license, merge, object, parse_id, wire, AdminError, R};

pub(super) async fn create_feature(app: &App, license_id: &str, body: Option<&[u8]>) -> R<Resp> {
    let lic = license(app, license_id)?;
    let mut v = object(body)?;
    if v.remove("id").is_some() {
        return Err(AdminError::bad("id", "ids are assigned by the server"));
    }
    let spec: FeatureSpec = from_value(Value::Object(v))?;
    let id = app.engine.next_id();
    apply(
        app,
        Command::PutFeature {
            license_id: lic.id,
            id,
            spec,
            now: app.now(),
        },
    )
    .await?;
    let f = lic
        .features
        .read()
        .iter()
        .find(|f| f.id == id)
        .cloned()
        .ok_or_else(|| AdminError::not_found("feature"))?;
    Ok(json_value(
        StatusCode::CREATED,
        &wire::feature(&f, app.now()),
    ))
}

pub(super) async fn feature_item(
    app: &App,
    m: &Method,
    license_id: &str,
    fid: &str,
    body: Option<&[u8]>,
) -> R<Resp> {
    let lic = license(app, license_id)?;
    let fid = parse_id(fid, "feature")?;
    let f = lic
        .features
        .read()
        .iter()
        .find(|f| f.id == fid)
        .cloned()
        .ok_or_else(|| AdminError::not_found("feature"))?;
    let now = app.now();
    match *m {
        Method::GET => Ok(json_value(StatusCode::OK, &wire::feature(&f, now))),
        Method::DELETE => {
            apply(
                app,
                Command::DeleteFeature {
                    license_id: lic.id,
                    id: fid,
                    now,
                },
            )
            .await?;
            Ok(json(StatusCode::NO_CONTENT, ""))
        }
        Method::PUT | Method::PATCH => {
            let mut patch = object(body)?;
            patch.remove("id");
            let v = if *m == Method::PATCH {
                let mut cur = serde_json::to_value(&**f.spec.load()).unwrap_or(Value::Null);
                merge(&mut cur, Value::Object(patch));
                cur
            } else {
                Value::Object(patch)
            };
            let spec: FeatureSpec = from_value(v)?;
            apply(
                app,
                Command::PutFeature {
                    license_id: lic.id,
                    id: fid,
                    spec,
                    now,
                },
            )
            .await?;
            Ok(json_value(StatusCode::OK, &wire::feature(&f, now)))
        }
        _ => Err(AdminError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} not allowed here"),
        )),
    }
}

pub(super) async fn blacklist(
    app: &App,
    license_id: &str,
    hw: &str,
    body: Option<&[u8]>,
) -> R<Resp> {
    let lic = license(app, license_id)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        blacklisted: bool,
    }
    let b: Body = from_value(Value::Object(object(body)?))?;
    let cmd = Command::SetDeviceBlacklisted {
        license_id: lic.id,
        hardware_id: Cow::Borrowed(hw),
        blacklisted: b.blacklisted,
        device_id: app.engine.next_id(),
        now: app.now(),
    };
    apply(app, cmd).await?;
    let d = app
        .engine
        .device(&lic, hw)
        .ok_or_else(|| AdminError::not_found("device"))?;
    Ok(json_value(StatusCode::OK, &wire::device(&d)))
}

pub(super) async fn set_consumption(app: &App, license_id: &str, body: Option<&[u8]>) -> R<Resp> {
    let lic = license(app, license_id)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        total: i64,
        #[serde(default)]
        feature_id: Option<Id>,
    }
    let b: Body = from_value(Value::Object(object(body)?))?;
    if b.total < 0 {
        // No meter's total is ever below zero (negative adds stop at zero).
        return Err(AdminError::bad("total", "must not be below zero"));
    }
    apply(
        app,
        Command::SetConsumption {
            license_id: lic.id,
            feature_id: b.feature_id,
            total: b.total,
            now: app.now(),
        },
    )
    .await?;
    Ok(json_value(
        StatusCode::OK,
        &wire::license(&app.engine, &lic, app.now()),
    ))
}
