//! The stored format is forever: a data directory written by the code of
//! 2026-11-30 (`tests/data/golden-2026-11-30`: a snapshot of the demo catalog,
//! with every entity and vendor state, then a log holding every kind of
//! command, written by `cargo run --example golden`) must load with every
//! later version, to the state asserted here value by value. New fields get
//! defaults; nothing is renamed or removed without a versioned migration;
//! these files are never rewritten (a new format adds a new golden directory
//! beside this one).

use std::path::Path;
use std::sync::atomic::Ordering;

use tally::engine::model::Role;
use tally::engine::qlik::AllotmentKind;
use tally::engine::Engine;
use tally::storage::store::{Store, StoreOptions};

/// 2026-11-30T12:00:00Z, the `now` of the golden log.
const NOW: i64 = 1_796_040_000_000;

fn open_golden() -> (tempfile::TempDir, Engine) {
    open_dir("golden-2026-11-30")
}

/// Recovers a copy of golden directory `name` (the files stay untouched).
fn open_dir(name: &str) -> (tempfile::TempDir, Engine) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(&src).expect("golden directory") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    let engine = Engine::new();
    let (store, opened) =
        Store::open(dir.path(), &StoreOptions::default(), &engine, NOW).expect("recovery");
    assert!(!opened.fresh, "the golden directory holds state");
    drop(store);
    (dir, engine)
}

#[test]
fn the_stored_format_of_2026_11_30_still_loads() {
    let (_dir, e) = open_golden();
    let stats: Vec<(&str, usize)> = e.stats().to_vec();
    assert_eq!(
        stats,
        [
            ("tenants", 4),
            ("api_keys", 4),
            ("products", 7),
            ("customers", 2),
            ("users", 2),
            ("licenses", 8),
        ]
    );
    admin_entities(&e);
    golden_license(&e);
    vendor_states(&e);
}

fn admin_entities(e: &Engine) {
    let t = e.tenant(20000).expect("golden tenant");
    assert_eq!(t.spec.read().name, "Golden Ltd");
    assert!(e.tenant(20012).is_none(), "deleted tenant");
    let k = e.api_key("golden-key").expect("key");
    assert_eq!((k.tenant_id, k.role), (20000, Role::ReadWrite));
    assert!(!k.revoked.load(Ordering::Acquire));
    let revoked = e.api_key("golden-revoked").expect("revoked key");
    assert!(revoked.revoked.load(Ordering::Acquire));
    assert!(e.api_key("golden-doomed").is_none());
    assert!(e.api_key("demo-api-key").is_some());

    let p = e.product_by_code(20000, "gp").expect("product");
    let ps = p.spec.read();
    assert_eq!(
        (p.id, ps.name.as_str(), ps.trial_days),
        (20001, "Golden Product", 5)
    );
    assert_eq!(ps.releases.len(), 1);
    let r = &ps.releases[0];
    assert_eq!(
        (
            r.version.as_str(),
            r.environment.as_str(),
            r.channel.as_str()
        ),
        ("1.0", "linux", "prod")
    );
    assert_eq!(
        r.installation_file,
        "https://downloads.golden.example/1.0.zip"
    );
    assert_eq!(r.release_date.as_deref(), Some("2026-11-01"));
    let bundle = e.product_by_code(20000, "gbundle").expect("bundle");
    assert_eq!(bundle.spec.read().bundle_products, ["gp"]);
    assert!(e.product(20002).is_none(), "deleted product");
    assert!(e.product_by_code(20000, "gu").is_some());
    assert!(e.product_by_code(10000, "studio").is_some());

    let c = e.customer(20003).expect("customer");
    let cs = c.spec.read();
    assert_eq!(
        (
            cs.email.as_str(),
            cs.company_name.as_str(),
            cs.reference.as_str()
        ),
        ("c@golden.example", "Golden Customer", "G-1")
    );
    assert!(e.customer(20004).is_none(), "deleted customer");
    let u = e.user_by_email(20000, "u@golden.example").expect("user");
    let us = u.spec.read();
    assert_eq!(
        (
            u.id,
            us.first_name.as_str(),
            us.customer_id,
            us.max_activations
        ),
        (20005, "Una", Some(20003), 2)
    );
    assert!(us.password_hash.starts_with("$argon2id$"));
    assert!(e.user(20006).is_none(), "deleted user");
    let ul = e.license(20019).expect("user license");
    let uls = ul.spec.read();
    assert_eq!(
        (uls.user_id, uls.validity_period.as_deref()),
        (Some(20005), Some("2031-03-16"))
    );
    assert!(e.license(20011).is_none(), "deleted license");
}

