//! Operations: every change of the native API as data. A single endpoint
//! builds one from its path and body, a batch or preflight reads a list of
//! them (`{"op": "usage", "license_key": ..., "feature": ..., "units": 5}`),
//! and each becomes one engine [`Command`], so every way in checks the same
//! things.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::auth::Caller;
use super::error::NativeError;
use crate::app::App;
use crate::engine::model::{AuthMethod, DeviceInfo, Feature, Id, License};
use crate::engine::reserve::RESERVATION_TIMEOUT_MS_MAX;
use crate::engine::time::{parse_instant, Millis};
use crate::engine::{Command, EngineError, SeatDevice};

type R<T> = Result<T, NativeError>;

/// Reservation timeout when a request names none, ms.
pub const RESERVATION_TIMEOUT_MS_DEFAULT: Millis = 60_000;

/// A JSON object whose fields are taken one by one; what is left over is
/// an unknown field (refused, so that a typo is not silently ignored).
pub struct Fields<'a> {
    at: String,
    map: &'a Map<String, Value>,
    taken: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// `v` as an object; `at` names it in errors (`operations[2]`, `body`).
    pub fn of(v: &'a Value, at: impl Into<String>) -> R<Self> {
        let at = at.into();
        match v {
            Value::Object(map) => Ok(Fields {
                at,
                map,
                taken: Vec::new(),
            }),
            _ => Err(NativeError::invalid(format!("{at}: must be a JSON object"))),
        }
    }

    fn bad(&self, name: &str, why: &str) -> NativeError {
        NativeError::invalid(format!("{}.{name}: {why}", self.at))
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Value> {
        self.taken.push(name);
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn str_opt(&mut self, name: &'static str) -> R<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(name, "must be a string")),
        }
    }

    pub fn str(&mut self, name: &'static str) -> R<&'a str> {
        self.str_opt(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.bad(name, "is required (a non-empty string)"))
    }

    pub fn int_opt(&mut self, name: &'static str) -> R<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.bad(name, "must be an integer")),
        }
    }

    pub fn int(&mut self, name: &'static str) -> R<i64> {
        self.int_opt(name)?
            .ok_or_else(|| self.bad(name, "is required (an integer)"))
    }

    pub fn bool_opt(&mut self, name: &'static str) -> R<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(name, "must be true or false")),
        }
    }

    pub fn value(&mut self, name: &'static str) -> Option<&'a Value> {
        self.get(name)
    }

    /// Refuses fields that were not taken.
    pub fn done(self) -> R<()> {
        match self.map.keys().find(|k| !self.taken.contains(&k.as_str())) {
            Some(k) => Err(NativeError::invalid(format!(
                "{}.{k}: unknown field",
                self.at
            ))),
            None => Ok(()),
        }
    }
}

/// The license a request addresses: by key, or by product and user.
pub fn license_by_key(app: &App, tenant: Id, key: &str) -> R<Arc<License>> {
    app.engine
        .license_by_key(tenant, key)
        .ok_or_else(|| EngineError::LicenseNotFound.into())
}

/// The licenses of a user-based product's user, in id order.
pub fn licenses_of_user(app: &App, tenant: Id, product: &str, user: &str) -> R<Vec<Arc<License>>> {
    let p = app
        .engine
        .product_by_code(tenant, product)
        .ok_or_else(|| NativeError::from(EngineError::ProductNotFound))?;
    if p.authorization_method != AuthMethod::User {
        return Err(NativeError::invalid(
            "the product is key-based: address its licenses by key",
        ));
    }
    let u = app
        .engine
        .user_by_email(tenant, user)
        .ok_or_else(|| NativeError::from(EngineError::UserNotFound))?;
    Ok(app.engine.licenses_of_user(&u, Some(p.id)))
}

/// The license of a user-based product's user (`id`, or the first one that
/// has `feature` when given, else the first).
pub fn license_of_user(
    app: &App,
    tenant: Id,
    product: &str,
    user: &str,
    feature: Option<&str>,
) -> R<Arc<License>> {
    let all = licenses_of_user(app, tenant, product, user)?;
    let found = match feature {
        Some(code) => all
            .iter()
            .find(|l| l.feature(code).is_some())
            .or(all.first()),
        None => all.first(),
    };
    found
        .cloned()
        .ok_or_else(|| EngineError::LicenseNotFound.into())
}

/// The license named by an operation's `license_key`, or `product` and `username`.
pub fn target(app: &App, tenant: Id, f: &mut Fields<'_>, feature: Option<&str>) -> R<Arc<License>> {
    let key = f.str_opt("license_key")?;
    let product = f.str_opt("product")?;
    let username = f.str_opt("username")?;
    match (key, product, username) {
        (Some(k), None, None) => license_by_key(app, tenant, k),
        (None, Some(p), Some(u)) => license_of_user(app, tenant, p, u, feature),
        _ => Err(NativeError::invalid(format!(
            "{}: name the license by license_key, or by product and username",
            f.at
        ))),
    }
}

