//! The OpenAPI documents match the server: the one served is the one in the
//! repository, and Schemathesis (PyPI) drives the real server from it with
//! its checks for server errors, status codes, content types and response
//! schemas, with no failure allowed.
//!
//! Needs Schemathesis: `TALLY_SCHEMATHESIS` names its executable (`.ci/run`
//! installs it). Outside CI, without it, the test says so and passes; under
//! `CI=true` a missing Schemathesis is a failure.

mod common;

use common::*;

/// Examples Schemathesis generates per operation and phase (a CI-sized run;
/// `scripts/schemathesis.sh` runs longer).
const EXAMPLES_MAX: &str = "25";

#[tokio::test]
async fn the_served_document_is_the_repository_one() {
    let s = TestServer::start().await;
    let r = s
        .send(
            hyper::Request::get(s.url("/v1/openapi.json"))
                .body(Default::default())
                .expect("request"),
        )
        .await;
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/openapi/native.json"
    ))
    .expect("docs/openapi/native.json");
    assert_eq!(&r.bytes[..], &file[..]);
    let doc: serde_json::Value = serde_json::from_slice(&file).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_the_native_api() {
    let st = std::env::var("TALLY_SCHEMATHESIS").unwrap_or_default();
    if !client_installed(&st, "TALLY_SCHEMATHESIS=<the schemathesis executable>") {
        return;
    }
    let s = TestServer::start().await;
    let work = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(&st)
        .current_dir(work.path())
        .arg("run")
        .arg(s.url("/v1/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {API_KEY}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", EXAMPLES_MAX, "--workers", "2"])
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" passed") && !text.contains("FAILURES"),
        "schemathesis failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
