//! The ledger of every tenant: `GET /admin/v1/ledger` with filters
//! (`tenant_id`, `license_id`, `feature_id`, `subject`, `kind`, `since`,
//! `until`) and cursor pages in the log's order (`after` a seq, `limit`),
//! or its newest entries (`tail`).

use hyper::StatusCode;
use serde_json::json;

use super::{opt_id, page_params, AdminError, R};
use crate::app::{App, LedgerFilter};
use crate::engine::time::parse_instant;
use crate::http::{json_value, Query, Resp};

pub(super) async fn list(app: &App, q: &Query<'_>) -> R<Resp> {
    let (after, limit) = page_params(q)?;
    let (tenant, license, feature) = (
        opt_id(q, "tenant_id")?,
        opt_id(q, "license_id")?,
        opt_id(q, "feature_id")?,
    );
    let instant = |name: &'static str| -> R<Option<i64>> {
        q.get(name)
            .map(|v| parse_instant(v).ok_or_else(|| AdminError::bad(name, "must be an instant")))
            .transpose()
    };
    let (since, until) = (instant("since")?, instant("until")?);
    let filter = LedgerFilter {
        tenant_id: tenant,
        license_id: license,
        feature_id: feature,
        subject: q.get("subject").map(str::to_string),
        kind: q.get("kind").map(str::to_string),
        since,
        until,
    };
    let unavailable =
        |why: String| AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why);
    if let Some(n) = q.get("tail") {
        // The newest entries (the console's tail): `tail=N`, oldest first.
        let n: usize = n
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| AdminError::bad("tail", "must be 1 to 1000"))?;
        let items = app
            .ledger_tail(n, filter)
            .await
            .ok_or_else(|| unavailable("this server keeps no data directory, so no ledger".into()))?
            .map_err(|e| unavailable(format!("the ledger cannot be read: {e}")))?;
        return Ok(json_value(
            StatusCode::OK,
            &json!({"items": items, "next_after": null}),
        ));
    }
    let (items, next) = app
        .ledger(after, limit, filter)
        .await
        .ok_or_else(|| unavailable("this server keeps no data directory, so no ledger".into()))?
        .map_err(|e| unavailable(format!("the ledger cannot be read: {e}")))?;
    Ok(json_value(
        StatusCode::OK,
        &json!({"items": items, "next_after": next}),
    ))
}
