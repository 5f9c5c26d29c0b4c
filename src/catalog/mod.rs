//! Catalog files: JSON documents that provision tenants, keys, products,
//! customers, users, licenses (with features and activated devices) at start.
//! Objects refer to each other by natural keys (product short code, user and
//! customer email) instead of ids. See `examples/demo.json`.
//!
//! # Layout
//! - `mod.rs`: [`load_file`] and [`load_slice`], [`CatalogError`] and the
//!   helpers every step shares;
//! - `seed.rs`: the streaming reader, serde seeds that hand each tenant and
//!   license to the loader as it is parsed;
//! - `source.rs`: the catalog's bytes, read by serde_json for the document's
//!   skeleton and taken a whole license at a time for the licenses;
//! - `loader.rs`: one load's state and what it makes of each tenant, vendor
//!   section and license (engine commands);
//! - `generate.rs`: synthetic catalogs for benchmarks and load tests.

use std::cell::RefCell;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engine::model::*;
use crate::engine::time::Millis;
use crate::engine::{Command, Engine};

mod generate;
mod loader;
mod seed;
mod source;

pub use generate::{
    generate, generated_license, generated_pool_device, GENERATED_API_KEY, GENERATED_POOL_DEVICES,
    GENERATED_POOL_FEATURE, GENERATED_POOL_LICENSE, GENERATED_POOL_SEATS, GENERATED_PRODUCT,
    GENERATED_QLIK_SEATS, GENERATED_SHARED_KEY, GENERATED_YEXT_ACCOUNT, GENERATED_YEXT_PACK,
};
use loader::Loader;
use seed::CatalogSeed;
use source::{Source, SourceRead};
pub use source::{CATALOG_LICENSE_BYTES_MAX, CATALOG_READ_BYTES};

#[derive(Debug)]
pub struct CatalogError {
    /// Where in the document, e.g. `tenants[0].licenses[3].max_activations`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for CatalogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "catalog {}: {}", self.path, self.message)
    }
}

impl std::error::Error for CatalogError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogDevice {
    hardware_id: String,
    #[serde(flatten)]
    info: DeviceInfo,
}

/// What a load created.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub tenants: usize,
    pub api_keys: usize,
    /// Tenants given a Qlik license.
    pub qlik: usize,
    /// Tenants given a Yext account.
    pub yext: usize,
    /// Tenants given an Informatica org.
    pub informatica: usize,
    pub products: usize,
    pub customers: usize,
    pub users: usize,
    pub licenses: usize,
    pub features: usize,
    pub devices: usize,
}

fn err(path: impl Into<String>, message: impl std::fmt::Display) -> CatalogError {
    CatalogError {
        path: path.into(),
        message: message.to_string(),
    }
}

/// `path`s are formatted only for an error: a million licenses' paths
/// (`tenants[0].licenses[123456]`) would otherwise be made and dropped.
fn typed<T: serde::de::DeserializeOwned>(
    path: &(impl std::fmt::Display + ?Sized),
    v: Value,
) -> Result<T, CatalogError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let at = joined(path, &e.path().to_string());
        err(at, e.into_inner())
    })
}

/// `path` followed by a path inside it as serde_path_to_error writes one
/// (`.` for the value itself, `[2].code`, `features[0].name`).
fn joined(path: &(impl std::fmt::Display + ?Sized), inner: &str) -> String {
    match inner {
        "." => path.to_string(),
        _ if inner.starts_with('[') => format!("{path}{inner}"),
        _ => format!("{path}.{inner}"),
    }
}

fn apply(
    engine: &Engine,
    path: &(impl std::fmt::Display + ?Sized),
    cmd: Command<'_>,
) -> Result<(), CatalogError> {
    engine.apply(&cmd).map(|_| ()).map_err(|e| match e {
        crate::engine::EngineError::Invalid(field, reason) => {
            err(format!("{path}.{field}"), reason)
        }
        other => err(path.to_string(), other),
    })
}

