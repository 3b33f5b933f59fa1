//! `POST /mxdeliv` (DLV-42..DLV-47): another relay hands us a message over HTTPS. The checks are
//! port 25's, in the same order with the same reply texts; the SMTP reply line is the body.
//!
//! The web module routes the request here (method check 405 and a body limit of
//! `max_message_size + 1` belong to the route); this handler answers `(status, body)`.

use axum::http::HeaderMap;
use bytes::Bytes;

use crate::address::Address;
use crate::context::{ConnInfo, Ctx};
use crate::dkim::DkimVerdict;
use crate::store::{AccountId, Delivery};

/// Replies of this endpoint (DLV-43, DLV-45, DLV-46) and the port-25 texts it shares.
mod replies {
    pub const OK: &str = "250 OK";
    pub const BAD_ENVELOPE: &str = "501 5.5.4 Missing or invalid envelope headers";
    pub const TOO_BIG: &str = "552 Message exceeds maximum size";
    pub const LOCAL_ERROR: &str = "451 4.3.0 Local error";
    pub const NO_DKIM: &str = "554 5.7.1 No DKIM signature found";
    pub const BAD_DKIM: &str = "554 5.7.1 No valid DKIM signature found";
    pub const DKIM_TEMP: &str = "451 4.7.5 DKIM key lookup failed, try again later";
    pub fn relay_denied(a: &str) -> String {
        format!("554 5.7.1 {a}: Relay access denied")
    }
    pub fn unknown_user(a: &str) -> String {
        format!("550 5.1.1 {a}: Recipient address rejected: User unknown")
    }
    pub fn mailbox_full(a: &str) -> String {
        format!("452 4.2.2 {a}: Mailbox full")
    }
    pub fn parse_failed(reason: &str) -> String {
        format!("500 Failed to parse message: {reason}")
    }
    pub fn bad_from_header(v: &str) -> String {
        format!("500 Invalid FROM header: {v}")
    }
    pub fn from_mismatch(from: &str, mail_from: &str) -> String {
        format!("500 Invalid FROM {from} for {mail_from}")
    }
}

