//! What the web console (`/ui/`) asks beyond the generic resources: live
//! numbers (`GET /admin/v1/stats`), a search (`GET /admin/v1/search?q=`),
//! and releasing a floating seat (`DELETE
//! /admin/v1/licenses/{id}/floating/{holder}?feature_id=`).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{apply, license, opt_id, AdminError, R};
use crate::app::App;
use crate::engine::Command;
use crate::http::{json_value, Query, Resp};

/// Results a search answers, at most.
pub const SEARCH_RESULTS_MAX: usize = 50;
/// Length of a search, bytes.
pub const SEARCH_BYTES_MAX: usize = 256;

/// `GET /admin/v1/stats`: the engine's totals (the census is reused for
/// `CENSUS_REUSE_MS`, so polling consoles do not walk a million licenses
/// each) and each surface's request counters and latency buckets (the
/// console turns two readings into requests per second and a p99).
pub fn stats(app: &App) -> Resp {
    let now = app.now();
    let census = app.metrics.census(&app.engine, now);
    let mut objects = serde_json::Map::new();
    for (k, n) in app.engine.stats() {
        objects.insert(k.into(), n.into());
    }
    objects.insert("features".into(), census.features.into());
    objects.insert("devices".into(), census.devices.into());
    objects.insert("webhooks".into(), census.webhooks.into());
    let surfaces: Vec<Value> = app
        .metrics
        .surfaces()
        .into_iter()
        .map(|s| {
            json!({"surface": s.surface, "requests": s.requests, "errors": s.errors,
                   "latency_buckets_s": s.buckets})
        })
        .collect();
    json_value(
        StatusCode::OK,
        &json!({
            "objects": objects,
            "floating_seats_held": census.floating_held,
            "meters_near_cap": census.meters_near_cap,
            "reservations_open": census.reservations_open,
            "webhook_queue_depth": census.webhook_pending,
            "surfaces": surfaces,
            "metrics_enabled": app.metrics.enabled,
        }),
    )
}

/// `GET /admin/v1/search?q=`: licenses by key (any tenant) or id, tenants
/// by id or name, Qlik subjects and Yext entities.
pub fn search(app: &App, q: &Query<'_>) -> R<Resp> {
    let text = q.get("q").map(str::trim).unwrap_or("");
    if text.is_empty() || text.len() > SEARCH_BYTES_MAX {
        return Err(AdminError::bad("q", "must be 1 to 256 bytes"));
    }
    let hits: Vec<Value> = app
        .engine
        .search(text, SEARCH_RESULTS_MAX)
        .into_iter()
        .map(|h| json!({"kind": h.kind, "id": h.id, "tenant_id": h.tenant_id, "label": h.label}))
        .collect();
    Ok(json_value(StatusCode::OK, &json!({ "items": hits })))
}

/// `DELETE /admin/v1/licenses/{id}/floating/{holder}` (`?feature_id=` for
/// a feature's pool): frees the holder's seat, as a logged change.
pub async fn release(app: &App, id: &str, holder: &str, q: &Query<'_>) -> R<Resp> {
    let lic = license(app, id)?;
    let feature_id = opt_id(q, "feature_id")?;
    let now = app.now();
    let outcome = apply(
        app,
        Command::FloatingRelease {
            license_id: lic.id,
            feature_id,
            hardware_id: holder.to_string().into(),
            now,
        },
    )
    .await?;
    if let crate::engine::Outcome::Released { held: false, .. } = outcome {
        return Err(AdminError::not_found("floating seat"));
    }
    Ok(json_value(
        StatusCode::OK,
        &super::wire::floating(&lic, app.now()),
    ))
}
