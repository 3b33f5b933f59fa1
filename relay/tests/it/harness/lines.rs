//! Line-oriented SMTP/IMAP clients over plain TCP or TLS.

#![allow(dead_code)]

use super::*;

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
