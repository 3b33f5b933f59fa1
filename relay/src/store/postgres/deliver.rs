//! Delivery: the bodies and rows of an accepted message in one transaction.

use super::blobs::insert_body;
use super::mailbox::inbox_id;
use super::mailbox_ops::insert_message;
use super::push::enqueue_push;
use super::*;

impl Pg {
    // ---- delivery ----

    /// The bytes of a new blob: its inline copy, or the spill file (read once, then stored in
    /// the database; the file is removed after the commit).
    /// With an object store, a large body is PUT there now, before the transaction that
    /// references it: the `250` then follows both the PUT and the COMMIT.
    pub(super) async fn body_of(&self, b: &NewBlob) -> Result<Body> {
        let (id, data, spilled) = match b.inline_data() {
            Some(data) => (b.id().clone(), data.clone(), false),
            None => {
                let data = tokio::fs::read(crate::store::blobs::path_of(&self.blob_dir, b.id())).await?;
                (BlobId::random_inline(), Bytes::from(data), true)
            }
        };
        match &self.s3 {
            Some(s3) if data.len() > crate::store::blobs::INLINE_MAX => {
                s3.put(id.as_str(), data).await?;
                Ok(Body { id, data: Bytes::new(), spilled, external: true })
            }
            _ => Ok(Body { id, data, spilled, external: false }),
        }
    }

    /// SMTP-48/49: every local recipient's row in one transaction; `Ok` after COMMIT (and after
    /// the object store took a large body). On failure an object already PUT is deleted again.
    pub(crate) async fn deliver(&self, d: &Delivery) -> Result<DeliveryReceipt> {
        let mut put = Vec::new();
        let res = self.deliver_in(d, &mut put).await;
        if res.is_err() {
            self.forget_objects(put).await;
        }
        res
    }

    async fn deliver_in(&self, d: &Delivery, put: &mut Vec<String>) -> Result<DeliveryReceipt> {
        let mut receipt = DeliveryReceipt::default();
        let local = match &d.local_blob {
            Some(new) if !d.local.is_empty() => Some((new, self.body_of(new).await?)),
            _ => None,
        };
        let remote = match &d.remote_blob {
            Some(new) if d.remote.iter().any(|b| !b.rcpts.is_empty()) => Some((new, self.body_of(new).await?)),
            _ => None,
        };
        put.extend(local.iter().chain(remote.iter()).filter(|(_, b)| b.external).map(|(_, b)| b.id.0.clone()));
        if local.is_none() && remote.is_none() {
            return Ok(receipt);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if let Some(id) = d.sender_account {
            // FOR KEY SHARE: a concurrent deletion waits for this commit, or this sees it; a
            // delivery to this account (which locks its row for the usage) does not wait.
            let blocked = tx
                .query_opt(
                    &tx.prepare_cached("SELECT blocked FROM accounts WHERE id = $1 FOR KEY SHARE").await?,
                    &[&id],
                )
                .await?;
            if blocked.is_none_or(|r| r.get::<_, i64>(0) != 0) {
                return Err(StoreError::SenderGone);
            }
        }
        let (now, now_ms) = (now_secs(), now_millis());
        let mut p = Pending::default();
        let mut seen = Vec::with_capacity(d.local.len());
        let no_body = Body { id: BlobId(String::new()), data: Bytes::new(), spilled: false, external: false };
        let (new, body) = match &local {
            Some((new, body)) => (Some(*new), body),
            None => (None, &no_body),
        };
        let blob = &body.id;
        let size = new.map_or(0, NewBlob::size);
        if new.is_some() {
            insert_body(&tx, body).await?;
            lock_accounts(&tx, &d.local).await?;
        }
        for &account in d.local.iter().filter(|_| new.is_some()) {
            if seen.contains(&account) {
                continue;
            }
            seen.push(account);
            let mailbox = inbox_id(&tx, account).await?;
            let ins = insert_message(&tx, mailbox, blob, size, now, Flags::default(), "").await?;
            let notify = d.sender_account != Some(account);
            if notify && d.push {
                enqueue_push(&tx, account, now_ms).await?;
            }
            p.push(StoreEvent::Stored(MessageStored {
                account,
                mailbox,
                uid: ins.uid,
                modseq: ins.modseq,
                size,
                usage_bytes: ins.usage_bytes,
                notify,
                stored_at_ms: now_ms,
            }));
            receipt.stored.push((account, mailbox, ins.uid));
        }
        if let Some((_, rbody)) = &remote {
            insert_body(&tx, rbody).await?;
            let rblob = &rbody.id;
            for batch in d.remote.iter().filter(|b| !b.rcpts.is_empty()) {
                let id = BlobId::random().0[..16].to_string();
                tx.execute(
                    &tx.prepare_cached(
                        "INSERT INTO queue(id, blob, sender, sender_account, domain, created_at, next_attempt)
                     VALUES($1, $2, $3, $4, $5, $6, $6)",
                    )
                    .await?,
                    &[&id, &rblob.0, &d.sender, &d.sender_account, &batch.domain, &now],
                )
                .await?;
                for r in &batch.rcpts {
                    tx.execute(
                        &tx.prepare_cached(
                            "INSERT INTO queue_rcpts(queue_id, rcpt) VALUES($1, $2) ON CONFLICT DO NOTHING",
                        )
                        .await?,
                        &[&id, r],
                    )
                    .await?;
                }
                receipt.queue_ids.push(id);
            }
            p.push(StoreEvent::QueueChanged);
        }
        p.notify(&tx, self.node).await?;
        tx.commit().await?;
        self.publish(p);
        put.clear();
        for (new, body) in local.iter().chain(remote.iter()) {
            if body.spilled {
                let _ = tokio::fs::remove_file(crate::store::blobs::path_of(&self.blob_dir, new.id())).await;
            }
        }
        Ok(receipt)
    }
}
