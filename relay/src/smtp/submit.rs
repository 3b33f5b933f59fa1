//! The submission acceptance pipeline (SMTP-31..SMTP-36): parse, From equals MAIL FROM, the
//! outgoing encryption filter with its exceptions, header cleanup, then one durable delivery:
//! local recipients get the SMTP-45+46 cleaned copy, remote ones (grouped by domain) the SMTP-45
//! cleaned copy that outbound signs with DKIM later.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::headers::{self, STORAGE_DROP, SUBMISSION_DROP};
use super::ingress::{self, Parts};
use super::message;
use super::reply::{self, Reply};
use super::session::Transaction;
use crate::context::Ctx;
use crate::filter::{self, Envelope, Variant};
use crate::store::{Account, RemoteBatch};

pub async fn accept(ctx: &Ctx, login: &Account, tx: &Transaction, bytes: Bytes) -> Result<String, Reply> {
    let (b, mail_from) = (bytes.clone(), tx.mail_from.clone());
    let addrs: Vec<String> = tx.rcpts.iter().map(|r| r.address.clone()).collect();
    message::checked(bytes.len(), move || {
        message::check_line_ends(&b)?;
        let msg = message::parse(&b)?;
        message::check_from(&msg, &mail_from)?;
        let verdict = filter::check(&msg, Variant::Outgoing, &Envelope { mail_from: &mail_from, rcpts: &addrs });
        if !verdict.accepted() {
            tracing::debug!(?verdict, "outgoing message refused by the encryption filter");
            return Err(reply::encryption_needed());
        }
        Ok(())
    })
    .await?;
    // A login deleted or blocked while the message was in DATA sends nothing: the delivering
    // transaction checks the account (StoreError::SenderGone -> 554), so no read is needed here.
    // Only the header sections are rewritten; both copies share the received body (no copy of
    // a large message is made).
    let (submitted, body_at) = headers::clean_head(&bytes, SUBMISSION_DROP, true);
    let body = bytes.slice(body_at..);
    let local: Vec<_> = tx.rcpts.iter().filter_map(|r| r.local.as_ref().map(|l| l.account)).collect();
    let mut by_domain: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in tx.rcpts.iter().filter(|r| r.local.is_none()) {
        let domain = r.address.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
        by_domain.entry(domain).or_default().push(r.address.clone());
    }
    let remote: Vec<RemoteBatch> = by_domain.into_iter().map(|(domain, rcpts)| RemoteBatch { domain, rcpts }).collect();
    let local_bytes = Parts { head: headers::clean(&submitted, STORAGE_DROP, false), body: body.clone() };
    let remote_bytes = (!remote.is_empty()).then_some(Parts { head: submitted, body });
    ingress::store(ctx, &tx.mail_from, Some(login.id), local, local_bytes, remote, remote_bytes).await
}

/// The sending account still exists and is not blocked. Outbound checks it before each attempt
/// (at end of DATA the delivering transaction checks it).
pub async fn sender_active(ctx: &Ctx, id: crate::store::AccountId) -> Result<bool, crate::store::StoreError> {
    Ok(ctx.store.account_by_id(id).await?.is_some_and(|a| !a.blocked))
}
