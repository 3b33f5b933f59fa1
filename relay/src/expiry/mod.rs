//! Retention (retention.md): the periodic expiry pass, the quota trim after deliveries and before
//! accepting a recipient, and the pass behind `chatrelay expire`.
//!
//! In: the config's retention keys and the store. Out: deleted messages and accounts, counted in
//! `chatrelay_expiry_removed_total{reason}` and `chatrelay_expiry_duration_seconds`.
//! Rules: every deletion goes through the store's shared remove primitive in batches of at most
//! 1000 (RET-11, RET-12), so deliveries and logins interleave and IMAP sessions see EXPUNGE; the
//! pass never runs on the delivery path except `make_room` (RET-8); it returns on shutdown.

pub mod pass;

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::config::Config;
use crate::context::Ctx;
use crate::store::{AccountId, ExpiryReport, RetentionPolicy, StoreError};

pub use pass::{Remover, dry_run, run_pass};

/// The config's retention keys in store terms.
pub fn policy(cfg: &Config) -> RetentionPolicy {
    let secs = |d: crate::config::ConfDuration| i64::try_from(d.get().as_secs()).unwrap_or(i64::MAX / 4);
    RetentionPolicy {
        delete_mails_after_secs: secs(cfg.delete_mails_after),
        delete_large_after_secs: secs(cfg.delete_large_after),
        large_message_size: cfg.large_message_size.bytes(),
        delete_inactive_after_secs: secs(cfg.delete_inactive_users_after),
        max_mailbox_size: cfg.max_mailbox_size.bytes(),
    }
}

/// How often the expiry task looks for a reloaded `expire_interval`.
const RECONFIG_CHECK: Duration = Duration::from_secs(1);

fn interval(cfg: &Config) -> Duration {
    cfg.expire_interval.get().max(Duration::from_secs(1))
}

/// The expiry task of `serve`: a pass every `expire_interval`, the first one interval after start
/// (RET-1), and a trim of any account a delivery lifted above 75 % (RET-6).
pub async fn run(ctx: Ctx) {
    let mut stored = ctx.store.events().subscribe_stored();
    let mut current = interval(&ctx.config.get());
    let mut last = Instant::now();
    let mut next = last + current;
    // A SIGHUP may change expire_interval: it counts from the last pass at once (issue 31),
    // instead of after the old sleep.
    let mut reconfig = tokio::time::interval(RECONFIG_CHECK);
    reconfig.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {
                let _ = one_pass(&ctx, "interval").await;
                last = Instant::now();
                current = interval(&ctx.config.get());
                next = last + current;
            }
            _ = reconfig.tick() => {
                let now = interval(&ctx.config.get());
                if now != current {
                    current = now;
                    next = last + now;
                }
            }
            ev = stored.recv() => match ev {
                Ok(m) => trim_if_over(&ctx, m.account, m.usage_bytes).await,
                // The next pass covers whatever we missed.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => {
                    ctx.shutdown.cancelled().await;
                    return;
                }
            },
        }
    }
}

/// RET-15: `chatrelay expire [--dry-run]` through the control socket; returns the summary.
pub async fn control_pass(ctx: &Ctx, dry: bool) -> Result<String, String> {
    let report =
        if dry { dry_run(&ctx.store, policy(&ctx.config.get())).await } else { one_pass(ctx, "control").await };
    report.map(|r| summary(&r, dry)).map_err(|e| e.to_string())
}

/// The summary of RET-13; `--dry-run` prints the same numbers under a header saying nothing changed.
pub fn summary(r: &ExpiryReport, dry_run: bool) -> String {
    let head = if dry_run { "dry run: nothing was changed; a pass would remove:\n" } else { "" };
    format!(
        "{head}accounts deleted: {}\nmessages deleted (age): {}\nmessages deleted (large): {}\nmessages deleted (quota): {}\nbytes freed: {}\npush tokens expired: {}\norphan files removed: {}\n",
        r.accounts_deleted,
        r.removed_age,
        r.removed_large,
        r.removed_quota,
        r.bytes_freed,
        r.tokens_expired,
        r.orphans_removed
    )
}

async fn one_pass(ctx: &Ctx, trigger: &'static str) -> Result<ExpiryReport, StoreError> {
    let started = std::time::Instant::now();
    let p = policy(&ctx.config.get());
    let res = run_pass(&ctx.store, Remover::Live(&ctx.accounts), p, Some(&ctx.metrics), &ctx.shutdown).await;
    let secs = started.elapsed().as_secs_f64();
    ctx.metrics.expiry_duration.observe(secs);
    match &res {
        Ok(r) => tracing::info!(
            trigger,
            accounts_deleted = r.accounts_deleted,
            removed_age = r.removed_age,
            removed_large = r.removed_large,
            removed_quota = r.removed_quota,
            bytes_freed = r.bytes_freed,
            tokens_expired = r.tokens_expired,
            orphans_removed = r.orphans_removed,
            duration_ms = (secs * 1000.0) as u64,
            "expiry pass done"
        ),
        Err(e) => tracing::error!(error = %e, trigger, "expiry pass failed"),
    }
    res
}

/// RET-6: after a delivery, trim the account if it is above 75 %. The event carries the usage the
/// delivery committed, so the common case reads nothing; the trim itself reads the current rows.
async fn trim_if_over(ctx: &Ctx, account: AccountId, usage_bytes: u64) {
    let p = policy(&ctx.config.get());
    if usage_bytes > p.trim_threshold() {
        trim_now(ctx, account, p).await;
    }
}

async fn trim_now(ctx: &Ctx, account: AccountId, p: RetentionPolicy) {
    match pass::trim(&ctx.store, account, p, crate::store::now_secs(), &ctx.shutdown).await {
        Ok((n, bytes)) if n > 0 => {
            ctx.metrics.expiry_removed.get_or_create(&vec![("reason", "quota")]).inc_by(n);
            tracing::info!(removed = n, bytes_freed = bytes, "mailbox trimmed");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "mailbox trim failed"),
    }
}

/// RET-8: called when a recipient is given. If the account is at or above `max_mailbox_size`, trim
/// first; returns whether usage is now below the limit (false: answer `452 4.2.2 Mailbox full`).
/// Unknown accounts and store errors return true so the caller's own checks decide.
pub async fn make_room(ctx: &Ctx, account: AccountId) -> bool {
    let p = policy(&ctx.config.get());
    let usage = match ctx.store.account_by_id(account).await {
        Ok(Some(acc)) => acc.usage_bytes,
        _ => return true,
    };
    if usage < p.max_mailbox_size {
        return true;
    }
    trim_now(ctx, account, p).await;
    match ctx.store.account_by_id(account).await {
        Ok(Some(acc)) => acc.usage_bytes < p.max_mailbox_size,
        _ => true,
    }
}
