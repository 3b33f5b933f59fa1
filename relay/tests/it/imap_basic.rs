//! IMAP end to end with a raw line client over real TLS: create-on-login, capabilities,
//! APPEND → IDLE wake-up, FETCH BODY[] exactness, multi-session EXPUNGE, STARTTLS rules.

use std::time::Instant;

use crate::harness::{Lines, PASSWORD, Relay};
use crate::imap_helpers::*;

#[tokio::test]
async fn imap_first_login_creates_and_capabilities() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    let g = c.line().await.expect("line");
    assert!(g.contains("XCHATMAIL") && g.contains("AUTH=PLAIN") && g.ends_with("chat.test ready."), "{g}");
    assert!(g.contains("XDELTAPUSH"), "push is on by default: {g}");
    let r = c.imap("a", &format!("LOGIN {addr} {PASSWORD}")).await;
    assert!(last(&r).starts_with("a OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT QUOTA METADATA COMPRESS=DEFLATE XCHATMAIL XDELTAPUSH]"), "{r:?}");
    let r = c.imap("b", "CAPABILITY").await;
    assert!(r[0].starts_with("* CAPABILITY ") && r[0].contains("XCHATMAIL"), "{r:?}");
    let r = c.imap("c", "SELECT INBOX").await;
    assert_ok(&r);
    assert!(r.iter().any(|l| l == "* 0 EXISTS"), "{r:?}");
    assert!(r.iter().any(|l| l.starts_with("* OK [UIDVALIDITY ")), "{r:?}");
    let r = c.imap("d", "ID (\"name\" \"test\")").await;
    assert_eq!(r[0], "* ID (\"name\" \"chatrelay\")");
    let r = c.imap("e", "NAMESPACE").await;
    assert_eq!(r[0], "* NAMESPACE ((\"\" \"/\")) NIL NIL");
    let r = c.imap("f", "FOO").await;
    assert!(last(&r).starts_with("f BAD"), "{r:?}");
    c.imap("z", "LOGOUT").await;
    // The account exists now: the same password logs in, another one does not.
    let mut c = login(&relay, &addr).await;
    c.imap("z", "LOGOUT").await;
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    c.line().await;
    let t = Instant::now();
    let r = c.imap("a", &format!("LOGIN {addr} wrong-password-123")).await;
    assert_eq!(last(&r), "a NO [AUTHENTICATIONFAILED] Authentication failed.");
    println!("failed login answered after {:?}", t.elapsed());
    // Three failures end the connection (IMAP-46).
    c.imap("b", &format!("LOGIN {addr} wrong-password-123")).await;
    let r = c.imap("c", &format!("LOGIN {addr} wrong-password-123")).await;
    assert_eq!(last(&r), "c NO [AUTHENTICATIONFAILED] Authentication failed.");
    assert_eq!(c.line().await.as_deref(), Some("* BYE Too many authentication failures"));
    assert!(c.line().await.is_none(), "connection closed");

    // With push off, XDELTAPUSH is not advertised (IMAP-8).
    let relay = Relay::start("[push]\nnotify_url = \"\"\n");
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    let g = c.line().await.expect("line");
    assert!(g.contains("XCHATMAIL") && !g.contains("XDELTAPUSH"), "{g}");
}

