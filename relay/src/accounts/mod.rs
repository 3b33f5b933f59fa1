//! Accounts: create-on-first-login, password verification with its cache, registration gates,
//! deletion and blocking. Shared by SMTP AUTH, IMAP LOGIN/AUTHENTICATE, HTTP and the CLI.
//!
//! In: a login name and password from a TLS-protected session. Out: the `Account`, or one
//! indistinguishable failure (ACC-13) whose reason goes only to the log and metrics.
//! Never: log an address above debug, log or store a password, create an account over cleartext.

mod cache;
pub mod credentials;
mod gates;
pub mod invites;
pub mod password;
pub mod secret;
pub mod throttle;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::address::Address;
use crate::config::{Config, ConfigHandle};
use crate::metrics::Metrics;
use crate::store::{Account, CreateOutcome, DeleteReason, Store, StoreError};

pub use gates::{GateClosed, disk_free};
pub use secret::Secret;

/// Why a login failed. Clients see the same reply for all of them (ACC-13).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown address or wrong password")]
    Invalid,
    #[error("account blocked")]
    Blocked,
    #[error("address deleted")]
    Tombstoned,
    #[error("address or password does not meet the rules")]
    Rules,
    #[error("registration refused: {}", .0.label())]
    Gate(GateClosed),
    #[error("too many failed logins")]
    Throttled,
    #[error("too many new accounts from this client")]
    CreationRate,
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl AuthError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Blocked => "blocked",
            Self::Tombstoned => "tombstone",
            Self::Rules => "rules",
            Self::Gate(g) => g.label(),
            Self::Throttled => "throttled",
            Self::CreationRate => "rate",
            Self::Store(_) => "store",
        }
    }
}

/// How long a failed login takes at least, from the start of its verification (after any
/// throttling delay): SMTP-27 and IMAP-46's one second.
pub const FAILURE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Accounts {
    store: Store,
    config: ConfigHandle,
    secret: Secret,
    cache: cache::LoginCache,
    verify_slots: Semaphore,
    /// Hash jobs waiting or running; the last one to finish frees the kept argon2 memory.
    hash_jobs: Arc<AtomicUsize>,
    gates: gates::Gates,
    throttle: throttle::Throttle,
    metrics: Metrics,
}

impl Accounts {
    pub fn new(store: Store, config: ConfigHandle, secret: Secret, metrics: Metrics) -> Arc<Self> {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let data_dir = config.get().data_dir.clone();
        let l = config.get().limits.clone();
        crate::http::limiter::configure_new(l.new_accounts_per_second, f64::from(l.new_accounts_burst));
        Arc::new(Self {
            store,
            config,
            secret,
            cache: cache::LoginCache::default(),
            verify_slots: Semaphore::new(cpus),
            hash_jobs: Arc::default(),
            gates: gates::Gates::new(data_dir),
            throttle: throttle::Throttle::default(),
            metrics,
        })
    }

    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a new account could be created right now (for `/new`).
    pub fn registration_open(&self) -> Result<(), GateClosed> {
        self.gates.check(&self.config.get())
    }

