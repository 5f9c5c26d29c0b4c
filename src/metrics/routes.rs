//! The endpoint of a request, as metrics and logs name it: the route's
//! template (`/v1/licenses/{license_key}/features/{feature}/usage`), never
//! the raw path (whose keys and ids would make labels without bound).
//!
//! The templates are the surfaces' own OpenAPI documents (the paths CI
//! checks them against), plus the admin API's, listed here; a path that
//! matches none is `other`.

use std::collections::HashMap;

/// The admin API's routes (it has no OpenAPI document).
const ADMIN_ROUTES: &[&str] = &[
    "/admin/v1/tenants",
    "/admin/v1/tenants/{id}",
    "/admin/v1/tenants/{id}/qlik",
    "/admin/v1/tenants/{id}/qlik/sessions",
    "/admin/v1/tenants/{id}/qlik/access",
    "/admin/v1/tenants/{id}/yext",
    "/admin/v1/tenants/{id}/informatica",
    "/admin/v1/tenants/{id}/informatica/consume",
    "/admin/v1/tenants/{id}/informatica/grants",
    "/admin/v1/ledger",
    "/admin/v1/webhooks",
    "/admin/v1/webhooks/{id}",
    "/admin/v1/webhooks/{id}/secret/rotate",
    "/admin/v1/webhooks/{id}/deliveries",
    "/admin/v1/webhooks/{id}/deliveries/{event_id}/retry",
    "/admin/v1/token-keys",
    "/admin/v1/token-keys/rotate",
    "/admin/v1/api-keys",
    "/admin/v1/api-keys/{key}",
    "/admin/v1/api-keys/{key}/revoke",
    "/admin/v1/products",
    "/admin/v1/products/{id}",
    "/admin/v1/customers",
    "/admin/v1/customers/{id}",
    "/admin/v1/users",
    "/admin/v1/users/{id}",
    "/admin/v1/licenses",
    "/admin/v1/licenses/{id}",
    "/admin/v1/licenses/{id}/features",
    "/admin/v1/licenses/{id}/features/{feature_id}",
    "/admin/v1/licenses/{id}/devices",
    "/admin/v1/licenses/{id}/devices/{hardware_id}",
    "/admin/v1/licenses/{id}/floating",
    "/admin/v1/licenses/{id}/consumption",
    "/admin/v1/signing-key",
    "/admin/v1/stats",
    "/admin/v1/search",
    "/admin/v1/clock",
    "/admin/v1/faults",
    "/admin/v1/rate-limits",
    "/admin/v1/tenants/{id}/rate-limits",
    "/admin/v1/journal",
    "/admin/v1/journal/count",
    "/admin/v1/cluster",
    "/admin/v1/state",
    "/admin/v1/state/save",
    "/admin/v1/state/restore",
    "/admin/v1/state/reset",
    "/admin/v1/state/{name}",
    "/admin/v1/licenses/{id}/floating/{holder}",
];

/// The server's own routes.
const SERVER_ROUTES: &[&str] = &[
    "/healthz",
    "/metrics",
    "/openapi/{document}",
    "/ui/",
    "/ui/{asset}",
];

/// Other spellings of documented routes, and the template they count as
/// (Yext answers on `licensepacks` and `assignments` too).
const ALIASES: &[(&str, &str)] = &[
    (
        "/v2/accounts/{accountId}/licensepacks",
        "/v2/accounts/{accountId}/license-packs",
    ),
    (
        "/v2/accounts/{accountId}/licensepacks/{licensePackId}/assignments",
        "/v2/accounts/{accountId}/license-packs/{licensePackId}/assigned-entities",
    ),
    (
        "/v2/accounts/{accountId}/licensepacks/{licensePackId}/assigned-entities",
        "/v2/accounts/{accountId}/license-packs/{licensePackId}/assigned-entities",
    ),
    (
        "/v2/accounts/{accountId}/license-packs/{licensePackId}/assignments",
        "/v2/accounts/{accountId}/license-packs/{licensePackId}/assigned-entities",
    ),
    (
        "/v2/accounts/{accountId}/licensepacks/{licensePackId}/assignments/{entityId}",
        "/v2/accounts/{accountId}/license-packs/{licensePackId}/assigned-entities/{entityId}",
    ),
    (
        "/v2/accounts/{accountId}/licensepacks/{licensePackId}/assigned-entities/{entityId}",
        "/v2/accounts/{accountId}/license-packs/{licensePackId}/assigned-entities/{entityId}",
    ),
    (
        "/v2/accounts/{accountId}/license-packs/{licensePackId}/assignments/{entityId}",
        "/v2/accounts/{accountId}/license-packs/{licensePackId}/assigned-entities/{entityId}",
    ),
];

