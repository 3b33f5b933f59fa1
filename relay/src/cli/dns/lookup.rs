//! DNS lookups for the check, through `delivery.resolver`: "system" (resolv.conf) or IP:PORT.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

pub fn resolver(spec: &str) -> Result<TokioResolver, String> {
    let mut builder = if spec == "system" {
        TokioResolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?
    } else {
        let addr: SocketAddr = spec.parse().map_err(|_| format!("delivery.resolver {spec:?} must be \"system\" or IP:PORT"))?;
        let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
        for c in &mut ns.connections {
            c.port = addr.port();
        }
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), TokioRuntimeProvider::default())
    };
    let opts = builder.options_mut();
    // An operator runs this by hand: answer within seconds even when DNS does not.
    opts.timeout = Duration::from_secs(3);
    opts.attempts = 1;
    opts.cache_size = 0;
    builder.build().map_err(|e| format!("resolver: {e}"))
}

/// The answers of type `rtype` at `name` (absolute); no records is an empty list, not an error.
pub async fn records(resolver: &TokioResolver, name: &str, rtype: RecordType) -> Result<Vec<RData>, String> {
    let fq = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    match resolver.lookup(fq.as_str(), rtype).await {
        Ok(l) => Ok(l.answers().iter().filter(|r| r.record_type() == rtype).map(|r| r.data.clone()).collect()),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}
