//! Issue 3: submission on 465 and 587 against the real binary over real TLS.

use crate::harness::*;

fn plain_eml(from: &str, to: &str) -> String {
    format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: hi\r\n\r\nhello in cleartext\r\n")
}

#[tokio::test]
async fn encrypted_is_stored_plain_is_refused() {
    let relay = Relay::start("");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;

    let r = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &plain_eml(&alice, &bob)).await;
    assert_eq!(r, "523 Encryption Needed: Invalid Unencrypted Mail");

    // SMTP-45 headers added by a client are removed, Subject rewritten, SMTP-46 for storage.
    let eml = encrypted_eml(&alice, &bob).replace(
        "Subject: [...]\r\n",
        "Subject: secret subject\r\nReceived: from phone by x\r\nUser-Agent: DC\r\nX-Mailer: m\r\nDKIM-Signature: v=1; b=x\r\n",
    );
    let r = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &eml).await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "{r}");
    let stored = inbox_messages(&relay, &bob).await;
    assert_eq!(stored.len(), 1, "exactly the encrypted message is in bob's INBOX");
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("-----BEGIN PGP MESSAGE-----"), "{text}");
    assert!(text.contains("Subject: [...]\r\n") && !text.contains("secret subject"));
    for h in ["Received:", "User-Agent:", "X-Mailer:", "DKIM-Signature:"] {
        assert!(!text.contains(h), "{h} removed: {text}");
    }
    assert!(text.contains(&format!("From: <{alice}>")));
}

#[tokio::test]
async fn sender_checks() {
    let relay = Relay::start("");
    let (alice, bob, carol) = (relay.new_address(), relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;
    // From header is someone else: 500 (ref).
    let forged = encrypted_eml(&carol, &bob);
    let r = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &forged).await;
    assert_eq!(r, format!("500 Invalid FROM {carol} for {alice}"));
    // MAIL FROM is not the login: 250 to MAIL, 553 at RCPT (SMTP-28).
    let (mut c, a) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(a.starts_with("235 "), "{a}");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{carol}>")).await, "250 2.1.0 Ok");
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{bob}>")).await,
        format!("553 5.7.1 <{carol}>: Sender address rejected: not owned by user {alice}")
    );
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    // Case-insensitive match is the same sender.
    assert_eq!(c.cmd(&format!("MAIL FROM:<{}>", alice.to_uppercase())).await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, "250 2.1.5 Ok");
    // Unknown local recipient (SMTP-30); remote recipients are fine after AUTH.
    let ghost = relay.new_address();
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{ghost}>")).await,
        format!("550 5.1.1 <{ghost}>: Recipient address rejected: User unknown")
    );
    assert_eq!(c.cmd("RCPT TO:<someone@remote.example>").await, "250 2.1.5 Ok");
    assert_eq!(c.cmd("VRFY nobody@chat.test").await, "252 2.0.0 nobody@chat.test");
    assert_eq!(c.cmd("EXPN list").await, "502 5.5.1 EXPN command is disabled");
    assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye");
}

#[tokio::test]
async fn rate_limit_refuses_the_eleventh() {
    // One message per minute refill, so the 11th is refused however slow the machine is.
    let relay = Relay::start("max_user_send_per_minute = 1\nmax_user_send_burst_size = 10\n");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;
    let (mut c, a) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(a.starts_with("235 "), "{a}");
    let start = std::time::Instant::now();
    for i in 0..10 {
        let r = send_mail(&mut c, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
        assert!(r.starts_with("250 2.0.0 OK: queued as "), "burst message {i}: {r}");
    }
    println!("10 submissions in {:?}", start.elapsed());
    assert_eq!(c.cmd(&format!("MAIL FROM:<{alice}>")).await, "250 2.1.0 Ok");
    let r = c.cmd(&format!("RCPT TO:<{bob}>")).await;
    assert!(r.starts_with(&format!("450 4.7.1: Too much mail from {alice}, retry in ")), "{r}");
    assert!(r.ends_with(" seconds"), "{r}");
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 10);
}

