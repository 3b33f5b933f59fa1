//! Outbound delivery: drains the durable queue to remote relays (delivery.md).
//!
//! In: queue entries written by `store.deliver` (one per recipient domain). Out: per-recipient
//! results written back to the queue, bounces stored in senders' INBOXes, metrics.
//! Rules: the queue is the only state that matters (an attempt cut short by a crash simply runs
//! again); the scheduler wakes on `queue_changed` and when entries become due, never polls
//! faster than once per second (DLV-9); at most 100 attempts in flight, 4 per domain (DLV-8);
//! messages are DKIM-signed at send time, the queue holds the unsigned bytes.

pub mod attempt;
pub mod bounce;
pub mod connect;
pub mod dane;
pub mod dkim_key;
pub mod dns;
pub mod https;
pub mod mta_sts;
pub mod mx;
pub mod reply;
pub mod smtp_client;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngExt;

use crate::context::Ctx;
use crate::store::{AttemptOutcome, QueueEntry, now_secs, queue_state};
use attempt::Transport;
use reply::RcptResult;

/// DLV-8.
const MAX_IN_FLIGHT: usize = 100;
const MAX_PER_DOMAIN: usize = 4;
/// DLV-9: the floor between two timer-driven scans.
const MIN_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Without a control socket, `chatrelay queue retry` from another process is seen at the next
/// scan; this bounds how long that takes.
const MAX_SLEEP_SECS: i64 = 30;
/// DLV-5: delays after the 1st, 2nd, ... failed attempt; the last one repeats.
const RETRY_SCHEDULE: &[i64] = &[60, 300, 900, 1800, 3600, 7200, 14_400, 28_800];

/// Seconds until the next attempt after `attempts` failed ones, with up to 10 % jitter (DLV-5).
pub fn retry_delay(attempts: u32) -> i64 {
    let base = RETRY_SCHEDULE[(attempts as usize).min(RETRY_SCHEDULE.len() - 1)];
    base + rand::rng().random_range(0..=base / 10)
}

#[derive(Default)]
struct InFlight {
    ids: HashSet<String>,
    per_domain: HashMap<String, usize>,
}

/// The queue scheduler; returns when `ctx.shutdown` is cancelled.
pub async fn run(ctx: Ctx) {
    let done = Arc::new(tokio::sync::Notify::new());
    let inflight = Arc::new(Mutex::new(InFlight::default()));
    let mut transport: Option<(Arc<crate::config::Config>, Arc<Transport>)> = None;
    loop {
        let cfg = ctx.config.get();
        // Rebuild resolver and TLS configs when the delivery section changed (SIGHUP).
        let stale = transport.as_ref().is_none_or(|(c, _)| {
            c.delivery.resolver != cfg.delivery.resolver || c.delivery.extra_root_certs != cfg.delivery.extra_root_certs
        });
        if stale {
            match Transport::new(&cfg) {
                Ok(t) => transport = Some((cfg.clone(), Arc::new(t))),
                Err(e) => tracing::error!(error = %e, "outbound: cannot set up delivery; queue waits"),
            }
        }
        if let Some((_, t)) = &transport {
            scan(&ctx, t, &inflight, &done).await;
        }
        update_gauges(&ctx).await;
        let (ids, busy) = skip_lists(&inflight);
        let next_due = ctx.store.next_queue_due(ids, busy).await.ok().flatten();
        let wait = match next_due {
            Some(at) => Duration::from_secs((at - now_secs()).clamp(0, MAX_SLEEP_SECS) as u64).max(MIN_SCAN_INTERVAL),
            None => Duration::from_secs(MAX_SLEEP_SECS as u64),
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = ctx.store.events().queue_changed() => {}
            _ = done.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn scan(ctx: &Ctx, transport: &Arc<Transport>, inflight: &Arc<Mutex<InFlight>>, done: &Arc<tokio::sync::Notify>) {
    let (ids, busy) = skip_lists(inflight);
    let due = match ctx.store.due_queue(now_secs(), 1000, ids, busy).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "outbound: cannot read the queue");
            return;
        }
    };
    for entry in due {
        {
            let Ok(mut f) = inflight.lock() else { return };
            if f.ids.len() >= MAX_IN_FLIGHT {
                return;
            }
            if f.ids.contains(&entry.id) || f.per_domain.get(&entry.domain).copied().unwrap_or(0) >= MAX_PER_DOMAIN {
                continue;
            }
            f.ids.insert(entry.id.clone());
            *f.per_domain.entry(entry.domain.clone()).or_default() += 1;
        }
        let (ctx2, t, inflight, done) = (ctx.clone(), transport.clone(), inflight.clone(), done.clone());
        ctx.tasks.spawn(async move {
            let (id, domain) = (entry.id.clone(), entry.domain.clone());
            // OPS-16: on shutdown, give a running attempt 30 s; unfinished ones stay queued.
            let work = process(&ctx2, &t, entry);
            tokio::pin!(work);
            tokio::select! {
                _ = &mut work => {}
                _ = async { ctx2.shutdown.cancelled().await; tokio::time::sleep(Duration::from_secs(30)).await } => {}
            }
            if let Ok(mut f) = inflight.lock() {
                f.ids.remove(&id);
                if let Some(n) = f.per_domain.get_mut(&domain) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        f.per_domain.remove(&domain);
                    }
                }
            }
            done.notify_one();
        });
    }
}

