//! The delivery transaction: every local recipient gets a row in its INBOX and every remote
//! domain a queue entry, all in one commit, so a message is either fully accepted or not at all
//! (SMTP-48, SMTP-49). The commit publishes `MessageStored` and wakes the outbound scheduler.

use rusqlite::{OptionalExtension, params};

use super::accounts::AccountId;
use super::blobs::{self, BlobId, NewBlob};
use super::events::{MessageStored, StoreEvent};
use super::mailbox::{Flags, MailboxId, inbox_id, insert_message};
use super::{Result, Store, now_millis, now_secs};

#[derive(Debug, Clone)]
pub struct RemoteBatch {
    pub domain: String,
    pub rcpts: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Envelope sender; empty for bounces.
    pub sender: String,
    pub sender_account: Option<AccountId>,
    /// Local recipients (deduplicated here) and the blob they all share.
    pub local: Vec<AccountId>,
    pub local_blob: Option<NewBlob>,
    /// Remote recipients grouped by domain and the (signed) blob they share.
    pub remote: Vec<RemoteBatch>,
    pub remote_blob: Option<NewBlob>,
    /// Create push jobs for stored messages (false when `push.notify_url` is empty).
    pub push: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryReceipt {
    pub stored: Vec<(AccountId, MailboxId, u32)>,
    pub queue_ids: Vec<String>,
}

impl Store {
    /// Store and enqueue in one durable transaction. On error nothing is kept, blobs included.
    pub async fn deliver(&self, d: Delivery) -> Result<DeliveryReceipt> {
        if let Some(pg) = self.pg() {
            let res = pg.deliver(&d).await;
            if res.is_err() {
                d.local_blob.iter().chain(d.remote_blob.iter()).for_each(|b| self.discard_blob(b));
            }
            return res;
        }
        let cleanup: Vec<NewBlob> = d.local_blob.iter().chain(d.remote_blob.iter()).cloned().collect();
        let res = self.write(move |tx| deliver_in_tx(tx, &d)).await;
        if res.is_err() {
            for b in &cleanup {
                self.discard_blob(b);
            }
        }
        res
    }
}

pub(crate) fn deliver_in_tx(tx: &mut super::writer::Tx<'_>, d: &Delivery) -> Result<DeliveryReceipt> {
    // A sender deleted or blocked since its end of DATA sends nothing: checked inside the
    // delivering transaction, so no deletion can commit between the check and the delivery.
    if let Some(id) = d.sender_account {
        let blocked: Option<i64> =
            tx.query_row("SELECT blocked FROM accounts WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        if blocked.is_none_or(|b| b != 0) {
            return Err(super::StoreError::SenderGone);
        }
    }
    let mut receipt = DeliveryReceipt::default();
    let now = now_secs();
    let now_ms = now_millis();
    if let Some(new) = &d.local_blob {
        blobs::persist(tx, new)?;
        let (blob, size) = (new.id(), new.size());
        let mut seen = Vec::with_capacity(d.local.len());
        for &account in &d.local {
            if seen.contains(&account) {
                continue;
            }
            seen.push(account);
            let mailbox = inbox_id(tx, account)?;
            let ins = insert_message(tx, mailbox, blob, size, now, Flags::default(), "")?;
            let (uid, modseq) = (ins.uid, ins.modseq);
            let notify = d.sender_account != Some(account);
            if notify && d.push {
                super::push::enqueue_for_account(tx, account, now_ms)?;
            }
            tx.publish(StoreEvent::Stored(MessageStored {
                account,
                mailbox,
                uid,
                modseq,
                size,
                usage_bytes: ins.usage_bytes,
                notify,
                stored_at_ms: now_ms,
            }));
            receipt.stored.push((account, mailbox, uid));
        }
        if receipt.stored.is_empty() {
            tx.release_blob(blob.clone());
        }
    }
    if let Some(new) = &d.remote_blob {
        blobs::persist(tx, new)?;
        let blob = new.id();
        for batch in &d.remote {
            if batch.rcpts.is_empty() {
                continue;
            }
            let id = BlobId::random().0[..16].to_string();
            tx.execute(
                "INSERT INTO queue(id, blob, sender, sender_account, domain, created_at, next_attempt)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![id, blob.0, d.sender, d.sender_account, batch.domain, now],
            )?;
            for r in &batch.rcpts {
                tx.execute("INSERT OR IGNORE INTO queue_rcpts(queue_id, rcpt) VALUES(?1, ?2)", params![id, r])?;
            }
            receipt.queue_ids.push(id);
        }
        if !receipt.queue_ids.is_empty() {
            tx.publish(StoreEvent::QueueChanged);
        } else {
            tx.release_blob(blob.clone());
        }
    }
    Ok(receipt)
}
