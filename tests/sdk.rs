//! LicenseSpring's own Python SDK against the real server: an unchanged client
//! pointed at 127.0.0.1 verifies every response signature with Tally's key.
//!
//! Needs a Python with the `licensespring` package: `TALLY_SDK_PYTHON` names it
//! (`.ci/run` installs one). Outside CI, without it, the test says so and
//! passes; under `CI=true` a missing SDK is a failure.

mod common;

use common::*;
use hyper::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licensespring_python_sdk_works_unchanged() {
    let python = match std::env::var("TALLY_SDK_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must provide TALLY_SDK_PYTHON (see .ci/run)"
            );
            eprintln!(
                "skipping: TALLY_SDK_PYTHON is not set (a python with `pip install licensespring`)"
            );
            return;
        }
    };
    // The SDK signs with the wall clock: serve with the system clock.
    let s =
        TestServer::start_with(|o| o.clock = std::sync::Arc::new(tally::clock::SystemClock)).await;
    let pem = s.admin(Method::GET, "/signing-key", None).await.json()["public_key_pem"]
        .as_str()
        .expect("pem")
        .to_string();
    // The floating demo license may borrow for the script's floating_borrow.
    s.allow_demo_float_borrowing().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pem_path = dir.path().join("public.pem");
    std::fs::write(&pem_path, pem).expect("write pem");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/licensespring_sdk.py"
    );
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("TALLY_ADDR", s.addr.to_string())
        .env("TALLY_PUBLIC_KEY_PEM", &pem_path)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdk script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk: all calls passed"), "{stdout}");
}
