//! `chatrelay healthcheck`: GET `/healthz` from the running relay and exit 0 on 200, else 1 (the
//! container image's HEALTHCHECK, which has no curl). Asks the first metrics listener (plain HTTP)
//! if there is one, else the first HTTPS listener; a wildcard address is asked on loopback. The
//! certificate is not checked: this is the relay's own answer on this host, not a peer's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Failure;
use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(5);
/// Enough for the status line and headers of the small `/healthz` answer.
const MAX_ANSWER: u64 = 4096;

fn local(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

pub fn run(cfg: &Config) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Failure::runtime)?;
    let status = rt
        .block_on(async { tokio::time::timeout(TIMEOUT, ask(cfg)).await })
        .map_err(|_| Failure::Runtime("healthcheck: no answer within 5 s".into()))??;
    if status.contains(" 200 ") {
        println!("ok");
        Ok(())
    } else {
        Err(Failure::Runtime(format!("healthcheck: {status}")))
    }
}

/// The status line of the answer.
async fn ask(cfg: &Config) -> Result<String, Failure> {
    let host = cfg.mail_domain.trim_start_matches('[').trim_end_matches(']').to_string();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if let Some(addr) = cfg.listen.metrics.first() {
        let tcp = connect(local(*addr)).await?;
        return exchange(tcp, &request).await;
    }
    let Some(addr) = cfg.listen.https.first() else {
        return Err(Failure::Usage("healthcheck: neither a metrics nor an HTTPS listener is configured".into()));
    };
    let tcp = connect(local(*addr)).await?;
    let tls = crate::outbound::tls::ClientTls::new("").map_err(Failure::Runtime)?;
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| Failure::Usage(format!("healthcheck: {host:?} is not a server name")))?;
    let stream = tokio_rustls::TlsConnector::from(tls.any_https)
        .connect(name, tcp)
        .await
        .map_err(|e| Failure::Runtime(format!("healthcheck: TLS: {e}")))?;
    exchange(stream, &request).await
}

async fn connect(addr: SocketAddr) -> Result<tokio::net::TcpStream, Failure> {
    tokio::net::TcpStream::connect(addr).await.map_err(|e| Failure::Runtime(format!("healthcheck: {addr}: {e}")))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &str) -> Result<String, Failure> {
    s.write_all(request.as_bytes()).await.map_err(|e| Failure::Runtime(format!("healthcheck: {e}")))?;
    let mut answer = Vec::new();
    // Bounded: a wrong service on that port cannot make this read without end.
    let _ = (&mut s).take(MAX_ANSWER).read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    match text.lines().next() {
        Some(line) if line.starts_with("HTTP/") => Ok(line.to_string()),
        _ => Err(Failure::Runtime("healthcheck: no HTTP answer".into())),
    }
}