/// A refusal: the SMTP reply line and the metrics reason.
struct Refusal(String, &'static str);

/// The envelope of DLV-43.
struct Envelope {
    sender: String,
    rcpts: Vec<Address>,
}

fn envelope(headers: &HeaderMap, max_rcpts: usize) -> Option<Envelope> {
    let mut from = headers.get_all("x-mail-from").iter();
    let sender = from.next()?.to_str().ok()?.trim().to_string();
    if from.next().is_some() {
        return None;
    }
    let sender = match sender.as_str() {
        "" | "<>" => String::new(),
        s => Address::parse(s).ok()?.as_str().to_string(),
    };
    let mut rcpts = Vec::new();
    for v in headers.get_all("x-mail-to") {
        rcpts.push(Address::parse(v.to_str().ok()?).ok()?);
    }
    (!rcpts.is_empty() && rcpts.len() <= max_rcpts).then_some(Envelope { sender, rcpts })
}

pub async fn handle(ctx: Ctx, conn: ConnInfo, headers: &HeaderMap, body: Bytes) -> (u16, String) {
    let cfg = ctx.config.get();
    if body.len() as u64 > cfg.max_message_size.0 {
        ctx.metrics.smtp_message("mxdeliv", "rejected", "size");
        return (413, replies::TOO_BIG.to_string());
    }
    let Some(env) = envelope(headers, cfg.max_smtp_recipients) else {
        return (400, replies::BAD_ENVELOPE.to_string());
    };
    match accept(&ctx, conn, &env, &body).await {
        Ok(()) => {
            ctx.metrics.smtp_message("mxdeliv", "accepted", "");
            (200, replies::OK.to_string())
        }
        Err(Refusal(line, reason)) => {
            ctx.metrics.smtp_message("mxdeliv", "rejected", reason);
            tracing::debug!(reply = %line, "mxdeliv refused");
            (400, line)
        }
    }
}

/// The port-25 pipeline (smtp.md section 6): recipients, parse, From, encryption, DKIM, store.
async fn accept(ctx: &Ctx, conn: ConnInfo, env: &Envelope, body: &[u8]) -> Result<(), Refusal> {
    let cfg = ctx.config.get();
    let mut local: Vec<AccountId> = Vec::with_capacity(env.rcpts.len());
    for r in &env.rcpts {
        if !r.is_local(&cfg.mail_domain) {
            return Err(Refusal(replies::relay_denied(r.as_str()), "relay_denied"));
        }
        let acc = ctx.store.account_by_address(r.as_str()).await.map_err(|_| Refusal(replies::LOCAL_ERROR.into(), "local_error"))?;
        let Some(acc) = acc.filter(|a| !a.blocked) else {
            return Err(Refusal(replies::unknown_user(r.as_str()), "unknown_user"));
        };
        if acc.usage_bytes >= cfg.max_mailbox_size.0 {
            return Err(Refusal(replies::mailbox_full(r.as_str()), "quota"));
        }
        local.push(acc.id);
    }
    let Some(parsed) = mail_parser::MessageParser::new().with_address_headers().parse_headers(body) else {
        return Err(Refusal(replies::parse_failed("no headers"), "parse"));
    };
    let from_raw = parsed.header_raw("From").unwrap_or("").trim().to_string();
    let from = match parsed.from().and_then(|a| a.first()).and_then(|a| a.address()).map(Address::parse) {
        Some(Ok(a)) => a,
        _ => return Err(Refusal(replies::bad_from_header(&from_raw), "from_mismatch")),
    };
    if !env.sender.is_empty() && !from.as_str().eq_ignore_ascii_case(&env.sender) {
        return Err(Refusal(replies::from_mismatch(from.as_str(), &env.sender), "from_mismatch"));
    }
    // The encryption check (filter.md, incoming) is the SMTP pipeline's; it is wired in when that
    // pipeline is on main (see the report of the delivery issue).
    match ctx.dkim.verify(body, from.domain(), conn.peer).await {
        DkimVerdict::Pass | DkimVerdict::Skipped => {}
        DkimVerdict::NoSignature => return Err(Refusal(replies::NO_DKIM.into(), "dkim_missing")),
        DkimVerdict::Invalid => return Err(Refusal(replies::BAD_DKIM.into(), "dkim_invalid")),
        DkimVerdict::TempFail => return Err(Refusal(replies::DKIM_TEMP.into(), "dkim_invalid")),
    }
    let cleaned = strip_headers(body, &["dkim-signature", "authentication-results", "received"]);
    let size = cleaned.len() as u64;
    let blob = ctx.store.put_blob(Bytes::from(cleaned)).await.map_err(|_| Refusal(replies::LOCAL_ERROR.into(), "local_error"))?;
    ctx.store
        .deliver(Delivery {
            sender: env.sender.clone(),
            sender_account: None,
            local,
            local_blob: Some((blob, size)),
            push: cfg.push_enabled(),
            ..Default::default()
        })
        .await
        .map_err(|_| Refusal(replies::LOCAL_ERROR.into(), "local_error"))?;
    Ok(())
}

/// SMTP-46: drop top-level header fields named in `names` (with their continuation lines).
pub fn strip_headers(msg: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    let mut skipping = false;
    let mut rest = msg;
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let line = &rest[..end];
        let bare = line.strip_suffix(b"\n").map(|l| l.strip_suffix(b"\r").unwrap_or(l)).unwrap_or(line);
        if bare.is_empty() {
            out.extend_from_slice(rest);
            return out;
        }
        if bare[0] == b' ' || bare[0] == b'\t' {
            if !skipping {
                out.extend_from_slice(line);
            }
        } else {
            let name = bare.iter().position(|&b| b == b':').map(|i| &bare[..i]).unwrap_or(bare);
            skipping = names.iter().any(|n| name.trim_ascii().eq_ignore_ascii_case(n.as_bytes()));
            if !skipping {
                out.extend_from_slice(line);
            }
        }
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlv43_envelope_rules() {
        let mut h = HeaderMap::new();
        assert!(envelope(&h, 10).is_none());
        h.append("x-mail-from", "a@x.org".parse().expect("header value"));
        assert!(envelope(&h, 10).is_none(), "no X-Mail-To");
        h.append("x-mail-to", "b@y.org".parse().expect("header value"));
        h.append("x-mail-to", "c@y.org".parse().expect("header value"));
        assert_eq!(envelope(&h, 10).map(|e| e.rcpts.len()), Some(2));
        assert!(envelope(&h, 1).is_none(), "over max_smtp_recipients");
        h.append("x-mail-from", "d@x.org".parse().expect("header value"));
        assert!(envelope(&h, 10).is_none(), "two X-Mail-From");
        let mut h = HeaderMap::new();
        h.append("x-mail-from", "".parse().expect("header value"));
        h.append("x-mail-to", "b@y.org".parse().expect("header value"));
        assert_eq!(envelope(&h, 10).map(|e| e.sender), Some(String::new()), "empty sender for bounces");
    }

    #[test]
    fn smtp46_strip() {
        let m = b"DKIM-Signature: v=1;\r\n b=abc\r\nFrom: a@b\r\nReceived: x\r\nSubject: s\r\n\r\nReceived: body\r\n";
        let out = strip_headers(m, &["dkim-signature", "received"]);
        assert_eq!(out, b"From: a@b\r\nSubject: s\r\n\r\nReceived: body\r\n");
    }
}
