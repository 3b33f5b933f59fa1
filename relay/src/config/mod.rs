//! The typed configuration tree of config.md.
//!
//! In: a TOML file plus `CHATRELAY_` environment overrides (see `load.rs`). Out: `Config`, with every
//! default filled in. Unknown keys are errors; every error of a file is reported together.
//! Other modules take the sub-struct they need, never mutate it; SIGHUP swaps a whole new `Config`
//! in the `ConfigHandle`.

mod load;
pub mod realtime;
pub mod units;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Deserializer, Serialize};

pub use load::{ConfigError, load, load_str};
pub use units::{ByteSize, ConfDuration};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mail_domain: String,
    pub data_dir: PathBuf,

    pub username_min_length: usize,
    pub username_max_length: usize,
    pub password_min_length: usize,
    pub registration: Registration,
    pub max_load_1m: f64,
    pub min_available_memory: ByteSize,
    pub min_free_disk_space: ByteSize,

    pub max_user_send_per_minute: u32,
    pub max_user_send_burst_size: u32,
    pub max_message_size: ByteSize,
    pub max_mailbox_size: ByteSize,
    pub max_smtp_connections: usize,
    pub max_imap_connections: usize,
    pub max_smtp_recipients: usize,
    /// Message bytes being received at once on port 25 and `/mxdeliv` together (issue 31).
    pub max_inflight_message_bytes: ByteSize,
    /// IMAP and submission over `wss://<host>/imap` and `/smtp` on the HTTPS listener (issue 28).
    pub websocket: bool,

    pub delete_mails_after: ConfDuration,
    pub delete_large_after: ConfDuration,
    pub large_message_size: ByteSize,
    pub delete_inactive_users_after: ConfDuration,
    pub expire_interval: ConfDuration,

    pub listen: Listen,
    pub tls: Tls,
    pub dkim: Dkim,
    pub delivery: Delivery,
    pub push: Push,
    pub server_metadata: ServerMetadata,
    pub privacy: Privacy,
    pub limits: Limits,
    /// Embedded TURN server (issue 28).
    pub turn: realtime::Turn,
    /// Embedded iroh relay (issue 28).
    pub iroh_relay: realtime::IrohRelay,
    /// Where state lives (issue 27): the embedded SQLite or a shared PostgreSQL.
    pub store: StoreBackend,
    /// Where large message bodies live (issue 27).
    pub blobs: Blobs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    Open,
    Closed,
    /// Only `/new` with a valid invite creates accounts (issue 28, `chatrelay invites`).
    Invite,
}

