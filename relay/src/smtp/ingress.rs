//! The MX ingress acceptance pipeline (SMTP-37..SMTP-44), shared by port 25 and `POST /mxdeliv`
//! so both give the same answers with the same texts.
//!
//! Use: `check_recipient` for each local recipient (the RCPT stage), then `accept` with the
//! message bytes (the end-of-DATA stage). `accept` parses, checks From (skipped for an empty
//! reverse path), applies the incoming encryption filter (with the per-account cleartext
//! permission, FLT-25), verifies DKIM, removes SMTP-46 headers and stores durably.

use std::net::IpAddr;

use bytes::Bytes;

use super::headers::{self, STORAGE_DROP};
use super::message;
use super::reply::{self, Reply};
use crate::context::Ctx;
use crate::dkim::DkimVerdict;
use crate::filter::{self, Envelope, Variant};
use crate::store::{Account, AccountId, BlobId, Delivery};

/// A local recipient that passed `check_recipient`.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// Lowercased address.
    pub address: String,
    pub account: AccountId,
    /// The admin allowed cleartext for this account (FLT-25).
    pub cleartext: bool,
}

/// RCPT for a local address (SMTP-30, SMTP-38, SMTP-39): unknown, blocked or deleted (tombstoned
/// addresses have no row) gets 550 5.1.1; a full mailbox 452 4.2.2; a store error 451 4.3.0.
/// `addr` must already be a parsed, lowercased local address.
pub async fn check_recipient(ctx: &Ctx, addr: &str) -> Result<Recipient, Reply> {
    let acc = match ctx.store.account_by_address(addr).await {
        Ok(Some(a)) if !a.blocked => a,
        Ok(_) => return Err(reply::user_unknown(addr)),
        Err(e) => {
            tracing::error!(error = %e, "store error checking a recipient");
            return Err(reply::local_error());
        }
    };
    check_quota(ctx, &acc).await?;
    Ok(Recipient { address: acc.address.clone(), account: acc.id, cleartext: acc.cleartext })
}

/// RET-8/RET-10: refuse when usage has reached `max_mailbox_size`. The retention work adds the
/// trim-before-refuse step here.
pub async fn check_quota(ctx: &Ctx, acc: &Account) -> Result<(), Reply> {
    // RET-8: a full mailbox is trimmed first; only if it is still full (all of it younger than
    // 24 h) is the recipient refused, with a transient 452.
    if acc.usage_bytes >= ctx.config.get().max_mailbox_size.0 && !crate::expiry::make_room(ctx, acc.id).await {
        return Err(reply::mailbox_full(&acc.address));
    }
    Ok(())
}

/// A random id for `250 2.0.0 OK: queued as <id>` (SMTP-35); it reveals nothing.
pub fn queue_id() -> String {
    BlobId::random().as_str()[..12].to_uppercase()
}

/// End of DATA on ingress (SMTP-41): no bare CR (FLT-31), parse, From, encryption, DKIM, then store for every
/// recipient in one durable transaction. Returns the queue id for the 250 reply.
pub async fn accept(ctx: &Ctx, sender: &str, rcpts: &[Recipient], bytes: Bytes, peer: IpAddr) -> Result<String, Reply> {
    if rcpts.is_empty() {
        return Err(Reply::new(554, "5.5.1", "Error: no valid recipients"));
    }
    let (b, mail_from) = (bytes.clone(), sender.to_string());
    let addrs: Vec<String> = rcpts.iter().map(|r| r.address.clone()).collect();
    let cleartext_ok = rcpts.iter().all(|r| r.cleartext);
    let from_domain = message::checked(bytes.len(), move || {
        message::check_line_ends(&b)?;
        let msg = message::parse(&b)?;
        let from =
            if mail_from.is_empty() { message::from_address(&msg)? } else { message::check_from(&msg, &mail_from)? };
        let verdict = filter::check(&msg, Variant::Incoming, &Envelope { mail_from: &mail_from, rcpts: &addrs });
        if !verdict.accepted() && !cleartext_ok {
            tracing::debug!(?verdict, "incoming message refused by the encryption filter");
            return Err(reply::encryption_needed());
        }
        Ok(from.domain().to_string())
    })
    .await?;
    // DKIM runs on a blocking thread, bounded in cost and concurrency (dkim::Dkim::verify_owned).
    let verdict = ctx.dkim.verify_owned(bytes.clone(), from_domain.clone(), peer).await;
    match verdict {
        DkimVerdict::Pass | DkimVerdict::Skipped => {}
        DkimVerdict::NoSignature => return Err(reply::no_dkim()),
        DkimVerdict::Invalid => return Err(reply::invalid_dkim()),
        DkimVerdict::TempFail => return Err(reply::dkim_tempfail()),
    }
    // Issue 31: our own mail never arrives from outside; a signed one is a replay.
    if from_domain.eq_ignore_ascii_case(&ctx.config.get().mail_domain) {
        return Err(reply::own_domain_from());
    }
    let (head, body_at) = headers::clean_head(&bytes, STORAGE_DROP, false);
    let stored = Parts { head, body: bytes.slice(body_at..) };
    store(ctx, sender, None, rcpts.iter().map(|r| r.account).collect(), stored, Vec::new(), None).await
}

/// A message to store as its (cleaned) header section and the body it shares with the bytes
/// received, so a large message is never copied whole.
pub struct Parts {
    pub head: Vec<u8>,
    pub body: Bytes,
}

/// Write the blobs and deliver in one transaction (SMTP-48, SMTP-49). Shared with submission.
pub async fn store(
    ctx: &Ctx,
    sender: &str,
    sender_account: Option<AccountId>,
    local: Vec<AccountId>,
    local_bytes: Parts,
    remote: Vec<crate::store::RemoteBatch>,
    remote_bytes: Option<Parts>,
) -> Result<String, Reply> {
    let fail = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "storing a message failed");
        reply::local_error()
    };
    let local_blob = if local.is_empty() {
        None
    } else {
        Some(ctx.store.put_blob_parts(vec![local_bytes.head.into(), local_bytes.body]).await.map_err(fail)?)
    };
    let remote_blob = match remote_bytes {
        Some(b) if !remote.is_empty() => match ctx.store.put_blob_parts(vec![b.head.into(), b.body]).await {
            Ok(blob) => Some(blob),
            Err(e) => {
                if let Some(blob) = &local_blob {
                    ctx.store.discard_blob(blob);
                }
                return Err(fail(e));
            }
        },
        _ => None,
    };
    let push = ctx.config.get().push_enabled();
    let d = Delivery { sender: sender.to_string(), sender_account, local, local_blob, remote, remote_blob, push };
    ctx.store.deliver(d).await.map_err(|e| match e {
        crate::store::StoreError::SenderGone => reply::sender_gone(),
        e => fail(e),
    })?;
    Ok(queue_id())
}
