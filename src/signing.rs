//! Response signatures: RSA PKCS#1 v1.5 with SHA-256 over the exact body bytes,
//! base64-encoded (deterministic: the same key and body give the same
//! signature). Signed by aws-lc-rs (AWS-LC's assembly signs at OpenSSL's
//! rate, several times the rsa crate's; the rsa crate still makes and reads
//! the key files). A
//! signature still costs far more than an answer, so signatures are kept in
//! two caches:
//! - by the body's SHA-256 ([`SIGNATURE_CACHE_ENTRIES_MAX`] entries): an
//!   identical body is signed once;
//! - **stamped** signatures, by the id of what the body describes and a
//!   [`Stamp`] of the state it was rendered from, within a memory budget
//!   (`--signature-cache-mb`): sized so that every feature answer of a
//!   large catalog stays signed, filled off the request path (the
//!   LicenseSpring surface's filler), and looked up without hashing the body.

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
/// The stamped signatures' default memory budget (`--signature-cache-mb`):
/// about 1.58M RSA-2048 signatures (339 bytes each counted), so that a 1M-license
/// catalog keeps at least one signed answer per license.
pub const SIGNATURE_CACHE_MB_DEFAULT: usize = 512;

/// The state a stamped signature's body was rendered from: the body is a
/// function of the id and this stamp, so a signature is valid for as long
/// as the stamp is the one it was made under.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Stamp {
    /// The object's revision (it changes whenever its description does).
    pub revision: u64,
    /// Floating seats in use, for answers that show them.
    pub in_use: Option<u32>,
    /// The consumption total shown.
    pub total: i64,
}

impl Stamp {
    /// A signature read from the saved file: not yet matched to a state
    /// (revisions never reach `u64::MAX`); see [`Signer::load_stamped`].
    const LOADED: Stamp = Stamp {
        revision: u64::MAX,
        in_use: None,
        total: i64::MIN,
    };
}

/// The file kept signatures are saved to, in the data directory.
pub const SIGNATURES_FILE: &str = "signatures.bin";
const SIGNATURES_MAGIC: &[u8; 8] = b"TALLYSIG";
const SIGNATURES_FORMAT: u32 = 1;
/// Bytes of a body's digest kept beside its signature (a truncated SHA-256:
/// it matches a saved signature to the body rendered after a restart).
const DIGEST_BYTES: usize = 16;

fn digest(body: &[u8]) -> [u8; DIGEST_BYTES] {
    let full: [u8; 32] = Sha256::digest(body).into();
    let mut d = [0u8; DIGEST_BYTES];
    d.copy_from_slice(&full[..DIGEST_BYTES]);
    d
}

/// What [`Signer::fill_stamped`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Filled {
    /// A fresh signature, kept.
    Signed,
    /// A saved signature matched the body: kept under the stamp, unsigned.
    Verified,
    /// The budget is full: nothing was signed.
    Full,
}

/// One stamped signature: the raw signature bytes (base64 is made when
/// sent: 256 bytes kept instead of 344) and the digest of the body it signs.
struct Stamped {
    stamp: Stamp,
    digest: [u8; DIGEST_BYTES],
    raw: Box<[u8]>,
    /// The filler's pass that last found this entry's id alive (see
    /// [`Signer::end_pass`]).
    seen: std::sync::atomic::AtomicU32,
}

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

/// Signatures waiting for the signing threads; past it a request signs on
/// its own thread (it waits about as long, and the queue stays bounded).
pub const SIGN_QUEUE_MAX: usize = 1024;

/// Threads that make fresh signatures for requests, one per core the
/// process may run on: an RSA-2048 signature takes about 0.2 ms, which on a
/// request's runtime thread would hold up every other connection that thread
/// serves (all of a core's, under a current-thread runtime per core).
struct Pool {
    jobs: crossbeam_channel::Sender<Job>,
}

/// One body to sign; the signature (and the nanoseconds it took) go back
/// to the waiting request.
struct Job {
    body: Vec<u8>,
    done: tokio::sync::oneshot::Sender<(Vec<u8>, u64)>,
}

