//! Mail delivered by SMTP submission wakes an idling IMAP session; account deletion closes
//! sessions; IMAP over port 443 with ALPN `imap`.

use std::time::Instant;

use crate::fixtures::encrypted_eml;
use crate::harness::*;
use crate::imap_helpers::{assert_ok, last, login, read_literal, wait_line};

#[tokio::test]
async fn imap_idle_wakes_on_smtp_delivery() {
    let relay = Relay::start("");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &alice).await;
    let mut b = login(&relay, &bob).await;
    assert_ok(&b.imap("s", "SELECT INBOX").await);
    b.send("i IDLE").await;
    assert_eq!(b.line().await.as_deref(), Some("+ idling"));

    let (mut smtp, r) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(r.starts_with("235"), "{r}");
    let eml = encrypted_eml(&alice, &bob);
    // Read IMAP in its own task so the arrival time of EXISTS is taken when it arrives.
    let reader = tokio::spawn(async move {
        let (l, _) = wait_line(&mut b, |l| l.ends_with(" EXISTS")).await;
        (b, l, Instant::now())
    });
    let t = Instant::now();
    let reply = send_mail(&mut smtp, &alice, &[&bob], &eml).await;
    let ok_at = Instant::now();
    assert!(reply.starts_with("250"), "{reply}");
    let (mut b, l, exists_at) = reader.await.expect("io");
    assert_eq!(l, "* 1 EXISTS");
    let rel = if exists_at >= ok_at {
        format!("{:?} after", exists_at - ok_at)
    } else {
        format!("{:?} before", ok_at - exists_at)
    };
    println!(
        "SMTP→IDLE: 250 after {:?}, EXISTS after {:?}: EXISTS arrived {rel} the 250 (the commit precedes both)",
        ok_at - t,
        exists_at - t
    );
    b.send("DONE").await;
    assert_eq!(last(&b.until_tag("i").await), "i OK IDLE terminated");

    let stored = inbox_messages(&relay, &bob).await;
    assert_eq!(stored.len(), 1);
    b.send("f UID FETCH 1 (BODY.PEEK[] RFC822.SIZE)").await;
    let head = b.line().await.expect("line");
    assert!(head.contains("BODY[] {"), "{head}");
    assert_eq!(read_literal(&mut b, &head).await, stored[0], "BODY[] is exactly the stored bytes");
    assert_eq!(last(&b.until_tag("f").await), "f OK Fetch completed.");
}

#[tokio::test]
async fn imap_account_deletion_closes_sessions() {
    let relay = Relay::start("");
    let email = relay.new_address();
    let mut idling = login(&relay, &email).await;
    assert_ok(&idling.imap("s", "SELECT INBOX").await);
    idling.send("i IDLE").await;
    assert_eq!(idling.line().await.as_deref(), Some("+ idling"));
    let mut waiting = login(&relay, &email).await;
    let a = relay.addr(relay.ports.https);
    let body = serde_json::json!({"email": email, "password": PASSWORD}).to_string();
    let r =
        https_req(&a, "POST", "/account/delete", &a, &[("Content-Type", "application/json")], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(idling.line().await.as_deref(), Some("* BYE Account deleted"));
    assert!(idling.line().await.is_none());
    assert_eq!(waiting.line().await.as_deref(), Some("* BYE Account deleted"));
    assert!(waiting.line().await.is_none());
}

#[tokio::test]
async fn imap_on_443_with_alpn() {
    let relay = Relay::start("");
    let email = relay.new_address();
    let mut c = Lines::tls_alpn(&relay.addr(relay.ports.https), &[b"imap"]).await;
    let g = c.line().await.expect("line");
    assert!(g.starts_with("* OK [CAPABILITY IMAP4rev1") && g.contains("AUTH=PLAIN"), "{g}");
    let r = c.imap("a", &format!("LOGIN {email} {PASSWORD}")).await;
    assert!(last(&r).starts_with("a OK"), "{r:?}");
}

/// Deliveries are shown from their commit events when nothing else changed in between; a flag
/// change by another session between two deliveries must still reach this session, in order,
/// with the right sequence numbers, whether it was idling or between commands.
#[tokio::test]
async fn imap_deliveries_and_flag_changes_interleave() {
    let relay = Relay::start("");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &alice).await;
    let mut b = login(&relay, &bob).await;
    let mut other = login(&relay, &bob).await;
    assert_ok(&b.imap("s", "SELECT INBOX").await);
    assert_ok(&other.imap("s", "SELECT INBOX").await);
    let (mut smtp, r) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(r.starts_with("250") || r.starts_with("235"), "{r}");
    let eml = encrypted_eml(&alice, &bob);
    // Between commands: delivery, flag change by the other session, delivery.
    deliver(&mut smtp, &alice, &bob, &eml).await;
    let r = b.imap("n0", "NOOP").await;
    assert!(r.iter().any(|l| l == "* 1 EXISTS"), "{r:?}");
    assert_ok(&other.imap("o1", "NOOP").await);
    assert_ok(&other.imap("st", "UID STORE 1 +FLAGS (\\Flagged)").await);
    deliver(&mut smtp, &alice, &bob, &eml).await;
    let r = b.imap("n", "NOOP").await;
    assert_ok(&r);
    assert!(r.iter().any(|l| l == "* 2 EXISTS"), "{r:?}");
    assert!(r.iter().any(|l| l.starts_with("* 1 FETCH (UID 1 FLAGS (\\Flagged")), "flag change shown: {r:?}");
    let r = b.imap("f", "UID FETCH 1:* (UID FLAGS)").await;
    assert!(r.iter().any(|l| l.starts_with("* 2 FETCH (UID 2 FLAGS (")), "{r:?}");

    // In IDLE: a flag change, then a delivery; EXISTS must come and the flags must be right.
    b.send("i IDLE").await;
    assert_eq!(b.line().await.as_deref(), Some("+ idling"));
    assert_ok(&other.imap("o2", "NOOP").await);
    assert_ok(&other.imap("st2", "UID STORE 2 +FLAGS (\\Seen)").await);
    let (l, _) = wait_line(&mut b, |l| l.starts_with("* 2 FETCH")).await;
    assert!(l.contains("\\Seen"), "{l}");
    deliver(&mut smtp, &alice, &bob, &eml).await;
    let (l, _) = wait_line(&mut b, |l| l.ends_with(" EXISTS")).await;
    assert_eq!(l, "* 3 EXISTS");
    b.send("DONE").await;
    assert_eq!(last(&b.until_tag("i").await), "i OK IDLE terminated");
    let r = b.imap("f2", "FETCH 1:* (UID FLAGS)").await;
    assert_ok(&r);
    let fetched: Vec<_> = r.iter().filter(|l| l.contains(" FETCH (")).collect();
    assert_eq!(fetched.len(), 3, "{r:?}");
    assert!(fetched[0].contains("UID 1") && fetched[0].contains("\\Flagged"), "{r:?}");
    assert!(fetched[1].contains("UID 2") && fetched[1].contains("\\Seen"), "{r:?}");
    assert!(fetched[2].starts_with("* 3 FETCH") && fetched[2].contains("UID 3"), "{r:?}");
}

async fn deliver(smtp: &mut Lines, from: &str, to: &str, eml: &str) {
    let reply = send_mail(smtp, from, &[to], eml).await;
    assert!(reply.starts_with("250"), "{reply}");
}
