//! Issue 24: encryption-only under every reading (filter.md section 2a, FLT-28..FLT-34, SMTP-32).
//! Every attack of the issue and every rule, over real SMTP on submission (465) and port 25 and
//! over `POST /mxdeliv`: refused with the spec's reply, nothing stored, nothing queued. Then the
//! differential check (FLT-34) over the fixtures, the attacks and mutations of both.

use relay::filter::{self, Envelope, Variant};

use crate::filter_oracle;
use crate::fixtures::{self, TABLE};
use crate::harness::*;
use crate::robust_common::{counts, mx_tls};

const BND: &str = "b0undary4fixture";
const ENC_NEEDED: &str = "523 Encryption Needed: Invalid Unencrypted Mail";
const BARE_CR: &str = "550 5.6.0 Message contains bare CR, refused";
/// A remote sender for port 25 and `/mxdeliv`.
const REMOTE: &str = "alice@remote.test";

/// Who sends: (MAIL FROM and From of the message, recipient).
type Build = fn(&str, &str) -> String;

/// The cases: name, message builder and the expected reply (`{from}` in it is replaced).
fn cases() -> Vec<(&'static str, Build, &'static str)> {
    vec![
        // Issue case 1: a first `Content-Type: text/plain` before the PGP/MIME one.
        ("dup-content-type", |f, t| insert_top(&encrypted_eml(f, t), "Content-Type: text/plain\r\n"), ENC_NEEDED),
        // Issue case 2: From victim, then From own address.
        (
            "dup-from",
            |f, t| {
                encrypted_eml(f, t).replacen(
                    &format!("From: <{f}>"),
                    &format!("From: <victim@chat.test>\r\nFrom: <{f}>"),
                    1,
                )
            },
            "500 Invalid FROM header: <victim@chat.test>",
        ),
        (
            "no-from",
            |f, t| encrypted_eml(f, t).replacen(&format!("From: <{f}>\r\n"), "", 1),
            "500 Invalid FROM header: ",
        ),
        // Issue case 4: END line followed by a mid-line close delimiter, then a cleartext part.
        (
            "mid-line-boundary",
            |f, t| {
                encrypted_eml(f, t)
                    .replacen("-----END PGP MESSAGE-----", &format!("-----END PGP MESSAGE-------{BND}--"), 1)
                    .replacen(
                        &format!("--{BND}--"),
                        &format!(
                            "--{BND}\r\nContent-Type: text/plain\r\n\r\nCleartext every RFC reader shows\r\n--{BND}--"
                        ),
                        2,
                    )
            },
            ENC_NEEDED,
        ),
        // Issue case 5: bare CR, in the header (From smuggling) and in the body.
        (
            "bare-cr-from",
            |f, t| {
                encrypted_eml(f, t).replacen(
                    &format!("From: <{f}>"),
                    &format!("From: <victim@chat.test>\rFrom: <{f}>"),
                    1,
                )
            },
            BARE_CR,
        ),
        (
            "bare-cr-body",
            |f, t| encrypted_eml(f, t).replacen("\r\n\r\nVersion: 1", "\r\n\r\nVersion: 1\r.\rRSET", 1),
            BARE_CR,
        ),
        // FLT-28: a line that is neither a field nor a continuation; a whitespace-only fold.
        ("flt28-top-line", |f, t| insert_top(&encrypted_eml(f, t), "not a header line\r\n"), ENC_NEEDED),
        ("flt28-ws-line", |f, t| insert_top(&encrypted_eml(f, t), "X-A: 1\r\n \r\n"), ENC_NEEDED),
        (
            "flt28-part-line",
            |f, t| {
                encrypted_eml(f, t).replacen(
                    "Content-Type: application/pgp-encrypted\r\n",
                    "Content-Type: application/pgp-encrypted\r\nbroken\r\n",
                    1,
                )
            },
            ENC_NEEDED,
        ),
        (
            "flt28-8bit-ct",
            |f, t| {
                encrypted_eml(f, t).replacen(
                    "Content-Type: application/octet-stream",
                    "Content-Type: application/octet-stream\u{e9}",
                    1,
                )
            },
            ENC_NEEDED,
        ),
        // FLT-29: RFC 5322 limits, MIME fields once per entity, parameters once.
        ("flt29-dup-subject", |f, t| insert_top(&encrypted_eml(f, t), "Subject: second\r\n"), ENC_NEEDED),
        ("flt29-dup-to", |f, t| insert_top(&encrypted_eml(f, t), "To: <other@chat.test>\r\n"), ENC_NEEDED),
        (
            "flt29-part-ct",
            |f, t| {
                encrypted_eml(f, t).replacen(
                    "Content-Type: application/octet-stream",
                    "Content-Type: text/plain\r\nContent-Type: application/octet-stream",
                    1,
                )
            },
            ENC_NEEDED,
        ),
        (
            "flt29-part-cte",
            |f, t| {
                encrypted_eml(f, t).replacen(
                    "Content-Type: application/octet-stream",
                    "Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\nContent-Type: application/octet-stream",
                    1,
                )
            },
            ENC_NEEDED,
        ),
        (
            "flt29-dup-boundary",
            |f, t| {
                encrypted_eml(f, t).replacen(
                    &format!("boundary=\"{BND}\""),
                    &format!("boundary=\"{BND}\"; boundary=\"other\""),
                    1,
                )
            },
            ENC_NEEDED,
        ),
        (
            "flt29-ct-comment",
            |f, t| encrypted_eml(f, t).replacen("multipart/encrypted;", "multipart/encrypted (text/plain);", 1),
            ENC_NEEDED,
        ),
        // FLT-30: a line starting with the delimiter but more after it; the boundary in a line.
        (
            "flt30-delimiter-prefix",
            |f, t| encrypted_eml(f, t).replacen("\r\n\r\nVersion: 1", &format!("\r\n\r\nVersion: 1\r\n--{BND}x"), 1),
            ENC_NEEDED,
        ),
        (
            "flt30-boundary-in-line",
            |f, t| {
                encrypted_eml(f, t).replacen(
                    "Content-Description: PGP/MIME version identification",
                    &format!("Content-Description: {BND}"),
                    1,
                )
            },
            ENC_NEEDED,
        ),
        (
            "flt30-unclosed",
            |f, t| {
                let e = encrypted_eml(f, t);
                e.replacen(&format!("--{BND}--"), "", 1)
            },
            ENC_NEEDED,
        ),
        // Exceptions read the same way: a Secure-Join with a second Content-Type, a nested part.
        (
            "securejoin-dup-ct",
            |f, t| {
                securejoin(f, t).replacen(
                    "Content-Type: text/plain; charset=utf-8",
                    "Content-Type: text/html\r\nContent-Type: text/plain; charset=utf-8",
                    1,
                )
            },
            ENC_NEEDED,
        ),
        (
            "securejoin-two-headers",
            |f, t| {
                securejoin(f, t).replacen(
                    "Secure-Join: vc-request\r\n",
                    "Secure-Join: vc-request\r\nSecure-Join: vg-request\r\n",
                    1,
                )
            },
            ENC_NEEDED,
        ),
    ]
}

