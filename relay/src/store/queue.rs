//! The outbound queue (delivery.md section 1): entries per recipient domain with per-recipient
//! state, the retry schedule and bounces. Owned by the outbound work.
//!
//! Entries are created by `deliver` (deliver.rs). The scheduler reads due entries, makes an
//! attempt, then records the per-recipient outcome in one write: recipients move to `done` or
//! `bounced`, and an entry with no pending recipient left is deleted (its blob released).

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};

pub const PENDING: &str = "pending";
pub const DONE: &str = "done";
pub const BOUNCED: &str = "bounced";

#[derive(Debug, Clone)]
pub struct QueueRcpt {
    pub rcpt: String,
    pub state: String,
    pub last_reply: String,
}

#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub id: String,
    pub blob: super::BlobId,
    pub sender: String,
    pub sender_account: Option<super::AccountId>,
    pub domain: String,
    pub created_at: i64,
    pub next_attempt: i64,
    pub attempts: u32,
    pub last_error: String,
    pub rcpts: Vec<QueueRcpt>,
}

impl QueueEntry {
    pub fn pending(&self) -> impl Iterator<Item = &QueueRcpt> {
        self.rcpts.iter().filter(|r| r.state == PENDING)
    }
}

/// The outcome of one attempt, written back in one transaction.
#[derive(Debug, Clone, Default)]
pub struct AttemptOutcome {
    /// (recipient, new state, reply); recipients not listed stay as they are.
    pub rcpts: Vec<(String, &'static str, String)>,
    /// When to try again if recipients remain pending.
    pub next_attempt: i64,
    pub last_error: String,
}

const ENTRY_COLS: &str = "id, blob, sender, sender_account, domain, created_at, next_attempt, attempts, last_error";

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<QueueEntry> {
    let blob: String = r.get(1)?;
    Ok(QueueEntry {
        id: r.get(0)?,
        // A malformed blob name can only come from a corrupted row; it then fails to open.
        blob: super::BlobId::parse(&blob).unwrap_or_else(|| super::BlobId(String::from("invalid"))),
        sender: r.get(2)?,
        sender_account: r.get(3)?,
        domain: r.get(4)?,
        created_at: r.get(5)?,
        next_attempt: r.get(6)?,
        attempts: r.get::<_, i64>(7)?.max(0) as u32,
        last_error: r.get(8)?,
        rcpts: Vec::new(),
    })
}

fn load_rcpts(c: &rusqlite::Connection, e: &mut QueueEntry) -> Result<()> {
    let mut st =
        c.prepare_cached("SELECT rcpt, state, last_reply FROM queue_rcpts WHERE queue_id = ?1 ORDER BY rcpt")?;
    let rows = st.query_map([&e.id], |r| Ok(QueueRcpt { rcpt: r.get(0)?, state: r.get(1)?, last_reply: r.get(2)? }))?;
    e.rcpts = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(())
}

fn query_entries(c: &rusqlite::Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<QueueEntry>> {
    let mut st = c.prepare_cached(sql)?;
    let mut list = st.query_map(p, row_to_entry)?.collect::<rusqlite::Result<Vec<_>>>()?;
    for e in &mut list {
        load_rcpts(c, e)?;
    }
    Ok(list)
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// Delete an entry inside a transaction and release its blob.
fn delete_in_tx(tx: &mut super::writer::Tx<'_>, id: &str) -> Result<bool> {
    let blob: Option<String> = tx.query_row("SELECT blob FROM queue WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    let Some(blob) = blob else { return Ok(false) };
    tx.execute("DELETE FROM queue_rcpts WHERE queue_id = ?1", [id])?;
    tx.execute("DELETE FROM queue WHERE id = ?1", [id])?;
    if let Some(b) = super::BlobId::parse(&blob) {
        tx.release_blob(b);
    }
    Ok(true)
}

impl Store {
    /// Entries due at `now` (Unix seconds), oldest first, at most `limit`, leaving out the ids in
    /// `skip_ids` (attempts in flight) and the domains in `skip_domains` (at their concurrency
    /// limit), so a busy domain never hides other domains' entries (DLV-8).
    pub async fn due_queue(
        &self,
        now: i64,
        limit: usize,
        skip_ids: Vec<String>,
        skip_domains: Vec<String>,
    ) -> Result<Vec<QueueEntry>> {
        if let Some(pg) = self.pg() {
            return pg.claim_queue(now, limit, skip_ids, skip_domains).await;
        }
        let (ids, domains) = (json_list(&skip_ids), json_list(&skip_domains));
        self.read(move |c| {
            query_entries(
                c,
                &format!(
                    "SELECT {ENTRY_COLS} FROM queue WHERE next_attempt <= ?1
                     AND id NOT IN (SELECT value FROM json_each(?3)) AND domain NOT IN (SELECT value FROM json_each(?4))
                     ORDER BY next_attempt, created_at LIMIT ?2"
                ),
                params![now, limit as i64, ids, domains],
            )
        })
        .await
    }

    /// The earliest `next_attempt` among entries not in `skip_ids` or `skip_domains`.
    pub async fn next_queue_due(&self, skip_ids: Vec<String>, skip_domains: Vec<String>) -> Result<Option<i64>> {
        if let Some(pg) = self.pg() {
            return pg.next_queue_due(skip_ids, skip_domains).await;
        }
        let (ids, domains) = (json_list(&skip_ids), json_list(&skip_domains));
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT min(next_attempt) FROM queue WHERE id NOT IN (SELECT value FROM json_each(?1))
                 AND domain NOT IN (SELECT value FROM json_each(?2))",
                params![ids, domains],
                |r| r.get::<_, Option<i64>>(0),
            )?)
        })
        .await
    }

