//! Embedded STUN/TURN server for Delta Chat calls (issue 28; RFC 8489, RFC 8656 over UDP).
//!
//! Credentials follow the TURN REST API draft: username = the expiry time in Unix seconds,
//! password = base64(HMAC-SHA1(key, username)), where the key is derived from the install's random
//! `secret.key` (never a shared constant). METADATA hands out a fresh pair per request as
//! `<mail_domain>:<port>:<username>:<password>`, which Delta Chat core parses with the username
//! as a bare timestamp (its `create_ice_servers_from_metadata`), so the username carries no
//! account id: quotas count per TURN username, plus a global cap.
//!
//! Relayed addresses and peers in loopback, private, link-local, CGNAT, multicast or other
//! special ranges are refused unless `turn.allow_private_peers` (tests only) is set.

pub mod server;
pub mod stun;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::prelude::{BASE64_STANDARD, Engine as _};
use hmac::{KeyInit, Mac};

use crate::config::Config;
use crate::context::Ctx;

/// The advertised port of the running TURN server; 0 while none runs (never started, disabled,
/// or refused at start-up), so METADATA advertises only a server that is really there.
static RUNNING_PORT: AtomicU16 = AtomicU16::new(0);
/// The TURN REST key, derived once from the install secret.
static KEY: OnceLock<[u8; 32]> = OnceLock::new();

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The TURN REST key of this install: HMAC of the per-install random secret, so it is random per
/// install, survives restarts (credentials handed out stay valid), and is never stored apart.
pub fn rest_key(ctx: &Ctx) -> [u8; 32] {
    *KEY.get_or_init(|| ctx.accounts.secret().keyed_hash(&[b"turn-rest-api"]))
}

/// The password of a TURN REST username.
pub fn password_for(key: &[u8], username: &str) -> String {
    let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    BASE64_STANDARD.encode(mac.finalize().into_bytes())
}

/// Expiry of a TURN REST username ("<expiry>" or "<expiry>:<anything>"), if well-formed.
pub fn username_expiry(username: &str) -> Option<u64> {
    let ts = username.split_once(':').map_or(username, |(t, _)| t);
    if ts.is_empty() || ts.len() > 12 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ts.parse().ok()
}

/// `/shared/vendor/deltachat/turn`: fresh credentials from the embedded server, or None when it
/// does not run.
pub fn metadata_value(ctx: &Ctx, cfg: &Config) -> Option<String> {
    let port = RUNNING_PORT.load(Ordering::Relaxed);
    if port == 0 {
        return None;
    }
    let username = (now_secs() + cfg.turn.credential_ttl.get().as_secs()).to_string();
    let password = password_for(&rest_key(ctx), &username);
    Some(format!("{}:{port}:{username}:{password}", cfg.mail_domain))
}

/// Whether `ip` may be a relayed address or a peer in production: a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10 shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15 benchmarking
        || o[0] >= 240) // reserved
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xFE00) == 0xFC00 // unique local fc00::/7
        || (s[0] & 0xFFC0) == 0xFE80 // link-local fe80::/10
        || (s[0] & 0xFFC0) == 0xFEC0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0DB8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xFF9B) // NAT64 could reach private IPv4
        || (s[0] == 0x2002) // 6to4 could reach private IPv4
        || (s[0] == 0x2001 && s[1] == 0)) // Teredo
}

/// Start the TURN server if configured. A bind failure stops start-up like any listener
/// (SMTP-4); an unusable relay address only disables TURN, with an error in the log.
pub async fn start(ctx: &Ctx) -> Result<(), crate::server::ServeError> {
    let cfg = ctx.config.get();
    if !cfg.turn.enabled() {
        return Ok(());
    }
    let Some(relay_ip) = relay_ip(&cfg) else {
        tracing::error!("turn: no usable relay address (set turn.relay_ip); TURN is off");
        return Ok(());
    };
    if !cfg.turn.allow_private_peers && !is_public(relay_ip) {
        tracing::error!("turn: the relay address is not a public address (set turn.relay_ip); TURN is off");
        return Ok(());
    }
    if cfg.turn.allow_private_peers {
        tracing::warn!("turn.allow_private_peers is set: peers in private ranges are reachable (tests only)");
    }
    let srv = server::Server::bind(ctx, &cfg, relay_ip).await?;
    RUNNING_PORT.store(cfg.turn.listen[0].port(), Ordering::Relaxed);
    srv.spawn(ctx);
    Ok(())
}

/// `turn.relay_ip`, or the source address the kernel would use towards the internet: a UDP
/// `connect` only picks a route, it sends nothing.
fn relay_ip(cfg: &Config) -> Option<IpAddr> {
    let configured = cfg.turn.relay_ip.trim();
    if !configured.is_empty() {
        return configured.parse().ok();
    }
    let probe = |bind: &str, to: &str| -> Option<IpAddr> {
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(to).ok()?;
        s.local_addr().ok().map(|a| a.ip())
    };
    // 192.0.2.1 (TEST-NET-1) is never contacted; any global route yields the public source.
    probe("0.0.0.0:0", "192.0.2.1:9")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials() {
        assert_eq!(username_expiry("1758650868"), Some(1_758_650_868));
        assert_eq!(username_expiry("1758650868:alice"), Some(1_758_650_868));
        assert_eq!(username_expiry("alice"), None);
        assert_eq!(username_expiry(""), None);
        assert_eq!(username_expiry("99999999999999999999"), None);
        // RFC 2104 test vector shape: base64 of a 20-byte SHA-1 HMAC.
        let p = password_for(b"key", "1758650868");
        assert_eq!(p.len(), 28);
        assert_ne!(p, password_for(b"other", "1758650868"));
    }

    #[test]
    fn address_policy() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2a00:1450:4001::1", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }
}
