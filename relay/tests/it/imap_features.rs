//! METADATA, QUOTA, COMPRESS=DEFLATE, concurrent first logins, limits, mailbox management,
//! SEARCH and COPY/MOVE over real TLS.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Lines, PASSWORD, Relay};
use crate::imap_helpers::*;

#[tokio::test]
async fn imap_metadata_round_trip_and_unknown_keys() {
    let relay = Relay::start("[server_metadata]\niroh_relay = \"https://iroh.chat.test/\"\n");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    let r = c.imap("a", "SETMETADATA INBOX (/private/devicetoken \"openpgp:AAAA1111\")").await;
    assert_eq!(r, vec!["a OK Setmetadata completed.".to_string()]);
    let r = c.imap("b", "SETMETADATA INBOX (/private/devicetoken \"openpgp:BBBB2222\")").await;
    assert_eq!(last(&r), "b OK Setmetadata completed.");
    let r = c.imap("c", "GETMETADATA INBOX /private/devicetoken").await;
    assert_eq!(r[0], "* METADATA INBOX (/private/devicetoken {33}", "{r:?}");
    assert_eq!(r[1], "openpgp:AAAA1111 openpgp:BBBB2222)");
    assert_eq!(last(&r), "c OK Getmetadata completed.");
    // Unknown entries: no value, still OK (IMAP-34).
    let r = c.imap("d", "GETMETADATA \"\" (/shared/comment /shared/nothing/here /private/foo)").await;
    assert_eq!(r, vec!["d OK Getmetadata completed.".to_string()]);
    // Server entries (IMAP-35).
    let r = c
        .imap("e", "GETMETADATA \"\" (/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/maxsmtprecipients)")
        .await;
    let joined = r.join("\n");
    assert!(joined.starts_with("* METADATA \"\" (/shared/vendor/deltachat/irohrelay {23}\nhttps://iroh.chat.test/ /shared/vendor/deltachat/maxsmtprecipients {4}\n1000)"), "{joined}");
    // Writes elsewhere are refused (IMAP-38).
    let r = c.imap("f", "SETMETADATA INBOX (/private/comment \"x\")").await;
    assert!(last(&r).starts_with("f NO [METADATA NOPRIVATE]"), "{r:?}");
    let r = c.imap("g", "SETMETADATA \"\" (/shared/admin \"x\")").await;
    assert!(last(&r).starts_with("g NO [PERMISSIONDENIED]"), "{r:?}");
    let big = "x".repeat(4097);
    c.send(&format!("h SETMETADATA INBOX (/private/devicetoken {{{}+}}", big.len())).await;
    c.send(&format!("{big})")).await;
    let r = c.until_tag("h").await;
    assert!(last(&r).starts_with("h NO [METADATA MAXSIZE 4096]"), "{r:?}");
    // NIL removes all tokens.
    assert_eq!(last(&c.imap("i", "SETMETADATA INBOX (/private/devicetoken NIL)").await), "i OK Setmetadata completed.");
    let r = c.imap("j", "GETMETADATA INBOX (/private/devicetoken)").await;
    assert_eq!(r, vec!["j OK Getmetadata completed.".to_string()]);
    // QUOTA (IMAP-39).
    let r = c.imap("q", "GETQUOTAROOT \"INBOX\"").await;
    assert_eq!(r[0], "* QUOTAROOT \"INBOX\" \"\"");
    assert!(r[1].starts_with("* QUOTA \"\" (STORAGE 0 "), "{r:?}");
    assert!(last(&c.imap("r", "SETQUOTA \"\" (STORAGE 1)").await).starts_with("r NO"));
}

/// A minimal raw-DEFLATE line client for after `COMPRESS DEFLATE`.
struct Zc {
    io: Box<dyn crate::harness::Io>,
    comp: Compress,
    dec: Decompress,
    buf: Vec<u8>,
}

impl Zc {
    async fn send(&mut self, line: &str) {
        let data = format!("{line}\r\n");
        let mut out = Vec::with_capacity(data.len() + 64);
        self.comp.compress_vec(data.as_bytes(), &mut out, FlushCompress::Sync).expect("test step");
        self.io.write_all(&out).await.expect("io");
        self.io.flush().await.expect("io");
    }
    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let l: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&l).trim_end().to_string();
            }
            let mut tmp = [0u8; 4096];
            let n =
                tokio::time::timeout(crate::harness::T, self.io.read(&mut tmp)).await.expect("io").expect("test step");
            assert!(n > 0, "eof");
            let mut pos = 0;
            while pos < n {
                let mut out = Vec::with_capacity(64 * 1024);
                let before = self.dec.total_in();
                self.dec.decompress_vec(&tmp[pos..n], &mut out, FlushDecompress::Sync).expect("test step");
                pos += (self.dec.total_in() - before) as usize;
                self.buf.extend_from_slice(&out);
            }
        }
    }
    async fn imap(&mut self, tag: &str, cmd: &str) -> Vec<String> {
        self.send(&format!("{tag} {cmd}")).await;
        let mut v = Vec::new();
        for _ in 0..1000 {
            let l = self.line().await;
            let done = l.starts_with(&format!("{tag} "));
            v.push(l);
            if done {
                break;
            }
        }
        v
    }
}

