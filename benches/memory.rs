//! Resident memory of the engine at catalog scale: builds N licenses with 4
//! features each (the generated catalog's shapes) by applying commands one
//! license at a time, so that no parsed catalog sits in memory beside them,
//! and reports the growth of the process's resident set per license and per
//! feature; then activates one device on each and reports again.
//!
//! `cargo bench --bench memory` (N = 1,000,000; `TALLY_MEMORY_LICENSES=N` to
//! change it).

use std::borrow::Cow;

use tally::catalog::{generate, generated_license, load_slice, GENERATED_PRODUCT};
use tally::engine::model::{DeviceInfo, Feature, FeatureSpec, License, LicenseSpec};
use tally::engine::{Command, Engine};

/// The server's allocator (src/main.rs): its size classes decide what a
/// structure really costs, so the figures here are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_795_000_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let n: u64 = std::env::var("TALLY_MEMORY_LICENSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!(
        "size_of: License {} B (align {}), Feature {} B (align {}), LicenseSpec {} B, FeatureSpec {} B, DeviceInfo {} B",
        std::mem::size_of::<License>(),
        std::mem::align_of::<License>(),
        std::mem::size_of::<Feature>(),
        std::mem::align_of::<Feature>(),
        std::mem::size_of::<LicenseSpec>(),
        std::mem::size_of::<FeatureSpec>(),
        std::mem::size_of::<DeviceInfo>(),
    );
    // One generated license gives the tenant, the product and the templates.
    let mut buf = Vec::new();
    generate(&mut buf, 1, 4).expect("generate");
    let e = Engine::new();
    load_slice(&e, &buf, NOW).expect("load");
    let tenant = e
        .api_key(tally::catalog::GENERATED_API_KEY)
        .expect("key")
        .tenant_id;
    let product = e
        .product_by_code(tenant, GENERATED_PRODUCT)
        .expect("product");
    let template = product
        .licenses_by_key
        .get(generated_license(0).0.as_str())
        .expect("template")
        .clone();
    let spec = template.spec();
    let features: Vec<FeatureSpec> = template
        .features
        .read()
        .iter()
        .map(|f| (**f.spec.load()).clone())
        .collect();
    drop(buf);

    let before = rss_bytes();
    let mut ids = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let (key, _) = generated_license(i);
        let mut s = spec.clone();
        s.license_key = Some(key);
        let id = e.next_id();
        let fs: Vec<_> = features.iter().map(|f| (e.next_id(), f.clone())).collect();
        e.apply(&Command::PutLicense {
            id,
            spec: s,
            features: fs,
            now: NOW,
        })
        .expect("license");
        ids.push(id);
    }
    let ids_bytes = (ids.capacity() * std::mem::size_of::<u64>()) as u64;
    let grown = rss_bytes().saturating_sub(before + ids_bytes);
    report(n, features.len() as u64, grown, "no devices");
    for (i, id) in ids.iter().enumerate() {
        let (_, hw) = generated_license(i as u64 + 1);
        e.apply(&Command::Activate {
            license_id: *id,
            hardware_id: Cow::Owned(hw),
            info: DeviceInfo::default(),
            device_id: e.next_id(),
            now: NOW,
        })
        .expect("device");
    }
    let grown = rss_bytes().saturating_sub(before + ids_bytes);
    report(n, features.len() as u64, grown, "1 device each");
}

fn report(n: u64, features: u64, grown: u64, what: &str) {
    println!(
        "{n} licenses x {features} features, {what}: resident +{} MiB, {} B per license, {} B per feature (all included)",
        grown / (1 << 20),
        grown / n.max(1),
        grown / (n.max(1) * features),
    );
}
