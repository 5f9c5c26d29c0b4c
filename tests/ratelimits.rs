//! The vendors' emulated rate limits (`--emulate-rate-limits`) through
//! HTTP: LicenseSpring per tenant per rolling minute and per API key per
//! second, Yext per account per hour with its `Rate-Limit-*` headers,
//! Informatica by a tenant's override only; each refusal in the vendor's
//! shape with `Retry-After`; overrides and counters through the admin API.
#![allow(clippy::too_many_lines, reason = "a test reads best as one story")]

mod common;

use common::{TestServer, API_KEY};
use hyper::{Method, StatusCode};
use serde_json::json;

async fn check(s: &TestServer) -> common::Resp {
    s.ls_get(
        "check_license",
        &[
            ("product", "studio"),
            ("license_key", "DEMO-STUDIO-0001"),
            ("hardware_id", "hw"),
        ],
    )
    .await
}

#[tokio::test]
async fn each_vendor_limit_answers_in_its_own_shape() {
    let s = TestServer::start_with(|o| o.emulate_rate_limits = true).await;
    let tenant = s.app.engine.api_key(API_KEY).expect("key").tenant_id;
    // LicenseSpring: the per-key flood limit, 50 a second.
    let mut statuses = Vec::new();
    for _ in 0..51 {
        statuses.push(check(&s).await.status.as_u16());
    }
    assert!(statuses[..50].iter().all(|s| *s != 429), "{statuses:?}");
    assert_eq!(statuses[50], 429);
    s.clock.advance(1_000);

    // A tenant's override: 3 a minute, rolling.
    let r = s
        .admin(
            Method::PUT,
            &format!("/tenants/{tenant}/rate-limits"),
            Some(json!({"licensespring": {"limit": 3, "window_ms": 60_000},
                        "yext": {"limit": 2, "window_ms": 3_600_000},
                        "informatica": {"limit": 1, "window_ms": 60_000}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    s.admin(Method::DELETE, "/rate-limits", None).await;
    for _ in 0..3 {
        assert_ne!(check(&s).await.status.as_u16(), 429);
    }
    let r = check(&s).await;
    assert_eq!(r.status.as_u16(), 429);
    assert_eq!(r.code(), "too_many_requests");
    let wait: u64 = r.headers["retry-after"]
        .to_str()
        .unwrap_or("")
        .parse()
        .unwrap_or(0);
    assert!((1..=60).contains(&wait), "{wait}");
    // Two minutes on, the rolling window holds nothing of the old one.
    s.clock.advance(120_000);
    assert_ne!(check(&s).await.status.as_u16(), 429);

    // Yext: per account per hour, with its headers on every answer.
    let packs = "/v2/accounts/me/licensepacks";
    let r = common::yext::y(&s, Method::GET, packs, "", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["rate-limit-limit"], "2");
    assert_eq!(r.headers["rate-limit-remaining"], "1");
    assert!(r.headers.contains_key("rate-limit-reset"));
    common::yext::ok(&common::yext::y(&s, Method::GET, packs, "", None).await);
    let r = common::yext::y(&s, Method::GET, packs, "", None).await;
    assert_eq!(common::yext::fail(&r, 429), 2012);
    assert_eq!(r.headers["rate-limit-remaining"], "0");
    assert!(r.headers.contains_key("retry-after"));

    // Informatica: only with an override, per tenant, on sessions.
    let parent = s
        .app
        .engine
        .search("Demo Parent Org", 5)
        .into_iter()
        .find(|h| h.kind == "tenant")
        .expect("the parent org's tenant")
        .id;
    s.admin(
        Method::PUT,
        &format!("/tenants/{parent}/rate-limits"),
        Some(json!({"informatica": {"limit": 1, "window_ms": 60_000}})),
    )
    .await;
    let login = s
        .send(
            hyper::Request::post(s.url("/saas/public/core/v3/login"))
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    r#"{"username":"admin@parent.example","password":"parent-admin-password"}"#,
                )))
                .expect("request"),
        )
        .await
        .json();
    let session = login["userInfo"]["sessionId"]
        .as_str()
        .expect("session")
        .to_string();
    let org = login["userInfo"]["orgId"]
        .as_str()
        .expect("org")
        .to_string();
    let get = || {
        hyper::Request::get(s.url(&format!("/saas/public/core/v3/license/org/{org}")))
            .header("INFA-SESSION-ID", session.clone())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request")
    };
    assert_eq!(s.send(get()).await.status, StatusCode::OK);
    let r = s.send(get()).await;
    assert_eq!(r.status.as_u16(), 429);
    assert_eq!(r.json()["error"]["code"], "TOO_MANY_REQUESTS");
    assert_eq!(r.json()["error"]["message"], "too many requests");

    // Overrides and counters through the admin API; bad overrides refused.
    let o = s
        .admin(Method::GET, &format!("/tenants/{tenant}/rate-limits"), None)
        .await
        .json();
    assert_eq!(o["yext"], json!({"limit": 2, "window_ms": 3_600_000}));
    let c = s.admin(Method::GET, "/rate-limits", None).await.json();
    assert_eq!(c["emulated"], true);
    assert!(
        c["counters"].as_array().is_some_and(|v| !v.is_empty()),
        "{c}"
    );
    assert!(c["defaults"][0]["source"]
        .as_str()
        .unwrap_or("")
        .starts_with("https://"));
    for bad in [
        json!({"qlik": {"limit": 1, "window_ms": 1}}),
        json!({"yext": {"limit": 1, "window_ms": 0}}),
        json!({"yext": {"limit": 1}}),
    ] {
        let r = s
            .admin(
                Method::PUT,
                &format!("/tenants/{tenant}/rate-limits"),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = s
        .admin(
            Method::PUT,
            &format!("/tenants/{tenant}/rate-limits"),
            Some(json!({"yext": null})),
        )
        .await;
    assert_eq!(r.json().get("yext"), None);
}

#[tokio::test]
async fn without_emulation_nothing_is_limited() {
    let s = TestServer::start().await;
    let tenant = s.app.engine.api_key(API_KEY).expect("key").tenant_id;
    s.admin(
        Method::PUT,
        &format!("/tenants/{tenant}/rate-limits"),
        Some(json!({"licensespring": {"limit": 1, "window_ms": 60_000}})),
    )
    .await;
    for _ in 0..60 {
        assert_ne!(check(&s).await.status.as_u16(), 429);
    }
}
