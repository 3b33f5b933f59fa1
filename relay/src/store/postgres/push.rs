//! Push tokens (IMAP METADATA /private/devicetoken) and push jobs (push.md).

use super::*;

/// PUSH-13 as on SQLite: one pending job per valid token, later messages merged into it.
pub(super) async fn enqueue_push(tx: &Tx<'_>, account: AccountId, now_ms: i64) -> Result<()> {
    let now = now_ms / 1000;
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO push_jobs(account_id, token, created_at, next_attempt, last_message_at)
         SELECT account_id, token, $2, $2, $2 FROM push_tokens
         WHERE account_id = $1 AND set_at > $3 AND set_at <= $4
         ON CONFLICT(account_id, token) DO UPDATE SET
           messages = push_jobs.messages + 1, last_message_at = excluded.last_message_at",
        )
        .await?,
        &[&account, &now_ms, &(now - crate::store::push::TOKEN_LIFETIME_SECS), &(now + 60)],
    )
    .await?;
    Ok(())
}

/// How long a claimed push job is left to its node: a request takes seconds; a node that died
/// holding it hands it on after this.
pub(super) const PUSH_LEASE_MS: i64 = 30_000;

impl Pg {
    // ---- push tokens (IMAP METADATA /private/devicetoken) ----

    pub(crate) async fn add_push_token(&self, account: AccountId, token: String, max: usize) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO push_tokens(account_id, token, set_at) VALUES($1, $2, $3)
             ON CONFLICT(account_id, token) DO UPDATE SET set_at = excluded.set_at",
            )
            .await?,
            &[&account, &token, &now_secs()],
        )
        .await?;
        tx.execute(
            &tx.prepare_cached(
                "DELETE FROM push_tokens WHERE account_id = $1 AND token NOT IN
             (SELECT token FROM push_tokens WHERE account_id = $1 ORDER BY set_at DESC, token LIMIT $2)",
            )
            .await?,
            &[&account, &(max as i64)],
        )
        .await?;
        tx.execute(&tx.prepare_cached("DELETE FROM push_jobs WHERE account_id = $1 AND token NOT IN (SELECT token FROM push_tokens WHERE account_id = $1)").await?,
            &[&account],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn clear_push_tokens(&self, account: AccountId) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(&tx.prepare_cached("DELETE FROM push_tokens WHERE account_id = $1").await?, &[&account]).await?;
        tx.execute(&tx.prepare_cached("DELETE FROM push_jobs WHERE account_id = $1").await?, &[&account]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn push_tokens(&self, account: AccountId, valid_after: i64, now: i64) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c.query(&c.prepare_cached("SELECT token FROM push_tokens WHERE account_id = $1 AND set_at > $2 AND set_at <= $3 ORDER BY set_at, token").await?,
                &[&account, &valid_after, &(now + 60)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    // ---- push jobs (push.md) ----

    /// Due jobs, claimed for this node with `FOR UPDATE SKIP LOCKED` as a lease (`next_attempt`
    /// moved `PUSH_LEASE_MS` ahead) that done/retry/defer/drop replace: each job is sent by one
    /// node. The job returned carries its `next_attempt` from before the claim.
    ///
    /// PUSH-14 across nodes: a token whose last request succeeded less than the window ago
    /// (`push_tokens.quiet_until`, set by `push_job_done` in the transaction that ends the job)
    /// has its job moved to the end of the window in the same statement instead of claimed, on
    /// whichever node claims it. A job made after that commit can only be claimed by a statement
    /// that sees it, so no node can miss the window (the job row is unique per token).
    pub(crate) async fn claim_push_jobs(&self, now_ms: i64, limit: usize) -> Result<Vec<PushJob>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                &tx.prepare_cached(
                    "WITH picked AS (
                    SELECT j.id, j.next_attempt, coalesce(t.quiet_until, 0) AS quiet_until
                    FROM push_jobs j LEFT JOIN push_tokens t ON t.account_id = j.account_id AND t.token = j.token
                    WHERE j.next_attempt <= $1
                    ORDER BY j.attempts > 0, j.next_attempt LIMIT $2 FOR UPDATE OF j SKIP LOCKED
                 )
                 UPDATE push_jobs j SET next_attempt =
                   CASE WHEN picked.quiet_until > $1 THEN picked.quiet_until ELSE $3 END
                 FROM picked WHERE j.id = picked.id
                 RETURNING j.id, j.account_id, j.token, j.created_at, j.first_attempt, picked.next_attempt,
                           j.attempts, j.messages, picked.quiet_until > $1",
                )
                .await?,
                &[&now_ms, &(limit as i64), &(now_ms + PUSH_LEASE_MS)],
            )
            .await?;
        tx.commit().await?;
        let mut jobs: Vec<PushJob> = rows
            .iter()
            .filter(|r| !r.get::<_, bool>(8))
            .map(|r| PushJob {
                id: r.get(0),
                account: r.get(1),
                token: r.get(2),
                created_at_ms: r.get(3),
                first_attempt_ms: r.get(4),
                next_attempt_ms: r.get(5),
                attempts: r.get::<_, i64>(6).max(0) as u32,
                messages: r.get::<_, i64>(7).max(0) as u32,
            })
            .collect();
        jobs.sort_by_key(|j| (j.attempts > 0, j.next_attempt_ms));
        Ok(jobs)
    }

    pub(crate) async fn push_schedule(&self, now_ms: i64) -> Result<(Option<i64>, u64)> {
        let c = self.client().await?;
        let r = c.query_one(&c.prepare_cached("SELECT (SELECT min(next_attempt) FROM push_jobs WHERE next_attempt > $1), (SELECT count(*) FROM push_jobs)").await?,
                &[&now_ms],
            )
            .await?;
        Ok((r.get(0), r.get::<_, i64>(1).max(0) as u64))
    }

    pub(crate) async fn push_job_done(&self, id: i64, seen: u32, rearm_at_ms: i64) -> Result<JobDone> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let seen = i64::from(seen);
        // PUSH-14: the token's window, for every node's next claim (`rearm_at_ms` is its end).
        tx.execute(
            &tx.prepare_cached(
                "UPDATE push_tokens t SET quiet_until = greatest(t.quiet_until, $2) FROM push_jobs j
             WHERE j.id = $1 AND t.account_id = j.account_id AND t.token = j.token",
            )
            .await?,
            &[&id, &rearm_at_ms],
        )
        .await?;
        let n = tx
            .execute(&tx.prepare_cached("DELETE FROM push_jobs WHERE id = $1 AND messages <= $2").await?, &[&id, &seen])
            .await?;
        let out = if n > 0 {
            JobDone::Deleted
        } else {
            let n = tx
                .execute(
                    &tx.prepare_cached(
                        "UPDATE push_jobs SET messages = greatest(1, messages - $2), created_at = last_message_at,
                       first_attempt = NULL, attempts = 0, next_attempt = $3 WHERE id = $1",
                    )
                    .await?,
                    &[&id, &seen, &rearm_at_ms],
                )
                .await?;
            if n > 0 { JobDone::Rearmed } else { JobDone::Deleted }
        };
        tx.commit().await?;
        Ok(out)
    }

    /// One statement on the push tables (retry, defer, drop, token removal).
    pub(crate) async fn push_job_set(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<()> {
        self.client().await?.execute(sql, params).await?;
        Ok(())
    }
}
