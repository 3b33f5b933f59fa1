//! A small SMTP client for one delivery to one host (DLV-22, DLV-23): EHLO `mail_domain`,
//! STARTTLS required, EHLO again, MAIL FROM, one RCPT per recipient with its reply kept, DATA.
//! Our own client on tokio-rustls: it needs per-RCPT replies and a chosen rustls config.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::timeout;

use super::reply::RcptResult;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const DATA_TIMEOUT: Duration = Duration::from_secs(600);
const MAX_REPLY_LINES: usize = 100;

/// Why the host failed before any recipient got an answer; the next host is tried.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("connection failed: {0}")]
    Connect(std::io::Error),
    #[error("timeout")]
    Timeout,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("STARTTLS not offered")]
    NoStartTls,
    #[error("unexpected reply: {0}")]
    Protocol(String),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
}

struct Conn<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Read one (possibly multi-line) reply; returns (code, all lines joined by '\n').
    async fn reply(&mut self, limit: Duration) -> Result<(u16, Vec<String>), HostError> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = timeout(limit, (&mut self.io).take(4096).read_line(&mut line))
                .await
                .map_err(|_| HostError::Timeout)??;
            if n == 0 {
                return Err(HostError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let line = line.trim_end().to_string();
            let code =
                line.get(..3).and_then(|c| c.parse::<u16>().ok()).ok_or_else(|| HostError::Protocol(line.clone()))?;
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Ok((code, lines));
            }
            if lines.len() > MAX_REPLY_LINES {
                return Err(HostError::Protocol("reply too long".into()));
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> Result<(u16, Vec<String>), HostError> {
        let s = self.io.get_mut();
        timeout(COMMAND_TIMEOUT, async {
            s.write_all(line.as_bytes()).await?;
            s.write_all(b"\r\n").await?;
            s.flush().await
        })
        .await
        .map_err(|_| HostError::Timeout)??;
        self.reply(COMMAND_TIMEOUT).await
    }
}

/// The last line of a reply, as kept in the queue and put in bounces.
fn text(lines: &[String]) -> String {
    lines.last().cloned().unwrap_or_default()
}

pub struct SmtpJob<'a> {
    pub addr: SocketAddr,
    pub host: &'a str,
    pub ehlo: &'a str,
    pub tls: Arc<rustls::ClientConfig>,
    pub sender: &'a str,
    pub rcpts: &'a [String],
    pub message: &'a [u8],
    /// Bind outbound connections to this address (IP-only relays, `connect`).
    pub source: Option<std::net::IpAddr>,
}

/// Deliver to one address of one host. `Err` means the host failed before giving replies.
pub async fn deliver(job: SmtpJob<'_>) -> Result<Vec<(String, RcptResult)>, HostError> {
    let tcp = timeout(CONNECT_TIMEOUT, super::connect::tcp(job.addr, job.source))
        .await
        .map_err(|_| HostError::Timeout)?
        .map_err(HostError::Connect)?;
    let mut c = Conn { io: BufReader::new(tcp) };
    let (code, lines) = c.reply(COMMAND_TIMEOUT).await?;
    if code != 220 {
        return Err(HostError::Protocol(text(&lines)));
    }
    let (code, lines) = c.cmd(&format!("EHLO {}", job.ehlo)).await?;
    if code != 250 {
        return Err(HostError::Protocol(text(&lines)));
    }
    if !lines.iter().any(|l| l.get(4..).is_some_and(|k| k.trim().eq_ignore_ascii_case("STARTTLS"))) {
        return Err(HostError::NoStartTls);
    }
    let (code, lines) = c.cmd("STARTTLS").await?;
    if code != 220 {
        return Err(HostError::Protocol(text(&lines)));
    }
    let tcp = c.io.into_inner();
    let name = super::tls::server_name(job.host, job.addr.ip());
    let tls = timeout(COMMAND_TIMEOUT, tokio_rustls::TlsConnector::from(job.tls.clone()).connect(name, tcp))
        .await
        .map_err(|_| HostError::Timeout)?
        .map_err(HostError::Tls)?;
    let mut c = Conn { io: BufReader::new(tls) };
    let (code, lines) = c.cmd(&format!("EHLO {}", job.ehlo)).await?;
    if code != 250 {
        return Err(HostError::Protocol(text(&lines)));
    }
    transaction(&mut c, &job).await
}

