//! ACME (OPS-3): certificates for `mail_domain`, `mta-sts.<d>` and `www.<d>` from
//! `tls.acme_directory`, proven with HTTP-01 through the challenge store port 80 serves (HTTP-1).
//!
//! State in `data_dir/acme/`: `account.json` (credentials, 0600), `account-uri` (for the CAA
//! record), `cert.pem` and `key.pem` (0600). Until the first certificate exists the self-signed
//! one of `CertStore` is served. Renewal starts 30 days before expiry, checked every 12 hours;
//! failures are logged at `warn` and retried after 1 h, doubling up to 12 h. A new certificate is
//! installed in the live `CertStore` (new connections use it at once, OPS-6).
//! The ACME client trusts the built-in web PKI roots plus `delivery.extra_root_certs` (tests).
//! With `[store] backend = "postgres"` the same state lives in the database instead, shared by
//! the nodes (`shared.rs`, issue 27).

mod shared;
mod validity;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};

use crate::config::{Config, TlsMode};
use crate::context::Ctx;

pub use validity::not_after;

const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);
const FIRST_RETRY: Duration = Duration::from_secs(3600);
const MAX_RETRY: Duration = Duration::from_secs(12 * 3600);
/// The expiry gauge counts down; refresh it this often between checks.
const GAUGE_EVERY: Duration = Duration::from_secs(3600);
/// One whole issuance (account, order, validation, download); a CA that stops answering must not
/// stall renewals forever (the HTTP client has no timeouts of its own).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("acme: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("acme state {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("extra root certificates {0}: {1}")]
    Roots(String, String),
    #[error("authorization for {0} is {1}")]
    Authorization(String, String),
    #[error("the CA offers no http-01 challenge for {0}")]
    NoHttp01(String),
    #[error("order ended as {0}")]
    Order(String),
    #[error("issued certificate: {0}")]
    Cert(String),
    #[error("no answer from the CA within 10 minutes")]
    Timeout,
    #[error("shared acme state: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// `data_dir/acme/`: account key, certificate and key.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("acme")
}

/// The ACME account URI, written once the account exists (used for the CAA record, OPS-9).
pub fn account_uri_path(data_dir: &Path) -> PathBuf {
    dir(data_dir).join("account-uri")
}

fn account_uri_path_in(dir: &Path) -> PathBuf {
    dir.join("account-uri")
}

