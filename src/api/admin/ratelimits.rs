//! The emulated rate limits (`--emulate-rate-limits`): `GET
//! /admin/v1/rate-limits` (the defaults with their sources, and the
//! windows' counters), `DELETE /admin/v1/rate-limits` (counts start again),
//! `GET|PUT /admin/v1/tenants/{id}/rate-limits` (a tenant's overrides:
//! `{"licensespring"|"yext"|"informatica": {"limit", "window_ms"} | null}`).

use hyper::StatusCode;
use serde_json::{json, Value};

use super::{existing_tenant, object, AdminError, R};
use crate::app::App;
use crate::http::{json, json_value, Resp};
use crate::ratelimit::{self as rl, Limit};

/// Counters a read answers, at most.
pub const RATE_COUNTERS_PAGE_MAX: usize = 1_000;
/// Longest window of an override, ms (a day).
pub const RATE_WINDOW_MS_MAX: u64 = 86_400_000;

const SURFACES: [&str; 3] = ["licensespring", "yext", "informatica"];

pub(super) fn get(app: &App) -> R<Resp> {
    Ok(json_value(
        StatusCode::OK,
        &json!({
            "emulated": app.emulate_rate_limits,
            "defaults": [
                {"surface": "licensespring", "unit": "tenant", "limit": rl::LICENSESPRING_REQUESTS_PER_MINUTE,
                 "window_ms": 60_000, "rolling": true,
                 "source": "https://docs.licensespring.com/license-api/rate-limiting"},
                {"surface": "licensespring", "unit": "api_key", "limit": rl::LICENSESPRING_REQUESTS_PER_KEY_PER_SECOND,
                 "window_ms": 1_000, "rolling": false,
                 "source": "https://docs.licensespring.com/license-api/rate-limiting"},
                {"surface": "yext", "unit": "tenant", "limit": rl::YEXT_REQUESTS_PER_HOUR,
                 "window_ms": 3_600_000, "rolling": false,
                 "source": "https://hitchhikers.yext.com/modules/pl240-developer-console/05-monitoring_app_usage"},
            ],
            "counters": app.rate_limits.counters(RATE_COUNTERS_PAGE_MAX),
        }),
    ))
}

pub(super) fn reset(app: &App) -> R<Resp> {
    app.rate_limits.reset();
    Ok(json(StatusCode::NO_CONTENT, ""))
}

fn overrides(app: &App, tenant: u64) -> Value {
    let mut m = serde_json::Map::new();
    for (s, l) in app.rate_limits.overrides_of(tenant) {
        m.insert(s, json!(l));
    }
    Value::Object(m)
}

pub(super) fn tenant_get(app: &App, id: &str) -> R<Resp> {
    let tenant = existing_tenant(app, id)?;
    Ok(json_value(StatusCode::OK, &overrides(app, tenant)))
}

pub(super) fn tenant_put(app: &App, id: &str, body: Option<&[u8]>) -> R<Resp> {
    let tenant = existing_tenant(app, id)?;
    let m = object(body)?;
    // Checked whole before any is set.
    let mut set: Vec<(&str, Option<Limit>)> = Vec::new();
    for (k, v) in &m {
        let Some(surface) = SURFACES.iter().find(|s| **s == k.as_str()) else {
            return Err(AdminError::bad(
                k.clone(),
                "one of licensespring, yext, informatica",
            ));
        };
        let limit = match v {
            Value::Null => None,
            v => {
                let l: Limit = super::from_value(v.clone()).map_err(|_| {
                    AdminError::bad(
                        k.clone(),
                        "must be {\"limit\": n, \"window_ms\": ms} or null",
                    )
                })?;
                if l.window_ms == 0 || l.window_ms > RATE_WINDOW_MS_MAX {
                    return Err(AdminError::bad(
                        format!("{k}.window_ms"),
                        "must be 1 ms to a day",
                    ));
                }
                Some(l)
            }
        };
        set.push((surface, limit));
    }
    let changes: Vec<_> = set.into_iter().map(|(s, l)| (tenant, s, l)).collect();
    app.rate_limits
        .change_overrides(&changes, |all| match &app.store {
            Some(store) => crate::storage::save_rate_limits(store.dir(), all),
            None => Ok(()),
        })
        .map_err(|e| {
            tracing::error!("rate-limit overrides not stored: {e}");
            AdminError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "changes cannot be stored right now (storage failed)",
            )
        })?;
    Ok(json_value(StatusCode::OK, &overrides(app, tenant)))
}
