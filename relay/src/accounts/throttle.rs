//! Failed-login throttling, after Dovecot's auth penalty and Postfix's anvil (issue 26): failures
//! are counted per client prefix and per account (keyed hash) in a window. Past a few failures a
//! client's attempts wait 1 s, 2 s, 4 s ... (capped); past the client limit they are refused
//! without a password hash; past the account limit only logins the verified-login cache already
//! knows pass, so a guess flood at one address costs no argon2 and cannot lock its owner out.
//! Successful logins are never counted. Counters live in memory, bounded; IPs are never logged.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// Keys kept per map; when full, expired entries go first, then arbitrary ones.
const MAX_KEYS: usize = 100_000;

struct Counter<K> {
    map: Mutex<HashMap<K, (u32, Instant)>>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    fn new() -> Self {
        Self { map: Mutex::new(HashMap::new()) }
    }

    fn get(&self, k: &K, window: Duration, now: Instant) -> u32 {
        let Ok(m) = self.map.lock() else { return 0 };
        match m.get(k) {
            Some((n, start)) if now.saturating_duration_since(*start) < window => *n,
            _ => 0,
        }
    }

    fn hit(&self, k: &K, window: Duration, now: Instant) {
        let Ok(mut m) = self.map.lock() else { return };
        if m.len() >= MAX_KEYS && !m.contains_key(k) {
            m.retain(|_, (_, start)| now.saturating_duration_since(*start) < window);
            if m.len() >= MAX_KEYS
                && let Some(victim) = m.keys().next().cloned()
            {
                m.remove(&victim);
            }
        }
        let e = m.entry(k.clone()).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= window {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
    }
}

/// What a login attempt may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead after this delay (zero for a client without recent failures).
    Allow(Duration),
    /// Too many failures from this client: refuse without hashing.
    Refuse,
}

pub struct Throttle {
    clients: Counter<IpAddr>,
    accounts: Counter<[u8; 32]>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self { clients: Counter::new(), accounts: Counter::new() }
    }
}

impl Throttle {
    pub fn check_client(&self, client: IpAddr, l: &Limits, now: Instant) -> Verdict {
        let f = self.clients.get(&client, l.auth_window.get(), now);
        if f >= l.auth_failures_per_client {
            return Verdict::Refuse;
        }
        Verdict::Allow(penalty(f, l))
    }

    /// Whether the account has seen too many failures: only cached (known-good) logins pass.
    pub fn account_locked(&self, account: &[u8; 32], l: &Limits, now: Instant) -> bool {
        self.accounts.get(account, l.auth_window.get(), now) >= l.auth_failures_per_account
    }

    pub fn failed(&self, client: IpAddr, account: &[u8; 32], l: &Limits, now: Instant) {
        self.clients.hit(&client, l.auth_window.get(), now);
        self.accounts.hit(account, l.auth_window.get(), now);
    }
}

/// 0 up to `auth_free_failures` failures, then 1 s doubling up to `auth_max_delay`.
fn penalty(failures: u32, l: &Limits) -> Duration {
    match failures.checked_sub(l.auth_free_failures) {
        None | Some(0) => Duration::ZERO,
        Some(over) => Duration::from_secs(1u64 << (over - 1).min(20)).min(l.auth_max_delay.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_refuse() {
        let l = Limits { auth_failures_per_client: 6, auth_failures_per_account: 2, ..Limits::default() };
        let t = Throttle::default();
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let acc = [7u8; 32];
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(t.check_client(ip, &l, now));
            t.failed(ip, &acc, &l, now);
        }
        let secs = |d: u64| Verdict::Allow(Duration::from_secs(d));
        assert_eq!(seen, vec![secs(0), secs(0), secs(0), secs(0), secs(1), secs(2), Verdict::Refuse]);
        assert!(t.account_locked(&acc, &l, now));
        assert!(!t.account_locked(&[8u8; 32], &l, now));
        let later = now + l.auth_window.get();
        assert_eq!(t.check_client(ip, &l, later), secs(0), "the window passes");
        assert!(!t.account_locked(&acc, &l, later));
    }

    #[test]
    fn capped_delay() {
        let l = Limits::default();
        assert_eq!(penalty(40, &l), l.auth_max_delay.get());
    }
}
