//! Devices: activation (seats, transfers, the user's own limit), deactivation,
//! blacklisting and device variables.

use super::*;

impl Engine {
    // ---------------------------------------------------------------- devices

    #[allow(
        clippy::too_many_lines,
        reason = "the activation checks in the order they apply, under one devices lock"
    )]
    pub(super) fn activate(
        &self,
        license_id: Id,
        hw: &str,
        info: &DeviceInfo,
        device_id: Id,
        now: Millis,
    ) -> R<Outcome> {
        if hw.is_empty() || hw.len() > HARDWARE_ID_BYTES_MAX {
            return Err(EngineError::Invalid(
                "hardware_id",
                "must be 1 to 512 bytes",
            ));
        }
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let spec = lic.spec.read();
        self.check_usable(&lic, now)?;
        if spec.prevent_vm && info.is_vm {
            return Err(EngineError::VmNotAllowed);
        }
        let floating = spec.is_floating || spec.is_floating_cloud;
        let mut devs = lic.devices.write();
        let existing = devs.list.iter().position(|d| *d.hardware_id == *hw);
        if let Some(i) = existing {
            let d = &mut devs.list[i];
            if d.blacklisted {
                return Err(EngineError::DeviceBlacklisted);
            }
            if d.active {
                // Re-activating an active device takes no new seat.
                if floating {
                    lic.floating
                        .acquire(hw, now, spec.floating_timeout_ms())
                        .map_err(lease_err)?;
                }
                d.info = DeviceInfo::compact(info);
                d.last_activated = now;
                return Ok(Outcome::Activated {
                    device_id: d.id,
                    new: false,
                    transfer: false,
                });
            }
        } else if devs.list.len() >= DEVICES_PER_LICENSE_MAX {
            return Err(EngineError::TooMany("devices"));
        }
        let transfer = !devs.vacated.is_empty() && !devs.vacated.iter().any(|v| v == hw);
        if transfer {
            let done = lic.transfer_count.load(Ordering::Acquire) as i64;
            if spec.max_transfers != -1 && done >= spec.max_transfers {
                return Err(EngineError::TransferLimitReached);
            }
        }
        self.take_activation_seat(&lic, spec.user_id)?;
        if floating {
            if let Err(e) = lic.floating.acquire(hw, now, spec.floating_timeout_ms()) {
                lic.activations.release();
                return Err(lease_err(e));
            }
        }
        if transfer {
            devs.vacated.remove(0);
            lic.transfer_count.fetch_add(1, Ordering::AcqRel);
        } else {
            devs.vacated.retain(|v| v != hw);
        }
        let id = match existing {
            Some(i) => {
                let d = &mut devs.list[i];
                d.active = true;
                d.info = DeviceInfo::compact(info);
                d.last_activated = now;
                d.deactivated_at = None;
                d.id
            }
            None => {
                self.see_id(device_id);
                devs.reserve_one();
                devs.list.push(Device {
                    id: device_id,
                    hardware_id: hw.into(),
                    info: DeviceInfo::compact(info),
                    active: true,
                    blacklisted: false,
                    first_activated: now,
                    last_activated: now,
                    deactivated_at: None,
                    variables: thin_vec::ThinVec::new(),
                });
                device_id
            }
        };
        Ok(Outcome::Activated {
            device_id: id,
            new: true,
            transfer,
        })
    }

    /// Takes one activation seat of `lic`; a user-based license (`user_id`)
    /// also counts against its user's own activation limit.
    pub(super) fn take_activation_seat(&self, lic: &License, user_id: Option<Id>) -> R<()> {
        if let Some(u) = user_id.and_then(|u| self.user(u)) {
            let us = u.spec.read();
            if !us.allow_unlimited_activations
                && self.user_activations(&u) >= us.max_activations as u64
            {
                return Err(EngineError::ActivationLimitReached);
            }
        }
        lic.activations
            .try_acquire()
            .map_err(|_| EngineError::ActivationLimitReached)?;
        Ok(())
    }

    pub(super) fn deactivate(&self, license_id: Id, hw: &str, now: Millis) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let mut devs = lic.devices.write();
        let d = devs
            .list
            .iter_mut()
            .find(|d| *d.hardware_id == *hw && d.active)
            .ok_or(EngineError::DeviceNotFound)?;
        d.active = false;
        d.deactivated_at = Some(now);
        lic.activations.release();
        lic.floating.release(hw, now);
        for f in lic.features.read().iter() {
            f.floating.release(hw, now);
        }
        if !devs.vacated.iter().any(|v| v == hw) {
            devs.vacated.push(hw.to_string());
        }
        // Only as many vacated seats as there are seats can become transfers.
        let cap = lic.spec.read().max_activations.max(1) as usize;
        if devs.vacated.len() > cap {
            let extra = devs.vacated.len() - cap;
            devs.vacated.drain(..extra);
        }
        Ok(Outcome::Deactivated)
    }

    pub(super) fn set_blacklisted(
        &self,
        license_id: Id,
        hw: &str,
        blacklisted: bool,
        device_id: Id,
        now: Millis,
    ) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let mut devs = lic.devices.write();
        match devs.list.iter_mut().find(|d| *d.hardware_id == *hw) {
            Some(d) => {
                if blacklisted && d.active {
                    d.active = false;
                    d.deactivated_at = Some(now);
                    lic.activations.release();
                    lic.floating.release(hw, now);
                    for f in lic.features.read().iter() {
                        f.floating.release(hw, now);
                    }
                }
                d.blacklisted = blacklisted;
            }
            None if blacklisted => {
                self.see_id(device_id);
                devs.reserve_one();
                devs.list.push(Device {
                    id: device_id,
                    hardware_id: hw.into(),
                    info: None,
                    active: false,
                    blacklisted: true,
                    first_activated: now,
                    last_activated: now,
                    deactivated_at: Some(now),
                    variables: thin_vec::ThinVec::new(),
                });
            }
            None => return Err(EngineError::DeviceNotFound),
        }
        Ok(Outcome::Done)
    }

    pub(super) fn track_variables(
        &self,
        license_id: Id,
        hw: &str,
        vars: &[(String, String)],
        now: Millis,
    ) -> R<Outcome> {
        let lic = self
            .license(license_id)
            .ok_or(EngineError::LicenseNotFound)?;
        let mut devs = lic.devices.write();
        let d = devs
            .list
            .iter_mut()
            .find(|d| *d.hardware_id == *hw && d.active)
            .ok_or(EngineError::DeviceNotFound)?;
        if vars.iter().any(|(k, v)| {
            k.is_empty()
                || k.len() > DEVICE_VARIABLE_BYTES_MAX
                || v.len() > DEVICE_VARIABLE_BYTES_MAX
        }) {
            return Err(EngineError::Invalid(
                "variables",
                "names must be 1 to 4096 bytes and values at most 4096",
            ));
        }
        let new = vars
            .iter()
            .filter(|(k, _)| !d.variables.iter().any(|v| v.variable == *k))
            .count();
        if d.variables.len() + new > DEVICE_VARIABLES_MAX {
            return Err(EngineError::TooMany("device variables"));
        }
        for (k, v) in vars {
            match d.variables.iter_mut().find(|x| x.variable == *k) {
                Some(x) => {
                    x.value = v.clone();
                    x.created_at = now;
                }
                None => d.variables.push(DeviceVariable {
                    variable: k.clone(),
                    value: v.clone(),
                    created_at: now,
                }),
            }
        }
        Ok(Outcome::Done)
    }
}
