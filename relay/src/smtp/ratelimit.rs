//! Per-sender send rate (SMTP-29): a GCRA bucket of `max_user_send_per_minute` per minute with
//! burst `max_user_send_burst_size`, in memory on this node, in a bounded map. After a quiet
//! period the first `burst` messages always pass.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Senders tracked at most; idle entries are dropped first when it is reached.
const MAX_SENDERS: usize = 100_000;

pub struct RateLimiter {
    /// Theoretical arrival time per sender.
    tat: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    pub fn new() -> Self {
        Self { tat: Mutex::new(HashMap::new()) }
    }

    /// The process-wide limiter for submission.
    pub fn global() -> &'static Self {
        static L: OnceLock<RateLimiter> = OnceLock::new();
        L.get_or_init(Self::new)
    }

    /// Count one message for `sender` at `now`. `Err(seconds)` to wait when over the limit; a
    /// refused attempt costs nothing.
    pub fn check(&self, sender: &str, per_minute: u32, burst: u32, now: Instant) -> Result<(), u64> {
        let interval = Duration::from_secs(60) / per_minute.max(1);
        let window = interval * burst.max(1);
        let mut map = match self.tat.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let tat = map.get(sender).copied().unwrap_or(now).max(now);
        let next = tat + interval;
        if next - now > window {
            let wait = (next - now - window).as_secs_f64().ceil().max(1.0) as u64;
            return Err(wait);
        }
        if map.len() >= MAX_SENDERS && !map.contains_key(sender) {
            map.retain(|_, t| *t > now);
            if map.len() >= MAX_SENDERS {
                // Still full of active senders: let this one pass untracked rather than grow.
                return Ok(());
            }
        }
        map.insert(sender.to_string(), next);
        Ok(())
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_recover() {
        let l = RateLimiter::new();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(l.check("a@x", 60, 10, t0), Ok(()), "message {i} of the burst");
        }
        assert_eq!(l.check("a@x", 60, 10, t0), Err(1));
        assert_eq!(l.check("b@x", 60, 10, t0), Ok(()), "other senders are independent");
        assert_eq!(l.check("a@x", 60, 10, t0 + Duration::from_secs(1)), Ok(()));
        assert!(l.check("a@x", 60, 10, t0 + Duration::from_secs(1)).is_err());
        let later = t0 + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(l.check("a@x", 60, 10, later), Ok(()), "quiet period restores the burst");
        }
    }
}