#[tokio::test]
async fn imap_compress_deflate_end_to_end() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    let msg = sample_message(&addr, &addr, &"compressible line\r\n".repeat(200));
    assert_ok(&append(&mut c, "p", "INBOX", "()", &msg).await);
    let r = c.imap("z", "COMPRESS DEFLATE").await;
    assert_eq!(last(&r), "z OK DEFLATE active");
    let io = c.io.into_inner();
    let mut z =
        Zc { io, comp: Compress::new(Compression::default(), false), dec: Decompress::new(false), buf: Vec::new() };
    let r = z.imap("a", "COMPRESS DEFLATE").await;
    assert!(last(&r).starts_with("a NO [COMPRESSIONACTIVE]"), "{r:?}");
    assert_ok(&z.imap("b", "SELECT INBOX").await);
    let r = z.imap("c", "UID FETCH 1 (RFC822.SIZE BODY.PEEK[])").await;
    assert!(r[0].contains(&format!("RFC822.SIZE {}", msg.len())), "{:?}", &r[0]);
    let body: String = r[1..r.len() - 1].join("\r\n");
    assert!(body.contains("compressible line"), "body came through");
    assert_eq!(last(&r), "c OK Fetch completed.");
    z.send("i IDLE").await;
    assert_eq!(z.line().await, "+ idling");
    let mut b = login(&relay, &addr).await;
    assert_ok(&append(&mut b, "p", "INBOX", "()", &msg).await);
    assert_eq!(z.line().await, "* 2 EXISTS");
    z.send("DONE").await;
    let _recent = z.line().await;
    assert_eq!(z.line().await, "i OK IDLE terminated");
    let r = z.imap("l", "LOGOUT").await;
    assert_eq!(last(&r), "l OK Logout completed.");
}

/// Issue 30: large bodies under COMPRESS go out as Huffman-only blocks between the general
/// compressor's output, from memory (≤ 1 MiB) and streamed from the file. Each is fetched twice
/// with short commands around; an independent inflater must read exactly the stored message,
/// packed as ciphertext packs (< 0.8 of its size, which the fast general level does not reach).
#[tokio::test]
async fn imap_compress_large_body_round_trips() {
    use base64::prelude::{BASE64_STANDARD, Engine as _};
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    let mut s = crate::harness::rand_u64() | 1;
    let mut msgs = Vec::new();
    for size in [450_000, 1_000_000] {
        let random: Vec<u8> = (0..size)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        let b64 = BASE64_STANDARD.encode(&random);
        let lines: Vec<&str> = b64.as_bytes().chunks(900).map(|l| std::str::from_utf8(l).unwrap_or("")).collect();
        let msg = sample_message(&addr, &addr, &lines.join("\r\n"));
        assert_ok(&append(&mut c, "p", "INBOX", "()", &msg).await);
        msgs.push(msg);
    }
    assert_eq!(last(&c.imap("z", "COMPRESS DEFLATE").await), "z OK DEFLATE active");
    let io = c.io.into_inner();
    let mut z =
        Zc { io, comp: Compress::new(Compression::default(), false), dec: Decompress::new(false), buf: Vec::new() };
    assert_ok(&z.imap("b", "SELECT INBOX").await);
    for round in 0..4 {
        let (uid, msg) = (round % 2 + 1, &msgs[round % 2]);
        let before = z.dec.total_in();
        z.send(&format!("c UID FETCH {uid} (BODY.PEEK[])")).await;
        let mut r = Vec::new();
        for _ in 0..5000 {
            let l = z.line().await;
            let done = l.starts_with("c ");
            r.push(l);
            if done {
                break;
            }
        }
        let wire = z.dec.total_in() - before;
        assert!(r[0].ends_with(&format!("BODY[] {{{}}}", msg.len())), "{:?}", &r[0]);
        assert_eq!(last(&r), "c OK Fetch completed.");
        assert_eq!(r[r.len() - 2], ")");
        let (got, want) = (r[1..r.len() - 2].join("\r\n"), String::from_utf8_lossy(msg).trim_end().to_string());
        // (Not assert_eq: a body is up to 1.3 MB.)
        let at = got.bytes().zip(want.bytes()).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        assert!(got == want, "round {round}: the body differs at {at} (lengths {} and {})", got.len(), want.len());
        assert!((wire as f64) < 0.8 * msg.len() as f64, "round {round}: compressed to {wire} of {}", msg.len());
        assert_ok(&z.imap("n", "NOOP").await);
    }
    let r = z.imap("l", "LOGOUT").await;
    assert_eq!(last(&r), "l OK Logout completed.");
}

