//! LicenseSpring's own Python SDK against the real server: an unchanged client
//! pointed at 127.0.0.1 verifies every response signature with Tally's key.
//!
//! Needs a Python with the `licensespring` package: `TALLY_SDK_PYTHON` names it
//! (`.ci/run` installs one). Outside CI, without it, the test says so and
//! passes; under `CI=true` a missing SDK is a failure.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licensespring_python_sdk_works_unchanged() {
    let python = std::env::var("TALLY_SDK_PYTHON").unwrap_or_default();
    if !client_installed(
        &python,
        "TALLY_SDK_PYTHON=<a python with `pip install licensespring==4.0.0`>",
    ) {
        return;
    }
    // The SDK signs with the wall clock: serve with the system clock.
    let s =
        TestServer::start_with(|o| o.clock = std::sync::Arc::new(tally::clock::SystemClock)).await;
    // The floating demo license may borrow for the script's floating_borrow.
    s.allow_demo_float_borrowing().await;
    let (_dir, pem) = s.public_key_pem_file().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/licensespring_sdk.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("TALLY_ADDR", s.addr.to_string())
        .env("TALLY_PUBLIC_KEY_PEM", &pem)
        .output()
        .await
        .expect("run python");
    assert_client_passed(&out);
}

/// An injected fault (the harness) as the SDK sees it: its `ClientError`
/// with the injected code and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licensespring_python_sdk_sees_injected_faults() {
    let python = std::env::var("TALLY_SDK_PYTHON").unwrap_or_default();
    if !client_installed(
        &python,
        "TALLY_SDK_PYTHON=<a python with `pip install licensespring==4.0.0`>",
    ) {
        return;
    }
    let s =
        TestServer::start_with(|o| o.clock = std::sync::Arc::new(tally::clock::SystemClock)).await;
    let (_dir, pem) = s.public_key_pem_file().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/licensespring_faults.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("TALLY_ADDR", s.addr.to_string())
        .env("TALLY_PUBLIC_KEY_PEM", &pem)
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("run python");
    assert_client_passed(&out);
}

/// The worked example of docs/harness.md: the SDK across a month's end on
/// the test clock (its consumption starts again at 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licensespring_python_sdk_across_a_month_boundary_on_the_test_clock() {
    let python = std::env::var("TALLY_SDK_PYTHON").unwrap_or_default();
    if !client_installed(
        &python,
        "TALLY_SDK_PYTHON=<a python with `pip install licensespring==4.0.0`>",
    ) {
        return;
    }
    let clock = std::sync::Arc::new(tally::clock::ManualClock::new(at("2026-11-30T12:00:00Z")));
    let s = TestServer::start_with(|o| {
        o.clock = clock.clone();
        o.virtual_clock = Some(clock.clone());
    })
    .await;
    let (_dir, pem) = s.public_key_pem_file().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/licensespring_month.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("TALLY_ADDR", s.addr.to_string())
        .env("TALLY_PUBLIC_KEY_PEM", &pem)
        .env("TALLY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .expect("run python");
    assert_client_passed(&out);
    assert_eq!(s.now(), at("2026-12-01T00:00:01Z"));
}
