//! Issue 29, DANE between real relays: A delivers to B, whose MX host has a validated TLSA record
//! matching B's own (self-signed) certificate, over HTTPS `/mxdeliv`; and to C, whose TLSA record
//! names another key: nothing reaches C over either transport and the message stays in A's queue.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::proto::rr::rdata::TLSA;
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use sha2::Digest;

use crate::dane_zone::SignedZone;
use crate::dns_server::TestDns;
use crate::harness::*;

fn spki_sha256_of_relay(r: &Relay) -> Vec<u8> {
    let pem = std::fs::read(r.data_dir().join("tls/cert.pem")).unwrap();
    let der = rustls_pemfile::certs(&mut &pem[..]).next().unwrap().unwrap();
    sha2::Sha256::digest(relay::outbound::dane::spki(der.as_ref()).unwrap()).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_between_relays_match_and_mismatch() {
    let dns = TestDns::start().await;
    let zone = Arc::new(SignedZone::new("dane.test"));
    dns.sign_zone(zone.clone());
    let anchor_dir = tempfile::tempdir().unwrap();
    let anchor = anchor_dir.path().join("anchor.zone");
    std::fs::write(&anchor, zone.trust_anchor()).unwrap();
    let ports = Ports::new();
    let extra = format!(
        "[push]\nnotify_url = \"\"\n[delivery]\nresolver = \"{}\"\nsmtp_port = {}\nhttps_port = {}\ndnssec_trust_anchor = \"{}\"\n",
        dns.resolver(),
        ports.smtp,
        ports.https,
        anchor.display()
    );
    let a = Relay::start_with_ports("_a.test", "127.0.0.41", ports, &extra);
    let b = Relay::start_with_ports("_b.test", "127.0.0.42", ports, &extra);
    let c = Relay::start_with_ports("_c.test", "127.0.0.43", ports, &extra);
    for (r, host, ip) in [
        (&a, "mx.a.dane.test", "127.0.0.41"),
        (&b, "mx.b.dane.test", "127.0.0.42"),
        (&c, "mx.c.dane.test", "127.0.0.43"),
    ] {
        dns.mx(&r.domain, 10, host);
        dns.a(host, ip.parse().unwrap());
        let s = relay::dkim::Signer::load(&r.data_dir().join("dkim.pem"), &r.domain, "dkim").unwrap();
        dns.dkim("dkim", &r.domain, &s.public_key_b64());
    }
    let tlsa = |data: Vec<u8>| {
        vec![hickory_resolver::proto::rr::RData::TLSA(TLSA::new(
            CertUsage::from(3),
            Selector::from(1),
            Matching::from(1),
            data,
        ))]
    };
    dns.set(&format!("_{}._tcp.mx.b.dane.test", ports.smtp), RecordType::TLSA, tlsa(spki_sha256_of_relay(&b)));
    // C's record names A's key, not C's.
    dns.set(&format!("_{}._tcp.mx.c.dane.test", ports.smtp), RecordType::TLSA, tlsa(spki_sha256_of_relay(&a)));

    let (ua, ub, uc) = (a.new_address(), b.new_address(), c.new_address());
    create_account(&b, &ub).await;
    create_account(&c, &uc).await;
    assert!(submit(&a, &ua, PASSWORD, &ua, &[&ub], &encrypted_eml(&ua, &ub)).await.starts_with("250"));
    assert!(submit(&a, &ua, PASSWORD, &ua, &[&uc], &encrypted_eml(&ua, &uc)).await.starts_with("250"));

    let deadline = Instant::now() + Duration::from_secs(15);
    while inbox_messages(&b, &ub).await.is_empty() {
        assert!(Instant::now() < deadline, "B never got the message\nA log:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = http_req(&a.addr(a.ports.metrics), "GET", "/metrics", "x").await.text();
    assert!(
        metrics.lines().any(|l| l.starts_with("chatrelay_delivery_attempts_total")
            && l.contains("transport=\"https\"")
            && l.contains("result=\"ok\"")),
        "B was reached over /mxdeliv: {metrics}"
    );
    // C: the first attempt failed on both transports; the message waits in A's queue.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, out, _) = a.cli(&["queue", "list"]);
        if out.contains("DANE") {
            println!("A's queue: {}", out.trim());
            break;
        }
        assert!(Instant::now() < deadline, "no DANE failure in A's queue: {out}\nA log:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(inbox_messages(&c, &uc).await.is_empty(), "nothing reached C");
    assert!(inbox_messages(&a, &ua).await.is_empty(), "no bounce to the sender");
}
