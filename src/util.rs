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
