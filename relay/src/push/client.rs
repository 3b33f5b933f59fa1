//! The HTTP client for the notification proxy: one `POST` per request over a fresh connection,
//! HTTP/1.1 via hyper, TLS via rustls with the ring provider, trusting the built-in Mozilla roots
//! plus `delivery.extra_root_certs` (PUSH-7, PUSH-8). `http://` URLs work for loopback tests.

use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The whole request, connect to status line, must finish within this (PUSH-7).
pub const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("notify_url is not an http(s) URL with a host")]
    BadUrl,
    #[error("extra_root_certs: {0}")]
    Roots(String),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("tls: {0}")]
    Tls(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("timed out")]
    Timeout,
}

#[derive(Clone)]
pub struct Client {
    tls: tokio_rustls::TlsConnector,
}

/// `extra` is a PEM bundle: a file path, or the PEM text itself.
fn root_store(extra: &str) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let extra = extra.trim();
    if extra.is_empty() {
        return Ok(roots);
    }
    let pem = if extra.starts_with("-----BEGIN") {
        extra.as_bytes().to_vec()
    } else {
        std::fs::read(extra).map_err(|e| ClientError::Roots(format!("{extra}: {e}")))?
    };
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| ClientError::Roots(e.to_string()))?;
        roots.add(cert).map_err(|e| ClientError::Roots(e.to_string()))?;
    }
    Ok(roots)
}

impl Client {
    pub fn new(extra_root_certs: &str) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Roots(e.to_string()))?
            .with_root_certificates(root_store(extra_root_certs)?)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)) })
    }

    /// POST `body` to `url`; returns the response status.
    pub async fn post(&self, url: &str, body: String) -> Result<u16, ClientError> {
        tokio::time::timeout(TIMEOUT, self.post_inner(url, body)).await.map_err(|_| ClientError::Timeout)?
    }

    async fn post_inner(&self, url: &str, body: String) -> Result<u16, ClientError> {
        let uri: Uri = url.trim().parse().map_err(|_| ClientError::BadUrl)?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(ClientError::BadUrl),
        };
        let host = uri.host().ok_or(ClientError::BadUrl)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri.authority().map(|a| a.as_str().to_string()).ok_or(ClientError::BadUrl)?;
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        let req = hyper::Request::post(path).header(hyper::header::HOST, authority).body(body)?;
        let tcp = TcpStream::connect((bare.as_str(), port)).await.map_err(ClientError::Connect)?;
        let _ = tcp.set_nodelay(true);
        if https {
            let name = ServerName::try_from(bare).map_err(|_| ClientError::BadUrl)?;
            let tls = self.tls.connect(name, tcp).await.map_err(ClientError::Tls)?;
            exchange(tls, req).await
        } else {
            exchange(tcp, req).await
        }
    }
}

async fn exchange<S>(io: S, req: hyper::Request<String>) -> Result<u16, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // The connection ends when `sender` is dropped below or the peer closes.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await?;
    Ok(resp.status().as_u16())
}