/// In-flight ids and the domains at their concurrency limit, left out of the due query.
fn skip_lists(inflight: &Mutex<InFlight>) -> (Vec<String>, Vec<String>) {
    match inflight.lock() {
        Ok(f) => (
            f.ids.iter().cloned().collect(),
            f.per_domain.iter().filter(|(_, n)| **n >= MAX_PER_DOMAIN).map(|(d, _)| d.clone()).collect(),
        ),
        Err(_) => (Vec::new(), Vec::new()),
    }
}

async fn update_gauges(ctx: &Ctx) {
    if let Ok((n, oldest)) = ctx.store.queue_stats().await {
        ctx.metrics.queue_size.set(n as i64);
        ctx.metrics.queue_oldest_seconds.set(oldest.map_or(0, |t| (now_secs() - t).max(0)));
    }
}

/// DKIM-sign at send time (DLV-34) on a blocking thread: hashing a 30 MB body takes a while.
async fn sign(ctx: &Ctx, original: &Arc<Vec<u8>>) -> Result<Vec<u8>, String> {
    let signer = ctx.dkim.signer().map_err(str::to_string)?.clone();
    let msg = original.clone();
    tokio::task::spawn_blocking(move || signer.sign(&msg).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())?
}

/// One attempt for one entry, with its consequences written back.
pub async fn process(ctx: &Ctx, transport: &Arc<Transport>, entry: QueueEntry) {
    let cfg = ctx.config.get();
    let now = now_secs();
    let pending: Vec<String> = entry.pending().map(|r| r.rcpt.clone()).collect();
    // A sender blocked (or deleted) since queueing sends nothing more; no bounce to it.
    if let Some(id) = entry.sender_account
        && let Ok(false) = crate::smtp::submit::sender_active(ctx, id).await
    {
        tracing::info!(queue_id = %entry.id, "outbound: sender account gone or blocked; entry dropped");
        let _ = ctx.store.queue_drop(&entry.id).await;
        return;
    }
    let original = match ctx.store.read_blob(&entry.blob).await {
        Ok(b) => Arc::new(b),
        Err(e) => {
            // Without its message the entry can never be delivered; drop it loudly.
            tracing::error!(queue_id = %entry.id, error = %e, "outbound: message file missing; entry dropped");
            let _ = ctx.store.queue_drop(&entry.id).await;
            return;
        }
    };
    let lifetime = cfg.delivery.queue_lifetime.get().as_secs() as i64;
    let expired = now - entry.created_at > lifetime;
    let results: Vec<(String, RcptResult)> = if pending.is_empty() {
        Vec::new()
    } else if expired {
        // DLV-6: give up with the last error.
        let last = if entry.last_error.is_empty() {
            "421 4.4.7 Delivery time expired".to_string()
        } else {
            entry.last_error.clone()
        };
        pending.iter().map(|r| (r.clone(), RcptResult::Permanent(last.clone()))).collect()
    } else {
        match sign(ctx, &original).await {
            Ok(signed) => {
                let r = transport.attempt(ctx, &cfg, &entry.domain, &entry.sender, &pending, &signed).await;
                for (_, res) in &r.rcpts {
                    let result = match res {
                        RcptResult::Delivered(_) => "ok",
                        RcptResult::Permanent(_) => "bounced",
                        RcptResult::Temporary(_) => "deferred",
                    };
                    ctx.metrics
                        .delivery_attempts
                        .get_or_create(&vec![("transport", r.transport), ("result", result)])
                        .inc();
                }
                r.rcpts
            }
            Err(e) => {
                tracing::error!(queue_id = %entry.id, error = %e, "outbound: cannot DKIM-sign; retrying later");
                pending.iter().map(|r| (r.clone(), RcptResult::Temporary(reply::LOCAL_ERROR.to_string()))).collect()
            }
        }
    };
    let mut outcome = AttemptOutcome::default();
    let mut bounced = Vec::new();
    for (rcpt, res) in &results {
        match res {
            RcptResult::Delivered(t) => {
                outcome.rcpts.push((rcpt.clone(), queue_state::DONE, t.clone()));
                ctx.metrics
                    .delivery_latency
                    .get_or_create(&vec![("kind", "remote")])
                    .observe((now_secs() - entry.created_at).max(0) as f64);
            }
            RcptResult::Permanent(t) => {
                outcome.rcpts.push((rcpt.clone(), queue_state::BOUNCED, t.clone()));
                bounced.push((rcpt.clone(), t.clone()));
            }
            RcptResult::Temporary(t) => {
                outcome.rcpts.push((rcpt.clone(), queue_state::PENDING, t.clone()));
                outcome.last_error = t.clone();
            }
        }
    }
    if outcome.last_error.is_empty() {
        outcome.last_error = results.last().map(|(_, r)| r.text().to_string()).unwrap_or_default();
    }
    // Retry on schedule, but never later than the moment the entry expires.
    outcome.next_attempt = (now + retry_delay(entry.attempts)).min(entry.created_at + lifetime + 1);
    for (_, res) in &results {
        tracing::info!(queue_id = %entry.id, domain = %entry.domain, reply = %res.text(), "delivery result");
    }
    if !bounced.is_empty() {
        match bounce::send(ctx, &entry, &bounced, &original).await {
            Ok(()) => {}
            Err(bounce::BounceError::NoSender) => {
                tracing::warn!(queue_id = %entry.id, "delivery failed for a message with empty sender; not bounced");
            }
            Err(e) => tracing::warn!(queue_id = %entry.id, error = %e, "bounce not stored"),
        }
    }
    if let Err(e) = ctx.store.record_attempt(&entry.id, outcome).await {
        tracing::error!(queue_id = %entry.id, error = %e, "outbound: cannot record the attempt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlv5_schedule_with_jitter() {
        for (attempts, base) in [
            (0u32, 60i64),
            (1, 300),
            (2, 900),
            (3, 1800),
            (4, 3600),
            (5, 7200),
            (6, 14_400),
            (7, 28_800),
            (8, 28_800),
            (50, 28_800),
        ] {
            for _ in 0..20 {
                let d = retry_delay(attempts);
                assert!(d >= base && d <= base + base / 10, "attempt {attempts}: {d}");
            }
        }
    }
}