#[tokio::test]
async fn imap_idle_exists_and_fetch_exact_bytes() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut a = login(&relay, &addr).await;
    assert_ok(&a.imap("s", "SELECT INBOX").await);
    a.send("i IDLE").await;
    assert_eq!(a.line().await.expect("line"), "+ idling");

    let mut b = login(&relay, &addr).await;
    let msg = sample_message(&addr, &addr, "hello \u{e4} exact bytes\r\n.with dot\r\n");
    let t = Instant::now();
    let r = append(&mut b, "p", "INBOX", "(\\Seen)", &msg).await;
    let appended = t.elapsed();
    assert!(last(&r).starts_with("p OK [APPENDUID "), "{r:?}");
    let (l, _) = wait_line(&mut a, |l| l.ends_with(" EXISTS")).await;
    println!("IDLE: EXISTS {:?} after APPEND was sent ({appended:?} until APPEND's OK)", t.elapsed());
    assert_eq!(l, "* 1 EXISTS");
    a.send("DONE").await;
    let r = a.until_tag("i").await;
    assert_eq!(last(&r), "i OK IDLE terminated");

    a.send("f UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[])").await;
    let head = a.line().await.expect("line");
    assert!(head.starts_with("* 1 FETCH (") && head.contains(&format!("RFC822.SIZE {}", msg.len())), "{head}");
    let body = read_literal(&mut a, &head).await;
    assert_eq!(body, msg, "BODY[] must be the stored bytes");
    let r = a.until_tag("f").await;
    assert_eq!(last(&r), "f OK Fetch completed.");
    // Ranges beyond the last UID still answer OK (IMAP-10).
    let r = a.imap("g", "UID FETCH 5:9 (UID FLAGS)").await;
    assert_ok(&r);
    let r = a.imap("h", "UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])").await;
    assert!(r[0].contains("BODY[HEADER.FIELDS (SUBJECT FROM)]"), "{r:?}");
}

#[tokio::test]
async fn imap_expunge_seen_by_other_session() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut a = login(&relay, &addr).await;
    let mut b = login(&relay, &addr).await;
    for i in 0..3 {
        let r = append(&mut a, &format!("p{i}"), "INBOX", "()", &sample_message(&addr, &addr, "x")).await;
        assert_ok(&r);
    }
    assert_ok(&a.imap("s", "SELECT INBOX").await);
    let r = b.imap("s", "SELECT INBOX").await;
    assert!(r.iter().any(|l| l == "* 3 EXISTS"), "{r:?}");
    let r = a.imap("t", "UID STORE 2 +FLAGS (\\Deleted)").await;
    assert!(r[0].contains("FLAGS (\\Deleted"), "{r:?}");
    // STORE flags show up in b; FETCH does not get EXPUNGE (IMAP-26).
    let r = a.imap("x", "EXPUNGE").await;
    assert!(r.contains(&"* 2 EXPUNGE".to_string()), "{r:?}");
    let r = b.imap("f", "FETCH 1:* (UID)").await;
    assert!(!r.iter().any(|l| l.ends_with("EXPUNGE")), "no EXPUNGE during FETCH: {r:?}");
    let r = b.imap("n", "NOOP").await;
    assert!(r.contains(&"* 2 EXPUNGE".to_string()), "{r:?}");
    // Fetching an expunged UID returns nothing, still OK (IMAP-27).
    let r = b.imap("u", "UID FETCH 2 (FLAGS)").await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_ok(&r);
    // Delta Chat's delete: +FLAGS \Deleted then CLOSE.
    assert_ok(&b.imap("d", "UID STORE 1 +FLAGS (\\Deleted)").await);
    assert_ok(&b.imap("c", "CLOSE").await);
    let r = a.imap("n2", "NOOP").await;
    assert!(r.contains(&"* 1 EXPUNGE".to_string()), "{r:?}");
}

#[tokio::test]
async fn imap_starttls_rules_on_143() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = Lines::plain(&relay.addr(relay.ports.imap)).await;
    let g = c.line().await.expect("line");
    assert!(g.contains("STARTTLS") && g.contains("LOGINDISABLED") && !g.contains("AUTH="), "{g}");
    let r = c.imap("a", &format!("LOGIN {addr} {PASSWORD}")).await;
    assert_eq!(last(&r), "a NO [PRIVACYREQUIRED] Login requires TLS.");
    let r = c.imap("b", "AUTHENTICATE PLAIN").await;
    assert_eq!(last(&r), "b NO [PRIVACYREQUIRED] Login requires TLS.");
    let r = c.imap("c", "STARTTLS").await;
    assert_eq!(last(&r), "c OK Begin TLS negotiation now.");
    let mut c = c.starttls().await;
    let r = c.imap("d", "CAPABILITY").await;
    assert!(r[0].contains("AUTH=PLAIN") && !r[0].contains("STARTTLS"), "{r:?}");
    let r = c.imap("e", &format!("LOGIN {addr} {PASSWORD}")).await;
    assert!(last(&r).starts_with("e OK"), "{r:?}");
}
