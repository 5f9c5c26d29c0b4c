//! Measures webhook delivery latency through the real binary: from the
//! moment a change's request is sent to the moment its event reaches a
//! receiver on the same machine (and, apart, the change's own answer).
//!
//! It starts a receiver, writes a catalog whose tenant subscribes it to
//! `seats.exhausted` and `seats.available` on a 2-seat floating pool,
//! starts `tally serve` (`--fsync always`) on it, takes one seat, then
//! takes and releases the second one `--events` times, one request at a
//! time: every one of those requests makes exactly one event. With
//! `--load N`, N more connections meanwhile add consumption on another
//! license (no events) as fast as they can.
//!
//!     cargo build --release && cargo run --release --example webhook_latency -- \
//!         --tally target/release/tally --events 2000 [--load 4]
//!
//! `loadtest/webhooks.sh` runs it both ways.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

const KEY: &str = "latency-key";
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Receipt times by event id.
type Received = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver() -> (u16, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got: Received = Arc::default();
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let g = g.clone();
                    async move {
                        let at = Instant::now();
                        let id = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let _ = req.into_body().collect().await;
                        g.lock().expect("lock").entry(id).or_insert(at);
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (port, got)
}

fn catalog(port: u16) -> serde_json::Value {
    json!({"tenants": [{
        "name": "Latency",
        "api_keys": [{"api_key": KEY, "shared_key": "latency-shared", "role": "admin"}],
        "products": [{"short_code": "p", "name": "P", "authorization_method": "license-key"}],
        "licenses": [
            {"product": "p", "license_key": "POOL", "max_activations": 1,
             "features": [{"code": "seat", "is_floating_cloud": true, "floating_users": 2,
                           "floating_timeout": 600}]},
            {"product": "p", "license_key": "LOAD", "max_activations": 1,
             "features": [{"code": "units", "feature_type": "consumption",
                           "allow_unlimited_consumptions": true}]}
        ],
        "webhooks": [{"url": format!("http://127.0.0.1:{port}/hooks"),
                      "events": ["seats.exhausted", "seats.available"],
                      "license": "POOL", "secret": SECRET}]
    }]})
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn send(client: &HttpClient, method: Method, url: &str, body: &'static str) -> u16 {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let resp = client.request(req).await.expect("answer");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{name:<28} p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms   ({} samples)",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(0.0),
        v.len()
    );
}

/// `tally serve` on `catalog` with `--fsync always`; its address.
fn start_tally(
    tally: &str,
    catalog: &std::path::Path,
    data: &std::path::Path,
) -> (std::process::Child, String) {
    let mut child = Command::new(tally)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-sign",
            "--fsync",
            "always",
        ])
        .arg("--data-dir")
        .arg(data)
        .arg("--catalog")
        .arg(catalog)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tally");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("tally did not start");
    (child, addr)
}

#[tokio::main]
async fn main() {
    let tally = arg("--tally").unwrap_or_else(|| "target/release/tally".into());
    let events: usize = arg("--events").and_then(|v| v.parse().ok()).unwrap_or(2000);
    let load: usize = arg("--load").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (port, got) = receiver().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let cat = tmp.path().join("catalog.json");
    std::fs::write(&cat, catalog(port).to_string()).expect("catalog");
    let (mut child, addr) = start_tally(&tally, &cat, &tmp.path().join("data"));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let seat = |h: &str| format!("http://{addr}/v1/licenses/POOL/features/seat/seats/{h}");
    assert_eq!(send(&client, Method::PUT, &seat("a"), "").await, 201);

    let stop = Arc::new(AtomicBool::new(false));
    let loaded = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..load)
        .map(|_| {
            let (client, stop, loaded) = (client.clone(), stop.clone(), loaded.clone());
            let url = format!("http://{addr}/v1/licenses/LOAD/features/units/usage");
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if send(&client, Method::POST, &url, r#"{"units": 1}"#).await == 200 {
                        loaded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut sent = Vec::with_capacity(events);
    let mut acked = Vec::with_capacity(events);
    for i in 0..events {
        let t = Instant::now();
        let status = if i % 2 == 0 {
            send(&client, Method::PUT, &seat("b"), "").await
        } else {
            send(&client, Method::DELETE, &seat("b"), "").await
        };
        assert!(status == 200 || status == 201, "status {status}");
        sent.push(t);
        acked.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        let _ = l.await;
    }
    // Every event, by id (their ids follow the order of the changes).
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().expect("lock").len() < events && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = got.lock().expect("lock").clone();
    let _ = child.kill();
    let _ = child.wait();
    let mut ids: Vec<&String> = got.keys().collect();
    ids.sort();
    assert_eq!(ids.len(), events, "every change's event arrived");
    let to_receiver: Vec<f64> = ids
        .iter()
        .zip(&sent)
        .map(|(id, t)| got[*id].duration_since(*t).as_secs_f64() * 1e3)
        .collect();
    let after_answer: Vec<f64> = ids
        .iter()
        .zip(sent.iter().zip(&acked))
        .map(|(id, (t, a))| got[*id].saturating_duration_since(*t + *a).as_secs_f64() * 1e3)
        .collect();
    println!(
        "{events} changes in {:.2} s, one at a time; {load} loading connections ({} consumptions meanwhile)",
        elapsed.as_secs_f64(),
        loaded.load(Ordering::Relaxed)
    );
    report(
        "change answered (durable)",
        acked.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
    );
    report("change sent -> receiver", to_receiver);
    report("answer -> receiver", after_answer);
}
