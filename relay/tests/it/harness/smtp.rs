//! SMTP helpers: messages, login, submission.

#![allow(dead_code)]

use super::*;

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

/// A signed message on port 25; returns the reply to the end of DATA.
pub async fn mx_send(relay: &Relay, from: &str, to: &str, signed: &[u8]) -> String {
    let mut c = Lines::plain(&relay.addr(relay.ports.smtp)).await;
    c.reply().await;
    c.cmd("EHLO mx.a.test").await;
    assert!(c.cmd("STARTTLS").await.starts_with("220"));
    let mut c = c.starttls().await;
    c.cmd("EHLO mx.a.test").await;
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).await.starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{to}>")).await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send_raw(smtp_data(&String::from_utf8_lossy(signed)).as_bytes()).await;
    c.reply().await
}
