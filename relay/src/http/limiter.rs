//! In-memory rate limiters keyed by client network or by a keyed hash of an address (HTTP-17,
//! ACC-34). Bounded: at most `cap` keys, the oldest key evicted first. Nothing here is logged or
//! written anywhere (PRIV-1).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The limiter key for a client: IPv4 address, or the /64 of an IPv6 address (one host usually
/// holds a whole /64, so per-address limits would be trivial to dodge).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

/// A map with insertion-order eviction.
struct Bounded<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    fn new(cap: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), cap }
    }

    fn entry(&mut self, key: &K, init: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(key) {
            while self.map.len() >= self.cap {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key.clone());
        }
        self.map.entry(key.clone()).or_insert_with(init)
    }
}

/// Token bucket: `rate` per second, `burst` at most.
pub struct TokenBucket<K> {
    inner: Mutex<Bounded<K, (f64, Instant)>>,
    rate: f64,
    burst: f64,
}

impl<K: Hash + Eq + Clone> TokenBucket<K> {
    pub fn new(rate: f64, burst: f64, cap: usize) -> Self {
        Self { inner: Mutex::new(Bounded::new(cap)), rate, burst }
    }

    /// Take one token; `false` when the bucket is empty.
    pub fn allow(&self, key: &K, now: Instant) -> bool {
        let Ok(mut g) = self.inner.lock() else { return true };
        let burst = self.burst;
        let (tokens, last) = g.entry(key, || (burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Fixed-window counter: at most `max` events per `window`.
pub struct Window<K> {
    inner: Mutex<Bounded<K, (u32, Instant)>>,
    max: u32,
    window: Duration,
}

impl<K: Hash + Eq + Clone> Window<K> {
    pub fn new(max: u32, window: Duration, cap: usize) -> Self {
        Self { inner: Mutex::new(Bounded::new(cap)), max, window }
    }

    /// `Err(retry_after)` when the limit is reached; does not count.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Ok(mut g) = self.inner.lock() else { return Ok(()) };
        let window = self.window;
        let (count, start) = g.entry(key, || (0, now));
        if now.saturating_duration_since(*start) >= window {
            *count = 0;
            *start = now;
        }
        if *count >= self.max {
            return Err(window.saturating_sub(now.saturating_duration_since(*start)).max(Duration::from_secs(1)));
        }
        Ok(())
    }

    /// Count one event.
    pub fn hit(&self, key: &K, now: Instant) {
        let Ok(mut g) = self.inner.lock() else { return };
        let window = self.window;
        let (count, start) = g.entry(key, || (0, now));
        if now.saturating_duration_since(*start) >= window {
            *count = 0;
            *start = now;
        }
        *count = count.saturating_add(1);
    }
}

const MAX_KEYS: usize = 100_000;

/// The `/new` bucket's rate and burst from `[limits]` (shared with account creation by first
/// login, issue 26). Set once at start, before the first request.
static NEW_BUCKET: OnceLock<(f64, f64)> = OnceLock::new();

pub fn configure_new(rate: f64, burst: f64) {
    let _ = NEW_BUCKET.set((rate, burst));
}

/// The limiters of the HTTPS listener, shared by all its connections (one relay per process).
pub struct Limits {
    /// HTTP-17: GET and POST `/new` together, 2/s with a burst of 5.
    pub new: TokenBucket<IpAddr>,
    /// ACC-34: deletion attempts per client, 5 per 15 minutes.
    pub delete_ip: Window<IpAddr>,
    /// ACC-34: failed deletions per address (keyed hash), 10 per hour.
    pub delete_addr: Window<[u8; 32]>,
}

pub fn limits() -> &'static Limits {
    static LIMITS: OnceLock<Limits> = OnceLock::new();
    LIMITS.get_or_init(|| Limits {
        new: {
            let (rate, burst) = NEW_BUCKET.get().copied().unwrap_or((2.0, 5.0));
            TokenBucket::new(rate, burst, MAX_KEYS)
        },
        delete_ip: Window::new(5, Duration::from_secs(15 * 60), MAX_KEYS),
        delete_addr: Window::new(10, Duration::from_secs(3600), MAX_KEYS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_burst_then_refill() {
        let b = TokenBucket::new(2.0, 5.0, 10);
        let t = Instant::now();
        let ok = (0..8).filter(|_| b.allow(&1u8, t)).count();
        assert_eq!(ok, 5);
        assert!(b.allow(&1u8, t + Duration::from_millis(500)));
        assert!(!b.allow(&1u8, t + Duration::from_millis(500)));
        assert!(b.allow(&2u8, t), "other keys unaffected");
    }

    #[test]
    fn bounded_evicts_oldest() {
        let b = TokenBucket::new(0.0, 1.0, 2);
        let t = Instant::now();
        assert!(b.allow(&1u8, t));
        assert!(!b.allow(&1u8, t));
        assert!(b.allow(&2u8, t));
        assert!(b.allow(&3u8, t)); // evicts 1
        assert!(b.allow(&1u8, t), "evicted key starts fresh");
        assert_eq!(b.inner.lock().map(|g| g.map.len()).unwrap_or(0), 2);
    }

    #[test]
    fn window_limits_and_resets() {
        let w = Window::new(2, Duration::from_secs(60), 10);
        let t = Instant::now();
        w.hit(&1u8, t);
        w.hit(&1u8, t);
        let retry = w.check(&1u8, t + Duration::from_secs(10)).expect_err("limited");
        assert_eq!(retry, Duration::from_secs(50));
        assert!(w.check(&1u8, t + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn v6_grouped_by_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        let m: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(client_key(m), "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }
}
