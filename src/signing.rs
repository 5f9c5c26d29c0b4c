//! Response signatures: RSA PKCS#1 v1.5 with SHA-256 over the exact body bytes,
//! base64-encoded. Signing 2048-bit RSA costs about a millisecond, so signatures
//! are cached by the body's SHA-256: an identical body is signed once.

use std::sync::Arc;

use base64::Engine as _;
use dashmap::DashMap;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer as _};
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};

/// Signatures remembered; the cache is cleared past this.
pub const SIGNATURE_CACHE_ENTRIES_MAX: usize = 65_536;
/// Size of keys created at first start.
pub const RSA_KEY_BITS: usize = 2048;

pub struct Signer {
    key: SigningKey<Sha256>,
    public_pem: String,
    /// sha256(body) -> base64 signature; sharded, no global lock.
    cache: DashMap<[u8; 32], Arc<str>>,
}

impl Signer {
    pub fn new(private: RsaPrivateKey) -> Self {
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default();
        Signer {
            key: SigningKey::<Sha256>::new(private),
            public_pem,
            cache: DashMap::new(),
        }
    }

    /// Public key as PEM (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Public key as base64 DER without PEM armour (what SDK configs take).
    pub fn public_key_base64(&self) -> String {
        self.public_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect()
    }

    pub fn sign(&self, body: &[u8]) -> Arc<str> {
        let digest: [u8; 32] = Sha256::digest(body).into();
        if let Some(sig) = self.cache.get(&digest) {
            return sig.clone();
        }
        let sig: Arc<str> = base64::engine::general_purpose::STANDARD
            .encode(self.key.sign(body).to_bytes())
            .into();
        if self.cache.len() >= SIGNATURE_CACHE_ENTRIES_MAX {
            self.cache.clear();
        }
        self.cache.insert(digest, sig.clone());
        sig
    }
}
