//! MTA-STS (DLV-28..DLV-33) against a loopback policy server with a certificate from a test CA
//! (trusted through `delivery.extra_root_certs`), SMTP sinks as MX hosts and the in-test DNS.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::delivery_sink::{Sink, acceptor_for};
use crate::delivery_units::{account, context, wait_for};
use crate::dns_server::TestDns;
use crate::harness::free_port;
use relay::store::{Delivery, RemoteBatch};

struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        Self { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }
    /// (chain, pkcs8 key) for `names`.
    fn leaf(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (vec![cert.der().clone()], key.serialize_der())
    }
}

/// Serves `/.well-known/mta-sts.txt` per Host header; counts requests.
struct PolicyServer {
    policies: Arc<Mutex<HashMap<String, String>>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl PolicyServer {
    async fn start(addr: &str, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        let l = TcpListener::bind(addr).await.unwrap();
        let policies: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let (p, h) = (policies.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = l.accept().await else { return };
                let (p, h, acceptor) = (p.clone(), h.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else { return };
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    h.fetch_add(1, Ordering::SeqCst);
                    let host = req.lines().find_map(|l| l.strip_prefix("Host: ")).unwrap_or("").trim().to_string();
                    let body = p.lock().unwrap().get(&host).cloned();
                    let resp = match body {
                        Some(b) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{b}",
                            b.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                    };
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Self { policies, hits, task }
    }
    fn set(&self, domain: &str, mode: &str, mx: &str) {
        let text = format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n");
        self.policies.lock().unwrap().insert(format!("mta-sts.{domain}"), text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_sts_enforce_testing_and_cache() {
    let dns = TestDns::start().await;
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.issuer.pem()).unwrap();
    let (https_port, smtp_port) = (free_port(), free_port());

    let domains = ["p.test", "q.test", "r.test", "t.test"];
    let names: Vec<String> = domains.iter().map(|d| format!("mta-sts.{d}")).collect();
    let (chain, key) = ca.leaf(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let policy = PolicyServer::start(&format!("127.0.0.6:{https_port}"), acceptor_for(chain, key)).await;
    // mx.bad.test presents a self-signed certificate, mx.good.test one from the test CA.
    let bad = Sink::start(&format!("127.0.0.7:{smtp_port}"), true).await;
    let (chain, key) = ca.leaf(&["mx.good.test"]);
    let good = Sink::start_with_cert(&format!("127.0.0.8:{smtp_port}"), chain, key).await;
    dns.a("mx.bad.test", "127.0.0.7".parse().unwrap());
    dns.a("mx.good.test", "127.0.0.8".parse().unwrap());
    for d in domains {
        dns.txt(&format!("_mta-sts.{d}"), "v=STSv1; id=1");
        dns.a(&format!("mta-sts.{d}"), "127.0.0.6".parse().unwrap());
    }
    dns.mx("p.test", 10, "mx.bad.test"); // enforce, allowed MX, certificate does not verify
    dns.mx("q.test", 10, "mx.good.test"); // enforce, allowed MX, verified
    dns.mx("r.test", 10, "mx.bad.test"); // enforce, MX not allowed
    dns.mx("t.test", 10, "mx.bad.test"); // testing, MX not allowed: counted, delivered
    policy.set("p.test", "enforce", "mx.bad.test");
    policy.set("q.test", "enforce", "*.good.test");
    policy.set("r.test", "enforce", "mx.elsewhere.test");
    policy.set("t.test", "testing", "mx.elsewhere.test");

    // require_valid_tls = false: only the enforce policy demands verified certificates (DLV-26).
    let extra = format!(
        "smtp_port = {smtp_port}\nhttps_port = {https_port}\ntry_https = false\nrequire_valid_tls = false\nextra_root_certs = \"{}\"",
        ca_path.display()
    );
    let (ctx, _lock) = context("_a.test", dir.path(), &dns, &extra);
    let sender = "mtasts123@_a.test";
    let acc = account(&ctx, sender).await;
    let enqueue = |d: &'static str| {
        let ctx = ctx.clone();
        async move {
            let blob = ctx
                .store
                .put_blob(bytes::Bytes::from(format!("From: <{sender}>\r\nTo: <u@{d}>\r\n\r\nx\r\n")))
                .await
                .unwrap();
            ctx.store
                .deliver(Delivery {
                    sender: sender.into(),
                    sender_account: Some(acc),
                    remote: vec![RemoteBatch { domain: d.into(), rcpts: vec![format!("u@{d}")] }],
                    remote_blob: Some(blob),
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    for d in domains {
        enqueue(d).await;
    }
    let task = tokio::spawn(relay::outbound::run(ctx.clone()));
    wait_for("all four attempted", 30, || async {
        let q = ctx.store.list_queue().await.unwrap();
        q.len() == 2 && q.iter().all(|e| e.attempts == 1)
    })
    .await;
    let q = ctx.store.list_queue().await.unwrap();
    let err = |d: &str| q.iter().find(|e| e.domain == d).map(|e| e.last_error.clone()).unwrap_or_default();
    assert!(
        err("p.test").starts_with("421 4.4.1 Failed to connect to any mail server; last attempt to mx.bad.test: TLS"),
        "{}",
        err("p.test")
    );
    assert_eq!(err("r.test"), "421 4.7.5 MTA-STS policy allows no usable MX for r.test", "DLV-30");
    assert_eq!(good.messages().len(), 1, "q.test delivered over verified TLS");
    let to_bad: Vec<_> = bad.messages().iter().flat_map(|m| m.rcpts.clone()).collect();
    assert_eq!(to_bad, ["u@t.test"], "testing mode delivers; enforce never used the unverified host");
    let metrics = ctx.metrics.render();
    assert!(metrics.contains("chatrelay_mta_sts_violations_total{mode=\"testing\"} 1"), "{metrics}");
    let cached = ctx.store.mta_sts_get("q.test").await.unwrap().expect("DLV-29 cached");
    assert_eq!(cached.policy_id, "1");
    assert!(ctx.store.mta_sts_get("_a.test").await.unwrap().is_none());

    // DLV-29: same id and fresh cache → no new fetch. DLV-32: TXT id changed but the policy host
    // is down → the cached (unexpired) policy still applies.
    let hits = policy.hits.load(Ordering::SeqCst);
    enqueue("q.test").await;
    wait_for("second q.test delivery", 20, || async { good.messages().len() == 2 }).await;
    assert_eq!(policy.hits.load(Ordering::SeqCst), hits, "policy served from cache");
    policy.task.abort();
    dns.set_txt("_mta-sts.r.test", "v=STSv1; id=2");
    let r2 = enqueue("r.test").await;
    let id = r2.queue_ids[0].clone();
    wait_for("r.test retried under cached policy", 20, || async {
        ctx.store.queue_entry(&id).await.unwrap().is_some_and(|e| e.attempts == 1)
    })
    .await;
    assert_eq!(
        ctx.store.queue_entry(&id).await.unwrap().unwrap().last_error,
        "421 4.7.5 MTA-STS policy allows no usable MX for r.test"
    );
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
}
