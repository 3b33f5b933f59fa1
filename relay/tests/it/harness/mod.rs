//! Test harness: start the real `chatrelay` binary on free loopback ports with a temp data_dir,
//! and small raw protocol clients (SMTP lines, IMAP lines) over real TLS.

#![allow(dead_code)]

mod http;
mod lines;
mod smtp;
mod store;
mod tls;

pub use http::*;
pub use lines::*;
pub use smtp::*;
pub use store::*;
pub use tls::*;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_chatrelay");

/// A free loopback port (bound then released; the tiny race is acceptable in tests).
pub fn free_port() -> u16 {
    // Ports below Linux's ephemeral range (32768+), so client connections of parallel tests can
    // never hold them; never the same port twice in this process; probed before use.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 600) * 20;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (base + n % 12_000) as u16;
        let port = if port >= 32_000 { port - 12_000 } else { port };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
    pub imap: u16,
    pub imaps: u16,
    pub http: u16,
    pub https: u16,
    pub metrics: u16,
}

impl Ports {
    pub fn new() -> Self {
        Self {
            smtp: free_port(),
            submission: free_port(),
            submissions: free_port(),
            imap: free_port(),
            imaps: free_port(),
            http: free_port(),
            https: free_port(),
            metrics: free_port(),
        }
    }
    pub fn all(&self) -> [u16; 8] {
        [self.smtp, self.submission, self.submissions, self.imap, self.imaps, self.http, self.https, self.metrics]
    }
}

