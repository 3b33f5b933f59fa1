//! Connection limits per listener: a total cap and a per-IP cap (SMTP-18, IMAP-42, HTTP-27).
//! Counting is in memory; the map holds only IPs with open connections, so it is bounded by the
//! total cap. IPs are never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The client a limit counts: the address truncated to the configured prefix (issue 26), so one
/// host's IPv6 /64 (or an IPv4 block, if configured) is one client. IPv4-mapped IPv6 counts as
/// IPv4.
pub fn client_prefix(ip: IpAddr, v4_bits: u8, v6_bits: u8) -> IpAddr {
    fn mask(bits: u8, width: u32) -> u128 {
        let bits = u32::from(bits).min(width);
        if bits == 0 { 0 } else { u128::MAX << (128 - bits) >> (128 - width) }
    }
    match ip {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4) & mask(v4_bits, 32) as u32).into()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => client_prefix(IpAddr::V4(v4), v4_bits, v6_bits),
            None => IpAddr::V6((u128::from(v6) & mask(v6_bits, 128)).into()),
        },
    }
}

/// The client prefix of `ip` under the current `[limits]` config.
pub fn client_of(ip: IpAddr, cfg: &crate::config::Config) -> IpAddr {
    client_prefix(ip, cfg.limits.ipv4_prefix, cfg.limits.ipv6_prefix)
}

/// Cooperative yielding for loops whose cost depends on client input (issue 26, see
/// docs/architecture.md "Bounded work"): count rough work units (byte comparisons, messages
/// visited) and give the worker back to other sessions every `YIELD_EVERY` of them, i.e. about
/// every few hundred microseconds.
#[derive(Default)]
pub struct Yielder {
    work: usize,
}

const YIELD_EVERY: usize = 256 * 1024;

impl Yielder {
    pub async fn add(&mut self, units: usize) {
        self.work = self.work.saturating_add(units.max(1));
        if self.work >= YIELD_EVERY {
            self.work = 0;
            tokio::task::yield_now().await;
        }
    }
}

pub struct ConnLimiter {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Held for the life of a connection; releases its slot on drop.
pub struct ConnGuard {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_ip: max_per_ip.max(1), state: Mutex::new((0, HashMap::new())) })
    }

    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnGuard> {
        let mut g = self.state.lock().ok()?;
        let (total, per_ip) = &mut *g;
        let n = per_ip.get(&ip).copied().unwrap_or(0);
        if *total >= self.max_total || n >= self.max_per_ip {
            return None;
        }
        *total += 1;
        per_ip.insert(ip, n + 1);
        Some(ConnGuard { limiter: self.clone(), ip })
    }

    pub fn open(&self) -> usize {
        self.state.lock().map(|g| g.0).unwrap_or(0)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Ok(mut g) = self.limiter.state.lock() {
            let (total, per_ip) = &mut *g;
            *total = total.saturating_sub(1);
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = |s: &str, a, b| client_prefix(s.parse().expect("ip"), a, b).to_string();
        assert_eq!(p("2001:db8:1:2:aaaa::1", 32, 64), "2001:db8:1:2::");
        assert_eq!(p("2001:db8:1:2:aaaa::1", 32, 128), "2001:db8:1:2:aaaa::1");
        assert_eq!(p("10.1.2.3", 32, 64), "10.1.2.3");
        assert_eq!(p("10.1.2.3", 24, 64), "10.1.2.0");
        assert_eq!(p("::ffff:10.1.2.3", 24, 64), "10.1.2.0");
        assert_eq!(p("10.1.2.3", 1, 64), "0.0.0.0");
    }

    #[test]
    fn caps() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "127.0.0.2".parse().expect("ip");
        let g1 = l.try_acquire(a).expect("1");
        let _g2 = l.try_acquire(a).expect("2");
        assert!(l.try_acquire(a).is_none(), "per-IP cap");
        let _g3 = l.try_acquire(b).expect("3");
        assert!(l.try_acquire(b).is_none(), "total cap");
        drop(g1);
        assert!(l.try_acquire(b).is_some());
    }
}
