//! The queue scheduler on a real store with loopback MX sinks and the in-test DNS: delivery,
//! per-recipient deferral and bounces, the retry schedule, `queue_lifetime`, empty senders, and
//! the concurrency limits.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use relay::dkim::{Dkim, DkimVerdict};
use relay::store::{Delivery, RemoteBatch};

use crate::delivery_sink::Sink;
use crate::delivery_units::{PEER, account, context, inbox, msg, publish_key, wait_for};
use crate::dns_server::TestDns;

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
                RemoteBatch {
                    domain: "_s.test".into(),
                    rcpts: vec!["ok@_s.test".into(), "bounce@_s.test".into(), "later@_s.test".into()],
                },
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
    for needle in [
        "MAILER-DAEMON@_a.test",
        "Auto-Submitted: auto-replied",
        "multipart/report",
        "report-type=\"delivery-status\"",
        "message/delivery-status",
        "text/rfc822-headers",
        "550 5.1.1",
        "Status: 5.1.1",
        "DKIM-Signature:",
    ] {
        assert!(b_s.contains(needle), "bounce lacks {needle}:\n{b_s}");
    }
    assert!(!b_s.contains("later@_s.test"), "deferred recipient is not bounced");
    let b_null = bounces.iter().find(|b| b.contains("x@_null.test")).expect("null MX bounce");
    assert!(b_null.contains("556 5.1.10 Permanent failure: Recipient address has null MX"));

    // The 451 recipient stays queued with the DLV-5 first retry delay. Bounces are stored before
    // the attempt is recorded, so wait for the record.
    wait_for("the attempt recorded", 10, || async {
        ctx.store.list_queue().await.unwrap().iter().all(|e| e.attempts >= 1)
    })
    .await;
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
    wait_for("second attempt", 20, || async {
        ctx.store.queue_entry(&id).await.unwrap().is_some_and(|e| e.attempts == 2)
    })
    .await;
    let e = ctx.store.queue_entry(&id).await.unwrap().unwrap();
    assert!((300..=340).contains(&(e.next_attempt - relay::store::now_secs())), "second retry in ~5 m");
    assert!(ctx.store.queue_drop(&id).await.unwrap());
    assert!(ctx.store.list_queue().await.unwrap().is_empty());
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
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
        ctx.store
            .list_queue()
            .await
            .unwrap()
            .iter()
            .any(|e| e.attempts == 1 && e.last_error == "421 4.4.3 DNS resolution failed for _down.test")
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
            .deliver(Delivery {
                sender: sender.into(),
                sender_account: Some(acc),
                remote: vec![RemoteBatch { domain: "_slow.test".into(), rcpts }],
                remote_blob: Some(blob),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let blob = ctx.store.put_blob(m.clone().into()).await.unwrap();
    ctx.store
        .deliver(Delivery {
            sender: sender.into(),
            sender_account: Some(acc),
            remote: vec![RemoteBatch { domain: "_fast.test".into(), rcpts: vec!["v@_fast.test".into()] }],
            remote_blob: Some(blob),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let task = tokio::spawn(relay::outbound::run(ctx.clone()));
    wait_for("fast domain delivered", 10, || async { !fast.messages().is_empty() }).await;
    let slow_done = slow.messages().len();
    assert!(slow_done < 10, "the fast domain did not wait for the slow one ({slow_done} slow done)");
    wait_for("slow domain drained", 30, || async { slow.messages().len() == 10 }).await;
    println!(
        "10 slow deliveries in {:?}, max parallel {}",
        started.elapsed(),
        slow.max_active.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert_eq!(slow.max_active.load(std::sync::atomic::Ordering::SeqCst), 4, "DLV-8: 4 per domain");
    wait_for("queue empty", 10, || async { ctx.store.list_queue().await.unwrap().is_empty() }).await;
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
