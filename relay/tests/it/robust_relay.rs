//! Issue 12, open-relay and spoofing battery: every classic relay trick against ports 25, 587,
//! 465 and 443/`smtp`, and sender spoofing after AUTH. Each case asserts the exact reply and that
//! nothing was stored or queued (row counts in the relay's own database).

use crate::harness::*;
use crate::robust_common::*;

const RELAY_DENIED: &str = "554 5.7.1";
const BAD_RCPT: &str = "501 5.1.3 Bad recipient address syntax";
const BAD_SENDER: &str = "501 5.1.7 Bad sender address syntax";

/// Recipient tricks on port 25 after STARTTLS: a remote domain in any disguise is never relayed.
#[tokio::test]
async fn mx_never_relays() {
    let relay = Relay::start("");
    let bob = account(&relay).await;
    let before = counts(&relay);
    let relay_denied = |a: &str| format!("{RELAY_DENIED} <{a}>: Relay access denied");
    let cases: Vec<(String, String)> = vec![
        ("user@remote.example".into(), relay_denied("user@remote.example")),
        ("USER@Remote.Example".into(), relay_denied("user@remote.example")),
        ("user%remote.example@chat.test".into(), BAD_RCPT.into()),
        // Source routes are ignored (RFC 5321 section C): what is left is the real destination.
        ("@hop.example:user@remote.example".into(), relay_denied("user@remote.example")),
        ("@chat.test:user@remote.example".into(), relay_denied("user@remote.example")),
        ("@chat.test,@hop.example:user@remote.example".into(), relay_denied("user@remote.example")),
        ("\"user@remote.example\"@chat.test".into(), BAD_RCPT.into()),
        // A quoted plain local part is that local part (RFC 5321 4.1.2): a local lookup.
        ("\"user\"@chat.test".into(), "550 5.1.1 <user@chat.test>: Recipient address rejected: User unknown".into()),
        ("remote.example!user@chat.test".into(), BAD_RCPT.into()),
        // Address literals are read as addresses (as `/mxdeliv` reads them) and never name this
        // relay, so they are refused like any other remote domain.
        ("user@[127.0.0.1]".into(), relay_denied("user@[127.0.0.1]")),
        ("user@[IPv6:::1]".into(), relay_denied("user@[ipv6:::1]")),
        ("user@[127.0.0.999]".into(), BAD_RCPT.into()),
        ("user@chat.test.evil.example".into(), relay_denied("user@chat.test.evil.example")),
        ("user@evilchat.test".into(), relay_denied("user@evilchat.test")),
        ("user@evil.example@chat.test".into(), BAD_RCPT.into()),
        ("user@chat.test@evil.example".into(), BAD_RCPT.into()),
        (format!("{bob}."), BAD_RCPT.into()),
        ("user@sub.chat.test".into(), relay_denied("user@sub.chat.test")),
        ("postmaster".into(), BAD_RCPT.into()),
        ("user@remote.example\u{0}".into(), BAD_RCPT.into()),
    ];
    let mut c = mx_tls(&relay).await;
    let mut wrong = Vec::new();
    for (i, (rcpt, want)) in cases.iter().enumerate() {
        // A fresh transaction per case; 20 refusals would end the session (SMTP-24).
        if i % 8 == 0 && i > 0 {
            let _ = c.cmd("QUIT").await;
            c = mx_tls(&relay).await;
        }
        assert_eq!(c.cmd("MAIL FROM:<someone@remote.example>").await, "250 2.1.0 Ok", "case {rcpt}");
        let got = c.cmd(&format!("RCPT TO:<{rcpt}>")).await;
        if &got != want {
            wrong.push(format!("RCPT TO:<{rcpt}>: got {got:?}, want {want:?}"));
        }
        // With no accepted recipient DATA cannot start.
        let data = c.cmd("DATA").await;
        assert!(
            data.starts_with("503 5.5.1") || data.starts_with("554 5.5.1"),
            "DATA after refused RCPT {rcpt}: {data}"
        );
        assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The local recipient in upper case is the same account (ACC-1, case-insensitive).
    assert_eq!(c.cmd("MAIL FROM:<someone@remote.example>").await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{}>", bob.to_uppercase())).await, "250 2.1.5 Ok");
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    // AUTH is not a way around it on 25 (SMTP-8).
    assert_eq!(c.cmd("AUTH PLAIN AGJvYgBib2I=").await, "503 5.5.1 Error: authentication not enabled");
    assert_eq!(counts(&relay), before, "nothing stored or queued");
}

/// Port 25 without STARTTLS never takes a transaction, not even to a local user (SMTP-6).
#[tokio::test]
async fn mx_plaintext_and_forged_local_sender() {
    let relay = Relay::start("");
    let (alice, bob) = (account(&relay).await, account(&relay).await);
    let before = counts(&relay);
    let mut c = plain_ehlo(&relay, relay.ports.smtp).await;
    assert_eq!(c.cmd("MAIL FROM:<x@remote.example>").await, "530 5.7.0 Must issue a STARTTLS command first");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, "503 5.5.1 Error: bad sequence of commands");
    assert_eq!(c.cmd("RCPT TO:<user@remote.example>").await, "503 5.5.1 Error: bad sequence of commands");
    // XCLIENT / XFORWARD (identity injection) are unknown commands.
    assert_eq!(c.cmd("XCLIENT ADDR=127.0.0.1 LOGIN=x").await, "500 5.5.2 Error: command not recognized");
    assert_eq!(c.cmd("XFORWARD ADDR=127.0.0.1").await, "500 5.5.2 Error: command not recognized");

    // From header differing from MAIL FROM (SMTP-41 / SMTP-32).
    let mut c = mx_tls(&relay).await;
    let r = send_mail(&mut c, "peer@remote.example", &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert_eq!(r, format!("500 Invalid FROM {alice} for peer@remote.example"));
    let r = send_mail(&mut c, &alice.to_uppercase(), &[&bob], &encrypted_eml(&bob, &bob)).await;
    assert_eq!(r, format!("500 Invalid FROM {bob} for {alice}"));
    assert_eq!(counts(&relay), before, "nothing stored or queued");
}

/// A remote peer claiming to be a local user on 25 without a DKIM signature (SMTP-42).
#[tokio::test]
async fn mx_forged_local_sender_needs_dkim() {
    let relay = Relay::start("");
    let (alice, bob) = (account(&relay).await, account(&relay).await);
    let before = counts(&relay);
    let mut c = mx_tls(&relay).await;
    let r = send_mail(&mut c, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert_eq!(r, "554 5.7.1 No DKIM signature found");
    // Bounce with empty MAIL FROM and a forged local From: still needs DKIM.
    let r = send_mail(&mut c, "", &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert_eq!(r, "554 5.7.1 No DKIM signature found");
    assert_eq!(counts(&relay), before, "nothing stored or queued");
}

/// Submission listeners refuse everything before AUTH, with and without TLS.
#[tokio::test]
async fn submission_unauthenticated() {
    let relay = Relay::start("");
    let bob = account(&relay).await;
    let before = counts(&relay);
    // 587 in plaintext: MAIL needs AUTH, AUTH needs TLS (SMTP-7).
    let mut c = plain_ehlo(&relay, relay.ports.submission).await;
    assert_eq!(c.cmd("MAIL FROM:<x@remote.example>").await, "530 5.7.0 Authentication required");
    assert_eq!(c.cmd("RCPT TO:<y@remote.example>").await, "503 5.5.1 Error: bad sequence of commands");
    assert_eq!(
        c.cmd("AUTH PLAIN AGJvYgBib2I=").await,
        "538 5.7.11 Encryption required for requested authentication mechanism"
    );
    assert_eq!(c.cmd("AUTH LOGIN").await, "538 5.7.11 Encryption required for requested authentication mechanism");
    // 587 after STARTTLS, no AUTH.
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let mut c = c.starttls().await;
    assert!(c.cmd("EHLO client.example").await.contains("AUTH PLAIN LOGIN"));
    for from in ["x@remote.example", &bob, ""] {
        assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await, "530 5.7.0 Authentication required", "{from}");
    }
    // 465, no AUTH.
    let mut c = tls465(&relay).await;
    assert_eq!(c.cmd(&format!("MAIL FROM:<{bob}>")).await, "530 5.7.0 Authentication required");
    assert_eq!(c.cmd("RCPT TO:<y@remote.example>").await, "503 5.5.1 Error: bad sequence of commands");
    assert_eq!(c.cmd("DATA").await, "503 5.5.1 Error: bad sequence of commands");
    // 443 with ALPN smtp, no AUTH.
    let mut c = Lines::tls_alpn(&relay.addr(relay.ports.https), &[b"smtp"]).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.example").await.starts_with("250"));
    assert_eq!(c.cmd("MAIL FROM:<x@remote.example>").await, "530 5.7.0 Authentication required");
    // Someone else's password does not log in (SMTP-27).
    let (_c, r) = smtp_login(&relay, &bob, "not-the-password-123").await;
    assert_eq!(r, "535 5.7.8 Error: authentication failed");
    assert_eq!(counts(&relay), before, "nothing stored or queued");
}

/// Logged in as A: every way of sending as B, or through B's domain tricks, is refused.
#[tokio::test]
async fn submission_sender_spoofing() {
    let relay = Relay::start("");
    let (alice, bob) = (account(&relay).await, account(&relay).await);
    let before = counts(&relay);
    let not_owned = |given: &str| format!("553 5.7.1 <{given}>: Sender address rejected: not owned by user {alice}");
    let (mut c, r) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(r.starts_with("235 "), "{r}");
    let senders = [
        bob.clone(),
        "".to_string(),
        "someone@remote.example".into(),
        format!("{}.evil.example", alice),
        format!("{}%remote.example@chat.test", alice.split('@').next().unwrap_or_default()),
    ];
    for from in &senders {
        let m = c.cmd(&format!("MAIL FROM:<{from}>")).await;
        if m.starts_with("501") {
            assert_eq!(m, BAD_SENDER, "{from}");
            continue;
        }
        assert_eq!(m, "250 2.1.0 Ok", "MAIL FROM:<{from}>");
        for rcpt in [bob.as_str(), "x@remote.example"] {
            assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).await, not_owned(from), "{from} -> {rcpt}");
        }
        assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    }
    // A source route is ignored (RFC 5321 section C): the sender is the login itself.
    assert_eq!(c.cmd(&format!("MAIL FROM:<@hop.example:{alice}>")).await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, "250 2.1.5 Ok");
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    // Other address tricks in MAIL FROM never parse as the login.
    for from in [format!("\"{alice}\""), format!("{alice}@evil.example"), format!("{alice}.")] {
        let m = c.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert!(m == BAD_SENDER || m == "250 2.1.0 Ok", "{from}: {m}");
        if m.starts_with("250") {
            let r = c.cmd(&format!("RCPT TO:<{bob}>")).await;
            assert!(r.starts_with("553 5.7.1 <"), "{from}: {r}");
        }
        let _ = c.cmd("RSET").await;
    }
    let _ = c.cmd("QUIT").await;

    // From header tricks with a correct envelope (SMTP-32).
    let eml = |from_hdr: &str| {
        encrypted_eml(&alice, &bob).replacen(&format!("From: <{alice}>"), &format!("From: {from_hdr}"), 1)
    };
    let cases = [
        (format!("\"{alice}\" <{bob}>"), format!("500 Invalid FROM {bob} for {alice}")),
        (format!("<{bob}>, <{alice}>"), String::new()),
        (format!("<{alice}>, <{bob}>"), String::new()),
        (format!("<{alice}>\r\nFrom: <{bob}>"), String::new()),
        ("undisclosed-recipients:;".to_string(), String::new()),
    ];
    for (hdr, want) in &cases {
        let body = eml(hdr);
        assert!(body.contains(hdr.as_str()), "fixture rewrite for {hdr}");
        let r = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &body).await;
        if want.is_empty() {
            assert!(r.starts_with("500 Invalid FROM"), "From: {hdr} -> {r}");
        } else {
            assert_eq!(&r, want, "From: {hdr}");
        }
    }
    assert_eq!(counts(&relay), before, "nothing stored or queued");

    // Case variations are the same sender and are accepted (SMTP-28, SMTP-32: case-insensitive).
    let upper = alice.to_uppercase();
    let body =
        encrypted_eml(&alice, &bob).replacen(&format!("From: <{alice}>"), &format!("From: \"Alice\" <{upper}>"), 1);
    let r = submit(&relay, &upper, PASSWORD, &upper, &[&bob], &body).await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "{r}");
    assert_eq!(counts(&relay).0, before.0 + 1, "exactly one stored");
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 1);
}

