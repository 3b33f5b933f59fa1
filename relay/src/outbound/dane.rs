//! DANE for outbound SMTP (RFC 7672, issue 29).
//!
//! Before connecting to an MX host, its TLSA records `_<port>._tcp.<host>` are looked up through a
//! DNSSEC-validating resolver (hickory, ring). Only a TLSA RRset that validates as Secure counts:
//! then TLS is mandatory and the server's certificate must match one usable record — DANE-EE
//! (usage 3: the end-entity certificate or its public key, names and dates not checked, RFC 7672
//! 3.1.1) or DANE-TA (usage 2: a certificate of the presented chain is the trust anchor, and the
//! chain must validate up to it for the MX host name, 3.1.2). PKIX usages 0 and 1 are unusable for
//! SMTP (3.1.3). A failed match is a TLS failure: the host is skipped and the message deferred,
//! never bounced at once and never sent in clear. DANE applies instead of MTA-STS for that host
//! (RFC 8461 2). A TLSA answer that fails validation (Bogus) makes the host unusable; no TLSA,
//! an insecure (unsigned) answer, or a lookup failure leaves today's behaviour.
//!
//! The seam: `lookup` (DNS) → `Tlsa` records → `verifier` (a rustls config); the matching is
//! `matches`, testable without DNS.

use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{RData, RecordType};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::Digest;

/// One usable TLSA record (RFC 6698 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// 2 = DANE-TA, 3 = DANE-EE.
    pub usage: u8,
    /// 0 = whole certificate, 1 = SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0 = exact, 1 = SHA-256, 2 = SHA-512.
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Only DANE-TA and DANE-EE with known selectors and matching types are usable (RFC 7672 3.1).
    pub fn usable(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Option<Self> {
        ((usage == 2 || usage == 3) && selector <= 1 && matching <= 2 && !data.is_empty()).then_some(Self {
            usage,
            selector,
            matching,
            data,
        })
    }

    /// Whether `cert` (DER) matches this record's selector and matching type.
    pub fn matches(&self, cert: &[u8]) -> bool {
        let selected = match self.selector {
            0 => cert,
            _ => match spki(cert) {
                Some(s) => s,
                None => return false,
            },
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => sha2::Sha256::digest(selected).as_slice() == self.data.as_slice(),
            _ => sha2::Sha512::digest(selected).as_slice() == self.data.as_slice(),
        }
    }
}

/// What the TLSA lookup for one MX host decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dane {
    /// No validated TLSA records (none, unsigned zone, lookup failure): today's behaviour.
    None,
    /// Validated, usable TLSA records: TLS mandatory, the certificate must match one.
    Records(Vec<Tlsa>),
    /// TLSA records that fail DNSSEC validation: this host must not be used (RFC 7672 2.2).
    Unusable(String),
}

/// The TLSA records of `_<port>._tcp.<host>`, validated by `dnssec`; `plain` (the ordinary
/// resolver) tells, when validation fails, whether there are records at all.
pub async fn lookup(dnssec: &TokioResolver, plain: &TokioResolver, host: &str, port: u16) -> Dane {
    use hickory_resolver::net::{DnsError, NetError};
    let name = format!("_{port}._tcp.{}.", host.trim_end_matches('.'));
    let lookup = match dnssec.lookup(name.as_str(), RecordType::TLSA).await {
        Ok(l) => l,
        // hickory reports both a forged or broken answer and a denial it cannot prove (no
        // NSEC) as Bogus. Records that exist but do not validate make the host unusable (RFC
        // 7672 2.2); no records at all is no DANE.
        Err(NetError::Dns(DnsError::DnssecBogus)) => {
            let exists = plain
                .lookup(name.as_str(), RecordType::TLSA)
                .await
                .is_ok_and(|l| l.answers().iter().any(|r| matches!(r.data, RData::TLSA(_))));
            if exists {
                return Dane::Unusable(format!("TLSA records for {host} fail DNSSEC validation"));
            }
            return Dane::None;
        }
        Err(e) => {
            tracing::debug!(host = %host, error = %e, "dane: no TLSA records");
            return Dane::None;
        }
    };
    let mut records = Vec::new();
    let (mut secure, mut bogus) = (0usize, 0usize);
    for r in lookup.answers() {
        let RData::TLSA(t) = &r.data else { continue };
        match r.proof {
            Proof::Secure => secure += 1,
            Proof::Bogus => bogus += 1,
            _ => {}
        }
        if r.proof == Proof::Secure
            && let Some(t) =
                Tlsa::usable(t.cert_usage.into(), t.selector.into(), t.matching.into(), t.cert_data.clone())
        {
            records.push(t);
        }
    }
    if bogus > 0 {
        return Dane::Unusable(format!("TLSA records for {host} fail DNSSEC validation"));
    }
    if secure == 0 {
        // Unsigned: DANE needs DNSSEC; this is an ordinary host.
        return Dane::None;
    }
    if records.is_empty() {
        // RFC 7672 2.2: a secure TLSA RRset with no usable record still means "TLS required", which
        // delivery always requires anyway.
        return Dane::None;
    }
    Dane::Records(records)
}

