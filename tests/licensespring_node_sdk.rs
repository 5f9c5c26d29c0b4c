//! LicenseSpring's own Node.js SDK (`@licensespring/node-sdk` from the npm
//! registry) against the real server: every `LicenseAPI` call that reaches the
//! License API, and the `LicenseManager` flow, with signature verification on
//! (Tally's public key in the SDK's config), and every signed body checked by
//! JavaScript itself to be what `JSON.stringify` writes.
//!
//! Needs `tests/sdk/licensespring-node/node_modules` (`npm ci --prefix
//! tests/sdk/licensespring-node`; `.ci/run` does it) and `node`. Outside CI,
//! without them, the test says so and passes; under `CI=true` their absence
//! is a failure.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licensespring_node_sdk_works_unchanged() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/licensespring-node");
    if !client_installed(
        &format!("{dir}/node_modules/@licensespring/node-sdk"),
        "npm ci --prefix tests/sdk/licensespring-node",
    ) {
        return;
    }
    // The SDK signs its requests with the wall clock.
    let s =
        TestServer::start_with(|o| o.clock = std::sync::Arc::new(tally::clock::SystemClock)).await;
    // The floating demo license may borrow for the script's floatingBorrow.
    s.allow_demo_float_borrowing().await;
    let (_dir, pem) = s.public_key_pem_file().await;
    let out = tokio::process::Command::new("node")
        .arg(format!("{dir}/license_api.js"))
        .current_dir(dir)
        .env("TALLY_ADDR", s.addr.to_string())
        .env("TALLY_PUBLIC_KEY_PEM", &pem)
        // dayjs reads a date without an offset in the local zone (see
        // docs/licensespring.md); LicenseSpring's own answers behave alike.
        .env("TZ", "UTC")
        .output()
        .await
        .expect("run node");
    assert_client_passed(&out);
}
