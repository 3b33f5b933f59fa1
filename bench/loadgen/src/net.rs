//! Connections: the loopback-only target, the TLS client config (no certificate verification,
//! no session resumption, like mailbench's `ssl` context) and a buffered line reader in which
//! every read is bounded by the run's timeout.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub type Tls = TlsStream<TcpStream>;

/// Where and how to connect; shared by every task of a run.
pub struct Target {
    pub smtp: SocketAddr,
    pub smtp_implicit_tls: bool,
    pub imap: SocketAddr,
    pub tls: TlsConnector,
    pub server_name: ServerName<'static>,
    pub timeout: Duration,
    pub password: String,
}

impl Target {
    pub async fn new(
        host: &str,
        smtp_port: u16,
        smtp_implicit_tls: bool,
        imap_port: u16,
        timeout: Duration,
        password: String,
    ) -> Result<Target> {
        let ip = loopback(host, smtp_port).await?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS client config")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertCheck(provider)))
            .with_no_client_auth();
        // Every connection does a full handshake, as Python's ssl module does by default.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Target {
            smtp: SocketAddr::new(ip, smtp_port),
            smtp_implicit_tls,
            imap: SocketAddr::new(ip, imap_port),
            tls: TlsConnector::from(Arc::new(config)),
            server_name: ServerName::IpAddress(ip.into()),
            timeout,
            password,
        })
    }

    pub async fn tcp(&self, addr: SocketAddr) -> Result<TcpStream> {
        self.tcp_from(addr, None).await
    }

    /// Connects from `src` (another loopback address) when given.
    pub async fn tcp_from(&self, addr: SocketAddr, src: Option<IpAddr>) -> Result<TcpStream> {
        let connect = async {
            let Some(src) = src else { return TcpStream::connect(addr).await };
            let sock = if src.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            sock.bind(SocketAddr::new(src, 0))?;
            sock.connect(addr).await
        };
        let s = bounded(self.timeout, connect)
            .await?
            .with_context(|| format!("connect to {addr}{}", src.map(|s| format!(" from {s}")).unwrap_or_default()))?;
        s.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(s)
    }

    pub async fn tls(&self, tcp: TcpStream) -> Result<Tls> {
        bounded(self.timeout, self.tls.connect(self.server_name.clone(), tcp)).await?.context("TLS handshake")
    }
}

/// Resolves `host`; refuses anything that is not a loopback address.
async fn loopback(host: &str, port: u16) -> Result<IpAddr> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.with_context(|| format!("cannot resolve {host}"))?.collect();
    let Some(first) = addrs.first() else { bail!("{host} resolves to no address") };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!("{host} resolves to {} which is not a loopback address; loadgen only runs on loopback", bad.ip());
    }
    Ok(first.ip())
}

/// `fut` or an error after `limit`.
pub async fn bounded<F: std::future::Future>(limit: Duration, fut: F) -> Result<F::Output> {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => Ok(v),
        Err(_) => bail!("timed out after {:.1} s", limit.as_secs_f64()),
    }
}

/// Accepts any certificate (the servers under test are self-signed) but still checks the
/// handshake signature, so the client does the same cryptographic work as mailbench's.
#[derive(Debug)]
struct NoCertCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Longest protocol line accepted (literals are read separately, by length).
const MAX_LINE: usize = 64 * 1024;

/// A stream with a read buffer: CRLF lines and exact-length reads, each read bounded.
pub struct Conn<S> {
    pub s: S,
    buf: Vec<u8>,
    pos: usize,
    timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(s: S, timeout: Duration) -> Conn<S> {
        Conn { s, buf: Vec::new(), pos: 0, timeout }
    }

    /// The stream, for a TLS upgrade; fails if the peer already sent more than we consumed.
    pub fn into_inner(self) -> Result<S> {
        if self.pos < self.buf.len() {
            bail!("server sent data before the TLS handshake");
        }
        Ok(self.s)
    }

    /// Frees the read buffer (idle connections keep almost nothing).
    pub fn shrink(&mut self) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.shrink_to_fit();
    }

    async fn fill(&mut self, want: usize) -> Result<()> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(want.max(4096));
        let n = bounded(self.timeout, self.s.read_buf(&mut self.buf)).await?.context("read")?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        Ok(())
    }

    /// The next line including its CRLF.
    pub async fn line(&mut self) -> Result<Vec<u8>> {
        let mut scanned = self.pos;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i + 1;
                let line = self.buf[self.pos..end].to_vec();
                self.pos = end;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_LINE {
                bail!("server line longer than {MAX_LINE} bytes");
            }
            scanned = self.buf.len();
            let off = scanned - self.pos;
            self.fill(4096).await?;
            scanned = self.pos + off;
        }
    }

    /// Exactly `n` bytes.
    pub async fn exact(&mut self, n: usize) -> Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            let missing = n - (self.buf.len() - self.pos);
            self.fill(missing.min(1 << 20)).await?;
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        bounded(self.timeout, async {
            self.s.write_all(data).await?;
            self.s.flush().await
        })
        .await?
        .context("write")
    }
}