/// Insert `line` right after the top-level `From:` line.
fn insert_top(eml: &str, line: &str) -> String {
    let at = eml.find("\r\n").map_or(0, |i| i + 2);
    format!("{}{line}{}", &eml[..at], &eml[at..])
}

fn securejoin(from: &str, to: &str) -> String {
    fixtures::load("securejoin-vc").replace(fixtures::FROM, from).replace(fixtures::TO, to)
}

async fn mxdeliv(relay: &Relay, from: &str, to: &str, body: &[u8]) -> HttpResponse {
    let a = relay.addr(relay.ports.https);
    https_req(&a, "POST", "/mxdeliv", &a, &[("X-Mail-From", from), ("X-Mail-To", to)], body).await
}

/// CRLF line ends as the SMTP path stores them (a lone CR stays).
fn crlf(eml: &str) -> String {
    eml.replace("\r\n", "\n").replace('\n', "\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_refused_on_every_listener() {
    let relay = Relay::start("max_user_send_per_minute = 100000\nmax_user_send_burst_size = 100000\n");
    let alice = relay.new_address();
    let bob = relay.new_address();
    create_account(&relay, &alice).await;
    create_account(&relay, &bob).await;
    let before = counts(&relay);
    for (name, build, want) in cases() {
        // Submission (465): the sender is a local account.
        let eml = build(&alice, &bob);
        assert!(
            filter::check_bytes(crlf(&eml).as_bytes(), Variant::Outgoing, &env(&alice, &bob))
                != filter::Verdict::Encrypted,
            "{name}: the filter itself refuses"
        );
        let r = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &eml).await;
        assert_eq!(r, want.replace("{from}", &alice), "{name} on submission");
        // Port 25 and /mxdeliv: a remote sender; the refusal comes before DKIM.
        let eml = build(REMOTE, &bob);
        let mut c = mx_tls(&relay).await;
        let r = send_mail(&mut c, REMOTE, &[&bob], &eml).await;
        assert_eq!(r, want, "{name} on port 25");
        let _ = c.cmd("QUIT").await;
        let r = mxdeliv(&relay, REMOTE, &bob, crlf(&eml).as_bytes()).await;
        assert_eq!((r.status, r.text()), (400, want.to_string()), "{name} over /mxdeliv");
        assert_eq!(counts(&relay), before, "{name}: nothing stored, nothing queued");
    }
    assert!(inbox_messages(&relay, &bob).await.is_empty());
    // The untouched message still passes the filter and the From check on submission.
    let r = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "{r}");
    // FLT-33: the body stored is byte for byte the body judged.
    let sent = crlf(&encrypted_eml(&alice, &bob));
    let stored = inbox_messages(&relay, &bob).await;
    let body = |m: &[u8]| m[m.windows(4).position(|w| w == b"\r\n\r\n").expect("blank line")..].to_vec();
    assert_eq!(body(&stored[0]), body(sent.as_bytes()), "stored body = judged body");
}

