//! `chatrelay serve`: bind every listener of `[listen]`, run sessions and background tasks, drain
//! on SIGTERM/SIGINT, reload on SIGHUP.
//!
//! Rules: a bind failure stops start-up naming the address (SMTP-4); each listener has its own
//! connection limits; every task is tracked and awaited on shutdown (OPS-16).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::{Accounts, Secret};
use crate::config::{Config, ConfigHandle};
use crate::context::{ConnInfo, Context, Ctx};
use crate::limits::ConnLimiter;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tls::{MaybeTls, Profile, Tls};

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Smtp,
    Submission,
    Submissions,
    Imap,
    Imaps,
    Http,
    Https,
    Metrics,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::Submission => "submission",
            Self::Submissions => "submissions",
            Self::Imap => "imap",
            Self::Imaps => "imaps",
            Self::Http => "http",
            Self::Https => "https",
            Self::Metrics => "metrics",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({service}): {source}")]
    Bind { addr: SocketAddr, service: &'static str, source: std::io::Error },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("another chatrelay is already serving {0}")]
    Locked(String),
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Open everything `serve` needs: data dir, lock, store, secret, TLS.
pub fn build_context(cfg: Config) -> Result<(Ctx, std::fs::File), ServeError> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let lock = lock_data_dir(&cfg)?;
    let store = Store::open_config(&cfg)?;
    let secret = Secret::load_or_create(&cfg.data_dir)?;
    let tls = Tls::new(&cfg)?;
    let metrics = Metrics::new();
    let dkim = Arc::new(crate::dkim::Dkim::new(&cfg));
    let config = ConfigHandle::new(cfg);
    let accounts = Accounts::new(store.clone(), config.clone(), secret, metrics.clone());
    let ctx = Arc::new(Context {
        config,
        store,
        accounts,
        tls,
        metrics,
        dkim,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    Ok((ctx, lock))
}

/// One `serve` per data_dir (OPS-15).
fn lock_data_dir(cfg: &Config) -> Result<std::fs::File, ServeError> {
    let path = cfg.data_dir.join("serve.lock");
    let f = std::fs::File::options().create(true).truncate(false).write(true).open(&path)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| ServeError::Locked(cfg.data_dir.display().to_string()))?;
    Ok(f)
}

fn listeners_of(cfg: &Config) -> Vec<(Service, SocketAddr)> {
    let l = &cfg.listen;
    let groups = [
        (Service::Smtp, &l.smtp),
        (Service::Submission, &l.submission),
        (Service::Submissions, &l.submissions),
        (Service::Imap, &l.imap),
        (Service::Imaps, &l.imaps),
        (Service::Http, &l.http),
        (Service::Https, &l.https),
        (Service::Metrics, &l.metrics),
    ];
    groups.into_iter().flat_map(|(s, addrs)| addrs.iter().map(move |a| (s, *a))).collect()
}

async fn bind(addr: SocketAddr, service: Service) -> Result<TcpListener, ServeError> {
    let sock = if addr.is_ipv6() { tokio::net::TcpSocket::new_v6() } else { tokio::net::TcpSocket::new_v4() }
        .map_err(|source| ServeError::Bind { addr, service: service.name(), source })?;
    let _ = sock.set_reuseaddr(true);
    sock.bind(addr).map_err(|source| ServeError::Bind { addr, service: service.name(), source })?;
    sock.listen(1024).map_err(|source| ServeError::Bind { addr, service: service.name(), source })
}

/// Run until shutdown. Returns after every session and task has finished or the grace expired.
pub async fn run(ctx: Ctx) -> Result<(), ServeError> {
    // Install signal handlers before any port is open, so a SIGTERM sent as soon as a client can
    // connect is a graceful drain and never the default (killing) action.
    let signals = Signals::install()?;
    let cfg = ctx.config.get();
    let mut bound = Vec::new();
    for (service, addr) in listeners_of(&cfg) {
        bound.push((service, bind(addr, service).await?));
    }
    let smtp_cap = cfg.max_smtp_connections;
    let imap_cap = cfg.max_imap_connections;
    let ids = Arc::new(AtomicU64::new(1));
    for (service, listener) in bound {
        let limiter = match service {
            Service::Smtp | Service::Submission | Service::Submissions => ConnLimiter::new(smtp_cap, smtp_cap / 5),
            Service::Imap | Service::Imaps => ConnLimiter::new(imap_cap, imap_cap / 5),
            Service::Http | Service::Https | Service::Metrics => ConnLimiter::new(20_000, 1000),
        };
        let ctx2 = ctx.clone();
        let ids = ids.clone();
        ctx.tasks.spawn(accept_loop(ctx2, service, listener, limiter, ids));
    }
    spawn_background(&ctx);
    // Embedded realtime services (issue 28): TURN binds its UDP port like a listener.
    crate::turn::start(&ctx).await?;
    crate::iroh::start(&ctx).await.map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
    tracing::info!(
        domain = %cfg.mail_domain,
        listeners = listeners_of(&cfg).len(),
        pid = std::process::id(),
        "ready"
    );
    signals.wait(&ctx).await;
    tracing::info!("shutting down");
    ctx.shutdown.cancel();
    ctx.tasks.close();
    if tokio::time::timeout(DRAIN_GRACE * 2, ctx.tasks.wait()).await.is_err() {
        tracing::warn!("some sessions did not finish within the grace period");
    }
    tracing::info!("stopped");
    Ok(())
}

fn spawn_background(ctx: &Ctx) {
    ctx.tasks.spawn(crate::expiry::run(ctx.clone()));
    ctx.tasks.spawn(crate::outbound::run(ctx.clone()));
    ctx.tasks.spawn(crate::push::run(ctx.clone()));
    ctx.tasks.spawn(crate::memory::run(ctx.clone()));
    ctx.tasks.spawn(tls_watch(ctx.clone()));
    crate::control::spawn(ctx);
    crate::tls::acme::spawn(ctx);
}

/// Reload `files` certificates when they change on disk (OPS-4).
async fn tls_watch(ctx: Ctx) {
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        if ctx.tls.certs().files_changed() {
            match ctx.tls.reload(&ctx.config.get()) {
                Ok(_) => tracing::info!("tls certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "new tls certificate rejected; keeping the old one"),
            }
        }
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn wait(mut self, ctx: &Ctx) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = ctx.shutdown.cancelled() => return,
                _ = self.hup.recv() => reload(ctx),
            }
        }
    }
}