fn golden_license(e: &Engine) {
    let l = e.license(20007).expect("golden license");
    {
        let s = l.spec.read();
        assert_eq!(l.license_key.as_deref(), Some("GOLD-0001"));
        assert_eq!(
            (s.max_consumptions, s.max_activations, s.floating_users),
            (100, 3, 2)
        );
        assert_eq!(s.metadata["tier"], "gold");
        assert_eq!(
            (s.metadata["10"].as_i64(), s.metadata["9"].as_i64()),
            (Some(1), Some(2))
        );
        assert_eq!(s.customer_id, Some(20003));
    }
    let codes: Vec<String> = l
        .features
        .read()
        .iter()
        .map(|f| f.code.to_string())
        .collect();
    assert_eq!(codes, ["gf", "gfloat"]);
    let gf = l.feature("gf").expect("meter feature");
    assert_eq!((gf.id, gf.meter.used(NOW)), (20008, 9));
    let gfloat = l.feature("gfloat").expect("floating feature");
    assert_eq!((gfloat.id, gfloat.floating.in_use(NOW)), (20009, 0));
    assert_eq!(l.consumption.used(NOW), 7);
    assert_eq!(l.activations.used(), 1);

    let d1 = e.device(&l, "g-hw-1").expect("device 1");
    assert!(d1.active && !d1.blacklisted);
    assert_eq!(
        (
            d1.id,
            d1.info().hostname.as_str(),
            d1.info().os_ver.as_str()
        ),
        (20013, "g1", "Linux 6.1")
    );
    let vars: Vec<(&str, &str)> = d1
        .variables
        .iter()
        .map(|v| (v.variable.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(vars, [("seat", "G1"), ("site", "lab")]);
    let d2 = e.device(&l, "g-hw-2").expect("device 2");
    assert!(!d2.active);
    assert_eq!(d2.deactivated_at, Some(NOW));
    assert!(e.device(&l, "g-hw-3").expect("device 3").blacklisted);

    // The license-level seat of g-hw-1, borrowed for an hour.
    let holders = l.floating.holders(NOW);
    assert_eq!(holders.len(), 1);
    assert_eq!(&*holders[0].holder, "g-hw-1");
    assert_eq!(holders[0].borrowed_until, Some(NOW + 3_600_000));
    // The sweep freed the seat taken on the demo floating license.
    let float = e.license(10012).expect("DEMO-FLOAT-0001");
    assert_eq!(float.floating.in_use(NOW), 0);
}

fn vendor_states(e: &Engine) {
    // Qlik, on the demo tenant.
    let q = e.qlik(10000).expect("qlik").image();
    let mut subjects: Vec<(&str, AllotmentKind)> = q
        .assignments
        .iter()
        .filter(|a| a.subject.starts_with("golden"))
        .map(|a| (a.subject.as_str(), a.kind))
        .collect();
    subjects.sort_by_key(|s| s.0);
    assert_eq!(
        subjects,
        [
            ("golden\\auto", AllotmentKind::Professional),
            ("golden\\moved", AllotmentKind::Analyzer),
        ]
    );
    // Professional turned on by the log, analyzer as the catalog left it.
    assert!(q.settings.auto_assign_professional && q.settings.auto_assign_analyzer);
    let record = q
        .consumption
        .iter()
        .find(|r| r.id == 20016)
        .expect("consumption record");
    assert_eq!(
        (
            record.user_id.as_str(),
            record.minutes_used,
            record.capacity_used
        ),
        ("golden\\moved", 12, 2)
    );
    assert!(e.qlik(20000).is_none(), "deleted Qlik license");

    // Yext, on the demo account.
    let y = e.yext(10000).expect("yext").image();
    let listings: Vec<(&str, Option<&str>)> = y
        .assignments
        .iter()
        .filter(|a| a.pack == "listings")
        .map(|a| {
            (
                a.entity.as_str(),
                a.expiration.as_ref().map(|x| x.0.as_str()),
            )
        })
        .collect();
    assert_eq!(
        listings,
        [("golden-1", Some("2026-12-15")), ("store-001", None)],
        "golden-2 unassigned, store-002 swept"
    );
    assert!(e.yext(20000).is_none(), "deleted Yext account");

    // Informatica, on the demo sub-org.
    let i = e.infa(10020).expect("informatica").image();
    let defs: Vec<&str> = i
        .spec
        .licenses
        .custom_licenses
        .iter()
        .map(|l| l.license_def.as_str())
        .collect();
    assert_eq!(defs, ["goldenDef"]);
    let rows = i
        .used
        .iter()
        .find(|(k, _)| k == "rowsPerMonth")
        .map(|(_, v)| *v);
    assert_eq!(
        rows,
        Some(28),
        "25 drawn, the cap raised (use kept), 3 more"
    );
    assert!(e.infa(20000).is_none(), "deleted org");
}

/// The native API's stored state of 2026-11-30
/// (`tests/data/golden-2026-11-30-native`, `cargo run --example golden --
/// DIR --native`): reservations of units and seats and idempotency records,
/// some in a snapshot and some in the log after it, with an atomic batch, a
/// seat with a ttl and a pending sweep.
#[test]
fn the_native_stored_format_of_2026_11_30_still_loads() {
    use tally::engine::native::Reply;
    use tally::engine::reserve::ReservationState as S;
    let (_dir, e) = open_dir("golden-2026-11-30-native");
    let state = |id| e.reservation(10000, id).expect("reservation").state;
    assert!(
        matches!(state(30000), S::Expired { .. }),
        "expired by the sweep"
    );
    assert!(matches!(state(30001), S::Committed { units: 20, .. }));
    assert!(matches!(state(30002), S::Expired { .. }), "a seat, expired");
    assert!(matches!(state(30003), S::Voided { .. }));
    assert!(matches!(state(30004), S::Committed { units: 1, .. }));
    assert_eq!(
        e.reservation(10000, 30004)
            .expect("seat")
            .hardware_id
            .as_deref(),
        Some("golden-seat-dev")
    );
    assert_eq!(state(30006), S::Pending);
    assert!(e.reservation(20000, 30006).is_none(), "another tenant's");
    let l = e.license(10007).expect("DEMO-STUDIO-0001");
    let credits = l.feature("ai-credits").expect("ai-credits");
    // 20 committed, 5 under the key, 1 in the batch; 7 held by 30006.
    assert_eq!((credits.meter.used(NOW), credits.meter.reserved()), (26, 7));
    assert_eq!(e.reservations_open(credits.id), 1);
    assert_eq!(e.reservations_open(l.id), 0, "no seat held");
    assert!(e.device(&l, "golden-seat-dev").is_some_and(|d| d.active));
    let holders = l
        .feature("export-4k")
        .expect("export-4k")
        .floating
        .holders_raw();
    assert!(holders.iter().any(|h| &*h.holder == "golden-holder"));
    let first = e
        .idempotency_record(10000, "golden-idem", NOW)
        .expect("record");
    assert_eq!(first.fingerprint, "golden-fp");
    assert!(matches!(first.reply, Reply::Usage { meter } if meter.used == 25));
    let second = e
        .idempotency_record(10000, "golden-idem-2", NOW)
        .expect("record");
    assert!(
        matches!(&second.reply, Reply::Reservation { reservation, .. } if reservation.id == 30006)
    );
}

/// The webhooks' stored state of 2026-11-30
/// (`tests/data/golden-2026-11-30-webhooks`, `cargo run --example golden --
/// DIR --webhooks`): subscriptions, the events changes made (meter
/// thresholds, a full pool, a refusal, a freed seat, a license near its end,
/// an admin correction), attempts, a rotation, a 410, a resend and a
/// deletion, some in a snapshot and some in the log after it.
#[test]
fn the_webhook_stored_format_of_2026_11_30_still_loads() {
    use tally::engine::webhook::{AttemptResult, EventType as T};
    let (_dir, e) = open_dir("golden-2026-11-30-webhooks");
    let subs = e.webhooks(Some(10000));
    assert_eq!(
        subs.iter().map(|s| s.id).collect::<Vec<_>>(),
        [40000],
        "40001 deleted"
    );
    let s = &subs[0];
    assert_eq!(s.spec.thresholds, [50, 80, 100]);
    assert_eq!(s.spec.expiring_days, 30);
    assert_eq!(
        s.secrets_at(NOW + 2_000),
        [
            "whsec_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9v",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
        ],
        "the rotated secret first, the old one through the overlap"
    );
    assert_eq!(s.secrets_at(NOW + 1_000 + 86_400_000).len(), 1);
    let kinds: Vec<(T, Option<u16>)> = (0..8)
        .map(|seq| {
            let ev = e.webhook_event(10000, seq).expect("event");
            assert_eq!(ev.id(), format!("evt_{seq:016x}"));
            (ev.kind, ev.threshold)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (T::MeterThreshold, Some(50)),
            (T::MeterThreshold, Some(80)),
            (T::MeterThreshold, Some(90)),
            (T::SeatsExhausted, None),
            (T::FloatingDenied, None),
            (T::SeatsAvailable, None),
            (T::LicenseExpiring, None),
            (T::LicenseChanged, None),
        ]
    );
    assert!(e.webhook_event(10000, 8).is_none());
    let expiring = e.webhook_event(10000, 6).expect("expiring");
    assert_eq!(expiring.data["license_key"], "DEMO-FLOAT-0001");
    assert_eq!(expiring.data["days_left"], 16, "to the end of 2030-12-31");
    assert_eq!(e.webhook_event(10000, 0).expect("first").data["used"], 600);
    let pending: Vec<(u64, u32)> = e
        .webhook_pending(40000, 100)
        .into_iter()
        .map(|(ev, d)| (ev, d.attempts))
        .collect();
    assert_eq!(
        pending,
        [(0, 0), (1, 1), (3, 0), (4, 0), (5, 0), (6, 0), (7, 0)],
        "0 resent, 1 waiting for its second attempt"
    );
    let (attempts, dropped) = e.webhook_attempts(40000, 0, 100);
    assert_eq!(dropped, 0);
    let results: Vec<(u64, AttemptResult, Option<u16>)> = attempts
        .iter()
        .map(|a| (a.event, a.report.result, a.report.status_code))
        .collect();
    assert_eq!(
        results,
        [
            (0, AttemptResult::Delivered, Some(200)),
            (1, AttemptResult::Retrying, Some(503))
        ]
    );
    assert_eq!(e.webhook_event_mark(), 8);
}

/// A state restore of 2026-11-30 (`tests/data/golden-2026-11-30-restore`,
/// written by the binary on the demo catalog and its test clock): 500
/// credits used, saved as `half`, 100 more, `half` restored (record 3, its
/// state in `restore-00000000000000000003.snap`), then 7 more. The log
/// replays the restore from that file.
#[test]
fn a_state_restore_of_2026_11_30_still_replays() {
    let (dir, e) = open_dir("golden-2026-11-30-restore");
    let tenant = e.api_key("demo-api-key").expect("the demo key").tenant_id;
    let l = e
        .license_by_key(tenant, "DEMO-STUDIO-0001")
        .expect("the demo license");
    let credits = l.feature("ai-credits").expect("ai-credits");
    assert_eq!(credits.meter.used(NOW), 507, "500 restored, then 7");
    assert_eq!(e.stats()[5], ("licenses", 6));
    // Without its state file the record cannot be replayed: recovery says so.
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snapshot-") || name.starts_with("wal-") {
            std::fs::copy(entry.path(), copy.path().join(&*name)).expect("copy");
        }
    }
    let err = Store::open(copy.path(), &StoreOptions::default(), &Engine::new(), NOW)
        .err()
        .expect("a restore without its state file is refused");
    assert!(err.to_string().contains("state restore"), "{err}");
}