#[tokio::test]
async fn imap_concurrent_first_logins() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (a, host) = (addr.clone(), relay.addr(relay.ports.imaps));
        tasks.push(tokio::spawn(async move {
            let mut c = Lines::tls(&host).await;
            c.line().await;
            c.imap("a", &format!("LOGIN {a} {PASSWORD}")).await
        }));
    }
    for t in tasks {
        let r = t.await.expect("io");
        assert!(last(&r).starts_with("a OK"), "{r:?}");
    }
    // Exactly one account with exactly one INBOX.
    let mut c = login(&relay, &addr).await;
    let r = c.imap("l", "LIST \"\" *").await;
    assert_eq!(r.iter().filter(|l| l.starts_with("* LIST")).count(), 1, "{r:?}");
}

#[tokio::test]
async fn imap_limits_and_bad_input() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    // Line too long (IMAP-43).
    let long = format!("a NOOP {}", "x".repeat(70 * 1024));
    c.send(&long).await;
    assert_eq!(c.line().await.as_deref(), Some("* BAD Command line too long"));
    assert_ok(&c.imap("b", "NOOP").await);
    // Synchronising literal over the limit: NO [TOOBIG] without `+` (IMAP-44).
    c.send("c SELECT {100000}").await;
    let l = c.line().await.expect("line");
    assert!(l.starts_with("c NO [TOOBIG]"), "{l}");
    // Garbage and wrong-state commands.
    assert!(last(&c.imap("d", "FETCH").await).starts_with("d BAD"));
    assert!(last(&c.imap("e", "FETCH 1 (FLAGS)").await).starts_with("e BAD"));
    assert!(last(&c.imap("f", "SEARCH CHARSET KOI8-R ALL").await).starts_with("f BAD"));
    assert_ok(&c.imap("g", "SELECT INBOX").await);
    assert!(last(&c.imap("h", "SEARCH CHARSET KOI8-R ALL").await).starts_with("h NO [BADCHARSET"));
    // Non-synchronising literal over the limit: BYE and close.
    c.send("i SELECT {100000+}").await;
    assert_eq!(c.line().await.as_deref(), Some("* BYE Literal too large"));
    assert!(c.line().await.is_none());
}

#[tokio::test]
async fn imap_mailboxes_search_copy_move() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    assert_ok(&c.imap("a", "CREATE Archive").await);
    assert!(last(&c.imap("a2", "CREATE Archive").await).starts_with("a2 NO"));
    assert!(last(&c.imap("a3", "DELETE INBOX").await).starts_with("a3 NO"));
    let r = c.imap("b", "LIST \"\" *").await;
    assert!(r.contains(&"* LIST (\\HasNoChildren) \"/\" \"Archive\"".to_string()), "{r:?}");
    for i in 0..3 {
        let m = sample_message(&addr, &format!("rcpt{i}@chat.test"), &format!("body number {i}"));
        assert_ok(&append(&mut c, &format!("p{i}"), "INBOX", if i == 1 { "(\\Flagged)" } else { "()" }, &m).await);
    }
    assert_ok(&c.imap("s", "SELECT INBOX").await);
    let r = c.imap("t", "SEARCH FLAGGED").await;
    assert_eq!(r[0], "* SEARCH 2");
    let r = c.imap("t2", "UID SEARCH OR TO rcpt0 BODY \"NUMBER 2\"").await;
    assert_eq!(r[0], "* SEARCH 1 3");
    let r = c.imap("t3", "SEARCH NOT FLAGGED LARGER 10 SINCE 1-Jan-2020").await;
    assert_eq!(r[0], "* SEARCH 1 3");
    let r = c.imap("u", "UID COPY 1:2 Archive").await;
    assert!(last(&r).starts_with("u OK [COPYUID ") && last(&r).contains(" 1:2 1:2]"), "{r:?}");
    let r = c.imap("v", "UID MOVE 3 Archive").await;
    assert!(r[0].starts_with("* OK [COPYUID ") && r[0].contains(" 3 3]"), "{r:?}");
    assert!(r.contains(&"* 3 EXPUNGE".to_string()), "{r:?}");
    let r = c.imap("w", "STATUS Archive (MESSAGES UIDNEXT UNSEEN)").await;
    assert_eq!(r[0], "* STATUS \"Archive\" (MESSAGES 3 UIDNEXT 4 UNSEEN 3)");
    assert_ok(&c.imap("x", "RENAME Archive Old").await);
    assert_ok(&c.imap("y", "EXAMINE Old").await);
    let r = c.imap("z", "FETCH 1:* (FLAGS ENVELOPE BODYSTRUCTURE INTERNALDATE)").await;
    assert_eq!(r.iter().filter(|l| l.contains("BODYSTRUCTURE (\"TEXT\" \"PLAIN\"")).count(), 3, "{r:?}");
    assert!(r[0].contains("ENVELOPE (\"Wed, 25 Nov 2026 10:00:00 +0000\""), "{r:?}");
    assert_ok(&c.imap("d", "DELETE Old").await);
}