fn env<'a>(from: &'a str, to: &'a str) -> Envelope<'a> {
    let rcpts: &'static [String] = Box::leak(vec![to.to_string()].into_boxed_slice());
    Envelope { mail_from: from, rcpts }
}

/// Issue case 3: with no authentication on port 25, From fields whose last one is an address
/// literal of the peer (DKIM skipped, SMTP-44) no longer pass as a bounce or with the
/// duplicate-Content-Type trick.
#[tokio::test]
async fn port25_duplicate_from_with_peer_literal() {
    let relay = Relay::start("");
    let bob = relay.new_address();
    create_account(&relay, &bob).await;
    let before = counts(&relay);
    let lit = "x@[127.0.0.1]";
    let bounce = fixtures::load("mailer-daemon").replace(fixtures::TO, &bob).replacen(
        "From: Mail Delivery System <MAILER-DAEMON@remote.test>",
        "From: <victim@chat.test>\r\nFrom: Mail Delivery System <MAILER-DAEMON@[127.0.0.1]>",
        1,
    );
    let dup_ct = insert_top(&encrypted_eml(lit, &bob), "Content-Type: text/plain\r\n").replacen(
        &format!("From: <{lit}>"),
        &format!("From: <victim@chat.test>\r\nFrom: <{lit}>"),
        1,
    );
    // The empty path and the peer's own literal as MAIL FROM (port 25 reads it like /mxdeliv).
    for (sender, eml) in [("", &bounce), ("", &dup_ct), (lit, &bounce), (lit, &dup_ct)] {
        let mut c = mx_tls(&relay).await;
        let r = send_mail(&mut c, sender, &[&bob], eml).await;
        assert_eq!(r, "500 Invalid FROM header: <victim@chat.test>", "MAIL FROM:<{sender}>");
        let _ = c.cmd("QUIT").await;
        let r = mxdeliv(&relay, sender, &bob, crlf(eml).as_bytes()).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    // The single-From bounce from the peer's literal still passes (DKIM skipped for the peer).
    let single = fixtures::load("mailer-daemon")
        .replace(fixtures::TO, &bob)
        .replace("MAILER-DAEMON@remote.test", "MAILER-DAEMON@[127.0.0.1]");
    let mut c = mx_tls(&relay).await;
    let r = send_mail(&mut c, "", &[&bob], &single).await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "{r}");
    assert_eq!(counts(&relay).0, before.0 + 1, "only the unambiguous bounce is stored");
}

