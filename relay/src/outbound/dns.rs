//! The DNS resolver of `delivery.resolver` (DLV-10): "system" or one `IP:PORT` server (tests).
//! Used for MX/A/AAAA/TXT lookups of outbound delivery, MTA-STS and DKIM key lookups.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;

/// The servers of `delivery.resolver` ("system" or IP:PORT) and the options both resolvers share.
fn servers(spec: &str, timeout: Duration) -> Result<(ResolverConfig, ResolverOpts), String> {
    let (config, mut opts) = if spec == "system" {
        hickory_resolver::system_conf::read_system_conf().map_err(|e| format!("system resolver configuration: {e}"))?
    } else {
        let addr: SocketAddr = spec.parse().map_err(|_| format!("delivery.resolver {spec:?} is not IP:PORT"))?;
        let mut udp = ConnectionConfig::udp();
        udp.port = addr.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = addr.port();
        let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
        (ResolverConfig::from_name_servers(vec![ns]), ResolverOpts::default())
    };
    opts.timeout = timeout;
    opts.attempts = 2;
    opts.ndots = 0;
    Ok((config, opts))
}

/// Build a resolver. `cache` false disables hickory's own cache (DKIM keeps its own, SMTP-43).
pub fn build(spec: &str, timeout: Duration, cache: bool) -> Result<TokioResolver, String> {
    let (config, mut opts) = servers(spec, timeout)?;
    if !cache {
        opts.cache_size = 0;
    }
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(opts)
        .build()
        .map_err(|e| format!("resolver: {e}"))
}

/// A DNSSEC-validating resolver on the same servers (DANE TLSA lookups, RFC 7672). Its trust
/// anchor is the IANA root key built into hickory, or the DNSKEY records in `trust_anchor` (a
/// file; tests use it for their own signed zone).
pub fn build_validating(spec: &str, timeout: Duration, trust_anchor: &str) -> Result<TokioResolver, String> {
    use hickory_resolver::proto::dnssec::TrustAnchors;
    let (config, mut opts) = servers(spec, timeout)?;
    opts.validate = true;
    let mut b = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(opts);
    if !trust_anchor.trim().is_empty() {
        let anchors = TrustAnchors::from_file(std::path::Path::new(trust_anchor.trim()))
            .map_err(|e| format!("delivery.dnssec_trust_anchor {trust_anchor}: {e}"))?;
        b = b.with_trust_anchor(std::sync::Arc::new(anchors));
    }
    b.build().map_err(|e| format!("resolver: {e}"))
}

/// How a failed lookup is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFailure {
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of the asked type.
    NoRecords,
    /// Timeout, SERVFAIL, network error: try again later.
    Temporary,
}

pub fn classify(e: &NetError) -> LookupFailure {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => LookupFailure::NxDomain,
            ResponseCode::NoError => LookupFailure::NoRecords,
            _ => LookupFailure::Temporary,
        },
        _ => LookupFailure::Temporary,
    }
}
