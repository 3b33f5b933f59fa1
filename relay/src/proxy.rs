//! PROXY protocol version 2 (the binary header of HAProxy's proxy-protocol.txt, section 2.2), for
//! listeners behind a TCP load balancer (`[listen] proxy_protocol = true`, issue 27): the header
//! that opens each connection names the client, so per-client limits and throttles key on the
//! client rather than on the balancer.
//!
//! Exactly the header's bytes are read (16, then its announced length), never more, so the
//! protocol that follows is untouched. With the option on, a connection that does not start with
//! a valid header is closed: accepting it would let anyone reaching the port directly choose the
//! address it is counted as. A `LOCAL` header (the balancer's own health check) and the address
//! families without an IP (UNSPEC, UNIX) keep the socket's peer address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12-byte signature that starts every version 2 header.
pub const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// Longest address block accepted (IPv6 addresses plus room for TLVs a balancer may add).
pub const MAX_BLOCK: usize = 1024;

/// How long a connection may take to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY v2 signature")]
    Signature,
    #[error("unsupported PROXY version or command {0:#04x}")]
    Version(u8),
    #[error("PROXY address block of {0} bytes is too long")]
    TooLong(usize),
    #[error("PROXY address block shorter than its family needs")]
    Truncated,
    #[error("no PROXY header within the time allowed")]
    Timeout,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// The fixed 16-byte part: returns (command, family, block length).
pub fn parse_fixed(h: &[u8; 16]) -> Result<(u8, u8, usize), ProxyError> {
    if h[..12] != SIGNATURE {
        return Err(ProxyError::Signature);
    }
    let ver_cmd = h[12];
    if ver_cmd >> 4 != 2 || ver_cmd & 0x0F > 1 {
        return Err(ProxyError::Version(ver_cmd));
    }
    let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
    if len > MAX_BLOCK {
        return Err(ProxyError::TooLong(len));
    }
    Ok((ver_cmd & 0x0F, h[13], len))
}

/// The source address in an address block, `None` where the header names none (LOCAL,
/// UNSPEC, UNIX sockets).
pub fn parse_block(command: u8, family: u8, block: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if command == 0 {
        return Ok(None);
    }
    match family >> 4 {
        // AF_INET: src 4, dst 4, src port 2, dst port 2.
        1 => {
            let b: &[u8; 12] = block.get(..12).and_then(|s| s.try_into().ok()).ok_or(ProxyError::Truncated)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([b[8], b[9]]))))
        }
        // AF_INET6: src 16, dst 16, src port 2, dst port 2.
        2 => {
            let b: &[u8; 36] = block.get(..36).and_then(|s| s.try_into().ok()).ok_or(ProxyError::Truncated)?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(src);
            // A v4 client through a dual-stack balancer counts as the v4 client it is.
            let ip = ip.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(ip));
            Ok(Some(SocketAddr::new(ip, u16::from_be_bytes([b[32], b[33]]))))
        }
        _ => Ok(None),
    }
}

/// Read one header from the start of `r`; the client's address, or `None` to keep the peer's.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<SocketAddr>, ProxyError> {
    let read = async {
        let mut fixed = [0u8; 16];
        r.read_exact(&mut fixed).await?;
        let (command, family, len) = parse_fixed(&fixed)?;
        let mut block = vec![0u8; len];
        r.read_exact(&mut block).await?;
        parse_block(command, family, &block)
    };
    tokio::time::timeout(HEADER_TIMEOUT, read).await.map_err(|_| ProxyError::Timeout)?
}

/// A version 2 PROXY header for a TCP connection from `src` to `dst` (tests and tools).
pub fn encode(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(src).octets());
            out.extend_from_slice(&v6(dst).octets());
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let mut r = bytes;
        let out = read_header(&mut r).await;
        (out, r.to_vec())
    }

    #[tokio::test]
    async fn v4_and_v6_headers_name_the_client_and_leave_the_stream() {
        let src: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
        let dst: SocketAddr = "192.0.2.1:25".parse().expect("addr");
        let mut bytes = encode(src, dst);
        bytes.extend_from_slice(b"EHLO x\r\n");
        let (got, rest) = read(&bytes).await;
        assert_eq!(got.expect("header"), Some(src));
        assert_eq!(rest, b"EHLO x\r\n", "nothing after the header is consumed");

        let src6: SocketAddr = "[2001:db8::5]:1234".parse().expect("addr");
        let (got, _) = read(&encode(src6, "[2001:db8::1]:993".parse().expect("addr"))).await;
        assert_eq!(got.expect("header"), Some(src6));
    }

    #[tokio::test]
    async fn local_and_unspec_keep_the_peer() {
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).await.0.expect("local"), None);
        let mut unspec = SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 3, 1, 2, 3]);
        let (got, rest) = read(&unspec).await;
        assert_eq!(got.expect("unspec"), None);
        assert!(rest.is_empty(), "the block is consumed whole");
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        assert!(matches!(read(b"EHLO client.example\r\n").await.0, Err(ProxyError::Signature)));
        // Version 1 (text) is not accepted on a v2 listener.
        assert!(matches!(read(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n").await.0, Err(ProxyError::Signature)));
        let mut v1 = SIGNATURE.to_vec();
        v1.extend_from_slice(&[0x11, 0x11, 0, 12]);
        assert!(matches!(read(&v1).await.0, Err(ProxyError::Version(0x11))));
        let mut long = SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(read(&long).await.0, Err(ProxyError::TooLong(65535))));
        let mut short = SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(read(&short).await.0, Err(ProxyError::Truncated)));
        let mut cut = SIGNATURE.to_vec();
        cut.extend_from_slice(&[0x21, 0x11, 0, 12, 1, 2]);
        assert!(matches!(read(&cut).await.0, Err(ProxyError::Io(_))));
    }
}
