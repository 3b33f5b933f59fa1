//! Retention (RET-2, RET-3) under the expiry advisory lock.

use super::accounts::{by_id, delete_account_in};
use super::mailbox_ops::remove_messages;
use super::*;
use crate::store::retention::ExpiryReport;

impl Pg {
    // ---- retention (RET-2, RET-3) ----
    // Each batch is one transaction that first takes `pg_try_advisory_xact_lock`: one node
    // expires at a time and another node's pass finds the batch taken and skips it (rows are
    // locked by their DELETE anyway, so two passes could never remove a message twice).

    pub(super) async fn expiry_turn(tx: &Tx<'_>) -> Result<bool> {
        Ok(tx
            .query_one(&tx.prepare_cached("SELECT pg_try_advisory_xact_lock($1)").await?, &[&schema::LOCK_EXPIRY])
            .await?
            .get(0))
    }

    pub(crate) async fn inactive_accounts(&self, before_day: i64) -> Result<Vec<Account>> {
        let c = self.client().await?;
        let st = format!("SELECT {ACC_COLS} FROM accounts WHERE last_login_day < $1 ORDER BY id");
        Ok(c.query(&st, &[&before_day]).await?.iter().map(account_of).collect())
    }

    pub(crate) async fn accounts_over(&self, threshold: u64) -> Result<Vec<AccountId>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached("SELECT id FROM accounts WHERE usage_bytes > $1 ORDER BY id").await?,
                &[&(threshold as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Remove `victims` (account, mailbox, uid, size) in `tx`; returns (count, bytes).
    async fn remove_victims(
        tx: &Tx<'_>,
        victims: Vec<(AccountId, MailboxId, u32, u64)>,
        p: &mut Pending,
        objects: &mut Vec<String>,
    ) -> Result<(u64, u64)> {
        let mut by_box: std::collections::BTreeMap<(AccountId, MailboxId), Vec<u32>> = Default::default();
        for (a, m, uid, _) in &victims {
            by_box.entry((*a, *m)).or_default().push(*uid);
        }
        let accounts: Vec<AccountId> = by_box.keys().map(|k| k.0).collect();
        lock_accounts(tx, &accounts).await?;
        let (mut count, mut bytes) = (0u64, 0u64);
        for ((account, mailbox), uids) in by_box {
            let (removed, freed) = remove_messages(tx, account, mailbox, &uids, p, objects).await?;
            count += removed.len() as u64;
            bytes += freed.max(0) as u64;
        }
        Ok((count, bytes))
    }

    pub(crate) async fn expire_messages(&self, rule: ExpireRule, pol: RetentionPolicy, now: i64) -> Result<Removed> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !Self::expiry_turn(&tx).await? {
            return Ok(Removed::default());
        }
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        let r = Self::expire_in(&tx, rule, &pol, now, &mut p, &mut objects).await?;
        self.commit_publish(tx, p, objects).await?;
        Ok(r)
    }

    /// One batch of the age or large rule in `tx`.
    async fn expire_in(
        tx: &Tx<'_>,
        rule: ExpireRule,
        pol: &RetentionPolicy,
        now: i64,
        p: &mut Pending,
        objects: &mut Vec<String>,
    ) -> Result<Removed> {
        const COLS: &str =
            "SELECT b.account_id, m.mailbox_id, m.uid, m.size FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id";
        let batch = BATCH as i64;
        let rows = match rule {
            ExpireRule::Age => {
                let st = format!("{COLS} WHERE m.internal_date < $1 ORDER BY m.internal_date LIMIT $2");
                tx.query(&st, &[&(now - pol.delete_mails_after_secs), &batch]).await?
            }
            ExpireRule::Large => {
                let st = format!(
                    "{COLS} WHERE m.internal_date < $1 AND m.size > $2 AND (m.flags & $3) != 0 ORDER BY m.internal_date LIMIT $4"
                );
                let seen = i64::from(Flags::SEEN);
                tx.query(&st, &[&(now - pol.delete_large_after_secs), &(pol.large_message_size as i64), &seen, &batch])
                    .await?
            }
        };
        let full = rows.len() >= BATCH;
        let victims = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u32, r.get::<_, i64>(3).max(0) as u64))
            .collect();
        let (count, bytes) = Self::remove_victims(tx, victims, p, objects).await?;
        Ok(Removed { count, bytes, more: full })
    }

    pub(crate) async fn trim_account(&self, account: AccountId, pol: RetentionPolicy, now: i64) -> Result<Removed> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !Self::expiry_turn(&tx).await? {
            return Ok(Removed::default());
        }
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        let r = Self::trim_in(&tx, account, &pol, now, &mut p, &mut objects).await?;
        self.commit_publish(tx, p, objects).await?;
        Ok(r)
    }

    /// One batch of the quota trim of `account` in `tx`.
    async fn trim_in(
        tx: &Tx<'_>,
        account: AccountId,
        pol: &RetentionPolicy,
        now: i64,
        p: &mut Pending,
        objects: &mut Vec<String>,
    ) -> Result<Removed> {
        let Some(acc) = by_id(tx, account).await? else { return Ok(Removed::default()) };
        let target = pol.trim_target();
        let mut usage = acc.usage_bytes;
        if usage <= target {
            return Ok(Removed::default());
        }
        let rows = tx.query(&tx.prepare_cached("SELECT b.account_id, m.mailbox_id, m.uid, m.size, m.internal_date FROM messages m
                 JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = $1 ORDER BY m.internal_date, m.uid LIMIT $2").await?,
                &[&account, &(BATCH as i64)],
            )
            .await?;
        let full = rows.len() >= BATCH;
        let (mut victims, mut stopped) = (Vec::new(), false);
        for r in &rows {
            let size = r.get::<_, i64>(3).max(0) as u64;
            if usage <= target || r.get::<_, i64>(4) > now - TRIM_MIN_AGE_SECS {
                stopped = true;
                break;
            }
            usage = usage.saturating_sub(size);
            victims.push((r.get(0), r.get(1), r.get::<_, i64>(2) as u32, size));
        }
        let (count, bytes) = Self::remove_victims(tx, victims, p, objects).await?;
        Ok(Removed { count, bytes, more: full && !stopped && usage > target })
    }

    pub(crate) async fn cleanup(&self, now: i64) -> Result<Cleanup> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !Self::expiry_turn(&tx).await? {
            return Ok(Cleanup::default());
        }
        let r = Self::cleanup_in(&tx, now).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// One batch of each kind of RET-3 cleanup in `tx`.
    async fn cleanup_in(tx: &Tx<'_>, now: i64) -> Result<Cleanup> {
        let lim = BATCH as i64;
        let tokens = tx
            .execute(
                &tx.prepare_cached(
                    "DELETE FROM push_tokens WHERE (account_id, token) IN
                   (SELECT account_id, token FROM push_tokens WHERE set_at <= $1 LIMIT $2)",
                )
                .await?,
                &[&(now - crate::store::push::TOKEN_LIFETIME_SECS), &lim],
            )
            .await?;
        let push_jobs = tx
            .execute(
                &tx.prepare_cached(
                    "DELETE FROM push_jobs WHERE id IN (SELECT id FROM push_jobs j WHERE created_at < $1
                   OR NOT EXISTS (SELECT 1 FROM push_tokens t WHERE t.account_id = j.account_id AND t.token = j.token)
                   LIMIT $2)",
                )
                .await?,
                &[&(now * 1000 - PUSH_JOB_MAX_AGE_MS), &lim],
            )
            .await?;
        let expunged = tx
            .execute(
                &tx.prepare_cached(
                    "DELETE FROM expunged WHERE (mailbox_id, uid) IN
                   (SELECT mailbox_id, uid FROM expunged WHERE expunged_at < $1 LIMIT $2)",
                )
                .await?,
                &[&(now - EXPUNGED_KEEP_SECS), &lim],
            )
            .await?;
        let mta_sts = tx.execute(&tx.prepare_cached("DELETE FROM mta_sts WHERE domain IN (SELECT domain FROM mta_sts WHERE fetched_at + max_age < $1 LIMIT $2)").await?,
                &[&now, &lim],
            )
            .await?;
        let b = BATCH as u64;
        Ok(Cleanup {
            tokens,
            push_jobs,
            expunged,
            mta_sts,
            more: [tokens, push_jobs, expunged, mta_sts].iter().any(|n| *n >= b),
        })
    }

    /// RET-14 on PostgreSQL: the database part of a whole pass in one transaction, rolled back,
    /// so the counts are exactly those a pass would produce now and nothing changes (no NOTIFY
    /// is sent, no object deleted). Without the expiry lock: it changes nothing, so it need not
    /// wait for another node's pass; the rows it deletes stay locked only until the rollback.
    pub(crate) async fn expiry_dry_run(&self, pol: RetentionPolicy, now: i64) -> Result<ExpiryReport> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        let mut rep = ExpiryReport::default();
        let st = format!("SELECT {ACC_COLS} FROM accounts WHERE last_login_day < $1 ORDER BY id");
        let inactive: Vec<Account> =
            tx.query(&st, &[&pol.inactive_before_day(now)]).await?.iter().map(account_of).collect();
        for acc in inactive {
            objects.extend(delete_account_in(&tx, acc.id, None).await?);
            rep.accounts_deleted += 1;
            rep.bytes_freed += acc.usage_bytes;
        }
        for rule in [ExpireRule::Age, ExpireRule::Large] {
            loop {
                let r = Self::expire_in(&tx, rule, &pol, now, &mut p, &mut objects).await?;
                match rule {
                    ExpireRule::Age => rep.removed_age += r.count,
                    ExpireRule::Large => rep.removed_large += r.count,
                }
                rep.bytes_freed += r.bytes;
                if !r.more {
                    break;
                }
            }
        }
        let over: Vec<AccountId> = tx
            .query(
                &tx.prepare_cached("SELECT id FROM accounts WHERE usage_bytes > $1 ORDER BY id").await?,
                &[&(pol.trim_threshold() as i64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for account in over {
            loop {
                let r = Self::trim_in(&tx, account, &pol, now, &mut p, &mut objects).await?;
                rep.removed_quota += r.count;
                rep.bytes_freed += r.bytes;
                if !r.more {
                    break;
                }
            }
        }
        loop {
            let c = Self::cleanup_in(&tx, now).await?;
            rep.tokens_expired += c.tokens;
            if !c.more {
                break;
            }
        }
        tx.rollback().await?;
        Ok(rep)
    }
}