/// A route template split at `/`: a segment is fixed text, or (None) a
/// parameter that matches any one segment.
#[derive(Debug)]
struct Pattern {
    segments: Vec<Option<&'static str>>,
    template: &'static str,
}

/// Routes by template: fixed paths in a map, the others matched segment by
/// segment (few, and only for paths that are not fixed).
#[derive(Debug)]
pub struct Routes {
    fixed: HashMap<&'static str, &'static str>,
    patterns: Vec<Pattern>,
}

impl Routes {
    /// The routes of `documents` (OpenAPI JSON texts) and the admin and
    /// server routes. A document that cannot be read adds nothing.
    pub fn new(documents: &[&str]) -> Routes {
        let mut templates: Vec<String> = Vec::new();
        for doc in documents {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(doc) else {
                continue;
            };
            if let Some(paths) = v["paths"].as_object() {
                templates.extend(paths.keys().cloned());
            }
        }
        templates.extend(ADMIN_ROUTES.iter().map(|s| s.to_string()));
        templates.extend(SERVER_ROUTES.iter().map(|s| s.to_string()));
        templates.sort();
        templates.dedup();
        let mut routes = Routes {
            fixed: HashMap::new(),
            patterns: Vec::new(),
        };
        let aliases = ALIASES.iter().map(|(a, t)| (a.to_string(), Some(*t)));
        for (t, alias_of) in templates.into_iter().map(|t| (t, None)).chain(aliases) {
            // Made once per process: a few hundred bytes kept for good.
            let spelled: &'static str = Box::leak(t.into_boxed_str());
            let template = alias_of.unwrap_or(spelled);
            if !spelled.contains('{') {
                routes.fixed.insert(spelled, template);
                continue;
            }
            let segments = spelled
                .split('/')
                .map(|s| (!s.starts_with('{')).then_some(s))
                .collect();
            routes.patterns.push(Pattern { segments, template });
        }
        // More fixed segments first: `/x/{id}/y` before `/x/{a}/{b}`.
        routes
            .patterns
            .sort_by_key(|p| std::cmp::Reverse(p.segments.iter().filter(|s| s.is_some()).count()));
        routes
    }

    /// The template `path` matches, or `other`.
    pub fn endpoint(&self, path: &str) -> &'static str {
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        if let Some(t) = self.fixed.get(path) {
            return t;
        }
        let n = path.split('/').count();
        'next: for p in &self.patterns {
            if p.segments.len() != n {
                continue;
            }
            for (want, got) in p.segments.iter().zip(path.split('/')) {
                match want {
                    Some(w) if *w != got => continue 'next,
                    None if got.is_empty() => continue 'next,
                    _ => {}
                }
            }
            return p.template;
        }
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_templates() {
        let doc = r#"{"paths": {"/v1/check": {}, "/v1/licenses/{license_key}": {},
            "/v1/licenses/{license_key}/features/{feature}/usage": {},
            "/v1/licenses/{license_key}/features/{feature}/seats/{holder}": {}}}"#;
        let r = Routes::new(&[doc, "not json"]);
        assert_eq!(r.endpoint("/v1/check"), "/v1/check");
        assert_eq!(r.endpoint("/v1/licenses/K-1"), "/v1/licenses/{license_key}");
        assert_eq!(
            r.endpoint("/v1/licenses/K-1/features/credits/usage"),
            "/v1/licenses/{license_key}/features/{feature}/usage"
        );
        assert_eq!(
            r.endpoint("/v1/licenses/K/features/f/seats/h/"),
            "/v1/licenses/{license_key}/features/{feature}/seats/{holder}"
        );
        assert_eq!(r.endpoint("/v1/licenses//features/f/usage"), "other");
        assert_eq!(r.endpoint("/v1/nothing"), "other");
        assert_eq!(
            r.endpoint("/admin/v1/licenses/12/features/13"),
            "/admin/v1/licenses/{id}/features/{feature_id}"
        );
        assert_eq!(
            r.endpoint("/admin/v1/api-keys/abc/revoke"),
            "/admin/v1/api-keys/{key}/revoke"
        );
        assert_eq!(r.endpoint("/admin/v1/ledger"), "/admin/v1/ledger");
        assert_eq!(
            r.endpoint("/v2/accounts/me/licensepacks/p/assignments/e"),
            "/v2/accounts/{accountId}/license-packs/{licensePackId}/assigned-entities/{entityId}"
        );
    }
}
