//! Password hashes: argon2id for every user-chosen password (ACC-19), a fast salted HMAC-SHA256
//! for relay-issued tokens (ACC-19a, `hash_issued`), `{SHA512-CRYPT}` accepted for imported
//! accounts and upgraded on first login (ACC-20). Pure and blocking: callers run the argon2 and
//! crypt work on a blocking thread under the verification semaphore (ACC-21); the token form
//! costs about a microsecond and runs in place.

use std::sync::Mutex;

use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed")]
    Hash,
}

/// ACC-19: argon2id, m = 19,456 KiB, t = 2, p = 1.
fn params() -> Result<Params, HashError> {
    Params::new(19_456, 2, 1, Some(32)).map_err(|_| HashError::Hash)
}

/// Argon2 working memory (19 MiB per hash at ACC-19's cost) kept between the hashes of a burst.
/// Allocated afresh, it is a new mapping every time (glibc's mmap threshold is fixed at 4 MiB,
/// `cli/malloc.rs`) whose 4,864 pages are faulted in and zeroed: measured 20.6 ms per hash
/// instead of 11.4 ms with the memory reused. At most one buffer per concurrent hash (ACC-21
/// allows one per CPU) is ever allocated; `release_scratch` frees them when the last queued hash
/// is done (`accounts::HashJob`).
static SCRATCH: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());
/// Buffers kept, whatever the number of CPUs.
const SCRATCH_KEPT: usize = 8;

/// Run `f` with working memory of `blocks` blocks. Only buffers of the ACC-19 size are pooled;
/// imported hashes with other costs get memory of their own.
fn with_scratch<T>(blocks: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
    let pooled = params().map(|p| p.block_count() == blocks).unwrap_or(false);
    let reused = if pooled { SCRATCH.lock().ok().and_then(|mut p| p.pop()) } else { None };
    let mut mem = reused.filter(|m| m.len() == blocks).unwrap_or_else(|| vec![Block::default(); blocks]);
    let out = f(&mut mem);
    if pooled
        && let Ok(mut pool) = SCRATCH.lock()
        && pool.len() < SCRATCH_KEPT
    {
        pool.push(mem);
    }
    out
}

/// Free the kept working memory (the burst of hashes is over).
pub fn release_scratch() {
    if let Ok(mut pool) = SCRATCH.lock() {
        pool.clear();
    }
}

/// Compute `out` for `pwd` and `salt` with the given algorithm and cost, in pooled memory.
fn compute(alg: Algorithm, version: Version, params: Params, pwd: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    let blocks = params.block_count();
    let argon2 = Argon2::new(alg, version, params);
    with_scratch(blocks, |mem| argon2.hash_password_into_with_memory(pwd, salt, out, mem).is_ok())
}

/// A new argon2id PHC string with a random 16-byte salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt: [u8; 16] = rand::random();
    let params = params()?;
    let mut out = [0u8; 32];
    if !compute(Algorithm::Argon2id, Version::V0x13, params.clone(), password.as_bytes(), &salt, &mut out) {
        return Err(HashError::Hash);
    }
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|_| HashError::Hash)?,
        salt: Some(Salt::new(&salt).map_err(|_| HashError::Hash)?),
        hash: Some(Output::new(&out).map_err(|_| HashError::Hash)?),
    };
    Ok(phc.to_string())
}

/// PHC-like prefix of the relay-issued token form: `$chatrelay-t1$<salt>$<mac>`, both unpadded
/// standard base64; mac = HMAC-SHA256(key = 16-byte random salt, message = password).
pub const ISSUED_PREFIX: &str = "$chatrelay-t1$";

/// The fast stored form of a relay-issued token (ACC-19a). Only for a password that
/// `credentials::is_relay_issued` proved: its ≥ 107 random bits, not the hash's cost, are what
/// make a leaked hash useless to a guesser.
pub fn hash_issued(password: &str) -> String {
    use base64::Engine as _;
    let b64 = &base64::engine::general_purpose::STANDARD_NO_PAD;
    let salt: [u8; 16] = rand::random();
    format!("{ISSUED_PREFIX}{}${}", b64.encode(salt), b64.encode(issued_mac(&salt, password.as_bytes())))
}

fn issued_mac(salt: &[u8], password: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(salt).expect("HMAC takes any key length");
    mac.update(password);
    mac.finalize().into_bytes().into()
}

/// Check a password against the token form; false for anything malformed.
fn verify_issued(password: &[u8], rest: &str) -> bool {
    use base64::Engine as _;
    let b64 = &base64::engine::general_purpose::STANDARD_NO_PAD;
    let Some((salt, mac)) = rest.split_once('$') else { return false };
    let (Ok(salt), Ok(mac)) = (b64.decode(salt), b64.decode(mac)) else { return false };
    if salt.len() != 16 || mac.len() != 32 {
        return false;
    }
    super::credentials::ct_eq(&issued_mac(&salt, password), &mac)
}

/// Whether a stored hash is the fast token form (verified in place, no hash slot needed).
pub fn is_issued_form(stored: &str) -> bool {
    stored.starts_with(ISSUED_PREFIX)
}

