//! Test harness: start the real `chatrelay` binary on free loopback ports with a temp data_dir,
//! and small raw protocol clients (SMTP lines, IMAP lines) over real TLS.

#![allow(dead_code)]

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

// ---------------------------------------------------------------- TLS

/// Accepts any certificate: the test relays use self-signed ones.
#[derive(Debug)]
pub struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn client_config(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_config_versions(rustls::DEFAULT_VERSIONS, alpn)
}

pub async fn tls_wrap<S: AsyncRead + AsyncWrite + Unpin>(s: S, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<S> {
    let connector = tokio_rustls::TlsConnector::from(client_config(alpn));
    let name = ServerName::try_from("chat.test").expect("name").to_owned();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, s))
        .await
        .expect("tls handshake timed out")
        .expect("tls handshake")
}

// ---------------------------------------------------------------- line clients

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A line-oriented client for SMTP and IMAP transcripts.
pub struct Lines {
    pub io: BufReader<Box<dyn Io>>,
}

pub const T: Duration = Duration::from_secs(15);

impl Lines {
    pub async fn plain(addr: &str) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        Self { io: BufReader::new(Box::new(s)) }
    }

    pub async fn tls(addr: &str) -> Self {
        Self::tls_alpn(addr, &[]).await
    }

    pub async fn tls_alpn(addr: &str, alpn: &[&[u8]]) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        Self { io: BufReader::new(Box::new(tls_wrap(s, alpn).await)) }
    }

    /// Upgrade in place after STARTTLS.
    pub async fn starttls(self) -> Self {
        let inner = self.io.into_inner();
        Self { io: BufReader::new(Box::new(tls_wrap(inner, &[]).await)) }
    }

    pub async fn send(&mut self, line: &str) {
        let w = self.io.get_mut();
        w.write_all(line.as_bytes()).await.expect("write");
        w.write_all(b"\r\n").await.expect("write");
        w.flush().await.expect("flush");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.io.get_mut();
        w.write_all(bytes).await.expect("write");
        w.flush().await.expect("flush");
    }

    /// One line without CRLF; None on EOF.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(T, self.io.read_until(b'\n', &mut buf)).await.expect("read timed out").ok()?;
        if n == 0 {
            return None;
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// A complete SMTP reply (all continuation lines), joined with '\n'.
    pub async fn reply(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            let l = self.line().await.unwrap_or_default();
            let last = l.len() < 4 || l.as_bytes()[3] != b'-';
            out.push(l);
            if last {
                return out.join("\n");
            }
        }
    }

    /// Send an SMTP command and return its reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.reply().await
    }

    /// Read IMAP lines up to and including the tagged completion of `tag`.
    pub async fn until_tag(&mut self, tag: &str) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = self.line().await {
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
        out
    }

    /// Send an IMAP command with `tag` and return all lines through its completion.
    pub async fn imap(&mut self, tag: &str, cmd: &str) -> Vec<String> {
        self.send(&format!("{tag} {cmd}")).await;
        self.until_tag(tag).await
    }
}

pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

// ---------------------------------------------------------------- store access (retention, push)