/// Listener addresses: "one address or a list; an empty list disables the listener".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    #[serde(deserialize_with = "addr_list")]
    pub smtp: Vec<SocketAddr>,
    #[serde(deserialize_with = "addr_list")]
    pub submission: Vec<SocketAddr>,
    #[serde(deserialize_with = "addr_list")]
    pub submissions: Vec<SocketAddr>,
    #[serde(deserialize_with = "addr_list")]
    pub imap: Vec<SocketAddr>,
    #[serde(deserialize_with = "addr_list")]
    pub imaps: Vec<SocketAddr>,
    #[serde(deserialize_with = "addr_list")]
    pub http: Vec<SocketAddr>,
    #[serde(deserialize_with = "addr_list")]
    pub https: Vec<SocketAddr>,
    #[serde(deserialize_with = "addr_list")]
    pub metrics: Vec<SocketAddr>,
    /// Every listener but metrics expects a PROXY protocol v2 header first (issue 27: behind a
    /// TCP load balancer); connections without one are closed.
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Acme,
    Files,
    SelfSigned,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub mode: TlsMode,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub acme_email: String,
    pub acme_directory: String,
    /// Ports 993/465: a client offering ALPN must offer `imap` resp. `smtp` (issue 28, ALPACA).
    pub strict_alpn: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dkim {
    pub selector: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    pub resolver: String,
    pub smtp_port: u16,
    pub https_port: u16,
    pub try_https: bool,
    pub require_valid_tls: bool,
    pub extra_root_certs: String,
    pub queue_lifetime: ConfDuration,
    /// DNSSEC trust anchor for DANE TLSA lookups: a file of DNSKEY records; empty means the IANA
    /// root key (issue 29; tests point it at their signed test zone).
    pub dnssec_trust_anchor: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Push {
    pub notify_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerMetadata {
    pub iroh_relay: String,
    pub turn: String,
    /// `"builtin"` (the project's own `config/appversions.json`, compiled in), a file path, or
    /// `""` for none (issue 28: served by default, like the reference).
    pub appversions: String,
}

impl Default for ServerMetadata {
    fn default() -> Self {
        Self { iroh_relay: String::new(), turn: String::new(), appversions: "builtin".into() }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    pub postal: String,
    pub mail: String,
    pub pdo: String,
    pub supervisor: String,
}

/// `[store]` (issue 27): `backend = "sqlite"` (the default, in `data_dir`) or `"postgres"` with
/// `url = "postgres://..."` shared by every node. The URL may carry a password: set it through
/// `CHATRELAY_STORE__URL` rather than in the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreBackend {
    pub backend: StoreKind,
    pub url: String,
    /// Connections per node in the PostgreSQL pool.
    pub pool_size: usize,
    /// How long PostgreSQL may take to answer before a call fails (default 30 s).
    pub timeout: Option<ConfDuration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Sqlite,
    Postgres,
}

/// `[blobs]` (issue 27): `backend = "local"` (files in `data_dir/blobs`) or `"s3"` (an
/// S3-compatible bucket; credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Blobs {
    pub backend: BlobKind,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// An object with no row and older than this is an orphan (a crash between PUT and COMMIT)
    /// that the expiry pass deletes; default 1 day.
    pub orphan_grace: Option<ConfDuration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    #[default]
    Local,
    S3,
}

/// Per-client work bounds (issue 26): command budgets, slot timeouts, auth throttling. Every hit
/// counts in `chatrelay_limit_hits_total{limit=...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// IMAP bytes per command (line plus literals) before login.
    pub imap_command_prelogin: ByteSize,
    /// IMAP bytes per command after login; APPEND's message literal may add `max_message_size`.
    pub imap_command: ByteSize,
    /// Unauthenticated IMAP connections close this long after connect, whatever they send.
    pub imap_prelogin_timeout: ConfDuration,
    /// Bytes of command input (lines plus literals) held by all IMAP sessions together; a
    /// literal that would pass it waits for room (backpressure).
    pub imap_buffered_total: ByteSize,
    /// Per-client connection caps and auth counters group IPv4 addresses by this prefix length.
    pub ipv4_prefix: u8,
    /// ... and IPv6 addresses by this one.
    pub ipv6_prefix: u8,
    /// SMTP commands allowed before AUTH succeeds or a MAIL is accepted, and the time for them.
    pub smtp_setup_commands: u32,
    pub smtp_setup_timeout: ConfDuration,
    /// Failed logins per client prefix within `auth_window` that cost no extra delay.
    pub auth_free_failures: u32,
    /// The growing delay (doubling from 1 s) is capped here.
    pub auth_max_delay: ConfDuration,
    /// Failed logins per client prefix, and per account, within `auth_window` before further
    /// attempts are refused without a password hash.
    pub auth_failures_per_client: u32,
    pub auth_failures_per_account: u32,
    pub auth_window: ConfDuration,
    /// New accounts per client prefix: shared token bucket with `/new` (HTTP-17).
    pub new_accounts_per_second: f64,
    pub new_accounts_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            imap_command_prelogin: ByteSize(8 * 1024),
            imap_command: ByteSize(256 * 1024),
            imap_prelogin_timeout: ConfDuration::from_secs(60),
            imap_buffered_total: ByteSize(256 * 1024 * 1024),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            smtp_setup_commands: 30,
            smtp_setup_timeout: ConfDuration::from_secs(120),
            auth_free_failures: 3,
            auth_max_delay: ConfDuration::from_secs(15),
            auth_failures_per_client: 30,
            auth_failures_per_account: 10,
            auth_window: ConfDuration::from_secs(15 * 60),
            new_accounts_per_second: 2.0,
            new_accounts_burst: 5,
        }
    }
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().filter_map(|a| a.parse().ok()).collect()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mail_domain: String::new(),
            data_dir: PathBuf::from("/var/lib/chatrelay"),
            username_min_length: 9,
            username_max_length: 9,
            password_min_length: 9,
            registration: Registration::Open,
            max_load_1m: 5.0,
            min_available_memory: ByteSize(200 * 1024 * 1024),
            min_free_disk_space: ByteSize(1024 * 1024 * 1024),
            max_user_send_per_minute: 60,
            max_user_send_burst_size: 10,
            max_message_size: ByteSize(31_457_280),
            max_mailbox_size: ByteSize(500 * 1024 * 1024),
            max_smtp_connections: 1000,
            max_imap_connections: 10_000,
            max_smtp_recipients: 1000,
            max_inflight_message_bytes: ByteSize(128 * 1024 * 1024),
            websocket: true,
            delete_mails_after: ConfDuration::from_secs(20 * 86_400),
            delete_large_after: ConfDuration::from_secs(7 * 86_400),
            large_message_size: ByteSize(200_000),
            delete_inactive_users_after: ConfDuration::from_secs(90 * 86_400),
            expire_interval: ConfDuration::from_secs(3600),
            listen: Listen::default(),
            tls: Tls::default(),
            dkim: Dkim::default(),
            delivery: Delivery::default(),
            push: Push::default(),
            server_metadata: ServerMetadata::default(),
            privacy: Privacy::default(),
            limits: Limits::default(),
            turn: realtime::Turn::default(),
            iroh_relay: realtime::IrohRelay::default(),
            store: StoreBackend::default(),
            blobs: Blobs::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            smtp: addrs(&["[::]:25"]),
            submission: addrs(&["[::]:587"]),
            submissions: addrs(&["[::]:465"]),
            imap: addrs(&["[::]:143"]),
            imaps: addrs(&["[::]:993"]),
            http: addrs(&["[::]:80"]),
            https: addrs(&["[::]:443"]),
            metrics: Vec::new(),
            proxy_protocol: false,
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            mode: TlsMode::Acme,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            acme_email: String::new(),
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
            strict_alpn: true,
        }
    }
}

