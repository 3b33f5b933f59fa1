//! The command line (config.md "CLI"). Exit codes: 0 success, 1 runtime error, 2 usage or config
//! error, each failure with one clear line on stderr (OPS-21).

pub(crate) mod accounts;
mod chatmail_ini;
mod dns;
mod expire;
mod health;
pub mod import;
mod init;
mod invites;
mod malloc;
mod migrate;
pub(crate) mod queue;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

pub const DEFAULT_CONFIG: &str = "/etc/chatrelay/chatrelay.toml";

/// `chatrelay --version`: the package version and the git revision it was built from (build.rs).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("RELAY_GIT_REV"), ")");

#[derive(Parser, Debug)]
#[command(name = "chatrelay", version = VERSION, about = "A chatmail relay in one binary")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every listener and background task; SIGTERM drains and exits, SIGHUP reloads.
    Serve {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write a commented config, create data_dir, the DKIM key and the keyed-hash secret.
    Init {
        /// The mail domain (also the host name).
        domain: Option<String>,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Convert a chatmail/relay chatmail.ini instead of starting from defaults.
        #[arg(long)]
        from_chatmail_ini: Option<PathBuf>,
    },
    /// Run one expiry pass on data_dir and print what it removed (RET-13, RET-14).
    Expire {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Count what a pass would remove without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Inspect and manage accounts (list, show, delete, block, allow-cleartext, deny-cleartext).
    Accounts {
        #[arg(long, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        cmd: accounts::AccountsCmd,
    },
    /// Print the DNS records to publish (zone-file format) and check them against live DNS.
    Dns {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The host's public address, when it is not on an interface (1:1 NAT, cloud VMs).
        /// Repeatable; replaces the addresses found on the interfaces.
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
    },
    /// Validate a config file and print the effective config with defaults filled in.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Registration invites for `registration = "invite"` (create, list, revoke).
    Invites {
        #[arg(long, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        cmd: invites::InvitesCmd,
    },
    /// GET /healthz from the running relay (metrics listener, else HTTPS); exit 0 on 200.
    Healthcheck {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Copy this node's store into the shared PostgreSQL of `[store] url` and verify it (issue 27).
    Migrate {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The backend to move to: "postgres".
        #[arg(long)]
        to: String,
    },
    /// Inspect and steer the outbound queue (OPS-20).
    Queue {
        #[arg(long, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: queue::QueueAction,
    },
    /// Import the accounts, messages, push tokens and DKIM key of a chatmail/relay host (issue 29).
    Import {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The reference's mailboxes directory, `/home/vmail/mail/<domain>`.
        #[arg(long)]
        from_chatmail: PathBuf,
        /// The reference's chatmail.ini (its mail_domain is checked against ours).
        #[arg(long)]
        chatmail_ini: Option<PathBuf>,
        /// The reference's DKIM key [default: /etc/dkimkeys/opendkim.private].
        #[arg(long)]
        dkim_key: Option<PathBuf>,
        /// Read everything and report what would be imported; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Failure of a subcommand, mapped to the exit code.
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Runtime(String),
}

impl Failure {
    pub fn runtime(e: impl std::fmt::Display) -> Self {
        Self::Runtime(e.to_string())
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Usage(m) | Self::Runtime(m) => m,
        }
    }
}

static CONFIG_PATH: OnceLock<PathBuf> = OnceLock::new();

/// The config file `serve` was started with (SIGHUP reloads it).
pub fn config_path() -> Option<PathBuf> {
    CONFIG_PATH.get().cloned()
}

pub fn load_config(path: &Path) -> Result<Config, Failure> {
    let cfg = config::load(path).map_err(|e| Failure::Usage(e.errors.join("\n")))?;
    // IMAP-35: the appversions file is validated at start, not first when a client asks.
    let appversions = cfg.server_metadata.appversions.trim();
    if !appversions.is_empty() {
        crate::imap::check_appversions_file(appversions)
            .map_err(|e| Failure::Usage(format!("{}: server_metadata.appversions: {e}", path.display())))?;
    }
    Ok(cfg)
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("chatrelay: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("chatrelay: {m}");
            ExitCode::from(1)
        }
    }
}

/// Third-party crates whose debug output names peer or resolver addresses (PRIV-1). They stay at
/// `warn` unless `RUST_LOG` names them explicitly.
const QUIET_CRATES: &[&str] = &["hickory_proto", "hickory_resolver", "hickory_server", "hyper_util", "h2", "reqwest"];

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let mut spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
    for krate in QUIET_CRATES {
        if !spec.contains(krate) {
            spec.push_str(&format!(",{krate}=warn"));
        }
    }
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    // Blocking threads (store reads, file I/O, password hashes) left over from a burst give their
    // stacks back after 2 s instead of tokio's 10 s (P5: memory after load).
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().thread_keep_alive(std::time::Duration::from_secs(2));
    // One async worker per CPU but one, which the store's writer thread and the password hashes
    // use: on 2 vCPUs a second worker cost more in cross-thread wake-ups than it gave (P2 p50
    // 1.25 -> 0.9 ms with one worker, peak throughput 5-15 % lower; docs/decisions.md).
    // `TOKIO_WORKER_THREADS` still overrides.
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        b.worker_threads(cpus.saturating_sub(1).max(1));
    }
    b.build().map_err(Failure::runtime)
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config } => {
            malloc::reexec_with_tunables();
            let cfg = load_config(&config)?;
            let _ = CONFIG_PATH.set(config);
            runtime()?.block_on(serve(cfg))
        }
        Command::Init { domain, config, from_chatmail_ini } => init::run(domain, &config, from_chatmail_ini.as_deref()),
        Command::Expire { config, dry_run } => expire::run(&config, dry_run),
        Command::Migrate { config, to } => migrate::run(&config, &to),
        Command::Queue { config, action } => queue::run(load_config(&config)?, action),
        Command::Accounts { config, cmd } => accounts::run(&config, cmd),
        Command::Invites { config, cmd } => invites::run(&config, cmd),
        Command::Import { config, from_chatmail, chatmail_ini, dkim_key, dry_run } => {
            import::run(import::Options { config, from: from_chatmail, chatmail_ini, dkim_key, dry_run })
        }
        Command::Dns { config, ips } => match dns::run(&config, ips)? {
            true => Ok(()),
            false => Err(Failure::Runtime("some required DNS records are missing or wrong (see above)".into())),
        },
        Command::Healthcheck { config } => health::run(&load_config(&config)?),
        Command::CheckConfig { config } => {
            let cfg = load_config(&config)?;
            let text = toml::to_string_pretty(&cfg).map_err(Failure::runtime)?;
            println!("{text}");
            Ok(())
        }
    }
}

async fn serve(cfg: Config) -> Result<(), Failure> {
    // On PostgreSQL the store adopts the cluster's key or offers this node's (share_dkim).
    if cfg.dkim.key.is_none() && cfg.store.backend != crate::config::StoreKind::Postgres {
        crate::outbound::dkim_key::ensure(&crate::outbound::dkim_key::default_path(&cfg.data_dir))
            .map_err(Failure::runtime)?;
    }
    let (ctx, _lock) = crate::server::build_context(cfg).map_err(Failure::runtime)?;
    crate::server::run(ctx).await.map_err(Failure::runtime)
}
