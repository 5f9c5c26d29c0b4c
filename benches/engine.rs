//! In-process engine operations, without HTTP: the feature check (key-based
//! at catalog sizes of 1k, 100k and 1M licenses with 4 features each, and
//! user-based), floating acquire / renew / release, consumption add and seat
//! assign / unassign; each uncontended and with 2 threads on one hot license.
//!
//! `TALLY_BENCH_SIZES=1000,100000` limits the catalog sizes (1M takes about
//! a minute to build and a gigabyte of memory).
//!
//! `sign_rsa2048/*`: one fresh response signature (RSA-2048, PKCS#1 v1.5,
//! SHA-256) by the signer Tally uses (aws-lc-rs) and by the rsa crate it used
//! before, side by side; compare with `openssl speed -seconds 3 rsa2048`
//! (its sign/s) on the same machine.
//!
//! Contended benchmarks report the wall time of one operation on each of the
//! 2 threads: ops/s across both threads = 2 / time.
#![allow(clippy::too_many_lines, reason = "scenarios read top to bottom")]

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use tally::api::licensespring::wire::FeatureCheck;
use tally::catalog::{
    generate, generated_license, generated_pool_device, load_slice, GENERATED_API_KEY,
    GENERATED_POOL_FEATURE, GENERATED_POOL_LICENSE, GENERATED_PRODUCT,
};
use tally::engine::model::{DeviceInfo, Feature, License};
use tally::engine::seat::SeatPool;
use tally::engine::{Command, Engine};

const NOW: i64 = 1_795_000_000_000;
/// Keys looked up in turn by the catalog-size benchmarks (spread over the catalog).
const PROBES: usize = 4096;

fn sizes() -> Vec<u64> {
    std::env::var("TALLY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000, 1_000_000])
}

fn engine(licenses: u64) -> (Arc<Engine>, u64) {
    let mut buf = Vec::new();
    generate(&mut buf, licenses, 4).expect("generate");
    let e = Engine::new();
    load_slice(&e, &buf, NOW).expect("load");
    let tenant = e.api_key(GENERATED_API_KEY).expect("key").tenant_id;
    (Arc::new(e), tenant)
}

/// What `check_license_feature` does for a key-based license, minus HTTP:
/// product and license lookup, license, device and feature checks, body.
fn check(e: &Engine, tenant: u64, key: &str, hw: &str, feature: &str, out: &mut Vec<u8>) {
    check_license(e, &lookup(e, tenant, key), hw, feature, out);
}

fn lookup(e: &Engine, tenant: u64, key: &str) -> Arc<License> {
    e.with_product_by_code(tenant, GENERATED_PRODUCT, |p| {
        p.licenses_by_key.get(key).map(|l| l.clone())
    })
    .flatten()
    .expect("license")
}

/// The decision: license usable, device active, feature present and valid;
/// then `then` on the feature, in place (as the server answers).
fn decide<T>(
    e: &Engine,
    lic: &License,
    hw: &str,
    feature: &str,
    then: impl FnOnce(&Feature) -> T,
) -> T {
    e.check_usable(lic, NOW).expect("usable");
    e.check_device(lic, hw).expect("device");
    lic.with_feature(feature, |f| {
        e.check_feature(f, NOW).expect("feature ok");
        then(f)
    })
    .expect("feature")
}

fn check_license(e: &Engine, lic: &License, hw: &str, feature: &str, out: &mut Vec<u8>) {
    decide(e, lic, hw, feature, |f| {
        let s = f.spec.load();
        out.clear();
        serde_json::to_writer(
            &mut *out,
            &FeatureCheck::new(lic.id, f, &s, None, f.meter.used(NOW)),
        )
        .expect("json");
    });
}

thread_local! {
    /// Each thread's body buffer for the contended check.
    static OUT: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

/// Runs `op` on 2 threads at once; the time reported is per operation per thread.
fn contended(c: &mut Criterion, name: &str, op: impl Fn() + Sync) {
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for _ in 0..iters {
                            op();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
}

fn checks_by_catalog_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("feature_check_key");
    for n in sizes() {
        let (e, tenant) = engine(n);
        // Probe keys spread over the whole catalog, so lookups miss the CPU
        // caches the way random traffic does.
        let probes: Vec<(String, String)> = (0..PROBES as u64)
            .map(|i| generated_license(i.wrapping_mul(2_654_435_761) % n))
            .collect();
        let mut out = Vec::with_capacity(512);
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let (k, h) = &probes[i % PROBES];
                i = i.wrapping_add(1);
                check(&e, tenant, black_box(k), h, "f0", &mut out)
            })
        });
    }
    group.finish();
}

