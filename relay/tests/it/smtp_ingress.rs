//! Issue 3: MX ingress on port 25 against the real binary over real TLS.

use crate::dns_server::SigningDomain;
use crate::harness::*;

async fn mx(relay: &Relay) -> Lines {
    let mut c = Lines::plain(&relay.addr(relay.ports.smtp)).await;
    assert_eq!(c.reply().await, "220 chat.test ESMTP");
    let ehlo = c.cmd("EHLO mx.remote.test").await;
    assert_eq!(
        ehlo,
        "250-chat.test\n250-PIPELINING\n250-SIZE 31457280\n250-ENHANCEDSTATUSCODES\n250-8BITMIME\n250-SMTPUTF8\n250 STARTTLS"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await, "530 5.7.0 Must issue a STARTTLS command first");
    assert_eq!(c.cmd("AUTH PLAIN AGFAYg==").await, "503 5.5.1 Error: authentication not enabled");
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let mut c = c.starttls().await;
    let ehlo = c.cmd("EHLO mx.remote.test").await;
    assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"), "{ehlo}");
    c
}

/// remote.test signs its mail; the relay verifies through remote.test's DNS (SMTP-42). Returns
/// both and `N` local accounts created over SMTP.
async fn remote_and_relay<const N: usize>() -> (SigningDomain, Relay, [String; N]) {
    let remote = SigningDomain::start("remote.test").await;
    let relay = Relay::start(&remote.resolver_toml());
    let mut users = Vec::new();
    for _ in 0..N {
        let user = relay.new_address();
        create_account(&relay, &user).await;
        users.push(user);
    }
    (remote, relay, users.try_into().expect("N users"))
}

#[tokio::test]
async fn ingress_rules() {
    let (remote, relay, [bob]) = remote_and_relay().await;
    let mut c = mx(&relay).await;
    assert_eq!(c.cmd("MAIL FROM:<alice@remote.test>").await, "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<x@other.example>").await, "554 5.7.1 <x@other.example>: Relay access denied");
    let ghost = relay.new_address();
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{ghost}>")).await,
        format!("550 5.1.1 <{ghost}>: Recipient address rejected: User unknown")
    );
    assert_eq!(c.cmd("VRFY whoever").await, "252 2.0.0 whoever");
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");

    let r = send_mail(
        &mut c,
        "alice@remote.test",
        &[&bob],
        &format!("From: alice@remote.test\r\nTo: {bob}\r\n\r\nplain\r\n"),
    )
    .await;
    assert_eq!(r, "523 Encryption Needed: Invalid Unencrypted Mail");
    let forged = encrypted_eml("mallory@remote.test", &bob);
    let r = send_mail(&mut c, "alice@remote.test", &[&bob], &forged).await;
    assert_eq!(r, "500 Invalid FROM mallory@remote.test for alice@remote.test");
    let eml = remote.sign(&encrypted_eml("alice@remote.test", &bob)).replace(
        "Subject: [...]\r\n",
        "Subject: [...]\r\nDKIM-Signature: v=1; d=remote.test\r\nReceived: from a by b\r\n",
    );
    let r = send_mail(&mut c, "alice@remote.test", &[&bob], &eml).await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "{r}");
    // Bounces: empty reverse path, the From check skipped, the bounce exception applies.
    let bounce = remote.sign(&crate::fixtures::load("mailer-daemon").replace(crate::fixtures::TO, &bob));
    let r = send_mail(&mut c, "", &[&bob], &bounce).await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "{r}");
    let stored = inbox_messages(&relay, &bob).await;
    assert_eq!(stored.len(), 2);
    let first = String::from_utf8_lossy(&stored[0]);
    assert!(!first.contains("DKIM-Signature") && !first.contains("Received:"), "SMTP-46: {first}");
    assert!(first.contains("-----BEGIN PGP MESSAGE-----"));
}

#[tokio::test]
async fn cleartext_only_when_every_recipient_allows_it() {
    let (remote, relay, [bob, carol]) = remote_and_relay().await;
    {
        let store = relay::store::Store::open(&relay.data_dir()).expect("store");
        let acc = store.account_by_address(&bob).await.expect("read").expect("bob");
        store.set_cleartext(acc.id, true).await.expect("allow cleartext");
    }
    let mut c = mx(&relay).await;
    let plain = |to: &str| format!("From: alice@remote.test\r\nTo: {to}\r\n\r\nplain\r\n");
    let r = send_mail(&mut c, "alice@remote.test", &[&bob, &carol], &plain(&bob)).await;
    assert_eq!(r, "523 Encryption Needed: Invalid Unencrypted Mail", "carol does not allow cleartext");
    let r = send_mail(&mut c, "alice@remote.test", &[&bob], &remote.sign(&plain(&bob))).await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "{r}");
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 1);
    assert!(inbox_messages(&relay, &carol).await.is_empty());
}

/// SMTP-25: a bare-LF dot line does not end the data, so no second message can be smuggled.
#[tokio::test]
async fn no_smuggling_through_bare_lf() {
    let (remote, relay, [bob]) = remote_and_relay().await;
    let mut c = mx(&relay).await;
    assert_eq!(c.cmd("MAIL FROM:<alice@remote.test>").await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354"));
    // Signed as the relay will store it (bare LF read as CRLF, SMTP-25), then sent with bare LFs.
    let eml = encrypted_eml("alice@remote.test", &bob).replace("\r\n", "\n");
    let content =
        format!("{eml}\n.\nMAIL FROM:<evil@remote.test>\nRCPT TO:<{bob}>\nDATA\nFrom: evil@remote.test\n\nhi\n");
    // The lone "." line arrives dot-unstuffed (an empty line); the signature covers that.
    let stored = content.replace("\n.\n", "\n\n");
    let smuggled = format!("{}{content}\r\n.\r\n", remote.header(&stored).replace("\r\n", "\n"));
    c.send_raw(smuggled.as_bytes()).await;
    let r = c.reply().await;
    assert!(!r.starts_with("354") && !r.starts_with("250 2.1"), "one DATA, one reply: {r}");
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK", "nothing else was pipelined");
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 1, "exactly one message");
}
