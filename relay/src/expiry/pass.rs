//! One expiry pass over a store (RET-2, RET-3), used by `serve` and by `chatrelay expire`.

use tokio_util::sync::CancellationToken;

use crate::accounts::{Accounts, Secret};
use crate::metrics::Metrics;
use crate::store::{DeleteReason, ExpireRule, ExpiryReport, RetentionPolicy, Store, StoreError};

/// Orphan message files younger than this may belong to a delivery still in progress (RET-3).
pub const ORPHAN_MIN_AGE_SECS: u64 = 3600;

/// How inactive accounts are deleted: through `Accounts` inside `serve` (cache, metrics, session
/// close), or straight in the store with the data_dir's secret from the CLI.
#[derive(Clone, Copy)]
pub enum Remover<'a> {
    Live(&'a Accounts),
    Offline(&'a Secret),
}

/// Run one pass. Stops early (returning what it did) when `stop` is cancelled.
pub async fn run_pass(
    store: &Store,
    remover: Remover<'_>,
    p: RetentionPolicy,
    metrics: Option<&Metrics>,
    stop: &CancellationToken,
) -> Result<ExpiryReport, StoreError> {
    let rep = remove(store, remover, p, metrics, stop).await;
    // PRIV-16a: what the pass removed must not stay readable in the WAL, also after an early stop
    // or an error part-way.
    if let Err(e) = store.scrub().await {
        tracing::warn!(error = %e, "scrub after the expiry pass failed");
    }
    rep
}

async fn remove(
    store: &Store,
    remover: Remover<'_>,
    p: RetentionPolicy,
    metrics: Option<&Metrics>,
    stop: &CancellationToken,
) -> Result<ExpiryReport, StoreError> {
    let now = crate::store::now_secs();
    let mut rep = ExpiryReport::default();
    let count = |reason: &'static str, n: u64| {
        if let (Some(m), true) = (metrics, n > 0) {
            m.expiry_removed.get_or_create(&vec![("reason", reason)]).inc_by(n);
        }
    };

    // Step 1: inactive accounts (ACC-37), deleted with a tombstone.
    for acc in store.inactive_accounts(p, now).await? {
        if stop.is_cancelled() {
            return Ok(rep);
        }
        match remover {
            Remover::Live(accounts) => accounts.delete(&acc, DeleteReason::Inactive).await,
            Remover::Offline(secret) => store.delete_account_unscrubbed(acc.id, secret.tombstone(&acc.address)).await,
        }?;
        rep.accounts_deleted += 1;
        rep.bytes_freed += acc.usage_bytes;
        count("inactive_account", 1);
    }

    // Steps 2 and 3: old messages, then large seen ones, in batches (RET-12).
    for (rule, reason) in [(ExpireRule::Age, "age"), (ExpireRule::Large, "large")] {
        loop {
            if stop.is_cancelled() {
                return Ok(rep);
            }
            let r = store.expire_messages(rule, p, now).await?;
            match rule {
                ExpireRule::Age => rep.removed_age += r.count,
                ExpireRule::Large => rep.removed_large += r.count,
            }
            rep.bytes_freed += r.bytes;
            count(reason, r.count);
            if !r.more {
                break;
            }
        }
    }

    // Step 4: the quota trim of every account above 75 % (RET-5).
    for account in store.accounts_over(p.trim_threshold()).await? {
        let (n, bytes) = trim(store, account, p, now, stop).await?;
        rep.removed_quota += n;
        rep.bytes_freed += bytes;
        count("quota", n);
    }

    // RET-3: tokens, push jobs, expunge records, MTA-STS cache; then orphan files.
    loop {
        if stop.is_cancelled() {
            return Ok(rep);
        }
        let c = store.cleanup(now).await?;
        rep.tokens_expired += c.tokens;
        if !c.more {
            break;
        }
    }
    let orphans = store.orphan_blobs(ORPHAN_MIN_AGE_SECS).await?;
    rep.orphans_removed = store.remove_orphans(orphans).await?;
    // Issue 27: and objects in the bucket that no row names.
    // An unreachable object store fails only this step (the next pass retries it).
    match store.sweep_orphan_objects(now, false).await {
        Ok(n) => rep.orphans_removed += n,
        Err(e) => tracing::warn!(error = %e, "orphan object sweep failed"),
    }
    Ok(rep)
}

/// Trim one account in batches; returns (messages, bytes) removed.
pub async fn trim(
    store: &Store,
    account: crate::store::AccountId,
    p: RetentionPolicy,
    now: i64,
    stop: &CancellationToken,
) -> Result<(u64, u64), StoreError> {
    let (mut n, mut bytes) = (0, 0);
    loop {
        let r = store.trim_account(account, p, now).await?;
        n += r.count;
        bytes += r.bytes;
        if !r.more || stop.is_cancelled() {
            return Ok((n, bytes));
        }
    }
}

/// RET-14: the counts a pass would produce now, changing nothing.
pub async fn dry_run(store: &Store, p: RetentionPolicy) -> Result<ExpiryReport, StoreError> {
    let mut rep = store.expiry_dry_run(p, crate::store::now_secs()).await?;
    rep.orphans_removed = store.orphan_blobs(ORPHAN_MIN_AGE_SECS).await?.len() as u64;
    rep.orphans_removed += store.sweep_orphan_objects(crate::store::now_secs(), true).await?;
    Ok(rep)
}