impl Pool {
    fn start(key: &Arc<Key>) -> Pool {
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(SIGN_QUEUE_MAX);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..threads {
            let key = Arc::clone(key);
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tally-sign-{i}"))
                .spawn(move || {
                    // Ends when the signer (the only sender) is dropped.
                    for job in rx {
                        let started = std::time::Instant::now();
                        let raw = key.sign(&job.body);
                        let _ = job.done.send((raw, started.elapsed().as_nanos() as u64));
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("signing thread {i} not started: {e}");
            }
        }
        Pool { jobs }
    }
}

pub struct Signer {
    /// Shared with the signing threads.
    key: Arc<Key>,
    /// The signing threads, started at the first signature asked for from
    /// a request (see [`Signer::sign_async`]).
    pool: std::sync::OnceLock<Pool>,
    /// Signatures made on a request's thread because
    /// [`SIGN_QUEUE_MAX`] were already waiting for the signing threads.
    overflowed: std::sync::atomic::AtomicU64,
    /// Fresh signatures made, and the nanoseconds they took (the cache's
    /// misses; hits are not counted, to keep the check path free of a
    /// shared write).
    made: std::sync::atomic::AtomicU64,
    made_ns: std::sync::atomic::AtomicU64,
    public_pem: String,
    /// sha256(body) -> base64 signature; sharded, no global lock.
    cache: DashMap<[u8; 32], Arc<str>>,
    /// id -> signature of the body rendered under a stamp; sharded, no
    /// global lock. At most `stamped_max` entries (the budget divided by
    /// [`Signer::stamped_entry_bytes`]); when full, only an id's own entry is
    /// replaced (a full cache is not cleared under traffic).
    stamped: DashMap<u64, Stamped>,
    stamped_max: usize,
    /// The filler's current pass (entries made now count as seen by it).
    pass: std::sync::atomic::AtomicU32,
    /// Signatures kept by stamp so far (a save is due after enough).
    changes: std::sync::atomic::AtomicU64,
    /// The saved file's MAC key: SHA-256 of a label and the private key's
    /// DER (only the holder of the signing key writes a file it will load).
    file_key: [u8; 32],
}

impl Signer {
    /// A signer whose stamped signatures take at most `stamped_budget_bytes`.
    pub fn new(private: RsaPrivateKey, stamped_budget_bytes: usize) -> Self {
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default();
        let file_key: [u8; 32] = {
            let mut h = Sha256::new();
            h.update(b"tally signatures.bin v1\0");
            if let Ok(der) = private.to_pkcs8_der() {
                h.update(der.as_bytes());
            }
            h.finalize().into()
        };
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
        let mut signer = Signer {
            key: Arc::new(key),
            pool: std::sync::OnceLock::new(),
            overflowed: std::sync::atomic::AtomicU64::new(0),
            made: std::sync::atomic::AtomicU64::new(0),
            made_ns: std::sync::atomic::AtomicU64::new(0),
            public_pem,
            cache: DashMap::new(),
            stamped: DashMap::new(),
            stamped_max: 0,
            pass: std::sync::atomic::AtomicU32::new(0),
            changes: std::sync::atomic::AtomicU64::new(0),
            file_key,
        };
        signer.stamped_max = stamped_budget_bytes / signer.stamped_entry_bytes();
        signer
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

    /// A fresh signature, counted in [`Signer::made`].
    fn sign_counted(&self, body: &[u8]) -> Vec<u8> {
        let started = std::time::Instant::now();
        let raw = self.sign_raw(body);
        self.count_made(started.elapsed().as_nanos() as u64);
        raw
    }

    /// One fresh signature that took `ns`, for [`Signer::made`].
    fn count_made(&self, ns: u64) {
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.made_ns
            .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
    }

    /// A fresh signature made on a signing thread while the caller's task
    /// waits (its runtime thread serves other requests meanwhile); on the
    /// caller's thread when [`SIGN_QUEUE_MAX`] are waiting or no signing
    /// thread runs. Counted as [`Signer::sign_counted`] counts.
    async fn sign_off_thread(&self, body: &[u8]) -> Vec<u8> {
        let pool = self.pool.get_or_init(|| Pool::start(&self.key));
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            body: body.to_vec(),
            done,
        };
        let signed = match pool.jobs.try_send(job) {
            Ok(()) => answer.await.ok(),
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                self.overflowed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
            // No signing thread runs (none could be started).
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => None,
        };
        let Some((raw, ns)) = signed else {
            return self.sign_counted(body);
        };
        self.count_made(ns);
        raw
    }

    /// The base64 signature of `body`: the one cached by the body's
    /// SHA-256, else a fresh one made on a signing thread (then cached).
    pub async fn sign_async(&self, body: &[u8]) -> Arc<str> {
        let digest: [u8; 32] = Sha256::digest(body).into();
        if let Some(sig) = self.cache.get(&digest) {
            return sig.clone();
        }
        let raw = self.sign_off_thread(body).await;
        let sig: Arc<str> = base64::engine::general_purpose::STANDARD.encode(raw).into();
        if self.cache.len() >= SIGNATURE_CACHE_ENTRIES_MAX {
            self.cache.clear();
        }
        self.cache.insert(digest, sig.clone());
        sig
    }

    /// Signatures made on a request's thread because the signing threads'
    /// queue was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The base64 signature kept for `id` under `stamp`, if any.
    pub fn stamped(&self, id: u64, stamp: Stamp) -> Option<String> {
        let e = self.stamped.get(&id)?;
        (e.stamp == stamp).then(|| base64::engine::general_purpose::STANDARD.encode(&e.raw))
    }

    /// The signature of `body`, rendered for `id` under `stamp`, in
    /// base64: the kept one; else a fresh one (made on a signing thread),
    /// kept if the budget has room (or `id` has an entry to replace); past
    /// the budget, through the cache by the body's hash. A `String` (one
    /// allocation: it becomes the header's bytes as is).
    pub async fn sign_for_async(&self, id: u64, stamp: Stamp, body: &[u8]) -> String {
        if let Some(sig) = self.stamped(id, stamp) {
            return sig;
        }
        // An answer showing seats in use changes with nearly every check
        // (and the filler leaves such answers alone): not kept by stamp.
        if stamp.in_use.is_some() || !self.can_keep(id) {
            return self.sign_async(body).await.to_string();
        }
        if let Some(sig) = self.verify_loaded(id, stamp, body) {
            return sig;
        }
        let raw = self.sign_off_thread(body).await;
        let sig = base64::engine::general_purpose::STANDARD.encode(&raw);
        self.keep_stamped(id, stamp, raw, body);
        sig
    }

    /// A saved signature kept for `id` that signs `body`: stamped with
    /// `stamp` from now on, and returned in base64.
    fn verify_loaded(&self, id: u64, stamp: Stamp, body: &[u8]) -> Option<String> {
        let mut e = self.stamped.get_mut(&id)?;
        if e.stamp != Stamp::LOADED || e.digest != digest(body) {
            return None;
        }
        e.stamp = stamp;
        Some(base64::engine::general_purpose::STANDARD.encode(&e.raw))
    }

    /// What the filler asks first: whether a signature is kept for `id`
    /// under `stamp` (its entry, whatever its stamp, is marked seen by the
    /// current pass).
    pub fn has_stamped(&self, id: u64, stamp: Stamp) -> bool {
        self.stamped.get(&id).is_some_and(|e| {
            let pass = self.pass.load(std::sync::atomic::Ordering::Relaxed);
            e.seen.store(pass, std::sync::atomic::Ordering::Relaxed);
            e.stamp == stamp
        })
    }

    /// Whether a signature for `id` would be kept: the budget has room, or
    /// `id` has an entry to replace.
    pub fn can_keep(&self, id: u64) -> bool {
        self.stamped.len() < self.stamped_max || self.stamped.contains_key(&id)
    }

    /// What the filler calls: keeps a signature of `body` for `id` under
    /// `stamp`, the saved one when it signs this body, else a fresh one.
    pub fn fill_stamped(&self, id: u64, stamp: Stamp, body: &[u8]) -> Filled {
        if !self.can_keep(id) {
            return Filled::Full;
        }
        if self.verify_loaded(id, stamp, body).is_some() {
            return Filled::Verified;
        }
        let raw = self.sign_counted(body);
        if self.keep_stamped(id, stamp, raw, body) {
            Filled::Signed
        } else {
            Filled::Full
        }
    }

    fn keep_stamped(&self, id: u64, stamp: Stamp, raw: Vec<u8>, body: &[u8]) -> bool {
        if !self.can_keep(id) {
            return false;
        }
        let seen = self.pass.load(std::sync::atomic::Ordering::Relaxed).into();
        let raw = raw.into_boxed_slice();
        let digest = digest(body);
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.stamped.insert(
            id,
            Stamped {
                stamp,
                digest,
                raw,
                seen,
            },
        );
        true
    }

    /// What identifies the key in a saved file (SHA-256 of the public key).
    fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.public_pem.as_bytes()).into()
    }

