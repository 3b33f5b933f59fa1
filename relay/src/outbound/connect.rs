//! Outbound TCP connections. An IP-only relay (`mail_domain` an address literal) connects from
//! that address: a receiver skips DKIM for an address-literal sender only when the connection
//! comes from that very address (smtp.md SMTP-44), so a multi-address host must not let the
//! kernel pick another source. When the address is not on this host (NAT, a container), the
//! system chooses, as for every other relay.

use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// The source address outbound connections bind to: the literal of an IP-only `mail_domain`.
pub fn source_for(mail_domain: &str) -> Option<IpAddr> {
    super::mx::address_literal(mail_domain)
}

/// Connect to `addr`, from `source` when it is given, of the same family and bindable here.
pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    if let Some(src) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) {
        let sock = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        match sock.bind(SocketAddr::new(src, 0)) {
            Ok(()) => return sock.connect(addr).await,
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tracing::debug!(
                    "outbound: the literal mail_domain is not an address of this host; the system picks one"
                );
            }
            Err(e) => return Err(e),
        }
    }
    TcpStream::connect(addr).await
}
