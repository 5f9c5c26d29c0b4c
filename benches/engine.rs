//! In-process engine operations on a generated catalog: the feature check
//! (lookup, state checks, body), floating renew, consumption add, uncontended
//! and with 2 threads on one hot license.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tally::api::licensespring::wire::FeatureCheck;
use tally::catalog::{
    generate, generated_license, load_slice, GENERATED_API_KEY, GENERATED_PRODUCT,
};
use tally::engine::{Command, Engine};

const LICENSES: u64 = 1_000;
const NOW: i64 = 1_795_000_000_000;

fn engine() -> Arc<Engine> {
    let mut buf = Vec::new();
    generate(&mut buf, LICENSES, 4).expect("generate");
    let e = Engine::new();
    load_slice(&e, &buf, NOW).expect("load");
    Arc::new(e)
}

/// What `check_license_feature` does for a key-based license, minus HTTP.
fn check(e: &Engine, tenant: u64, key: &str, hw: &str, feature: &str, out: &mut Vec<u8>) {
    let product = e
        .product_by_code(tenant, GENERATED_PRODUCT)
        .expect("product");
    let lic = product
        .licenses_by_key
        .get(key)
        .map(|l| l.clone())
        .expect("license");
    {
        let s = lic.spec.read();
        e.check_usable(&lic, &s, NOW).expect("usable");
    }
    e.check_device(&lic, hw).expect("device");
    let f = lic.feature(feature).expect("feature");
    e.check_feature(&f, NOW).expect("feature ok");
    let s = f.spec.read();
    out.clear();
    serde_json::to_writer(
        &mut *out,
        &FeatureCheck::new(lic.id, &f, &s, None, f.meter.used(NOW)),
    )
    .expect("json");
}

fn benches(c: &mut Criterion) {
    let e = engine();
    let tenant = e.api_key(GENERATED_API_KEY).expect("key").tenant_id;
    let (key, hw) = generated_license(7);
    let mut out = Vec::with_capacity(512);
    c.bench_function("feature_check/key/1k", |b| {
        b.iter(|| check(&e, tenant, black_box(&key), &hw, "f0", &mut out))
    });

    let lic = e
        .product_by_code(tenant, GENERATED_PRODUCT)
        .expect("p")
        .licenses_by_key
        .get(key.as_str())
        .expect("l")
        .clone();
    let floating = lic.feature("f1").expect("f1").id;
    let metered = lic.feature("f3").expect("f3").id;
    c.bench_function("floating_renew", |b| {
        b.iter(|| {
            e.apply(&Command::FloatingAcquire {
                license_id: lic.id,
                feature_id: Some(floating),
                hardware_id: Cow::Borrowed(&hw),
                now: NOW,
            })
            .expect("renew")
        })
    });
    c.bench_function("consumption_add", |b| {
        b.iter(|| {
            e.apply(&Command::AddConsumption {
                license_id: lic.id,
                feature_id: Some(metered),
                amount: 1,
                now: NOW,
            })
            .expect("add")
        })
    });
    // Two threads on the same hot meter; reports time per operation per thread.
    c.bench_function("consumption_add/contended_2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let e = e.clone();
                    let id = lic.id;
                    std::thread::spawn(move || {
                        for _ in 0..iters {
                            e.apply(&Command::AddConsumption {
                                license_id: id,
                                feature_id: Some(metered),
                                amount: 1,
                                now: NOW,
                            })
                            .expect("add");
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().expect("thread");
            }
            start.elapsed()
        })
    });
}

criterion_group! {
    name = engine_benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(engine_benches);
