//! `GET /metrics` through HTTP: requests counted by surface, endpoint
//! (route templates, never raw paths), method, status class and code;
//! latencies; refusals; the log's, snapshots' and engine's series; the
//! formats (checked by the Prometheus project's Python parsers when
//! installed); who may scrape; `--no-metrics`.
#![allow(clippy::too_many_lines, reason = "a test reads best as one story")]

mod common;

use bytes::Bytes;
use common::native::{n, STUDIO};
use common::{Resp, TestServer};
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

async fn scrape(s: &TestServer, headers: &[(&str, &str)]) -> Resp {
    let mut b = Request::get(s.url("/metrics"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    s.send(b.body(Full::new(Bytes::new())).expect("request"))
        .await
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.bytes).into_owned()
}

/// The value of the sample `line_start` (a name with its labels).
fn sample(body: &str, line_start: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn requests_log_and_engine_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_stored(dir.path()).await;
    // LicenseSpring, native (a check, two uses, a refusal), Qlik.
    let r = s
        .ls_get(
            "check_license",
            &[
                ("product", "studio"),
                ("license_key", STUDIO),
                ("hardware_id", "hw-1"),
            ],
        )
        .await;
    assert!(r.status.as_u16() < 500);
    // A signed answer (an activation).
    let r = s
        .ls_post(
            "activate_license",
            json!({"product": "studio", "license_key": STUDIO, "hardware_id": "hw-m"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let check = json!({"license_key": STUDIO, "feature": "render"});
    assert_eq!(
        n(&s, Method::POST, "/v1/check", Some(check)).await.status,
        StatusCode::OK
    );
    for _ in 0..2 {
        let r = n(
            &s,
            Method::POST,
            &format!("/v1/licenses/{STUDIO}/features/ai-credits/usage"),
            Some(json!({"units": 1})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let seat = |h: &str| format!("/v1/licenses/{STUDIO}/features/export-4k/seats/{h}");
    for h in ["a", "b", "c"] {
        n(&s, Method::PUT, &seat(h), None).await;
    }
    let r = common::qlik::get(&s, "/overview").await;
    assert_eq!(r.status, StatusCode::OK);

    let r = scrape(&s, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = text(&r);
    let usage = r#"tally_requests_total{surface="native",endpoint="/v1/licenses/{license_key}/features/{feature}/usage",method="POST",status_class="2xx",code="ok"}"#;
    assert_eq!(sample(&body, usage), Some(2.0), "{body}");
    let check = r#"tally_requests_total{surface="native",endpoint="/v1/check",method="POST",status_class="2xx",code="ok"}"#;
    assert_eq!(sample(&body, check), Some(1.0));
    let refused = r#"tally_requests_total{surface="native",endpoint="/v1/licenses/{license_key}/features/{feature}/seats/{holder}",method="PUT",status_class="4xx",code="floating_not_available"}"#;
    assert_eq!(sample(&body, refused), Some(1.0), "{body}");
    assert_eq!(
        sample(
            &body,
            r#"tally_refusals_total{code="floating_not_available"}"#
        ),
        Some(1.0)
    );
    assert!(
        body.contains(r#"surface="licensespring",endpoint="/api/v4/check_license",method="GET""#)
    );
    assert!(body.contains(r#"surface="qlik",endpoint="/api/v1/licenses/overview""#));
    // Latency: a histogram per surface and endpoint.
    assert_eq!(
        sample(
            &body,
            r#"tally_request_duration_seconds_count{surface="native",endpoint="/v1/licenses/{license_key}/features/{feature}/usage"}"#
        ),
        Some(2.0)
    );
    assert!(body.contains(r#"tally_request_duration_seconds_bucket{le="0.00001",surface="native""#));
    // Raw paths, keys and holders never become labels.
    for raw in [STUDIO, "hw-1", "export-4k/seats/a", "demo-api-key"] {
        assert!(!body.contains(raw), "{raw} in the metrics");
    }
    // The log: every durable change waited for its commit; fsyncs and group commits.
    let commits = sample(&body, "tally_log_commit_duration_seconds_count").expect("commits");
    assert!(commits >= 4.0, "{commits}");
    assert!(sample(&body, "tally_log_fsync_duration_seconds_count").expect("fsyncs") >= 1.0);
    assert!(sample(&body, "tally_log_group_commit_records_count").expect("groups") >= 1.0);
    assert_eq!(sample(&body, "tally_log_latched"), Some(0.0));
    assert!(sample(&body, "tally_recovery_duration_seconds").is_some());
    // The engine.
    assert_eq!(
        sample(&body, r#"tally_objects{kind="licenses"}"#),
        Some(6.0)
    );
    assert_eq!(sample(&body, "tally_floating_seats_held"), Some(2.0));
    assert!(sample(&body, "tally_process_resident_memory_bytes").expect("rss") > 1e6);
    assert!(sample(&body, "tally_connections_open").expect("open") >= 1.0);
    // The LicenseSpring answer was signed: fresh signatures are counted.
    assert!(sample(&body, "tally_signatures_total").expect("signatures") >= 1.0);
    assert!(sample(&body, "tally_signature_seconds_total").expect("seconds") > 0.0);
    assert!(sample(&body, "tally_signatures_cached").expect("cached") >= 1.0);
    assert_eq!(
        sample(&body, "tally_signatures_on_request_thread_total"),
        Some(0.0)
    );

    // A snapshot shows in the snapshot series.
    let store = s.app.store.clone().expect("store");
    store
        .snapshot_quiescent(&s.app.engine, s.now())
        .expect("snapshot");
    let body = text(&scrape(&s, &[]).await);
    assert_eq!(
        sample(&body, r#"tally_snapshots_total{result="ok"}"#),
        Some(1.0)
    );
    assert!(sample(&body, "tally_snapshot_bytes").expect("size") > 0.0);
    assert!(sample(&body, "tally_snapshot_last_success_timestamp_seconds").expect("at") > 1.7e9);

    // OpenMetrics when asked for.
    let r = scrape(
        &s,
        &[("accept", "application/openmetrics-text; version=1.0.0")],
    )
    .await;
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = text(&r);
    assert!(om.ends_with("# EOF\n"));
    parse_with_prometheus_client(&body, &om);
}

/// Parses both formats with the Prometheus project's Python client (an
/// independent parser); `.ci/run` installs it and names its Python.
fn parse_with_prometheus_client(text: &str, openmetrics: &str) {
    let python = std::env::var("TALLY_METRICS_PYTHON").unwrap_or_default();
    if !common::client_installed(
        &python,
        "TALLY_METRICS_PYTHON=<python with `pip install prometheus-client==0.21.1`>",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("text"), text).expect("write");
    std::fs::write(dir.path().join("om"), openmetrics).expect("write");
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
d = sys.argv[1]
for parse, name in ((text_string_to_metric_families, "text"), (om_families, "om")):
    fams = {f.name: f for f in parse(open(d + "/" + name).read())}
    req = fams["tally_requests"]
    assert req.type == "counter", (name, req.type)
    assert any(s.labels.get("endpoint") == "/v1/check" for s in req.samples), name
    hist = fams["tally_request_duration_seconds"]
    assert hist.type == "histogram", (name, hist.type)
    assert fams["tally_objects"].type == "gauge"
print("sdk: all calls passed")
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &dir.path().display().to_string()])
        .output()
        .expect("run python");
    common::assert_client_passed(&out);
}

#[tokio::test]
async fn a_token_guards_the_scrape_and_metrics_can_be_off() {
    let s = TestServer::start_with(|o| o.metrics_token = Some("scrape-token".into())).await;
    let r = scrape(&s, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = scrape(&s, &[("authorization", "Bearer nope")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = scrape(&s, &[("authorization", "Bearer scrape-token")]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .send(
            Request::post(s.url("/metrics"))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // Off: requests are not counted, the state's gauges are still there.
    let s = TestServer::start_with(|o| o.metrics = false).await;
    let check = json!({"license_key": STUDIO, "feature": "render"});
    assert_eq!(
        n(&s, Method::POST, "/v1/check", Some(check)).await.status,
        StatusCode::OK
    );
    let body = text(&scrape(&s, &[]).await);
    assert!(!body.contains("tally_requests_total{"), "{body}");
    assert_eq!(
        sample(&body, r#"tally_objects{kind="licenses"}"#),
        Some(6.0)
    );
}

#[tokio::test]
async fn a_tenant_label_only_when_asked() {
    let s = TestServer::start_with(|o| o.metrics_per_tenant = true).await;
    let check = json!({"license_key": STUDIO, "feature": "render"});
    n(&s, Method::POST, "/v1/check", Some(check)).await;
    let body = text(&scrape(&s, &[]).await);
    let tenant = s
        .app
        .engine
        .api_key(common::API_KEY)
        .expect("key")
        .tenant_id;
    assert!(
        body.contains(&format!(r#"code="ok",tenant="{tenant}"}}"#)),
        "{body}"
    );
}

/// What the console asks of the admin API: stats, search, releasing a
/// seat, the ledger's newest entries.
#[tokio::test]
async fn the_console_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = TestServer::start_stored(dir.path()).await;
    let seat = format!("/v1/licenses/{STUDIO}/features/export-4k/seats/held-1");
    assert_eq!(
        n(&s, Method::PUT, &seat, None).await.status,
        StatusCode::CREATED
    );
    for _ in 0..3 {
        n(
            &s,
            Method::POST,
            &format!("/v1/licenses/{STUDIO}/features/ai-credits/usage"),
            Some(json!({"units": 2})),
        )
        .await;
    }
    let stats = s.admin(Method::GET, "/stats", None).await;
    assert_eq!(stats.status, StatusCode::OK);
    let v = stats.json();
    assert_eq!(v["objects"]["licenses"], 6);
    assert_eq!(v["floating_seats_held"], 1);
    let native = v["surfaces"]
        .as_array()
        .expect("surfaces")
        .iter()
        .find(|x| x["surface"] == "native")
        .expect("native")
        .clone();
    assert_eq!(native["requests"], 4);
    let buckets = native["latency_buckets_s"].as_array().expect("buckets");
    assert_eq!(
        buckets
            .iter()
            .map(|b| b[1].as_u64().unwrap_or(0))
            .sum::<u64>(),
        4
    );
    assert!(buckets.last().expect("inf")[0].is_null(), "the +Inf bucket");

    // Search: a license key, a tenant by name, a Qlik subject, nothing.
    let hits = s
        .admin(Method::GET, "/search?q=DEMO-STUDIO-0001", None)
        .await
        .json();
    assert_eq!(hits["items"][0]["kind"], "license");
    let license_id = hits["items"][0]["id"].as_u64().expect("id");
    let hits = s
        .admin(Method::GET, "/search?q=demo%20inc", None)
        .await
        .json();
    assert_eq!(hits["items"][0]["kind"], "tenant");
    assert_eq!(
        s.admin(Method::GET, "/search?q=", None).await.status,
        StatusCode::BAD_REQUEST
    );
    let none = s
        .admin(Method::GET, "/search?q=zzz-nothing", None)
        .await
        .json();
    assert_eq!(none["items"], json!([]));

    // Release the seat as an operator: a logged change.
    let feature = s
        .admin(
            Method::GET,
            &format!("/licenses/{license_id}/floating"),
            None,
        )
        .await
        .json()["features"][0]["feature_id"]
        .clone();
    let path = format!("/licenses/{license_id}/floating/held-1?feature_id={feature}");
    let r = s.admin(Method::DELETE, &path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json());
    assert_eq!(r.json()["features"][0]["in_use"], 0);
    let again = s.admin(Method::DELETE, &path, None).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // The ledger's newest entries, oldest first.
    let tenant = s
        .app
        .engine
        .api_key(common::API_KEY)
        .expect("key")
        .tenant_id;
    let tail = s
        .admin(
            Method::GET,
            &format!("/ledger?tenant_id={tenant}&tail=2"),
            None,
        )
        .await;
    assert_eq!(tail.status, StatusCode::OK, "{:?}", tail.json());
    let items = tail.json()["items"].as_array().expect("items").clone();
    let kinds: Vec<&str> = items
        .iter()
        .map(|e| e["entry"]["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["units_consumed", "seat_released"]);
    assert_eq!(
        s.admin(Method::GET, "/ledger?tail=0", None).await.status,
        StatusCode::BAD_REQUEST
    );
}
