//! DKIM: signing of everything that leaves (DLV-34..DLV-36, `sign.rs`) and strict verification on
//! MX ingress and `/mxdeliv` (SMTP-42..SMTP-44, here).
//!
//! In: raw message bytes, the `From:` domain and the peer IP. Out: a `DkimVerdict` the caller maps
//! to its reply. Key lookups use `delivery.resolver` with a 60 s limit and the bounded
//! `cache::KeyCache`; a key that fails a verification is dropped from the cache. A SIGHUP that
//! changes `delivery.resolver` rebuilds the resolver (`reload`).

pub mod cache;
pub mod sign;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mail_auth::common::crypto::{Algorithm, HashAlgorithm};
use mail_auth::common::verify::DomainKey;
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt};
use tokio::sync::Semaphore;

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
    /// Bounds the verifications running at once (`verify_owned`).
    slots: Semaphore,
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
        if signer.as_ref().is_ok_and(|s| !s.signs()) {
            tracing::info!("dkim: no DKIM signature: mail_domain is an address literal; receivers check the address");
        }
        Self { auth, keys: cache::KeyCache::default(), signer, slots: Semaphore::new(CONCURRENT) }
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

    /// Verify `message` on a blocking thread (SMTP-43, issue 31): parsing, body and header hashing
    /// and the RSA check of a 30 MB message never run on an async worker, and at most
    /// `CONCURRENT` verifications run at once, so a flood of costly messages queues here instead
    /// of freezing every connection.
    pub async fn verify_owned(self: &Arc<Self>, message: Bytes, from_domain: String, peer: IpAddr) -> DkimVerdict {
        let Ok(_slot) = self.slots.acquire().await else { return DkimVerdict::TempFail };
        let me = self.clone();
        let rt = tokio::runtime::Handle::current();
        // Key lookups still run on the runtime's I/O driver; only this thread waits for them.
        tokio::task::spawn_blocking(move || rt.block_on(me.verify(&message, &from_domain, peer)))
            .await
            .unwrap_or(DkimVerdict::TempFail)
    }

    /// Verify `message` for a From domain `from_domain`, received from `peer`, on the calling
    /// task (tests and `verify_owned`).
    pub async fn verify(&self, message: &[u8], from_domain: &str, peer: IpAddr) -> DkimVerdict {
        // SMTP-44: an address-literal From domain is skipped only when the peer is that address.
        if let Some(lit) = from_domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let lit = lit.strip_prefix("IPv6:").or_else(|| lit.strip_prefix("ipv6:")).unwrap_or(lit);
            if lit.parse::<IpAddr>().is_ok_and(|ip| ip == peer || Some(ip) == canonical(peer)) {
                return DkimVerdict::Skipped;
            }
        }
        let Some(mut msg) = AuthenticatedMessage::parse(message) else {
            return DkimVerdict::NoSignature;
        };
        if msg.dkim_headers.is_empty() && !msg.has_dkim_errors {
            return DkimVerdict::NoSignature;
        }
        let present = msg.dkim_headers.len() + msg.errors.len();
        select(&mut msg, from_domain);
        if msg.dkim_headers.is_empty() {
            return DkimVerdict::Invalid;
        }
        let auth = self.auth();
        let Ok(auth) = auth.as_ref() else { return DkimVerdict::TempFail };
        let names: Vec<Box<str>> = msg.dkim_headers.iter().map(|h| key_name(&h.header).into()).collect();
        let cache = MsgCache { shared: &self.keys, seen: Mutex::new(vec![None; names.len()]), names };
        let params = Parameters::new(&msg).with_txt_cache(&cache);
        let Ok(outputs) = tokio::time::timeout(VERIFY_TIMEOUT, auth.verify_dkim(params)).await else {
            return DkimVerdict::TempFail;
        };
        let (mut temp, mut testing, mut seen) = (false, 0, 0);
        for out in &outputs {
            let Some(sig) = out.signature() else { continue };
            seen += 1;
            let key = cache.key_of(sig);
            // RFC 6376 3.6.1: a signer in testing mode is treated as if it had not signed.
            if key.as_ref().is_some_and(|k| k.f & FLAG_TESTING != 0) {
                testing += 1;
                continue;
            }
            match out.result() {
                DkimResult::Pass if key.as_ref().is_some_and(|k| strong_key(k, sig)) => return DkimVerdict::Pass,
                DkimResult::Pass => tracing::debug!("dkim: signature with a weak or unfit key ignored"),
                DkimResult::Fail(_) => self.keys.forget(&sig.s, &sig.d),
                DkimResult::TempError(_) => temp = true,
                _ => {}
            }
        }
        if temp {
            DkimVerdict::TempFail
        } else if seen > 0 && testing == seen && present == seen {
            DkimVerdict::NoSignature
        } else {
            DkimVerdict::Invalid
        }
    }
}

