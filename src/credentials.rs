//! Passwords: stored only as salted argon2 hashes, hashed and verified on a
//! small pool of worker threads with a bounded queue, never on the runtime's
//! threads, and guarded against guessing.
//!
//! - **Bounded work.** [`PASSWORD_QUEUE_JOBS_MAX`] jobs wait for
//!   [`password_workers`] threads (about one per core, at the lowest
//!   scheduling priority so checks keep their CPU); past the queue a request
//!   is refused at once ([`Refused::Busy`]) instead of waiting. Each worker
//!   verifies in its own reused argon2 memory, so a login flood costs at most
//!   workers x 19 MiB, however many requests arrive.
//! - **Cached successes.** A successful verification is remembered as a
//!   keyed digest of the presented password, so repeated requests with the
//!   same password cost one HMAC, not one argon2 run. A wrong password is
//!   never cached, and a password change bumps the user's epoch, which voids
//!   cached verifications.
//! - **Backoff on failures.** Failed verifications are counted per account
//!   and per source address ([`Who`]); past [`FAILED_ATTEMPTS_FREE`] each
//!   further attempt must wait [`BACKOFF_BASE_MS`] doubled per failure, at most
//!   [`BACKOFF_MAX_MS`] ([`Refused::Throttled`]), without running argon2. A
//!   user whose own password is cached is not locked out by someone else's
//!   guessing; a source that guesses is.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::engine::model::{Id, LicenseUser};
use crate::engine::time::{Millis, MINUTE_MS};

/// Cached verifications kept; the cache is cleared past this (it only costs
/// re-hashing, never correctness).
pub const PASSWORD_CACHE_ENTRIES_MAX: usize = 1_000_000;
/// Longest password accepted, bytes (argon2 cost must not be driven by input).
pub const PASSWORD_BYTES_MAX: usize = 1024;
/// Password jobs that may wait for a worker; past this, refused at once.
pub const PASSWORD_QUEUE_JOBS_MAX: usize = 32;
/// Largest argon2 memory a stored hash may ask for, 1 KiB blocks (64 MiB;
/// Tally's own hashes use argon2's default, 19 MiB).
pub const PASSWORD_MEMORY_BLOCKS_MAX: usize = 64 * 1024;
/// A worker gives its argon2 memory back after this long without a job.
pub const PASSWORD_MEMORY_IDLE_MS: u64 = 1_000;
/// Blocks (1 KiB) reserved for argon2 memory at least: past glibc's largest
/// dynamic mmap threshold (32 MiB on 64-bit), so the reservation is always a
/// mapping of its own, unmapped when freed.
const MMAP_ALWAYS_BLOCKS: usize = 33 * 1024;
/// Failed verifications an account or source may have before backoff.
pub const FAILED_ATTEMPTS_FREE: u32 = 5;
/// The first backoff; it doubles with each further failure.
pub const BACKOFF_BASE_MS: Millis = 1_000;
/// The longest backoff.
pub const BACKOFF_MAX_MS: Millis = 60_000;
/// Failures older than this are forgotten.
pub const FAILURES_FORGOTTEN_MS: Millis = 15 * MINUTE_MS;
/// Accounts and sources whose failures are remembered at once.
pub const FAILURE_ENTRIES_MAX: usize = 100_000;

/// Password worker threads: one per core the process may run on.
pub fn password_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Why password work was not done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every worker is busy and the queue is full.
    Busy,
    /// Too many failures: try again after this long.
    Throttled { retry_after_ms: Millis },
}

/// Who failed a verification.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    /// A LicenseSpring license user.
    User(Id),
    /// Another surface's account (`surface:tenant:name`).
    Account(Box<str>),
    /// The client's address.
    Source(IpAddr),
}

#[derive(Clone, Copy)]
struct Verified {
    epoch: u64,
    digest: [u8; 32],
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    last: Millis,
}

impl Failures {
    /// How long an attempt must still wait, if at all.
    fn wait(&self, now: Millis) -> Option<Millis> {
        if self.count < FAILED_ATTEMPTS_FREE {
            return None;
        }
        let doublings = (self.count - FAILED_ATTEMPTS_FREE).min(16);
        let backoff = (BACKOFF_BASE_MS << doublings).min(BACKOFF_MAX_MS);
        let until = self.last.saturating_add(backoff);
        (now < until).then(|| until - now)
    }
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

pub struct Passwords {
    /// Random per process: the digests mean nothing outside it.
    secret: [u8; 32],
    /// user id -> digest of the last password verified for it (sharded map).
    cache: DashMap<Id, Verified>,
    /// Failures per account and source (sharded map, bounded).
    failures: DashMap<Who, Failures>,
    /// The workers' queue (bounded; the workers end when it is dropped).
    jobs: crossbeam_channel::Sender<Job>,
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

impl Passwords {
    pub fn new() -> Self {
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(PASSWORD_QUEUE_JOBS_MAX);
        for i in 0..password_workers() {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("tally-password-{i}"))
                .spawn(move || worker(queue));
            if let Err(e) = started {
                tracing::error!("password worker {i} not started: {e}");
            }
        }
        Passwords {
            secret: rand::random(),
            cache: DashMap::new(),
            failures: DashMap::new(),
            jobs,
        }
    }

