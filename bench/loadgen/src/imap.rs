//! Minimal IMAP4rev1 client over implicit TLS, the same commands as mailbench's `Imap`:
//! LOGIN, SELECT, IDLE/DONE, FETCH (BODY.PEEK[]), LOGOUT. Untagged `* N EXISTS` is tracked
//! on every line read.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::net::{Conn, Target, Tls, bounded};

pub struct Imap {
    c: Conn<Tls>,
    tagn: u32,
    pub exists: u32,
    idle_tag: Option<String>,
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `{N}` at the end of a line (before CRLF): a literal of N bytes follows.
fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&l[open + 1..]).ok()?.parse().ok()
}

/// `* N EXISTS`.
fn exists_of(line: &[u8]) -> Option<u32> {
    let rest = line.strip_prefix(b"* ")?;
    let sp = rest.iter().position(|&b| b == b' ')?;
    let word = rest.get(sp + 1..sp + 7)?;
    if !word.eq_ignore_ascii_case(b"EXISTS") {
        return None;
    }
    std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()
}

fn show(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(line);
    let s = s.trim_end();
    if s.len() > 200 { format!("{}…", &s[..s.floor_char_boundary(200)]) } else { s.to_string() }
}

impl Imap {
    pub async fn open(t: &Target, login: &str) -> Result<Imap> {
        Imap::open_from(t, login, None).await
    }

    /// `open` from another loopback source address.
    pub async fn open_from(t: &Target, login: &str, src: Option<std::net::IpAddr>) -> Result<Imap> {
        Imap::open_as(t, login, &t.password, src).await
    }

    /// `open_from` with a password of its own (relay-issued credentials, one per account).
    pub async fn open_as(t: &Target, login: &str, password: &str, src: Option<std::net::IpAddr>) -> Result<Imap> {
        let tcp = t.tcp_from(t.imap, src).await?;
        let tls = t.tls(tcp).await?;
        let mut c = Imap { c: Conn::new(tls, t.timeout), tagn: 0, exists: 0, idle_tag: None };
        let greeting = c.line().await?;
        if !greeting.starts_with(b"* OK") && !greeting.starts_with(b"* PREAUTH") {
            bail!("IMAP greeting: {}", show(&greeting));
        }
        c.command(&format!("LOGIN {} {}", quote(login), quote(password)))
            .await
            .map_err(|e| e.context(format!("IMAP LOGIN as {login}")))?;
        Ok(c)
    }

    /// One response line, with any literals appended.
    async fn line(&mut self) -> Result<Vec<u8>> {
        let mut line = self.c.line().await?;
        let mut n = literal_len(&line);
        while let Some(len) = n {
            line.extend_from_slice(&self.c.exact(len).await?);
            let rest = self.c.line().await?;
            n = literal_len(&rest);
            line.extend_from_slice(&rest);
        }
        if let Some(e) = exists_of(&line) {
            self.exists = e;
        }
        Ok(line)
    }

    fn next_tag(&mut self) -> String {
        self.tagn += 1;
        format!("A{}", self.tagn)
    }

    /// Sends `cmd`, returns the untagged lines; anything but a tagged OK is an error.
    pub async fn command(&mut self, cmd: &str) -> Result<Vec<Vec<u8>>> {
        let tag = self.next_tag();
        self.c.send(format!("{tag} {cmd}\r\n").as_bytes()).await?;
        self.until_tag(&tag).await
    }

    async fn until_tag(&mut self, tag: &str) -> Result<Vec<Vec<u8>>> {
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            let line = self.line().await?;
            if let Some(status) = line.strip_prefix(prefix.as_bytes()) {
                if status.len() < 2 || !status[..2].eq_ignore_ascii_case(b"OK") {
                    bail!("IMAP server answered {}", show(&line));
                }
                return Ok(lines);
            }
            lines.push(line);
        }
    }

    pub async fn select(&mut self) -> Result<u32> {
        self.command("SELECT INBOX").await?;
        Ok(self.exists)
    }

    /// Enters IDLE; returns on the server's continuation.
    pub async fn idle(&mut self) -> Result<()> {
        let tag = self.next_tag();
        self.c.send(format!("{tag} IDLE\r\n").as_bytes()).await?;
        loop {
            let line = self.line().await?;
            if line.starts_with(b"+") {
                self.idle_tag = Some(tag);
                return Ok(());
            }
            if line.starts_with(format!("{tag} ").as_bytes()) {
                bail!("IDLE refused: {}", show(&line));
            }
        }
    }

    /// In IDLE: the instant the EXISTS count reached `target` (each read bounded).
    pub async fn wait_exists(&mut self, target: u32) -> Result<Instant> {
        while self.exists < target {
            self.line().await?;
        }
        Ok(Instant::now())
    }

    pub async fn done(&mut self) -> Result<()> {
        let Some(tag) = self.idle_tag.take() else { return Ok(()) };
        self.c.send(b"DONE\r\n").await?;
        self.until_tag(&tag).await?;
        Ok(())
    }

    /// `FETCH seq (BODY.PEEK[])`, all response bytes.
    pub async fn fetch(&mut self, seq: u32) -> Result<Vec<u8>> {
        Ok(self.command(&format!("FETCH {seq} (BODY.PEEK[])")).await?.concat())
    }

    /// Drops the read buffer (for connections that only sit in IDLE).
    pub fn shrink(&mut self) {
        self.c.shrink();
    }

    /// DONE + LOGOUT, best effort, bounded.
    pub async fn close(mut self) {
        let _ = bounded(Duration::from_secs(5), async {
            self.done().await?;
            self.command("LOGOUT").await
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {42}\r\n"), Some(42));
        assert_eq!(literal_len(b"* 1 FETCH (FLAGS ())\r\n"), None);
        assert_eq!(exists_of(b"* 17 EXISTS\r\n"), Some(17));
        assert_eq!(exists_of(b"* 17 exists\r\n"), Some(17));
        assert_eq!(exists_of(b"* 17 RECENT\r\n"), None);
        assert_eq!(exists_of(b"* OK still here\r\n"), None);
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
