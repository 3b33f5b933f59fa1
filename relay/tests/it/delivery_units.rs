//! Delivery parts against real loopback servers: DKIM sign → verify through a real DNS server,
//! MX resolution, the SMTP client against a real STARTTLS sink, and the `/mxdeliv` handler's
//! checks. Shared helpers for the other delivery test files.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use relay::context::{ConnInfo, Ctx};
use relay::dkim::{Dkim, DkimVerdict, Signer};
use relay::outbound::mx::{self, MxError, MxHost};
use relay::outbound::reply::RcptResult;
use relay::store::CreateOutcome;

use crate::delivery_sink::Sink;
use crate::dns_server::TestDns;

pub fn config_toml(domain: &str, data: &Path, dns: &TestDns, extra_delivery: &str) -> String {
    format!(
        "mail_domain = \"{domain}\"\ndata_dir = \"{}\"\n[tls]\nmode = \"self-signed\"\n[push]\nnotify_url = \"\"\n[delivery]\nresolver = \"{}\"\n{extra_delivery}\n",
        data.display(),
        dns.resolver()
    )
}

fn load(toml: &str) -> relay::config::Config {
    relay::config::load_str(toml, "test").expect("config")
}

/// A full context (real store under a temp dir) without listeners.
pub fn context(domain: &str, dir: &Path, dns: &TestDns, extra_delivery: &str) -> (Ctx, std::fs::File) {
    let cfg = load(&config_toml(domain, &dir.join("data"), dns, extra_delivery));
    relay::outbound::dkim_key::ensure(&relay::outbound::dkim_key::default_path(&cfg.data_dir)).expect("dkim key");
    relay::server::build_context(cfg).expect("context")
}

pub async fn account(ctx: &Ctx, addr: &str) -> i64 {
    match ctx.store.create_account(addr, "x".into(), addr.as_bytes().to_vec()).await.expect("create") {
        CreateOutcome::Created(a) | CreateOutcome::AlreadyExists(a) => a.id,
        CreateOutcome::Tombstoned => panic!("tombstoned"),
    }
}

pub async fn inbox(ctx: &Ctx, account: i64) -> Vec<Vec<u8>> {
    let mb = ctx.store.mailbox(account, "INBOX").await.expect("mailbox").expect("inbox");
    let mut out = Vec::new();
    for m in ctx.store.messages(mb.id).await.expect("messages") {
        out.push(ctx.store.read_blob(&m.blob).await.expect("blob"));
    }
    out
}

pub async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, secs: u64, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn publish_key(dns: &TestDns, domain: &str, key_path: &Path) -> Signer {
    let s = Signer::load(key_path, domain, "dkim").expect("signer");
    dns.dkim("dkim", domain, &s.public_key_b64());
    s
}

pub fn msg(from: &str, to: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: [...]\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\nMessage-ID: <{}@x>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n.starts with a dot\r\n",
        crate::harness::rand_u64()
    )
    .into_bytes()
}

fn h_tag(signed: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(signed);
    let sig: String = s.split("\r\n\r\n").next().unwrap_or("").replace("\r\n", "").replace([' ', '\t'], "");
    let h = sig.split(';').find_map(|t| t.strip_prefix("h=")).expect("h= tag").to_string();
    h.split(':').map(|x| x.to_ascii_lowercase()).collect()
}

