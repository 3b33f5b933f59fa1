//! SMTP submission client: STARTTLS (or implicit TLS), EHLO, AUTH PLAIN, and one message per
//! `send` with MAIL/RCPT/DATA in one write when the server advertises PIPELINING (RFC 2920),
//! as a real client does; smtplib (mailbench) waits for each reply instead.

use anyhow::{Context, Result, bail};

use crate::net::{Conn, Target, Tls};

pub struct Smtp {
    c: Conn<Tls>,
    pub pipelining: bool,
    size: bool,
}

struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" / ")
    }
}

async fn reply<S>(c: &mut Conn<S>) -> Result<Reply>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut lines = Vec::new();
    loop {
        let raw = c.line().await?;
        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
        let code = line.get(..3).and_then(|d| d.parse::<u16>().ok());
        let Some(code) = code else { bail!("malformed SMTP reply {line:?}") };
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok(Reply { code, lines });
        }
    }
}

fn expect(r: &Reply, want: u16, what: &str) -> Result<()> {
    if r.code != want {
        bail!("SMTP {what}: expected {want}, got {}", r.text());
    }
    Ok(())
}

const EHLO: &[u8] = b"EHLO loadgen.localhost\r\n";

impl Smtp {
    /// Connected, TLS-protected and authenticated, like mailbench's `smtp_open`.
    pub async fn open(t: &Target, login: &str) -> Result<Smtp> {
        let tcp = t.tcp(t.smtp).await?;
        let tls = if t.smtp_implicit_tls {
            t.tls(tcp).await?
        } else {
            let mut c = Conn::new(tcp, t.timeout);
            expect(&reply(&mut c).await?, 220, "greeting")?;
            c.send(EHLO).await?;
            let r = reply(&mut c).await?;
            expect(&r, 250, "EHLO")?;
            if !r.lines.iter().any(|l| l.get(4..).is_some_and(|k| k.eq_ignore_ascii_case("STARTTLS"))) {
                bail!("server does not offer STARTTLS: {}", r.text());
            }
            c.send(b"STARTTLS\r\n").await?;
            expect(&reply(&mut c).await?, 220, "STARTTLS")?;
            t.tls(c.into_inner()?).await?
        };
        let mut c = Conn::new(tls, t.timeout);
        if t.smtp_implicit_tls {
            expect(&reply(&mut c).await?, 220, "greeting")?;
        }
        c.send(EHLO).await?;
        let r = reply(&mut c).await?;
        expect(&r, 250, "EHLO after TLS")?;
        let has = |kw: &str| {
            r.lines.iter().skip(1).any(|l| {
                l.get(4..).and_then(|k| k.split_whitespace().next()).is_some_and(|k| k.eq_ignore_ascii_case(kw))
            })
        };
        let (pipelining, size) = (has("PIPELINING"), has("SIZE"));
        let auth = format!("AUTH PLAIN {}\r\n", crate::message::b64(format!("\0{login}\0{}", t.password).as_bytes()));
        c.send(auth.as_bytes()).await?;
        expect(&reply(&mut c).await?, 235, &format!("AUTH PLAIN as {login}"))?;
        Ok(Smtp { c, pipelining, size })
    }

    /// Submits one message (`msg` is the RFC 5322 text with CRLF line ends); returns once the
    /// server's reply to the final dot is 250.
    pub async fn send(&mut self, from: &str, to: &str, msg: &[u8]) -> Result<()> {
        let size = if self.size { format!(" SIZE={}", msg.len()) } else { String::new() };
        let mail = format!("MAIL FROM:<{from}>{size}\r\n");
        let rcpt = format!("RCPT TO:<{to}>\r\n");
        if self.pipelining {
            self.c.send(format!("{mail}{rcpt}DATA\r\n").as_bytes()).await?;
            let (m, r, d) = (reply(&mut self.c).await?, reply(&mut self.c).await?, reply(&mut self.c).await?);
            expect(&m, 250, "MAIL FROM")?;
            expect(&r, 250, "RCPT TO")?;
            expect(&d, 354, "DATA")?;
        } else {
            for (cmd, want, what) in [(&mail, 250, "MAIL FROM"), (&rcpt, 250, "RCPT TO")] {
                self.c.send(cmd.as_bytes()).await?;
                expect(&reply(&mut self.c).await?, want, what)?;
            }
            self.c.send(b"DATA\r\n").await?;
            expect(&reply(&mut self.c).await?, 354, "DATA")?;
        }
        self.c.send(&dot_stuff(msg)).await?;
        expect(&reply(&mut self.c).await?, 250, "end of DATA").context("message not accepted")
    }

    /// QUIT, best effort (the run's figures are already taken).
    pub async fn quit(mut self) {
        if self.c.send(b"QUIT\r\n").await.is_ok() {
            let _ = reply(&mut self.c).await;
        }
    }
}

/// DATA payload: lines starting with '.' doubled, ending in CRLF "." CRLF.
fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    let mut at_line_start = true;
    for &b in msg {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::b64;

    #[test]
    fn base64_and_stuffing() {
        assert_eq!(b64(b"\0u\0p"), "AHUAcA==");
        assert_eq!(b64(b"abc"), "YWJj");
        assert_eq!(b64(b"ab"), "YWI=");
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b"a"), b"a\r\n.\r\n");
    }
}