    /// Runs `f` on a password worker; refused at once when the queue is full.
    pub async fn work<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, Refused> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = tx.send(f(memory));
        });
        self.jobs.try_send(job).map_err(|_| Refused::Busy)?;
        rx.await.map_err(|_| Refused::Busy)
    }

    /// A salted argon2id hash in PHC string form (slow: for catalogs loaded
    /// before serving; requests use [`Passwords::hash_on_worker`]).
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

    /// [`Passwords::hash`] on a worker. The outer error is a refusal, the
    /// inner one a password that cannot be hashed.
    pub async fn hash_on_worker(
        &self,
        password: String,
    ) -> Result<Result<String, String>, Refused> {
        self.work(move |_| Self::hash(&password)).await
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

    /// Verifies a license user's password: from the cache when this password
    /// verified before, else on a worker, subject to the backoff of the user
    /// and of `source`.
    pub async fn verify_user(
        &self,
        user: &LicenseUser,
        password: &str,
        source: Option<IpAddr>,
        now: Millis,
    ) -> Result<bool, Refused> {
        if password.len() > PASSWORD_BYTES_MAX {
            return Ok(false);
        }
        let source = source.map(Who::Source);
        self.check(source.as_ref(), now)?;
        let epoch = user.password_epoch.load(Ordering::Acquire);
        let digest = self.digest(user.id, password);
        if let Some(v) = self.cache.get(&user.id) {
            if v.epoch == epoch && constant_time_eq(&v.digest, &digest) {
                return Ok(true);
            }
        }
        let hash = user.spec.read().password_hash.clone();
        let ok = self
            .verify_on_worker(Who::User(user.id), source, hash, password.to_string(), now)
            .await?;
        if ok {
            if self.cache.len() >= PASSWORD_CACHE_ENTRIES_MAX {
                self.cache.clear();
            }
            self.cache.insert(user.id, Verified { epoch, digest });
        }
        Ok(ok)
    }

    /// Verifies another surface's account password against its stored hash,
    /// on a worker, subject to the backoff of the account and of `source`.
    pub async fn verify_account(
        &self,
        account: Who,
        hash: String,
        password: String,
        source: Option<IpAddr>,
        now: Millis,
    ) -> Result<bool, Refused> {
        if password.len() > PASSWORD_BYTES_MAX {
            return Ok(false);
        }
        let source = source.map(Who::Source);
        self.check(source.as_ref(), now)?;
        self.verify_on_worker(account, source, hash, password, now)
            .await
    }

    /// argon2 on a worker, unless `account` backs off; counts the outcome
    /// against the account and the source (checked by the caller).
    async fn verify_on_worker(
        &self,
        account: Who,
        source: Option<Who>,
        hash: String,
        password: String,
        now: Millis,
    ) -> Result<bool, Refused> {
        self.check(Some(&account), now)?;
        let ok = self
            .work(move |memory| verify_in(memory, &hash, &password))
            .await?;
        self.record(ok, account, source, now);
        Ok(ok)
    }

    fn check(&self, who: Option<&Who>, now: Millis) -> Result<(), Refused> {
        let Some(who) = who else { return Ok(()) };
        match self.failures.get(who).and_then(|f| f.wait(now)) {
            Some(retry_after_ms) => Err(Refused::Throttled { retry_after_ms }),
            None => Ok(()),
        }
    }

    /// Counts a failure against the account and the source; a success
    /// clears the account's failures (not the source's).
    fn record(&self, ok: bool, account: Who, source: Option<Who>, now: Millis) {
        if ok {
            self.failures.remove(&account);
            return;
        }
        if self.failures.len() >= FAILURE_ENTRIES_MAX {
            self.failures
                .retain(|_, f| now - f.last < FAILURES_FORGOTTEN_MS);
        }
        for who in std::iter::once(account).chain(source) {
            if self.failures.len() >= FAILURE_ENTRIES_MAX && !self.failures.contains_key(&who) {
                // Full of recent failures: the new name goes uncounted
                // rather than pushing out one that is backing off.
                continue;
            }
            let mut f = self.failures.entry(who).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now - f.last >= FAILURES_FORGOTTEN_MS {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last = now;
        }
    }
}

/// A password worker: runs jobs in its own argon2 memory, reused while jobs
/// keep coming and given back to the system once none came for
/// [`PASSWORD_MEMORY_IDLE_MS`].
fn worker(queue: crossbeam_channel::Receiver<Job>) {
    lowest_priority();
    let idle = std::time::Duration::from_millis(PASSWORD_MEMORY_IDLE_MS);
    let mut memory = Vec::new();
    loop {
        let job = match queue.recv_timeout(idle) {
            Ok(job) => job,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                memory = Vec::new();
                crate::util::release_freed();
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        job(&mut memory);
    }
}

/// Verifies `password` against the argon2 PHC string `phc`, in `memory`
/// (grown once to what the hash asks for, at most
/// [`PASSWORD_MEMORY_BLOCKS_MAX`] blocks).
pub fn verify_in(memory: &mut Vec<Block>, phc: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(h.algorithm), Params::try_from(&h))
    else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    if blocks > PASSWORD_MEMORY_BLOCKS_MAX || password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    if memory.len() < blocks {
        // Reserved past glibc's largest mmap threshold (32 MiB), so the
        // memory is always its own mapping and returns to the system when
        // the worker lets it go; only the blocks used are ever touched.
        if memory.capacity() < blocks {
            *memory = Vec::with_capacity(blocks.max(MMAP_ALWAYS_BLOCKS));
        }
        memory.resize(blocks, Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
        .is_ok()
        && constant_time_eq(out, expected.as_bytes())
}

/// Password workers run at the lowest priority of the normal class: under
/// load, checks keep the CPU and logins wait (and past the queue, are
/// refused), instead of the other way round.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) =
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
    {
        tracing::warn!("password worker keeps normal priority: {e:?}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_verifies_in_parallel_and_refuses_past_its_queue() {
        let p = std::sync::Arc::new(Passwords::new());
        let hash = Passwords::hash("right").expect("hash");
        let mut tasks = Vec::new();
        for i in 0..4u8 {
            let (p, hash) = (p.clone(), hash.clone());
            tasks.push(tokio::spawn(async move {
                let who = Who::Account(format!("t:{i}").into());
                p.verify_account(who, hash, "right".into(), None, 0).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), Ok(true));
        }
        // Workers busy and the queue full: the next job is refused at once.
        let gate = std::sync::Arc::new(std::sync::Barrier::new(password_workers() + 1));
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut held = Vec::new();
        for _ in 0..password_workers() {
            let (p, gate, running) = (p.clone(), gate.clone(), running.clone());
            held.push(tokio::spawn(async move {
                p.work(move |_| {
                    running.fetch_add(1, Ordering::AcqRel);
                    gate.wait();
                })
                .await
            }));
        }
        while running.load(Ordering::Acquire) < password_workers() {
            tokio::task::yield_now().await;
        }
        let mut queued = Vec::new();
        for _ in 0..PASSWORD_QUEUE_JOBS_MAX {
            let p = p.clone();
            queued.push(tokio::spawn(async move { p.work(|_| ()).await }));
        }
        while p.jobs.len() < PASSWORD_QUEUE_JOBS_MAX {
            tokio::task::yield_now().await;
        }
        assert_eq!(p.work(|_| ()).await, Err(Refused::Busy));
        tokio::task::spawn_blocking(move || gate.wait())
            .await
            .expect("gate");
        for t in held.into_iter().chain(queued) {
            assert!(t.await.expect("task").is_ok());
        }
    }

    #[tokio::test]
    async fn failures_back_off_and_a_cached_password_is_not_locked_out() {
        let p = Passwords::new();
        let source: IpAddr = "10.0.0.1".parse().expect("ip");
        let who = || Who::Account("t:someone".into());
        let hash = Passwords::hash("right").expect("hash");
        for _ in 0..FAILED_ATTEMPTS_FREE {
            let r = p
                .verify_account(who(), hash.clone(), "wrong".into(), Some(source), 0)
                .await;
            assert_eq!(r, Ok(false));
        }
        // The sixth attempt within the first backoff is refused without
        // running argon2, even with the right password; so is the source.
        let r = p
            .verify_account(who(), hash.clone(), "right".into(), None, 500)
            .await;
        assert_eq!(
            r,
            Err(Refused::Throttled {
                retry_after_ms: 500
            })
        );
        let other = Who::Account("t:other".into());
        let r = p
            .verify_account(other, hash.clone(), "right".into(), Some(source), 500)
            .await;
        assert_eq!(
            r,
            Err(Refused::Throttled {
                retry_after_ms: 500
            })
        );
        // After the backoff the right password works and clears the account.
        let r = p
            .verify_account(who(), hash.clone(), "right".into(), None, 1_000)
            .await;
        assert_eq!(r, Ok(true));
        assert!(p.failures.get(&who()).is_none());
        // Backoff doubles per failure up to its cap, and failures are forgotten.
        let f = Failures {
            count: FAILED_ATTEMPTS_FREE + 3,
            last: 0,
        };
        assert_eq!(f.wait(0), Some(8 * BACKOFF_BASE_MS));
        let f = Failures {
            count: 100,
            last: 0,
        };
        assert_eq!(f.wait(0), Some(BACKOFF_MAX_MS));
    }
}
