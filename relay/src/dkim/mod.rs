//! DKIM: signing of everything that leaves (DLV-34..DLV-36, `sign.rs`) and strict verification on
//! MX ingress and `/mxdeliv` (SMTP-42..SMTP-44, here).
//!
//! In: raw message bytes, the `From:` domain and the peer IP. Out: a `DkimVerdict` the caller maps
//! to its reply. Key lookups use `delivery.resolver` with a 60 s limit and the bounded
//! `cache::KeyCache`; a key that fails a verification is dropped from the cache. A SIGHUP that
//! changes `delivery.resolver` rebuilds the resolver (`reload`).

pub mod cache;
pub mod sign;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters};

use crate::config::Config;
pub use sign::{SignError, Signer};

/// SMTP-43: the whole verification (all key lookups) must finish within this.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

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

type Auth = Arc<Result<MessageAuthenticator, String>>;

pub struct Dkim {
    /// The `delivery.resolver` it was built from, and the authenticator (cloned per verification,
    /// so a reload never waits for one in progress).
    auth: Mutex<(String, Auth)>,
    keys: cache::KeyCache,
    signer: Result<Signer, String>,
}

fn build_auth(resolver: &str) -> Auth {
    let auth = crate::outbound::dns::build(resolver, Duration::from_secs(10), false).map(MessageAuthenticator);
    if let Err(e) = &auth {
        tracing::error!(error = %e, "dkim: no DNS resolver; incoming mail will be deferred");
    }
    Arc::new(auth)
}

impl Dkim {
    pub fn new(cfg: &Config) -> Self {
        let auth = Mutex::new((cfg.delivery.resolver.clone(), build_auth(&cfg.delivery.resolver)));
        let path = cfg.dkim.key.clone().unwrap_or_else(|| crate::outbound::dkim_key::default_path(&cfg.data_dir));
        let signer = Signer::load(&path, &cfg.mail_domain, &cfg.dkim.selector).map_err(|e| e.to_string());
        if let Err(e) = &signer {
            tracing::error!(error = %e, "dkim: signing key unusable; outbound mail waits in the queue");
        }
        Self { auth, keys: cache::KeyCache::default(), signer }
    }

    /// SIGHUP: use the reloaded config's `delivery.resolver` if it changed.
    pub fn reload(&self, cfg: &Config) {
        let mut g = match self.auth.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.0 != cfg.delivery.resolver {
            *g = (cfg.delivery.resolver.clone(), build_auth(&cfg.delivery.resolver));
            tracing::info!("dkim: resolver reloaded");
        }
    }

    fn auth(&self) -> Auth {
        match self.auth.lock() {
            Ok(g) => g.1.clone(),
            Err(p) => p.into_inner().1.clone(),
        }
    }

    /// The signer for outbound mail and bounces.
    pub fn signer(&self) -> Result<&Signer, &str> {
        self.signer.as_ref().map_err(|e| e.as_str())
    }

    /// Number of cached keys (for tests and metrics).
    pub fn cached_keys(&self) -> usize {
        self.keys.len()
    }

    /// Verify `message` for a From domain `from_domain`, received from `peer`.
    pub async fn verify(&self, message: &[u8], from_domain: &str, peer: IpAddr) -> DkimVerdict {
        // SMTP-44: an address-literal From domain is skipped only when the peer is that address.
        if let Some(lit) = from_domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let lit = lit.strip_prefix("IPv6:").or_else(|| lit.strip_prefix("ipv6:")).unwrap_or(lit);
            if lit.parse::<IpAddr>().is_ok_and(|ip| ip == peer || Some(ip) == canonical(peer)) {
                return DkimVerdict::Skipped;
            }
        }
        let Some(msg) = AuthenticatedMessage::parse(message) else {
            return DkimVerdict::NoSignature;
        };
        if msg.dkim_headers.is_empty() && !msg.has_dkim_errors {
            return DkimVerdict::NoSignature;
        }
        let auth = self.auth();
        let Ok(auth) = auth.as_ref() else { return DkimVerdict::TempFail };
        let params = Parameters::new(&msg).with_txt_cache(&self.keys);
        let Ok(outputs) = tokio::time::timeout(VERIFY_TIMEOUT, auth.verify_dkim(params)).await else {
            return DkimVerdict::TempFail;
        };
        let mut temp = false;
        for out in &outputs {
            let Some(sig) = out.signature() else { continue };
            let aligned = sig.d.eq_ignore_ascii_case(from_domain);
            match out.result() {
                DkimResult::Pass if aligned => return DkimVerdict::Pass,
                DkimResult::Fail(_) => self.keys.forget(&sig.s, &sig.d),
                DkimResult::TempError(_) if aligned => temp = true,
                _ => {}
            }
        }
        if temp { DkimVerdict::TempFail } else { DkimVerdict::Invalid }
    }
}

/// An IPv4-mapped IPv6 peer compared as IPv4.
fn canonical(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}
