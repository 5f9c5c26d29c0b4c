//! Model-based property test of durability: random sequences of changes
//! (LicenseSpring activations, floating seats and consumption; Qlik
//! assignments and moves; Yext assignments and scheduled removals;
//! Informatica limit use; native reservations, commits, voids, expiries and
//! changes under idempotency keys),
//! periodic snapshots, graceful restarts and crashes, run against the engine
//! with its store on real files and against a simple reference model. After
//! every restart the recovered state equals the model's, and equals the state
//! before the restart entity by entity.
#![allow(
    clippy::too_many_lines,
    reason = "the model and the runner are each one table of ops"
)]

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;
use tally::engine::image::Image;
use tally::engine::model::Id;
use tally::engine::{Command, Engine};
use tally::storage::store::{Store, StoreOptions};
use tally::storage::wal::FsyncMode;

const NOW: i64 = 1_795_000_000_000;
const DEVICES: u8 = 5;
const ACTIVATIONS: usize = 3;
const POOL: usize = 2;
/// Qlik professional units and overage, analyzer units; Yext pack size;
/// Informatica limit.
const PRO: usize = 2;
const PRO_OVERAGE: usize = 1;
const ANALYZER: usize = 2;
const PACK: usize = 2;
const ROWS: i64 = 50;
const CATALOG: &str = r#"{"tenants":[{"name":"M","api_keys":[{"api_key":"mk","shared_key":"ms","role":"admin"}],
"qlik":{"licenseNumber":"1","product":"P","valid":"2020-01-01/.","allotments":[{"name":"professional","units":2,"overage":1},{"name":"analyzer","units":2}]},
"yext":{"accountId":"acc","packs":[{"id":"y","total":2}]},
"informatica":{"orgId":"org","licenses":{"customLimits":[{"limitDefinition":"rows","value":50}]}},
"products":[{"short_code":"p","name":"P","authorization_method":"license-key"}],
"licenses":[
 {"product":"p","license_key":"METER","features":[{"code":"units","feature_type":"consumption","allow_unlimited_consumptions":true,"allow_negative_consumptions":true}]},
 {"product":"p","license_key":"ACT","max_activations":3,"max_transfers":-1},
 {"product":"p","license_key":"POOL","max_activations":5,"features":[{"code":"seat","is_floating_cloud":true,"floating_users":2,"floating_timeout":30}]},
 {"product":"p","license_key":"CAP","features":[{"code":"c","feature_type":"consumption","max_consumption":20}]}]}]}"#;
/// The capped meter's limit; reservation ids used by the ops.
const CAP: i64 = 20;
const RESERVATION_ID: u64 = 900_000;
/// Reservations time out an hour after NOW; the sweep op runs two hours after.
const RESERVATION_TIMEOUT_MS: i64 = 3_600_000;

