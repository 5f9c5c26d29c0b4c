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

/// The same with one current-thread runtime per core on SO_REUSEPORT
/// listeners (the default), two of them.
#[test]
fn binary_serves_on_per_core_runtimes() {
    binary_round_trip(&["--runtime", "current-thread", "--workers", "2"]);
}

/// The same on one work-stealing multi-thread runtime.
#[test]
fn binary_serves_on_the_multi_thread_runtime() {
    binary_round_trip(&["--runtime", "multi-thread", "--workers", "2"]);
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

/// Sends `raw` on a fresh connection and returns what comes back before the
/// server closes it or `wait` passes.
fn raw_exchange(addr: std::net::SocketAddr, raw: &[u8], wait: Duration) -> String {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(wait)).expect("timeout");
    c.write_all(raw).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Requests refused before a surface reads them (no Host, two Hosts, raw or
/// percent-encoded bytes that are not UTF-8) get 400 in that surface's
/// error shape, not hyper's empty 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_each_surfaces_error_shape() {
    let s = TestServer::start().await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let cases: [(&[u8], &str); 7] = [
            (b"GET /api/v4/check_license HTTP/1.1\r\nConnection: close\r\n\r\n", "\"code\":\"missing_headers\""),
            (
                b"GET /api/v4/check_license HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
                "\"code\":\"invalid_headers\"",
            ),
            (
                b"GET /api/v4/check_license?product=\xff\xfe HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                "\"code\":\"validation_error\"",
            ),
            (
                b"GET /v2/accounts/me/license-packs/%ff?v=20261125 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                "\"code\":2007",
            ),
            (
                b"GET /api/v1/licenses/overview?\xc3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                "LICENSES-009",
            ),
            (
                b"GET /saas/public/core/v3/license/org/\xff HTTP/1.1\r\nConnection: close\r\n\r\n",
                "\"error\":{\"code\":\"VALIDATION_01\"",
            ),
            (b"GET /admin/v1/tenants HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n", "\"code\":\"invalid\""),
        ];
        for (raw, want) in cases {
            let text = raw_exchange(addr, raw, Duration::from_secs(3));
            assert!(text.starts_with("HTTP/1.1 400"), "{text}");
            assert!(text.contains(want), "{want}: {text}");
        }
    })
    .await
    .expect("malformed");
}

/// A body the server will not read says `Connection: close`; a declared
/// length over the limit with `Expect: 100-continue` gets 413 at once, never
/// `100 Continue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bodies_close_the_connection_and_skip_100_continue() {
    let s = TestServer::start_with(|o| o.limits.request_body_bytes_max = 1024).await;
    let (date, auth) = tally::api::licensespring::client_headers(
        API_KEY,
        SHARED_KEY,
        tally::clock::Clock::now_ms(&*s.clock),
    );
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        let head = format!(
            "POST /api/v4/activate_license HTTP/1.1\r\nHost: x\r\nDate: {date}\r\nAuthorization: {auth}\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n"
        );
        let text = raw_exchange(addr, head.as_bytes(), Duration::from_secs(3));
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(!text.contains("100 Continue"), "{text}");
        assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
        let head = format!(
            "POST /admin/v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 5000\r\n\r\n{}",
            "x".repeat(5000)
        );
        let text = raw_exchange(addr, head.as_bytes(), Duration::from_secs(3));
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    })
    .await
    .expect("bodies");
}

/// The admin API reads ids as ids are written and refuses totals below zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ids_are_canonical_and_totals_not_negative() {
    let s = TestServer::start().await;
    let lic = s.admin(Method::GET, "/licenses?limit=1", None).await.json()["items"][0].clone();
    let id = lic["id"].as_u64().expect("id");
    assert_eq!(
        s.admin(Method::GET, &format!("/licenses/{id}"), None)
            .await
            .status,
        StatusCode::OK
    );
    for alias in [format!("+{id}"), format!("0{id}"), format!("{id}%20")] {
        let r = s
            .admin(Method::GET, &format!("/licenses/{alias}"), None)
            .await;
        assert_ne!(r.status, StatusCode::OK, "{alias:?} named license {id}");
    }
    let r = s.admin(Method::GET, "/licenses?after=+1", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s
        .admin(
            Method::PUT,
            &format!("/licenses/{id}/consumption"),
            Some(serde_json::json!({"total": -1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.json());
    assert_eq!(r.json()["error"]["path"], "total");
}

/// A keep-alive connection nobody uses, and a head trickled byte by byte,
/// lose their connection at the named limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed() {
    let s = TestServer::start_with(|o| {
        o.limits.keep_alive_idle = Duration::from_millis(400);
        o.limits.request_head_timeout = Duration::from_millis(400);
    })
    .await;
    let addr = s.addr;
    tokio::task::spawn_blocking(move || {
        // Idle after one answer: closed (EOF) well before the client gives up.
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let started = std::time::Instant::now();
        let mut all = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) => panic!("no close within 5 s: {e}"),
            }
        }
        assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // A head trickled slower than the head limit: closed without an answer.
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let started = std::time::Instant::now();
        let mut closed = false;
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            .iter()
            .cycle()
            .take(200)
        {
            if c.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
            match c.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => panic!("answered a head that never ended"),
                Err(_) => {}
            }
        }
        assert!(closed, "a trickled head kept its connection");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    })
    .await
    .expect("connections");
}
