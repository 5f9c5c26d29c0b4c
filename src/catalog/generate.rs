//! Generated catalogs for benchmarks and load tests (`tally gen-catalog`).

use std::io::Write;

/// Credentials of generated catalogs (benchmarks and load tests use them).
pub const GENERATED_API_KEY: &str = "bench-api-key";
pub const GENERATED_SHARED_KEY: &str = "bench-shared-key";
pub const GENERATED_PRODUCT: &str = "bench";

/// The license key and hardware id of generated license `i`.
pub fn generated_license(i: u64) -> (String, String) {
    (format!("BENCH-{i:010}"), format!("hw-{i:010}"))
}

/// Every generated catalog also holds one shared floating pool: license
/// [`GENERATED_POOL_LICENSE`] with [`GENERATED_POOL_DEVICES`] activated devices
/// and a floating feature [`GENERATED_POOL_FEATURE`] of
/// [`GENERATED_POOL_SEATS`] seats, fewer than a load test's clients, so that
/// floating churn contends for seats.
pub const GENERATED_POOL_LICENSE: &str = "BENCH-POOL";
pub const GENERATED_POOL_FEATURE: &str = "seat";
pub const GENERATED_POOL_DEVICES: u64 = 256;
pub const GENERATED_POOL_SEATS: u64 = 32;

/// Hardware id of pool device `i` (taken modulo [`GENERATED_POOL_DEVICES`]).
pub fn generated_pool_device(i: u64) -> String {
    format!("pool-hw-{:03}", i % GENERATED_POOL_DEVICES)
}

/// Professional and analyzer seats of the generated tenant's Qlik license
/// (more than a load test's connections, so assignment churn succeeds).
pub const GENERATED_QLIK_SEATS: u64 = 100_000;
/// The generated tenant's Yext account and its one pack (of
/// [`GENERATED_QLIK_SEATS`] licenses).
pub const GENERATED_YEXT_ACCOUNT: &str = "bench-account";
pub const GENERATED_YEXT_PACK: &str = "bench-pack";

/// Writes a synthetic catalog: one tenant, one key-based product, `licenses`
/// licenses each with `features` features (cycling activation, floating,
/// consumption, unlimited consumption) and one activated device, plus the
/// shared floating pool license described at [`GENERATED_POOL_LICENSE`]; the
/// tenant also holds a Qlik license of [`GENERATED_QLIK_SEATS`] seats each
/// and a Yext account with one pack of as many licenses.
pub fn generate(out: &mut impl Write, licenses: u64, features: u32) -> std::io::Result<()> {
    write!(
        out,
        r#"{{"tenants":[{{"name":"Bench","api_keys":[{{"api_key":"{GENERATED_API_KEY}","shared_key":"{GENERATED_SHARED_KEY}","role":"admin"}}],"qlik":{{"licenseNumber":"BENCH","product":"Bench","valid":"2020-01-01/.","allotments":[{{"name":"professional","units":{GENERATED_QLIK_SEATS}}},{{"name":"analyzer","units":{GENERATED_QLIK_SEATS}}},{{"name":"analyzer_time","units":{GENERATED_QLIK_SEATS}}}]}},"yext":{{"accountId":"{GENERATED_YEXT_ACCOUNT}","packs":[{{"id":"{GENERATED_YEXT_PACK}","name":"Bench","total":{GENERATED_QLIK_SEATS}}}]}},"products":[{{"short_code":"{GENERATED_PRODUCT}","name":"Bench","authorization_method":"license-key","max_borrow_time":24}}],"licenses":["#
    )?;
    for i in 0..licenses {
        if i > 0 {
            out.write_all(b",")?;
        }
        let (key, hw) = generated_license(i);
        write!(
            out,
            r#"{{"product":"{GENERATED_PRODUCT}","license_key":"{key}","max_activations":4,"devices":[{{"hardware_id":"{hw}"}}],"features":["#
        )?;
        for f in 0..features {
            if f > 0 {
                out.write_all(b",")?;
            }
            match f % 4 {
                0 => write!(out, r#"{{"code":"f{f}","name":"Feature {f}"}}"#)?,
                1 => write!(
                    out,
                    r#"{{"code":"f{f}","name":"Floating {f}","is_floating_cloud":true,"floating_users":8,"floating_timeout":30}}"#
                )?,
                2 => write!(
                    out,
                    r#"{{"code":"f{f}","name":"Metered {f}","feature_type":"consumption","max_consumption":1000000000,"allow_overages":true,"max_overages":1000}}"#
                )?,
                _ => write!(
                    out,
                    r#"{{"code":"f{f}","name":"Unlimited {f}","feature_type":"consumption","allow_unlimited_consumptions":true}}"#
                )?,
            }
        }
        out.write_all(b"]}")?;
    }
    if licenses > 0 {
        out.write_all(b",")?;
    }
    write!(
        out,
        r#"{{"product":"{GENERATED_PRODUCT}","license_key":"{GENERATED_POOL_LICENSE}","max_activations":{GENERATED_POOL_DEVICES},"devices":["#
    )?;
    for d in 0..GENERATED_POOL_DEVICES {
        if d > 0 {
            out.write_all(b",")?;
        }
        write!(out, r#"{{"hardware_id":"{}"}}"#, generated_pool_device(d))?;
    }
    write!(
        out,
        r#"],"features":[{{"code":"{GENERATED_POOL_FEATURE}","name":"Pool seat","is_floating_cloud":true,"floating_users":{GENERATED_POOL_SEATS},"floating_timeout":30}}]}}"#
    )?;
    out.write_all(b"]}]}\n")
}