#[derive(Clone, Debug)]
enum Op {
    Add(i64),
    Activate(u8),
    Deactivate(u8),
    Acquire(u8),
    Release(u8),
    /// Qlik: assign subject n professional (true) or analyzer; delete it
    /// (of that type); move subject a's assignment to subject b.
    QlikAdd(u8, bool),
    QlikDelete(u8, bool),
    QlikMove(u8, u8),
    /// Yext: assign entity n; remove it; schedule (Some(day)) or cancel its removal.
    YextAssign(u8),
    YextRemove(u8),
    YextSchedule(u8, Option<u8>),
    /// Informatica: draw rows on the custom limit.
    InfaConsume(i64),
    /// Native: reserve units (reservation n) on the capped meter; commit
    /// (some or all of) reservation n; void it; the sweep two hours later
    /// (every pending reservation expires); add units under key k.
    Reserve(u8, i64),
    Commit(u8, Option<i64>),
    Void(u8),
    SweepLater,
    Keyed(u8, i64),
    Snapshot,
    Restart {
        graceful: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-20i64..100).prop_map(Op::Add),
        3 => (0..DEVICES).prop_map(Op::Activate),
        2 => (0..DEVICES).prop_map(Op::Deactivate),
        3 => (0..DEVICES).prop_map(Op::Acquire),
        2 => (0..DEVICES).prop_map(Op::Release),
        2 => (0..DEVICES, any::<bool>()).prop_map(|(s, p)| Op::QlikAdd(s, p)),
        1 => (0..DEVICES, any::<bool>()).prop_map(|(s, p)| Op::QlikDelete(s, p)),
        1 => (0..DEVICES, 0..DEVICES).prop_map(|(a, b)| Op::QlikMove(a, b)),
        2 => (0..DEVICES).prop_map(Op::YextAssign),
        1 => (0..DEVICES).prop_map(Op::YextRemove),
        1 => (0..DEVICES, proptest::option::of(1u8..28)).prop_map(|(e, d)| Op::YextSchedule(e, d)),
        1 => (1i64..20).prop_map(Op::InfaConsume),
        2 => (0u8..6, 1i64..10).prop_map(|(n, u)| Op::Reserve(n, u)),
        2 => (0u8..6, proptest::option::of(0i64..10)).prop_map(|(n, u)| Op::Commit(n, u)),
        1 => (0u8..6).prop_map(Op::Void),
        1 => Just(Op::SweepLater),
        2 => (0u8..3, 1i64..6).prop_map(|(k, u)| Op::Keyed(k, u)),
        1 => Just(Op::Snapshot),
        1 => any::<bool>().prop_map(|graceful| Op::Restart { graceful }),
    ]
}

/// The reference: what the changes mean, in a few lines.
#[derive(Default, Debug, PartialEq)]
struct Model {
    units: i64,
    /// hardware id -> active
    devices: BTreeMap<String, bool>,
    holders: BTreeSet<String>,
    /// Qlik subject -> (professional, excess).
    qlik: BTreeMap<String, (bool, bool)>,
    /// Yext entity -> scheduled removal day.
    yext: BTreeMap<String, Option<String>>,
    rows: i64,
    /// The capped meter: used, and reservation n -> (units, state, committed).
    cap_used: i64,
    reservations: BTreeMap<u8, (i64, &'static str, i64)>,
    /// Idempotency key -> the units of its request (its fingerprint).
    keys: BTreeMap<u8, i64>,
}

fn yext_day(d: u8) -> String {
    // NOW is 2026-11-18; days of December 2026 are all after it.
    format!("2026-12-{d:02}")
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Add(n) => {
                if self.units + n >= 0 {
                    self.units += n;
                }
            }
            Op::Activate(d) => {
                let hw = format!("hw-{d}");
                let active = self.devices.values().filter(|a| **a).count();
                if self.devices.get(&hw) == Some(&true) || active < ACTIVATIONS {
                    self.devices.insert(hw, true);
                }
            }
            Op::Deactivate(d) => {
                if let Some(a) = self.devices.get_mut(&format!("hw-{d}")) {
                    *a = false;
                }
            }
            Op::Acquire(d) => {
                let hw = format!("pool-{d}");
                if !self.holders.contains(&hw) && self.holders.len() < POOL {
                    self.holders.insert(hw);
                }
            }
            Op::Release(d) => {
                self.holders.remove(&format!("pool-{d}"));
            }
            Op::QlikAdd(n, pro) => {
                let s = format!("s{n}");
                let held = self.qlik.values().filter(|(p, _)| p == pro).count();
                let (units, limit) = if *pro {
                    (PRO, PRO + PRO_OVERAGE)
                } else {
                    (ANALYZER, ANALYZER)
                };
                if !self.qlik.contains_key(&s) && held < limit {
                    self.qlik.insert(s, (*pro, held >= units));
                }
            }
            Op::QlikDelete(n, pro) => {
                let s = format!("s{n}");
                if self.qlik.get(&s).is_some_and(|(p, _)| p == pro) {
                    self.qlik.remove(&s);
                }
            }
            Op::QlikMove(a, b) => {
                let (a, b) = (format!("s{a}"), format!("s{b}"));
                if a != b && !self.qlik.contains_key(&b) {
                    if let Some(v) = self.qlik.remove(&a) {
                        self.qlik.insert(b, v);
                    }
                }
            }
            Op::YextAssign(n) => {
                let e = format!("e{n}");
                if !self.yext.contains_key(&e) && self.yext.len() < PACK {
                    self.yext.insert(e, None);
                }
            }
            Op::YextRemove(n) => {
                self.yext.remove(&format!("e{n}"));
            }
            Op::YextSchedule(n, d) => {
                if let Some(x) = self.yext.get_mut(&format!("e{n}")) {
                    *x = d.map(yext_day);
                }
            }
            Op::InfaConsume(n) => {
                if self.rows + n <= ROWS {
                    self.rows += n;
                }
            }
            Op::Reserve(n, u) => {
                let held: i64 = self
                    .reservations
                    .values()
                    .filter(|r| r.1 == "pending")
                    .map(|r| r.0)
                    .sum();
                if !self.reservations.contains_key(n) && self.cap_used + held + u <= CAP {
                    self.reservations.insert(*n, (*u, "pending", 0));
                }
            }
            Op::Commit(n, u) => {
                if let Some(r) = self.reservations.get_mut(n) {
                    let c = u.unwrap_or(r.0);
                    if r.1 == "pending" && c <= r.0 {
                        *r = (r.0, "committed", c);
                        self.cap_used += c;
                    }
                }
            }
            Op::Void(n) => {
                if let Some(r) = self.reservations.get_mut(n).filter(|r| r.1 == "pending") {
                    r.1 = "voided";
                }
            }
            Op::SweepLater => {
                for r in self.reservations.values_mut().filter(|r| r.1 == "pending") {
                    r.1 = "expired";
                }
            }
            Op::Keyed(k, u) => {
                let held: i64 = self
                    .reservations
                    .values()
                    .filter(|r| r.1 == "pending")
                    .map(|r| r.0)
                    .sum();
                if !self.keys.contains_key(k) && self.cap_used + held + u <= CAP {
                    self.cap_used += u;
                    self.keys.insert(*k, *u);
                }
            }
            Op::Snapshot | Op::Restart { .. } => {}
        }
    }
}

