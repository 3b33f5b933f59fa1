//! TLS: certificate sources (self-signed, files, later ACME) behind one reloadable resolver, and
//! the rustls server configs each listener uses.
//!
//! In: `[tls]` config and `data_dir`. Out: `TlsAcceptor`s per profile; `reload()` swaps the
//! certificate for new connections on every listener at once (OPS-6).
//! Rules: ring is the only crypto provider (DEP-2); SMTP submission and IMAP require TLS 1.3
//! (SMTP-2, IMAP-1); an unknown ALPN offer never aborts a STARTTLS handshake or one on 443
//! (SMTP-10, HTTP-2). On the implicit-TLS ports 993 and 465 `tls.strict_alpn` (default on, issue
//! 28) refuses a ClientHello whose ALPN offer lacks `imap` resp. `smtp` with
//! `no_application_protocol`, against cross-protocol attacks (ALPACA); no ALPN still works (IMAP-4).

pub mod acme;
mod certs;
mod stream;

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::ring;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TlsMode};

pub use certs::{CertStore, load_pem_pair, pem_not_after, pem_pair, self_signed_paths};
pub use stream::MaybeTls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate files: {0}")]
    Io(#[from] std::io::Error),
    #[error("certificate: {0}")]
    Cert(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What a listener needs from TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// MX ingress: TLS 1.2 and 1.3 (SMTP-1).
    Mx,
    /// Submission and IMAP after STARTTLS: TLS 1.3 only.
    Strict,
    /// Port 993: TLS 1.3 only; with `tls.strict_alpn` an ALPN offer must include `imap`.
    Imaps,
    /// Port 465: TLS 1.3 only; with `tls.strict_alpn` an ALPN offer must include `smtp`.
    Submissions,
    /// HTTPS: TLS 1.2 and 1.3, ALPN h2/http1.1.
    Https,
}

/// Where a port-443 connection goes, chosen from the ClientHello's ALPN offer (HTTP-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn443 {
    Https,
    /// No ALPN offered, or only protocols we do not know: HTTPS without ALPN.
    HttpsNoAlpn,
    Imap,
    Smtp,
}

#[derive(Clone)]
pub struct Tls {
    certs: Arc<CertStore>,
    mx: TlsAcceptor,
    strict: TlsAcceptor,
    imaps: TlsAcceptor,
    submissions: TlsAcceptor,
    https: TlsAcceptor,
    https_no_alpn: Arc<ServerConfig>,
    https_alpn: Arc<ServerConfig>,
    alpn_imap: Arc<ServerConfig>,
    alpn_smtp: Arc<ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn build(
    certs: &Arc<CertStore>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    cfg.max_early_data_size = 0;
    // Session tickets keep reconnects cheap (P2'); the ticketer rotates its own keys.
    if let Ok(t) = ring::Ticketer::new() {
        cfg.ticketer = t;
    }
    Ok(Arc::new(cfg))
}

impl Tls {
    pub fn new(cfg: &Config) -> Result<Self, TlsError> {
        let certs = Arc::new(CertStore::open(cfg)?);
        let both = &[&rustls::version::TLS13, &rustls::version::TLS12][..];
        let only13 = &[&rustls::version::TLS13][..];
        // rustls refuses a ClientHello whose ALPN list shares nothing with a non-empty server list
        // (`no_application_protocol`) and ignores ALPN when the server list is empty; a client
        // that offers no ALPN gets through either way.
        let (imaps_alpn, smtps_alpn): (&[&[u8]], &[&[u8]]) =
            if cfg.tls.strict_alpn { (&[b"imap"], &[b"smtp"]) } else { (&[], &[]) };
        Ok(Self {
            mx: TlsAcceptor::from(build(&certs, both, &[])?),
            strict: TlsAcceptor::from(build(&certs, only13, &[])?),
            imaps: TlsAcceptor::from(build(&certs, only13, imaps_alpn)?),
            submissions: TlsAcceptor::from(build(&certs, only13, smtps_alpn)?),
            https: TlsAcceptor::from(build(&certs, both, &[b"h2", b"http/1.1"])?),
            https_no_alpn: build(&certs, both, &[])?,
            https_alpn: build(&certs, both, &[b"h2", b"http/1.1"])?,
            alpn_imap: build(&certs, only13, &[b"imap"])?,
            alpn_smtp: build(&certs, only13, &[b"smtp"])?,
            certs,
        })
    }

    pub fn acceptor(&self, p: Profile) -> &TlsAcceptor {
        match p {
            Profile::Mx => &self.mx,
            Profile::Strict => &self.strict,
            Profile::Imaps => &self.imaps,
            Profile::Submissions => &self.submissions,
            Profile::Https => &self.https,
        }
    }

    /// For port 443 when the client offered no ALPN we know: serve HTTPS without ALPN so the
    /// handshake never fails with `no_application_protocol` (HTTP-2).
    pub fn https_config_without_alpn(&self) -> Arc<ServerConfig> {
        self.https_no_alpn.clone()
    }

    /// For port 443 after peeking the ClientHello (HTTP-2, HTTP-3): HTTPS with ALPN h2/http1.1
    /// (TLS 1.2+), or TLS 1.3 only with ALPN `imap` / `smtp` for the mail protocols.
    pub fn port443_config(&self, route: Alpn443) -> Arc<ServerConfig> {
        match route {
            Alpn443::Https => self.https_alpn.clone(),
            Alpn443::HttpsNoAlpn => self.https_no_alpn.clone(),
            Alpn443::Imap => self.alpn_imap.clone(),
            Alpn443::Smtp => self.alpn_smtp.clone(),
        }
    }

    pub fn certs(&self) -> &Arc<CertStore> {
        &self.certs
    }

    /// Reload certificate files (SIGHUP, file change). The old pair stays on error (OPS-4).
    pub fn reload(&self, cfg: &Config) -> Result<bool, TlsError> {
        self.certs.reload(cfg)
    }

    /// The PEM of the served certificate chain (tests and `init` print it).
    pub fn mode(cfg: &Config) -> TlsMode {
        cfg.tls.mode
    }
}

/// Ensure the self-signed pair exists under `data_dir` (used by `init` and `serve`).
pub fn ensure_self_signed(data_dir: &Path, domain: &str) -> Result<(), TlsError> {
    certs::ensure_self_signed(data_dir, domain).map(|_| ())
}
