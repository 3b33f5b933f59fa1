//! Certificate sources and the resolver rustls asks on every handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;
use crate::config::{Config, TlsMode};

/// `files` mode: the cert and key paths with their modification times at the last load.
type WatchedFiles = (PathBuf, PathBuf, Option<SystemTime>, Option<SystemTime>);

#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    /// For `files` mode: the files and their modification times at the last load.
    files: RwLock<Option<WatchedFiles>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Generate the self-signed pair once and reuse it (OPS-5).
pub fn ensure_self_signed(data_dir: &Path, domain: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert, key) = self_signed_paths(data_dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir)?;
    let names = vec![domain.to_string(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
    let ck = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Cert(e.to_string()))?;
    write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, ck.cert.pem())?;
    Ok((cert, key))
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::File::options();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Load a PEM chain and key and check that they belong together.
pub fn load_pem_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = std::fs::read(cert)?;
    let key_pem = std::fs::read(key)?;
    pem_pair(&cert_pem, &key_pem, &cert.display().to_string(), &key.display().to_string())
}

/// `load_pem_pair` for PEM held in memory (the shared certificate, issue 27); `cert_name` and
/// `key_name` say where it came from in errors.
pub fn pem_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(format!("{cert_name}: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Cert(format!("{cert_name}: no certificate found")));
    }
    let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| TlsError::Cert(format!("{key_name}: {e}")))?
        .ok_or_else(|| TlsError::Cert(format!("{key_name}: no private key found")))?;
    let signer = any_supported_type(&key_der).map_err(|e| TlsError::Cert(format!("{key_name}: {e}")))?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match().map_err(|e| TlsError::Cert(format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(ck))
}

/// The `notAfter` (Unix seconds) of the first certificate of a PEM chain.
pub fn pem_not_after(cert_pem: &[u8]) -> Option<i64> {
    let first = rustls_pemfile::certs(&mut &cert_pem[..]).next()?.ok()?;
    let t = super::acme::not_after(first.as_ref())?;
    i64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs()).ok()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl CertStore {
    pub fn open(cfg: &Config) -> Result<Self, TlsError> {
        let (cert, key) = match cfg.tls.mode {
            TlsMode::Files => (cfg.tls.cert.clone(), cfg.tls.key.clone()),
            // ACME serves a temporary self-signed certificate until the first one exists (OPS-3).
            TlsMode::SelfSigned | TlsMode::Acme => ensure_self_signed(&cfg.data_dir, &cfg.mail_domain)?,
        };
        let ck = load_pem_pair(&cert, &key)?;
        let files = (cfg.tls.mode == TlsMode::Files).then(|| (cert.clone(), key.clone(), mtime(&cert), mtime(&key)));
        Ok(Self { current: RwLock::new(ck), files: RwLock::new(files) })
    }

    /// Replace the served certificate (ACME renewals, reloads).
    pub fn set(&self, ck: Arc<CertifiedKey>) {
        if let Ok(mut g) = self.current.write() {
            *g = ck;
        }
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }

    /// Reload `files` mode from disk. Returns whether a new pair was installed.
    pub fn reload(&self, cfg: &Config) -> Result<bool, TlsError> {
        if cfg.tls.mode != TlsMode::Files {
            return Ok(false);
        }
        let ck = load_pem_pair(&cfg.tls.cert, &cfg.tls.key)?;
        self.set(ck);
        if let Ok(mut f) = self.files.write() {
            *f = Some((cfg.tls.cert.clone(), cfg.tls.key.clone(), mtime(&cfg.tls.cert), mtime(&cfg.tls.key)));
        }
        Ok(true)
    }

    /// Whether the files changed since the last load (polled every 60 s, OPS-4).
    pub fn files_changed(&self) -> bool {
        let Ok(g) = self.files.read() else { return false };
        match &*g {
            Some((c, k, mc, mk)) => mtime(c) != *mc || mtime(k) != *mk,
            None => false,
        }
    }
}
