//! Issue 31, items 2 and 8: the inbound memory budget of `/mxdeliv` and port 25 (envelope before
//! body, a global in-flight budget, `chatrelay_limit_hits_total`), inbound mail claiming our own
//! domain, a SIGHUP that shortens `expire_interval`, and an external write lock in the log.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::dns_server::TestDns;
use crate::harness::*;
use crate::imap_helpers::{assert_ok, login, wait_line};
use crate::robust_common::{mx_tls, rss_kib};

/// An HTTPS connection that sent a POST head and `sent` bytes of a body of `declared` bytes.
async fn stalled_post(
    relay: &Relay,
    headers: &[(&str, &str)],
    declared: usize,
    sent: usize,
) -> impl AsyncReadExt + AsyncWriteExt + Unpin {
    let a = relay.addr(relay.ports.https);
    let mut s = tls_wrap(TcpStream::connect(&a).await.unwrap(), &[b"http/1.1"]).await;
    let mut head = format!("POST /mxdeliv HTTP/1.1\r\nHost: {a}\r\nContent-Length: {declared}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut n = 0;
    while n < sent {
        let k = chunk.len().min(sent - n);
        if s.write_all(&chunk[..k]).await.is_err() {
            break;
        }
        n += k;
    }
    let _ = s.flush().await;
    s
}

/// What a stalled POST got within a wait.
#[derive(Debug)]
enum Got {
    /// A response (status line and body).
    Response(String),
    /// The relay closed the connection without a readable response (after refusing mid-body).
    Closed,
    /// Nothing yet: the relay is still waiting for the body.
    Pending,
}

async fn response_within(s: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> Got {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => return Got::Closed,
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if buf.is_empty() => return Got::Pending,
            Err(_) => break,
        }
    }
    Got::Response(String::from_utf8_lossy(&buf).into_owned())
}

/// Item 2: a POST without `X-Mail-To` is refused before its 25 MB body is read; stalled POSTs
/// and a DATA session on port 25 share one in-flight budget; past it senders get a transient
/// refusal and `chatrelay_limit_hits_total{limit="inflight_bytes"}` counts it; RSS stays bounded
/// and a greeting and an IDLE delivery still complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_memory_budget_is_shared_and_bounded() {
    let relay = Relay::start("max_message_size = \"8M\"\nmax_inflight_message_bytes = \"16M\"\n");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &alice).await;
    let mut idle = login(&relay, &bob).await;
    assert_ok(&idle.imap("s", "SELECT INBOX").await);
    idle.send("i IDLE").await;
    assert_eq!(idle.line().await.as_deref(), Some("+ idling"));
    let rss_before = rss_kib(relay.pid());

    // No envelope: refused at once, the body never read.
    let t = Instant::now();
    let no_rcpt = [("X-Mail-From", alice.as_str())];
    let mut s = stalled_post(&relay, &no_rcpt, 7_000_000, 64 * 1024).await;
    let Got::Response(r) = response_within(&mut s, Duration::from_secs(5)).await else {
        panic!("no answer while the body is outstanding")
    };
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    assert!(r.contains("501 5.5.4 Missing or invalid envelope headers"), "{r}");
    println!("envelope refused after {:?} with 64 KB of 7 MB sent", t.elapsed());

    // Stalled POSTs of 3 MB each of a declared 7 MB: the 16 MB budget takes five.
    let env = [("X-Mail-From", alice.as_str()), ("X-Mail-To", bob.as_str())];
    let mut stalled = Vec::new();
    let mut refused = 0;
    for _ in 0..8 {
        let mut s = stalled_post(&relay, &env, 7_000_000, 3 * 1024 * 1024).await;
        match response_within(&mut s, Duration::from_millis(700)).await {
            Got::Response(r) => {
                assert!(r.contains("452 4.3.1 Insufficient system resources"), "{r}");
                refused += 1;
            }
            Got::Closed => refused += 1,
            Got::Pending => stalled.push(s),
        }
    }
    // Port 25 shares the budget: a whole 3 MB message is refused with a transient reply.
    let mut c = mx_tls(&relay).await;
    assert!(c.cmd(&format!("MAIL FROM:<{alice}>")).await.starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{bob}>")).await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let mut big = format!("From: <{alice}>\r\nTo: <{bob}>\r\n\r\n");
    big.push_str(&("y".repeat(76) + "\r\n").repeat(40_000));
    c.send_raw(smtp_data(&big).as_bytes()).await;
    let data_reply = c.reply().await;
    let rss_during = rss_kib(relay.pid());

    // Meanwhile a greeting and a delivery to the idling session.
    let t = Instant::now();
    let mut g = Lines::plain(&relay.addr(relay.ports.smtp)).await;
    assert!(g.reply().await.starts_with("220 "));
    let greeting = t.elapsed();
    let rep = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert!(rep.starts_with("250"), "{rep}");
    let (_, exists_after) = wait_line(&mut idle, |l| l.ends_with(" EXISTS")).await;
    let metrics = http_req(&relay.addr(relay.ports.metrics), "GET", "/metrics", "x").await.text();
    let hits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chatrelay_limit_hits_total{limit=\"inflight_bytes\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    println!(
        "{} POSTs stalled, {refused} refused; port 25: {data_reply}; RSS {rss_before} → {rss_during} KiB; \
         greeting {greeting:?}, IDLE EXISTS {exists_after:?}; limit hits {hits}",
        stalled.len()
    );
    assert!((4..=6).contains(&stalled.len()), "the budget holds about five: {}", stalled.len());
    assert!(data_reply.starts_with("452 4.3.1"), "{data_reply}");
    assert!(hits >= 3.0, "limit hits {hits}");
    assert!(rss_during < rss_before + 48 * 1024, "RSS {rss_before} → {rss_during} KiB");
    assert!(greeting < Duration::from_secs(1));
    drop(stalled);
}

