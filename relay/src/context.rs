//! What every session and background task shares: config, store, accounts, TLS, metrics and the
//! shutdown signal. Cheap to clone behind an `Arc`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::Accounts;
use crate::config::ConfigHandle;
use crate::dkim::Dkim;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tls::Tls;

pub struct Context {
    pub config: ConfigHandle,
    pub store: Store,
    pub accounts: Arc<Accounts>,
    pub tls: Tls,
    pub metrics: Metrics,
    /// DKIM verification for MX ingress and /mxdeliv (signing lives in outbound/).
    pub dkim: Arc<Dkim>,
    /// Cancelled on SIGTERM/SIGINT: stop accepting, finish what is running, then exit.
    pub shutdown: CancellationToken,
    /// Every spawned session and background task, awaited on shutdown.
    pub tasks: TaskTracker,
}

pub type Ctx = Arc<Context>;

/// Per-connection facts. The peer IP lives only in memory for limits and the DKIM
/// address-literal rule (PRIV-1); it is never logged.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: std::net::IpAddr,
    pub local: std::net::SocketAddr,
}
