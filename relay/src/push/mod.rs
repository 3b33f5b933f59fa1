//! Push notifications to the notification proxy (push.md).
//!
//! In: durable jobs that the delivery transaction creates (`store::push`, one pending job per
//! token, self-sent copies excluded), woken by `MessageStored` events, by a timer for retries and
//! by a 1 s poll (so jobs written by another process, e.g. `chatrelay` CLI tools or tests, are seen
//! too). Out: `POST <push.notify_url>` with the token as the whole body.
//! Rules: 200 done, 410 token dead, anything else retried after 1, 8, 64, 512, 4096 s and dropped
//! past 5 h (PUSH-9, PUSH-10); at most 16 requests in flight, first attempts before retries
//! (PUSH-12); at most one request per token per 2 s, and a message merged into a job while its
//! request is in flight re-arms the job, so the last message of a burst is always notified
//! (PUSH-13..15). Tokens never reach a log or a metric label (PUSH-16, PUSH-17).

pub mod client;
mod outcome;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use crate::context::Ctx;
use crate::store::{AccountId, PushJob, now_millis};

pub use client::Client;

/// PUSH-12.
pub const MAX_IN_FLIGHT: usize = 16;
/// PUSH-14: at most one request per token per this window.
pub const COALESCE_MS: i64 = 2000;
/// PUSH-10: no attempt starts later than this after the first one.
pub const GIVE_UP_MS: i64 = 5 * 3600 * 1000;
/// Idle poll for jobs written by other processes and for the pending gauge.
const POLL_MS: i64 = 1000;

/// The result of one request, as the scheduler sees it.
pub(crate) struct Attempt {
    job: PushJob,
    started_ms: i64,
    result: Result<u16, client::ClientError>,
}

/// The notifier task of `serve`. On shutdown it lets requests in flight finish for up to 30 s
/// (OPS-16); jobs not finished stay in the database for the next start (PUSH-11).
pub async fn run(ctx: Ctx) {
    let roots = ctx.config.get().delivery.extra_root_certs.clone();
    let Some(client) = make_client(&roots) else {
        return ctx.shutdown.cancelled().await;
    };
    let mut n = Notifier {
        ctx: ctx.clone(),
        client,
        roots,
        in_flight: HashSet::new(),
        quiet_until: 0,
        last_ok: HashMap::new(),
        tags: std::collections::hash_map::RandomState::new(),
        requests: JoinSet::new(),
    };
    let mut stored = ctx.store.events().subscribe_stored();
    loop {
        let wake_at = n.round().await;
        let sleep = Duration::from_millis(wake_at.saturating_sub(now_millis()).max(0) as u64);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            Some(done) = n.requests.join_next(), if !n.requests.is_empty() => {
                if let Ok(a) = done {
                    n.finish(a).await;
                }
            }
            ev = stored.recv() => match ev {
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    ctx.shutdown.cancelled().await;
                    break;
                }
            },
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    // OPS-16: let running requests finish for up to 30 s; unfinished jobs stay in the database.
    let grace = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(grace);
    while !n.requests.is_empty() {
        tokio::select! {
            _ = &mut grace => break,
            done = n.requests.join_next() => match done {
                Some(Ok(a)) => n.finish(a).await,
                Some(Err(_)) => {}
                None => break,
            },
        }
    }
    n.requests.abort_all();
}

/// The client for `extra_root_certs`; a bad bundle falls back to the built-in roots (logged).
fn make_client(extra_root_certs: &str) -> Option<Client> {
    match Client::new(extra_root_certs) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "push client uses the built-in roots only");
            Client::new("").map_err(|e| tracing::error!(error = %e, "push disabled: no TLS client")).ok()
        }
    }
}

