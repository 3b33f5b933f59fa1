//! Push tokens and durable push jobs (push.md). At most one pending job per token (PUSH-13).

use rusqlite::params;

use super::accounts::AccountId;
use super::writer::Tx;
use super::{Result, Store};

/// Tokens are valid for 90 days after they were last set (IMAP-37).
pub const TOKEN_LIFETIME_SECS: i64 = 90 * 86_400;

/// A pending notification for one token. `messages` counts the messages merged into it; the
/// notifier passes the count it saw back to `push_job_done`, so a message merged while the request
/// was in flight re-arms the job instead of being lost (PUSH-15).
#[derive(Debug, Clone)]
pub struct PushJob {
    pub id: i64,
    pub account: AccountId,
    pub token: String,
    pub created_at_ms: i64,
    pub first_attempt_ms: Option<i64>,
    pub next_attempt_ms: i64,
    pub attempts: u32,
    pub messages: u32,
}

/// Create one pending job per valid token of the account, or merge into the pending one (PUSH-13).
pub(crate) fn enqueue_for_account(tx: &Tx<'_>, account: AccountId, now_ms: i64) -> Result<()> {
    let now = now_ms / 1000;
    tx.prepare_cached(
        "INSERT INTO push_jobs(account_id, token, created_at, next_attempt, last_message_at)
         SELECT account_id, token, ?2, ?2, ?2 FROM push_tokens
         WHERE account_id = ?1 AND set_at > ?3 AND set_at <= ?4
         ON CONFLICT(account_id, token) DO UPDATE SET
           messages = messages + 1, last_message_at = excluded.last_message_at",
    )?
    .execute(params![account, now_ms, now - TOKEN_LIFETIME_SECS, now + 60])?;
    Ok(())
}

/// How a finished request left its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobDone {
    /// Nothing arrived meanwhile: the job is gone.
    Deleted,
    /// Messages arrived while the request was in flight: the job waits until `next_attempt_ms`.
    Rearmed,
}

