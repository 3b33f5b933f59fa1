//! Generated credentials for `/new` and the web page (ACC-4, ACC-5): random localpart and password
//! from the OS CSPRNG. Generating does not create the account; the first login does (ACC-6).
//!
//! A generated password is a relay-issued token (ACC-19a): a random part of at least
//! `RANDOM_LEN` base62 characters (≥ 107 bits) followed by a `TAG_LEN`-character tag, a MAC under
//! the ACC-22 secret over the address and the random part. At login the relay recomputes the tag
//! (one HMAC) to tell such a token from a password a person chose; only a token may be stored
//! with the fast hash (`password::hash_issued`).

use rand::RngExt;

use super::secret::Secret;

const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Random characters of a token at least: 18 × log2(62) ≈ 107 bits (ACC-19a asks ≥ 96).
pub const RANDOM_LEN: usize = 18;
/// Tag characters: 64 bits of the MAC in base62 (62^11 > 2^64). A guessed tag is right with
/// probability 2^-64, and a wrong one only means the password is hashed as user-chosen.
pub const TAG_LEN: usize = 11;

fn draw(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

pub fn localpart(len: usize) -> String {
    draw(LOWER_DIGITS, len)
}

/// A relay-issued password for `address`, at least `min_len + 3` characters (as before tokens).
pub fn password(secret: &Secret, address: &str, min_len: usize) -> String {
    let random_len = (min_len + 3).saturating_sub(TAG_LEN).max(RANDOM_LEN);
    let mut pw = draw(ALNUM, random_len);
    let tag = tag(secret, address, &pw);
    pw.push_str(&tag);
    pw
}

/// The tag of a random part: the first 8 bytes of HMAC(secret, "issued-v1", address, random) in
/// fixed-width base62. The address is lowercased as logins are.
fn tag(secret: &Secret, address: &str, random: &str) -> String {
    let mac = secret.keyed_hash(&[b"issued-v1", address.trim().to_lowercase().as_bytes(), random.as_bytes()]);
    let mut n = u64::from_be_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], mac[6], mac[7]]);
    let mut out = [b'0'; TAG_LEN];
    for c in out.iter_mut().rev() {
        *c = ALNUM[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// Whether `password` is a token this relay issued for `address` (ACC-19a). Cheap (one HMAC);
/// the tag comparison is constant-time. The shape check that comes first reveals only the
/// length and alphabet, which every token shares.
pub fn is_relay_issued(secret: &Secret, address: &str, password: &str) -> bool {
    let b = password.as_bytes();
    if b.len() < RANDOM_LEN + TAG_LEN || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (random, given) = password.split_at(b.len() - TAG_LEN);
    ct_eq(tag(secret, address, random).as_bytes(), given.as_bytes())
}

/// Constant-time equality of two byte strings of the same length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        let dir = tempfile::tempdir().expect("tempdir");
        Secret::load_or_create(dir.path()).expect("secret")
    }

    #[test]
    fn shapes() {
        let s = secret();
        let l = super::localpart(9);
        assert_eq!(l.len(), 9);
        assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let p = super::password(&s, "a@x.test", 9);
        assert_eq!(p.len(), RANDOM_LEN + TAG_LEN);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(super::password(&s, "a@x.test", 40).len(), 43);
        assert_ne!(super::localpart(9), super::localpart(9));
    }

    #[test]
    fn tokens_prove_themselves() {
        let (s, other) = (secret(), secret());
        for min in [0, 9, 40] {
            let p = password(&s, "a@x.test", min);
            assert!(is_relay_issued(&s, "a@x.test", &p));
            assert!(is_relay_issued(&s, " A@X.test", &p), "logins are lowercased");
            assert!(!is_relay_issued(&s, "b@x.test", &p), "bound to the address");
            assert!(!is_relay_issued(&other, "a@x.test", &p), "bound to the secret");
            // Any change of the random part or the tag breaks the proof.
            let mut bad = p.clone().into_bytes();
            bad[0] = if bad[0] == b'A' { b'B' } else { b'A' };
            assert!(!is_relay_issued(&s, "a@x.test", &String::from_utf8(bad).expect("ascii")));
            let mut bad = p.clone().into_bytes();
            let last = bad.len() - 1;
            bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
            assert!(!is_relay_issued(&s, "a@x.test", &String::from_utf8(bad).expect("ascii")));
            assert!(!is_relay_issued(&s, "a@x.test", &format!("{p}0")));
            assert!(!is_relay_issued(&s, "a@x.test", &p[1..]));
        }
        assert!(!is_relay_issued(&s, "a@x.test", "correct horse battery staple 1234"));
        assert!(!is_relay_issued(&s, "a@x.test", ""));
        assert!(!is_relay_issued(&s, "a@x.test", "ééééééééééééééééééééééééééééééé"));
    }
}