fn take_str(
    m: &mut Map<String, Value>,
    k: &str,
    path: &(impl std::fmt::Display + ?Sized),
) -> Result<Option<String>, CatalogError> {
    match m.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(format!("{path}.{k}"), "must be a string")),
    }
}

/// The harness's fault rules a catalog carries (`"faults": {"rules":
/// [...]}`, as `PUT /admin/v1/faults` takes them), None without. Read at
/// every start that names the catalog (rules are not state); the tenants
/// are skipped without being parsed (a million-license catalog's in about
/// a tenth of the time a parse takes).
pub fn fault_rules(path: &Path) -> Result<Option<Vec<crate::faults::Rule>>, CatalogError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| err("", format!("{}: {e}", path.display())))?;
    let source = RefCell::new(Source::new(&mut f));
    let mut de = serde_json::Deserializer::from_reader(SourceRead(&source));
    let rules = serde::de::DeserializeSeed::deserialize(seed::FaultsSeed(&source), &mut de)
        .and_then(|rules| de.end().map(|()| rules));
    rules.map_err(|e| err("faults", source.borrow().placed(&e)))
}

pub fn load_file(engine: &Engine, path: &Path, now: Millis) -> Result<Loaded, CatalogError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| err("", format!("{}: {e}", path.display())))?;
    load_from(engine, &mut f, now)
}

/// Loads a catalog document. When a tenant's `licenses` follow its `name`
/// and `products` (as in generated catalogs), they are applied as they are
/// parsed, one at a time, so that a catalog of a million licenses never sits
/// in memory as a parsed tree beside the engine it fills; the tenant's
/// `customers` and `users` must then come before them too. Licenses that come
/// earlier (a file written with sorted keys) are kept until the tenant ends.
pub fn load_slice(engine: &Engine, text: &[u8], now: Millis) -> Result<Loaded, CatalogError> {
    load_from(engine, &mut &*text, now)
}