async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conn<S>,
    job: &SmtpJob<'_>,
) -> Result<Vec<(String, RcptResult)>, HostError> {
    let all = |r: RcptResult| job.rcpts.iter().map(|x| (x.clone(), r.clone())).collect::<Vec<_>>();
    let (code, lines) = c.cmd(&format!("MAIL FROM:<{}>", job.sender)).await?;
    if code / 100 != 2 {
        let _ = c.cmd("QUIT").await;
        return Ok(all(RcptResult::from_reply(&text(&lines))));
    }
    let mut out = Vec::with_capacity(job.rcpts.len());
    let mut accepted = Vec::new();
    for r in job.rcpts {
        let (code, lines) = c.cmd(&format!("RCPT TO:<{r}>")).await?;
        if code / 100 == 2 {
            accepted.push(r.clone());
        } else {
            out.push((r.clone(), RcptResult::from_reply(&text(&lines))));
        }
    }
    if accepted.is_empty() {
        let _ = c.cmd("QUIT").await;
        return Ok(out);
    }
    let (code, lines) = c.cmd("DATA").await?;
    let final_reply = if code == 354 {
        send_data(c, job.message).await?;
        let (_, lines) = c.reply(DATA_TIMEOUT).await?;
        text(&lines)
    } else {
        text(&lines)
    };
    let result = match RcptResult::from_reply(&final_reply) {
        RcptResult::Delivered(_) => RcptResult::Delivered(super::reply::DELIVERED_SMTP.to_string()),
        other => other,
    };
    out.extend(accepted.into_iter().map(|r| (r, result.clone())));
    let _ = c.cmd("QUIT").await;
    Ok(out)
}

/// The DATA stream for `message` (FLT-31): only CRLF-terminated lines, whatever the stored
/// bytes hold. LF, CRLF and a lone CR each end a line, so no bare CR or LF reaches the next
/// server (SMTP smuggling); every line starting with `.` is dot-stuffed; then the final dot.
pub fn data_stream(message: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(message.len() + message.len() / 32 + 8);
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr2(b'\r', b'\n', rest) {
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => (&rest[..i], i + 2),
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        if line.first() == Some(&b'.') {
            buf.push(b'.');
        }
        buf.extend_from_slice(line);
        buf.extend_from_slice(b"\r\n");
        rest = &rest[next..];
    }
    buf.extend_from_slice(b".\r\n");
    buf
}

/// Write the message as `data_stream` gives it.
async fn send_data<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Conn<S>, message: &[u8]) -> Result<(), HostError> {
    let buf = data_stream(message);
    let s = c.io.get_mut();
    timeout(DATA_TIMEOUT, async {
        s.write_all(&buf).await?;
        s.flush().await
    })
    .await
    .map_err(|_| HostError::Timeout)??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::data_stream;

    #[test]
    fn data_is_crlf_lines_dot_stuffed() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
            (b"a\nb", b"a\r\nb\r\n.\r\n"),
            (b".x\r\n..y\r\n.\r\n", b"..x\r\n...y\r\n..\r\n.\r\n"),
            // Smuggling shapes: a lone CR ends the line, so `\r.\r` can never end the data early.
            (b"a\r.\rMAIL FROM:<x>\r\n", b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"", b".\r\n"),
        ];
        for (input, want) in cases {
            let got = data_stream(input);
            assert_eq!(got, want.to_vec(), "{:?}", String::from_utf8_lossy(input));
            // Every CR is followed by LF and every LF preceded by CR.
            for (i, &b) in got.iter().enumerate() {
                if b == b'\r' {
                    assert_eq!(got.get(i + 1), Some(&b'\n'));
                }
                if b == b'\n' {
                    assert!(i > 0 && got[i - 1] == b'\r');
                }
            }
        }
    }
}