/// At most this many signatures are verified per message (issue 31: each costs a key lookup and
/// a header hash). Only signatures whose `d=` equals the From domain can make a message pass.
pub const MAX_SIGNATURES: usize = 3;
/// A signature naming more headers in `h=` is not verified (real signers list 5–30).
pub const MAX_SIGNED_HEADERS: usize = 64;
/// A signature whose signed header fields add up to more bytes than this is not verified.
pub const MAX_SIGNED_BYTES: usize = 256 * 1024;
/// RFC 8301 3.2: verifiers MUST NOT consider signatures with shorter RSA keys valid.
pub const MIN_RSA_BITS: usize = 1024;
/// Verifications running at once on blocking threads.
const CONCURRENT: usize = 2;
/// `t=y` in a key record (mail-auth keeps its flag type private).
const FLAG_TESTING: u64 = 0x10;

/// Keep only the signatures worth verifying, in message order: aligned with the From domain,
/// `rsa-sha256` or `ed25519-sha256` (RFC 8301 3.1: `rsa-sha1` is refused), `From` in `h=`
/// (RFC 6376 5.4), `h=` and the bytes it selects within bounds; at most `MAX_SIGNATURES`.
/// Report requests and third-party (ATPS) lookups are dropped: they would cost more DNS queries.
fn select(msg: &mut AuthenticatedMessage<'_>, from_domain: &str) {
    let index = header_index(msg);
    let mut dkim = std::mem::take(&mut msg.dkim_headers);
    dkim.retain(|h| {
        let s = &h.header;
        s.d.eq_ignore_ascii_case(from_domain)
            && s.a != Algorithm::RsaSha1
            && s.h.len() <= MAX_SIGNED_HEADERS
            && s.h.iter().any(|n| n.eq_ignore_ascii_case("from"))
            && signed_bytes(msg, &index, &s.h).saturating_add(h.value.len()) <= MAX_SIGNED_BYTES
    });
    dkim.truncate(MAX_SIGNATURES);
    for h in &mut dkim {
        h.header.r = false;
        h.header.atps = None;
    }
    msg.dkim_headers = dkim;
    msg.errors.clear();
}

/// Lowercased header name to the positions of its fields, in message order.
fn header_index(msg: &AuthenticatedMessage<'_>) -> HashMap<Vec<u8>, Vec<usize>> {
    let mut index: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (i, (name, _)) in msg.headers.iter().enumerate() {
        index.entry(name.to_ascii_lowercase()).or_default().push(i);
    }
    index
}

/// The bytes `h=` makes the verifier hash, counted in one pass (each name takes the next
/// unused field of that name from the bottom, RFC 6376 5.4.2).
fn signed_bytes(msg: &AuthenticatedMessage<'_>, index: &HashMap<Vec<u8>, Vec<usize>>, h: &[String]) -> usize {
    let mut used: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut total = 0usize;
    for name in h {
        let lower = name.as_bytes().to_ascii_lowercase();
        let Some(fields) = index.get(&lower) else { continue };
        let n = used.entry(lower).or_insert(0);
        if let Some(&i) = fields.len().checked_sub(*n + 1).and_then(|k| fields.get(k)) {
            let (name, value) = msg.headers.get(i).copied().unwrap_or_default();
            total = total.saturating_add(name.len() + value.len());
            *n += 1;
        }
    }
    total
}

/// RFC 8301: RSA keys of at least `MIN_RSA_BITS`; a key whose `h=` lists hash algorithms must
/// allow sha256 (the only one accepted).
fn strong_key(key: &DomainKey, sig: &mail_auth::dkim::Signature) -> bool {
    let rsa_ok = sig.a != Algorithm::RsaSha256 || key.p.public_key_bits() >= MIN_RSA_BITS;
    let hashes = key.f & (u64::from(HashAlgorithm::Sha1) | u64::from(HashAlgorithm::Sha256));
    rsa_ok && (hashes == 0 || key.has_flag(HashAlgorithm::Sha256))
}

/// The DNS name mail-auth looks a signature's key up under.
fn key_name(sig: &mail_auth::dkim::Signature) -> String {
    format!("{}._domainkey.{}.", sig.s, sig.d)
}

/// The shared key cache as seen by one verification: it also keeps the records this message's
/// signatures resolved to, so the verdict can check the key (size, `t=`, `h=`).
struct MsgCache<'a> {
    shared: &'a cache::KeyCache,
    names: Vec<Box<str>>,
    seen: Mutex<Vec<Option<Txt>>>,
}

impl MsgCache<'_> {
    fn note(&self, is: impl Fn(&Box<str>) -> bool, v: &Txt) {
        if let Ok(mut seen) = self.seen.lock() {
            for (slot, n) in seen.iter_mut().zip(&self.names) {
                if is(n) {
                    *slot = Some(v.clone());
                }
            }
        }
    }

    fn key_of(&self, sig: &mail_auth::dkim::Signature) -> Option<Arc<DomainKey>> {
        let name = key_name(sig);
        let seen = self.seen.lock().ok()?;
        seen.iter().zip(&self.names).find_map(|(v, n)| match v {
            Some(Txt::DomainKey(k)) if **n == *name => Some(k.clone()),
            _ => None,
        })
    }
}

impl ResolverCache<Box<str>, Txt> for MsgCache<'_> {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let v = self.shared.get(name)?;
        self.note(|n| <Box<str> as Borrow<Q>>::borrow(n) == name, &v);
        Some(v)
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shared.remove(name)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        self.note(|n| *n == key, &value);
        self.shared.insert(key, value, valid_until);
    }
}

/// An IPv4-mapped IPv6 peer compared as IPv4.
fn canonical(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}