impl Store {
    /// Jobs due at `now_ms`, first attempts before retries (PUSH-12).
    pub async fn due_push_jobs(&self, now_ms: i64, limit: usize) -> Result<Vec<PushJob>> {
        if let Some(pg) = self.pg() {
            return pg.claim_push_jobs(now_ms, limit).await;
        }
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, account_id, token, created_at, first_attempt, next_attempt, attempts, messages FROM push_jobs
                 WHERE next_attempt <= ?1 ORDER BY attempts > 0, next_attempt LIMIT ?2",
            )?;
            let rows = st.query_map(params![now_ms, limit as i64], |r| {
                Ok(PushJob {
                    id: r.get(0)?,
                    account: r.get(1)?,
                    token: r.get(2)?,
                    created_at_ms: r.get(3)?,
                    first_attempt_ms: r.get(4)?,
                    next_attempt_ms: r.get(5)?,
                    attempts: r.get::<_, i64>(6)?.max(0) as u32,
                    messages: r.get::<_, i64>(7)?.max(0) as u32,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// The earliest `next_attempt` after `now_ms`, and the number of pending jobs.
    pub async fn push_schedule(&self, now_ms: i64) -> Result<(Option<i64>, u64)> {
        if let Some(pg) = self.pg() {
            return pg.push_schedule(now_ms).await;
        }
        self.read(move |c| {
            let next: Option<i64> = c
                .prepare_cached("SELECT min(next_attempt) FROM push_jobs WHERE next_attempt > ?1")?
                .query_row([now_ms], |r| r.get(0))?;
            let n: i64 = c.prepare_cached("SELECT count(*) FROM push_jobs")?.query_row([], |r| r.get(0))?;
            Ok((next, n.max(0) as u64))
        })
        .await
    }

    /// The proxy answered 200 for a request that covered `seen_messages` messages. Deletes the job,
    /// or, if more messages were merged meanwhile, re-arms it for `rearm_at_ms` (PUSH-14, PUSH-15).
    pub async fn push_job_done(&self, id: i64, seen_messages: u32, rearm_at_ms: i64) -> Result<JobDone> {
        if let Some(pg) = self.pg() {
            return pg.push_job_done(id, seen_messages, rearm_at_ms).await;
        }
        self.write(move |tx| {
            let n = tx.execute("DELETE FROM push_jobs WHERE id = ?1 AND messages <= ?2", params![id, seen_messages])?;
            if n > 0 {
                return Ok(JobDone::Deleted);
            }
            let n = tx.execute(
                "UPDATE push_jobs SET messages = max(1, messages - ?2), created_at = last_message_at,
                   first_attempt = NULL, attempts = 0, next_attempt = ?3 WHERE id = ?1",
                params![id, seen_messages, rearm_at_ms],
            )?;
            Ok(if n > 0 { JobDone::Rearmed } else { JobDone::Deleted })
        })
        .await
    }

    /// A failed attempt: schedule the next one.
    pub async fn push_job_retry(
        &self,
        id: i64,
        attempts: u32,
        first_attempt_ms: i64,
        next_attempt_ms: i64,
    ) -> Result<()> {
        if let Some(pg) = self.pg() {
            let sql = "UPDATE push_jobs SET attempts = $2, first_attempt = $3, next_attempt = $4 WHERE id = $1";
            return pg.push_job_set(sql, &[&id, &i64::from(attempts), &first_attempt_ms, &next_attempt_ms]).await;
        }
        self.write(move |tx| {
            tx.execute(
                "UPDATE push_jobs SET attempts = ?2, first_attempt = ?3, next_attempt = ?4 WHERE id = ?1",
                params![id, attempts, first_attempt_ms, next_attempt_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Move a job that is not to be sent yet (coalescing window, PUSH-14).
    pub async fn push_job_defer(&self, id: i64, next_attempt_ms: i64) -> Result<()> {
        if let Some(pg) = self.pg() {
            let sql = "UPDATE push_jobs SET next_attempt = $2 WHERE id = $1";
            return pg.push_job_set(sql, &[&id, &next_attempt_ms]).await;
        }
        self.write(move |tx| {
            tx.execute("UPDATE push_jobs SET next_attempt = ?2 WHERE id = ?1", params![id, next_attempt_ms])?;
            Ok(())
        })
        .await
    }

    /// Give up on a job (retries exhausted, PUSH-10/11).
    pub async fn push_job_drop(&self, id: i64) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.push_job_set("DELETE FROM push_jobs WHERE id = $1", &[&id]).await;
        }
        self.write(move |tx| {
            tx.execute("DELETE FROM push_jobs WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }
}

/// At most this many tokens per account (IMAP-36).
pub const MAX_TOKENS: usize = 20;

impl Store {
    /// SETMETADATA /private/devicetoken: add or refresh a token; drop the least recently set
    /// beyond `MAX_TOKENS` (IMAP-36), with their pending jobs.
    pub async fn add_push_token(&self, account: AccountId, token: String) -> Result<()> {
        let now = super::now_secs();
        if let Some(pg) = self.pg() {
            return pg.add_push_token(account, token, MAX_TOKENS).await;
        }
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO push_tokens(account_id, token, set_at) VALUES(?1, ?2, ?3)
                 ON CONFLICT(account_id, token) DO UPDATE SET set_at = excluded.set_at",
                params![account, token, now],
            )?;
            tx.execute(
                "DELETE FROM push_tokens WHERE account_id = ?1 AND token NOT IN
                 (SELECT token FROM push_tokens WHERE account_id = ?1 ORDER BY set_at DESC, rowid DESC LIMIT ?2)",
                params![account, MAX_TOKENS as i64],
            )?;
            // Issue 31: a token dropped by the cap takes its pending job with it, so the cap
            // bounds jobs too (at most one per kept token, PUSH-13).
            tx.execute(
                "DELETE FROM push_jobs WHERE account_id = ?1 AND token NOT IN
                 (SELECT token FROM push_tokens WHERE account_id = ?1)",
                [account],
            )?;
            Ok(())
        })
        .await
    }

    /// SETMETADATA ... NIL: remove every token of the account and their pending jobs.
    pub async fn clear_push_tokens(&self, account: AccountId) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.clear_push_tokens(account).await;
        }
        self.write(move |tx| {
            tx.execute("DELETE FROM push_tokens WHERE account_id = ?1", [account])?;
            tx.execute("DELETE FROM push_jobs WHERE account_id = ?1", [account])?;
            Ok(())
        })
        .await
    }

    /// The valid tokens of an account, oldest first (IMAP-37: not expired, not > 60 s ahead).
    pub async fn push_tokens(&self, account: AccountId) -> Result<Vec<String>> {
        let now = super::now_secs();
        if let Some(pg) = self.pg() {
            return pg.push_tokens(account, now - TOKEN_LIFETIME_SECS, now).await;
        }
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT token FROM push_tokens WHERE account_id = ?1 AND set_at > ?2 AND set_at <= ?3 ORDER BY set_at, rowid",
            )?;
            let rows = st.query_map(params![account, now - TOKEN_LIFETIME_SECS, now + 60], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// A token the proxy reported dead (410): delete it and its job (PUSH-9).
    pub async fn remove_push_token(&self, account: AccountId, token: String) -> Result<()> {
        if let Some(pg) = self.pg() {
            let sql = "WITH t AS (DELETE FROM push_tokens WHERE account_id = $1 AND token = $2)
                       DELETE FROM push_jobs WHERE account_id = $1 AND token = $2";
            return pg.push_job_set(sql, &[&account, &token]).await;
        }
        self.write(move |tx| {
            tx.execute("DELETE FROM push_tokens WHERE account_id = ?1 AND token = ?2", params![account, token])?;
            tx.execute("DELETE FROM push_jobs WHERE account_id = ?1 AND token = ?2", params![account, token])?;
            Ok(())
        })
        .await
    }
}