impl Relay {
    /// A direct connection to the relay's SQLite file (stop the relay before writing to it).
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.data_dir().join("chatrelay.db")).expect("open db");
        c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
        c
    }

    /// Run `f` on a `relay::store::Store` opened on the relay's data_dir, on a fresh runtime.
    pub fn with_store<T>(&self, f: impl AsyncFnOnce(&relay::store::Store) -> T) -> T {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        rt.block_on(async {
            let store = relay::store::Store::open(&self.data_dir()).expect("open store");
            f(&store).await
        })
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Create an account directly in the store (no password login possible: the hash is a dummy).
pub async fn seed_account(store: &relay::store::Store, address: &str) -> relay::store::Account {
    match store.create_account(address, "seeded".into(), address.as_bytes().to_vec()).await.expect("create") {
        relay::store::CreateOutcome::Created(a) | relay::store::CreateOutcome::AlreadyExists(a) => a,
        other => panic!("cannot seed {address}: {other:?}"),
    }
}

/// Deliver `size` bytes as one message to `to`, sent by `sender_account`; returns the UID.
pub async fn seed_message(
    store: &relay::store::Store,
    to: relay::store::AccountId,
    sender_account: Option<relay::store::AccountId>,
    size: usize,
) -> u32 {
    let body = bytes::Bytes::from(vec![b'x'; size]);
    let blob = store.put_blob(body).await.expect("blob");
    let r = store
        .deliver(relay::store::Delivery {
            sender: "someone@chat.test".into(),
            sender_account,
            local: vec![to],
            local_blob: Some(blob),
            push: true,
            ..Default::default()
        })
        .await
        .expect("deliver");
    r.stored[0].2
}

/// Count rows of a query returning one integer.
pub fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// Poll `cond` every 100 ms for at most `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Relay {
    /// Wait until the log says the relay is ready. Signal handlers are installed just before that
    /// line, after the listeners accept, so a SIGTERM sent earlier can kill the process outright.
    pub fn wait_logged_ready(&self) {
        let ok = wait_until(Duration::from_secs(10), || self.log().lines().any(|l| l.contains(" ready")));
        assert!(ok, "no ready line:\n{}", self.log());
    }
}
// ---------------------------------------------------------------- HTTP (web issue)

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).split(';').next().unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
}

/// Send one request with `Connection: close` over `io` and read the whole response.
pub async fn http_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use tokio::io::AsyncReadExt;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await.expect("write request");
    io.write_all(body).await.expect("write body");
    io.flush().await.expect("flush");
    let mut raw = Vec::new();
    // A TLS close without close_notify is fine here: we have what was sent.
    let _ = tokio::time::timeout(T, io.read_to_end(&mut raw)).await.expect("response timed out");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")) {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

/// One HTTPS request (ALPN http/1.1) to `addr`, with `Host: host`.
pub async fn https_req(
    addr: &str,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let s = TcpStream::connect(addr).await.expect("connect");
    http_on(tls_wrap(s, &[b"http/1.1"]).await, method, path, host, headers, body).await
}

/// One plain HTTP request to `addr`.
pub async fn http_req(addr: &str, method: &str, path: &str, host: &str) -> HttpResponse {
    let s = TcpStream::connect(addr).await.expect("connect");
    http_on(s, method, path, host, &[], b"").await
}

impl Relay {
    /// GET/POST on this relay's HTTPS listener with `Host: <ip>:<port>`.
    pub async fn https(&self, method: &str, path: &str) -> HttpResponse {
        let a = self.addr(self.ports.https);
        https_req(&a, method, path, &a, &[], b"").await
    }

