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
mod huffman;
mod idle;
mod io;
mod mailboxes;
mod metadata;
// Public for relay/benches (FETCH encoding is measured there).
pub mod mime;
mod misc;
mod pending;
mod quota;
mod replies;
mod search;
mod select;
mod session;
mod store;
mod view;

pub use metadata::check_appversions_file;

use crate::context::{ConnInfo, Ctx};
use crate::tls::MaybeTls;

/// Serve one IMAP connection until LOGOUT, error, timeout or shutdown.
pub async fn serve(ctx: Ctx, stream: MaybeTls, conn: ConnInfo) {
    let _gauge = GaugeGuard::inc(ctx.metrics.imap_connections.clone());
    let mut s = session::Session::new(ctx, stream, conn);
    s.run().await;
}

/// Increments a gauge now and decrements it when dropped, even if the session is cancelled.
pub(crate) struct GaugeGuard(prometheus_client::metrics::gauge::Gauge);

impl GaugeGuard {
    pub(crate) fn inc(g: prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
