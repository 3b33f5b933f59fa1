//! Relay-to-relay delivery over HTTPS (DLV-19, DLV-20): `POST /mxdeliv` with `X-Mail-From` and
//! one `X-Mail-To` per recipient, the signed message as body, 60 s for the whole exchange.
//! A minimal HTTP/1.1 client (one request, `Connection: close`): all we need is the status and
//! the first line of the body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::reply::{DELIVERED_HTTPS, RcptResult};

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_RESPONSE: u64 = 64 * 1024;

/// What the peer said.
#[derive(Debug)]
pub enum HttpsOutcome {
    /// 200, or 400/413 with an SMTP reply: final for all recipients, no SMTP fallback.
    Final(RcptResult),
    /// "No HTTPS here" (DLV-20): any other status, connection or TLS error, or timeout.
    NoHttps(String),
}

pub struct HttpsJob<'a> {
    pub addr: SocketAddr,
    pub host: &'a str,
    pub port: u16,
    pub tls: Arc<rustls::ClientConfig>,
    pub sender: &'a str,
    pub rcpts: &'a [String],
    pub message: &'a [u8],
    /// Bind the connection to this address (IP-only relays, `connect`).
    pub source: Option<std::net::IpAddr>,
}

pub async fn deliver(job: HttpsJob<'_>) -> HttpsOutcome {
    match tokio::time::timeout(TIMEOUT, exchange(&job)).await {
        Err(_) => HttpsOutcome::NoHttps("timeout".into()),
        Ok(Err(e)) => HttpsOutcome::NoHttps(e.to_string()),
        Ok(Ok((status, body))) => classify(status, &body),
    }
}

/// DLV-20.
fn classify(status: u16, body: &str) -> HttpsOutcome {
    let line = body.lines().next().unwrap_or("").trim();
    // A refusal must carry a 4xx or 5xx code: a 400 whose body says `250 OK` is not a delivery.
    let has_code = line.len() >= 3
        && matches!(line.as_bytes()[0], b'4' | b'5')
        && line.as_bytes()[1..3].iter().all(u8::is_ascii_digit);
    match status {
        200 => HttpsOutcome::Final(RcptResult::Delivered(DELIVERED_HTTPS.to_string())),
        400 | 413 if has_code => HttpsOutcome::Final(RcptResult::from_reply(line)),
        other => HttpsOutcome::NoHttps(format!("HTTP status {other}")),
    }
}

async fn exchange(job: &HttpsJob<'_>) -> std::io::Result<(u16, String)> {
    let host = job.host.trim_end_matches('.');
    let mut head = format!(
        "POST /mxdeliv HTTP/1.1\r\nHost: {host}:{}\r\nConnection: close\r\nContent-Type: message/rfc822\r\nContent-Length: {}\r\nX-Mail-From: {}\r\n",
        job.port,
        job.message.len(),
        job.sender
    );
    for r in job.rcpts {
        head.push_str(&format!("X-Mail-To: {r}\r\n"));
    }
    head.push_str("\r\n");
    request_from(job.addr, job.source, host, job.tls.clone(), head.as_bytes(), job.message, MAX_RESPONSE).await
}

/// One HTTP/1.1 request over TLS with `Connection: close`; the response is read up to `limit`
/// bytes (more is an error). Used for `/mxdeliv` and MTA-STS policy fetches.
pub async fn request(
    addr: SocketAddr,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
    head: &[u8],
    body: &[u8],
    limit: u64,
) -> std::io::Result<(u16, String)> {
    request_from(addr, None, host, tls, head, body, limit).await
}

/// `request`, connecting from `source` when given (`connect::tcp`).
pub async fn request_from(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
    head: &[u8],
    body: &[u8],
    limit: u64,
) -> std::io::Result<(u16, String)> {
    let tcp = super::connect::tcp(addr, source).await?;
    let name = super::tls::server_name(host, addr.ip());
    let mut tls = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    tls.write_all(head).await?;
    tls.write_all(body).await?;
    tls.flush().await?;
    let mut resp = Vec::new();
    // A peer that closes without close_notify still gave us its full response.
    match (&mut tls).take(limit + 1).read_to_end(&mut resp).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !resp.is_empty() => {}
        Err(e) => return Err(e),
    }
    if resp.len() as u64 > limit {
        return Err(std::io::Error::other("response too large"));
    }
    parse_response(&resp).ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

/// Status code and (de-chunked) body of an HTTP/1.x response.
fn parse_response(resp: &[u8]) -> Option<(u16, String)> {
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&resp[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let raw = &resp[end + 4..];
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_hex = String::from_utf8_lossy(&raw[..i]);
        let Ok(size) = usize::from_str_radix(size_hex.split(';').next().unwrap_or("").trim(), 16) else { break };
        raw = &raw[i + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlv20_mapping() {
        assert!(matches!(classify(200, "250 OK"), HttpsOutcome::Final(RcptResult::Delivered(_))));
        assert!(matches!(classify(400, "550 5.1.1 no"), HttpsOutcome::Final(RcptResult::Permanent(_))));
        assert!(matches!(
            classify(413, "552 Message exceeds maximum size"),
            HttpsOutcome::Final(RcptResult::Permanent(_))
        ));
        assert!(matches!(classify(400, "451 4.3.0 Local error"), HttpsOutcome::Final(RcptResult::Temporary(_))));
        assert!(matches!(classify(400, "bad"), HttpsOutcome::NoHttps(_)));
        assert!(matches!(classify(400, "250 OK"), HttpsOutcome::NoHttps(_)), "issue 31: a 400 is never a delivery");
        assert!(matches!(classify(413, "250 OK"), HttpsOutcome::NoHttps(_)));
        assert!(matches!(classify(404, "550 x"), HttpsOutcome::NoHttps(_)));
        assert!(matches!(classify(503, ""), HttpsOutcome::NoHttps(_)));
    }

    #[test]
    fn parses_chunked_and_plain() {
        let r = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n550 5.1.1 ";
        assert_eq!(parse_response(r), Some((400, "550 5.1.1 ".into())));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n250\r\n3\r\n OK\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Some((200, "250 OK".into())));
    }
}
