//! Offline tokens: compact JWS (a JWT) signed with Ed25519 (`alg: EdDSA`,
//! RFC 8037), with the signing key's `kid` in the header, so that an
//! application can verify its entitlements without reaching Tally. The public
//! keys are served as a JWKS; a rotation adds a new current key and keeps the
//! old ones in the JWKS until every token they signed has expired.
//!
//! The keys are created at first start in the data directory
//! (`storage::load_or_create_token_keys`); this module holds them in memory.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::engine::time::Millis;

/// Longest life of a token, seconds (90 days).
pub const TOKEN_TTL_S_MAX: i64 = 90 * 86_400;
/// Keys kept at once (the current one and retired ones whose tokens may
/// still be valid); a rotation past it is refused.
pub const TOKEN_KEYS_MAX: usize = 16;

/// A signing key as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKeyRecord {
    pub kid: String,
    /// The Ed25519 seed, base64url without padding (32 bytes).
    pub seed: String,
    pub created_ms: Millis,
    /// When a newer key replaced it; it signs nothing after that.
    #[serde(default)]
    pub retired_ms: Option<Millis>,
}

impl TokenKeyRecord {
    /// A new random key created at `now`.
    pub fn generate(now: Millis) -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut seed);
        TokenKeyRecord {
            kid: format!("tk-{}", crate::util::random_token(12)),
            seed: URL_SAFE_NO_PAD.encode(seed),
            created_ms: now,
            retired_ms: None,
        }
    }

    fn signing_key(&self) -> Result<SigningKey, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.seed)
            .map_err(|e| format!("token key {}: {e}", self.kid))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("token key {}: the seed is not 32 bytes", self.kid))?;
        Ok(SigningKey::from_bytes(&seed))
    }
}

/// The token keys in use, oldest first; the last one not retired signs.
pub struct TokenKeys {
    /// Read on every token issued and JWKS read; written by a rotation.
    keys: RwLock<Vec<(TokenKeyRecord, SigningKey)>>,
}

impl TokenKeys {
    pub fn new(records: Vec<TokenKeyRecord>) -> Result<Self, String> {
        if records.iter().all(|r| r.retired_ms.is_some()) {
            return Err("no current token key".into());
        }
        let keys = records
            .into_iter()
            .map(|r| r.signing_key().map(|k| (r, k)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TokenKeys {
            keys: RwLock::new(keys),
        })
    }

    pub fn records(&self) -> Vec<TokenKeyRecord> {
        self.keys.read().iter().map(|(r, _)| r.clone()).collect()
    }

    /// The compact JWS of `claims`, signed by the current key.
    pub fn sign(&self, claims: &Value) -> String {
        let keys = self.keys.read();
        let (record, key) = keys
            .iter()
            .rev()
            .find(|(r, _)| r.retired_ms.is_none())
            .expect("TokenKeys always holds a current key");
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": record.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    /// The public keys as a JWK Set (RFC 7517, OKP keys of RFC 8037).
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .read()
            .iter()
            .map(|(r, k)| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(k.verifying_key().to_bytes()),
                    "kid": r.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// The keys after a rotation at `now`: the current key retired, a new
    /// one current, and retired keys whose tokens have all expired dropped.
    /// Nothing changes until [`TokenKeys::install`].
    pub fn rotated(&self, now: Millis) -> Result<Vec<TokenKeyRecord>, String> {
        let mut records: Vec<TokenKeyRecord> = self
            .records()
            .into_iter()
            .filter(|r| match r.retired_ms {
                Some(at) => at.saturating_add(TOKEN_TTL_S_MAX * 1000) > now,
                None => true,
            })
            .collect();
        for r in records.iter_mut().filter(|r| r.retired_ms.is_none()) {
            r.retired_ms = Some(now);
        }
        if records.len() >= TOKEN_KEYS_MAX {
            return Err(format!(
                "{TOKEN_KEYS_MAX} keys may still verify live tokens; rotate again once the \
                 oldest has aged out ({} days after its retirement)",
                TOKEN_TTL_S_MAX / 86_400
            ));
        }
        records.push(TokenKeyRecord::generate(now));
        Ok(records)
    }

    /// Puts `records` in use (after they were stored).
    pub fn install(&self, records: Vec<TokenKeyRecord>) -> Result<(), String> {
        let next = TokenKeys::new(records)?;
        *self.keys.write() = next.keys.into_inner();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_keys_until_their_tokens_expire() {
        let keys = TokenKeys::new(vec![TokenKeyRecord::generate(0)]).expect("keys");
        let first = keys.records()[0].kid.clone();
        keys.install(keys.rotated(1_000).expect("rotate"))
            .expect("install");
        let recs = keys.records();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].kid.as_str(), recs[0].retired_ms),
            (first.as_str(), Some(1_000))
        );
        assert!(keys.sign(&json!({})).split('.').count() == 3);
        let later = 1_000 + TOKEN_TTL_S_MAX * 1000;
        keys.install(keys.rotated(later).expect("rotate"))
            .expect("install");
        assert!(keys.records().iter().all(|r| r.kid != first), "aged out");
        assert_eq!(keys.jwks()["keys"].as_array().map(Vec::len), Some(2));
    }
}
