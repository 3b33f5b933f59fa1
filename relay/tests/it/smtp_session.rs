//! Issue 3: session-level rules (limits, HELO, pipelining, queueing of remote recipients).

use crate::harness::*;

#[tokio::test]
async fn error_limit_line_limit_and_helo() {
    let relay = Relay::start("");
    let mut c = Lines::tls(&relay.addr(relay.ports.submissions)).await;
    assert_eq!(c.reply().await, "220 chat.test ESMTP");
    assert_eq!(c.cmd("MAIL FROM:<a@chat.test>").await, "503 5.5.1 Error: bad sequence of commands");
    assert_eq!(c.cmd("HELO [127.0.0.1]").await, "250 chat.test");
    assert_eq!(c.cmd("HELP").await, "214 2.0.0 See RFC 5321");
    let long = format!("NOOP {}", "x".repeat(600));
    assert_eq!(c.cmd(&long).await, "500 5.5.2 Error: line too long");
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK", "the long line was discarded whole");
    assert_eq!(c.cmd("BDAT 10 LAST").await, "500 5.5.2 Error: command not recognized");
    // 3 errors so far; 17 more unknown commands reach the limit of 20.
    for i in 0..16 {
        assert_eq!(c.cmd(&format!("FROB{i}")).await, "500 5.5.2 Error: command not recognized");
    }
    assert_eq!(c.cmd("FROB").await, "500 5.5.2 Error: command not recognized");
    assert_eq!(c.reply().await, "421 4.7.0 Too many errors");
    assert_eq!(c.line().await, None);
}

#[tokio::test]
async fn pipelined_transaction_on_465() {
    let relay = Relay::start("max_smtp_recipients = 2\n");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;
    let (mut c, a) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(a.starts_with("235 "), "{a}");
    c.send_raw(format!("MAIL FROM:<{alice}>\r\nRCPT TO:<{bob}>\r\nDATA\r\n").as_bytes()).await;
    assert_eq!(c.reply().await, "250 2.1.0 Ok");
    assert_eq!(c.reply().await, "250 2.1.5 Ok");
    assert!(c.reply().await.starts_with("354 "));
    c.send_raw(format!("{}QUIT\r\n", smtp_data(&encrypted_eml(&alice, &bob))).as_bytes()).await;
    assert!(c.reply().await.starts_with("250 2.0.0 OK: queued as "));
    assert_eq!(c.reply().await, "221 2.0.0 Bye");
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 1);
    // SMTP-22: each RCPT over max_smtp_recipients gets 452 4.5.3.
    let (mut c, _) = smtp_login(&relay, &alice, PASSWORD).await;
    assert_eq!(c.cmd(&format!("MAIL FROM:<{alice}>")).await, "250 2.1.0 Ok");
    assert_eq!(c.cmd("RCPT TO:<a@remote.example>").await, "250 2.1.5 Ok");
    assert_eq!(c.cmd("RCPT TO:<b@remote.example>").await, "250 2.1.5 Ok");
    assert_eq!(c.cmd("RCPT TO:<c@remote.example>").await, "452 4.5.3 Error: too many recipients");
}

#[tokio::test]
async fn remote_recipients_are_queued_by_domain_and_bcc_self_stored() {
    let relay = Relay::start("");
    let alice = relay.new_address();
    let eml = encrypted_eml(&alice, "x@remote.example")
        .replace("Subject: [...]", "Subject: hello\r\nX-Originating-IP: 192.0.2.1");
    let r = submit(
        &relay,
        &alice,
        PASSWORD,
        &alice,
        &["x@remote.example", "y@remote.example", "z@other.example", &alice],
        &eml,
    )
    .await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "{r}");
    assert_eq!(inbox_messages(&relay, &alice).await.len(), 1, "bcc-self copy stored (SMTP-36)");
    let db = rusqlite::Connection::open_with_flags(
        relay.data_dir().join("chatrelay.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("db");
    let mut st = db
        .prepare("SELECT q.domain, q.blob, count(r.rcpt) FROM queue q JOIN queue_rcpts r ON r.queue_id = q.id GROUP BY q.id ORDER BY q.domain")
        .expect("query");
    let rows: Vec<(String, String, i64)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).expect("rows").map(|r| r.expect("row")).collect();
    assert_eq!(
        rows.iter().map(|(d, _, n)| (d.as_str(), *n)).collect::<Vec<_>>(),
        vec![("other.example", 1), ("remote.example", 2)]
    );
    let blob: Vec<u8> = db
        .query_row("SELECT data FROM blob_data WHERE id = ?1", [&rows[0].1], |r| r.get(0))
        .unwrap_or_else(|_| std::fs::read(relay.data_dir().join("blobs").join(&rows[0].1)).expect("queued blob"));
    let blob = String::from_utf8_lossy(&blob);
    assert!(
        blob.contains("Subject: [...]\r\n") && !blob.contains("X-Originating-IP") && !blob.contains("192.0.2.1"),
        "{blob}"
    );
}

/// A real client: Python's smtplib on 465 (implicit TLS) and 587 (STARTTLS). Skipped without
/// python3.
#[tokio::test]
async fn python_smtplib_smoke() {
    if std::process::Command::new("python3").arg("--version").output().is_err() {
        println!("python3 not found; skipped");
        return;
    }
    let relay = Relay::start("");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;
    let eml_path = relay.dir.path().join("enc.eml");
    std::fs::write(&eml_path, encrypted_eml(&alice, &bob)).expect("write eml");
    let script = r#"
import smtplib, ssl, sys
host, p465, p587, user, pw, rcpt, eml = sys.argv[1:8]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
msg = open(eml, 'rb').read()
with smtplib.SMTP_SSL(host, int(p465), context=ctx) as s:
    s.login(user, pw)
    s.sendmail(user, [rcpt], msg)
    try:
        s.sendmail(user, [rcpt], b"From: " + user.encode() + b"\r\nSubject: x\r\n\r\nplain\r\n")
        print("PLAIN ACCEPTED")
    except smtplib.SMTPDataError as e:
        print("refused", e.smtp_code, e.smtp_error.decode())
with smtplib.SMTP(host, int(p587)) as s:
    s.starttls(context=ctx)
    s.login(user, pw)
    s.sendmail(user, [rcpt], msg)
print("done")
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([
            relay.ip.as_str(),
            &relay.ports.submissions.to_string(),
            &relay.ports.submission.to_string(),
            &alice,
            PASSWORD,
            &bob,
            &eml_path.display().to_string(),
        ])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("refused 523 Encryption Needed: Invalid Unencrypted Mail"), "{stdout}");
    assert!(stdout.contains("done"), "{stdout}");
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 2);
}
