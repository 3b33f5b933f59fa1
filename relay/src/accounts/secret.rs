//! The keyed-hash secret (ACC-22, ACC-27): 32 random bytes in `data_dir/secret.key`, mode 0600,
//! created by `init` or on first start. It never leaves data_dir and is never logged (PRIV-5).

use std::io::Write;
use std::path::Path;

use hmac::{KeyInit, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub const FILE: &'static str = "secret.key";

    /// Read the secret, creating it if absent.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&b);
                Ok(Self(k))
            }
            Ok(_) => Err(std::io::Error::other(format!("{} is not a 32-byte key", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)?;
                let k: [u8; 32] = rand::random();
                let mut opts = std::fs::File::options();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&path)?;
                f.write_all(&k)?;
                f.sync_all()?;
                Ok(Self(k))
            }
            Err(e) => Err(e),
        }
    }

    /// HMAC-SHA256 over the parts, each length-prefixed so ("ab","c") != ("a","bc").
    pub fn keyed_hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// The tombstone of an address (ACC-27).
    pub fn tombstone(&self, address: &str) -> Vec<u8> {
        self.keyed_hash(&[b"tombstone", address.to_lowercase().as_bytes()]).to_vec()
    }
}