pub fn feature(l: &License, code: &str) -> R<Arc<Feature>> {
    l.feature(code)
        .ok_or_else(|| EngineError::FeatureNotFound.into())
}

/// The license must be usable now, and the feature not expired.
pub fn usable(app: &App, l: &License, f: Option<&Feature>, now: Millis) -> R<()> {
    app.engine.check_usable(l, now)?;
    if let Some(f) = f {
        app.engine.check_feature(f, now)?;
    }
    Ok(())
}

/// One operation of a batch or preflight, as a command.
pub fn parse_op(
    app: &App,
    caller: &Caller,
    v: &Value,
    at: String,
    now: Millis,
) -> R<Command<'static>> {
    let mut f = Fields::of(v, at)?;
    let op = f.str("op")?;
    let cmd = match op {
        "usage" | "reserve" | "take_seat" | "release_seat" => {
            let code = f.str("feature")?.to_string();
            let l = target(app, caller.tenant_id, &mut f, Some(&code))?;
            let feat = feature(&l, &code)?;
            match op {
                "usage" => usage(app, &l, &feat, f.int("units")?, now)?,
                "reserve" => {
                    let units = f.int("units")?;
                    let timeout = f.int_opt("timeout_ms")?;
                    reserve(app, caller, &l, &feat, units, timeout, now)?
                }
                "take_seat" => {
                    let holder = f.str("holder")?.to_string();
                    let ttl = f.int_opt("ttl_ms")?;
                    let borrow = f.str_opt("borrow_until")?;
                    take_seat(app, &l, &feat, holder, ttl, borrow, now)?
                }
                _ => release_seat(&l, &feat, f.str("holder")?.to_string(), now),
            }
        }
        "commit" => {
            let id = reservation_id(&mut f)?;
            commit(app, caller, id, &mut f, now)?
        }
        "reserve_seat" => {
            let l = target(app, caller.tenant_id, &mut f, None)?;
            reserve_seat(app, caller, &l, f.int_opt("timeout_ms")?, now)?
        }
        "void" => Command::VoidReservation {
            tenant_id: caller.tenant_id,
            reservation_id: reservation_id(&mut f)?,
            now,
        },
        "activate" | "deactivate" => {
            let l = target(app, caller.tenant_id, &mut f, None)?;
            let hw = f.str("hardware_id")?.to_string();
            if op == "activate" {
                let info = match f.value("device") {
                    Some(d) => device_info(d, format!("{}.device", f.at))?,
                    None => DeviceInfo::default(),
                };
                activate(app, &l, hw, info, now)
            } else {
                deactivate(&l, hw, now)
            }
        }
        other => {
            return Err(NativeError::invalid(format!(
                "{}.op: `{other}` is not one of usage, reserve, commit, void, take_seat, \
                 release_seat, activate, deactivate",
                f.at
            )))
        }
    };
    f.done()?;
    Ok(cmd)
}

fn reservation_id(f: &mut Fields<'_>) -> R<Id> {
    let id = f.int("reservation_id")?;
    u64::try_from(id).map_err(|_| f.bad("reservation_id", "must be a reservation's id"))
}

pub fn usage(app: &App, l: &License, f: &Feature, units: i64, now: Millis) -> R<Command<'static>> {
    usable(app, l, Some(f), now)?;
    if units == 0 {
        return Err(NativeError::invalid("units: must not be zero"));
    }
    Ok(Command::AddConsumption {
        license_id: l.id,
        feature_id: Some(f.id),
        amount: units,
        now,
    })
}

pub fn reserve(
    app: &App,
    caller: &Caller,
    l: &License,
    f: &Feature,
    units: i64,
    timeout_ms: Option<i64>,
    now: Millis,
) -> R<Command<'static>> {
    usable(app, l, Some(f), now)?;
    let timeout_ms = timeout_of(timeout_ms)?;
    if units <= 0 {
        return Err(NativeError::invalid("units: must be a positive integer"));
    }
    Ok(Command::Reserve {
        reservation_id: app.engine.next_id(),
        tenant_id: caller.tenant_id,
        license_id: l.id,
        feature_id: Some(f.id),
        units,
        timeout_ms,
        now,
    })
}

fn timeout_of(timeout_ms: Option<i64>) -> R<Millis> {
    let timeout_ms = timeout_ms.unwrap_or(RESERVATION_TIMEOUT_MS_DEFAULT);
    if !(1..=RESERVATION_TIMEOUT_MS_MAX).contains(&timeout_ms) {
        return Err(NativeError::invalid(
            "timeout_ms: must be 1 to 86400000 (one day)",
        ));
    }
    Ok(timeout_ms)
}

/// A reservation of one activation seat of `l`.
pub fn reserve_seat(
    app: &App,
    caller: &Caller,
    l: &License,
    timeout_ms: Option<i64>,
    now: Millis,
) -> R<Command<'static>> {
    usable(app, l, None, now)?;
    Ok(Command::Reserve {
        reservation_id: app.engine.next_id(),
        tenant_id: caller.tenant_id,
        license_id: l.id,
        feature_id: None,
        units: 1,
        timeout_ms: timeout_of(timeout_ms)?,
        now,
    })
}