#[tokio::test]
async fn port_587_needs_tls_before_auth() {
    let relay = Relay::start("");
    let mut c = Lines::plain(&relay.addr(relay.ports.submission)).await;
    assert_eq!(c.reply().await, "220 chat.test ESMTP");
    let ehlo = c.cmd("EHLO [127.0.0.1]").await;
    assert_eq!(
        ehlo,
        "250-chat.test\n250-PIPELINING\n250-SIZE 31457280\n250-ENHANCEDSTATUSCODES\n250-8BITMIME\n250-SMTPUTF8\n250 STARTTLS"
    );
    assert_eq!(
        c.cmd("AUTH PLAIN AGFAYg==").await,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@chat.test>").await, "530 5.7.0 Authentication required");
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let mut c = c.starttls().await;
    let ehlo = c.cmd("EHLO client").await;
    assert_eq!(
        ehlo,
        "250-chat.test\n250-PIPELINING\n250-SIZE 31457280\n250-ENHANCEDSTATUSCODES\n250-8BITMIME\n250-SMTPUTF8\n250 AUTH PLAIN LOGIN"
    );
    assert_eq!(c.cmd("STARTTLS").await, "503 5.5.1 Error: TLS already active");
    // AUTH LOGIN creates the account on first login.
    use base64::Engine as _;
    let b = |s: &str| base64::prelude::BASE64_STANDARD.encode(s);
    let addr = relay.new_address();
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b(&addr)).await, "334 UGFzc3dvcmQ6");
    assert_eq!(c.cmd(&b(PASSWORD)).await, "235 2.7.0 Authentication successful");
    assert_eq!(c.cmd("AUTH PLAIN").await, "503 5.5.1 Error: already authenticated");
}

#[tokio::test]
async fn auth_failures_delay_then_close() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    create_account(&relay, &addr).await;
    let (mut c, r) = smtp_login(&relay, &addr, "wrong-password-1").await;
    assert_eq!(r, "535 5.7.8 Error: authentication failed");
    use base64::Engine as _;
    let token = base64::prelude::BASE64_STANDARD.encode(format!("\0{addr}\0wrong-password-2"));
    let start = std::time::Instant::now();
    assert_eq!(c.cmd("AUTH PLAIN").await, "334 ");
    assert_eq!(c.cmd(&token).await, "535 5.7.8 Error: authentication failed");
    println!("failed AUTH answered after {:?}", start.elapsed());
    assert_eq!(c.cmd(&format!("AUTH PLAIN {token}")).await, "535 5.7.8 Error: authentication failed");
    assert_eq!(c.reply().await, "421 4.7.0 Too many authentication failures");
    assert_eq!(c.line().await, None, "closed");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn oversized_message_is_read_and_refused() {
    let relay = Relay::start("max_message_size = \"64K\"\n");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;
    let (mut c, a) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(a.starts_with("235 "), "{a}");
    let ehlo = c.cmd("EHLO again").await;
    assert!(ehlo.contains("250-SIZE 65536\n"), "{ehlo}");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{alice}> SIZE=70000")).await, "552 5.3.4 Message size exceeds fixed limit");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{alice}> BODY=8BITMIME SMTPUTF8")).await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354"));
    let before = peak_rss_kib(relay.pid());
    // 40 MB, far over the limit, in one stream of 1000-octet lines.
    let eml = encrypted_eml(&alice, &bob).replace("--b0undary4fixture--", "");
    c.send_raw(eml.replace('\n', "\r\n").replace("\r\r\n", "\r\n").as_bytes()).await;
    let line = format!("{}\r\n", "x".repeat(998));
    let chunk = line.repeat(1000);
    for _ in 0..40 {
        c.send_raw(chunk.as_bytes()).await;
    }
    c.send_raw(b"\r\n.\r\n").await;
    assert_eq!(c.reply().await, "552 5.3.4 Message size exceeds fixed limit");
    let after = peak_rss_kib(relay.pid());
    println!("relay peak RSS before DATA {before} KiB, after 40 MB over the limit {after} KiB");
    assert!(after.saturating_sub(before) < 20 * 1024, "DATA past the limit is not buffered");
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK", "the session continues after the discarded data");
    assert!(inbox_messages(&relay, &bob).await.is_empty());
}

#[tokio::test]
async fn shutdown_says_421_to_idle_sessions() {
    let mut relay = Relay::start("");
    let mut c = Lines::tls(&relay.addr(relay.ports.submissions)).await;
    assert_eq!(c.reply().await, "220 chat.test ESMTP");
    assert!(c.cmd("EHLO x").await.starts_with("250"));
    let stopper = std::thread::spawn(move || {
        let code = relay.stop();
        (relay, code)
    });
    assert_eq!(c.reply().await, "421 4.3.2 Service shutting down");
    let (_relay, code) = stopper.join().expect("stop");
    assert_eq!(code, Some(0));
}
