//! The real binary: a queued message survives `kill -9` and is delivered after restart (DLV-3),
//! `chatrelay queue list|retry|drop` (OPS-20), and the relayed message is DKIM-signed (DLV-34).
//! The remote MX is a loopback SMTP sink found through the in-test DNS server.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use relay::dkim::{Dkim, DkimVerdict};
use relay::store::{CreateOutcome, Delivery, RemoteBatch, Store};

use crate::delivery_sink::Sink;
use crate::dns_server::TestDns;
use crate::harness::{Ports, Relay, free_port};

fn queue_lines(r: &Relay) -> Vec<String> {
    let (code, out, err) = r.cli(&["queue", "list"]);
    assert_eq!(code, 0, "queue list failed: {err}");
    out.lines().map(str::to_string).collect()
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_message_survives_kill9_and_is_delivered_after_restart() {
    let dns = TestDns::start().await;
    let sink_port = free_port();
    dns.mx("_s.test", 10, "mx.s.test");
    dns.a("mx.s.test", "127.0.0.5".parse().unwrap());
    let extra = format!(
        "[push]\nnotify_url = \"\"\n[delivery]\nresolver = \"{}\"\nsmtp_port = {sink_port}\ntry_https = false\n",
        dns.resolver()
    );
    let mut a = Relay::prepare("_a.test", "127.0.0.2", Ports::new(), &extra);
    let sender = "sendr1234@_a.test";
    let message = format!(
        "From: <{sender}>\r\nTo: <rcpt@_s.test>\r\nSubject: [...]\r\nMessage-ID: <k9@_a.test>\r\nContent-Type: text/plain\r\n\r\nsurvives kill -9\r\n"
    );
    {
        // Accepted before the crash: the entry is durable in A's data_dir (SMTP-48, DLV-1).
        let store = Store::open(&a.data_dir()).unwrap();
        let acc = match store.create_account(sender, "x".into(), b"t".to_vec()).await.unwrap() {
            CreateOutcome::Created(a) => a.id,
            other => panic!("{other:?}"),
        };
        let blob = store.put_blob(message.clone().into_bytes().into()).await.unwrap();
        store
            .deliver(Delivery {
                sender: sender.into(),
                sender_account: Some(acc),
                remote: vec![RemoteBatch { domain: "_s.test".into(), rcpts: vec!["rcpt@_s.test".into()] }],
                remote_blob: Some(blob),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    a.spawn();
    // The MX is down: the first attempt (made at once, DLV-3) is deferred.
    wait_until("deferred first attempt", 20, || {
        queue_lines(&a).iter().any(|l| {
            l.contains("\t1\tin ")
                && l.contains("421 4.4.1 Failed to connect to any mail server; last attempt to mx.s.test")
        })
    })
    .await;
    let line = queue_lines(&a).remove(0);
    println!("queue list: {line}");
    let cols: Vec<&str> = line.split('\t').collect();
    assert_eq!(cols.len(), 8, "OPS-20 columns: {line}");
    assert_eq!((cols[2], cols[3], cols[4], cols[5]), (sender, "_s.test", "1", "1"));
    let id = cols[0].to_string();

    a.kill9();
    let sink = Sink::start(&format!("127.0.0.5:{sink_port}"), true).await;
    assert_eq!(queue_lines(&a).len(), 1, "entry survived kill -9");
    let (code, _, err) = a.cli(&["queue", "retry", "nosuchid"]);
    assert_eq!(code, 1, "unknown id: {err}");
    let (code, out, _) = a.cli(&["queue", "retry", &id]);
    assert_eq!(code, 0);
    assert!(out.contains("due now"));
    let key = relay::dkim::Signer::load(&a.data_dir().join("dkim.pem"), "_a.test", "dkim").unwrap();
    dns.dkim("dkim", "_a.test", &key.public_key_b64());

    let restarted = Instant::now();
    a.spawn();
    wait_until("delivery after restart", 20, || !sink.messages().is_empty()).await;
    println!("delivered {:?} after restart", restarted.elapsed());
    let got = sink.messages().remove(0);
    assert_eq!(got.rcpts, ["rcpt@_s.test"]);
    assert_eq!(got.mail_from, sender);
    assert!(String::from_utf8_lossy(&got.data).ends_with(&message), "body unchanged after the signature");
    let cfg = relay::config::load_str(
        &format!("mail_domain = \"_x.test\"\n[delivery]\nresolver = \"{}\"\n", dns.resolver()),
        "t",
    )
    .unwrap();
    assert_eq!(Dkim::new(&cfg).verify(&got.data, "_a.test", "127.0.0.2".parse().unwrap()).await, DkimVerdict::Pass);
    wait_until("queue empty", 10, || queue_lines(&a).is_empty()).await;
    assert!(a.log().contains("250 OK (SMTP)"), "delivery result logged");
    assert_eq!(a.stop(), Some(0));

    // `queue drop` removes an entry without a bounce.
    let store = Store::open(&a.data_dir()).unwrap();
    let blob = store.put_blob(bytes::Bytes::from_static(b"From: <x@_a.test>\r\n\r\nx\r\n")).await.unwrap();
    let r = store
        .deliver(Delivery {
            sender: sender.into(),
            remote: vec![RemoteBatch { domain: "_s.test".into(), rcpts: vec!["later@_s.test".into()] }],
            remote_blob: Some(blob),
            ..Default::default()
        })
        .await
        .unwrap();
    let (code, out, _) = a.cli(&["queue", "drop", &r.queue_ids[0]]);
    assert_eq!(code, 0, "{out}");
    assert!(queue_lines(&a).is_empty());
}