/// An account made from /new credentials (HTTP) can send only as itself.
#[tokio::test]
async fn http_created_account_cannot_send_as_another() {
    let relay = Relay::start("");
    let bob = account(&relay).await;
    let resp = relay.https("POST", "/new").await;
    assert_eq!(resp.status, 200);
    let j = resp.json();
    let (email, password) =
        (j["email"].as_str().expect("email").to_string(), j["password"].as_str().expect("password").to_string());
    let before = counts(&relay);
    // 587 with STARTTLS this time.
    let mut c = plain_ehlo(&relay, relay.ports.submission).await;
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let mut c = c.starttls().await;
    assert!(c.cmd("EHLO client.example").await.starts_with("250"));
    use base64::Engine as _;
    let tok = base64::prelude::BASE64_STANDARD.encode(format!("\0{email}\0{password}"));
    assert_eq!(c.cmd(&format!("AUTH PLAIN {tok}")).await, "235 2.7.0 Authentication successful");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{bob}>")).await, "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<x@remote.example>").await,
        format!("553 5.7.1 <{bob}>: Sender address rejected: not owned by user {email}")
    );
    assert_eq!(c.cmd("RSET").await, "250 2.0.0 OK");
    // Authorization identity (the first PLAIN field) naming someone else is not accepted either.
    let (mut c2, _) = (tls465(&relay).await, ());
    let tok = base64::prelude::BASE64_STANDARD.encode(format!("{bob}\0{email}\0{password}"));
    let r = c2.cmd(&format!("AUTH PLAIN {tok}")).await;
    assert!(r.starts_with("535 5.7.8") || r.starts_with("501 ") || r.starts_with("235 "), "{r}");
    if r.starts_with("235") {
        // If the authzid is ignored, the session is still `email`, not bob.
        assert_eq!(c2.cmd(&format!("MAIL FROM:<{bob}>")).await, "250 2.1.0 Ok");
        assert!(c2.cmd(&format!("RCPT TO:<{email}>")).await.starts_with("553 5.7.1"));
    }
    assert_eq!(counts(&relay), before, "nothing stored or queued");
}

