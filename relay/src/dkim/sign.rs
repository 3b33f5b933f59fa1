//! DKIM signing of everything that leaves (DLV-34..DLV-36): `d=<mail_domain>`,
//! `s=<dkim.selector>`, rsa-sha256, relaxed/simple, a fixed header list with oversigning.
//! An IP-only relay (`mail_domain` an address literal) has no domain to sign for: its mail
//! leaves unsigned and receivers check the connecting address instead (smtp.md SMTP-44).

use std::path::Path;
use std::sync::Arc;

use mail_auth::common::crypto::{Algorithm, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner};

/// DLV-36: headers signed when present.
const SIGNED: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Autocrypt",
    "Chat-Version",
    "Secure-Join",
    "Auto-Submitted",
];

/// DLV-36: listed once more than they occur, so none can be added after signing.
const OVERSIGNED: &[&str] = &["From", "Reply-To", "Subject", "Date", "To", "Cc", "Content-Type", "Autocrypt"];

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("dkim key {0}: {1}")]
    Key(String, String),
    #[error("dkim signing failed: {0}")]
    Sign(String),
}

/// The key shared by every signing call (mail-auth's signer takes its key by value).
#[derive(Clone)]
struct SharedKey(Arc<RsaKey<Sha256>>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;
    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }
    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaSha256
    }
}

#[derive(Clone)]
pub struct Signer {
    key: SharedKey,
    /// SubjectPublicKeyInfo DER, for the `p=` value of the DNS record.
    spki: Arc<Vec<u8>>,
    domain: String,
    selector: String,
}

impl Signer {
    /// Load an RSA key (PKCS#8 or PKCS#1 PEM).
    pub fn load(path: &Path, domain: &str, selector: &str) -> Result<Self, SignError> {
        let pem = std::fs::read(path).map_err(|e| SignError::Key(path.display().to_string(), e.to_string()))?;
        Self::from_pem(&pem, domain, selector).map_err(|e| match e {
            SignError::Key(_, m) => SignError::Key(path.display().to_string(), m),
            other => other,
        })
    }

    pub fn from_pem(pem: &[u8], domain: &str, selector: &str) -> Result<Self, SignError> {
        let der = rustls_pemfile::private_key(&mut &pem[..])
            .map_err(|e| SignError::Key(String::new(), e.to_string()))?
            .ok_or_else(|| SignError::Key(String::new(), "no private key in PEM".into()))?;
        let spki = spki_of(der.secret_der()).map_err(|e| SignError::Key(String::new(), e))?;
        let key = RsaKey::<Sha256>::from_key_der(der).map_err(|e| SignError::Key(String::new(), e.to_string()))?;
        Ok(Self {
            key: SharedKey(Arc::new(key)),
            spki: Arc::new(spki),
            domain: domain.to_string(),
            selector: selector.to_string(),
        })
    }

    /// The `DKIM-Signature` header (with CRLF) to prepend to `message`.
    pub fn header(&self, message: &[u8]) -> Result<String, SignError> {
        let present = header_names(message);
        let mut h: Vec<&str> =
            SIGNED.iter().copied().filter(|n| present.iter().any(|p| p.eq_ignore_ascii_case(n))).collect();
        // mail-auth signs every occurrence of a listed header and appends each listed name that
        // matched nothing; a second entry of a name never matches, so it adds the one extra.
        h.extend_from_slice(OVERSIGNED);
        let signer = DkimSigner::from_key(self.key.clone())
            .domain(self.domain.clone())
            .selector(self.selector.clone())
            .headers(h)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Simple);
        let sig = signer.sign(message).map_err(|e| SignError::Sign(e.to_string()))?;
        Ok(sig.to_header())
    }

    /// False when `mail_domain` is an address literal: no DNS holds a key for it, so a
    /// signature could never verify (issue 29).
    pub fn signs(&self) -> bool {
        !self.domain.starts_with('[')
    }

    /// `message` with the signature prepended (unchanged when `signs()` is false).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        if !self.signs() {
            return Ok(message.to_vec());
        }
        let h = self.header(message)?;
        let mut out = Vec::with_capacity(h.len() + message.len());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(message);
        Ok(out)
    }

    /// The public key as the base64 `p=` value of the DNS record.
    pub fn public_key_b64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.spki.as_slice())
    }
}

fn spki_of(der: &[u8]) -> Result<Vec<u8>, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_der(der))
        .map_err(|e| e.to_string())?;
    let spki = rsa::RsaPublicKey::from(&key).to_public_key_der().map_err(|e| e.to_string())?;
    Ok(spki.as_bytes().to_vec())
}

/// Names of the header fields of `message` (up to the first empty line).
fn header_names(message: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue;
        }
        if let Some(i) = line.iter().position(|&b| b == b':') {
            names.push(String::from_utf8_lossy(&line[..i]).trim().to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_literal_domain_is_not_signed() {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).expect("rsa");
        let pem = key.to_pkcs8_pem(LineEnding::LF).expect("pem").to_string();
        let msg = b"From: <a@[127.0.0.2]>\r\nTo: <b@x.test>\r\n\r\nhi\r\n";
        let lit = Signer::from_pem(pem.as_bytes(), "[127.0.0.2]", "dkim").expect("key");
        assert!(!lit.signs());
        assert_eq!(lit.sign(msg).expect("unchanged"), msg.to_vec());
        let dom = Signer::from_pem(pem.as_bytes(), "x.test", "dkim").expect("key");
        assert!(dom.sign(msg).expect("signed").starts_with(b"DKIM-Signature:"));
    }
}
