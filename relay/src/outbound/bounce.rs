//! Bounces (DLV-38..DLV-41): an RFC 3464 delivery status notification from
//! `MAILER-DAEMON@<mail_domain>`, DKIM-signed and stored directly in the sender's INBOX with an
//! empty envelope sender. A message with an empty sender is never bounced (no loops).

use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;

use crate::context::Ctx;
use crate::store::{Delivery, QueueEntry};

#[derive(Debug, thiserror::Error)]
pub enum BounceError {
    #[error("empty envelope sender: not bounced")]
    NoSender,
    #[error("sender has no local account any more")]
    NoAccount,
    #[error("building the bounce: {0}")]
    Build(String),
    #[error("storing the bounce: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The original's header section (up to the first empty line).
fn header_section(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .or_else(|| message.windows(2).position(|w| w == b"\n\n").map(|i| i + 1))
        .unwrap_or(message.len());
    &message[..end]
}

/// Build the DSN for `failed` (recipient, last reply) of `entry`.
pub fn build(
    mail_domain: &str,
    entry: &QueueEntry,
    failed: &[(String, String)],
    original: &[u8],
) -> Result<Vec<u8>, BounceError> {
    let mut human = String::from(
        "This is the mail delivery system. Your message could not be delivered to the following recipients:\r\n\r\n",
    );
    for (r, reply) in failed {
        human.push_str(&format!("  <{r}>: {reply}\r\n"));
    }
    let mut status = format!(
        "Reporting-MTA: dns; {mail_domain}\r\nArrival-Date: {}\r\n",
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(entry.created_at.max(0) as u64))
    );
    for (r, reply) in failed {
        let code = reply.get(..3).unwrap_or("500");
        let enhanced = reply
            .split_whitespace()
            .nth(1)
            .filter(|c| c.split('.').count() == 3 && c.split('.').all(|p| p.parse::<u16>().is_ok()))
            .map(str::to_string)
            .unwrap_or_else(|| if code.starts_with('4') { "4.0.0".into() } else { "5.0.0".into() });
        let diag = reply.replace(['\r', '\n'], " ");
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: {enhanced}\r\nDiagnostic-Code: smtp; {diag}\r\n"
        ));
    }
    let headers = String::from_utf8_lossy(header_section(original)).into_owned();
    let enc = |s: &str| if s.is_ascii() { "7bit" } else { "8bit" };
    let parts = vec![
        MimePart::new(ContentType::new("text/plain").attribute("charset", "utf-8"), human.clone())
            .transfer_encoding(enc(&human)),
        MimePart::new(ContentType::new("message/delivery-status"), status.clone()).transfer_encoding(enc(&status)),
        MimePart::new(ContentType::new("text/rfc822-headers"), headers.clone()).transfer_encoding(enc(&headers)),
    ];
    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        mail_builder::mime::BodyPart::Multipart(parts),
    );
    let msg_id = format!("{}@{mail_domain}", crate::store::BlobId::random().as_str());
    MessageBuilder::new()
        .from(("Mail Delivery System".to_string(), format!("MAILER-DAEMON@{mail_domain}")))
        .to(entry.sender.clone())
        .subject("Undelivered Mail Returned to Sender")
        .date(crate::store::now_secs())
        .message_id(msg_id)
        .header("Auto-Submitted", Text::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .map_err(|e| BounceError::Build(e.to_string()))
}

/// Bounce `failed` recipients of `entry` to its local sender.
pub async fn send(
    ctx: &Ctx,
    entry: &QueueEntry,
    failed: &[(String, String)],
    original: &[u8],
) -> Result<(), BounceError> {
    if entry.sender.is_empty() {
        return Err(BounceError::NoSender);
    }
    let cfg = ctx.config.get();
    let account = match entry.sender_account {
        Some(id) => ctx.store.account_by_id(id).await?,
        None => ctx.store.account_by_address(&entry.sender).await?,
    };
    let Some(account) = account else { return Err(BounceError::NoAccount) };
    let dsn = build(&cfg.mail_domain, entry, failed, original)?;
    let signed = match ctx.dkim.signer() {
        Ok(s) => s.sign(&dsn).map_err(|e| BounceError::Build(e.to_string()))?,
        Err(e) => return Err(BounceError::Build(e.to_string())),
    };
    let blob = ctx.store.put_blob(bytes::Bytes::from(signed)).await?;
    ctx.store
        .deliver(Delivery {
            sender: String::new(),
            sender_account: None,
            local: vec![account.id],
            local_blob: Some(blob),
            push: cfg.push_enabled(),
            ..Default::default()
        })
        .await?;
    ctx.metrics.bounces.inc();
    Ok(())
}
