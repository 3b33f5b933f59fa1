//! Password hashes: argon2id for everything new (ACC-19), `{SHA512-CRYPT}` accepted for imported
//! accounts and upgraded on first login (ACC-20). Pure and blocking: callers run these on a
//! blocking thread under the verification semaphore (ACC-21).

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed")]
    Hash,
}

fn argon2() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(19_456, 2, 1, None).map_err(|_| HashError::Hash)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A new argon2id PHC string with a random 16-byte salt.
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt: [u8; 16] = rand::random();
    argon2()?.hash_password_with_salt(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| HashError::Hash)
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
    if let Some(crypt) = stored.strip_prefix("{SHA512-CRYPT}") {
        let ok = sha_crypt::ShaCrypt::default().verify_password(password.as_bytes(), crypt).is_ok();
        return if ok { Verified::OkNeedsRehash } else { Verified::Wrong };
    }
    let phc = stored.strip_prefix("{ARGON2ID}").unwrap_or(stored);
    match Argon2::default().verify_password(password.as_bytes(), phc) {
        Ok(()) => Verified::Ok,
        Err(_) => Verified::Wrong,
    }
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

    #[test]
    fn sha512_crypt_import() {
        // `openssl passwd -6 -salt saltsalt hunter2hunter2`
        let stored = "{SHA512-CRYPT}$6$saltsalt$yj/VLDgMjQCnRrAPBPKh5HRcgRfPSij0FYWRBJPofYcgCjjgCNa3CNbnWjuOFhRBFREybzjwmhkhe33hM4L6b1";
        assert_eq!(verify("hunter2hunter2", stored), Verified::OkNeedsRehash);
        assert_eq!(verify("hunter3hunter3", stored), Verified::Wrong);
    }
}
