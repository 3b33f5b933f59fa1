//! The outbound queue, shared by all nodes.

use super::blobs::drop_unreferenced;
use super::*;

/// How long a claimed queue entry is left to its node before another may retake it: longer
/// than one attempt can last (connect, TLS and DATA timeouts together).
pub(super) const QUEUE_LEASE_SECS: i64 = 900;

/// The scheduler's concurrency limits (outbound::MAX_PER_DOMAIN, MAX_IN_FLIGHT).
pub(super) const MAX_PER_DOMAIN: i64 = 4;

pub(super) const MAX_IN_FLIGHT: usize = 100;

pub(super) const QUEUE_COLS: &str =
    "id, blob, sender, sender_account, domain, created_at, next_attempt, attempts, last_error";

pub(super) fn queue_entry_of(r: &Row) -> QueueEntry {
    let blob: String = r.get(1);
    QueueEntry {
        id: r.get(0),
        // A malformed blob name can only come from a corrupted row; it then fails to open.
        blob: BlobId::parse(&blob).unwrap_or_else(|| BlobId(String::from("invalid"))),
        sender: r.get(2),
        sender_account: r.get(3),
        domain: r.get(4),
        created_at: r.get(5),
        next_attempt: r.get(6),
        attempts: r.get::<_, i64>(7).max(0) as u32,
        last_error: r.get(8),
        rcpts: Vec::new(),
    }
}

pub(super) async fn queue_rcpts(c: &impl GenericClient, id: &str) -> Result<Vec<QueueRcpt>> {
    let rows = c
        .query(
            &c.prepare_cached("SELECT rcpt, state, last_reply FROM queue_rcpts WHERE queue_id = $1 ORDER BY rcpt")
                .await?,
            &[&id],
        )
        .await?;
    Ok(rows.iter().map(|r| QueueRcpt { rcpt: r.get(0), state: r.get(1), last_reply: r.get(2) }).collect())
}

impl Pg {
    // ---- outbound queue ----