fn operations(c: &mut Criterion) {
    let (e, tenant) = engine(1_000);
    let (key, hw) = generated_license(7);
    let mut out = Vec::with_capacity(512);
    // The decision alone (lookups and state checks, no body): what a check
    // costs when its answer is already rendered, as the server keeps it.
    c.bench_function("feature_check_key/hot/decision_only", |b| {
        b.iter(|| {
            let lic = lookup(&e, tenant, black_box(key.as_str()));
            black_box(decide(&e, &lic, &hw, "f0", |f| f.id))
        })
    });
    c.bench_function("feature_check_key/hot", |b| {
        b.iter(|| check(&e, tenant, black_box(&key), &hw, "f0", &mut out))
    });

    // User-based: the demo catalog's alice@example.com on product "cloud".
    let demo = Engine::new();
    load_slice(&demo, include_bytes!("../examples/demo.json"), NOW).expect("demo");
    let demo_tenant = demo.api_key("demo-api-key").expect("demo key").tenant_id;
    let cloud = demo.product_by_code(demo_tenant, "cloud").expect("cloud");
    let alice = demo
        .user_by_email(demo_tenant, "alice@example.com")
        .expect("alice");
    let alice_license = demo.licenses_of_user(&alice, Some(cloud.id))[0].id;
    demo.apply(&Command::Activate {
        license_id: alice_license,
        hardware_id: Cow::Borrowed("alice-hw"),
        info: DeviceInfo::default(),
        device_id: demo.next_id(),
        now: NOW,
    })
    .expect("activate alice");
    c.bench_function("feature_check_user/hot", |b| {
        b.iter(|| {
            let product = demo
                .product_by_code(demo_tenant, black_box("cloud"))
                .expect("product");
            let user = demo
                .user_by_email(demo_tenant, black_box("alice@example.com"))
                .expect("user");
            let lic = demo
                .licenses_of_user(&user, Some(product.id))
                .into_iter()
                .next()
                .expect("license");
            check_license(&demo, &lic, "alice-hw", "sync", &mut out)
        })
    });

    let product = e.product_by_code(tenant, GENERATED_PRODUCT).expect("p");
    let lic = product
        .licenses_by_key
        .get(key.as_str())
        .expect("l")
        .clone();
    let pool = product
        .licenses_by_key
        .get(GENERATED_POOL_LICENSE)
        .expect("pool")
        .clone();
    let seat = pool.feature(GENERATED_POOL_FEATURE).expect("seat").id;
    let floating = lic.feature("f1").expect("f1").id;
    let metered = lic.feature("f2").expect("f2").id;
    let renew = |hw: &str| {
        e.apply(&Command::FloatingAcquire {
            license_id: lic.id,
            feature_id: Some(floating),
            hardware_id: Cow::Borrowed(hw),
            now: NOW,
            ttl_ms: None,
        })
        .expect("renew");
    };
    c.bench_function("floating_renew", |b| b.iter(|| renew(&hw)));
    let pool_device = generated_pool_device(0);
    c.bench_function("floating_acquire_release", |b| {
        b.iter(|| {
            e.apply(&Command::FloatingAcquire {
                license_id: pool.id,
                feature_id: Some(seat),
                hardware_id: Cow::Borrowed(&pool_device),
                now: NOW,
                ttl_ms: None,
            })
            .expect("acquire");
            e.apply(&Command::FloatingRelease {
                license_id: pool.id,
                feature_id: Some(seat),
                hardware_id: Cow::Borrowed(&pool_device),
                now: NOW,
            })
            .expect("release");
        })
    });
    let metered_feature = lic.feature("f2").expect("f2");
    // As the server does it: license and feature resolved from the request's
    // keys, then the command applied to them.
    let consume = || {
        e.apply_resolved(
            &Command::AddConsumption {
                license_id: lic.id,
                feature_id: Some(metered),
                amount: 1,
                now: NOW,
            },
            &lic,
            &metered_feature,
        )
        .expect("add");
    };
    c.bench_function("consumption_add", |b| b.iter(consume));
    let seats = SeatPool::new(1_000, 0, false);
    let assign = || {
        let _ = black_box(seats.try_acquire().expect("seat"));
        seats.release();
    };
    c.bench_function("seat_assign_unassign", |b| b.iter(assign));

    // Two threads on the same hot license.
    contended(c, "feature_check_key/hot/contended_2_threads", || {
        OUT.with(|out| {
            check(
                &e,
                tenant,
                black_box(&key),
                &hw,
                "f0",
                &mut out.borrow_mut(),
            )
        })
    });
    contended(c, "floating_renew/contended_2_threads", || renew(&hw));
    contended(c, "consumption_add/contended_2_threads", consume);
    contended(c, "seat_assign_unassign/contended_2_threads", assign);
}

fn signing(c: &mut Criterion) {
    use rsa::signature::{SignatureEncoding, Signer as _};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), tally::signing::RSA_KEY_BITS)
        .expect("key");
    let body = br#"{"id":1,"code":"f0","license_active":true,"total_consumptions":42}"#;
    let signer = tally::signing::Signer::new(key.clone(), 0);
    c.bench_function("sign_rsa2048/aws_lc_rs", |b| {
        b.iter(|| black_box(signer.sign_raw(black_box(body))))
    });
    let old = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key);
    c.bench_function("sign_rsa2048/rsa_crate", |b| {
        b.iter(|| black_box(old.sign(black_box(body)).to_vec()))
    });
}

criterion_group! {
    name = engine_benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = operations, checks_by_catalog_size, signing
}
criterion_main!(engine_benches);
