//! IMAP for chatmail clients (imap.md): 143 with STARTTLS, 993 and ALPN `imap` on 443 with TLS.
//!
//! In: a connection (plain or already TLS). Out: the IMAP4rev1 dialogue of IMAP-5..47.
//! Design: our own tokio loop frames commands (lines, `{n}` / `{n+}` literals with limits) and
//! hands each complete command to `imap-codec` for parsing; responses are written as raw bytes
//! from the reply table, because several shapes (Dovecot-style METADATA literals, streamed
//! FETCH literals) are not what the codec would produce. The loop owns COMPRESS and IDLE.
//! Each session keeps its own view of the selected mailbox and catches up from the store after
//! each command and on `store.events()` during IDLE (no polling, IMAP-40).
//! Rules: no SQL here (all of it lives in `store/`); no lock held across I/O; never log
//! addresses above debug, passwords, tokens or message contents.

mod auth;
mod compress;
mod copy_move;
mod fetch;
mod idle;
mod io;
mod mailboxes;
mod metadata;
mod mime;
mod misc;
mod quota;
mod replies;
mod search;
mod select;
mod session;
mod store;
mod view;

use crate::context::{ConnInfo, Ctx};
use crate::tls::MaybeTls;

/// Serve one IMAP connection until LOGOUT, error, timeout or shutdown.
pub async fn serve(ctx: Ctx, stream: MaybeTls, conn: ConnInfo) {
    ctx.metrics.imap_connections.inc();
    let metrics = ctx.metrics.clone();
    let mut s = session::Session::new(ctx, stream, conn);
    s.run().await;
    metrics.imap_connections.dec();
}
