//! Issue 8 end to end: messages submitted over real SMTP (port 465) to a running relay wake the
//! in-process notifier through its `MessageStored` event; the proxy is the loopback stand-in of
//! `push_notify`.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::push_notify::{Proxy, jobs, token};

fn relay_with_token(proxy: &Proxy, rt: &tokio::runtime::Runtime, extra: &str) -> (Relay, String, String, String) {
    let relay = Relay::start(&format!("{extra}[push]\nnotify_url = \"{}\"\n", proxy.url()));
    let (alice, bob, tok) = (relay.new_address(), relay.new_address(), token());
    rt.block_on(create_account(&relay, &bob));
    rt.block_on(create_account(&relay, &alice));
    // The IMAP SETMETADATA path writes the same row (IMAP-36); the store call stands in for it.
    relay.with_store(async |s| {
        let acc = s.account_by_address(&bob).await.expect("read").expect("bob");
        s.add_push_token(acc.id, tok.clone()).await.expect("token");
    });
    (relay, alice, bob, tok)
}

/// PUSH-4, PUSH-5, PUSH-7: a submitted message is notified at once with the token as the body;
/// the sender's self-sent copy (bcc-self) produces no request.
#[test]
fn submitted_message_is_notified_self_copy_is_not() {
    let proxy = Proxy::start(&[], Duration::ZERO);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (relay, alice, bob, tok) = relay_with_token(&proxy, &rt, "");

    let sent = Instant::now();
    let r = rt.block_on(submit(&relay, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)));
    assert!(r.starts_with("250"), "{r}");
    let hits = proxy.wait_hits(1, Duration::from_secs(10));
    assert_eq!(hits.len(), 1, "one POST for the message:\n{}", relay.log());
    assert_eq!(hits[0].body, tok);
    println!("notification {:?} after the 250 reply's request was sent", hits[0].at - sent);

    // bob sends to himself (bcc-self): stored, not notified.
    std::thread::sleep(Duration::from_secs(2));
    let r = rt.block_on(submit(&relay, &bob, PASSWORD, &bob, &[&bob], &encrypted_eml(&bob, &bob)));
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(rt.block_on(inbox_messages(&relay, &bob)).len(), 2, "the self-sent copy is stored");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.hits().len(), 1, "no POST for the self-sent copy");
    assert_eq!(jobs(&relay), 0);
}

/// PUSH-13..15 over SMTP: 20 messages in one session give few requests, and the last message is
/// followed by a request that reached the proxy after its 250.
#[test]
fn smtp_burst_is_coalesced_and_last_message_notified() {
    let proxy = Proxy::start(&[], Duration::from_millis(200));
    let rt = tokio::runtime::Runtime::new().expect("rt");
    // Lift the send rate limit (SMTP-29) so the burst is not throttled.
    let extra = "max_user_send_per_minute = 1000\nmax_user_send_burst_size = 100\n";
    let (relay, alice, bob, tok) = relay_with_token(&proxy, &rt, extra);
    let last_ok = rt.block_on(async {
        let (mut c, r) = smtp_login(&relay, &alice, PASSWORD).await;
        assert!(r.starts_with("235"), "{r}");
        let mut at = Instant::now();
        for _ in 0..20 {
            let r = send_mail(&mut c, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
            assert!(r.starts_with("250"), "{r}");
            at = Instant::now();
        }
        at
    });
    assert!(
        wait_until(Duration::from_secs(10), || proxy.hits().iter().any(|h| h.at > last_ok)),
        "no request after the last message:\n{}",
        relay.log()
    );
    assert!(wait_until(Duration::from_secs(5), || jobs(&relay) == 0));
    let hits = proxy.hits();
    println!("20 SMTP messages -> {} requests", hits.len());
    assert!(hits.len() < 10, "coalesced: {}", hits.len());
    assert!(hits.iter().all(|h| h.body == tok));
}

/// PUSH-1, IMAP-36, PUSH-4: the whole path a Delta Chat device uses — SETMETADATA
/// /private/devicetoken over IMAP, then a message submitted over SMTP — ends in a POST with the
/// token; SETMETADATA NIL removes the token and later messages produce no request.
#[test]
fn imap_devicetoken_then_smtp_message_posts() {
    let proxy = Proxy::start(&[], Duration::ZERO);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let relay = Relay::start(&format!("[push]\nnotify_url = \"{}\"\n", proxy.url()));
    let (alice, bob, tok) = (relay.new_address(), relay.new_address(), token());
    rt.block_on(create_account(&relay, &alice));
    let imaps = relay.addr(relay.ports.imaps);
    let mut c = rt.block_on(async {
        let mut c = Lines::tls(&imaps).await;
        c.line().await;
        let r = c.imap("a", &format!("LOGIN {bob} {PASSWORD}")).await;
        assert!(r.last().is_some_and(|l| l.starts_with("a OK")), "{r:?}");
        let r = c.imap("b", &format!("SETMETADATA INBOX (/private/devicetoken \"{tok}\")")).await;
        assert!(r.last().is_some_and(|l| l.starts_with("b OK")), "{r:?}");
        c
    });
    let r = rt.block_on(submit(&relay, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)));
    assert!(r.starts_with("250"), "{r}");
    let hits = proxy.wait_hits(1, Duration::from_secs(10));
    assert_eq!(hits.len(), 1, "{}", relay.log());
    assert_eq!(hits[0].body, tok);

    rt.block_on(async {
        let r = c.imap("c", "SETMETADATA INBOX (/private/devicetoken NIL)").await;
        assert!(r.last().is_some_and(|l| l.starts_with("c OK")), "{r:?}");
    });
    std::thread::sleep(Duration::from_secs(2));
    let r = rt.block_on(submit(&relay, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)));
    assert!(r.starts_with("250"), "{r}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.hits().len(), 1, "no request once the token is removed");
}
