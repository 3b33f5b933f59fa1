//! Issue 31, items 3 and 8 (outbound): one recipient never decides for another over `/mxdeliv`
//! (DLV-20a), with two real relays; and an HTTPS 400 whose body says `250 OK` is not a delivery.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use relay::store::{Delivery, RemoteBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::delivery_sink::Sink;
use crate::delivery_units::{account, context, inbox, msg, publish_key, wait_for};
use crate::dns_server::TestDns;
use crate::harness::*;

fn extra(dns: &TestDns, ports: &Ports) -> String {
    format!(
        "[push]\nnotify_url = \"\"\n[delivery]\nresolver = \"{}\"\nsmtp_port = {}\nhttps_port = {}\n",
        dns.resolver(),
        ports.smtp,
        ports.https
    )
}

async fn inbox_of(r: &Relay, addr: &str) -> Vec<String> {
    crate::harness::inbox_messages(r, addr).await.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
}

/// Item 3: a message from A to an existing and an unknown user at B. B answers the batch with
/// the unknown user's 550; A then asks for each recipient alone, so the existing one gets the
/// message and only the unknown one bounces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unknown_recipient_does_not_fail_the_other() {
    let dns = TestDns::start().await;
    let ports = Ports::new();
    for (d, host, ip) in [("_a.test", "mx.a.test", "127.0.0.2"), ("_b.test", "mx.b.test", "127.0.0.3")] {
        dns.mx(d, 10, host);
        dns.a(host, ip.parse().unwrap());
    }
    let a = Relay::start_with_ports("_a.test", "127.0.0.2", ports, &extra(&dns, &ports));
    let b = Relay::start_with_ports("_b.test", "127.0.0.3", ports, &extra(&dns, &ports));
    for r in [&a, &b] {
        let s = relay::dkim::Signer::load(&r.data_dir().join("dkim.pem"), &r.domain, "dkim").unwrap();
        dns.dkim("dkim", &r.domain, &s.public_key_b64());
    }
    let ua = format!("{}@_a.test", random_local());
    let (known, unknown) = (format!("{}@_b.test", random_local()), format!("{}@_b.test", random_local()));
    create_account(&b, &known).await;
    let eml = encrypted_eml(&ua, &known).replace(&format!("To: <{known}>"), &format!("To: <{known}>, <{unknown}>"));
    let started = Instant::now();
    let rep = submit(&a, &ua, PASSWORD, &ua, &[&known, &unknown], &eml).await;
    assert!(rep.starts_with("250"), "{rep}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = inbox_of(&b, &known).await.len();
        let bounces = inbox_of(&a, &ua).await;
        if got == 1 && bounces.len() == 1 {
            println!("known delivered and unknown bounced after {:?}", started.elapsed());
            assert!(bounces[0].contains(&unknown), "{}", bounces[0]);
            assert!(!bounces[0].contains(&format!("Final-Recipient: rfc822; {known}")), "{}", bounces[0]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "known has {got} messages, sender {} bounces\nA log:\n{}",
            bounces.len(),
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbox_of(&a, &ua).await.len(), 1, "exactly one bounce, for the unknown user only");
}

/// Item 8: a peer whose `/mxdeliv` answers 400 with the body `250 OK` has not taken the
/// message; it is "no HTTPS here" (DLV-20), so the message goes by SMTP to the same host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_400_with_250_body_is_not_delivered() {
    let dns = TestDns::start().await;
    let sink = Sink::start("127.0.0.5:0", true).await;
    // The fake /mxdeliv on the same host: TLS, any request, 400 "250 OK".
    let https = tokio::net::TcpListener::bind("127.0.0.5:0").await.unwrap();
    let https_port = https.local_addr().unwrap().port();
    let posts = Arc::new(AtomicUsize::new(0));
    let p = posts.clone();
    let ck = rcgen::generate_simple_self_signed(vec!["mx.p.test".to_string()]).unwrap();
    let acceptor = crate::delivery_sink::acceptor_for(
        vec![rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec())],
        ck.signing_key.serialize_der(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = https.accept().await else { return };
            let (acceptor, p) = (acceptor.clone(), p.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                p.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 6\r\nConnection: close\r\n\r\n250 OK")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    dns.mx("_p.test", 10, "mx.p.test");
    dns.a("mx.p.test", "127.0.0.5".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("smtp_port = {}\nhttps_port = {https_port}\ntry_https = true", sink.addr.port());
    let (ctx, _lock) = context("_a.test", dir.path(), &dns, &extra);
    publish_key(&dns, "_a.test", &dir.path().join("data/dkim.pem"));
    let sender = "sender123@_a.test";
    let acc = account(&ctx, sender).await;
    let blob = ctx.store.put_blob(msg(sender, "x@_p.test").into()).await.unwrap();
    ctx.store
        .deliver(Delivery {
            sender: sender.into(),
            sender_account: Some(acc),
            remote: vec![RemoteBatch { domain: "_p.test".into(), rcpts: vec!["x@_p.test".into()] }],
            remote_blob: Some(blob),
            ..Default::default()
        })
        .await
        .unwrap();
    let task = tokio::spawn(relay::outbound::run(ctx.clone()));
    wait_for("the SMTP fallback", 20, || async { !sink.messages().is_empty() }).await;
    assert_eq!(posts.load(Ordering::SeqCst), 1, "HTTPS was tried first");
    assert_eq!(sink.messages()[0].rcpts, ["x@_p.test"]);
    assert!(inbox(&ctx, acc).await.is_empty(), "no bounce");
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