    /// Changes to the kept signatures so far (what makes a save due).
    pub fn stamped_changes(&self) -> u64 {
        self.changes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Saves the kept signatures to `path` (a temporary file, then a
    /// rename): a header (magic, format, the key's fingerprint, the
    /// signature's length), then id, body digest and signature per entry, an
    /// end mark (id `u64::MAX`) with the count, and an HMAC-SHA256 of
    /// everything before it under a key derived from the signing key (a file
    /// anyone else wrote, or damaged, is refused). A cache, not state: not
    /// synced. No map lock is held while writing. Returns how many were
    /// saved; on an error the temporary file is removed.
    pub fn save_stamped(&self, path: &std::path::Path) -> std::io::Result<u64> {
        let tmp = path.with_extension("tmp");
        let r = self
            .write_saved(&tmp)
            .and_then(|n| std::fs::rename(&tmp, path).map(|()| n));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }

    fn write_saved(&self, tmp: &std::path::Path) -> std::io::Result<u64> {
        use std::io::Write as _;
        let mut w = Summed {
            w: std::io::BufWriter::new(std::fs::File::create(tmp)?),
            mac: self.file_mac(),
        };
        w.put(SIGNATURES_MAGIC)?;
        w.put(&SIGNATURES_FORMAT.to_le_bytes())?;
        w.put(&self.fingerprint())?;
        w.put(&(self.signature_len() as u32).to_le_bytes())?;
        // Ids first: a shard is not locked while the file is written.
        let ids: Vec<u64> = self.stamped.iter().map(|e| *e.key()).collect();
        let mut n = 0u64;
        let mut record = Vec::with_capacity(8 + DIGEST_BYTES + self.signature_len());
        for id in ids {
            record.clear();
            match self.stamped.get(&id) {
                Some(e) => {
                    record.extend_from_slice(&id.to_le_bytes());
                    record.extend_from_slice(&e.digest);
                    record.extend_from_slice(&e.raw);
                }
                None => continue,
            }
            w.put(&record)?;
            n += 1;
        }
        w.put(&u64::MAX.to_le_bytes())?;
        w.put(&n.to_le_bytes())?;
        let tag = hmac::Mac::finalize(w.mac).into_bytes();
        w.w.write_all(&tag)?;
        w.w.into_inner().map_err(|e| e.into_error())?;
        Ok(n)
    }

    /// The saved file's MAC, keyed by a hash of the signing key's DER.
    fn file_mac(&self) -> hmac::Hmac<Sha256> {
        <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.file_key)
            .expect("HMAC takes keys of any length")
    }

    /// Loads a file [`Signer::save_stamped`] wrote with this key: each
    /// signature is kept unmatched ([`Stamp::LOADED`]) until a body with
    /// its digest is rendered for its id (by the filler or a request), then
    /// used without signing. An id already kept, and entries past the
    /// budget, are skipped. Ok(None) for a file of another key or format. A
    /// file whose length or MAC is wrong is refused whole: it is read through
    /// for its MAC before anything is kept (a request could otherwise use a
    /// damaged signature before the end was reached), and what a failed
    /// second reading kept is forgotten. Returns how many were loaded.
    pub fn load_stamped(&self, path: &std::path::Path) -> std::io::Result<Option<u64>> {
        use std::io::Seek as _;
        let mut file = std::fs::File::open(path)?;
        let per = (8 + DIGEST_BYTES + self.signature_len()) as u64;
        let fixed = 8 + 4 + 32 + 4 + 8 + 8 + 32;
        let len = file.metadata()?.len();
        if len < fixed || (len - fixed) % per != 0 {
            return Err(std::io::Error::other("damaged: its length"));
        }
        if !self.scan_saved(&mut file, false)? {
            return Ok(None);
        }
        file.rewind()?;
        let before = self.stamped.len();
        if let Err(e) = self.scan_saved(&mut file, true) {
            self.stamped.retain(|_, e| e.stamp != Stamp::LOADED);
            return Err(e);
        }
        Ok(Some(self.stamped.len().saturating_sub(before) as u64))
    }

    /// Reads a saved file through: false for another key or format, an
    /// error for a damaged one; with `keep`, keeps its signatures.
    fn scan_saved(&self, file: &mut std::fs::File, keep: bool) -> std::io::Result<bool> {
        let mut r = Summed {
            w: std::io::BufReader::new(file),
            mac: self.file_mac(),
        };
        let mut head = [0u8; 8 + 4 + 32 + 4];
        r.take(&mut head)?;
        let sig_len = self.signature_len();
        if head[..8] != SIGNATURES_MAGIC[..]
            || head[8..12] != SIGNATURES_FORMAT.to_le_bytes()
            || head[12..44] != self.fingerprint()
            || head[44..48] != (sig_len as u32).to_le_bytes()
        {
            return Ok(false);
        }
        let mut n = 0u64;
        let mut id = [0u8; 8];
        let mut raw = vec![0u8; sig_len];
        loop {
            r.take(&mut id)?;
            let key = u64::from_le_bytes(id);
            if key == u64::MAX {
                break;
            }
            let mut digest = [0u8; DIGEST_BYTES];
            r.take(&mut digest)?;
            r.take(&mut raw)?;
            n += 1;
            if keep && self.can_keep(key) {
                let pass = self.pass.load(std::sync::atomic::Ordering::Relaxed);
                // An entry a request made meanwhile stays.
                self.stamped.entry(key).or_insert_with(|| Stamped {
                    stamp: Stamp::LOADED,
                    digest,
                    raw: raw.clone().into_boxed_slice(),
                    seen: pass.into(),
                });
            }
        }
        let mut count = [0u8; 8];
        r.take(&mut count)?;
        let expected = hmac::Mac::finalize(r.mac).into_bytes();
        let mut tag = [0u8; 32];
        std::io::Read::read_exact(&mut r.w, &mut tag)?;
        if tag[..] != expected[..] || u64::from_le_bytes(count) != n {
            return Err(std::io::Error::other("damaged: its MAC or count"));
        }
        Ok(true)
    }

    /// Starts a filler's pass over every live id.
    pub fn begin_pass(&self) -> u32 {
        self.pass.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Ends a complete pass: the entries of ids it did not find (deleted
    /// objects) are forgotten, freeing their room in the budget.
    pub fn end_pass(&self, pass: u32) {
        self.stamped
            .retain(|_, e| e.seen.load(std::sync::atomic::Ordering::Relaxed) == pass);
    }

    /// Memory one stamped signature takes: the map's slot (with the
    /// table's 1/8 spare room and control byte) and the signature's bytes.
    pub fn stamped_entry_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(u64, Stamped)>();
        slot + slot / 7 + 1 + self.signature_len()
    }

    /// Bytes of one raw signature (the modulus's length).
    pub fn signature_len(&self) -> usize {
        match &*self.key {
            Key::AwsLc(key, _) => key.public_modulus_len(),
            Key::Rsa(key) => {
                use rsa::traits::PublicKeyParts as _;
                key.as_ref().as_ref().size()
            }
        }
    }

    /// Stamped signatures kept, the bytes they take, and the budget's
    /// limit in entries.
    pub fn stamped_usage(&self) -> (usize, usize, usize) {
        let n = self.stamped.len();
        (n, n * self.stamped_entry_bytes(), self.stamped_max)
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
        self.key.sign(body)
    }
}

impl Key {
    fn sign(&self, body: &[u8]) -> Vec<u8> {
        match self {
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

/// A reader or writer that MACs what went through it.
struct Summed<W> {
    w: W,
    mac: hmac::Hmac<Sha256>,
}

impl<W: std::io::Write> Summed<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        hmac::Mac::update(&mut self.mac, bytes);
        self.w.write_all(bytes)
    }
}

impl<R: std::io::Read> Summed<R> {
    fn take(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.w.read_exact(buf)?;
        hmac::Mac::update(&mut self.mac, buf);
        Ok(())
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
        let signer = Signer::new(key.clone(), 1 << 20);
        assert!(matches!(*signer.key, Key::AwsLc(..)));
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

    /// Signatures made off the caller's thread are the ones made on it,
    /// counted alike, and made on a signing thread (the caller's is a
    /// current-thread runtime's, as a request's may be).
    #[test]
    fn signatures_are_made_on_the_signing_threads() {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), RSA_KEY_BITS).expect("key");
        let signer = Signer::new(key, 1 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let body = br#"{"id":1,"total_consumptions":7}"#;
        let direct = base64::engine::general_purpose::STANDARD.encode(signer.sign_raw(body));
        let stamp = Stamp {
            revision: 3,
            in_use: None,
            total: 7,
        };
        let (plain, stamped) = rt.block_on(async {
            (
                signer.sign_async(body).await,
                signer.sign_for_async(9, stamp, body).await,
            )
        });
        assert_eq!(&*plain, direct);
        assert_eq!(stamped, direct);
        assert_eq!(signer.stamped(9, stamp).as_deref(), Some(direct.as_str()));
        assert_eq!(signer.made().0, 2);
        assert_eq!(signer.overflowed(), 0);
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            names.iter().any(|n| n.trim().starts_with("tally-sign-")),
            "{names:?}"
        );
    }
}
