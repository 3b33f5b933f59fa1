//! Delivery parts against real loopback servers: DKIM sign → verify through a real DNS server,
//! MX resolution, the SMTP client against a real STARTTLS sink, the queue scheduler with its
//! retries and bounces on a real store, and the `/mxdeliv` handler's checks.

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
use relay::store::{CreateOutcome, Delivery, RemoteBatch};

use crate::delivery_dns::TestDns;
use crate::delivery_sink::Sink;

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

fn msg(from: &str, to: &str) -> Vec<u8> {
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

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

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
    for (n, c) in [("from", 2), ("to", 2), ("subject", 2), ("date", 2), ("content-type", 2), ("reply-to", 1), ("cc", 1), ("autocrypt", 1), ("message-id", 1), ("mime-version", 1), ("in-reply-to", 0), ("chat-version", 0)] {
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

    // SMTP-43: the cached key is dropped after a failed verification (key rotation).
    let key2 = dir.path().join("a2.pem");
    relay::outbound::dkim_key::ensure(&key2).unwrap();
    let signer2 = publish_key(&dns, "_a.test", &key2);
    let signed2 = signer2.sign(&m).unwrap();
    assert_eq!(dkim.verify(&signed2, "_a.test", PEER).await, DkimVerdict::Invalid, "old key still cached");
    assert_eq!(dkim.verify(&signed2, "_a.test", PEER).await, DkimVerdict::Pass, "stale key was dropped, new one fetched");
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
    assert_eq!(hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["mx1.m.test", "mx2.m.test"], "DLV-11 by preference");
    let addrs = mx::addresses(&r, &hosts[0]).await.unwrap();
    assert_eq!(addrs, ["::1".parse::<IpAddr>().unwrap(), "127.0.0.7".parse().unwrap()], "AAAA before A");
    assert!(mx::addresses(&r, &hosts[1]).await.is_err(), "mx2 has no address");

    dns.null_mx("_null.test");
    assert_eq!(mx::resolve(&r, "_null.test").await, Err(MxError::Permanent("556 5.1.10 Permanent failure: Recipient address has null MX".into())));
    assert_eq!(mx::resolve(&r, "nx.test").await, Err(MxError::Permanent("512 5.1.2 Domain nx.test does not exist".into())));
    dns.exists("_i.test");
    assert_eq!(mx::resolve(&r, "_i.test").await, Ok(vec![MxHost { name: "_i.test".into(), addrs: vec![] }]), "DLV-14 implicit MX");
    dns.servfail("_s.test");
    assert_eq!(mx::resolve(&r, "_s.test").await, Err(MxError::Temporary("421 4.4.3 DNS resolution failed for _s.test".into())));
    let lit = mx::resolve(&r, "[127.0.0.5]").await.unwrap();
    assert_eq!(lit[0].addrs, ["127.0.0.5".parse::<IpAddr>().unwrap()], "DLV-16");
    let lit6 = mx::resolve(&r, "[IPv6:::1]").await.unwrap();
    assert_eq!(lit6[0].addrs, ["::1".parse::<IpAddr>().unwrap()]);
}

#[tokio::test]
async fn smtp_client_per_rcpt_replies_and_starttls_required() {
    let sink = Sink::start("127.0.0.1:0", true).await;
    let tls = relay::outbound::tls::ClientTls::new("").unwrap();
    let rcpts = vec!["ok@_s.test".to_string(), "bounce@_s.test".to_string(), "later@_s.test".to_string(), "ok2@_s.test".to_string()];
    let m = msg("x@_a.test", "ok@_s.test");
    let job = |cfg: Arc<rustls::ClientConfig>, addr| relay::outbound::smtp_client::SmtpJob {
        addr,
        host: "sink.test",
        ehlo: "_a.test",
        tls: cfg,
        sender: "x@_a.test",
        rcpts: &rcpts,
        message: &m,
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

#[tokio::test]
async fn queue_delivers_defers_and_bounces() {
    let dns = TestDns::start().await;
    let sink = Sink::start("127.0.0.4:0", true).await;
    dns.mx("_s.test", 10, "mx.s.test");
    dns.a("mx.s.test", "127.0.0.4".parse().unwrap());
    dns.null_mx("_null.test");
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("smtp_port = {}\ntry_https = false", sink.addr.port());
    let (ctx, _lock) = context("_a.test", dir.path(), &dns, &extra);
    publish_key(&dns, "_a.test", &dir.path().join("data/dkim.pem"));
    let sender = "sender123@_a.test";
    let acc = account(&ctx, sender).await;
    let m = msg(sender, "ok@_s.test");
    let blob = ctx.store.put_blob(m.clone().into()).await.unwrap();
    let receipt = ctx
        .store
        .deliver(Delivery {
            sender: sender.into(),
            sender_account: Some(acc),
            remote: vec![
                RemoteBatch { domain: "_s.test".into(), rcpts: vec!["ok@_s.test".into(), "bounce@_s.test".into(), "later@_s.test".into()] },
                RemoteBatch { domain: "_null.test".into(), rcpts: vec!["x@_null.test".into()] },
            ],
            remote_blob: Some(blob),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(receipt.queue_ids.len(), 2, "DLV-2 one entry per domain");
    let started = Instant::now();
    let task = tokio::spawn(relay::outbound::run(ctx.clone()));

    wait_for("two bounces", 20, || async { inbox(&ctx, acc).await.len() == 2 }).await;
    println!("first attempt + bounces took {:?}", started.elapsed());
    let got = sink.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, ["ok@_s.test"]);
    // The relayed message is DKIM-signed by _a.test and verifies (DLV-34).
    let verifier = Dkim::new(&ctx.config.get());
    assert_eq!(verifier.verify(&got[0].data, "_a.test", PEER).await, DkimVerdict::Pass);

    let bounces: Vec<String> = inbox(&ctx, acc).await.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    let b_s = bounces.iter().find(|b| b.contains("bounce@_s.test")).expect("bounce for the 550");
    for needle in ["MAILER-DAEMON@_a.test", "Auto-Submitted: auto-replied", "multipart/report", "report-type=\"delivery-status\"", "message/delivery-status", "text/rfc822-headers", "550 5.1.1", "Status: 5.1.1", "DKIM-Signature:"] {
        assert!(b_s.contains(needle), "bounce lacks {needle}:\n{b_s}");
    }
    assert!(!b_s.contains("later@_s.test"), "deferred recipient is not bounced");
    let b_null = bounces.iter().find(|b| b.contains("x@_null.test")).expect("null MX bounce");
    assert!(b_null.contains("556 5.1.10 Permanent failure: Recipient address has null MX"));

    // The 451 recipient stays queued with the DLV-5 first retry delay.
    let q = ctx.store.list_queue().await.unwrap();
    assert_eq!(q.len(), 1, "null-MX entry is gone, _s.test remains: {q:?}");
    let e = &q[0];
    assert_eq!(e.pending().map(|r| r.rcpt.as_str()).collect::<Vec<_>>(), ["later@_s.test"]);
    assert_eq!(e.attempts, 1);
    assert!(e.last_error.starts_with("451 4.7.1"), "{}", e.last_error);
    let delay = e.next_attempt - e.created_at;
    assert!((60..=68).contains(&delay), "retry in {delay}s");
    assert!(ctx.metrics.render().contains("chatrelay_bounces_total 2"));

    // `queue retry` makes it due now; the scheduler tries at once (4xx again → attempts 2, +5 m).
    assert!(ctx.store.queue_retry_now(&e.id).await.unwrap());
    let id = e.id.clone();
    wait_for("second attempt", 20, || async { ctx.store.queue_entry(&id).await.unwrap().is_some_and(|e| e.attempts == 2) }).await;
    let e = ctx.store.queue_entry(&id).await.unwrap().unwrap();
    assert!((300..=340).contains(&(e.next_attempt - crate::delivery_units::now())), "second retry in ~5 m");
    assert!(ctx.store.queue_drop(&id).await.unwrap());
    assert!(ctx.store.list_queue().await.unwrap().is_empty());
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

pub fn now() -> i64 {
    relay::store::now_secs()
}

#[tokio::test]
async fn queue_lifetime_bounces_and_empty_sender_never_bounces() {
    let dns = TestDns::start().await;
    dns.servfail("_down.test");
    dns.null_mx("_null.test");
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _lock) = context("_a.test", dir.path(), &dns, "queue_lifetime = \"3s\"\ntry_https = false");
    let sender = "sender456@_a.test";
    let acc = account(&ctx, sender).await;
    let m = msg(sender, "y@_down.test");
    let blob = ctx.store.put_blob(m.clone().into()).await.unwrap();
    ctx.store
        .deliver(Delivery {
            sender: sender.into(),
            sender_account: Some(acc),
            remote: vec![RemoteBatch { domain: "_down.test".into(), rcpts: vec!["y@_down.test".into()] }],
            remote_blob: Some(blob),
            ..Default::default()
        })
        .await
        .unwrap();
    // DLV-40: a message with an empty sender fails without a bounce.
    let blob2 = ctx.store.put_blob(m.clone().into()).await.unwrap();
    ctx.store
        .deliver(Delivery {
            sender: String::new(),
            remote: vec![RemoteBatch { domain: "_null.test".into(), rcpts: vec!["z@_null.test".into()] }],
            remote_blob: Some(blob2),
            ..Default::default()
        })
        .await
        .unwrap();
    let task = tokio::spawn(relay::outbound::run(ctx.clone()));
    wait_for("first attempt deferred", 20, || async {
        ctx.store.list_queue().await.unwrap().iter().any(|e| e.attempts == 1 && e.last_error == "421 4.4.3 DNS resolution failed for _down.test")
    })
    .await;
    wait_for("lifetime bounce (DLV-6)", 20, || async { inbox(&ctx, acc).await.len() == 1 }).await;
    let b = String::from_utf8_lossy(&inbox(&ctx, acc).await[0]).into_owned();
    assert!(b.contains("421 4.4.3 DNS resolution failed for _down.test"), "bounce carries the last error:\n{b}");
    wait_for("queue empty", 10, || async { ctx.store.list_queue().await.unwrap().is_empty() }).await;
    assert!(ctx.metrics.render().contains("chatrelay_bounces_total 1"), "no bounce for the empty sender");
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
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
    let eml = crate::harness::encrypted_eml(from, rcpt).replace('\n', "\r\n").into_bytes();
    let signed = signer.sign(&eml).unwrap();
    let call = |h: HeaderMap, body: Vec<u8>| {
        let ctx = ctx.clone();
        async move { relay::http::mxdeliv::handle(ctx, conn, &h, body.into()).await }
    };

    assert_eq!(call(headers(from, &[]), signed.clone()).await, (400, "501 5.5.4 Missing or invalid envelope headers".into()));
    assert_eq!(call(headers(from, &["x@_c.test"]), signed.clone()).await, (400, "554 5.7.1 <x@_c.test>: Relay access denied".into()));
    assert_eq!(
        call(headers(from, &["nobody123@_b.test"]), signed.clone()).await,
        (400, "550 5.1.1 <nobody123@_b.test>: Recipient address rejected: User unknown".into())
    );
    assert_eq!(call(headers("other@_a.test", &[rcpt]), signed.clone()).await, (400, format!("500 Invalid FROM {from} for other@_a.test")));
    let plain = signer.sign(&msg(from, rcpt)).unwrap();
    assert_eq!(call(headers(from, &[rcpt]), plain).await, (400, "523 Encryption Needed: Invalid Unencrypted Mail".into()));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlv8_four_per_domain_and_busy_domain_does_not_block_others() {
    let dns = TestDns::start().await;
    let port = crate::harness::free_port();
    let slow = Sink::start_slow(&format!("127.0.0.9:{port}"), Duration::from_millis(1500)).await;
    let fast = Sink::start(&format!("127.0.0.10:{port}"), true).await;
    dns.mx("_slow.test", 10, "mx.slow.test");
    dns.a("mx.slow.test", "127.0.0.9".parse().unwrap());
    dns.mx("_fast.test", 10, "mx.fast.test");
    dns.a("mx.fast.test", "127.0.0.10".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _lock) = context("_a.test", dir.path(), &dns, &format!("smtp_port = {port}\ntry_https = false"));
    let sender = "conc12345@_a.test";
    let acc = account(&ctx, sender).await;
    let m = msg(sender, "u@_slow.test");
    for i in 0..10 {
        let blob = ctx.store.put_blob(m.clone().into()).await.unwrap();
        let rcpts = vec![format!("u{i}@_slow.test")];
        ctx.store
            .deliver(Delivery { sender: sender.into(), sender_account: Some(acc), remote: vec![RemoteBatch { domain: "_slow.test".into(), rcpts }], remote_blob: Some(blob), ..Default::default() })
            .await
            .unwrap();
    }
    let blob = ctx.store.put_blob(m.clone().into()).await.unwrap();
    ctx.store
        .deliver(Delivery { sender: sender.into(), sender_account: Some(acc), remote: vec![RemoteBatch { domain: "_fast.test".into(), rcpts: vec!["v@_fast.test".into()] }], remote_blob: Some(blob), ..Default::default() })
        .await
        .unwrap();
    let started = Instant::now();
    let task = tokio::spawn(relay::outbound::run(ctx.clone()));
    wait_for("fast domain delivered", 10, || async { !fast.messages().is_empty() }).await;
    let slow_done = slow.messages().len();
    assert!(slow_done < 10, "the fast domain did not wait for the slow one ({slow_done} slow done)");
    wait_for("slow domain drained", 30, || async { slow.messages().len() == 10 }).await;
    println!("10 slow deliveries in {:?}, max parallel {}", started.elapsed(), slow.max_active.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(slow.max_active.load(std::sync::atomic::Ordering::SeqCst), 4, "DLV-8: 4 per domain");
    wait_for("queue empty", 10, || async { ctx.store.list_queue().await.unwrap().is_empty() }).await;
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
