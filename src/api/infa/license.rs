//! The license resource: `GET` and `PUT .../v3/license/org/{orgId}`, with
//! the organization tree's rules (an org reads its own and its children's;
//! only a parent's administrator writes, and only a child's) and `If-Match`.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::Value;

use super::body_of;
use super::error::{InfaError, R};
use super::session::Session;
use super::wire::license_response;
use crate::app::{App, CommitError};
use crate::engine::infa::{InfaLicenses, InfaOrg};
use crate::engine::model::Id;
use crate::engine::Command;
use crate::http::Resp;

/// The org a path names, with its tenant.
pub(super) struct Target {
    pub(super) org_id: String,
    pub(super) tenant_id: Id,
    pub(super) org: std::sync::Arc<InfaOrg>,
}

impl Target {
    pub(super) fn find(app: &App, org_id: String) -> R<Target> {
        let not_found = || {
            InfaError::new(
                StatusCode::NOT_FOUND,
                "ORG_01",
                format!("Organization {org_id} not found."),
            )
        };
        let tenant_id = app.engine.infa_org_tenant(&org_id).ok_or_else(not_found)?;
        let org = app.engine.infa(tenant_id).ok_or_else(not_found)?;
        Ok(Target {
            org_id,
            tenant_id,
            org,
        })
    }

    /// Whether the session's org is this org's parent.
    fn is_child_of(&self, app: &App, session: &Session) -> bool {
        app.engine
            .tenant(self.tenant_id)
            .is_some_and(|t| t.spec.read().parent_id == Some(session.tenant_id))
    }
}

/// `GET`: the session's own org or one of its children.
pub(super) fn get(app: &App, session: &Session, target: &Target) -> R<Resp> {
    if target.tenant_id != session.tenant_id && !target.is_child_of(app, session) {
        return Err(InfaError::forbidden(format!(
            "Organization {} is neither your organization nor one of its sub-organizations.",
            target.org_id
        )));
    }
    Ok(license_response(app, &target.org))
}

/// `PUT`: an administrator of the parent organization, on a child; with
/// `If-Match`, only over the version it names.
pub(super) async fn put(
    app: &App,
    session: &Session,
    target: &Target,
    req: Request<Incoming>,
) -> R<Resp> {
    if target.tenant_id == session.tenant_id {
        return Err(InfaError::forbidden(
            "An organization cannot update its own licenses.",
        ));
    }
    if !target.is_child_of(app, session) {
        return Err(InfaError::forbidden(format!(
            "Organization {} is not a sub-organization of yours.",
            target.org_id
        )));
    }
    let admin = app.engine.infa(session.tenant_id).is_some_and(|o| {
        o.spec
            .read()
            .users
            .iter()
            .any(|u| u.username == session.username && u.admin)
    });
    if !admin {
        return Err(InfaError::forbidden(
            "Only an administrator of the parent organization may update licenses.",
        ));
    }
    let expected = expected_version(&req);
    let body = body_of(app, req).await?;
    let licenses = licenses_of(&body, &target.org_id)?;
    app.commit(&Command::InfaSetLicenses {
        tenant_id: target.tenant_id,
        licenses,
        expected_version: expected,
    })
    .await?;
    Ok(license_response(app, &target.org))
}

/// The version `If-Match` names: none for no header or `*`; a tag this
/// server never issued matches nothing.
fn expected_version(req: &Request<Incoming>) -> Option<u64> {
    let tag = req
        .headers()
        .get(hyper::header::IF_MATCH)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string())?;
    if tag == "*" {
        return None;
    }
    Some(
        tag.trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse::<u64>()
            .unwrap_or(u64::MAX),
    )
}

/// The PUT body: the licenses, with the GET answer's `id` and `parentOrg`
/// allowed (a client sends back what it read) but not changing anything.
pub(super) fn licenses_of(body: &[u8], org_id: &str) -> R<InfaLicenses> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| InfaError::bad(format!("The body is not valid JSON: {e}.")))?;
    let Value::Object(mut m) = v else {
        return Err(InfaError::bad("The body must be a JSON object."));
    };
    if let Some(id) = m.remove("id") {
        if id != Value::String(org_id.to_string()) {
            return Err(InfaError::bad(
                "id does not match the organization in the path.",
            ));
        }
    }
    m.remove("parentOrg");
    let l: InfaLicenses = serde_path_to_error::deserialize(Value::Object(m)).map_err(|e| {
        let path = e.path().to_string();
        InfaError::bad(format!("{path}: {}", e.into_inner()))
    })?;
    crate::engine::infa::validate_licenses(&l)
        .map_err(|e| InfaError::from(CommitError::Engine(e)))?;
    Ok(l)
}
