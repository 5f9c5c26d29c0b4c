//! Response signatures: RSA PKCS#1 v1.5 with SHA-256 over the exact body bytes,
//! base64-encoded (deterministic: the same key and body give the same
//! signature). Signed by aws-lc-rs (AWS-LC's assembly signs at OpenSSL's
//! rate, several times the rsa crate's; the rsa crate still makes and reads
//! the key files). A
//! signature still costs far more than an answer, so signatures are cached
//! by the body's SHA-256: an identical body is signed once.

use std::sync::Arc;

use base64::Engine as _;
use dashmap::DashMap;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer as _};
use rsa::RsaPrivateKey;
use sha2::{Digest, Sha256};

/// Signatures remembered; the cache is cleared past this.
pub const SIGNATURE_CACHE_ENTRIES_MAX: usize = 65_536;
/// Size of keys created at first start.
pub const RSA_KEY_BITS: usize = 2048;

/// The key as it signs: by aws-lc-rs, or by the rsa crate for a key
/// aws-lc-rs refuses (shorter than 2048 bits: a key a user brought).
#[allow(
    clippy::large_enum_variant,
    reason = "one per server; the common variant is kept inline"
)]
enum Key {
    AwsLc(aws_lc_rs::rsa::KeyPair, aws_lc_rs::rand::SystemRandom),
    Rsa(Box<SigningKey<Sha256>>),
}

pub struct Signer {
    key: Key,
    /// Fresh signatures made, and the nanoseconds they took (the cache's
    /// misses; hits are not counted, to keep the check path free of a
    /// shared write).
    made: std::sync::atomic::AtomicU64,
    made_ns: std::sync::atomic::AtomicU64,
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
        let fast = private
            .to_pkcs8_der()
            .ok()
            .and_then(|der| aws_lc_rs::rsa::KeyPair::from_pkcs8(der.as_bytes()).ok());
        let key = match fast {
            Some(k) => Key::AwsLc(k, aws_lc_rs::rand::SystemRandom::new()),
            None => {
                tracing::warn!(
                    "answers are signed with the slower rsa crate: aws-lc-rs takes keys of 2048 to 8192 bits"
                );
                Key::Rsa(Box::new(SigningKey::<Sha256>::new(private)))
            }
        };
        Signer {
            key,
            made: std::sync::atomic::AtomicU64::new(0),
            made_ns: std::sync::atomic::AtomicU64::new(0),
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
        let started = std::time::Instant::now();
        let raw = self.sign_raw(body);
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.made_ns.fetch_add(
            started.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let sig: Arc<str> = base64::engine::general_purpose::STANDARD.encode(raw).into();
        if self.cache.len() >= SIGNATURE_CACHE_ENTRIES_MAX {
            self.cache.clear();
        }
        self.cache.insert(digest, sig.clone());
        sig
    }

    /// Fresh signatures made so far, and the seconds they took.
    pub fn made(&self) -> (u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.made.load(Relaxed),
            self.made_ns.load(Relaxed) as f64 / 1e9,
        )
    }

    /// Signatures held in the cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// A fresh signature of `body` (no cache).
    pub fn sign_raw(&self, body: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::AwsLc(key, rng) => {
                let mut sig = vec![0u8; key.public_modulus_len()];
                // PKCS#1 v1.5 draws nothing from the generator (the API
                // asks for one for padding schemes that do); it fails only
                // on a buffer of the wrong length.
                key.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, rng, body, &mut sig)
                    .expect("a buffer of the modulus's length");
                sig
            }
            Key::Rsa(key) => key.sign(body).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// aws-lc-rs's signature is the rsa crate's, byte for byte (PKCS#1 v1.5
    /// is deterministic), and verifies with the public key clients get.
    #[test]
    fn aws_lc_signs_as_the_rsa_crate_did() {
        let mut rng = rand::thread_rng();
        let key = RsaPrivateKey::new(&mut rng, RSA_KEY_BITS).expect("key");
        let signer = Signer::new(key.clone());
        assert!(matches!(signer.key, Key::AwsLc(..)));
        let body = br#"{"license_active":true}"#;
        let ours = signer.sign_raw(body);
        let theirs = SigningKey::<Sha256>::new(key.clone()).sign(body).to_vec();
        assert_eq!(ours, theirs);
        use rsa::pkcs1v15::VerifyingKey;
        use rsa::signature::Verifier as _;
        let sig = rsa::pkcs1v15::Signature::try_from(ours.as_slice()).expect("sig");
        VerifyingKey::<Sha256>::new(key.to_public_key())
            .verify(body, &sig)
            .expect("verifies");
    }
}
