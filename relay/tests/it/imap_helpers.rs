//! Shared IMAP test helpers on top of `harness::Lines`.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use crate::harness::{Lines, PASSWORD, Relay};

/// Connect to 993 and log in (creating the account on first login).
pub async fn login(relay: &Relay, addr: &str) -> Lines {
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    let greeting = c.line().await.expect("greeting");
    assert!(greeting.starts_with("* OK [CAPABILITY "), "{greeting}");
    let r = c.imap("l1", &format!("LOGIN \"{addr}\" \"{PASSWORD}\"")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("l1 OK")), "{r:?}");
    c
}

pub fn last(r: &[String]) -> &str {
    r.last().map(String::as_str).unwrap_or("")
}

pub fn assert_ok(r: &[String]) {
    let l = last(r);
    assert!(l.split(' ').nth(1) == Some("OK"), "expected OK, got {r:?}");
}

/// APPEND `msg` to `mailbox` with a synchronising literal; returns the tagged line.
pub async fn append(c: &mut Lines, tag: &str, mailbox: &str, flags: &str, msg: &[u8]) -> Vec<String> {
    c.send(&format!("{tag} APPEND {mailbox} {flags} {{{}}}", msg.len())).await;
    let cont = c.line().await.expect("continuation");
    assert!(cont.starts_with('+'), "{cont}");
    c.send_raw(msg).await;
    c.send_raw(b"\r\n").await;
    c.until_tag(tag).await
}

/// Read lines until one satisfies `pred` (bounded by the harness read timeout per line).
pub async fn wait_line(c: &mut Lines, pred: impl Fn(&str) -> bool) -> (String, Duration) {
    let t = Instant::now();
    for _ in 0..100 {
        let l = c.line().await.expect("line");
        if pred(&l) {
            return (l, t.elapsed());
        }
    }
    panic!("expected line not seen");
}

/// Read one `{n}` literal's bytes after a line that ends with it.
pub async fn read_literal(c: &mut Lines, header: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let n: usize = header.rsplit_once('{').and_then(|(_, r)| r.trim_end_matches('}').parse().ok()).expect("literal");
    let mut buf = vec![0u8; n];
    tokio::time::timeout(crate::harness::T, c.io.read_exact(&mut buf)).await.expect("timeout").expect("read");
    buf
}

pub fn sample_message(from: &str, to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: test {}\r\nMessage-ID: <{}@chat.test>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        crate::harness::rand_u64(),
        crate::harness::rand_u64()
    )
    .into_bytes()
}
