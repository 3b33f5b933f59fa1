//! The DKIM signing key (DLV-35): `dkim.key` when set, else `data_dir/dkim.pem`, created on first
//! start as a 2048-bit RSA key.

use std::path::{Path, PathBuf};

use rsa::pkcs8::{EncodePrivateKey, LineEnding};

#[derive(Debug, thiserror::Error)]
pub enum DkimKeyError {
    #[error("dkim key {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("dkim key generation failed: {0}")]
    Generate(String),
}

pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dkim.pem")
}

/// Create the key file if it does not exist. Returns whether a key was generated.
pub fn ensure(path: &Path) -> Result<bool, DkimKeyError> {
    if path.exists() {
        return Ok(false);
    }
    let mut rng = rsa::rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| DkimKeyError::Generate(e.to_string()))?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| DkimKeyError::Generate(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DkimKeyError::Io(path.to_path_buf(), e))?;
    }
    let mut opts = std::fs::File::options();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    let mut f = opts.open(path).map_err(|e| DkimKeyError::Io(path.to_path_buf(), e))?;
    f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| DkimKeyError::Io(path.to_path_buf(), e))?;
    Ok(true)
}