/// SIGHUP: reload TLS and the reloadable parts of the config (OPS-17).
pub fn reload(ctx: &Ctx) {
    let old = ctx.config.get();
    let Some(path) = crate::cli::config_path() else { return };
    match crate::config::load(&path) {
        Ok(new) => {
            if new.mail_domain != old.mail_domain
                || new.data_dir != old.data_dir
                || new.tls.mode != old.tls.mode
                || listeners_of(&new) != listeners_of(&old)
            {
                tracing::warn!("mail_domain, data_dir, listeners and tls.mode changes need a restart");
            }
            let keep = Config {
                mail_domain: old.mail_domain.clone(),
                data_dir: old.data_dir.clone(),
                listen: old.listen.clone(),
                ..new
            };
            ctx.config.replace(keep);
            tracing::info!("config reloaded");
        }
        Err(e) => {
            for line in &e.errors {
                tracing::error!(error = %line, "config reload failed; keeping the running config");
            }
        }
    }
    ctx.dkim.reload(&ctx.config.get());
    match ctx.tls.reload(&ctx.config.get()) {
        Ok(true) => tracing::info!("tls certificate reloaded"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "new tls certificate rejected; keeping the old one"),
    }
}

async fn accept_loop(
    ctx: Ctx,
    service: Service,
    listener: TcpListener,
    limiter: Arc<ConnLimiter>,
    ids: Arc<AtomicU64>,
) {
    loop {
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, listener = service.name(), "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let ctx2 = ctx.clone();
        let limiter = limiter.clone();
        let proxied = service != Service::Metrics && ctx.config.get().listen.proxy_protocol;
        ctx.tasks.spawn(async move {
            let mut tcp = tcp;
            let mut peer = peer.ip();
            // Issue 27: behind a load balancer the header names the client; read in the task so
            // a slow header never holds up the accept loop.
            if proxied {
                match crate::proxy::read_header(&mut tcp).await {
                    Ok(Some(client)) => peer = client.ip(),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(conn = id, listener = service.name(), error = %e, "PROXY header refused");
                        crate::memory::connection_closed();
                        return;
                    }
                }
            }
            let conn = ConnInfo { id, peer, local };
            // Per-client caps count the client's prefix (IPv6 /64 by default), never one address.
            let client = crate::limits::client_of(peer, &ctx2.config.get());
            let guard = limiter.try_acquire(client);
            if guard.is_none() {
                ctx2.metrics.limit_hit("connections");
            }
            match guard {
                Some(_guard) => handle(ctx2, service, tcp, conn).await,
                None => reject(service, tcp).await,
            }
            crate::memory::connection_closed();
        });
    }
}

async fn reject(service: Service, mut tcp: TcpStream) {
    let line: &[u8] = match service {
        Service::Smtp | Service::Submission => b"421 4.7.0 Too many connections, try again later\r\n",
        Service::Imap => b"* BYE Too many connections\r\n",
        _ => b"",
    };
    if !line.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.write_all(line)).await;
    }
    let _ = tcp.shutdown().await;
}

async fn implicit_tls(ctx: &Ctx, tcp: TcpStream, profile: Profile) -> Option<MaybeTls> {
    let acceptor = ctx.tls.acceptor(profile).clone();
    tokio::select! {
        _ = ctx.shutdown.cancelled() => None,
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, MaybeTls::Plain(tcp).upgrade(&acceptor)) => match r {
            Ok(Ok(s)) => Some(s),
            _ => None,
        },
    }
}

async fn handle(ctx: Ctx, service: Service, tcp: TcpStream, conn: ConnInfo) {
    use crate::smtp::Kind;
    match service {
        Service::Smtp => crate::smtp::serve(ctx, MaybeTls::Plain(tcp), Kind::Mx, conn).await,
        Service::Submission => crate::smtp::serve(ctx, MaybeTls::Plain(tcp), Kind::Submission, conn).await,
        Service::Submissions => {
            if let Some(s) = implicit_tls(&ctx, tcp, Profile::Submissions).await {
                crate::smtp::serve(ctx, s, Kind::Submissions, conn).await
            }
        }
        Service::Imap => crate::imap::serve(ctx, MaybeTls::Plain(tcp), conn).await,
        Service::Imaps => {
            if let Some(s) = implicit_tls(&ctx, tcp, Profile::Imaps).await {
                crate::imap::serve(ctx, s, conn).await
            }
        }
        Service::Http => crate::http::serve_http(ctx, tcp, conn).await,
        Service::Https => crate::http::serve_https(ctx, tcp, conn).await,
        Service::Metrics => crate::http::serve_metrics(ctx, tcp, conn).await,
    }
}
