//! simd-json against serde_json on the JSON Tally parses, side by side
//! (issue #18: "use simd-json where JSON is parsed on a hot or bulk path,
//! keeping it only where it measures faster"):
//! - a LicenseSpring request body (an activation, about 300 bytes) into a
//!   `serde_json::Value`, as the surface reads every POST body;
//! - a log record's JSON into a `Command`, as recovery replays the log;
//! - one license of a generated catalog into a `Value`, as the catalog
//!   loader reads each license.
//!
//! simd-json parses in place, so each of its iterations copies the input
//! into a scratch buffer first (the server's bodies and files are not its
//! to overwrite): that copy is part of its cost.
//!
//! `taskset -c 1 cargo bench --bench json`. Measured 2026-12-01: serde_json
//! 871 ns / 361 ns / 1.48 us against simd-json through serde 1.07-1.14 us /
//! 531 ns / 1.80 us (slower on all three), and 661 ns for the body into
//! simd-json's own tree (0.76x, about 0.2 us of a request of about 10 us,
//! and the surfaces read their parameters from serde_json's map): Tally
//! keeps serde_json, and simd-json stays a dev-dependency of this bench.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tally::engine::Command;

const BODY: &str = r#"{"license_key":"GENL-0000-0000-0042","hardware_id":"gen-hw-42","product":"bench","os_ver":"Linux 6.1","hostname":"build-agent-17","ip":"10.1.2.3","mac_address":"02:42:ac:11:00:02","is_vm":false,"app_ver":"1.4.2","sdk_ver":"python-2.9.0","variables":[{"variable":"seat","value":"a"}]}"#;

fn record() -> Vec<u8> {
    let cmd = Command::AddConsumption {
        license_id: 123_456,
        feature_id: Some(123_460),
        amount: 1,
        now: 1_795_000_000_000,
    };
    serde_json::to_vec(&cmd).expect("json")
}

fn catalog_license() -> Vec<u8> {
    let mut buf = Vec::new();
    tally::catalog::generate(&mut buf, 1, 4).expect("generate");
    let doc: serde_json::Value = serde_json::from_slice(&buf).expect("catalog");
    serde_json::to_vec(&doc["tenants"][0]["licenses"][0]).expect("license")
}

fn pair(
    c: &mut Criterion,
    name: &str,
    input: &[u8],
    serde: impl Fn(&[u8]),
    simd: impl Fn(&mut [u8]),
) {
    c.bench_function(&format!("json/{name}/serde_json"), |b| {
        b.iter(|| serde(black_box(input)))
    });
    let mut scratch = Vec::with_capacity(input.len());
    c.bench_function(&format!("json/{name}/simd_json"), |b| {
        b.iter(|| {
            scratch.clear();
            scratch.extend_from_slice(black_box(input));
            simd(&mut scratch)
        })
    });
}

fn json(c: &mut Criterion) {
    pair(
        c,
        "request_body",
        BODY.as_bytes(),
        |b| {
            black_box(serde_json::from_slice::<serde_json::Value>(b).expect("body"));
        },
        |b| {
            black_box(simd_json::serde::from_slice::<serde_json::Value>(b).expect("body"));
        },
    );
    // simd-json's own tree (no serde): its fastest path, though the
    // surfaces would then need their parameters read from another type.
    let mut scratch = Vec::with_capacity(BODY.len());
    c.bench_function("json/request_body/simd_json_borrowed_value", |b| {
        b.iter(|| {
            scratch.clear();
            scratch.extend_from_slice(black_box(BODY.as_bytes()));
            let _ = black_box(simd_json::to_borrowed_value(&mut scratch));
        })
    });
    let rec = record();
    pair(
        c,
        "log_record",
        &rec,
        |b| {
            black_box(serde_json::from_slice::<Command>(b).expect("record"));
        },
        |b| {
            black_box(simd_json::serde::from_slice::<Command>(b).expect("record"));
        },
    );
    let lic = catalog_license();
    pair(
        c,
        "catalog_license",
        &lic,
        |b| {
            black_box(serde_json::from_slice::<serde_json::Value>(b).expect("license"));
        },
        |b| {
            black_box(simd_json::serde::from_slice::<serde_json::Value>(b).expect("license"));
        },
    );
}

criterion_group!(benches, json);
criterion_main!(benches);