pub const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test]
async fn dkim_sign_verify_round_trip_and_failures() {
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("a.pem");
    relay::outbound::dkim_key::ensure(&key).unwrap();
    let signer = publish_key(&dns, "_a.test", &key);
    let cfg = load(&config_toml("_b.test", &dir.path().join("data"), &dns, ""));
    let dkim = Dkim::new(&cfg);

    let m = msg("x@_a.test", "y@_b.test");
    let signed = signer.sign(&m).unwrap();
    assert_eq!(dkim.verify(&signed, "_a.test", PEER).await, DkimVerdict::Pass, "DLV-34 round trip");
    let text = String::from_utf8_lossy(&signed);
    assert!(text.starts_with("DKIM-Signature:") && text.contains("d=_a.test") && text.contains("s=dkim"));
    assert!(text.contains("a=rsa-sha256") && text.contains("c=relaxed/simple"), "{text}");

    // DLV-36: From, To, Subject, Date, Content-Type oversigned (n+1); Reply-To, Cc, Autocrypt listed
    // once though absent; present non-oversigned headers once; absent non-oversigned not at all.
    let h = h_tag(&signed);
    let count = |n: &str| h.iter().filter(|x| *x == n).count();
    for (n, c) in [
        ("from", 2),
        ("to", 2),
        ("subject", 2),
        ("date", 2),
        ("content-type", 2),
        ("reply-to", 1),
        ("cc", 1),
        ("autocrypt", 1),
        ("message-id", 1),
        ("mime-version", 1),
        ("in-reply-to", 0),
        ("chat-version", 0),
    ] {
        assert_eq!(count(n), c, "{n} in h={h:?}");
    }

    // SMTP-42: a changed body, an added From (oversigned), an unaligned d=, no signature.
    let tampered = String::from_utf8_lossy(&signed).replace("hello", "hellO").into_bytes();
    assert_eq!(dkim.verify(&tampered, "_a.test", PEER).await, DkimVerdict::Invalid);
    let mut prepended = signed.clone();
    let pos = prepended.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    prepended.splice(pos..pos, b"Reply-To: <evil@_c.test>\r\n".iter().copied());
    assert_eq!(dkim.verify(&prepended, "_a.test", PEER).await, DkimVerdict::Invalid, "added Reply-To after signing");
    assert_eq!(dkim.verify(&signed, "_c.test", PEER).await, DkimVerdict::Invalid, "d= must equal From domain");
    assert_eq!(dkim.verify(&m, "_a.test", PEER).await, DkimVerdict::NoSignature);

    // SMTP-43: the cached key is dropped after a failed verification (key rotation). The failures
    // above dropped it; a good message caches it again (unaligned signatures are not verified).
    assert_eq!(dkim.verify(&signed, "_a.test", PEER).await, DkimVerdict::Pass);
    let key2 = dir.path().join("a2.pem");
    relay::outbound::dkim_key::ensure(&key2).unwrap();
    let signer2 = publish_key(&dns, "_a.test", &key2);
    let signed2 = signer2.sign(&m).unwrap();
    assert_eq!(dkim.verify(&signed2, "_a.test", PEER).await, DkimVerdict::Invalid, "old key still cached");
    assert_eq!(
        dkim.verify(&signed2, "_a.test", PEER).await,
        DkimVerdict::Pass,
        "stale key was dropped, new one fetched"
    );
    assert!(dkim.cached_keys() <= relay::dkim::cache::CAPACITY);

    // SMTP-42: a temporary DNS failure while fetching the key.
    let signer_d = Signer::load(&key, "_d.test", "dkim").unwrap();
    dns.servfail("dkim._domainkey._d.test");
    let signed_d = signer_d.sign(&msg("x@_d.test", "y@_b.test")).unwrap();
    assert_eq!(dkim.verify(&signed_d, "_d.test", PEER).await, DkimVerdict::TempFail);
    // No key record at all is permanent.
    let signer_e = Signer::load(&key, "_e.test", "dkim").unwrap();
    let signed_e = signer_e.sign(&msg("x@_e.test", "y@_b.test")).unwrap();
    assert_eq!(dkim.verify(&signed_e, "_e.test", PEER).await, DkimVerdict::Invalid);

    // SMTP-44: an address-literal From domain is skipped only for that peer.
    let lit = msg("x@[127.0.0.2]", "y@_b.test");
    assert_eq!(dkim.verify(&lit, "[127.0.0.2]", PEER).await, DkimVerdict::Skipped);
    assert_eq!(dkim.verify(&lit, "[127.0.0.9]", PEER).await, DkimVerdict::NoSignature);
}