/// A client config that accepts exactly the certificates the records allow, for `alpn`.
pub fn config(records: Vec<Tlsa>, alpn: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(DaneVerifier { records, provider: provider.clone() });
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    if alpn {
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct DaneVerifier {
    records: Vec<Tlsa>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // DANE-EE: the end-entity certificate itself; name and validity are not checked.
        if self.records.iter().any(|r| r.usage == 3 && r.matches(end_entity)) {
            return Ok(ServerCertVerified::assertion());
        }
        // DANE-TA: a certificate of the presented chain is the anchor; the chain must be valid
        // up to it for the MX host name.
        for ta in intermediates.iter().filter(|c| self.records.iter().any(|r| r.usage == 2 && r.matches(c))) {
            let mut roots = RootCertStore::empty();
            if roots.add(ta.clone()).is_err() {
                continue;
            }
            let Ok(v) = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone()).build()
            else {
                continue;
            };
            if v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).is_ok() {
                return Ok(ServerCertVerified::assertion());
            }
        }
        Err(rustls::Error::General("certificate does not match the DANE TLSA records".into()))
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// One DER element at the start of `b`: (tag, content, rest). Definite lengths only.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (first as usize, b)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        (b[..n].iter().fold(0usize, |a, x| (a << 8) | *x as usize), &b[n..])
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The DER SubjectPublicKeyInfo of an X.509 certificate (selector 1).
pub fn spki(cert: &[u8]) -> Option<&[u8]> {
    let (0x30, cert, _) = der(cert)? else { return None };
    let (0x30, tbs, _) = der(cert)? else { return None };
    let mut rest = tbs;
    // version [0] is optional; then serial, signature, issuer, validity, subject.
    if rest.first() == Some(&0xa0) {
        rest = der(rest)?.2;
    }
    for _ in 0..5 {
        rest = der(rest)?.2;
    }
    let start = rest;
    let (0x30, _, after) = der(rest)? else { return None };
    Some(&start[..start.len() - after.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ee_records_match_certificate_and_key() {
        let ck = rcgen::generate_simple_self_signed(vec!["mx.dane.test".to_string()]).expect("cert");
        let der = ck.cert.der().to_vec();
        let spki_der = rcgen::PublicKeyData::subject_public_key_info(&ck.signing_key);
        assert_eq!(spki(&der), Some(spki_der.as_slice()));
        let sha256 = |b: &[u8]| sha2::Sha256::digest(b).to_vec();
        let sha512 = |b: &[u8]| sha2::Sha512::digest(b).to_vec();
        for t in [
            Tlsa::usable(3, 1, 1, sha256(&spki_der)),
            Tlsa::usable(3, 0, 1, sha256(&der)),
            Tlsa::usable(3, 1, 2, sha512(&spki_der)),
            Tlsa::usable(3, 0, 0, der.clone()),
        ] {
            assert!(t.expect("usable").matches(&der));
        }
        let other = rcgen::generate_simple_self_signed(vec!["mx.dane.test".to_string()]).expect("cert");
        assert!(!Tlsa::usable(3, 1, 1, sha256(&spki_der)).expect("usable").matches(other.cert.der()));
        // PKIX usages and unknown types are not usable for SMTP.
        assert!(Tlsa::usable(1, 1, 1, sha256(&spki_der)).is_none());
        assert!(Tlsa::usable(3, 2, 1, sha256(&spki_der)).is_none());
        assert!(spki(b"\x30\x03\x30\x01").is_none());
        assert!(spki(b"").is_none());
    }
}
