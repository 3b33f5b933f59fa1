//! `POST /mxdeliv` (DLV-42..DLV-47): another relay hands us a message over HTTPS. The checks are
//! port 25's, in the same order with the same reply texts (`smtp::ingress`), and the SMTP reply
//! line is the body: 200 `250 OK`, 400 with the refusal, 413 over `max_message_size`.
//!
//! `routes.rs` routes the POST here (other methods get 405 there) with `ConnInfo` as a request
//! extension. The envelope headers and recipients are checked before a byte of the body is read
//! (issue 31: a POST without `X-Mail-To` used to be buffered whole first); the body is then
//! streamed, up to `max_message_size` (so the 413 carries the reference text and the rest of an
//! oversized body is never read) and within the in-flight budget shared with port 25
//! (`inflight`). A stalled sender is cut by the route's 60 s timeout.

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::address::Address;
use crate::context::{ConnInfo, Ctx};
use crate::smtp::ingress;
use crate::smtp::reply::{self as smtp_reply, Reply};

/// Replies of this endpoint only (DLV-43, DLV-45); the rest are port 25's.
mod replies {
    pub const OK: &str = "250 OK";
    pub const BAD_ENVELOPE: &str = "501 5.5.4 Missing or invalid envelope headers";
    pub const TOO_BIG: &str = "552 Message exceeds maximum size";
}

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

/// The axum handler `routes.rs` mounts.
pub async fn handler(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (status, text) = receive(ctx, conn, headers, body).await;
    (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), text).into_response()
}

/// Envelope, declared size and recipients first; then the body; then port 25's pipeline.
async fn receive(ctx: Ctx, conn: ConnInfo, headers: HeaderMap, body: Body) -> (u16, String) {
    let cfg = ctx.config.get();
    let limit = cfg.max_message_size.0;
    let Some(env) = envelope(&headers, cfg.max_smtp_recipients) else {
        return (400, replies::BAD_ENVELOPE.to_string());
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_big(&ctx);
    }
    if let Err(r) = check_recipients(&ctx, &env).await {
        return refused(&ctx, r);
    }
    let mut held = crate::inflight::Reservation::new(cfg.inflight_budget());
    match read_body(body, limit, &mut held).await {
        Ok(bytes) => handle(ctx, conn, &headers, bytes).await,
        Err(BodyError::TooBig) => too_big(&ctx),
        Err(BodyError::OverBudget) => {
            ctx.metrics.limit_hit("inflight_bytes");
            refused(&ctx, smtp_reply::over_budget())
        }
        // Over a body limit layered on the route, or the peer went away: nothing is kept.
        Err(BodyError::Gone) => too_big(&ctx),
    }
}

enum BodyError {
    TooBig,
    OverBudget,
    Gone,
}

/// Stream the body into one buffer, reserving it in the in-flight budget as it grows.
async fn read_body(body: Body, limit: u64, held: &mut crate::inflight::Reservation) -> Result<Bytes, BodyError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Gone)?;
        let len = (buf.len() + chunk.len()) as u64;
        if len > limit {
            return Err(BodyError::TooBig);
        }
        if len > held.held() && !held.grow((len - held.held()).max(RESERVE_STEP)) {
            return Err(BodyError::OverBudget);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The in-flight budget is reserved in steps of this much.
const RESERVE_STEP: u64 = 256 * 1024;

/// Relaying, unknown user and full mailbox (DLV-44), answered before the body is read.
async fn check_recipients(ctx: &Ctx, env: &Envelope) -> Result<(), Reply> {
    let domain = ctx.config.get().mail_domain.clone();
    for r in &env.rcpts {
        if !r.is_local(&domain) {
            return Err(smtp_reply::relay_denied(r.as_str()));
        }
        ingress::check_recipient(ctx, r.as_str()).await?;
    }
    Ok(())
}

fn refused(ctx: &Ctx, r: Reply) -> (u16, String) {
    ctx.metrics.smtp_message("mxdeliv", "rejected", crate::smtp::reply::metric_reason(&r));
    tracing::debug!(reply = %r, "mxdeliv refused");
    (400, r.to_string())
}

fn too_big(ctx: &Ctx) -> (u16, String) {
    ctx.metrics.smtp_message("mxdeliv", "rejected", "size");
    (413, replies::TOO_BIG.to_string())
}

/// The request with its body read: `(status, body)`.
pub async fn handle(ctx: Ctx, conn: ConnInfo, headers: &HeaderMap, body: Bytes) -> (u16, String) {
    let cfg = ctx.config.get();
    if body.len() as u64 > cfg.max_message_size.0 {
        return too_big(&ctx);
    }
    let Some(env) = envelope(headers, cfg.max_smtp_recipients) else {
        return (400, replies::BAD_ENVELOPE.to_string());
    };
    match accept(&ctx, conn, &env, body).await {
        Ok(()) => {
            ctx.metrics.smtp_message("mxdeliv", "accepted", "");
            (200, replies::OK.to_string())
        }
        Err(r) => refused(&ctx, r),
    }
}

/// Port 25's pipeline (DLV-44): relaying, unknown user, mailbox full, then parse, From,
/// encryption, DKIM and durable storage in `ingress::accept`.
async fn accept(ctx: &Ctx, conn: ConnInfo, env: &Envelope, body: Bytes) -> Result<(), Reply> {
    let domain = ctx.config.get().mail_domain.clone();
    let mut rcpts = Vec::with_capacity(env.rcpts.len());
    for r in &env.rcpts {
        if !r.is_local(&domain) {
            return Err(smtp_reply::relay_denied(r.as_str()));
        }
        rcpts.push(ingress::check_recipient(ctx, r.as_str()).await?);
    }
    ingress::accept(ctx, &env.sender, &rcpts, body, conn.peer).await.map(|_| ())
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
}
