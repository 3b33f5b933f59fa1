//! OPS-4/OPS-17: SIGHUP reloads the TLS certificate files and the reloadable config at once.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::harness::*;

async fn served_cert(addr: &str) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tls_wrap(tcp, &[]).await;
    let certs = tls.get_ref().1.peer_certificates().expect("server certificate");
    certs[0].as_ref().to_vec()
}

#[tokio::test]
async fn sighup_reloads_certificate_and_config() {
    let relay = Relay::start_files("");
    let https = relay.addr(relay.ports.https);
    let before = served_cert(&https).await;
    assert_eq!(relay.https("POST", "/new").await.status, 200);

    // New certificate files and registration closed, then SIGHUP.
    let ck = rcgen::generate_simple_self_signed(vec![relay.domain.clone()]).expect("rcgen");
    std::fs::write(relay.dir.path().join("files-cert.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(relay.dir.path().join("files-key.pem"), ck.signing_key.serialize_pem()).expect("key");
    let cfg = std::fs::read_to_string(&relay.config_path).expect("config");
    std::fs::write(&relay.config_path, format!("registration = \"closed\"\n{cfg}")).expect("config");
    let ok = Command::new("kill").args(["-HUP", &relay.pid().to_string()]).status().expect("kill");
    assert!(ok.success());

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = served_cert(&https).await;
        if now != before {
            assert_eq!(now, ck.cert.der().to_vec(), "the new file pair is served");
            break;
        }
        assert!(Instant::now() < deadline, "certificate not reloaded after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = relay.https("POST", "/new").await;
    assert_eq!(r.status, 403, "registration closed after reload: {}", r.text());

    // A broken pair is refused and the working one stays (OPS-4).
    std::fs::write(relay.dir.path().join("files-key.pem"), "not a key").expect("key");
    let _ = Command::new("kill").args(["-HUP", &relay.pid().to_string()]).status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_cert(&https).await, ck.cert.der().to_vec(), "old pair kept after a bad reload");
    assert!(relay.log().contains("keeping the old one"), "the rejection is logged");
}

/// OPS-17: a SIGHUP that changes `delivery.resolver` also moves DKIM verification to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_dkim_to_the_new_resolver() {
    // The old resolver publishes another key under the same selector, the new one the right key.
    let (old_dns, new_dns) = (crate::dns_server::TestDns::start().await, crate::dns_server::TestDns::start().await);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = |name: &str| {
        let path = dir.path().join(name);
        relay::outbound::dkim_key::ensure(&path).expect("key");
        relay::dkim::Signer::load(&path, "_a.test", "dkim").expect("signer")
    };
    let (signer, other) = (key("a.pem"), key("other.pem"));
    old_dns.dkim("dkim", "_a.test", &other.public_key_b64());
    new_dns.dkim("dkim", "_a.test", &signer.public_key_b64());
    let relay = Relay::start(&format!("[delivery]\nresolver = \"{}\"\n", old_dns.resolver()));
    let (from, to) = (format!("{}@_a.test", random_local()), relay.new_address());
    seed_account(&relay::store::Store::open(&relay.data_dir()).expect("store"), &to).await;
    let signed =
        signer.sign(encrypted_eml(&from, &to).replace("\r\n", "\n").replace('\n', "\r\n").as_bytes()).expect("sign");

    assert_eq!(mx_send(&relay, &from, &to, &signed).await, "554 5.7.1 No valid DKIM signature found");

    let cfg = std::fs::read_to_string(&relay.config_path).expect("config");
    let cfg = cfg.replace(&old_dns.resolver(), &new_dns.resolver());
    std::fs::write(&relay.config_path, cfg).expect("config");
    let ok = Command::new("kill").args(["-HUP", &relay.pid().to_string()]).status().expect("kill");
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !relay.log().contains("dkim: resolver reloaded") {
        assert!(Instant::now() < deadline, "no DKIM resolver reload logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reply = mx_send(&relay, &from, &to, &signed).await;
    assert!(reply.starts_with("250"), "verified through the new resolver: {reply}");
}