#[tokio::test]
async fn mx_resolution_dlv10_to_17() {
    let dns = TestDns::start().await;
    let r = relay::outbound::dns::build(&dns.resolver(), Duration::from_secs(2), false).unwrap();
    dns.mx("_m.test", 20, "mx2.m.test");
    dns.mx("_m.test", 10, "mx1.m.test");
    dns.a("mx1.m.test", "127.0.0.7".parse().unwrap());
    dns.a("mx1.m.test", "::1".parse().unwrap());
    let hosts = mx::resolve(&r, "_m.test").await.unwrap();
    assert_eq!(
        hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["mx1.m.test", "mx2.m.test"],
        "DLV-11 by preference"
    );
    let addrs = mx::addresses(&r, &hosts[0]).await.unwrap();
    assert_eq!(addrs, ["::1".parse::<IpAddr>().unwrap(), "127.0.0.7".parse().unwrap()], "AAAA before A");
    assert!(mx::addresses(&r, &hosts[1]).await.is_err(), "mx2 has no address");

    dns.null_mx("_null.test");
    assert_eq!(
        mx::resolve(&r, "_null.test").await,
        Err(MxError::Permanent("556 5.1.10 Permanent failure: Recipient address has null MX".into()))
    );
    assert_eq!(
        mx::resolve(&r, "nx.test").await,
        Err(MxError::Permanent("512 5.1.2 Domain nx.test does not exist".into()))
    );
    dns.exists("_i.test");
    assert_eq!(
        mx::resolve(&r, "_i.test").await,
        Ok(vec![MxHost { name: "_i.test".into(), addrs: vec![] }]),
        "DLV-14 implicit MX"
    );
    dns.servfail("_s.test");
    assert_eq!(
        mx::resolve(&r, "_s.test").await,
        Err(MxError::Temporary("421 4.4.3 DNS resolution failed for _s.test".into()))
    );
    let lit = mx::resolve(&r, "[127.0.0.5]").await.unwrap();
    assert_eq!(lit[0].addrs, ["127.0.0.5".parse::<IpAddr>().unwrap()], "DLV-16");
    let lit6 = mx::resolve(&r, "[IPv6:::1]").await.unwrap();
    assert_eq!(lit6[0].addrs, ["::1".parse::<IpAddr>().unwrap()]);
}

#[tokio::test]
async fn smtp_client_per_rcpt_replies_and_starttls_required() {
    let sink = Sink::start("127.0.0.1:0", true).await;
    let tls = relay::outbound::tls::ClientTls::new("").unwrap();
    let rcpts = vec![
        "ok@_s.test".to_string(),
        "bounce@_s.test".to_string(),
        "later@_s.test".to_string(),
        "ok2@_s.test".to_string(),
    ];
    let m = msg("x@_a.test", "ok@_s.test");
    let job = |cfg: Arc<rustls::ClientConfig>, addr| relay::outbound::smtp_client::SmtpJob {
        addr,
        host: "sink.test",
        ehlo: "_a.test",
        tls: cfg,
        sender: "x@_a.test",
        rcpts: &rcpts,
        message: &m,
        source: None,
    };
    let res = relay::outbound::smtp_client::deliver(job(tls.any_smtp.clone(), sink.addr)).await.unwrap();
    let get = |r: &str| res.iter().find(|(x, _)| x == r).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("ok@_s.test"), RcptResult::Delivered("250 OK (SMTP)".into()));
    assert_eq!(get("ok2@_s.test"), RcptResult::Delivered("250 OK (SMTP)".into()));
    assert!(matches!(get("bounce@_s.test"), RcptResult::Permanent(t) if t.starts_with("550 5.1.1")));
    assert!(matches!(get("later@_s.test"), RcptResult::Temporary(t) if t.starts_with("451 4.7.1")));
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, ["ok@_s.test", "ok2@_s.test"]);
    assert_eq!(got[0].ehlo, "_a.test", "DLV-22 EHLO mail_domain");
    assert_eq!(got[0].data, m, "dot-stuffing undone by the receiver gives the original bytes");

    // DLV-24: a self-signed certificate fails verification; DLV-22: no STARTTLS, no delivery.
    let err = relay::outbound::smtp_client::deliver(job(tls.verified_smtp.clone(), sink.addr)).await.unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
    let plain = Sink::start("127.0.0.1:0", false).await;
    let err = relay::outbound::smtp_client::deliver(job(tls.any_smtp.clone(), plain.addr)).await.unwrap_err();
    assert_eq!(err.to_string(), "STARTTLS not offered");
    assert!(plain.messages().is_empty(), "DLV-23 never plaintext");
}

