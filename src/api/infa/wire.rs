//! Informatica's answer shapes: the license document with its `ETag`, and
//! the login answer.

use hyper::header::{HeaderValue, ETAG};
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::app::App;
use crate::engine::infa::InfaOrg;
use crate::http::{json_value, Resp};

pub(super) fn parent_org_id(app: &App, org: &InfaOrg) -> Value {
    app.engine
        .tenant(org.tenant_id)
        .and_then(|t| t.spec.read().parent_id)
        .and_then(|p| app.engine.infa(p))
        .map_or(Value::Null, |p| p.spec.read().org_id.clone().into())
}

pub(super) fn license_response(app: &App, org: &InfaOrg) -> Resp {
    let spec = org.spec.read().clone();
    let version = org.version.load(std::sync::atomic::Ordering::Acquire);
    let mut v = serde_json::to_value(&spec.licenses).unwrap_or_else(|_| json!({}));
    v["id"] = spec.org_id.clone().into();
    v["parentOrg"] = parent_org_id(app, org);
    let mut r = json_value(StatusCode::OK, &v);
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(ETAG, tag);
    }
    r
}

/// The login answer: the session id, the user and the org, and the base URL
/// the client calls next (this server's, from the request's `Host`).
pub(super) fn login_answer(app: &App, org: &InfaOrg, id: &str, username: &str, host: &str) -> Resp {
    let spec = org.spec.read().clone();
    json_value(
        StatusCode::OK,
        &json!({
            "products": [{"name": "Integration Cloud", "baseApiUrl": format!("http://{host}/saas")}],
            "userInfo": {
                "sessionId": id,
                "id": format!("{}-{}", spec.org_id, username),
                "name": username,
                "parentOrgId": parent_org_id(app, org),
                "orgId": spec.org_id,
                "orgName": spec.name,
                "groups": {},
                "status": "Active",
            },
        }),
    )
}