/// A commit of reservation `id`: `units` for a units reservation, or
/// `hardware_id` (with `device` details) for a seat.
pub fn commit(
    app: &App,
    caller: &Caller,
    id: Id,
    f: &mut Fields<'_>,
    now: Millis,
) -> R<Command<'static>> {
    let units = f.int_opt("units")?;
    let hardware_id = f.str_opt("hardware_id")?;
    let info = match f.value("device") {
        Some(d) => Some(device_info(d, format!("{}.device", f.at))?),
        None => None,
    };
    let device = match (hardware_id, info) {
        (Some(hw), info) => Some(SeatDevice {
            hardware_id: hw.to_string(),
            info: info.unwrap_or_default(),
            device_id: app.engine.next_id(),
        }),
        (None, Some(_)) => return Err(f.bad("device", "needs hardware_id")),
        (None, None) => None,
    };
    Ok(Command::CommitReservation {
        tenant_id: caller.tenant_id,
        reservation_id: id,
        units,
        device,
        now,
    })
}

#[allow(clippy::too_many_arguments, reason = "a seat's every setting")]
pub fn take_seat(
    app: &App,
    l: &License,
    f: &Feature,
    holder: String,
    ttl_ms: Option<i64>,
    borrow_until: Option<&str>,
    now: Millis,
) -> R<Command<'static>> {
    usable(app, l, Some(f), now)?;
    check_holder(&holder)?;
    let timeout_ms = {
        let s = f.spec.load();
        if !s.floating() {
            return Err(EngineError::FeatureNotFloating.into());
        }
        s.floating_timeout.max(1) as i64 * crate::engine::time::MINUTE_MS
    };
    if let Some(until) = borrow_until {
        if ttl_ms.is_some() {
            return Err(NativeError::invalid(
                "ttl_ms and borrow_until: give one or the other",
            ));
        }
        let until = parse_instant(until)
            .ok_or_else(|| NativeError::invalid("borrow_until: must be an RFC 3339 instant"))?;
        return Ok(Command::FloatingBorrow {
            license_id: l.id,
            feature_id: Some(f.id),
            hardware_id: Cow::Owned(holder),
            until,
            now,
        });
    }
    if let Some(ttl) = ttl_ms {
        if !(1..=timeout_ms).contains(&ttl) {
            return Err(NativeError::invalid(format!(
                "ttl_ms: must be 1 to the feature's timeout ({timeout_ms})"
            )));
        }
    }
    Ok(Command::FloatingAcquire {
        license_id: l.id,
        feature_id: Some(f.id),
        hardware_id: Cow::Owned(holder),
        now,
        ttl_ms,
    })
}

pub fn release_seat(l: &License, f: &Feature, holder: String, now: Millis) -> Command<'static> {
    Command::FloatingRelease {
        license_id: l.id,
        feature_id: Some(f.id),
        hardware_id: Cow::Owned(holder),
        now,
    }
}

fn check_holder(holder: &str) -> R<()> {
    if holder.is_empty() || holder.len() > crate::engine::HARDWARE_ID_BYTES_MAX {
        return Err(NativeError::invalid("holder: must be 1 to 512 bytes"));
    }
    Ok(())
}

pub fn activate(
    app: &App,
    l: &License,
    hardware_id: String,
    info: DeviceInfo,
    now: Millis,
) -> Command<'static> {
    Command::Activate {
        license_id: l.id,
        hardware_id: Cow::Owned(hardware_id),
        info,
        device_id: app.engine.next_id(),
        now,
    }
}

pub fn deactivate(l: &License, hardware_id: String, now: Millis) -> Command<'static> {
    Command::Deactivate {
        license_id: l.id,
        hardware_id: Cow::Owned(hardware_id),
        now,
    }
}

/// A device's details (`os_ver`, `hostname`, `ip`, `mac_address`, `is_vm`,
/// `vm_info`, `app_ver`, `sdk_ver`; all optional).
pub fn device_info(v: &Value, at: String) -> R<DeviceInfo> {
    let mut f = Fields::of(v, at)?;
    let mut s = |name: &'static str| -> R<String> {
        let v = f.str_opt(name)?.unwrap_or_default();
        if v.len() > crate::engine::DEVICE_VARIABLE_BYTES_MAX {
            return Err(NativeError::invalid(format!("{name}: at most 4096 bytes")));
        }
        Ok(v.to_string())
    };
    let info = DeviceInfo {
        os_ver: s("os_ver")?,
        hostname: s("hostname")?,
        ip: s("ip")?,
        mac_address: s("mac_address")?,
        vm_info: s("vm_info")?,
        app_ver: s("app_ver")?,
        sdk_ver: s("sdk_ver")?,
        is_vm: f.bool_opt("is_vm")?.unwrap_or(false),
    };
    f.done()?;
    Ok(info)
}