fn headers(from: &str, to: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.append("x-mail-from", from.parse().unwrap());
    for t in to {
        h.append("x-mail-to", t.parse().unwrap());
    }
    h
}

#[tokio::test]
async fn mxdeliv_handler_checks_in_port25_order() {
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _lock) = context("_b.test", dir.path(), &dns, "");
    let key = dir.path().join("a.pem");
    relay::outbound::dkim_key::ensure(&key).unwrap();
    let signer = publish_key(&dns, "_a.test", &key);
    let rcpt = "rcpt12345@_b.test";
    let acc = account(&ctx, rcpt).await;
    let conn = ConnInfo { id: 1, peer: PEER, local: "127.0.0.3:443".parse().unwrap() };
    let from = "sender99@_a.test";
    let eml = crate::harness::encrypted_eml(from, rcpt).replace("\r\n", "\n").replace('\n', "\r\n").into_bytes();
    let signed = signer.sign(&eml).unwrap();
    let call = |h: HeaderMap, body: Vec<u8>| {
        let ctx = ctx.clone();
        async move { relay::http::mxdeliv::handle(ctx, conn, &h, body.into()).await }
    };

    assert_eq!(
        call(headers(from, &[]), signed.clone()).await,
        (400, "501 5.5.4 Missing or invalid envelope headers".into())
    );
    assert_eq!(
        call(headers(from, &["x@_c.test"]), signed.clone()).await,
        (400, "554 5.7.1 <x@_c.test>: Relay access denied".into())
    );
    assert_eq!(
        call(headers(from, &["nobody123@_b.test"]), signed.clone()).await,
        (400, "550 5.1.1 <nobody123@_b.test>: Recipient address rejected: User unknown".into())
    );
    assert_eq!(
        call(headers("other@_a.test", &[rcpt]), signed.clone()).await,
        (400, format!("500 Invalid FROM {from} for other@_a.test"))
    );
    let plain = signer.sign(&msg(from, rcpt)).unwrap();
    assert_eq!(
        call(headers(from, &[rcpt]), plain).await,
        (400, "523 Encryption Needed: Invalid Unencrypted Mail".into())
    );
    let broken = String::from_utf8_lossy(&signed).replace("Subject: [...]", "Subject: [..]").into_bytes();
    assert_eq!(call(headers(from, &[rcpt]), broken).await, (400, "554 5.7.1 No valid DKIM signature found".into()));
    assert_eq!(call(headers(from, &[rcpt]), eml.clone()).await, (400, "554 5.7.1 No DKIM signature found".into()));
    assert!(inbox(&ctx, acc).await.is_empty(), "nothing stored for refusals");

    let big = vec![b'x'; ctx.config.get().max_message_size.0 as usize + 1];
    assert_eq!(call(headers(from, &[rcpt]), big).await, (413, "552 Message exceeds maximum size".into()));

    assert_eq!(call(headers(from, &[rcpt]), signed.clone()).await, (200, "250 OK".into()));
    let stored = inbox(&ctx, acc).await;
    assert_eq!(stored.len(), 1);
    let s = String::from_utf8_lossy(&stored[0]);
    assert!(!s.contains("DKIM-Signature"), "SMTP-46 strips DKIM-Signature on storing");
    assert!(s.contains("-----BEGIN PGP MESSAGE-----"));
    let m = ctx.metrics.render();
    assert!(m.contains("listener=\"mxdeliv\",result=\"rejected\",reason=\"dkim_invalid\""), "{m}");
}