pub(crate) struct Notifier {
    ctx: Ctx,
    client: Client,
    /// The `extra_root_certs` the client was built with; a SIGHUP that changes it rebuilds it.
    roots: String,
    /// Job ids with a request in flight (they are still due in the database).
    in_flight: HashSet<i64>,
    /// When the last 200 for a token arrived (Unix ms), for the 2 s window. Pruned each round.
    last_ok: HashMap<(AccountId, String), i64>,
    /// Keyed hasher that turns job ids into log tags (PUSH-17).
    tags: std::collections::hash_map::RandomState,
    requests: JoinSet<Attempt>,
    /// With push off: when to read the leftover jobs' schedule again (Unix ms).
    quiet_until: i64,
}

impl Notifier {
    fn tag(&self, id: i64) -> String {
        format!("{:08x}", self.tags.hash_one(id) as u32)
    }

    /// Start what is due; return when to look again (Unix ms).
    async fn round(&mut self) -> i64 {
        let now = now_millis();
        self.last_ok.retain(|_, t| *t + COALESCE_MS > now);
        let cfg = self.ctx.config.get();
        if cfg.delivery.extra_root_certs != self.roots {
            self.roots = cfg.delivery.extra_root_certs.clone();
            if let Some(c) = make_client(&self.roots) {
                self.client = c;
            }
        }
        let url = cfg.push.notify_url.trim().to_string();
        // Push off: no job can start, so a stored message is no reason to read the store (two
        // blocking-pool reads per delivery, on the IMAP wake-up's path); poll once per interval.
        if url.is_empty() && now < self.quiet_until {
            return self.quiet_until;
        }
        if !url.is_empty() && self.in_flight.len() < MAX_IN_FLIGHT {
            let want = MAX_IN_FLIGHT + self.in_flight.len();
            match self.ctx.store.due_push_jobs(now, want).await {
                Ok(jobs) => {
                    for job in jobs {
                        if self.in_flight.len() >= MAX_IN_FLIGHT {
                            break;
                        }
                        if !self.in_flight.contains(&job.id) {
                            self.start(job, &url, now).await;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading push jobs failed"),
            }
        }
        let mut wake = now + POLL_MS;
        match self.ctx.store.push_schedule(now).await {
            Ok((next, pending)) => {
                self.ctx.metrics.push_pending.set(pending as i64);
                if let Some(t) = next {
                    wake = wake.min(t);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading push schedule failed"),
        }
        if url.is_empty() {
            self.quiet_until = now + POLL_MS;
        }
        wake
    }

    async fn start(&mut self, job: PushJob, url: &str, now: i64) {
        let store = &self.ctx.store;
        // PUSH-10/11: a job whose first attempt lies more than 5 h back (or that waited that long
        // through a restart) is dropped.
        let first = job.first_attempt_ms.unwrap_or(job.created_at_ms);
        if now > first + GIVE_UP_MS {
            self.ctx.metrics.push_requests.get_or_create(&vec![("result", "dropped")]).inc();
            tracing::info!(job = %self.tag(job.id), "push job dropped: too old");
            if let Err(e) = store.push_job_drop(job.id).await {
                tracing::warn!(error = %e, "dropping push job failed");
            }
            return;
        }
        // PUSH-14: a token notified less than 2 s ago waits for the end of that window. (On
        // PostgreSQL the claim already applied the window of every node: store/postgres/push.rs.)
        if let Some(&ok_at) = self.last_ok.get(&(job.account, job.token.clone()))
            && now < ok_at + COALESCE_MS
        {
            if let Err(e) = store.push_job_defer(job.id, ok_at + COALESCE_MS).await {
                tracing::warn!(error = %e, "deferring push job failed");
            }
            return;
        }
        tracing::debug!(job = %self.tag(job.id), attempt = job.attempts + 1, "push request");
        self.in_flight.insert(job.id);
        let client = self.client.clone();
        let url = url.to_string();
        self.requests.spawn(async move {
            let result = client.post(&url, job.token.clone()).await;
            Attempt { job, started_ms: now, result }
        });
    }
}