/// Both loads read through a [`Source`], so that tests and fuzzing of
/// [`load_slice`] run the path a file takes.
fn load_from(
    engine: &Engine,
    input: &mut dyn std::io::Read,
    now: Millis,
) -> Result<Loaded, CatalogError> {
    let source = RefCell::new(Source::new(&mut *input));
    let mut loader = Loader {
        engine,
        source: &source,
        now,
        n: Loaded::default(),
        tenants: Vec::new(),
        failed: None,
    };
    let mut de = serde_json::Deserializer::from_reader(SourceRead(&source));
    let mut track = serde_path_to_error::Track::new();
    let res = serde::de::DeserializeSeed::deserialize(
        CatalogSeed(&mut loader),
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
    );
    let res = res.and_then(|()| de.end());
    match res {
        Ok(()) => Ok(loader.n),
        Err(e) => Err(loader.failed.take().unwrap_or_else(|| {
            // serde_json did not see the licenses taken as slices: the
            // source knows the place in the whole document.
            err(track.path().to_string(), source.borrow().placed(&e))
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_err(doc: &str) -> CatalogError {
        load_slice(&Engine::new(), doc.as_bytes(), 0).expect_err("must fail")
    }

    const PRODUCT: &str = r#"{"short_code":"p","name":"p","authorization_method":"license-key"}"#;

    #[test]
    fn errors_name_their_place() {
        let e = load_err(&format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[{{"product":"p","license_key":"a"}},{{"product":"q","license_key":"b"}}]}}]}}"#
        ));
        assert_eq!(e.path, "tenants[0].licenses[1].product");
        let e = load_err(&format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[{{"product":"p","license_key":"a","features":[{{"code":"x","floating_users":"many"}}]}}]}}]}}"#
        ));
        assert_eq!(e.path, "tenants[0].licenses[0].features[0].floating_users");
        let e = load_err(r#"{"tenants":[{"name":"t","colour":"red"}]}"#);
        assert!(e.message.contains("colour"), "{e}");
        // Broken JSON inside a license: the parser's place is reported.
        let e = load_err(&format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[{{"product":"p","license_key":"a"}},{{"product" "p"}}]}}]}}"#
        ));
        assert!(e.path.starts_with("tenants[0].licenses"), "{e}");
        let e = load_err(r#"{"tenants":[]} trailing"#);
        assert!(e.message.contains("trailing"), "{e}");
    }

    /// Vendor sections load, in any key order, and their errors name the field.
    #[test]
    fn vendor_sections_load_and_name_their_errors() {
        let e = Engine::new();
        let doc = format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[],
              "yext":{{"accountId":"a","packs":[{{"id":"p","total":2}}],"assignments":[{{"pack":"p","entity":"e1","expirationDate":"2999-01-01"}}]}},
              "qlik":{{"licenseNumber":"1","product":"P","valid":"2020-01-01/.","allotments":[{{"name":"analyzer","units":1}}],
                       "settings":{{"autoAssignAnalyzer":true}},"assignments":[{{"subject":"s","type":"analyzer"}}]}},
              "informatica":{{"orgId":"o","users":[{{"username":"u","password":"pw","admin":true}}]}}}},
              {{"name":"child","parent":"t","informatica":{{"orgId":"c"}}}}]}}"#
        );
        let n = load_slice(&e, doc.as_bytes(), 0).expect("load");
        assert_eq!((n.qlik, n.yext, n.informatica), (1, 1, 2));
        let t = e.infa_org_tenant("o").expect("org");
        assert_eq!(e.qlik(t).expect("qlik").book.lock().assignments.len(), 1);
        assert_eq!(e.yext(t).expect("yext").count(None, None, 0), 1);
        assert!(e.infa_user_tenant("u").is_some());
        for (section, path) in [
            (
                r#""qlik":{"licenseNumber":"1","product":"P","valid":"never"}"#,
                "tenants[0].qlik.valid",
            ),
            (
                r#""qlik":{"licenseNumber":"1","product":"P","valid":"./.","assignments":[{"subject":"s","type":"boss"}]}"#,
                "tenants[0].qlik.assignments[0].type",
            ),
            (
                r#""yext":{"accountId":"a","packs":[{"id":"p","total":"two"}]}"#,
                "tenants[0].yext.packs[0].total",
            ),
            (
                r#""yext":{"accountId":"a","assignments":[{"pack":"nope","entity":"e"}]}"#,
                "tenants[0].yext.assignments[0]",
            ),
            (
                r#""informatica":{"orgId":"o","users":[{"username":"u"}]}"#,
                "tenants[0].informatica.users[0].password",
            ),
            (
                r#""informatica":{"orgId":"o","licenses":{"customLimits":[{"limitDefinition":"l","value":-5}]}}"#,
                "tenants[0].informatica.customLimits.value",
            ),
        ] {
            let e = load_err(&format!(r#"{{"tenants":[{{"name":"t",{section}}}]}}"#));
            assert_eq!(e.path, path, "{section}: {e}");
        }
    }

    /// A document of `n` licenses, one a line, the one at `big` with
    /// `devices` devices, and `tail` after the licenses array.
    fn many_licenses(n: usize, big: usize, devices: usize, tail: &str) -> String {
        let mut doc = format!(r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":["#);
        for i in 0..n {
            doc.push_str(if i == 0 { "\n" } else { ",\n" });
            doc.push_str(&format!(
                r#"{{"product":"p","license_key":"key-{i:06}","max_activations":100000,"devices":["#
            ));
            let d = if i == big { devices } else { 1 };
            for j in 0..d {
                doc.push_str(if j == 0 { "" } else { "," });
                doc.push_str(&format!(r#"{{"hardware_id":"hw-{i}-{j}"}}"#));
            }
            doc.push_str(r#"],"features":[{"code":"f","name":"Feature"}]}"#);
        }
        doc.push_str(&format!("\n]{tail}}}]}}"));
        doc
    }

    /// Licenses are read as slices of the source's buffer: a catalog
    /// larger than the buffer (licenses cut at its end are read again), one
    /// license larger than the buffer (it grows), all load.
    #[test]
    fn licenses_across_and_beyond_the_buffer_load() {
        let doc = many_licenses(12_000, 7_000, 40_000, "");
        assert!(doc.len() > 2 * CATALOG_READ_BYTES);
        let e = Engine::new();
        let n = load_slice(&e, doc.as_bytes(), 0).expect("load");
        assert_eq!((n.licenses, n.features), (12_000, 12_000));
        assert_eq!(n.devices, 11_999 + 40_000);
    }

    /// Errors inside and after licenses read as slices name their path and
    /// their place in the whole document.
    #[test]
    fn errors_in_and_after_slice_read_licenses_are_placed() {
        let bad = r#"{"product":"p","license_key":"bad","features":[{"code":"x","floating_users":"many"}]}"#;
        let mut doc = many_licenses(9_000, 0, 1, "");
        let cut = doc.rfind("\n]").expect("end");
        doc.insert_str(cut, &format!(",\n{bad}"));
        let e = load_slice(&Engine::new(), doc.as_bytes(), 0).expect_err("must fail");
        assert_eq!(
            e.path,
            "tenants[0].licenses[9000].features[0].floating_users"
        );
        let alone = serde_json::from_str::<loader::LicenseParts>(bad)
            .err()
            .expect("bad");
        assert_eq!(alone.line(), 1);
        let line = doc[..cut].matches('\n').count() + 2;
        let place = format!(" at line {line} column {}", alone.column());
        assert!(e.message.ends_with(&place), "{e} (expected {place})");
        assert!(e.message.starts_with("invalid type"), "{e}");

        // serde_json did not see the licenses: the place after them is the
        // source's.
        let doc = many_licenses(9_000, 0, 1, r#","api_keys":oops"#);
        let e = load_slice(&Engine::new(), doc.as_bytes(), 0).expect_err("must fail");
        assert_eq!(e.path, "tenants[0].api_keys");
        let line = doc.matches('\n').count() + 1;
        let place = format!("expected value at line {line} column 14");
        assert_eq!(e.message, place, "{e}");

        for (licenses, path, message) in [
            (
                "[1]",
                "tenants[0].licenses[0]",
                "invalid type: integer `1`, expected a license object",
            ),
            (
                r#"[{"product":"p","license_key":"a"},]"#,
                "tenants[0].licenses[1]",
                "trailing comma at line 1 column 151",
            ),
            (
                r#"[{"product":"p","license_key":"a"} {}]"#,
                "tenants[0].licenses[1]",
                "expected `,` or `]` at line 1 column 151",
            ),
            (
                r#"[{"product":"p","license_key":"a"}"#,
                "tenants[0].licenses",
                "EOF while parsing",
            ),
            (
                r#"[{"product":"p","license_k"#,
                "tenants[0].licenses[0]",
                "EOF while parsing",
            ),
        ] {
            let doc = format!(
                r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":{licenses}"#
            );
            let e = load_err(&doc);
            assert_eq!(e.path, path, "{licenses}: {e}");
            assert!(e.message.starts_with(message), "{licenses}: {e}");
        }
    }

    /// `fault_rules` finds the rules before or after a skipped `tenants`
    /// whose strings hold brackets, quotes and escapes, and refuses a
    /// broken `faults` with its place.
    #[test]
    fn fault_rules_skip_the_tenants() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("catalog.json");
        let rules = r#"{"rules":[{"id":"r","endpoint":"/v1/check","effect":{"type":"error","status":502}}]}"#;
        let tenants = r#"[{"name":"t ]}{[ \" \\","products":[{"short_code":"\\"}],"n":[1, -2.5e3, true, null, "]"]},
          {"name":"u","licenses":[]}]"#;
        let read = |doc: &str| {
            std::fs::write(&path, doc).expect("write");
            fault_rules(&path)
        };
        for doc in [
            format!(r#"{{"tenants":{tenants},"faults":{rules}}}"#),
            format!(r#"{{"faults":{rules},"tenants":{tenants}}}"#),
            format!(r#"{{"tenants": {tenants} ,"other":{{"x":[1]}}, "faults":{rules}}}"#),
        ] {
            let got = read(&doc).expect("reads").expect("rules");
            assert_eq!((got.len(), got[0].id.as_str()), (1, "r"), "{doc}");
        }
        assert!(read(&format!(r#"{{"tenants":{tenants}}}"#))
            .expect("reads")
            .is_none());
        // Placed where serde_json alone places it.
        #[derive(Deserialize)]
        struct Rules {
            #[serde(rename = "rules")]
            _rules: Vec<crate::faults::Rule>,
        }
        #[derive(Deserialize)]
        struct Doc {
            #[serde(rename = "tenants")]
            _tenants: serde::de::IgnoredAny,
            #[serde(rename = "faults")]
            _faults: Rules,
        }
        let doc = format!(r#"{{"tenants":{tenants},"faults":{{"rules":7}}}}"#);
        let e = read(&doc).expect_err("bad");
        let alone = serde_json::from_reader::<_, Doc>(doc.as_bytes())
            .err()
            .expect("bad");
        assert_eq!(e.message, format!("{alone}"));
        assert!(e.message.starts_with("invalid type: integer `7`"), "{e}");
        assert!(read(r#"{"tenants":[{"name":"t"}"#).is_err());
    }

    #[test]
    fn users_after_streamed_licenses_are_refused() {
        let e = load_err(&format!(
            r#"{{"tenants":[{{"name":"t","products":[{PRODUCT}],"licenses":[],"users":[]}}]}}"#
        ));
        assert_eq!(e.path, "tenants[0].users");
        assert!(e.message.contains("before `licenses`"), "{e}");
        let e = load_err(r#"{"tenants":[{"licenses":[]}]}"#);
        assert_eq!(e.path, "tenants[0].name");
    }

    /// A file written with sorted keys (licenses before name and products)
    /// loads too: its licenses are kept until the tenant is complete.
    #[test]
    fn sorted_keys_load() {
        let e = Engine::new();
        let doc = format!(
            r#"{{"tenants":[{{"api_keys":[{{"api_key":"k","role":"admin","shared_key":"s"}}],"licenses":[{{"license_key":"k1","product":"p"}},{{"license_key":"k2","product":"p"}}],"name":"t","products":[{PRODUCT}]}}]}}"#
        );
        let n = load_slice(&e, doc.as_bytes(), 0).expect("load");
        assert_eq!((n.licenses, n.api_keys), (2, 1));
        let e2 = load_err(&format!(
            r#"{{"tenants":[{{"licenses":[{{"license_key":"k1","product":"q"}}],"name":"t","products":[{PRODUCT}]}}]}}"#
        ));
        assert_eq!(e2.path, "tenants[0].licenses[0].product");
    }

    #[test]
    fn licenses_and_tenants_load_in_order() {
        let e = Engine::new();
        let doc = format!(
            r#"{{"tenants":[{{"name":"a","products":[{PRODUCT}],"licenses":[{{"product":"p","license_key":"k1","devices":[{{"hardware_id":"h"}}]}}]}},{{"name":"b","parent":"a"}}]}}"#
        );
        let n = load_slice(&e, doc.as_bytes(), 0).expect("load");
        assert_eq!((n.tenants, n.products, n.licenses, n.devices), (2, 1, 1, 1));
        let e2 = load_err(r#"{"tenants":[{"name":"b","parent":"nobody"}]}"#);
        assert_eq!(e2.path, "tenants[0].parent");
    }
}
