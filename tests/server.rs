//! The server itself: health, limits, malformed requests, graceful shutdown,
//! and the real `tally` binary started from the command line.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hyper::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_unknown_paths() {
    let s = TestServer::start().await;
    let req = hyper::Request::builder()
        .uri(s.url("/healthz"))
        .body(http_body_util::Full::default())
        .expect("req");
    let r = s.send(req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json()["objects"]["licenses"],
        6,
        "the demo catalog's licenses"
    );
    let req = hyper::Request::builder()
        .uri(s.url("/nope"))
        .body(http_body_util::Full::default())
        .expect("req");
    assert_eq!(s.send(req).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_and_state_is_kept() {
    let s = TestServer::start_with(|o| o.limits.request_body_bytes_max = 1024).await;
    let big = serde_json::json!({"product": "studio", "license_key": "DEMO-STUDIO-0001", "hardware_id": "x".repeat(2000)});
    let r = s.ls_post("activate_license", big).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    );
    let r = s
        .admin(
            Method::POST,
            "/tenants",
            Some(serde_json::json!({"name": "y".repeat(2000)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = s
        .ls_get(
            "check_license",
            &[
                ("product", "studio"),
                ("license_key", "DEMO-STUDIO-0001"),
                ("hardware_id", "demo-laptop"),
            ],
        )
        .await;
    assert_eq!(r.json()["times_activated"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_socket_does_not_hurt_the_server() {
    let s = TestServer::start().await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        for junk in [
            &b"\x00\x01\x02 garbage\r\n\r\n"[..],
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        ] {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            c.write_all(junk).expect("write");
            let mut out = Vec::new();
            let _ = c.read_to_end(&mut out);
            let text = String::from_utf8_lossy(&out);
            assert!(out.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
        }
    })
    .await
    .expect("junk");
    let req = hyper::Request::builder()
        .uri(s.url("/healthz"))
        .body(http_body_util::Full::default())
        .expect("req");
    assert_eq!(s.send(req).await.status, StatusCode::OK);
}

/// A body that stops arriving is answered 408 once the request time limit
/// passes, in each surface's error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_time_out() {
    let s = TestServer::start_with(|o| o.limits.request_timeout = Duration::from_millis(300)).await;
    let (date, auth) = tally::api::licensespring::client_headers(
        "demo-api-key",
        "demo-shared-key",
        tally::clock::Clock::now_ms(&*s.clock),
    );
    let addr = s.addr;
    let token = ADMIN_TOKEN;
    tokio::task::spawn_blocking(move || {
        for (head, code) in [
            (
                format!("POST /api/v4/activate_license HTTP/1.1\r\nHost: x\r\nDate: {date}\r\nAuthorization: {auth}\r\nContent-Length: 100\r\n\r\n"),
                "\"code\":\"request_timeout\"",
            ),
            (
                format!("POST /admin/v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n"),
                "request_timeout",
            ),
        ] {
            let mut c = TcpStream::connect(addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            c.write_all(head.as_bytes()).expect("write");
            c.write_all(b"{\"a\":").expect("write");
            let mut out = [0u8; 4096];
            let n = c.read(&mut out).expect("an answer before the client gives up");
            let text = String::from_utf8_lossy(&out[..n]);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            assert!(text.contains(code), "{text}");
        }
    })
    .await
    .expect("stalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_stops_accepting() {
    let mut s = TestServer::start().await;
    let addr = s.addr;
    s.stop().await;
    assert!(
        TcpStream::connect(addr).is_err() || {
            // The port may be reused by the OS; a connect that succeeds must not be served.
            let mut c = TcpStream::connect(addr).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut buf = [0u8; 16];
            !matches!(c.read(&mut buf), Ok(n) if n > 0)
        }
    );
}

/// `tally serve` from the command line: prints its address, serves the demo
/// catalog, writes its key and token to the data directory, exits cleanly on SIGTERM.
#[test]
fn binary_serves_demo_catalog_and_stops_on_sigterm() {
    binary_round_trip(&[]);
}

/// The same with one current-thread runtime per core on SO_REUSEPORT listeners.
#[test]
fn binary_serves_on_per_core_runtimes() {
    binary_round_trip(&["--runtime", "current-thread", "--workers", "2"]);
}

fn binary_round_trip(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--catalog")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.json"))
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("TALLY_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tally");
    let stderr = child.stderr.take().expect("stderr");
    // Read the log on a thread until the server exits, passing its address back.
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.split("listening on http://").nth(1) {
                let _ = tx.send(a.split_whitespace().next().unwrap_or("").to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server printed its address");
    let (date, auth) = tally::api::licensespring::client_headers(
        API_KEY,
        SHARED_KEY,
        tally::clock::Clock::now_ms(&tally::clock::SystemClock),
    );
    // Several connections, so that per-core listeners each get some.
    for _ in 0..8 {
        let mut c = TcpStream::connect(&addr).expect("connect");
        write!(
            c,
            "GET /api/v4/check_license_feature?product=studio&license_key=DEMO-STUDIO-0001&hardware_id=demo-laptop&feature=render HTTP/1.1\r\nHost: x\r\nDate: {date}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("read");
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.to_ascii_lowercase().contains("licensesignature:"));
    }
    assert!(dir.path().join("signing_key.pem").exists());
    assert!(dir.path().join("admin_token").exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = child.wait().expect("wait");
    let log = log.join().expect("log thread");
    assert!(code.success(), "clean exit on SIGTERM: {code:?}\n{log}");
    assert!(log.contains("shutting down"), "{log}");

    // The CLI prints the same public key the server signs with.
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["public-key", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("public-key");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("-----BEGIN PUBLIC KEY-----"));
}

#[test]
fn bad_catalog_fails_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cat = dir.path().join("bad.json");
    std::fs::write(&cat, r#"{"tenants":[{"name":"t","products":[{"short_code":"p","name":"p","authorization_method":"license-key"}],"licenses":[{"product":"p","license_key":"k","max_activations":"three"}]}]}"#).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--catalog"])
        .arg(&cat)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tenants[0].licenses[0].max_activations"),
        "{err}"
    );
}

#[test]
fn generated_catalog_loads() {
    let mut buf = Vec::new();
    tally::catalog::generate(&mut buf, 50, 4).expect("generate");
    let engine = tally::engine::Engine::new();
    let loaded = tally::catalog::load_slice(&engine, &buf, 0).expect("load");
    // 50 licenses plus the shared floating pool (1 feature, 256 devices).
    assert_eq!(
        (loaded.licenses, loaded.features, loaded.devices),
        (
            51,
            201,
            50 + tally::catalog::GENERATED_POOL_DEVICES as usize
        )
    );
}

/// The auth-headers helper prints headers the server accepts (used by the README's curl examples).
#[test]
fn auth_headers_helper_matches_server_signature() {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["auth-headers", "--api-key", "k", "--shared-key", "s"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let date = text
        .lines()
        .find_map(|l| l.strip_prefix("Date: "))
        .expect("date line");
    let sig = tally::api::licensespring::sign_date("s", date);
    assert!(text.contains(&format!("signature=\"{sig}\"")), "{text}");
}
