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

/// Runs Schemathesis against the document served at `doc` with `headers`
/// (false when it is not installed outside CI), and asserts no failure.
async fn schemathesis(s: &TestServer, doc: &str, headers: &[String], extra: &[&str]) -> bool {
    let st = std::env::var("TALLY_SCHEMATHESIS").unwrap_or_default();
    if !client_installed(&st, "TALLY_SCHEMATHESIS=<the schemathesis executable>") {
        return false;
    }
    // A run that ends in an error of Schemathesis itself (not a failed
    // check: a crash inside its generator, seen rarely under load) is run
    // once more; a failed check is never retried.
    for attempt in 1..=RUNS_MAX {
        let work = tempfile::tempdir().expect("tempdir");
        let mut cmd = tokio::process::Command::new(&st);
        cmd.current_dir(work.path()).arg("run").arg(s.url(doc));
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.args(extra);
        let out = cmd
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", EXAMPLES_MAX, "--workers", "1"])
            .env("NO_COLOR", "1")
            .output()
            .await
            .expect("run schemathesis");
        let text = String::from_utf8_lossy(&out.stdout);
        let failed = text.contains("FAILURES");
        if out.status.success() && text.contains(" passed") && !failed {
            return true;
        }
        assert!(
            !failed && attempt < RUNS_MAX,
            "schemathesis failed on {doc}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("schemathesis errored on {doc} (not a failed check); running it again:\n{text}");
    }
    true
}

/// Runs of Schemathesis per document when a run ends in its own error.
const RUNS_MAX: u32 = 2;

/// The native API on a server with a data directory (so with a ledger).
/// The ledger's stream is left out: a stream never ends, which Schemathesis
/// reads as a request that does not finish (`tests/durability.rs` drives it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_the_native_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_stored(dir.path()).await;
    schemathesis(
        &s,
        "/v1/openapi.json",
        &[format!("Authorization: Bearer {API_KEY}")],
        &["--exclude-path", "/v1/ledger/stream"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_yext() {
    let s = TestServer::start().await;
    schemathesis(
        &s,
        "/openapi/yext.json",
        &[format!("api-key: {API_KEY}")],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_informatica() {
    let s = TestServer::start().await;
    let session = common::infa::session(&s, "admin@parent.example", "parent-admin-password").await;
    schemathesis(
        &s,
        "/openapi/informatica.json",
        &[format!("INFA-SESSION-ID: {session}")],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_qlik() {
    let s = TestServer::start().await;
    schemathesis(
        &s,
        "/openapi/qlik.json",
        &[format!("Authorization: Bearer {API_KEY}")],
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_licensespring() {
    let s = TestServer::start().await;
    // LicenseSpring's HMAC is over the Date header: one pair serves the
    // whole run (the test clock stands still).
    let (date, auth) = tally::api::licensespring::client_headers(API_KEY, SHARED_KEY, s.now());
    let headers = [format!("Date: {date}"), format!("Authorization: {auth}")];
    schemathesis(&s, "/openapi/licensespring.json", &headers, &[]).await;
}
