//! Two real relays, `_a.test` on 127.0.0.2 and `_b.test` on 127.0.0.3 (same port numbers), and an
//! in-test DNS server with their MX, A and DKIM records. Mail submitted at A reaches B over
//! `/mxdeliv` (or SMTP when B's HTTPS is unreachable), bounces come back, broken DKIM is refused.
//!

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dns_server::TestDns;
use crate::harness::{Ports, Relay, free_port, random_local, tls_wrap};
use relay::store::{CreateOutcome, Store};

fn encrypted(from: &str, to: &str) -> String {
    crate::harness::encrypted_eml(from, to)
}

struct Pair {
    dns: TestDns,
    a: Relay,
    b: Relay,
}

fn extra(dns: &TestDns, ports: &Ports, https_port: u16) -> String {
    format!(
        "[push]\nnotify_url = \"\"\n[delivery]\nresolver = \"{}\"\nsmtp_port = {}\nhttps_port = {https_port}\n",
        dns.resolver(),
        ports.smtp
    )
}

/// Start both relays; `a_https_port` is where A looks for B's `/mxdeliv`.
async fn pair(a_https_port: Option<u16>) -> Pair {
    let dns = TestDns::start().await;
    let ports = Ports::new();
    for (d, host, ip) in [("_a.test", "mx.a.test", "127.0.0.2"), ("_b.test", "mx.b.test", "127.0.0.3")] {
        dns.mx(d, 10, host);
        dns.a(host, ip.parse().unwrap());
    }
    let a = Relay::start_with_ports(
        "_a.test",
        "127.0.0.2",
        ports,
        &extra(&dns, &ports, a_https_port.unwrap_or(ports.https)),
    );
    let b = Relay::start_with_ports("_b.test", "127.0.0.3", ports, &extra(&dns, &ports, ports.https));
    for r in [&a, &b] {
        let s = relay::dkim::Signer::load(&r.data_dir().join("dkim.pem"), &r.domain, "dkim").unwrap();
        dns.dkim("dkim", &r.domain, &s.public_key_b64());
    }
    Pair { dns, a, b }
}

/// Submit over 465 with create-on-first-login; returns the reply to the end of DATA.
async fn submit(r: &Relay, user: &str, rcpt: &str, body: &str) -> String {
    crate::harness::submit(r, user, "password123", user, &[rcpt], body).await
}

/// Messages in `addr`'s INBOX, read from the relay's store.
async fn inbox(r: &Relay, addr: &str) -> Vec<String> {
    crate::harness::inbox_messages(r, addr).await.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
}

async fn create(r: &Relay, addr: &str) {
    let store = Store::open(&r.data_dir()).unwrap();
    assert!(matches!(
        store.create_account(addr, "x".into(), addr.as_bytes().to_vec()).await.unwrap(),
        CreateOutcome::Created(_)
    ));
}

async fn wait_inbox(r: &Relay, addr: &str, n: usize, secs: u64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = inbox(r, addr).await;
        if m.len() >= n {
            return m;
        }
        assert!(Instant::now() < deadline, "{addr}: {} of {n} messages\nA/B logs follow on panic", m.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A's delivery result is logged just after B answered; wait for it (bounded).
async fn wait_log(r: &Relay, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !r.log().contains(needle) {
        assert!(Instant::now() < deadline, "log never showed {needle:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_message_reaches_other_relay_over_mxdeliv() {
    let p = pair(None).await;
    let (ua, ub) = (format!("{}@_a.test", random_local()), format!("{}@_b.test", random_local()));
    create(&p.b, &ub).await;
    let started = Instant::now();
    let rep = submit(&p.a, &ua, &ub, &encrypted(&ua, &ub)).await;
    assert!(rep.starts_with("250"), "{rep}");
    let got = wait_inbox(&p.b, &ub, 1, 30).await;
    println!("A→B over /mxdeliv in {:?}", started.elapsed());
    assert!(got[0].contains("-----BEGIN PGP MESSAGE-----"));
    assert!(!got[0].contains("DKIM-Signature"), "stripped on storing (SMTP-46)");
    wait_log(&p.a, "250 OK (HTTPS)").await;
    // B enforces strict DKIM (see the broken-signature test), so acceptance means it verified.
    drop(p.dns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_smtp_when_https_is_unreachable() {
    let p = pair(Some(free_port())).await;
    let (ua, ub) = (format!("{}@_a.test", random_local()), format!("{}@_b.test", random_local()));
    create(&p.b, &ub).await;
    let rep = submit(&p.a, &ua, &ub, &encrypted(&ua, &ub)).await;
    assert!(rep.starts_with("250"), "{rep}");
    let got = wait_inbox(&p.b, &ub, 1, 30).await;
    assert!(got[0].contains("-----BEGIN PGP MESSAGE-----"));
    wait_log(&p.a, "250 OK (SMTP)").await;
    assert!(!p.a.log().contains("250 OK (HTTPS)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_at_other_relay_bounces_to_sender_inbox() {
    let p = pair(None).await;
    let ua = format!("{}@_a.test", random_local());
    let nobody = format!("{}@_b.test", random_local());
    let rep = submit(&p.a, &ua, &nobody, &encrypted(&ua, &nobody)).await;
    assert!(rep.starts_with("250"), "{rep}");
    let got = wait_inbox(&p.a, &ua, 1, 30).await;
    let b = &got[0];
    assert!(b.contains("MAILER-DAEMON@_a.test") && b.contains("multipart/report"), "{b}");
    assert!(b.contains(&format!("550 5.1.1 <{nobody}>: Recipient address rejected: User unknown")), "{b}");
}

/// POST /mxdeliv by hand; returns (status, body).
pub(crate) async fn post_mxdeliv(r: &Relay, from: &str, to: &str, body: &[u8]) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(r.addr(r.ports.https)).await.unwrap();
    let mut s = tls_wrap(tcp, &[b"http/1.1"]).await;
    let head = format!(
        "POST /mxdeliv HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\nX-Mail-From: {from}\r\nX-Mail-To: {to}\r\n\r\n",
        r.domain,
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_dkim_signature_is_refused_554() {
    let p = pair(None).await;
    let (ua, ub) = (format!("{}@_a.test", random_local()), format!("{}@_b.test", random_local()));
    create(&p.b, &ub).await;
    let signer = relay::dkim::Signer::load(&p.a.data_dir().join("dkim.pem"), "_a.test", "dkim").unwrap();
    let signed = signer.sign(encrypted(&ua, &ub).replace("\r\n", "\n").replace('\n', "\r\n").as_bytes()).unwrap();
    let broken = String::from_utf8_lossy(&signed).replace("Subject: [...]", "Subject: [..]").into_bytes();
    assert_eq!(post_mxdeliv(&p.b, &ua, &ub, &broken).await, (400, "554 5.7.1 No valid DKIM signature found".into()));
    // Port 25 gives the same reply (DLV-44).
    assert_eq!(crate::harness::mx_send(&p.b, &ua, &ub, &broken).await, "554 5.7.1 No valid DKIM signature found");
    // And the intact one is accepted.
    assert_eq!(post_mxdeliv(&p.b, &ua, &ub, &signed).await, (200, "250 OK".into()));
    assert_eq!(inbox(&p.b, &ub).await.len(), 1);
}