/// FLT-32: a From value echoed in the 500 reply is one sanitised line of at most 200 chars; a
/// folded value cannot inject a second reply line.
#[tokio::test]
async fn echoed_from_is_one_short_line() {
    let relay = Relay::start("");
    let alice = relay.new_address();
    let bob = relay.new_address();
    create_account(&relay, &alice).await;
    create_account(&relay, &bob).await;
    let before = counts(&relay);
    let (mut c, r) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(r.starts_with("235"), "{r}");
    let injected = encrypted_eml(&alice, &bob).replacen(
        &format!("From: <{alice}>"),
        &format!("From: <{alice}>,\r\n 250 2.0.0 OK: queued as FAKE"),
        1,
    );
    let r = send_mail(&mut c, &alice, &[&bob], &injected).await;
    assert_eq!(r, format!("500 Invalid FROM header: <{alice}>, 250 2.0.0 OK: queued as FAKE"));
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK", "no injected reply line is waiting");
    let long = format!("\"{}\" <{alice}>, x@y", "A".repeat(400));
    let r = send_mail(&mut c, &alice, &[&bob], &encrypted_eml(&alice, &bob).replacen(&format!("<{alice}>"), &long, 1))
        .await;
    assert!(r.starts_with("500 Invalid FROM header: \"AAAA"), "{r}");
    assert_eq!(r.len(), "500 Invalid FROM header: ".len() + 200, "{r}");
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    let _ = c.cmd("QUIT").await;
    assert_eq!(counts(&relay), before);
}

/// An account deleted (or blocked) while its session is inside DATA sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_gone_during_data_sends_nothing() {
    let relay = Relay::start("");
    let bob = relay.new_address();
    create_account(&relay, &bob).await;
    let before = counts(&relay);
    for action in ["delete", "block"] {
        let alice = relay.new_address();
        create_account(&relay, &alice).await;
        let (mut c, r) = smtp_login(&relay, &alice, PASSWORD).await;
        assert!(r.starts_with("235"), "{r}");
        assert!(c.cmd(&format!("MAIL FROM:<{alice}>")).await.starts_with("250"));
        assert!(c.cmd(&format!("RCPT TO:<{bob}>")).await.starts_with("250"));
        assert!(c.cmd("RCPT TO:<someone@remote.example>").await.starts_with("250"));
        assert!(c.cmd("DATA").await.starts_with("354"));
        let (code, out, err) = relay.cli(&["accounts", action, &alice]);
        assert_eq!(code, 0, "{out}{err}");
        c.send_raw(smtp_data(&encrypted_eml(&alice, &bob)).as_bytes()).await;
        let r = c.reply().await;
        assert_eq!(r, "554 5.7.1 Sender account no longer exists or is blocked", "{action}");
        assert_eq!(counts(&relay), before, "{action}: nothing stored, nothing queued");
    }
}