/// Result of checking a password against a stored hash.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    Ok,
    /// Correct, but the stored hash is a legacy format and should be replaced.
    OkNeedsRehash,
    Wrong,
}

pub fn verify(password: &str, stored: &str) -> Verified {
    if let Some(rest) = stored.strip_prefix(ISSUED_PREFIX) {
        return if verify_issued(password.as_bytes(), rest) { Verified::Ok } else { Verified::Wrong };
    }
    if let Some(crypt) = stored.strip_prefix("{SHA512-CRYPT}") {
        let ok = sha_crypt::ShaCrypt::default().verify_password(password.as_bytes(), crypt).is_ok();
        return if ok { Verified::OkNeedsRehash } else { Verified::Wrong };
    }
    let phc = stored.strip_prefix("{ARGON2ID}").unwrap_or(stored);
    if verify_argon2(password.as_bytes(), phc) { Verified::Ok } else { Verified::Wrong }
}

/// The check `Argon2::verify_password` makes (same parsing, constant-time comparison of the
/// outputs), computed in pooled memory.
fn verify_argon2(password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else { return false };
    let Ok(alg) = Algorithm::try_from(hash.algorithm.as_str()) else { return false };
    let Ok(version) = hash.version.map(Version::try_from).transpose() else { return false };
    let Ok(params) = Params::try_from(&hash) else { return false };
    let mut out = vec![0u8; expected.len()];
    if !compute(alg, version.unwrap_or_default(), params, password, salt.as_ref(), &mut out) {
        return false;
    }
    // `Output`'s equality is constant-time.
    Output::new(&out).is_ok_and(|computed| &computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_round_trip() {
        let h = hash("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify("correct horse battery", &h), Verified::Ok);
        assert_eq!(verify("wrong", &h), Verified::Wrong);
        assert_eq!(verify("x", "garbage"), Verified::Wrong);
    }

    /// Our pooled-memory hashing agrees with the argon2 crate's own API both ways, including
    /// hashes of another cost that are not pooled.
    #[test]
    fn agrees_with_the_argon2_crate() {
        use argon2::password_hash::PasswordHasher;
        let ours = hash("pw-1").expect("hash");
        assert!(Argon2::default().verify_password(b"pw-1", &PasswordHash::new(&ours).expect("phc")).is_ok());
        assert!(Argon2::default().verify_password(b"pw-2", &PasswordHash::new(&ours).expect("phc")).is_err());
        for (m, t, alg) in
            [(19_456, 2, Algorithm::Argon2id), (8_192, 3, Algorithm::Argon2id), (4_096, 1, Algorithm::Argon2i)]
        {
            let p = Params::new(m, t, 1, None).expect("params");
            let theirs = Argon2::new(alg, Version::V0x13, p)
                .hash_password_with_salt(b"pw-3", b"0123456789abcdef")
                .expect("hash")
                .to_string();
            assert_eq!(verify("pw-3", &theirs), Verified::Ok, "{theirs}");
            assert_eq!(verify("pw-4", &theirs), Verified::Wrong, "{theirs}");
            assert_eq!(verify("pw-3", &format!("{{ARGON2ID}}{theirs}")), Verified::Ok);
        }
        // Many hashes in a row reuse the kept memory and stay correct.
        for i in 0..3 {
            let h = hash(&format!("pw-{i}")).expect("hash");
            assert_eq!(verify(&format!("pw-{i}"), &h), Verified::Ok);
        }
        release_scratch();
        assert_eq!(verify("pw-1", &ours), Verified::Ok);
    }

    #[test]
    fn issued_round_trip() {
        let h = hash_issued("TokenTokenToken123");
        assert!(is_issued_form(&h), "{h}");
        assert_eq!(h.len(), ISSUED_PREFIX.len() + 22 + 1 + 43, "{h}");
        assert_ne!(h, hash_issued("TokenTokenToken123"), "salted");
        assert_eq!(verify("TokenTokenToken123", &h), Verified::Ok);
        assert_eq!(verify("TokenTokenToken124", &h), Verified::Wrong);
        assert_eq!(verify("", &h), Verified::Wrong);
        for bad in ["$chatrelay-t1$", "$chatrelay-t1$abc", "$chatrelay-t1$!!$!!", "$chatrelay-t1$AAAA$AAAA"] {
            assert_eq!(verify("x", bad), Verified::Wrong, "{bad}");
        }
        assert!(!is_issued_form(&hash("TokenTokenToken123").expect("hash")));
    }

    #[test]
    fn sha512_crypt_import() {
        // `openssl passwd -6 -salt saltsalt hunter2hunter2`
        let stored = "{SHA512-CRYPT}$6$saltsalt$yj/VLDgMjQCnRrAPBPKh5HRcgRfPSij0FYWRBJPofYcgCjjgCNa3CNbnWjuOFhRBFREybzjwmhkhe33hM4L6b1";
        assert_eq!(verify("hunter2hunter2", stored), Verified::OkNeedsRehash);
        assert_eq!(verify("hunter3hunter3", stored), Verified::Wrong);
    }
}
