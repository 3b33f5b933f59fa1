//! OPS-3: ACME against Debian's `pebble` on loopback. Pebble validates HTTP-01 for real: its
//! `-dnsserver` is the test DNS responder (every name → 127.0.0.1) and its `httpPort` is the
//! relay's port-80 listener. The ACME API runs on a certificate from a CA made here, which the
//! relay trusts through `delivery.extra_root_certs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, RecordType};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::dns_server::TestDns;
use crate::harness::*;
use crate::ops_control::plain_log;

/// `pebble` on PATH, installing the Debian package when missing. `None`: skip (with a message).
pub(crate) fn pebble_binary() -> Option<PathBuf> {
    let found = || ["/usr/bin/pebble", "/usr/local/bin/pebble"].iter().map(PathBuf::from).find(|p| p.exists());
    if let Some(p) = found() {
        return Some(p);
    }
    let quiet = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !(quiet(&["update"]) && quiet(&["install", "-y", "pebble"])) {
        eprintln!(
            "SKIPPED ops_acme: `apt-get install pebble` failed; install Debian's pebble package to run this test"
        );
        return None;
    }
    found()
}

pub(crate) struct Pebble {
    child: Child,
    pub dir_url: String,
    pub mgmt: SocketAddr,
    pub log: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a `localhost`/127.0.0.1 certificate it signed, for pebble's API listener.
/// Returns the CA's PEM path.
pub(crate) fn api_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "ops_acme test CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf");
    let (ca_pem, cert, key) = (dir.join("api-ca.pem"), dir.join("api-cert.pem"), dir.join("api-key.pem"));
    std::fs::write(&ca_pem, ca_cert.pem()).expect("write");
    std::fs::write(&cert, leaf_cert.pem()).expect("write");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write");
    (ca_pem, cert, key)
}