/// What one relay asks the CA for.
#[derive(Debug, Clone)]
pub struct Settings {
    pub directory: String,
    pub email: String,
    /// The certificate's names; the mail domain first.
    pub names: Vec<String>,
    pub dir: PathBuf,
    pub extra_roots: String,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Self {
        let d = &cfg.mail_domain;
        Self {
            directory: cfg.tls.acme_directory.clone(),
            email: cfg.tls.acme_email.trim().to_string(),
            names: vec![d.clone(), format!("mta-sts.{d}"), format!("www.{d}")],
            dir: dir(&cfg.data_dir),
            extra_roots: cfg.delivery.extra_root_certs.clone(),
        }
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

/// `serve`: set the expiry gauge and, in acme mode, run the certificate task.
pub fn spawn(ctx: &Ctx) {
    let cfg = ctx.config.get();
    update_gauge(ctx, current_expiry(ctx));
    if cfg.tls.mode == TlsMode::Acme {
        if ctx.store.pg().is_some() {
            ctx.tasks.spawn(shared::run(ctx.clone(), Settings::from_config(&cfg)));
        } else {
            ctx.tasks.spawn(run(ctx.clone(), Settings::from_config(&cfg)));
        }
    }
}

fn current_expiry(ctx: &Ctx) -> Option<SystemTime> {
    let ck = ctx.tls.certs().current()?;
    not_after(ck.cert.first()?.as_ref())
}

fn update_gauge(ctx: &Ctx, expiry: Option<SystemTime>) {
    if let Some(t) = expiry {
        let left = match t.duration_since(SystemTime::now()) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        ctx.metrics.tls_certificate_expiry_seconds.set(left);
    }
}

async fn run(ctx: Ctx, s: Settings) {
    let mut expiry = install_stored(&ctx, &s);
    let mut backoff = FIRST_RETRY;
    let mut next_check = SystemTime::now();
    loop {
        update_gauge(&ctx, expiry);
        let now = SystemTime::now();
        if now >= next_check {
            if expiry.is_some_and(|t| t > now + RENEW_BEFORE) {
                next_check = now + CHECK_EVERY;
            } else {
                let attempt = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    r = tokio::time::timeout(ATTEMPT_LIMIT, obtain(&ctx, &s)) => r.unwrap_or(Err(AcmeError::Timeout)),
                };
                match attempt {
                    Ok(t) => {
                        tracing::info!(names = s.names.len(), "acme certificate installed");
                        expiry = Some(t);
                        backoff = FIRST_RETRY;
                        next_check = SystemTime::now() + CHECK_EVERY;
                        update_gauge(&ctx, expiry);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_secs = backoff.as_secs(), "acme certificate request failed");
                        next_check = SystemTime::now() + backoff;
                        backoff = (backoff * 2).min(MAX_RETRY);
                    }
                }
            }
        }
        let wait = next_check.duration_since(SystemTime::now()).unwrap_or_default().min(GAUGE_EVERY);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A certificate from an earlier run, if it loads, matches its key and covers our names.
fn install_stored(ctx: &Ctx, s: &Settings) -> Option<SystemTime> {
    let marker = s.dir.join("names");
    if std::fs::read_to_string(&marker).ok()? != s.names.join("\n") {
        return None; // issued for another domain: order a new one
    }
    match super::load_pem_pair(&s.cert(), &s.key()) {
        Ok(ck) => {
            let t = not_after(ck.cert.first()?.as_ref());
            ctx.tls.certs().set(ck);
            t
        }
        Err(e) => {
            tracing::warn!(error = %e, "stored acme certificate unusable; ordering a new one");
            None
        }
    }
}

/// Removes the challenge tokens however the order ends (from the database too, when shared).
struct Tokens(Vec<String>, Option<crate::store::Store>);
impl Drop for Tokens {
    fn drop(&mut self) {
        for t in &self.0 {
            crate::http::challenges().remove(t);
        }
        if let Some(store) = self.1.take()
            && !self.0.is_empty()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let tokens = std::mem::take(&mut self.0);
            rt.spawn(async move {
                if let Some(pg) = store.pg()
                    && let Err(e) = pg.remove_challenges(&tokens).await
                {
                    tracing::warn!(error = %e, "acme: shared challenges left behind (removed within the hour)");
                }
            });
        }
    }
}

/// A certificate just issued: the PEM to store and the pair to serve.
struct Issued {
    chain_pem: String,
    key_pem: String,
    ck: std::sync::Arc<rustls::sign::CertifiedKey>,
    expiry: SystemTime,
}

/// Single node: issue, store in `data_dir/acme/`, serve.
async fn obtain(ctx: &Ctx, s: &Settings) -> Result<SystemTime, AcmeError> {
    let issued = issue(ctx, s).await?;
    write_private(&s.key(), issued.key_pem.as_bytes())?;
    write_private(&s.cert(), issued.chain_pem.as_bytes())?;
    write_private(&s.dir.join("names"), s.names.join("\n").as_bytes())?;
    ctx.tls.certs().set(issued.ck);
    Ok(issued.expiry)
}

/// Order, prove with HTTP-01, download. Stores nothing but the account and installs nothing.
async fn issue(ctx: &Ctx, s: &Settings) -> Result<Issued, AcmeError> {
    let shared = ctx.store.pg().is_some().then(|| ctx.store.clone());
    let account = account(s, shared.as_ref().and_then(|st| st.pg())).await?;
    let ids: Vec<Identifier> = s.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut tokens = Tokens(Vec::new(), shared.clone());
    let mut auths = order.authorizations();
    while let Some(a) = auths.next().await {
        let mut a = a?;
        let name = a.identifier().to_string();
        match a.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Authorization(name, format!("{other:?}"))),
        }
        let mut ch = a.challenge(ChallengeType::Http01).ok_or_else(|| AcmeError::NoHttp01(name.clone()))?;
        let key_auth = ch.key_authorization().as_str().to_string();
        crate::http::challenges().insert(ch.token.clone(), key_auth.clone());
        tokens.0.push(ch.token.clone());
        // Shared: the CA may ask any node's port 80.
        if let Some(pg) = shared.as_ref().and_then(|st| st.pg()) {
            pg.put_challenge(&ch.token, &key_auth).await?;
        }
        ch.set_ready().await?;
    }
    let poll = RetryPolicy::new().timeout(Duration::from_secs(120));
    let status = order.poll_ready(&poll).await?;
    drop(tokens);
    if status != OrderStatus::Ready {
        return Err(AcmeError::Order(format!("{status:?}")));
    }
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&poll).await?;
    let ck = super::pem_pair(chain_pem.as_bytes(), key_pem.as_bytes(), "issued chain", "issued key")
        .map_err(|e| AcmeError::Cert(e.to_string()))?;
    let expiry =
        ck.cert.first().and_then(|c| not_after(c.as_ref())).ok_or_else(|| AcmeError::Cert("no validity".into()))?;
    Ok(Issued { chain_pem, key_pem, ck, expiry })
}