    /// `login_from` for in-process callers without a network client (tests, tools): counted as
    /// the loopback client.
    pub async fn login(&self, user: &str, password: &str, protocol: &'static str) -> Result<Account, AuthError> {
        self.login_from(user, password, protocol, IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)).await
    }

    /// Log in, creating the account on a valid first login (ACC-8..ACC-14). `protocol` is the
    /// metric label (`imap`, `smtp`); `peer` the client, counted by prefix for throttling and
    /// the new-account bucket (issue 26), never logged.
    pub async fn login_from(
        &self,
        user: &str,
        password: &str,
        protocol: &'static str,
        peer: IpAddr,
    ) -> Result<Account, AuthError> {
        let limits = self.config.get().limits.clone();
        let client = crate::limits::client_prefix(peer, limits.ipv4_prefix, limits.ipv6_prefix);
        let mut started = tokio::time::Instant::now();
        let res = match self.throttle.check_client(client, &limits, Instant::now()) {
            throttle::Verdict::Refuse => {
                self.metrics.limit_hit("auth_client");
                Err(AuthError::Throttled)
            }
            throttle::Verdict::Allow(delay) => {
                if !delay.is_zero() {
                    self.metrics.limit_hit("auth_delay");
                    tokio::time::sleep(delay).await;
                    started = tokio::time::Instant::now();
                }
                let key = self.throttle_key(&user.trim().to_lowercase());
                let locked = self.throttle.account_locked(&key, &limits, Instant::now());
                self.login_inner(user, password, Some(client), locked).await
            }
        };
        if let Err(e) = &res {
            // Every failure answers FAILURE_DELAY after verification began, so a wrong password
            // (an argon2 hash) and an unknown address (none) take the same time (ACC-13).
            if !matches!(e, AuthError::Store(_)) {
                tokio::time::sleep_until(started + FAILURE_DELAY).await;
            }
            self.metrics.login_failure(protocol);
            tracing::info!(reason = e.reason(), proto = protocol, "login failed");
            // Guesses count; refusals of the registration gates and storage errors do not.
            if matches!(e, AuthError::Invalid | AuthError::Blocked | AuthError::Tombstoned | AuthError::Rules) {
                let addr = user.trim().to_lowercase();
                self.throttle.failed(client, &self.throttle_key(&addr), &limits, Instant::now());
            }
        }
        res
    }

    fn throttle_key(&self, addr: &str) -> [u8; 32] {
        self.secret.keyed_hash(&[b"throttle", addr.as_bytes()])
    }

    /// Verify existing credentials without ever creating an account (`/account/delete`).
    pub async fn verify_existing(&self, user: &str, password: &str) -> Result<Account, AuthError> {
        self.login_inner(user, password, None, false).await
    }

    /// `create_for`: the client prefix when a first login may create the account; `locked`:
    /// the account saw too many failed logins.
    async fn login_inner(
        &self,
        user: &str,
        password: &str,
        create_for: Option<IpAddr>,
        locked: bool,
    ) -> Result<Account, AuthError> {
        let addr = user.trim().to_lowercase();
        if addr.is_empty() || password.is_empty() || addr.len() > 254 || password.len() > 1024 {
            return Err(AuthError::Invalid);
        }
        match self.store.account_by_address(&addr).await? {
            Some(acc) => self.check_existing(acc, &addr, password, locked).await,
            None => match create_for {
                Some(client) => self.create(&addr, password, client).await,
                None => Err(AuthError::Invalid),
            },
        }
    }

    /// `locked`: the account saw too many failures; only a cached (known-good) login passes,
    /// and no hash is computed for the rest.
    async fn check_existing(
        &self,
        acc: Account,
        addr: &str,
        password: &str,
        locked: bool,
    ) -> Result<Account, AuthError> {
        if acc.blocked {
            return Err(AuthError::Blocked);
        }
        let key = self.secret.keyed_hash(&[b"login", addr.as_bytes(), password.as_bytes()]);
        if !self.cache.hit(&key, acc.id, &acc.password_hash) {
            if locked {
                self.metrics.limit_hit("auth_account");
                return Err(AuthError::Throttled);
            }
            // ACC-19a: the token form costs one HMAC and is checked in place, whatever the
            // password; a match means it is the token it was made from (a changed secret.key
            // must not lock relay-issued accounts out). Anything else takes a hash slot.
            let verdict = if password::is_issued_form(&acc.password_hash) {
                password::verify(password, &acc.password_hash)
            } else {
                self.run_hash_job({
                    let (pw, stored) = (password.to_string(), acc.password_hash.clone());
                    move || password::verify(&pw, &stored)
                })
                .await?
            };
            if verdict == password::Verified::Wrong {
                return Err(AuthError::Invalid);
            }
            // Upgrade the stored form: an imported crypt hash always (ACC-20), an argon2id hash
            // of a password that proves relay-issued to the token form (ACC-19a).
            let issued = !password::is_issued_form(&acc.password_hash)
                && credentials::is_relay_issued(&self.secret, addr, password);
            let new_hash = if issued {
                Some(password::hash_issued(password))
            } else if verdict == password::Verified::OkNeedsRehash {
                let pw = password.to_string();
                self.run_hash_job(move || password::hash(&pw)).await.ok().and_then(Result::ok)
            } else {
                None
            };
            if let Some(h) = new_hash {
                self.store.set_password_hash(acc.id, h.clone()).await?;
                self.cache.insert(key, acc.id, &h);
                self.store.touch_login(&acc).await?;
                return Ok(Account { password_hash: h, ..acc });
            }
            self.cache.insert(key, acc.id, &acc.password_hash);
        }
        self.store.touch_login(&acc).await?;
        Ok(acc)
    }

    async fn create(&self, addr: &str, password: &str, client: IpAddr) -> Result<Account, AuthError> {
        let cfg = self.config.get();
        let tombstone = self.secret.tombstone(addr);
        if !valid_new_address(&cfg, addr) || password.chars().count() < cfg.password_min_length {
            self.refused("rules");
            return Err(AuthError::Rules);
        }
        if let Err(g) = self.gates.check(&cfg) {
            self.refused(g.label());
            return Err(AuthError::Gate(g));
        }
        // The `/new` bucket (HTTP-17), so first logins cannot mint accounts faster than it.
        if !crate::http::limiter::limits().new.allow(&client, Instant::now()) {
            self.refused("rate");
            self.metrics.limit_hit("new_accounts");
            return Err(AuthError::CreationRate);
        }
        // ACC-19a: a token this relay issued for this address gets the fast form; any other
        // password is user-chosen and gets argon2id (ACC-19).
        let hash = if credentials::is_relay_issued(&self.secret, addr, password) {
            password::hash_issued(password)
        } else {
            let pw = password.to_string();
            self.run_hash_job(move || password::hash(&pw)).await?.map_err(|_| AuthError::Invalid)?
        };
        match self.store.create_account(addr, hash, tombstone).await? {
            CreateOutcome::Created(acc) => {
                self.metrics.accounts_created.inc();
                self.metrics.accounts.inc();
                tracing::info!("account created");
                let key = self.secret.keyed_hash(&[b"login", addr.as_bytes(), password.as_bytes()]);
                self.cache.insert(key, acc.id, &acc.password_hash);
                Ok(acc)
            }
            // ACC-12: a concurrent first login won; verify against its password.
            CreateOutcome::AlreadyExists(acc) => self.check_existing(acc, addr, password, false).await,
            CreateOutcome::Tombstoned => Err(AuthError::Tombstoned),
        }
    }

    fn refused(&self, reason: &'static str) {
        self.metrics.registrations_refused.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Run a CPU-heavy hash job on a blocking thread, at most one per CPU at a time (ACC-21).
    async fn run_hash_job<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
        let job = HashJob::new(&self.hash_jobs);
        let _permit = self.verify_slots.acquire().await.map_err(|_| AuthError::Store(StoreError::Closed))?;
        // The job's end (and so the memory release) happens on the blocking thread, after `f`.
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(job);
            out
        })
        .await
        .map_err(|_| AuthError::Store(StoreError::Closed))
    }

    /// Delete an account and everything it owns, tombstoning the address (ACC-26..ACC-30).
    pub async fn delete(&self, acc: &Account, reason: DeleteReason) -> Result<(), StoreError> {
        let tombstone = self.secret.tombstone(&acc.address);
        if reason == DeleteReason::Inactive {
            // Only the expiry pass deletes inactive accounts; it scrubs once when it ends.
            self.store.delete_account_unscrubbed(acc.id, tombstone).await?;
        } else {
            self.store.delete_account(acc.id, tombstone).await?;
        }
        self.cache.forget(acc.id);
        self.metrics.accounts_deleted.get_or_create(&vec![("reason", reason.label())]).inc();
        self.metrics.accounts.dec();
        tracing::info!(reason = reason.label(), "account deleted");
        Ok(())
    }

    /// Block an account (ACC-36): logins and incoming mail refused, sessions closed.
    pub async fn block(&self, acc: &Account) -> Result<(), StoreError> {
        self.store.set_blocked(acc.id, true).await?;
        self.cache.forget(acc.id);
        Ok(())
    }
}

/// ACC-2: the rules for a NEW address.
pub fn valid_new_address(cfg: &Config, addr: &str) -> bool {
    let Ok(a) = Address::parse(addr) else { return false };
    let local = a.local();
    a.as_str() == addr
        && a.domain() == cfg.mail_domain.to_lowercase()
        && (cfg.username_min_length..=cfg.username_max_length).contains(&local.len())
        && local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-')
}

/// Counts a hash job from before it queues for a slot until it is done (or cancelled). When
/// none is left the burst is over: the argon2 working memory kept for reuse (19 MiB per slot)
/// is freed, so a quiet relay holds none of it.
struct HashJob(Arc<AtomicUsize>);

impl HashJob {
    fn new(jobs: &Arc<AtomicUsize>) -> Self {
        jobs.fetch_add(1, Ordering::SeqCst);
        Self(jobs.clone())
    }
}

impl Drop for HashJob {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 {
            password::release_scratch();
        }
    }
}
