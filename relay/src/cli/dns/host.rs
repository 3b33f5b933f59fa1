//! This host's global-scope addresses, read from the kernel's tables (OPS-8): IPv6 from
//! `/proc/net/if_inet6` (scope 00 = global), IPv4 from the local routes in `/proc/net/fib_trie`.
//! Private, loopback, link-local, shared (CGNAT) and unique-local addresses are left out. Nothing
//! connects anywhere to find them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn global_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/fib_trie") {
        out.extend(ipv4_from_fib_trie(&t).into_iter().map(IpAddr::V4));
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/if_inet6") {
        out.extend(ipv6_from_if_inet6(&t).into_iter().map(IpAddr::V6));
    }
    out.sort();
    out.dedup();
    out
}

fn global_v4(ip: &Ipv4Addr) -> bool {
    let o = ip.octets();
    let shared = o[0] == 100 && (o[1] & 0xc0) == 64; // 100.64.0.0/10
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || shared
        || o[0] == 0
        || o[0] >= 224)
}

fn global_v6(ip: &Ipv6Addr) -> bool {
    let s = ip.segments();
    // Global unicast is 2000::/3; that excludes loopback, link-local (fe80::/10), ULA (fc00::/7),
    // multicast; 2001:db8::/32 is documentation.
    (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
}

/// The addresses of `/32 host LOCAL` leaves: the `|-- A.B.C.D` line just above each.
pub fn ipv4_from_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut last: Option<Ipv4Addr> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ").or_else(|| t.strip_prefix("+-- ")) {
            last = a.split('/').next().and_then(|a| a.trim().parse().ok());
        } else if t.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && global_v4(&ip)
            && !out.contains(&ip)
        {
            out.push(ip);
        }
    }
    out
}

/// Lines: `<32 hex digits> <ifindex> <prefixlen> <scope> <flags> <ifname>`.
pub fn ipv6_from_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(hex), Some(scope), Some(flags)) = (f.first(), f.get(3), f.get(4)) else { continue };
        // IFA_F_TENTATIVE (0x40) and IFA_F_DEPRECATED (0x20): not usable as the host's address.
        let flags = u32::from_str_radix(flags, 16).unwrap_or(0);
        if *scope != "00" || hex.len() != 32 || flags & 0x60 != 0 {
            continue;
        }
        let Ok(n) = u128::from_str_radix(hex, 16) else { continue };
        let ip = Ipv6Addr::from(n);
        if global_v6(&ip) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib_trie() {
        let t = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.0.0/8 2 0 2\n        |-- 10.0.2.15\n           /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 93.184.216.34\n        /32 host LOCAL\n     |-- 93.184.216.255\n        /32 link BROADCAST\nLocal:\n     |-- 93.184.216.34\n        /32 host LOCAL\n";
        assert_eq!(ipv4_from_fib_trie(t), vec![Ipv4Addr::new(93, 184, 216, 34)]);
    }

    #[test]
    fn if_inet6() {
        let t = "00000000000000000000000000000001 01 80 10 80       lo\n\
                 fe800000000000000000000000000001 02 40 20 80     eth0\n\
                 fd000000000000000000000000000001 02 40 00 80     eth0\n\
                 2a0102030405060700000000000000aa 02 40 00 80     eth0\n\
                 2a0102030405060700000000000000bb 02 40 00 c0     eth0\n";
        assert_eq!(ipv6_from_if_inet6(t), vec!["2a01:203:405:607::aa".parse::<Ipv6Addr>().expect("ip")]);
    }
}
