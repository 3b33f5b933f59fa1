//! Issue 27: TLS certificates and ACME shared by the nodes of one cluster. Real pebble (Debian's
//! package, as in `ops_acme`) validates HTTP-01 over loopback; its HTTP port is a forwarder the
//! test points at a node that did NOT order, so the answer must come from the database. Both
//! nodes start at once: one order; both serve the same leaf certificate (compared over TLS); a
//! renewal by one node is served by the other without a restart. Needs `RELAYTEST_PG_URL`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, RecordType};
use tokio::net::{TcpListener, TcpStream};

use crate::dns_server::TestDns;
use crate::harness::*;
use crate::ops_acme::{Pebble, api_certs, pebble_binary, start_pebble, verifies};
use crate::ops_control::plain_log;
use crate::scaleout_pg::{fresh_database, pg_client, pg_extra};

const ORDERING: &str = "acme ordering under the cluster lock";

/// The leaf certificate a node serves on its HTTPS port.
async fn leaf(relay: &Relay) -> Vec<u8> {
    let tcp = TcpStream::connect(relay.addr(relay.ports.https)).await.expect("connect");
    let tls = tls_wrap(tcp, &[]).await;
    tls.get_ref().1.peer_certificates().expect("server certificate")[0].as_ref().to_vec()
}

fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// A TCP forwarder for pebble's HTTP-01 requests: each connection goes to the port in `target`
/// (waiting until the test sets it). Returns its port.
async fn forwarder(target: Arc<Mutex<Option<u16>>>, hits: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut a, _)) = l.accept().await {
            let (target, hits) = (target.clone(), hits.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                let port = loop {
                    if let Some(p) = *target.lock().expect("lock") {
                        break p;
                    }
                    if Instant::now() > deadline {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                let Ok(mut b) = TcpStream::connect(("127.0.0.1", port)).await else { return };
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            });
        }
    });
    port
}

/// A node of the cluster on `url` in acme mode against `directory`, not yet started.
fn acme_node(url: &str, secret: &[u8; 32], directory: &str, dns: &TestDns, ca: &Path) -> Relay {
    let r = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &pg_extra(url));
    std::fs::create_dir_all(r.data_dir()).expect("data dir");
    std::fs::write(r.data_dir().join("secret.key"), secret).expect("secret");
    let toml = std::fs::read_to_string(&r.config_path)
        .expect("config")
        .replace(
            "mode = \"self-signed\"",
            &format!("mode = \"acme\"\nacme_email = \"admin@chat.test\"\nacme_directory = \"{directory}\""),
        )
        .replace(
            "resolver = \"127.0.0.1:9\"",
            &format!("resolver = \"{}\"\nextra_root_certs = \"{}\"", dns.addr, ca.display()),
        );
    assert!(toml.contains("extra_root_certs") && toml.contains("backend = \"postgres\""), "{toml}");
    std::fs::write(&r.config_path, toml).expect("config");
    r
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}:\n{}", why());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logs(nodes: &[Relay], pebble: &Pebble) -> String {
    let mut s = String::new();
    for (i, n) in nodes.iter().enumerate() {
        s.push_str(&format!("--- node {i}\n{}\n", plain_log(n)));
    }
    s + "--- pebble\n" + &std::fs::read_to_string(&pebble.log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_tls_acme_once_answered_by_any_node_renewal_adopted() {
    let Some(url) = fresh_database().await else { return };
    let Some(bin) = pebble_binary() else { return };
    let dns = TestDns::start().await;
    for name in ["chat.test.", "mta-sts.chat.test.", "www.chat.test."] {
        dns.set(name, RecordType::A, vec![RData::A(A::new(127, 0, 0, 1))]);
    }
    let target = Arc::new(Mutex::new(None));
    let hits = Arc::new(AtomicUsize::new(0));
    let http01 = forwarder(target.clone(), hits.clone()).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let (ca, cert, key) = api_certs(tmp.path());
    // 20-day certificates: due for renewal (30 days) at the next check, i.e. the next start.
    let pebble = start_pebble(&bin, tmp.path(), http01, dns.addr, &cert, &key, 20 * 86_400);
    let secret: [u8; 32] = std::array::from_fn(|i| (rand_u64() as u8).wrapping_add(i as u8));
    let mut nodes: Vec<Relay> = (0..2).map(|_| acme_node(&url, &secret, &pebble.dir_url, &dns, &ca)).collect();

    // Both nodes start at once.
    let started = Instant::now();
    std::thread::scope(|s| {
        for n in nodes.iter_mut() {
            s.spawn(move || n.spawn());
        }
    });
    // Pebble asks the node that did not order.
    let orderer = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = nodes.iter().position(|n| plain_log(n).contains(ORDERING)) {
                break i;
            }
            assert!(Instant::now() < deadline, "nobody ordered:\n{}", logs(&nodes, &pebble));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let other = 1 - orderer;
    *target.lock().expect("lock") = Some(nodes[other].ports.http);
    wait_for(
        "no certificate issued",
        40,
        || plain_log(&nodes[orderer]).contains("acme certificate installed"),
        || logs(&nodes, &pebble),
    );
    wait_for(
        "the other node did not adopt the certificate",
        15,
        || plain_log(&nodes[other]).contains("acme certificate adopted from the cluster"),
        || logs(&nodes, &pebble),
    );
    println!("shared ACME issuance and adoption took {:?}", started.elapsed());
    let plog = std::fs::read_to_string(&pebble.log).unwrap_or_default();
    assert_eq!(plog.matches("POST /order-plz").count(), 1, "one order for the cluster: {}", logs(&nodes, &pebble));
    assert_eq!(plog.matches("POST /sign-me-up").count(), 1, "one account: {plog}");
    assert_eq!(plog.matches("set VALID by completed challenge").count(), 3, "{plog}");
    assert!(hits.load(Ordering::SeqCst) >= 3, "pebble validated through the non-ordering node");
    assert!(!plain_log(&nodes[other]).contains(ORDERING), "{}", logs(&nodes, &pebble));

    // Both serve pebble's certificate, the same leaf.
    let root_pem = https_req(&pebble.mgmt.to_string(), "GET", "/roots/0", "127.0.0.1", &[], b"").await.text();
    let root = rustls_pemfile::certs(&mut root_pem.as_bytes()).next().expect("a root").expect("pem");
    for n in &nodes {
        verifies(&n.addr(n.ports.https), "mta-sts.chat.test", &root).await.expect("pebble's certificate served");
    }
    let (a, b) = (leaf(&nodes[orderer]).await, leaf(&nodes[other]).await);
    println!("leaf sha256: orderer {} other {}", fingerprint(&a), fingerprint(&b));
    assert_eq!(fingerprint(&a), fingerprint(&b), "both nodes serve the same certificate");
    let db = pg_client(&url).await;
    let row = db.query_one("SELECT generation, count(*) OVER () FROM tls_certificates", &[]).await.expect("row");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 1));

    // Renewal: the orderer restarts, finds its 20-day certificate due and renews under the lock;
    // the other node, not restarted, serves the new certificate.
    let other_pid = nodes[other].pid();
    nodes[orderer].stop();
    nodes[orderer].spawn();
    let renewed = Instant::now();
    wait_for(
        "not renewed",
        40,
        || plain_log(&nodes[orderer]).contains("acme certificate installed"),
        || logs(&nodes, &pebble),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        let now = leaf(&nodes[other]).await;
        if now != a {
            break now;
        }
        assert!(Instant::now() < deadline, "the renewal was not adopted:\n{}", logs(&nodes, &pebble));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("renewal served by the other node {:?} after the restart", renewed.elapsed());
    assert_eq!(nodes[other].pid(), other_pid, "no restart of the other node");
    assert_eq!(fingerprint(&new), fingerprint(&leaf(&nodes[orderer]).await), "the renewed certificate everywhere");
    let plog = std::fs::read_to_string(&pebble.log).unwrap_or_default();
    assert_eq!(plog.matches("POST /order-plz").count(), 2, "{}", logs(&nodes, &pebble));
    let generation: i64 = db.query_one("SELECT generation FROM tls_certificates", &[]).await.expect("row").get(0);
    assert_eq!(generation, 2);
    for mut n in nodes {
        assert_eq!(n.stop(), Some(0));
    }
}

