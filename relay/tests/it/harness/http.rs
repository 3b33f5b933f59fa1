//! HTTP and HTTPS requests against the relay.

#![allow(dead_code)]

use super::*;

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
