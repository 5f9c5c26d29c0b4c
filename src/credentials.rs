//! License-user passwords: stored only as salted argon2 hashes; a successful
//! verification is remembered as a keyed digest of the presented password so
//! repeated requests with the same password cost one HMAC, not one argon2 run.
//!
//! A wrong password always pays the full hash (no shortcut for guessing), and a
//! password change bumps the user's epoch, which voids cached verifications.

use std::sync::atomic::Ordering;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::engine::model::{Id, LicenseUser};

/// Cached verifications kept; the cache is cleared past this (it only costs
/// re-hashing, never correctness).
pub const PASSWORD_CACHE_ENTRIES_MAX: usize = 1_000_000;
/// Longest password accepted, bytes (argon2 cost must not be driven by input).
pub const PASSWORD_BYTES_MAX: usize = 1024;

#[derive(Clone, Copy)]
struct Verified {
    epoch: u64,
    digest: [u8; 32],
}

pub struct Passwords {
    /// Random per process: the digests mean nothing outside it.
    secret: [u8; 32],
    /// user id -> digest of the last password verified for it (sharded map).
    cache: DashMap<Id, Verified>,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Passwords {
    pub fn new() -> Self {
        Passwords {
            secret: rand::random(),
            cache: DashMap::new(),
        }
    }

    /// A salted argon2id hash in PHC string form.
    pub fn hash(password: &str) -> Result<String, String> {
        if password.len() > PASSWORD_BYTES_MAX {
            return Err(format!("password longer than {PASSWORD_BYTES_MAX} bytes"));
        }
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    }

    /// Whether `hash` is a PHC string this server can verify.
    pub fn is_valid_hash(hash: &str) -> bool {
        PasswordHash::new(hash).is_ok()
    }

    fn digest(&self, user_id: Id, password: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("hmac takes any key length");
        mac.update(&user_id.to_le_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Verifies `password` against an argon2 PHC string (slow by design: run
    /// it off the runtime's threads).
    pub fn verify_hash(hash: &str, password: &str) -> bool {
        password.len() <= PASSWORD_BYTES_MAX
            && PasswordHash::new(hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
    }

    pub fn verify(&self, user: &LicenseUser, password: &str) -> bool {
        if password.len() > PASSWORD_BYTES_MAX {
            return false;
        }
        let epoch = user.password_epoch.load(Ordering::Acquire);
        let digest = self.digest(user.id, password);
        if let Some(v) = self.cache.get(&user.id) {
            if v.epoch == epoch && constant_time_eq(&v.digest, &digest) {
                return true;
            }
        }
        let hash = user.spec.read().password_hash.clone();
        let ok = PasswordHash::new(&hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        if ok {
            if self.cache.len() >= PASSWORD_CACHE_ENTRIES_MAX {
                self.cache.clear();
            }
            self.cache.insert(user.id, Verified { epoch, digest });
        }
        ok
    }
}

/// Replaces each of a JSON object's `users[].password` by its argon2
/// `passwordHash` (Informatica users, from the admin API or a catalog);
/// Err((path, why)) names the offending field under `path`.
pub fn hash_passwords(
    m: &mut serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Result<(), (String, String)> {
    let Some(serde_json::Value::Array(users)) = m.get_mut("users") else {
        return Ok(());
    };
    for (i, u) in users.iter_mut().enumerate() {
        let serde_json::Value::Object(u) = u else {
            continue;
        };
        match u.remove("password") {
            Some(serde_json::Value::String(pw)) => {
                let hash =
                    Passwords::hash(&pw).map_err(|e| (format!("{path}users[{i}].password"), e))?;
                u.insert("passwordHash".into(), hash.into());
            }
            Some(_) => {
                return Err((
                    format!("{path}users[{i}].password"),
                    "must be a string".into(),
                ))
            }
            None => {
                let valid = u
                    .get("passwordHash")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(Passwords::is_valid_hash);
                if !valid {
                    return Err((
                        format!("{path}users[{i}].password"),
                        "password (or an argon2 passwordHash) is required".into(),
                    ));
                }
            }
        }
    }
    Ok(())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
