//! Issue 29, IP-only relays: `mail_domain` an address literal (`[127.0.0.2]`), addresses
//! `user@[127.0.0.2]`. Submission, local delivery, delivery between two IP-only relays and a domain
//! relay in both directions (no DKIM signature where there is no domain; the receiver checks
//! that the connecting address is the sender's literal, SMTP-44), and the `dclogin:` link of `/new`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::dns_server::TestDns;
use crate::harness::*;

fn extra(dns: &TestDns, ports: &Ports, try_https: bool) -> String {
    format!(
        "[push]\nnotify_url = \"\"\n[delivery]\nresolver = \"{}\"\nsmtp_port = {}\nhttps_port = {}\ntry_https = {try_https}\n",
        dns.resolver(),
        ports.smtp,
        ports.https
    )
}

async fn wait_inbox(r: &Relay, addr: &str, n: usize, other: &Relay) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got: Vec<String> =
            inbox_messages(r, addr).await.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} has {} of {n} messages\nreceiver log:\n{}\nsender log:\n{}",
            got.len(),
            r.log(),
            other.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two IP-only relays and one domain relay exchange messages over SMTP (try_https off) and
/// over HTTPS `/mxdeliv`; local delivery on an IP-only relay; no DKIM-Signature is added by
/// an IP-only relay.
async fn exchange(try_https: bool) {
    let dns = TestDns::start().await;
    let ports = Ports::new();
    let a = Relay::start_with_ports("[127.0.0.2]", "127.0.0.2", ports, &extra(&dns, &ports, try_https));
    let b = Relay::start_with_ports("[127.0.0.3]", "127.0.0.3", ports, &extra(&dns, &ports, try_https));
    let c = Relay::start_with_ports("_c.test", "127.0.0.4", ports, &extra(&dns, &ports, try_https));
    dns.mx("_c.test", 10, "mx.c.test");
    dns.a("mx.c.test", "127.0.0.4".parse().unwrap());
    let s = relay::dkim::Signer::load(&c.data_dir().join("dkim.pem"), &c.domain, "dkim").unwrap();
    dns.dkim("dkim", &c.domain, &s.public_key_b64());

    let (ua, ua2, ub, uc) = (a.new_address(), a.new_address(), b.new_address(), c.new_address());
    assert!(ua.ends_with("@[127.0.0.2]"), "{ua}");
    for (r, u) in [(&a, &ua2), (&b, &ub), (&c, &uc)] {
        create_account(r, u).await;
    }

    // Submission and local delivery on an IP-only relay.
    let rep = submit(&a, &ua, PASSWORD, &ua, &[&ua2], &encrypted_eml(&ua, &ua2)).await;
    assert!(rep.starts_with("250"), "local: {rep}");
    wait_inbox(&a, &ua2, 1, &a).await;

    // IP-only to IP-only.
    let rep = submit(&a, &ua, PASSWORD, &ua, &[&ub], &encrypted_eml(&ua, &ub)).await;
    assert!(rep.starts_with("250"), "a to b: {rep}");
    let got = wait_inbox(&b, &ub, 1, &a).await;
    assert!(got[0].contains(&format!("From: <{ua}>")) || got[0].contains(&ua), "{}", got[0]);

    // IP-only to domain: the domain relay skips DKIM because the peer is the literal.
    let rep = submit(&b, &ub, PASSWORD, &ub, &[&uc], &encrypted_eml(&ub, &uc)).await;
    assert!(rep.starts_with("250"), "b to c: {rep}");
    wait_inbox(&c, &uc, 1, &b).await;

    // Domain to IP-only: DKIM-signed by the domain relay and verified through DNS at the IP-only one.
    let rep = submit(&c, &uc, PASSWORD, &uc, &[&ua], &encrypted_eml(&uc, &ua)).await;
    assert!(rep.starts_with("250"), "c to a: {rep}");
    wait_inbox(&a, &ua, 1, &c).await;

    // The mail of an IP-only relay carries no signature at all (there is no d= to sign for).
    // Stored copies lose their DKIM-Signature (SMTP-46), so the sender's log says it.
    assert!(a.log().contains("no DKIM signature: mail_domain is an address literal"), "{}", a.log());
    let transport = if try_https { "https" } else { "smtp" };
    let m = http_req(&a.addr(a.ports.metrics), "GET", "/metrics", "x").await.text();
    assert!(
        m.lines().any(|l| l.starts_with("chatrelay_delivery_attempts_total")
            && l.contains(&format!("transport=\"{transport}\""))
            && l.contains("result=\"ok\"")),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_only_relays_exchange_over_smtp() {
    exchange(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_only_relays_exchange_over_https() {
    exchange(true).await;
}

fn query_value(url: &str, key: &str) -> String {
    let q = url.split_once("/?").map(|(_, q)| q).unwrap_or("");
    let v = q.split('&').find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap_or("");
    percent_decode(v)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The `dclogin:` link `/new` gives on an IP-only relay: its address, password, hosts and ports
/// are what a client uses, so logging in over IMAPS and sending over SMTPS with exactly those
/// values works, and the message sent to itself is in INBOX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dclogin_link_of_an_ip_only_relay_works() {
    let a = Relay::start_with("[127.0.0.2]", "127.0.0.2", "");
    let r = https_req(&a.addr(a.ports.https), "POST", "/new", "127.0.0.2", &[], b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let url = body["dclogin_url"].as_str().unwrap().to_string();
    let email = url.strip_prefix("dclogin:").and_then(|u| u.split_once('/')).map(|(e, _)| e.to_string()).unwrap();
    assert!(email.ends_with("@[127.0.0.2]"), "{url}");
    assert_eq!(email, body["email"].as_str().unwrap());
    let (password, ih, ip, sh, sp) = (
        query_value(&url, "p"),
        query_value(&url, "ih"),
        query_value(&url, "ip"),
        query_value(&url, "sh"),
        query_value(&url, "sp"),
    );
    assert_eq!((ih.as_str(), sh.as_str()), ("127.0.0.2", "127.0.0.2"), "{url}");

    // SMTPS with the link's values: the account sends to itself.
    let mut c = Lines::tls(&format!("{sh}:{sp}")).await;
    assert!(c.reply().await.starts_with("220"));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    use base64::Engine as _;
    let token = base64::prelude::BASE64_STANDARD.encode(format!("\0{email}\0{password}"));
    let auth = c.cmd(&format!("AUTH PLAIN {token}")).await;
    assert!(auth.starts_with("235"), "{auth}");
    let rep = send_mail(&mut c, &email, &[&email], &encrypted_eml(&email, &email)).await;
    assert!(rep.starts_with("250"), "{rep}");

    // IMAPS with the link's values: the message is there.
    let mut i = Lines::tls(&format!("{ih}:{ip}")).await;
    assert!(i.line().await.unwrap().starts_with("* OK"));
    let login = i.imap("a1", &format!("LOGIN \"{email}\" \"{password}\"")).await;
    assert!(login.last().unwrap().starts_with("a1 OK"), "{login:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sel = i.imap("a2", "SELECT INBOX").await;
        if sel.iter().any(|l| l == "* 1 EXISTS") {
            break;
        }
        assert!(Instant::now() < deadline, "{sel:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let f = i.imap("a3", "FETCH 1 BODY.PEEK[HEADER.FIELDS (FROM)]").await;
    assert!(f.iter().any(|l| l.contains(&email)), "{f:?}");

    // `chatrelay dns` has nothing to publish for an IP-only relay.
    let (code, out, err) = a.cli(&["dns"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("IP-only relay: there are no DNS records to publish"), "{out}");
}

/// `chatrelay init "[192.0.2.7]"` writes a self-signed config (no ACME for an address) that
/// check-config accepts; an IP-only config asking for ACME, or a malformed literal, is refused.
#[test]
fn init_and_check_config_of_an_ip_only_relay() {
    use std::process::Command;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("chatrelay.toml");
    let data = tmp.path().join("data");
    let run = |args: &[&str]| {
        let out =
            Command::new(BIN).args(args).arg("--config").arg(&cfg).env("CHATRELAY_DATA_DIR", &data).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = run(&["init", "[192.0.2.7]"]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("mode = \"self-signed\""), "{text}");
    let (code, out) = run(&["check-config"]);
    assert_eq!(code, 0, "{out}");
    std::fs::write(&cfg, text.replace("mode = \"self-signed\"", "mode = \"acme\"")).unwrap();
    let (code, out) = run(&["check-config"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("IP-only mail_domain needs tls.mode"), "{out}");
    std::fs::write(&cfg, text.replace("[192.0.2.7]", "[192.0.2.777]")).unwrap();
    let (code, out) = run(&["check-config"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not an address literal"), "{out}");
}
