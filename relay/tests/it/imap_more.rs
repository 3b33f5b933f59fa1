//! Large messages, MIME sections, literals, AUTHENTICATE, quota, keywords, read-only and
//! shutdown behaviour over real TLS.

use base64::Engine;

use crate::harness::{Lines, PASSWORD, Relay};
use crate::imap_helpers::*;

fn multipart(addr: &str) -> Vec<u8> {
    format!(
        "From: Alice <{addr}>\r\nTo: <{addr}>\r\nSubject: multi\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"BB\"\r\n\r\npreamble\r\n--BB\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n\
--BB\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--BB--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn imap_large_message_streamed_and_sections() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    let mut big = sample_message(&addr, &addr, "");
    while big.len() < 3 * 1024 * 1024 {
        big.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n");
    }
    assert_ok(&append(&mut c, "p", "INBOX", "()", &big).await);
    assert_ok(&append(&mut c, "q", "INBOX", "()", &multipart(&addr)).await);
    assert_ok(&c.imap("s", "SELECT INBOX").await);
    c.send("f UID FETCH 1 (BODY.PEEK[])").await;
    let head = c.line().await.expect("line");
    assert!(head.ends_with(&format!("BODY[] {{{}}}", big.len())), "{head}");
    assert_eq!(read_literal(&mut c, &head).await, big, "3 MiB BODY[] byte for byte");
    assert_eq!(c.line().await.as_deref(), Some(")"));
    assert_eq!(last(&c.until_tag("f").await), "f OK Fetch completed.");
    let r = c.imap("g", "UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)").await;
    assert!(r.join("\n").contains(&format!("RFC822.SIZE {})", big.len())), "{r:?}");
    assert!(r[1].starts_with("Subject: test "), "{r:?}");
    c.send("h UID FETCH 1 (BODY.PEEK[]<0.10>)").await;
    let head = c.line().await.expect("line");
    assert!(head.contains("BODY[]<0> {10}"), "{head}");
    assert_eq!(read_literal(&mut c, &head).await, &big[..10]);
    c.until_tag("h").await;
    // MIME structure of the multipart message.
    let r = c.imap("i", "UID FETCH 2 (BODYSTRUCTURE)").await;
    assert!(
        r[0].contains("BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 10 0")
            && r[0].contains("(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"BASE64\" 4 NIL (\"ATTACHMENT\" (\"FILENAME\" \"a.bin\")) NIL NIL) \"MIXED\""),
        "{r:?}"
    );
    let r = c.imap("j", "UID FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME])").await;
    let joined = r.join("\n");
    assert!(joined.contains("BODY[1] {10}\nfirst part"), "{joined}");
    assert!(joined.contains("BODY[2.MIME] {"), "{joined}");
    assert!(joined.contains("Content-Disposition: attachment"), "{joined}");
    // Non-PEEK fetch sets \Seen and reports FLAGS.
    let r = c.imap("k", "UID FETCH 2 (BODY[TEXT])").await;
    assert!(r.iter().any(|l| l.contains("\\Seen")), "{r:?}");
}

#[tokio::test]
async fn imap_literals_authenticate_and_quota() {
    let relay = Relay::start("max_mailbox_size = \"2K\"\nmax_message_size = \"4K\"\n");
    let addr = relay.new_address();
    // LOGIN with a synchronising and a non-synchronising literal.
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    c.line().await;
    c.send(&format!("a LOGIN {{{}}}", addr.len())).await;
    assert!(c.line().await.expect("line").starts_with('+'));
    c.send(&format!("{addr} {{{}+}}", PASSWORD.len())).await;
    c.send(PASSWORD).await;
    assert!(last(&c.until_tag("a").await).starts_with("a OK"));
    // Over quota (IMAP-23).
    let msg = sample_message(&addr, &addr, &"x".repeat(3000));
    let r = append(&mut c, "b", "INBOX", "()", &msg).await;
    assert_eq!(last(&r), "b NO [OVERQUOTA] Quota exceeded");
    // The APPEND literal may be up to max_message_size, not more (IMAP-44).
    c.send("t APPEND INBOX {5000}").await;
    assert!(c.line().await.expect("line").starts_with("t NO [TOOBIG]"));
    // Keywords are stored and limited to 50 per mailbox (IMAP-19).
    assert_ok(&append(&mut c, "c", "INBOX", "($Forwarded)", b"Subject: k\r\n\r\nk\r\n").await);
    assert_ok(&c.imap("d", "SELECT INBOX").await);
    let r = c.imap("e", "FETCH 1 (FLAGS)").await;
    assert!(r[0].contains("$Forwarded"), "{r:?}");
    let many: Vec<String> = (0..50).map(|i| format!("kw{i}")).collect();
    let r = c.imap("f", &format!("STORE 1 +FLAGS ({})", many.join(" "))).await;
    assert!(last(&r).starts_with("f NO [LIMIT]"), "{r:?}");
    // EXAMINE is read-only.
    assert_ok(&c.imap("g", "EXAMINE INBOX").await);
    assert!(last(&c.imap("h", "STORE 1 +FLAGS (\\Seen)").await).starts_with("h NO [READ-ONLY]"));
    assert_ok(&c.imap("i", "UNSELECT").await);
    assert!(last(&c.imap("j", "FETCH 1 (FLAGS)").await).starts_with("j BAD"));

    // AUTHENTICATE PLAIN with SASL-IR and with a continuation.
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{addr}\0{PASSWORD}"));
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    c.line().await;
    assert!(last(&c.imap("a", &format!("AUTHENTICATE PLAIN {ir}")).await).starts_with("a OK [CAPABILITY"));
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    c.line().await;
    c.send("a AUTHENTICATE PLAIN").await;
    assert_eq!(c.line().await.as_deref(), Some("+ "));
    c.send(&ir).await;
    assert!(last(&c.until_tag("a").await).starts_with("a OK"));
}

#[tokio::test]
async fn imap_shutdown_sends_bye() {
    let mut relay = Relay::start("");
    let addr = relay.new_address();
    let mut a = login(&relay, &addr).await;
    assert_ok(&a.imap("s", "SELECT INBOX").await);
    a.send("i IDLE").await;
    assert_eq!(a.line().await.as_deref(), Some("+ idling"));
    let mut b = login(&relay, &addr).await;
    relay.stop();
    assert_eq!(a.line().await.as_deref(), Some("* BYE Server shutting down"));
    assert_eq!(b.line().await.as_deref(), Some("* BYE Server shutting down"));
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// IMAP-33: memory per idling connection (printed, not asserted: timing/size vary by machine).
#[tokio::test]
async fn imap_idle_memory_per_connection() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut warm = login(&relay, &addr).await;
    assert_ok(&warm.imap("s", "SELECT INBOX").await);
    let before = rss_kib(relay.pid());
    let n = 100;
    let mut conns = Vec::new();
    for i in 0..n {
        let mut c = login(&relay, &addr).await;
        assert_ok(&c.imap("s", "SELECT INBOX").await);
        c.send(&format!("i{i} IDLE")).await;
        assert_eq!(c.line().await.as_deref(), Some("+ idling"));
        conns.push(c);
    }
    let after = rss_kib(relay.pid());
    println!(
        "IDLE memory: {n} idling TLS sessions added {} KiB RSS, about {} KiB each",
        after.saturating_sub(before),
        after.saturating_sub(before) / n
    );
    // All of them still wake up.
    assert_ok(&append(&mut warm, "p", "INBOX", "()", b"Subject: m\r\n\r\nm\r\n").await);
    for c in conns.iter_mut() {
        assert_eq!(c.line().await.as_deref(), Some("* 1 EXISTS"));
    }
}

/// Garbage in every state gets BAD/NO, never a crash; the session keeps working.
#[tokio::test]
async fn imap_garbage_input_is_answered() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    let junk = [
        "x",
        "x UID",
        "x UID FROB 1",
        "x FETCH 0 (FLAGS)",
        "x FETCH 1:* (BODY[999.1.HEADER])",
        "x SELECT",
        "x STORE 1 +FLAGS (\\Recent)",
        "x SEARCH (((((",
        "x APPEND",
        "x GETMETADATA",
        "x SETMETADATA INBOX",
        "x LIST",
        "x STATUS INBOX (FOO)",
        "x COPY 1",
        "x \u{1}\u{2}",
        "\u{ff}\u{fe} NOOP",
        "x LOGIN a b",
        "x IDLE extra",
        "x COMPRESS GZIP",
        "x ENABLE",
        "x ID (",
        "x CREATE \"a//b\"",
        "x CREATE \"\"",
    ];
    for (i, j) in junk.iter().enumerate() {
        c.send(j).await;
        c.send(&format!("n{i} NOOP")).await;
        let r = c.until_tag(&format!("n{i}")).await;
        assert!(last(&r).starts_with(&format!("n{i} OK")), "{j}: {r:?}");
        assert!(r.iter().any(|l| l.contains(" BAD ") || l.contains(" NO ") || l.starts_with("* BAD")), "{j}: {r:?}");
    }
    assert_ok(&c.imap("s", "SELECT INBOX").await);
    for (i, j) in
        ["x FETCH 1:* (BODY[1.2.3])", "x UID FETCH *:1 (ENVELOPE BODYSTRUCTURE)", "x SEARCH UID 1:* NOT OR ALL"]
            .iter()
            .enumerate()
    {
        c.send(j).await;
        c.send(&format!("m{i} NOOP")).await;
        let r = c.until_tag(&format!("m{i}")).await;
        assert!(last(&r).starts_with(&format!("m{i} OK")), "{j}: {r:?}");
    }
}

/// IMAP-45: 60 s without login ends with `* BYE Autologout` (takes a minute; bounded at 90 s).
#[tokio::test]
async fn imap_pre_login_timeout() {
    use tokio::io::AsyncBufReadExt;
    let relay = Relay::start("");
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    c.line().await.expect("greeting");
    let t = std::time::Instant::now();
    let mut line = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(90), c.io.read_line(&mut line))
        .await
        .expect("BYE within 90 s")
        .expect("read");
    assert_eq!(line.trim_end(), "* BYE Autologout");
    println!("pre-login timeout after {:?}", t.elapsed());
    assert!(c.line().await.is_none(), "closed");
}
