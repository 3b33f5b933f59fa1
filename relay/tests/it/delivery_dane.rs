//! Issue 29: DANE outbound (RFC 7672). A signed test zone (`dane_zone`, trusted through
//! `delivery.dnssec_trust_anchor`) publishes TLSA records for MX hosts that are STARTTLS sinks on
//! loopback; one delivery attempt (the real SMTP client, real TLS, the validating resolver against
//! the in-test DNS server) per case: DANE-EE match, DANE-TA match, mismatch (deferred, nothing
//! delivered, even for a `_` domain that otherwise accepts any certificate), a Bogus TLSA answer
//! (deferred), no TLSA (today's behaviour), and DANE taking precedence over an MTA-STS policy.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use relay::outbound::attempt::Transport;
use relay::outbound::reply::RcptResult;
use rustls::pki_types::CertificateDer;
use sha2::Digest;

use crate::dane_zone::SignedZone;
use crate::delivery_sink::Sink;
use crate::delivery_units::context;
use crate::dns_server::TestDns;
use crate::harness::free_port;
use hickory_resolver::proto::rr::rdata::TLSA;
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_resolver::proto::rr::{RData, RecordType};

fn tlsa(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> RData {
    RData::TLSA(TLSA::new(CertUsage::from(usage), Selector::from(selector), Matching::from(matching), data))
}

fn spki_sha256(key: &rcgen::KeyPair) -> Vec<u8> {
    sha2::Sha256::digest(rcgen::PublicKeyData::subject_public_key_info(key)).to_vec()
}

struct Case {
    domain: &'static str,
    sink: Sink,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_match_mismatch_bogus_and_no_tlsa() {
    let dns = TestDns::start().await;
    let zone = Arc::new(SignedZone::new("dane.test"));
    dns.sign_zone(zone.clone());
    let bogus_zone = Arc::new(SignedZone::new("bogus.test"));
    bogus_zone.bogus.store(true, Ordering::SeqCst);
    dns.sign_zone(bogus_zone.clone());
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("anchor.zone");
    std::fs::write(&anchor, format!("{}{}", zone.trust_anchor(), bogus_zone.trust_anchor())).unwrap();
    let smtp_port = free_port();

    // CA for the DANE-TA case.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let ca_der = ca.der().to_vec();

    let self_signed = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        (cert.der().clone(), key)
    };
    let mut cases = Vec::new();
    let mut add =
        async |domain: &'static str, host: &str, ip: &str, chain: Vec<CertificateDer<'static>>, key: Vec<u8>| {
            let sink = Sink::start_with_cert(&format!("{ip}:{smtp_port}"), chain, key).await;
            dns.mx(domain, 10, host);
            dns.a(host, ip.parse().unwrap());
            cases.push(Case { domain, sink });
        };

    // 1. DANE-EE 3 1 1 (SPKI SHA-256) for a self-signed certificate on a normal domain, where
    //    require_valid_tls would refuse it without DANE.
    let (cert, key) = self_signed("mx1.dane.test");
    dns.set(&format!("_{smtp_port}._tcp.mx1.dane.test"), RecordType::TLSA, vec![tlsa(3, 1, 1, spki_sha256(&key))]);
    add("ee.test", "mx1.dane.test", "127.0.0.21", vec![cert], key.serialize_der()).await;
    // 2. DANE-EE 3 0 1 (whole certificate SHA-256).
    let (cert, key) = self_signed("anything.example");
    let digest = sha2::Sha256::digest(cert.as_ref()).to_vec();
    dns.set(&format!("_{smtp_port}._tcp.mx2.dane.test"), RecordType::TLSA, vec![tlsa(3, 0, 1, digest)]);
    add("ee2.test", "mx2.dane.test", "127.0.0.22", vec![cert], key.serialize_der()).await;
    // 3. DANE-TA 2 0 1: the server sends leaf + CA; the CA matches and the leaf names the host.
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(vec!["mx3.dane.test".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    dns.set(
        &format!("_{smtp_port}._tcp.mx3.dane.test"),
        RecordType::TLSA,
        vec![tlsa(2, 0, 1, sha2::Sha256::digest(&ca_der).to_vec())],
    );
    let chain = vec![leaf.der().clone(), CertificateDer::from(ca_der.clone())];
    add("ta.test", "mx3.dane.test", "127.0.0.23", chain, leaf_key.serialize_der()).await;
    // 4. Mismatch: the TLSA names another key. A `_` domain would accept any certificate without
    //    DANE; with DANE the attempt fails and the message stays queued.
    let (cert, key) = self_signed("mx4.dane.test");
    let other = rcgen::KeyPair::generate().unwrap();
    dns.set(&format!("_{smtp_port}._tcp.mx4.dane.test"), RecordType::TLSA, vec![tlsa(3, 1, 1, spki_sha256(&other))]);
    add("_mismatch.test", "mx4.dane.test", "127.0.0.24", vec![cert], key.serialize_der()).await;
    // 5. Bogus: correct TLSA, broken signatures.
    let (cert, key) = self_signed("mx5.bogus.test");
    dns.set(&format!("_{smtp_port}._tcp.mx5.bogus.test"), RecordType::TLSA, vec![tlsa(3, 1, 1, spki_sha256(&key))]);
    add("_bogus.test", "mx5.bogus.test", "127.0.0.25", vec![cert], key.serialize_der()).await;
    // 6. No TLSA, unsigned host: today's behaviour (a `_` domain accepts the self-signed certificate).
    let (cert, key) = self_signed("mx6.plain.test");
    add("_plain.test", "mx6.plain.test", "127.0.0.26", vec![cert], key.serialize_der()).await;
    // 7. No TLSA on a normal domain: a self-signed certificate on a normal domain is refused.
    let (cert, key) = self_signed("mx7.plain.test");
    add("strict.test", "mx7.plain.test", "127.0.0.27", vec![cert], key.serialize_der()).await;

    let extra = format!("smtp_port = {smtp_port}\ntry_https = false\ndnssec_trust_anchor = \"{}\"", anchor.display());
    let (ctx, _lock) = context("_a.test", dir.path(), &dns, &extra);
    let cfg = ctx.config.get();
    let t = Arc::new(Transport::new(&cfg).unwrap());
    let msg = crate::delivery_units::msg("dane123@_a.test", "u@x.test");
    let mut outcome = Vec::new();
    for c in &cases {
        let rcpt = format!("u@{}", c.domain);
        let r = t.attempt(&ctx, &cfg, c.domain, "dane123@_a.test", std::slice::from_ref(&rcpt), &msg).await;
        let (_, res) = r.rcpts.into_iter().next().unwrap();
        outcome.push((c.domain, res, c.sink.messages().len()));
    }
    let get = |d: &str| outcome.iter().find(|(x, ..)| *x == d).cloned().unwrap();
    for d in ["ee.test", "ee2.test", "ta.test", "_plain.test"] {
        let (_, res, n) = get(d);
        assert!(matches!(res, RcptResult::Delivered(_)), "{d}: {res:?}");
        assert_eq!(n, 1, "{d}");
    }
    for d in ["_mismatch.test", "_bogus.test", "strict.test"] {
        let (_, res, n) = get(d);
        assert!(matches!(res, RcptResult::Temporary(_)), "{d} must be deferred, not bounced: {res:?}");
        assert_eq!(n, 0, "{d}: nothing delivered");
    }
    let (_, res, _) = get("_mismatch.test");
    assert!(res.text().contains("DANE") || res.text().contains("TLS"), "{res:?}");
    ctx.shutdown.cancel();
}

/// Serves one MTA-STS policy text for every request (TLS with `acceptor`).
async fn policy_server(addr: &str, acceptor: tokio_rustls::TlsAcceptor, policy: &'static str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{policy}",
                    policy.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

/// RFC 8461 2: an MX host with DANE records is judged by DANE, not by the MTA-STS policy. Both
/// domains have an enforce policy that names neither MX host; the one whose host has valid TLSA
/// records is delivered, the other is deferred by the policy as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_takes_precedence_over_mta_sts() {
    let dns = TestDns::start().await;
    let zone = Arc::new(SignedZone::new("dane.test"));
    dns.sign_zone(zone.clone());
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("anchor.zone");
    std::fs::write(&anchor, zone.trust_anchor()).unwrap();
    let (smtp_port, https_port) = (free_port(), free_port());

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let pkey = rcgen::KeyPair::generate().unwrap();
    let names = vec!["mta-sts.sts.test".to_string(), "mta-sts.sts2.test".to_string()];
    let pcert = rcgen::CertificateParams::new(names).unwrap().signed_by(&pkey, &ca).unwrap();
    let acceptor = crate::delivery_sink::acceptor_for(vec![pcert.der().clone()], pkey.serialize_der());
    policy_server(
        &format!("127.0.0.29:{https_port}"),
        acceptor,
        "version: STSv1\r\nmode: enforce\r\nmx: mx.elsewhere.test\r\nmax_age: 86400\r\n",
    )
    .await;

    let mut sinks = Vec::new();
    for (domain, host, ip) in
        [("sts.test", "mx8.dane.test", "127.0.0.30"), ("sts2.test", "mx9.plain.test", "127.0.0.31")]
    {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap().self_signed(&key).unwrap();
        sinks.push(
            Sink::start_with_cert(&format!("{ip}:{smtp_port}"), vec![cert.der().clone()], key.serialize_der()).await,
        );
        dns.mx(domain, 10, host);
        dns.a(host, ip.parse().unwrap());
        dns.txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1");
        dns.a(&format!("mta-sts.{domain}"), "127.0.0.29".parse().unwrap());
        if host.ends_with("dane.test") {
            dns.set(&format!("_{smtp_port}._tcp.{host}"), RecordType::TLSA, vec![tlsa(3, 1, 1, spki_sha256(&key))]);
        }
    }
    let extra = format!(
        "smtp_port = {smtp_port}\nhttps_port = {https_port}\ntry_https = false\nextra_root_certs = \"{}\"\ndnssec_trust_anchor = \"{}\"",
        ca_path.display(),
        anchor.display()
    );
    let (ctx, _lock) = context("_a.test", dir.path(), &dns, &extra);
    let cfg = ctx.config.get();
    let t = Arc::new(Transport::new(&cfg).unwrap());
    let msg = crate::delivery_units::msg("dane123@_a.test", "u@sts.test");
    let r = t.attempt(&ctx, &cfg, "sts.test", "dane123@_a.test", &["u@sts.test".to_string()], &msg).await;
    assert!(matches!(r.rcpts[0].1, RcptResult::Delivered(_)), "{:?}", r.rcpts);
    assert_eq!(sinks[0].messages().len(), 1);
    let r = t.attempt(&ctx, &cfg, "sts2.test", "dane123@_a.test", &["u@sts2.test".to_string()], &msg).await;
    assert!(matches!(&r.rcpts[0].1, RcptResult::Temporary(t) if t.contains("MTA-STS")), "{:?}", r.rcpts);
    assert_eq!(sinks[1].messages().len(), 0);
    ctx.shutdown.cancel();
}

/// Through the queue (`outbound::run`): a DANE mismatch leaves the message queued with the TLS
/// error as its last error, nothing reaches the host and no bounce is written to the sender.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_mismatch_stays_queued_without_bounce() {
    use relay::store::{Delivery, RemoteBatch};
    let dns = TestDns::start().await;
    let zone = Arc::new(SignedZone::new("dane.test"));
    dns.sign_zone(zone.clone());
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("anchor.zone");
    std::fs::write(&anchor, zone.trust_anchor()).unwrap();
    let smtp_port = free_port();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.dane.test".to_string()]).unwrap().self_signed(&key).unwrap();
    let sink =
        Sink::start_with_cert(&format!("127.0.0.32:{smtp_port}"), vec![cert.der().clone()], key.serialize_der()).await;
    dns.mx("_q.test", 10, "mx.dane.test");
    dns.a("mx.dane.test", "127.0.0.32".parse().unwrap());
    let other = rcgen::KeyPair::generate().unwrap();
    dns.set(&format!("_{smtp_port}._tcp.mx.dane.test"), RecordType::TLSA, vec![tlsa(3, 1, 1, spki_sha256(&other))]);
    let extra = format!("smtp_port = {smtp_port}\ntry_https = false\ndnssec_trust_anchor = \"{}\"", anchor.display());
    let (ctx, _lock) = context("_a.test", dir.path(), &dns, &extra);
    crate::delivery_units::publish_key(&dns, "_a.test", &dir.path().join("data/dkim.pem"));
    let sender = "daneq1234@_a.test";
    let acc = crate::delivery_units::account(&ctx, sender).await;
    let blob = ctx.store.put_blob(crate::delivery_units::msg(sender, "x@_q.test").into()).await.unwrap();
    ctx.store
        .deliver(Delivery {
            sender: sender.into(),
            sender_account: Some(acc),
            remote: vec![RemoteBatch { domain: "_q.test".into(), rcpts: vec!["x@_q.test".into()] }],
            remote_blob: Some(blob),
            ..Default::default()
        })
        .await
        .unwrap();
    let task = tokio::spawn(relay::outbound::run(ctx.clone()));
    let store = ctx.store.clone();
    crate::delivery_units::wait_for("one attempt", 20, || {
        let store = store.clone();
        async move { store.list_queue().await.unwrap().first().is_some_and(|e| e.attempts >= 1) }
    })
    .await;
    let e = ctx.store.list_queue().await.unwrap().remove(0);
    println!("queued after one attempt: {}", e.last_error);
    assert!(e.last_error.starts_with('4'), "deferred: {}", e.last_error);
    assert!(e.last_error.contains("mx.dane.test"), "{}", e.last_error);
    assert!(sink.messages().is_empty(), "nothing delivered");
    assert!(crate::delivery_units::inbox(&ctx, acc).await.is_empty(), "no bounce");
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
}