/// The stored account for this directory, or a new one (then stored): in `data_dir/acme/`, or in
/// the database when shared (the node writes `account-uri` locally either way, for `dns`).
async fn account(s: &Settings, shared: Option<&crate::store::postgres::Pg>) -> Result<Account, AcmeError> {
    let path = s.dir.join("account.json");
    let builder = || Ok::<_, AcmeError>(Account::builder_with_http(Box::new(http_client(&s.extra_roots)?)));
    let text = match shared {
        Some(pg) => pg.acme_account(&s.directory).await?,
        None => std::fs::read_to_string(&path).ok(),
    };
    if let Some(text) = text
        && let Ok(stored) = serde_json::from_str::<StoredAccount>(&text)
        && stored.directory == s.directory
    {
        if let Some(pg) = shared
            && let Some(uri) = pg.acme_account_uri(&s.directory).await?
        {
            write_private(&account_uri_path_in(&s.dir), uri.as_bytes())?;
        }
        return Ok(builder()?.from_credentials(stored.credentials).await?);
    }
    let contact = (!s.email.is_empty()).then(|| format!("mailto:{}", s.email));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder()?.create(&new, s.directory.clone(), None).await?;
    let stored = StoredAccount { directory: s.directory.clone(), credentials };
    let json = serde_json::to_vec_pretty(&stored).map_err(|e| AcmeError::Io(path.clone(), std::io::Error::other(e)))?;
    match shared {
        Some(pg) => pg.put_acme_account(&s.directory, &String::from_utf8_lossy(&json), account.id()).await?,
        None => write_private(&path, &json)?,
    }
    write_private(&account_uri_path_in(&s.dir), account.id().as_bytes())?;
    tracing::info!("acme account created");
    Ok(account)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// HTTPS client for the ACME API: the verifying client TLS of outbound delivery (ring, web PKI
/// roots plus `delivery.extra_root_certs`).
fn http_client(extra_roots: &str) -> Result<Client, AcmeError> {
    let tls = crate::outbound::tls::ClientTls::new(extra_roots).map_err(|e| AcmeError::Roots(extra_roots.into(), e))?;
    let mut cfg = (*tls.verified_https).clone();
    cfg.alpn_protocols.clear(); // hyper-rustls sets ALPN itself (and panics if it is preset)
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg).https_only().enable_http1().build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// Write a file readable only by us, atomically (temp file and rename).
fn write_private(path: &Path, data: &[u8]) -> Result<(), AcmeError> {
    use std::io::Write;
    let io = |e| AcmeError::Io(path.to_path_buf(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::File::options();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