/// `migrate --to postgres` carries the single node's ACME account and certificate: a cluster
/// node in acme mode serves that certificate at once (its CA is not even reachable).
#[tokio::test]
async fn scaleout_tls_migrate_carries_the_acme_certificate() {
    let Some(url) = fresh_database().await else { return };
    let dead = free_port();
    let directory = format!("https://127.0.0.1:{dead}/dir");
    let single = Relay::start(&format!("[store]\nbackend = \"sqlite\"\nurl = \"{url}\"\n"));
    // What a single node's ACME run leaves in data_dir/acme/ (a long-lived certificate).
    let acme = single.data_dir().join("acme");
    std::fs::create_dir_all(&acme).expect("dir");
    let names = ["chat.test", "mta-sts.chat.test", "www.chat.test"].map(String::from);
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).expect("rcgen");
    std::fs::write(acme.join("cert.pem"), ck.cert.pem()).expect("cert");
    std::fs::write(acme.join("key.pem"), ck.signing_key.serialize_pem()).expect("key");
    std::fs::write(acme.join("names"), names.join("\n")).expect("names");
    let account = serde_json::json!({"directory": directory, "credentials": {}});
    std::fs::write(acme.join("account.json"), account.to_string()).expect("account");
    std::fs::write(acme.join("account-uri"), "https://ca.test/acct/1").expect("uri");
    let (code, out, err) = single.cli(&["migrate", "--to", "postgres"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("acme accounts copied: 1, tls certificates copied: 1"), "{out}");
    let mut single = single;
    single.stop();

    let mut node = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &pg_extra(&url));
    let toml = std::fs::read_to_string(&node.config_path)
        .expect("config")
        .replace("mode = \"self-signed\"", &format!("mode = \"acme\"\nacme_directory = \"{directory}\""));
    std::fs::write(&node.config_path, toml).expect("config");
    node.spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while leaf(&node).await != ck.cert.der().to_vec() {
        assert!(Instant::now() < deadline, "migrated certificate not served:\n{}", plain_log(&node));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!plain_log(&node).contains(ORDERING), "a valid certificate is not ordered again");
    let db = pg_client(&url).await;
    let uri: String = db.query_one("SELECT uri FROM acme_accounts", &[]).await.expect("row").get(0);
    assert_eq!(uri, "https://ca.test/acct/1");
    assert_eq!(node.stop(), Some(0));
}
