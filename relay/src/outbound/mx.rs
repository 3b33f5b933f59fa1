//! MX resolution (DLV-10..DLV-17): hosts sorted by preference (equal preference shuffled), each
//! host's AAAA then A addresses; null MX, NXDOMAIN, implicit MX, DNS failure, address literals.

use std::net::IpAddr;

use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::RData;
use rand::seq::SliceRandom;

use super::dns::{LookupFailure, classify};
use super::reply;

/// One MX host and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Host name without the trailing dot, or the literal for address-literal domains.
    pub name: String,
    /// Known addresses; empty means "resolve `name` at connect time".
    pub addrs: Vec<IpAddr>,
}

/// A resolution failure, already in its reply text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxError {
    Permanent(String),
    Temporary(String),
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` as an address.
pub fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.strip_prefix("IPv6:").or_else(|| inner.strip_prefix("ipv6:")).unwrap_or(inner);
    inner.parse().ok()
}

pub async fn resolve(resolver: &TokioResolver, domain: &str) -> Result<Vec<MxHost>, MxError> {
    if let Some(ip) = address_literal(domain) {
        return Ok(vec![MxHost { name: ip.to_string(), addrs: vec![ip] }]);
    }
    let fqdn = format!("{}.", domain.trim_end_matches('.'));
    let lookup = match resolver.mx_lookup(fqdn.as_str()).await {
        Ok(l) => l,
        Err(e) => {
            return match classify(&e) {
                LookupFailure::NxDomain => Err(MxError::Permanent(reply::nxdomain(domain))),
                // DLV-14: the name exists but has no MX: it is its own mail host.
                LookupFailure::NoRecords => Ok(vec![MxHost { name: domain.to_string(), addrs: Vec::new() }]),
                LookupFailure::Temporary => Err(MxError::Temporary(reply::dns_failed(domain))),
            };
        }
    };
    let mut mx: Vec<(u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::MX(m) => Some((m.preference, m.exchange.to_ascii().trim_end_matches('.').to_string())),
            _ => None,
        })
        .collect();
    if mx.is_empty() {
        return Ok(vec![MxHost { name: domain.to_string(), addrs: Vec::new() }]);
    }
    // DLV-12: RFC 7505 null MX.
    if mx.len() == 1 && mx[0].0 == 0 && mx[0].1.is_empty() {
        return Err(MxError::Permanent(reply::NULL_MX.to_string()));
    }
    mx.retain(|(_, h)| !h.is_empty());
    mx.shuffle(&mut rand::rng());
    mx.sort_by_key(|(p, _)| *p);
    Ok(mx.into_iter().map(|(_, name)| MxHost { name, addrs: Vec::new() }).collect())
}

/// The host's AAAA then A addresses (DLV-11). An empty list means the host cannot be reached.
pub async fn addresses(resolver: &TokioResolver, host: &MxHost) -> Result<Vec<IpAddr>, String> {
    if !host.addrs.is_empty() {
        return Ok(host.addrs.clone());
    }
    let fqdn = format!("{}.", host.name);
    let mut out = Vec::new();
    let mut last_err = None;
    match resolver.ipv6_lookup(fqdn.as_str()).await {
        Ok(l) => out.extend(l.answers().iter().filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })),
        Err(e) => last_err = Some(e),
    }
    match resolver.ipv4_lookup(fqdn.as_str()).await {
        Ok(l) => out.extend(l.answers().iter().filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })),
        Err(e) => last_err = Some(e),
    }
    if out.is_empty() {
        return Err(match last_err {
            Some(e) if classify(&e) == LookupFailure::Temporary => format!("DNS lookup failed: {e}"),
            _ => "no address records".to_string(),
        });
    }
    Ok(out)
}