struct Ids {
    meter: (Id, Id),
    act: Id,
    pool: (Id, Id),
    cap: (Id, Id),
}

fn ids(e: &Engine) -> Ids {
    let t = e.api_key("mk").expect("key").tenant_id;
    let p = e.product_by_code(t, "p").expect("product");
    let lic = |k: &str| p.licenses_by_key.get(k).expect("license").clone();
    let meter = lic("METER");
    let pool = lic("POOL");
    Ids {
        meter: (meter.id, meter.feature("units").expect("units").id),
        act: lic("ACT").id,
        pool: (pool.id, pool.feature("seat").expect("seat").id),
        cap: {
            let cap = lic("CAP");
            let c = cap.feature("c").expect("c").id;
            (cap.id, c)
        },
    }
}

fn observe(e: &Engine) -> Model {
    let i = ids(e);
    let meter = e.license(i.meter.0).expect("meter");
    let act = e.license(i.act).expect("act");
    let pool = e.license(i.pool.0).expect("pool");
    let devices = act
        .devices
        .read()
        .list
        .iter()
        .map(|d| (d.hardware_id.to_string(), d.active))
        .collect();
    let tenant = e.api_key("mk").expect("key").tenant_id;
    let q = e.qlik(tenant).expect("qlik");
    let qlik = q
        .book
        .lock()
        .assignments
        .values()
        .map(|a| {
            let pro = a.kind == tally::engine::qlik::AllotmentKind::Professional;
            (a.subject.clone(), (pro, a.excess))
        })
        .collect();
    let y = e.yext(tenant).expect("yext");
    let yext = y
        .assignments(None, None, None, usize::MAX, NOW)
        .0
        .into_iter()
        .map(|a| (a.entity, a.expiration.map(|(d, _)| d)))
        .collect();
    let infa = e.infa(tenant).expect("informatica");
    let rows = infa.limit_use()[0].2;
    assert_eq!(
        q.professional.used() as usize,
        q.book
            .lock()
            .assignments
            .values()
            .filter(|a| a.kind == tally::engine::qlik::AllotmentKind::Professional)
            .count(),
        "pool count"
    );
    let cap = e.license(i.cap.0).expect("cap").feature("c").expect("c");
    let mut reservations = BTreeMap::new();
    for n in 0..6u8 {
        if let Some(r) = e.reservation(tenant, RESERVATION_ID + u64::from(n)) {
            use tally::engine::reserve::ReservationState as S;
            let (state, committed) = match r.state {
                S::Pending => ("pending", 0),
                S::Committed { units, .. } => ("committed", units),
                S::Voided { .. } => ("voided", 0),
                S::Expired { .. } => ("expired", 0),
            };
            reservations.insert(n, (r.units, state, committed));
        }
    }
    let held: i64 = reservations
        .values()
        .filter(|r| r.1 == "pending")
        .map(|r| r.0)
        .sum();
    assert_eq!(
        cap.meter.reserved(),
        held,
        "the meter holds what pending reservations hold"
    );
    let keys = (0..3u8)
        .filter_map(|k| {
            e.idempotency_record(tenant, &format!("k{k}"), NOW)
                .map(|r| (k, r.fingerprint.parse().expect("units")))
        })
        .collect();
    Model {
        cap_used: cap.meter.used(NOW),
        reservations,
        keys,
        qlik,
        yext,
        rows,
        units: meter.feature("units").expect("units").meter.used(NOW),
        devices,
        holders: pool
            .feature("seat")
            .expect("seat")
            .floating
            .holders(NOW)
            .iter()
            .map(|l| l.holder.to_string())
            .collect(),
    }
}