    /// (entry count, creation time of the oldest entry) for the queue gauges.
    pub async fn queue_stats(&self) -> Result<(u64, Option<i64>)> {
        if let Some(pg) = self.pg() {
            return pg.queue_stats().await;
        }
        self.read(|c| {
            Ok(c.query_row("SELECT count(*), min(created_at) FROM queue", [], |r| {
                Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get::<_, Option<i64>>(1)?))
            })?)
        })
        .await
    }

    pub async fn queue_entry(&self, id: &str) -> Result<Option<QueueEntry>> {
        if let Some(pg) = self.pg() {
            return pg.queue_entry(id).await;
        }
        let id = id.to_string();
        self.read(move |c| Ok(query_entries(c, &format!("SELECT {ENTRY_COLS} FROM queue WHERE id = ?1"), [id])?.pop()))
            .await
    }

    /// Every entry, oldest first (`chatrelay queue list`, OPS-20).
    pub async fn list_queue(&self) -> Result<Vec<QueueEntry>> {
        if let Some(pg) = self.pg() {
            return pg.list_queue().await;
        }
        self.read(|c| query_entries(c, &format!("SELECT {ENTRY_COLS} FROM queue ORDER BY created_at, id"), [])).await
    }

    /// Record an attempt: per-recipient states, attempt count, next attempt and last error. An
    /// entry without pending recipients is removed. Returns whether the entry is gone.
    pub async fn record_attempt(&self, id: &str, outcome: AttemptOutcome) -> Result<bool> {
        if let Some(pg) = self.pg() {
            return pg.record_attempt(id, outcome).await;
        }
        let id = id.to_string();
        self.write(move |tx| {
            for (rcpt, state, reply) in &outcome.rcpts {
                tx.execute(
                    "UPDATE queue_rcpts SET state = ?3, last_reply = ?4 WHERE queue_id = ?1 AND rcpt = ?2",
                    params![id, rcpt, state, reply],
                )?;
            }
            let pending: i64 = tx.query_row(
                "SELECT count(*) FROM queue_rcpts WHERE queue_id = ?1 AND state = 'pending'",
                [&id],
                |r| r.get(0),
            )?;
            if pending == 0 {
                return delete_in_tx(tx, &id);
            }
            tx.execute(
                "UPDATE queue SET attempts = attempts + 1, next_attempt = ?2, last_error = ?3 WHERE id = ?1",
                params![id, outcome.next_attempt, outcome.last_error],
            )?;
            Ok(false)
        })
        .await
    }

    /// `queue retry ID`: make the entry due now. Returns false if there is no such entry.
    pub async fn queue_retry_now(&self, id: &str) -> Result<bool> {
        if let Some(pg) = self.pg() {
            return pg.queue_retry_now(id).await;
        }
        let id = id.to_string();
        self.write(move |tx| {
            let n = tx.execute("UPDATE queue SET next_attempt = 0 WHERE id = ?1", [&id])?;
            if n > 0 {
                tx.publish(super::events::StoreEvent::QueueChanged);
            }
            Ok(n > 0)
        })
        .await
    }

    /// `queue drop ID`: remove the entry without a bounce.
    pub async fn queue_drop(&self, id: &str) -> Result<bool> {
        if let Some(pg) = self.pg() {
            return pg.queue_drop(id).await;
        }
        let id = id.to_string();
        self.write(move |tx| delete_in_tx(tx, &id)).await
    }
}