/// FLT-34 in `cargo test`: every message the filter accepts reads the same in 24 lenient reader
/// personalities and in mail-parser; run over the fixtures, the attack cases and mutations.
#[test]
fn differential_reading() {
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for (name, _, _) in TABLE {
        inputs.push(fixtures::load(name).into_bytes());
    }
    // What the fuzz target found, kept as regressions (fuzz input format).
    let found = fixtures::dir().with_file_name("filter-differential");
    for e in std::fs::read_dir(found).expect("regressions") {
        inputs.extend(fuzz_input(&std::fs::read(e.expect("entry").path()).expect("read")));
    }
    let (a, b) = ("alice@chat.test", "bob@chat.test");
    for (_, build, _) in cases() {
        inputs.push(crlf(&build(a, b)).into_bytes());
    }
    let mut judged = 0;
    for (i, d) in inputs.iter().enumerate() {
        match filter_oracle::differential(d) {
            Ok(j) => judged += usize::from(j),
            Err(e) => panic!("input {i}: {e}\n{}", String::from_utf8_lossy(d)),
        }
    }
    assert!(judged >= 8, "the accepted fixtures were compared ({judged})");
    // Mutations: line-level edits that attackers use (duplicate, delete, swap, fold, insert
    // delimiter-like lines and CRs) on accepted messages.
    let accepted: Vec<Vec<u8>> =
        inputs.iter().filter(|d| filter_oracle::differential(d) == Ok(true)).cloned().collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n.max(1) as u64) as usize
    };
    let snippets: &[&[u8]] = &[
        b"Content-Type: text/plain",
        b"Content-Type: multipart/mixed; boundary=b0undary4fixture",
        b"--b0undary4fixture",
        b"--b0undary4fixture--",
        b"x--b0undary4fixture--",
        b" folded",
        b"",
        b"\r",
        b"From: <victim@chat.test>",
        b"Content-Transfer-Encoding: base64",
        b"MIME-Version: 1.0",
    ];
    let mut compared = 0;
    for round in 0..6000 {
        let base = &accepted[round % accepted.len()];
        let mut lines: Vec<Vec<u8>> = base.split(|&c| c == b'\n').map(|l| l.to_vec()).collect();
        for _ in 0..=rnd(3) {
            let i = rnd(lines.len());
            match rnd(6) {
                0 => {
                    let l = lines[i].clone();
                    lines.insert(i, l);
                }
                1 if lines.len() > 1 => {
                    lines.remove(i);
                }
                2 => {
                    let j = rnd(lines.len());
                    lines.swap(i, j);
                }
                3 => {
                    let s = snippets[rnd(snippets.len())];
                    lines.insert(i, [s, b"\r"].concat());
                }
                4 => {
                    let p = rnd(lines[i].len() + 1);
                    let s = snippets[rnd(snippets.len())];
                    lines[i].splice(p..p, s.iter().copied());
                }
                _ => lines[i] = lines[i].to_ascii_uppercase(),
            }
        }
        let d = lines.join(&b'\n');
        match filter_oracle::differential(&d) {
            Ok(j) => compared += usize::from(j),
            Err(e) => panic!("round {round}: {e}\n{}", String::from_utf8_lossy(&d)),
        }
    }
    println!(
        "differential: {} inputs, {judged} accepted compared; {compared} accepted mutations compared",
        inputs.len()
    );
}