    /// Start a relay in `[tls] mode = "files"` with a certificate made here for `chat.test`.
    pub fn start_files(extra: &str) -> Self {
        let mut r = Self::start(extra);
        r.stop();
        let ck = rcgen::generate_simple_self_signed(vec![r.domain.clone(), "127.0.0.1".into()]).expect("rcgen");
        let cert = r.dir.path().join("files-cert.pem");
        let key = r.dir.path().join("files-key.pem");
        std::fs::write(&cert, ck.cert.pem()).expect("write cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
        let toml = std::fs::read_to_string(&r.config_path).expect("read config").replace(
            "mode = \"self-signed\"",
            &format!("mode = \"files\"\ncert = \"{}\"\nkey = \"{}\"", cert.display(), key.display()),
        );
        std::fs::write(&r.config_path, toml).expect("write config");
        r.spawn();
        r
    }

    /// The relay's own accounts layer on its data_dir, in this test process (the same code the
    /// relay runs; SQLite WAL lets both processes use the file).
    pub fn accounts(&self) -> (relay::store::Store, std::sync::Arc<relay::accounts::Accounts>) {
        let cfg = relay::config::load(&self.config_path).expect("config");
        let store = relay::store::Store::open(&cfg.data_dir).expect("store");
        let secret = relay::accounts::Secret::load_or_create(&cfg.data_dir).expect("secret");
        let acc = relay::accounts::Accounts::new(
            store.clone(),
            relay::config::ConfigHandle::new(cfg),
            secret,
            relay::metrics::Metrics::new(),
        );
        (store, acc)
    }
}

/// Like `client_config`, limited to the given TLS versions (HTTP-3 tests).
pub fn client_config_versions(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

impl Relay {
    /// The Prometheus text from the metrics listener (blocking; for sync tests).
    pub fn metrics_text(&self) -> String {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        rt.block_on(http_req(&self.addr(self.ports.metrics), "GET", "/metrics", "x")).text()
    }

    /// The value of one sample line (`name{labels}` exactly as rendered), if present.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics_text();
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
    }
}

// ---------------------------------------------------------------- SMTP helpers (issue 3)

/// A real PGP/MIME encrypted message from `from` to `to`, with a unique Message-ID.
pub fn encrypted_eml(from: &str, to: &str) -> String {
    crate::fixtures::encrypted_eml(from, to)
        .replace("<fixture@fixture.test>", &format!("<{}@fixture.test>", random_local()))
}

/// Dot-stuff and CRLF-normalise a message and terminate it with `.`.
pub fn smtp_data(eml: &str) -> String {
    let mut out = String::with_capacity(eml.len() + 16);
    for line in eml.replace("\r\n", "\n").trim_end_matches('\n').split('\n') {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

/// Open port 465, EHLO and AUTH PLAIN; returns the client and the AUTH reply.
pub async fn smtp_login(relay: &Relay, user: &str, password: &str) -> (Lines, String) {
    use base64::Engine as _;
    let mut c = Lines::tls(&relay.addr(relay.ports.submissions)).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let token = base64::prelude::BASE64_STANDARD.encode(format!("\0{user}\0{password}"));
    let r = c.cmd(&format!("AUTH PLAIN {token}")).await;
    (c, r)
}

/// Log in over 465 (creating the account on first login) and send `eml`; returns the final
/// reply (the first non-2xx/3xx reply if a step is refused).
pub async fn submit(relay: &Relay, user: &str, password: &str, from: &str, rcpts: &[&str], eml: &str) -> String {
    let (mut c, r) = smtp_login(relay, user, password).await;
    if !r.starts_with("235") {
        return r;
    }
    let r = send_mail(&mut c, from, rcpts, eml).await;
    let _ = c.cmd("QUIT").await;
    r
}

/// One transaction on an open, greeted session.
pub async fn send_mail(c: &mut Lines, from: &str, rcpts: &[&str], eml: &str) -> String {
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    if !r.starts_with("250") {
        return r;
    }
    for rcpt in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        if !r.starts_with("250") {
            let _ = c.cmd("RSET").await;
            return r;
        }
    }
    let r = c.cmd("DATA").await;
    if !r.starts_with("354") {
        return r;
    }
    c.send_raw(smtp_data(eml).as_bytes()).await;
    c.reply().await
}

/// Create an account by logging in once over SMTP.
pub async fn create_account(relay: &Relay, addr: &str) {
    let (mut c, r) = smtp_login(relay, addr, PASSWORD).await;
    assert!(r.starts_with("235"), "login {addr}: {r}");
    let _ = c.cmd("QUIT").await;
}

/// The stored messages (bytes) in `addr`'s INBOX, read from the relay's database and blob files
/// while it runs (WAL allows a concurrent reader).
pub async fn inbox_messages(relay: &Relay, addr: &str) -> Vec<Vec<u8>> {
    let store = relay::store::Store::open(&relay.data_dir()).expect("open store");
    let Some(acc) = store.account_by_address(addr).await.expect("read") else { return Vec::new() };
    let inbox = store.mailbox(acc.id, "INBOX").await.expect("read").expect("inbox");
    let mut out = Vec::new();
    for m in store.messages(inbox.id).await.expect("messages") {
        out.push(store.read_blob(&m.blob).await.expect("blob"));
    }
    out
}

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
