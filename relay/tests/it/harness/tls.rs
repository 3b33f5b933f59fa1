//! TLS for the test clients: accept the relay's self-signed certificate.

#![allow(dead_code)]

use super::*;

// ---------------------------------------------------------------- TLS

/// Accepts any certificate: the test relays use self-signed ones.
#[derive(Debug)]
pub struct AcceptAny(pub(super) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn client_config(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_config_versions(rustls::DEFAULT_VERSIONS, alpn)
}

pub async fn tls_wrap<S: AsyncRead + AsyncWrite + Unpin>(s: S, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<S> {
    let connector = tokio_rustls::TlsConnector::from(client_config(alpn));
    let name = ServerName::try_from("chat.test").expect("name").to_owned();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, s))
        .await
        .expect("tls handshake timed out")
        .expect("tls handshake")
}
