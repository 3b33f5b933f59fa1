//! Generated credentials for `/new` and the web page (ACC-4, ACC-5): random localpart and password
//! from the OS CSPRNG. Generating does not create the account; the first login does (ACC-6).

use rand::RngExt;

const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn draw(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| alphabet[rng.random_range(0..alphabet.len())] as char).collect()
}

pub fn localpart(len: usize) -> String {
    draw(LOWER_DIGITS, len)
}

pub fn password(min_len: usize) -> String {
    draw(ALNUM, (min_len + 3).max(20))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        let l = super::localpart(9);
        assert_eq!(l.len(), 9);
        assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let p = super::password(9);
        assert_eq!(p.len(), 20);
        assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(super::password(30).len(), 33);
        assert_ne!(super::localpart(9), super::localpart(9));
    }
}