    /// Claim due entries for this node: `FOR UPDATE SKIP LOCKED` so two nodes never claim the
    /// same row, and the claim is a lease (`next_attempt` moved `QUEUE_LEASE_SECS` ahead) that
    /// `record_attempt` replaces. A node that dies mid-attempt leaves the lease to expire and
    /// another node retakes the entry: at least once towards the remote, as on one node.
    /// Only what the scheduler will start is claimed (a claimed entry it skipped would wait for
    /// its lease): per domain up to `MAX_PER_DOMAIN` minus this node's attempts in flight there
    /// (`skip_ids`), and at most `MAX_IN_FLIGHT` in flight in all.
    pub(crate) async fn claim_queue(
        &self,
        now: i64,
        limit: usize,
        skip_ids: Vec<String>,
        skip_domains: Vec<String>,
    ) -> Result<Vec<QueueEntry>> {
        let limit = limit.min(MAX_IN_FLIGHT.saturating_sub(skip_ids.len()));
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let st = "WITH due AS (
                SELECT id, next_attempt, row_number() OVER (PARTITION BY domain ORDER BY next_attempt, created_at) AS n
                FROM queue WHERE next_attempt <= $1 AND NOT (id = ANY($3)) AND NOT (domain = ANY($4))
             ), picked AS (
                SELECT q.id, d.next_attempt FROM queue q JOIN due d ON d.id = q.id
                WHERE d.n <= $6 - (SELECT count(*) FROM queue f WHERE f.id = ANY($3) AND f.domain = q.domain)
                ORDER BY d.next_attempt, q.created_at LIMIT $2 FOR UPDATE OF q SKIP LOCKED
             )
             UPDATE queue q SET next_attempt = $5 FROM picked WHERE q.id = picked.id
             RETURNING q.id, q.blob, q.sender, q.sender_account, q.domain, q.created_at, picked.next_attempt,
                       q.attempts, q.last_error";
        let rows = tx
            .query(st, &[&now, &(limit as i64), &skip_ids, &skip_domains, &(now + QUEUE_LEASE_SECS), &MAX_PER_DOMAIN])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut e = queue_entry_of(r);
            e.rcpts = queue_rcpts(&tx, &e.id).await?;
            out.push(e);
        }
        tx.commit().await?;
        out.sort_by_key(|e| (e.next_attempt, e.created_at));
        Ok(out)
    }

    pub(crate) async fn next_queue_due(&self, skip_ids: Vec<String>, skip_domains: Vec<String>) -> Result<Option<i64>> {
        let c = self.client().await?;
        let row = c
            .query_one(
                &c.prepare_cached(
                    "SELECT min(next_attempt) FROM queue WHERE NOT (id = ANY($1)) AND NOT (domain = ANY($2))",
                )
                .await?,
                &[&skip_ids, &skip_domains],
            )
            .await?;
        Ok(row.get(0))
    }

    pub(crate) async fn queue_stats(&self) -> Result<(u64, Option<i64>)> {
        let c = self.client().await?;
        let row = c.query_one(&c.prepare_cached("SELECT count(*), min(created_at) FROM queue").await?, &[]).await?;
        Ok((row.get::<_, i64>(0).max(0) as u64, row.get(1)))
    }

    pub(crate) async fn queue_entry(&self, id: &str) -> Result<Option<QueueEntry>> {
        let c = self.client().await?;
        let st = format!("SELECT {QUEUE_COLS} FROM queue WHERE id = $1");
        let Some(r) = c.query_opt(&st, &[&id]).await? else { return Ok(None) };
        let mut e = queue_entry_of(&r);
        e.rcpts = queue_rcpts(&c, &e.id).await?;
        Ok(Some(e))
    }

    /// Every entry, oldest first (`chatrelay queue list`).
    pub(crate) async fn list_queue(&self) -> Result<Vec<QueueEntry>> {
        let c = self.client().await?;
        let st = format!("SELECT {QUEUE_COLS} FROM queue ORDER BY created_at, id");
        let mut out = Vec::new();
        for r in c.query(&st, &[]).await? {
            let mut e = queue_entry_of(&r);
            e.rcpts = queue_rcpts(&c, &e.id).await?;
            out.push(e);
        }
        Ok(out)
    }

    /// `queue retry ID`: due now, and every scheduler told.
    pub(crate) async fn queue_retry_now(&self, id: &str) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n =
            tx.execute(&tx.prepare_cached("UPDATE queue SET next_attempt = 0 WHERE id = $1").await?, &[&id]).await?;
        let mut p = Pending::default();
        if n > 0 {
            p.push(StoreEvent::QueueChanged);
        }
        p.notify(&tx, self.node).await?;
        tx.commit().await?;
        self.publish(p);
        Ok(n > 0)
    }

    /// `queue drop ID`: the entry and, if nothing else uses it, its body.
    pub(crate) async fn queue_drop(&self, id: &str) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let blob =
            tx.query_opt(&tx.prepare_cached("DELETE FROM queue WHERE id = $1 RETURNING blob").await?, &[&id]).await?;
        let objects = match &blob {
            Some(b) => drop_unreferenced(&tx, &[b.get::<_, String>(0)]).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        self.forget_objects(objects).await;
        Ok(blob.is_some())
    }

    /// As on SQLite: recipients' states, then the entry's next attempt (ending the lease) or
    /// its removal with its body once nothing is pending.
    pub(crate) async fn record_attempt(&self, id: &str, outcome: AttemptOutcome) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        for (rcpt, state, reply) in &outcome.rcpts {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE queue_rcpts SET state = $3, last_reply = $4 WHERE queue_id = $1 AND rcpt = $2",
                )
                .await?,
                &[&id, rcpt, state, reply],
            )
            .await?;
        }
        let pending: i64 = tx
            .query_one(
                &tx.prepare_cached("SELECT count(*) FROM queue_rcpts WHERE queue_id = $1 AND state = 'pending'")
                    .await?,
                &[&id],
            )
            .await?
            .get(0);
        let mut objects = Vec::new();
        let gone = if pending == 0 {
            let blob = tx
                .query_opt(&tx.prepare_cached("DELETE FROM queue WHERE id = $1 RETURNING blob").await?, &[&id])
                .await?;
            if let Some(b) = &blob {
                objects = drop_unreferenced(&tx, &[b.get::<_, String>(0)]).await?;
            }
            blob.is_some()
        } else {
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE queue SET attempts = attempts + 1, next_attempt = $2, last_error = $3 WHERE id = $1",
                )
                .await?,
                &[&id, &outcome.next_attempt, &outcome.last_error],
            )
            .await?;
            false
        };
        tx.commit().await?;
        self.forget_objects(objects).await;
        Ok(gone)
    }
}
