//! Retention (RET-2, RET-3) under the expiry advisory lock.

use super::accounts::by_id;
use super::mailbox_ops::remove_messages;
use super::*;

impl Pg {
    // ---- retention (RET-2, RET-3) ----
    // Each batch is one transaction that first takes `pg_try_advisory_xact_lock`: one node
    // expires at a time and another node's pass finds the batch taken and skips it (rows are
    // locked by their DELETE anyway, so two passes could never remove a message twice).

    async fn expiry_turn(tx: &Tx<'_>) -> Result<bool> {
        Ok(tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&schema::LOCK_EXPIRY]).await?.get(0))
    }

    pub(crate) async fn inactive_accounts(&self, before_day: i64) -> Result<Vec<Account>> {
        let c = self.client().await?;
        let st = format!("SELECT {ACC_COLS} FROM accounts WHERE last_login_day < $1 ORDER BY id");
        Ok(c.query(&st, &[&before_day]).await?.iter().map(account_of).collect())
    }

    pub(crate) async fn accounts_over(&self, threshold: u64) -> Result<Vec<AccountId>> {
        let c = self.client().await?;
        let rows =
            c.query("SELECT id FROM accounts WHERE usage_bytes > $1 ORDER BY id", &[&(threshold as i64)]).await?;
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
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        let (count, bytes) = Self::remove_victims(&tx, victims, &mut p, &mut objects).await?;
        self.commit_publish(tx, p, objects).await?;
        Ok(Removed { count, bytes, more: full })
    }

    pub(crate) async fn trim_account(&self, account: AccountId, pol: RetentionPolicy, now: i64) -> Result<Removed> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !Self::expiry_turn(&tx).await? {
            return Ok(Removed::default());
        }
        let Some(acc) = by_id(&tx, account).await? else { return Ok(Removed::default()) };
        let target = pol.trim_target();
        let mut usage = acc.usage_bytes;
        if usage <= target {
            return Ok(Removed::default());
        }
        let rows = tx
            .query(
                "SELECT b.account_id, m.mailbox_id, m.uid, m.size, m.internal_date FROM messages m
                 JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = $1 ORDER BY m.internal_date, m.uid LIMIT $2",
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
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        let (count, bytes) = Self::remove_victims(&tx, victims, &mut p, &mut objects).await?;
        self.commit_publish(tx, p, objects).await?;
        Ok(Removed { count, bytes, more: full && !stopped && usage > target })
    }

    pub(crate) async fn cleanup(&self, now: i64) -> Result<Cleanup> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !Self::expiry_turn(&tx).await? {
            return Ok(Cleanup::default());
        }
        let lim = BATCH as i64;
        let tokens = tx
            .execute(
                "DELETE FROM push_tokens WHERE (account_id, token) IN
                   (SELECT account_id, token FROM push_tokens WHERE set_at <= $1 LIMIT $2)",
                &[&(now - crate::store::push::TOKEN_LIFETIME_SECS), &lim],
            )
            .await?;
        let push_jobs = tx
            .execute(
                "DELETE FROM push_jobs WHERE id IN (SELECT id FROM push_jobs j WHERE created_at < $1
                   OR NOT EXISTS (SELECT 1 FROM push_tokens t WHERE t.account_id = j.account_id AND t.token = j.token)
                   LIMIT $2)",
                &[&(now * 1000 - PUSH_JOB_MAX_AGE_MS), &lim],
            )
            .await?;
        let expunged = tx
            .execute(
                "DELETE FROM expunged WHERE (mailbox_id, uid) IN
                   (SELECT mailbox_id, uid FROM expunged WHERE expunged_at < $1 LIMIT $2)",
                &[&(now - EXPUNGED_KEEP_SECS), &lim],
            )
            .await?;
        let mta_sts = tx
            .execute(
                "DELETE FROM mta_sts WHERE domain IN (SELECT domain FROM mta_sts WHERE fetched_at + max_age < $1 LIMIT $2)",
                &[&now, &lim],
            )
            .await?;
        tx.commit().await?;
        let b = BATCH as u64;
        Ok(Cleanup {
            tokens,
            push_jobs,
            expunged,
            mta_sts,
            more: [tokens, push_jobs, expunged, mta_sts].iter().any(|n| *n >= b),
        })
    }
}