impl Default for Dkim {
    fn default() -> Self {
        Self { selector: "dkim".into(), key: None }
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            resolver: "system".into(),
            smtp_port: 25,
            https_port: 443,
            try_https: true,
            require_valid_tls: true,
            extra_root_certs: String::new(),
            queue_lifetime: ConfDuration::from_secs(2 * 86_400),
            dnssec_trust_anchor: String::new(),
        }
    }
}

impl Default for Push {
    fn default() -> Self {
        Self { notify_url: "https://notifications.delta.chat/notify".into() }
    }
}

fn addr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) if s.trim().is_empty() => Vec::new(),
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    list.iter()
        .map(|s| {
            s.trim().parse::<SocketAddr>().map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid listen address {s:?}: expected IP:PORT, e.g. \"[::]:25\" or \"127.0.0.1:2525\""
                ))
            })
        })
        .collect()
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("chatrelay.db")
    }

    /// Whether push is enabled (PUSH-6).
    pub fn push_enabled(&self) -> bool {
        !self.push.notify_url.trim().is_empty()
    }

    /// Semantic checks that serde cannot express. Returns every problem found.
    fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        let d = self.mail_domain.trim();
        if d.is_empty() {
            errs.push("mail_domain is required".to_string());
        } else if d.contains(['@', ' ', '/']) || d != self.mail_domain {
            errs.push(format!("mail_domain {:?} is not a domain name", self.mail_domain));
        } else if d.starts_with('[') && crate::outbound::mx::address_literal(d).is_none() {
            // IP-only relays (issue 29): `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
            errs.push(format!("mail_domain {:?} is not an address literal such as \"[192.0.2.1]\"", self.mail_domain));
        } else if d.starts_with('[') && self.tls.mode == TlsMode::Acme {
            errs.push(
                "an IP-only mail_domain needs tls.mode = \"self-signed\" or \"files\" (no ACME for an address)".into(),
            );
        }
        if self.username_min_length == 0 || self.username_min_length > self.username_max_length {
            errs.push("username_min_length must be between 1 and username_max_length".into());
        }
        if self.max_user_send_per_minute == 0 {
            errs.push("max_user_send_per_minute must be at least 1".into());
        }
        if self.max_smtp_connections < 5 || self.max_imap_connections < 5 {
            errs.push("max_smtp_connections and max_imap_connections must be at least 5".into());
        }
        if self.tls.mode == TlsMode::Files
            && (self.tls.cert.as_os_str().is_empty() || self.tls.key.as_os_str().is_empty())
        {
            errs.push("tls.mode = \"files\" needs tls.cert and tls.key".into());
        }
        if self.delivery.resolver != "system" && self.delivery.resolver.parse::<SocketAddr>().is_err() {
            errs.push(format!("delivery.resolver {:?} must be \"system\" or IP:PORT", self.delivery.resolver));
        }
        let l = &self.limits;
        if l.ipv4_prefix == 0 || l.ipv4_prefix > 32 || l.ipv6_prefix == 0 || l.ipv6_prefix > 128 {
            errs.push("limits.ipv4_prefix must be 1..=32 and limits.ipv6_prefix 1..=128".into());
        }
        if l.imap_command_prelogin.0 < 1024 || l.imap_command.0 < l.imap_command_prelogin.0 {
            errs.push("limits.imap_command_prelogin must be at least 1K and at most limits.imap_command".into());
        }
        if l.new_accounts_burst == 0 || l.new_accounts_per_second.is_nan() || l.new_accounts_per_second < 0.0 {
            errs.push("limits.new_accounts_burst must be at least 1 and new_accounts_per_second not negative".into());
        }
        self.turn.validate(&mut errs);
        if self.store.backend == StoreKind::Postgres && !self.store.url.starts_with("postgres") {
            errs.push("store.backend = \"postgres\" needs store.url = \"postgres://...\"".into());
        }
        if self.blobs.backend == BlobKind::S3 && (self.blobs.endpoint.is_empty() || self.blobs.bucket.is_empty()) {
            errs.push("blobs.backend = \"s3\" needs blobs.endpoint and blobs.bucket".into());
        }
        if self.blobs.backend == BlobKind::S3 && self.store.backend != StoreKind::Postgres {
            errs.push("blobs.backend = \"s3\" needs store.backend = \"postgres\"".into());
        }
        errs
    }
}

/// The live config, swapped whole on SIGHUP. Readers take a cheap `Arc` snapshot.
#[derive(Clone)]
pub struct ConfigHandle(Arc<RwLock<Arc<Config>>>);

impl Config {
    /// The in-flight budget; never below one message of `max_message_size`.
    pub fn inflight_budget(&self) -> u64 {
        self.max_inflight_message_bytes.0.max(self.max_message_size.0)
    }
}

impl ConfigHandle {
    pub fn new(cfg: Config) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(cfg))))
    }
    pub fn get(&self) -> Arc<Config> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    pub fn replace(&self, cfg: Config) {
        match self.0.write() {
            Ok(mut g) => *g = Arc::new(cfg),
            Err(p) => *p.into_inner() = Arc::new(cfg),
        }
    }
}
