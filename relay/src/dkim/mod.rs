//! DKIM: signing of everything that leaves (DLV-34..DLV-36) and strict verification on MX
//! ingress and `/mxdeliv` (SMTP-42..SMTP-44). Owned by the delivery work; the verifier below is
//! the hook the SMTP ingress pipeline calls.

use std::net::IpAddr;

use crate::config::Config;

/// The outcome of verifying an incoming message, mapped by the caller to its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkimVerdict {
    /// A signature verified and its `d=` equals the From domain.
    Pass,
    /// Skipped: address-literal From domain and the peer is that address (SMTP-44).
    Skipped,
    /// `554 5.7.1 No DKIM signature found`
    NoSignature,
    /// `554 5.7.1 No valid DKIM signature found`
    Invalid,
    /// `451 4.7.5 DKIM key lookup failed, try again later`
    TempFail,
}

pub struct Dkim {
    _private: (),
}

impl Dkim {
    pub fn new(_cfg: &Config) -> Self {
        Self { _private: () }
    }

    /// Verify `message` for a From domain `from_domain`, received from `peer`.
    /// Placeholder until the delivery issue lands: verification is not yet enforced.
    pub async fn verify(&self, _message: &[u8], _from_domain: &str, _peer: IpAddr) -> DkimVerdict {
        DkimVerdict::Pass
    }
}
