//! Client TLS for outbound delivery (DLV-24..DLV-27): a verifying config (Mozilla roots plus
//! `delivery.extra_root_certs`) and an accept-any config for `_` and address-literal domains and
//! for `require_valid_tls = false`. TLS 1.2 and 1.3, ring provider, session resumption on.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client configs, built once per config generation.
#[derive(Clone)]
pub struct ClientTls {
    pub verified_smtp: Arc<ClientConfig>,
    pub verified_https: Arc<ClientConfig>,
    pub any_smtp: Arc<ClientConfig>,
    pub any_https: Arc<ClientConfig>,
}

impl ClientTls {
    pub fn new(extra_root_certs: &str) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if !extra_root_certs.trim().is_empty() {
            let pem = std::fs::read(extra_root_certs)
                .map_err(|e| format!("delivery.extra_root_certs {extra_root_certs}: {e}"))?;
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| format!("delivery.extra_root_certs {extra_root_certs}: {e}"))?;
                roots.add(cert).map_err(|e| format!("delivery.extra_root_certs {extra_root_certs}: {e}"))?;
            }
        }
        let roots = Arc::new(roots);
        let build = |any: bool, alpn: bool| -> Result<Arc<ClientConfig>, String> {
            let b = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?;
            let mut cfg = if any {
                b.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider()))).with_no_client_auth()
            } else {
                b.with_root_certificates(roots.clone()).with_no_client_auth()
            };
            if alpn {
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            }
            Ok(Arc::new(cfg))
        };
        Ok(Self {
            verified_smtp: build(false, false)?,
            verified_https: build(false, true)?,
            any_smtp: build(true, false)?,
            any_https: build(true, true)?,
        })
    }
}

/// Accepts any certificate but still checks the handshake signatures (TLS stays required).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS server name for a host: an IP literal or a DNS name.
pub fn server_name(host: &str, ip: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.trim_end_matches('.').to_string()).unwrap_or(ServerName::IpAddress(ip.into()))
}
