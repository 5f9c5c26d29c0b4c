//! Small helpers shared by the layers above the engine.

use rand::Rng;

const TOKEN_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A random alphanumeric token of `len` characters (keys, secrets).
pub fn random_token(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| TOKEN_ALPHABET[rng.gen_range(0..TOKEN_ALPHABET.len())] as char)
        .collect()
}

/// A license key in LicenseSpring's style: `XXXX-XXXX-XXXX-XXXX`.
pub fn random_license_key() -> String {
    const KEY: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(19);
    for i in 0..16 {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        s.push(KEY[rng.gen_range(0..KEY.len())] as char);
    }
    s
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A random UUID (version 4) in its usual text form (request ids).
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What makes the allocator give freed memory back to the system now, for
/// the calling thread (set once by the binary, which chooses the allocator;
/// none: nothing to do, as with glibc, which returns large blocks at once).
static RELEASE_FREED: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets [`release_freed`]'s work (the binary, at start).
pub fn set_release_freed(f: fn()) {
    let _ = RELEASE_FREED.set(f);
}

/// Gives the calling thread's freed memory back to the system (a password
/// worker after it dropped its argon2 memory, before it sleeps: an
/// allocator that trims lazily would otherwise keep it while it sleeps).
pub fn release_freed() {
    if let Some(f) = RELEASE_FREED.get() {
        f();
    }
}
