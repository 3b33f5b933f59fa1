//! The global in-flight message budget (issue 31): bytes of message bodies held in memory while
//! they are being received, on port 25 DATA and `POST /mxdeliv` together. Per-connection caps
//! alone allowed tens of GB in flight (16 stalled 25 MB POSTs took RSS to 420 MB). A receiver
//! reserves as bytes arrive; when the budget is spent the message is refused with a transient
//! reply (the sender retries later) and counted in `chatrelay_limit_hits_total{limit="inflight_bytes"}`.

use std::sync::atomic::{AtomicU64, Ordering};

static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// Bytes currently reserved by all receivers.
pub fn in_flight() -> u64 {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// Bytes held by one message being received; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    held: u64,
    budget: u64,
}

impl Reservation {
    /// An empty reservation against `budget` bytes in total.
    pub fn new(budget: u64) -> Self {
        Self { held: 0, budget }
    }

    /// Reserve `n` more bytes; false (nothing reserved) when the budget would be exceeded.
    pub fn grow(&mut self, n: u64) -> bool {
        let budget = self.budget;
        let ok = IN_FLIGHT
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                cur.checked_add(n).filter(|total| *total <= budget)
            })
            .is_ok();
        if ok {
            self.held += n;
        }
        ok
    }

    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_and_given_back() {
        let base = in_flight();
        let mut a = Reservation::new(base + 100);
        assert!(a.grow(60));
        let mut b = Reservation::new(base + 100);
        assert!(!b.grow(50), "over the shared budget");
        assert!(b.grow(40));
        drop(a);
        assert!(b.grow(50));
        drop(b);
        assert_eq!(in_flight(), base);
    }
}