/// Item 8: a message signed by our own domain, replayed to `/mxdeliv` or port 25, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_domain_from_is_refused_inbound() {
    let dns = TestDns::start().await;
    let relay = Relay::start(&format!("[delivery]\nresolver = \"{}\"\n", dns.resolver()));
    let signer = relay::dkim::Signer::load(&relay.data_dir().join("dkim.pem"), "chat.test", "dkim").unwrap();
    dns.dkim("dkim", "chat.test", &signer.public_key_b64());
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;
    let signed =
        signer.sign(encrypted_eml(&alice, &bob).replace("\r\n", "\n").replace('\n', "\r\n").as_bytes()).unwrap();
    let want = "554 5.7.1 Mail from this domain is only accepted by submission";
    let a = relay.addr(relay.ports.https);
    let r = https_req(&a, "POST", "/mxdeliv", &a, &[("X-Mail-From", &alice), ("X-Mail-To", &bob)], &signed).await;
    assert_eq!((r.status, r.text().trim()), (400, want));
    assert_eq!(mx_send(&relay, &alice, &bob, &signed).await, want);
    assert!(inbox_messages(&relay, &bob).await.is_empty());
}

/// Item 8: a SIGHUP that shortens `expire_interval` from an hour to a second runs the next
/// pass at once instead of after the old hour.
#[tokio::test]
async fn sighup_shortening_expire_interval_takes_effect() {
    let relay = Relay::start("expire_interval = \"1h\"\n");
    let cfg = std::fs::read_to_string(&relay.config_path).unwrap();
    std::fs::write(&relay.config_path, cfg.replace("expire_interval = \"1h\"", "expire_interval = \"2s\"")).unwrap();
    assert!(Command::new("kill").args(["-HUP", &relay.pid().to_string()]).status().unwrap().success());
    let t = Instant::now();
    while !relay.log().contains("expiry pass done") {
        assert!(t.elapsed() < Duration::from_secs(10), "no expiry pass after the SIGHUP:\n{}", relay.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("first pass {:?} after the SIGHUP", t.elapsed());
}

/// Item 8: while another process holds the database's write lock, a write fails and the log
/// says the database is busy, not that the store is shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_write_lock_is_logged_as_busy() {
    let relay = Relay::start("");
    let alice = relay.new_address();
    create_account(&relay, &alice).await;
    let db = relay.db();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    // A login creating an account writes; the store waits its 10 s busy timeout, then fails.
    let bob = relay.new_address();
    let (_c, reply) = smtp_login(&relay, &bob, PASSWORD).await;
    db.execute_batch("ROLLBACK").unwrap();
    let log = relay.log();
    println!("login under the lock: {reply}");
    assert!(!reply.starts_with("235"), "{reply}");
    assert!(log.contains("database busy") || log.contains("database is locked"), "{log}");
    assert!(!log.contains("the store is shut down"), "{log}");
}