/// Before each outbound attempt the sender is checked again: a message queued by an account
/// that was blocked afterwards is dropped, not relayed, and bounces to no one. And FLT-31 on
/// the way out: whatever the stored bytes hold (here a bare CR, a bare LF and a CR-dot line),
/// the remote server gets only CRLF lines, dot-stuffed.
#[tokio::test]
async fn outbound_drops_mail_of_a_blocked_sender() {
    use crate::delivery_sink::Sink;
    use crate::delivery_units::{account, context, inbox, msg, publish_key, wait_for};
    use relay::store::{Delivery, RemoteBatch};

    let dns = crate::dns_server::TestDns::start().await;
    let sink = Sink::start("127.0.0.4:0", true).await;
    dns.mx("_s.test", 10, "mx.s.test");
    dns.a("mx.s.test", "127.0.0.4".parse().expect("ip"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctx, _lock) =
        context("_a.test", dir.path(), &dns, &format!("smtp_port = {}\ntry_https = false", sink.addr.port()));
    publish_key(&dns, "_a.test", &dir.path().join("data/dkim.pem"));
    let (blocked, active) = ("blocked1@_a.test", "active1@_a.test");
    let mut ids = Vec::new();
    for sender in [blocked, active] {
        let acc = account(&ctx, sender).await;
        let stored = [msg(sender, "ok@_s.test"), b"x\ry\nz\r.\r\nend\r\n".to_vec()].concat();
        let blob = ctx.store.put_blob(stored.into()).await.expect("blob");
        let d = Delivery {
            sender: sender.into(),
            sender_account: Some(acc),
            remote: vec![RemoteBatch { domain: "_s.test".into(), rcpts: vec!["ok@_s.test".into()] }],
            remote_blob: Some(blob),
            ..Default::default()
        };
        ctx.store.deliver(d).await.expect("queued");
        ids.push(acc);
    }
    ctx.store.set_blocked(ids[0], true).await.expect("block");
    let task = tokio::spawn(relay::outbound::run(ctx.clone()));
    wait_for("queue empty", 20, || async { ctx.store.list_queue().await.expect("queue").is_empty() }).await;
    let got = sink.messages();
    assert_eq!(got.len(), 1, "only the active sender's message goes out");
    assert_eq!(got[0].mail_from, active);
    let data = &got[0].data;
    assert!(
        data.ends_with(b"\r\n.starts with a dot\r\nx\r\ny\r\nz\r\n.\r\nend\r\n"),
        "{}",
        String::from_utf8_lossy(data)
    );
    for (i, &c) in data.iter().enumerate() {
        assert!(c != b'\r' || data.get(i + 1) == Some(&b'\n'), "bare CR relayed at {i}");
        assert!(c != b'\n' || (i > 0 && data[i - 1] == b'\r'), "bare LF relayed at {i}");
    }
    assert!(inbox(&ctx, ids[0]).await.is_empty(), "no bounce to the blocked sender");
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
}

/// Replays a `filter_differential` fuzz corpus (`FILTER_CORPUS=fuzz/corpus/filter_differential`)
/// through the same check, decoding inputs as the fuzz target does; prints how many the filter
/// accepted (those are the ones compared). By hand: `cargo test ... -- --ignored`.
#[test]
#[ignore]
fn differential_corpus() {
    let Ok(dir) = std::env::var("FILTER_CORPUS") else { return };
    let (mut total, mut judged) = (0, 0);
    for e in std::fs::read_dir(dir).expect("corpus dir") {
        let data = std::fs::read(e.expect("entry").path()).expect("read");
        let Some(msg) = fuzz_input(&data) else { continue };
        total += 1;
        match filter_oracle::differential(&msg) {
            Ok(j) => judged += usize::from(j),
            Err(e) => panic!("{e}\n{}", String::from_utf8_lossy(&msg)),
        }
    }
    println!("corpus: {total} inputs, {judged} accepted by the filter and read alike everywhere");
}

/// A `filter_differential` fuzz input as the target reads it: first byte even = a whole
/// message; odd = the rest spliced into the encrypted fixture at the line the next byte picks.
fn fuzz_input(data: &[u8]) -> Option<Vec<u8>> {
    let base = std::fs::read(fixtures::dir().join("encrypted.eml")).expect("fixture");
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        return Some(rest.to_vec());
    }
    let (&at, ins) = rest.split_first()?;
    let starts: Vec<usize> =
        std::iter::once(0).chain(base.iter().enumerate().filter(|(_, c)| **c == b'\n').map(|(i, _)| i + 1)).collect();
    let pos = starts[at as usize % starts.len()];
    Some([&base[..pos], ins, &base[pos..]].concat())
}
