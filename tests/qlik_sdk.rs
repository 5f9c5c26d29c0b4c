//! Qlik's own client library (`@qlik/api`, its `licenses` module, from the
//! npm registry) against the real server, pointed at it with an API-key host
//! config: every call of the module, paging functions and errors included.
//!
//! Needs `tests/sdk/qlik/node_modules` (`npm ci --prefix tests/sdk/qlik`;
//! `.ci/run` does it) and `node`. Outside CI, without them, the test says so
//! and passes; under `CI=true` their absence is a failure.

mod common;

use common::*;
use hyper::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qlik_api_client_works_unchanged() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/qlik");
    if !client_installed(
        &format!("{dir}/node_modules/@qlik/api"),
        "npm ci --prefix tests/sdk/qlik",
    ) {
        return;
    }
    let s = TestServer::start().await;
    let t = s.app.engine.api_key(API_KEY).expect("key").tenant_id;
    for (user, minutes) in [("u1", 7), ("u2", 9)] {
        s.clock.advance(60_000);
        let r = s
            .admin(
                Method::POST,
                &format!("/tenants/{t}/qlik/sessions"),
                Some(json!({"user_id": user, "minutes": minutes})),
            )
            .await;
        assert_eq!(r.status, hyper::StatusCode::CREATED);
    }
    let out = tokio::process::Command::new("node")
        .arg(format!("{dir}/licenses.mjs"))
        .current_dir(dir)
        .env("TALLY_ADDR", s.addr.to_string())
        .env("TALLY_QLIK_API_KEY", API_KEY)
        .env("TALLY_QLIK_READONLY_KEY", "demo-readonly-key")
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("run node");
    assert_client_passed(&out);
}