pub struct Relay {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub ports: Ports,
    pub domain: String,
    pub ip: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Relay {
    /// Start a relay with `mail_domain = "chat.test"` and `extra` TOML appended at top level.
    pub fn start(extra: &str) -> Self {
        Self::start_with("chat.test", "127.0.0.1", extra)
    }

    pub fn start_with(domain: &str, ip: &str, extra: &str) -> Self {
        Self::start_with_ports(domain, ip, Ports::new(), extra)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)start the process and wait until every listener accepts.
    pub fn spawn(&mut self) {
        let filter = std::env::var("RELAYTEST_LOG").unwrap_or_else(|_| "debug".into());
        self.launch(&[("RUST_LOG", &filter)]);
    }

    /// Start the process with `env` set, logging to a new `relay-NNNN.log`, and wait until ready.
    fn launch(&mut self, env: &[(&str, &str)]) {
        let n = std::fs::read_dir(self.dir.path()).map(|d| d.count()).unwrap_or(0);
        let log_path = self.dir.path().join(format!("relay-{n:04}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn chatrelay");
        self.child = Some(child);
        self.log_path = log_path;
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in self.ports.all() {
            let addr: SocketAddr = format!("{}:{port}", self.ip).parse().expect("addr");
            loop {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                    panic!("chatrelay exited with {status} during start-up:\n{}", self.log());
                }
                assert!(Instant::now() < deadline, "chatrelay did not open port {port}:\n{}", self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn log(&self) -> String {
        let mut all = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            let mut logs: Vec<_> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect();
            logs.sort();
            for p in logs {
                all.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
        all
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("running")
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run a `chatrelay` subcommand against this relay's config; returns (code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN).args(args).arg("--config").arg(&self.config_path).output().expect("run chatrelay");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.ip)
    }

    /// A new valid address on this relay (9 chars of [a-z0-9]).
    pub fn new_address(&self) -> String {
        format!("{}@{}", random_local(), self.domain)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- chatrelay log ----\n{}", self.log());
        }
    }
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

pub fn random_local() -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = rand_u64();
    (0..9)
        .map(|_| {
            let c = A[(n % 36) as usize] as char;
            n /= 36;
            if n == 0 {
                n = rand_u64();
            }
            c
        })
        .collect()
}

pub const PASSWORD: &str = "correct-horse-battery-9";

// ---------------------------------------------------------------- relays with chosen ports

impl Relay {
    /// Like `start_with`, but with explicit ports (two relays on different loopback IPs may share
    /// port numbers, so each can reach the other's smtp/https through `delivery.*_port`).
    pub fn start_with_ports(domain: &str, ip: &str, ports: Ports, extra: &str) -> Self {
        let mut r = Self::prepare(domain, ip, ports, extra);
        r.spawn();
        r
    }

    /// Write the config and create the temp dir without starting the process, so a test can set
    /// up `data_dir` first; then call `spawn()`.
    pub fn prepare(domain: &str, ip: &str, ports: Ports, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("chatrelay.toml");
        let data = dir.path().join("data");
        let extra = with_open_gates(extra);
        let toml = format!(
            r#"mail_domain = "{domain}"
data_dir = "{data}"
{extra}
[listen]
smtp = "{ip}:{}"
submission = "{ip}:{}"
submissions = "{ip}:{}"
imap = "{ip}:{}"
imaps = "{ip}:{}"
http = "{ip}:{}"
https = "{ip}:{}"
metrics = "{ip}:{}"

[tls]
mode = "self-signed"
"#,
            ports.smtp,
            ports.submission,
            ports.submissions,
            ports.imap,
            ports.imaps,
            ports.http,
            ports.https,
            ports.metrics,
            data = data.display(),
        );
        // Tests never ask real DNS: outbound delivery resolves through a dead loopback port
        // (temporary failure) unless the test brings its own resolver.
        std::fs::write(&config_path, offline_resolver(toml)).expect("write config");
        Self { dir, config_path, ports, domain: domain.into(), ip: ip.into(), child: None, log_path: PathBuf::new() }
    }
}

/// `extra` preceded by the registration gates (ACC-16) it does not set itself, opened so far that a
/// busy 2-core test machine never refuses new accounts (load, memory, disk). ACC-16 tests set a gate
/// in `extra`.
pub fn with_open_gates(extra: &str) -> String {
    let mut gates = String::new();
    for (key, line) in [
        ("max_load_1m", "max_load_1m = 100000.0\n"),
        ("min_available_memory", "min_available_memory = \"1M\"\n"),
        ("min_free_disk_space", "min_free_disk_space = \"1M\"\n"),
        // Tests create many accounts by first login from one loopback address (issue 26 shares
        // the `/new` bucket with them); tests of that limit set it themselves.
        ("new_accounts_burst", "limits.new_accounts_burst = 100000\n"),
        // Issue 28: the embedded TURN server (UDP 3478) and iroh relay are on by default; test
        // relays run without them unless the test configures them.
        ("turn.", "turn.listen = []\n"),
        ("iroh_relay.enabled", "iroh_relay.enabled = false\n"),
    ] {
        if !extra.contains(key) {
            gates.push_str(line);
        }
    }
    format!("{gates}{extra}")
}

/// Add `delivery.resolver = "127.0.0.1:9"` (nothing listens: every lookup fails at once,
/// temporarily) to a config that does not set a resolver, so no test queries real DNS.
pub fn offline_resolver(toml: String) -> String {
    const LINE: &str = "resolver = \"127.0.0.1:9\"\n";
    if toml.contains("resolver") {
        toml
    } else if let Some(i) = toml.find("[delivery]\n") {
        let at = i + "[delivery]\n".len();
        format!("{}{LINE}{}", &toml[..at], &toml[at..])
    } else {
        format!("{toml}\n[delivery]\n{LINE}")
    }
}

// ---------------------------------------------------------------- robustness (issue 12)

impl Relay {
    /// Restart this relay with `RUST_LOG=<filter>` (the log privacy test runs at `trace`).
    pub fn respawn_with_log(&mut self, filter: &str) {
        self.stop();
        self.launch(&[("RUST_LOG", filter), ("NO_COLOR", "1")]);
    }

    /// Whether the process is still running (not exited or killed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}