async fn mxdeliv(relay: &Relay, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let a = relay.addr(relay.ports.https);
    https_req(&a, "POST", "/mxdeliv", &a, headers, body).await
}

/// /mxdeliv with forged envelopes (DLV-43, DLV-44): same refusals as port 25.
#[tokio::test]
async fn mxdeliv_forged_envelopes() {
    let relay = Relay::start("");
    let (alice, bob) = (account(&relay).await, account(&relay).await);
    let before = counts(&relay);
    let eml = encrypted_eml(&alice, &bob);
    let r = mxdeliv(&relay, &[("X-Mail-From", "x@remote.example"), ("X-Mail-To", "y@remote.example")], eml.as_bytes())
        .await;
    assert_eq!((r.status, r.text()), (400, "554 5.7.1 <y@remote.example>: Relay access denied".to_string()));
    let r = mxdeliv(&relay, &[("X-Mail-From", &alice), ("X-Mail-To", "user%remote.example@chat.test")], eml.as_bytes())
        .await;
    assert_eq!(r.status, 400);
    let r = mxdeliv(&relay, &[("X-Mail-To", &bob)], eml.as_bytes()).await;
    assert_eq!((r.status, r.text()), (400, "501 5.5.4 Missing or invalid envelope headers".to_string()));
    let r =
        mxdeliv(&relay, &[("X-Mail-From", &alice), ("X-Mail-From", &alice), ("X-Mail-To", &bob)], eml.as_bytes()).await;
    assert_eq!((r.status, r.text()), (400, "501 5.5.4 Missing or invalid envelope headers".to_string()));
    let r = mxdeliv(&relay, &[("X-Mail-From", &alice), ("X-Mail-To", &bob)], eml.as_bytes()).await;
    assert_eq!((r.status, r.text()), (400, "554 5.7.1 No DKIM signature found".to_string()));
    let r = mxdeliv(&relay, &[("X-Mail-From", "peer@remote.example"), ("X-Mail-To", &bob)], eml.as_bytes()).await;
    assert_eq!((r.status, r.text()), (400, format!("500 Invalid FROM {alice} for peer@remote.example")));
    assert_eq!(counts(&relay), before, "nothing stored or queued");
}