fn images(e: &Engine) -> Vec<Image> {
    e.images()
}

fn open(dir: &Path) -> (Engine, Store) {
    let opts = StoreOptions {
        fsync: FsyncMode::Never,
        snapshot_interval: std::time::Duration::ZERO,
        ..Default::default()
    };
    let engine = Engine::new();
    let (store, opened) = Store::open(dir, &opts, &engine, NOW).expect("open");
    if opened.fresh {
        tally::catalog::load_slice(&engine, CATALOG.as_bytes(), NOW).expect("catalog");
        store.snapshot_quiescent(&engine, NOW).expect("snapshot");
    }
    (engine, store)
}

fn tenant(e: &Engine) -> Id {
    e.api_key("mk").expect("key").tenant_id
}

fn kind(pro: bool) -> tally::engine::qlik::AllotmentKind {
    if pro {
        tally::engine::qlik::AllotmentKind::Professional
    } else {
        tally::engine::qlik::AllotmentKind::Analyzer
    }
}

/// Applies `op` the way the server does (a renewal first, else a commit).
fn run(engine: &Engine, store: &Store, op: &Op) {
    let i = ids(engine);
    let cmd = match op {
        Op::Add(n) => Command::AddConsumption {
            license_id: i.meter.0,
            feature_id: Some(i.meter.1),
            amount: *n,
            now: NOW,
        },
        Op::Activate(d) => Command::Activate {
            license_id: i.act,
            hardware_id: Cow::Owned(format!("hw-{d}")),
            info: Default::default(),
            device_id: engine.next_id(),
            now: NOW,
        },
        Op::Deactivate(d) => Command::Deactivate {
            license_id: i.act,
            hardware_id: Cow::Owned(format!("hw-{d}")),
            now: NOW,
        },
        Op::Acquire(d) => Command::FloatingAcquire {
            license_id: i.pool.0,
            feature_id: Some(i.pool.1),
            hardware_id: Cow::Owned(format!("pool-{d}")),
            now: NOW,
            ttl_ms: None,
        },
        Op::Release(d) => Command::FloatingRelease {
            license_id: i.pool.0,
            feature_id: Some(i.pool.1),
            hardware_id: Cow::Owned(format!("pool-{d}")),
            now: NOW,
        },
        Op::QlikAdd(n, pro) => Command::QlikAssign {
            tenant_id: tenant(engine),
            subject: Cow::Owned(format!("s{n}")),
            kind: kind(*pro),
            now: NOW,
        },
        Op::QlikDelete(n, pro) => Command::QlikUnassign {
            tenant_id: tenant(engine),
            subject: Cow::Owned(format!("s{n}")),
            kind: kind(*pro),
        },
        Op::QlikMove(a, b) => Command::QlikUpdate {
            tenant_id: tenant(engine),
            source_subject: Cow::Owned(format!("s{a}")),
            source_kind: None,
            subject: Cow::Owned(format!("s{b}")),
            kind: None,
            now: NOW,
        },
        Op::YextAssign(n) => Command::YextAssign {
            tenant_id: tenant(engine),
            pack: Cow::Borrowed("y"),
            entity: Cow::Owned(format!("e{n}")),
            now: NOW,
        },
        Op::YextRemove(n) => Command::YextUnassign {
            tenant_id: tenant(engine),
            pack: Cow::Borrowed("y"),
            entity: Cow::Owned(format!("e{n}")),
            now: NOW,
        },
        Op::YextSchedule(n, d) => Command::YextSchedule {
            tenant_id: tenant(engine),
            pack: Cow::Borrowed("y"),
            entity: Cow::Owned(format!("e{n}")),
            expiration: d.map(yext_day),
            now: NOW,
        },
        Op::InfaConsume(n) => Command::InfaConsume {
            tenant_id: tenant(engine),
            limit: Cow::Borrowed("rows"),
            amount: *n,
        },
        Op::Reserve(n, u) => Command::Reserve {
            reservation_id: RESERVATION_ID + u64::from(*n),
            tenant_id: tenant(engine),
            license_id: i.cap.0,
            feature_id: Some(i.cap.1),
            units: *u,
            timeout_ms: RESERVATION_TIMEOUT_MS,
            now: NOW,
        },
        Op::Commit(n, u) => Command::CommitReservation {
            tenant_id: tenant(engine),
            reservation_id: RESERVATION_ID + u64::from(*n),
            units: *u,
            device: None,
            now: NOW,
        },
        Op::Void(n) => Command::VoidReservation {
            tenant_id: tenant(engine),
            reservation_id: RESERVATION_ID + u64::from(*n),
            now: NOW,
        },
        Op::SweepLater => Command::SweepPending {
            now: NOW + 2 * RESERVATION_TIMEOUT_MS,
        },
        Op::Keyed(k, u) => Command::Idempotent {
            tenant_id: tenant(engine),
            key: format!("k{k}"),
            fingerprint: u.to_string(),
            now: NOW,
            cmd: Box::new(Command::AddConsumption {
                license_id: i.cap.0,
                feature_id: Some(i.cap.1),
                amount: *u,
                now: NOW,
            }),
        },
        Op::Snapshot => {
            store.snapshot_shadow(NOW).expect("shadow snapshot");
            return;
        }
        Op::Restart { .. } => return,
    };
    if engine.try_renew(&cmd).is_some() {
        return;
    }
    if let Ok(c) = store.log.commit(&cmd, || engine.apply(&cmd)) {
        if let Some(lsn) = c.lsn {
            store.log.wait_blocking(lsn).expect("durable");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn recovered_state_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        let mut model = Model::default();
        let (mut engine, mut store) = open(&dir);
        for op in &ops {
            model.apply(op);
            run(&engine, &store, op);
            if let Op::Restart { graceful } = op {
                let before = images(&engine);
                if *graceful {
                    store.shutdown(&engine, NOW).expect("shutdown");
                }
                drop(store);
                drop(engine);
                (engine, store) = open(&dir);
                prop_assert_eq!(images(&engine), before);
            }
            prop_assert_eq!(&observe(&engine), &model);
        }
        drop(store);
        let (back, _s) = open(&dir);
        prop_assert_eq!(observe(&back), model);
    }
}
