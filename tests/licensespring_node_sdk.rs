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
use hyper::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licensespring_node_sdk_works_unchanged() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/licensespring-node");
    if !std::path::Path::new(dir)
        .join("node_modules/@licensespring/node-sdk")
        .exists()
    {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install the Node SDK (npm ci --prefix tests/sdk/licensespring-node; see .ci/run)"
        );
        eprintln!("skipping: run `npm ci --prefix tests/sdk/licensespring-node` to install it");
        return;
    }
    // The SDK signs its requests with the wall clock.
    let s =
        TestServer::start_with(|o| o.clock = std::sync::Arc::new(tally::clock::SystemClock)).await;
    let pem = s.admin(Method::GET, "/signing-key", None).await.json()["public_key_pem"]
        .as_str()
        .expect("pem")
        .to_string();
    // The floating demo license may borrow for the script's floatingBorrow.
    s.allow_demo_float_borrowing().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let pem_path = tmp.path().join("public.pem");
    std::fs::write(&pem_path, pem).expect("write pem");
    let out = tokio::process::Command::new("node")
        .arg(format!("{dir}/license_api.js"))
        .current_dir(dir)
        .env("TALLY_ADDR", s.addr.to_string())
        .env("TALLY_PUBLIC_KEY_PEM", &pem_path)
        // dayjs reads a date without an offset in the local zone (see
        // docs/licensespring.md); LicenseSpring's own answers behave alike.
        .env("TZ", "UTC")
        .output()
        .await
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdk script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk: all calls passed"), "{stdout}");
    println!("{stdout}");
}
