//! SMTP: MX ingress (25), submission (587 STARTTLS) and submissions (465 implicit TLS; also 443
//! with ALPN `smtp`). smtp.md is the contract; reply texts live in `reply.rs`.
//!
//! In: a connection from `server.rs` (already TLS on 465). Out: messages durably stored or queued
//! through `store.deliver`, or an exact refusal reply. Never: relay from port 25, accept mail
//! before STARTTLS on 25 or before AUTH on submission, log contents or IPs.
//!
//! Layout: `session.rs` (state enum, loop, outcomes), one file per verb (`ehlo`, `starttls`,
//! `auth`, `mail`, `rcpt`, `dataverb`, `misc`), `data.rs` (DATA streaming decoder), `io.rs`
//! (bounded lines), `ratelimit.rs` (GCRA), `message.rs` + `headers.rs` (parse, From, cleanup),
//! `submit.rs` and `ingress.rs` (the acceptance pipelines).
//!
//! Reusable by `POST /mxdeliv` (http/), with the same replies:
//! - `ingress::check_recipient(&ctx, addr) -> Result<ingress::Recipient, Reply>`: for each
//!   recipient; `addr` must be a parsed (`Address::parse`), local address. Refusals: 550 5.1.1
//!   unknown/blocked/deleted, 452 4.2.2 mailbox full, 451 4.3.0 store error.
//! - `ingress::accept(&ctx, sender, &rcpts, bytes, peer) -> Result<String, Reply>`: the whole
//!   end-of-DATA pipeline (parse, From, incoming filter with FLT-25, DKIM, SMTP-46 cleanup,
//!   durable store). `Ok` carries the queue id; `Reply` has `code`, `esc` (enhanced code, may
//!   be empty) and `text`; `Reply::to_string()` is the exact SMTP reply line.
//! - `ingress::check_quota(&ctx, &account)`: the quota rule (retention adds trimming there).

pub mod auth;
pub mod data;
pub mod dataverb;
pub mod ehlo;
pub mod headers;
pub mod ingress;
pub mod io;
pub mod literal;
pub mod mail;
pub mod message;
pub mod misc;
pub mod ratelimit;
pub mod rcpt;
pub mod reply;
pub mod session;
pub mod starttls;
pub mod submit;

use crate::context::{ConnInfo, Ctx};
use crate::tls::MaybeTls;

pub use reply::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Mx,
    Submission,
    Submissions,
}

pub async fn serve(ctx: Ctx, stream: MaybeTls, kind: Kind, conn: ConnInfo) {
    let session = session::Session::new(ctx.clone(), kind, conn, io::Conn::new(stream));
    let gauge = ctx.metrics.smtp_connections.get_or_create(&vec![("listener", session.listener())]).clone();
    gauge.inc();
    session.run().await;
    gauge.dec();
}