pub(crate) fn start_pebble(
    bin: &Path,
    dir: &Path,
    http_port: u16,
    dns: SocketAddr,
    cert: &Path,
    key: &Path,
    validity_secs: u64,
) -> Pebble {
    let (api, mgmt, tls) = (free_port(), free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "certificateValidityPeriod": validity_secs,
        "listenAddress": format!("127.0.0.1:{api}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": cert, "privateKey": key,
        "httpPort": http_port, "tlsPort": tls,
        "ocspResponderURL": "", "externalAccountBindingRequired": false
    }});
    let cfg = dir.join("pebble.json");
    std::fs::write(&cfg, config.to_string()).expect("pebble config");
    let log = dir.join("pebble.out");
    let out = std::fs::File::create(&log).expect("log");
    let err = out.try_clone().expect("log");
    let child = Command::new(bin)
        .arg("-config")
        .arg(&cfg)
        .arg("-dnsserver")
        .arg(dns.to_string())
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn pebble");
    let p = Pebble {
        child,
        dir_url: format!("https://127.0.0.1:{api}/dir"),
        mgmt: format!("127.0.0.1:{mgmt}").parse().expect("addr"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
        assert!(
            Instant::now() < deadline,
            "pebble did not start: {}",
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// TLS handshake with the relay's HTTPS port for `sni`, trusting only `root`.
pub(crate) async fn verifies(addr: &str, sni: &str, root: &CertificateDer<'static>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let c = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    tokio::time::timeout(Duration::from_secs(10), c.connect(name, tcp))
        .await
        .map_err(|_| "timeout".to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn wait_log(relay: &Relay, needle: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if plain_log(relay).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A relay in acme mode against a fresh pebble issuing certificates valid for `validity_secs`.
async fn acme_relay(bin: &Path, validity_secs: u64) -> (Relay, Pebble, TestDns, PathBuf) {
    let dns = TestDns::start().await;
    for name in ["chat.test.", "mta-sts.chat.test.", "www.chat.test."] {
        dns.set(name, RecordType::A, vec![RData::A(A::new(127, 0, 0, 1))]);
    }
    let mut relay = Relay::start("");
    relay.stop();
    let (ca, cert, key) = api_certs(relay.dir.path());
    let pebble = start_pebble(bin, relay.dir.path(), relay.ports.http, dns.addr, &cert, &key, validity_secs);
    let toml = std::fs::read_to_string(&relay.config_path)
        .expect("config")
        .replace(
            "mode = \"self-signed\"",
            &format!("mode = \"acme\"\nacme_email = \"admin@chat.test\"\nacme_directory = \"{}\"", pebble.dir_url),
        )
        .replace(
            "resolver = \"127.0.0.1:9\"",
            &format!("resolver = \"{}\"\nextra_root_certs = \"{}\"", dns.addr, ca.display()),
        );
    assert!(toml.contains("extra_root_certs"), "harness config changed: {toml}");
    std::fs::write(&relay.config_path, toml).expect("config");
    relay.spawn();
    (relay, pebble, dns, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_acme_certificate_from_pebble() {
    let Some(bin) = pebble_binary() else { return };
    let (mut relay, pebble, _dns, ca) = acme_relay(&bin, 157_766_400).await;
    let started = Instant::now();
    assert!(
        wait_log(&relay, "acme certificate installed", 90),
        "no certificate:\n{}\npebble:\n{}",
        plain_log(&relay),
        std::fs::read_to_string(&pebble.log).unwrap_or_default()
    );
    println!("ACME issuance took {:?}", started.elapsed());
    let plog = std::fs::read_to_string(&pebble.log).unwrap_or_default();
    assert!(
        plog.contains("Attempting to validate w/ HTTP: http://mta-sts.chat.test:"),
        "pebble checked HTTP-01 itself:\n{plog}"
    );
    assert_eq!(plog.matches("set VALID by completed challenge").count(), 3, "{plog}");

    // Pebble's root (regenerated per pebble run) from its management interface.
    let root_pem = https_req(&pebble.mgmt.to_string(), "GET", "/roots/0", "127.0.0.1", &[], b"").await.text();
    let root = rustls_pemfile::certs(&mut root_pem.as_bytes()).next().expect("a root").expect("pem");
    let https = relay.addr(relay.ports.https);
    for sni in ["chat.test", "mta-sts.chat.test", "www.chat.test"] {
        verifies(&https, sni, &root)
            .await
            .unwrap_or_else(|e| panic!("{sni}: served certificate not issued by pebble: {e}"));
    }
    // The self-signed certificate would not verify against pebble's root: the check can fail.
    let other =
        rustls_pemfile::certs(&mut std::fs::read(&ca).expect("ca").as_slice()).next().expect("ca").expect("pem");
    assert!(verifies(&https, "chat.test", &other).await.is_err());

    // State kept in data_dir/acme/, private files 0600; the expiry gauge is set.
    use std::os::unix::fs::PermissionsExt;
    let acme = relay.data_dir().join("acme");
    for f in ["account.json", "cert.pem", "key.pem"] {
        let mode = std::fs::metadata(acme.join(f)).expect(f).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let uri = std::fs::read_to_string(acme.join("account-uri")).expect("uri");
    assert!(uri.starts_with("https://127.0.0.1:"), "{uri}");
    // OPS-9: once the account exists, `chatrelay dns` pins it in the CAA record.
    let (_, out, _) = relay.cli(&["dns"]);
    assert!(out.contains(&format!("chat.test. 3600 IN CAA 0 issue \"letsencrypt.org;accounturi={uri}\"")), "{out}");
    let m = http_req(&relay.addr(relay.ports.metrics), "GET", "/metrics", "x").await.text();
    let left: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("chatrelay_tls_certificate_expiry_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("gauge missing: {m}"));
    assert!(left > 30 * 86_400, "pebble issues long-lived certificates: {left}");

    // A restart reuses the stored certificate: no new order, still pebble's.
    relay.stop();
    relay.spawn();
    assert!(wait_log(&relay, "ready", 10));
    verifies(&https, "chat.test", &root).await.expect("stored certificate served after restart");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(plain_log(&relay).matches("acme certificate installed").count(), 1, "{}", plain_log(&relay));
}

/// While the CA cannot be reached: a warning with the retry delay, and the temporary self-signed
/// certificate keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_acme_failure_keeps_self_signed_and_warns() {
    let mut relay = Relay::start("");
    relay.stop();
    let dead = free_port();
    let toml = std::fs::read_to_string(&relay.config_path).expect("config").replace(
        "mode = \"self-signed\"",
        &format!("mode = \"acme\"\nacme_directory = \"https://127.0.0.1:{dead}/dir\""),
    );
    std::fs::write(&relay.config_path, toml).expect("config");
    relay.spawn();
    assert!(wait_log(&relay, "acme certificate request failed", 30), "{}", plain_log(&relay));
    assert!(plain_log(&relay).contains("WARN acme certificate request failed"), "{}", plain_log(&relay));
    assert!(plain_log(&relay).contains("retry_in_secs=3600"), "first retry after 1 h: {}", plain_log(&relay));
    let pem = std::fs::read(relay.data_dir().join("tls/cert.pem")).expect("self-signed cert");
    let own = rustls_pemfile::certs(&mut pem.as_slice()).next().expect("cert").expect("pem");
    verifies(&relay.addr(relay.ports.https), "chat.test", &own)
        .await
        .expect("self-signed certificate served meanwhile");
    assert_eq!(relay.stop(), Some(0), "the acme task stops on shutdown");
}

/// Renewal starts 30 days before expiry: a certificate valid for 20 days is renewed at the next
/// check (here: the start after a restart), with the stored account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_acme_renews_within_30_days() {
    let Some(bin) = pebble_binary() else { return };
    let (mut relay, pebble, _dns, _ca) = acme_relay(&bin, 20 * 86_400).await;
    assert!(wait_log(&relay, "acme certificate installed", 90), "{}", plain_log(&relay));
    let first = std::fs::read(relay.data_dir().join("acme/cert.pem")).expect("cert");
    relay.stop();
    relay.spawn();
    let deadline = Instant::now() + Duration::from_secs(90);
    while plain_log(&relay).matches("acme certificate installed").count() < 2 {
        assert!(Instant::now() < deadline, "not renewed:\n{}", plain_log(&relay));
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = std::fs::read(relay.data_dir().join("acme/cert.pem")).expect("cert");
    assert_ne!(first, second, "a new certificate was stored");
    let plog = std::fs::read_to_string(&pebble.log).unwrap_or_default();
    assert_eq!(plog.matches("POST /sign-me-up").count(), 1, "the stored account was reused: {plog}");
    let m = http_req(&relay.addr(relay.ports.metrics), "GET", "/metrics", "x").await.text();
    let left: i64 = m
        .lines()
        .find_map(|l| l.strip_prefix("chatrelay_tls_certificate_expiry_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("gauge");
    assert!(left > 19 * 86_400 && left <= 20 * 86_400, "{left}");
}
