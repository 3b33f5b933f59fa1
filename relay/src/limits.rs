//! Connection limits per listener: a total cap and a per-IP cap (SMTP-18, IMAP-42, HTTP-27).
//! Counting is in memory; the map holds only IPs with open connections, so it is bounded by the
//! total cap. IPs are never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

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
