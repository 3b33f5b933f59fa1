//! Issue 3: the encryption filter against the generated fixtures (filter.md section 7), the
//! exact-shape exceptions, and the differential test FLT-28 (walker vs the `pgp` crate).

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use pgp::packet::PacketParser;
use pgp::types::{PacketLength, Tag};
use rand08::{Rng, SeedableRng};
use relay::filter::{self, Envelope, Variant, armor, packets};

use crate::fixtures::{self, FROM, TABLE, TO};

/// Writes fresh fixtures; run explicitly (see fixtures.rs).
#[test]
#[ignore]
fn regenerate() {
    if std::env::var("RELAYTEST_REGEN_FIXTURES").is_err() {
        return;
    }
    std::fs::create_dir_all(fixtures::dir()).expect("dir");
    for (name, eml) in fixtures::generate() {
        std::fs::write(fixtures::dir().join(format!("{name}.eml")), eml).expect("write");
    }
}

fn verdict(name: &str, variant: Variant, rcpts: &[&str]) -> filter::Verdict {
    let eml = fixtures::load(name);
    let rcpts: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
    let from = if name == "mailer-daemon" { "" } else { FROM };
    filter::check_bytes(eml.as_bytes(), variant, &Envelope { mail_from: from, rcpts: &rcpts })
}

#[test]
fn every_fixture_gets_its_verdict() {
    let generated: Vec<&str> = fixtures::generate().iter().map(|(n, _)| *n).collect::<Vec<_>>().into_iter().collect();
    assert_eq!(generated.len(), TABLE.len(), "the generator makes every fixture of the table");
    for (name, out, inc) in TABLE {
        let rcpt = if *name == "asm" { FROM } else { TO };
        let o = verdict(name, Variant::Outgoing, &[rcpt]);
        let i = verdict(name, Variant::Incoming, &[rcpt]);
        println!("{name:28} outgoing {o:?} incoming {i:?}");
        assert_eq!(o.accepted(), *out, "{name} outgoing: {o:?}");
        assert_eq!(i.accepted(), *inc, "{name} incoming: {i:?}");
    }
}

#[test]
fn generated_fixtures_match_fresh_generation() {
    // Fresh keys each run: the verdicts, not the bytes, must be stable.
    for (name, eml) in fixtures::generate() {
        let (_, out, inc) = TABLE.iter().find(|(n, _, _)| *n == name).expect("in table");
        let rcpt = if name == "asm" { FROM } else { TO };
        let rcpts = vec![rcpt.to_string()];
        let from = if name == "mailer-daemon" { "" } else { FROM };
        let env = Envelope { mail_from: from, rcpts: &rcpts };
        assert_eq!(filter::check_bytes(eml.as_bytes(), Variant::Outgoing, &env).accepted(), *out, "{name} outgoing");
        assert_eq!(filter::check_bytes(eml.as_bytes(), Variant::Incoming, &env).accepted(), *inc, "{name} incoming");
    }
}

#[test]
fn asm_only_to_self() {
    assert!(verdict("asm", Variant::Outgoing, &[FROM]).accepted());
    assert!(!verdict("asm", Variant::Outgoing, &[TO]).accepted(), "ASM to someone else");
    assert!(!verdict("asm", Variant::Outgoing, &[FROM, TO]).accepted(), "ASM to two recipients");
    let wrong_subject = fixtures::load("asm").replace("Autocrypt Setup Message", "Autocrypt Setup Message!");
    let rcpts = vec![FROM.to_string()];
    let env = Envelope { mail_from: FROM, rcpts: &rcpts };
    assert!(!filter::check_bytes(wrong_subject.as_bytes(), Variant::Outgoing, &env).accepted());
}

#[test]
fn exceptions_only_in_exact_shape() {
    let rcpts = vec![TO.to_string()];
    let env = Envelope { mail_from: FROM, rcpts: &rcpts };
    let out = |s: &str| filter::check_bytes(s.as_bytes(), Variant::Outgoing, &env).accepted();
    let inc = |s: &str| filter::check_bytes(s.as_bytes(), Variant::Incoming, &env).accepted();
    let vc = fixtures::load("securejoin-vc");
    assert!(out(&vc) && inc(&vc));
    // The header comes before the body text, so `replacen(.., 1)` touches only the header.
    assert!(
        out(&vc.replacen("Secure-Join: vc-request\r\n", "secure-join: vc-request\r\n", 1)),
        "header names are case-insensitive"
    );
    assert!(
        !out(&vc.replacen("Secure-Join: vc-request\r\n", "Secure-Join: vc-request-x\r\n", 1)),
        "header value exact"
    );
    assert!(!out(&vc.replacen("Secure-Join: vc-request\r\n", "", 1)), "header required");
    assert!(
        !out(&vc.replacen("Secure-Join: vc-request\r\n", "Secure-Join: vc-request-pubkey\r\n", 1)),
        "v3 needs encryption"
    );
    assert!(!out(&vc.replace("text/plain", "text/html")), "text/plain only");
    assert!(
        !out(&vc.replace("\r\nSecure-Join: vc-request\r\n--", "\r\nSecure-Join: vc-request please\r\n--")),
        "extra body text"
    );
    let bounce = fixtures::load("mailer-daemon");
    let benv = Envelope { mail_from: "", rcpts: &rcpts };
    let binc = |s: &str| filter::check_bytes(s.as_bytes(), Variant::Incoming, &benv).accepted();
    assert!(binc(&bounce));
    assert!(!binc(&bounce.replace("Auto-Submitted: auto-replied\r\n", "")), "Auto-Submitted required");
    assert!(!binc(&bounce.replace("Auto-Submitted: auto-replied", "Auto-Submitted: ")), "non-empty");
    assert!(!binc(&bounce.replace("MAILER-DAEMON@", "postmaster@")), "From mailer-daemon@");
    assert!(!binc(&bounce.replace("multipart/report", "multipart/mixed")), "multipart/report");
    assert!(!filter::check_bytes(bounce.as_bytes(), Variant::Outgoing, &benv).accepted(), "incoming only");
    let asm = fixtures::load("asm");
    assert!(!inc(&asm), "ASM is outgoing only");
}

// ------------------------------------------------------------------ FLT-28

/// The `pgp` crate's structural verdict: its packet-header parser and body length handling, then
/// the same sequence rule (PKESK/SKESK*, one SEIPD, nothing after).
fn pgp_verdict(data: &[u8]) -> bool {
    let pos = Rc::new(Cell::new(0usize));
    let mut parser = PacketParser::new(Counting { data, pos: pos.clone() });
    let mut tags = Vec::new();
    loop {
        let start = pos.get();
        match parser.next_ref() {
            // pgp stops quietly at a header cut short by the end of input; that is trailing data.
            None if start < data.len() => return false,
            None => break,
            Some(Err(_)) => return false,
            Some(Ok(mut body)) => {
                let hdr = body.packet_header();
                let mut buf = Vec::new();
                if body.read_to_end(&mut buf).is_err() {
                    return false;
                }
                if let PacketLength::Fixed(n) = hdr.packet_length()
                    && buf.len() != n as usize
                {
                    return false;
                }
                tags.push(hdr.tag());
            }
        }
    }
    let Some((last, rest)) = tags.split_last() else {
        return false;
    };
    *last == Tag::SymEncryptedProtectedData
        && rest.iter().all(|t| matches!(t, Tag::PublicKeyEncryptedSessionKey | Tag::SymKeyEncryptedSessionKey))
}

/// A reader that tells how far the parser got.
struct Counting<'a> {
    data: &'a [u8],
    pos: Rc<Cell<usize>>,
}

impl std::io::Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.data[self.pos.get()..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos.set(self.pos.get() + n);
        Ok(n)
    }
}

impl std::io::BufRead for Counting<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        Ok(&self.data[self.pos.get()..])
    }
    fn consume(&mut self, n: usize) {
        self.pos.set((self.pos.get() + n).min(self.data.len()));
    }
}

fn payload(name: &str) -> Option<Vec<u8>> {
    let eml = fixtures::load(name);
    let msg = filter::reading::read(eml.as_bytes()).ok()?;
    let p = filter::mime::pgp_payload(msg.tree.as_ref().ok()?).ok()?;
    armor::dearmor(&p, Variant::Incoming).ok()
}

#[test]
fn walker_agrees_with_pgp_crate() {
    let mut bases = Vec::new();
    for (name, _, _) in TABLE {
        if let Some(bin) = payload(name) {
            let (w, p) = (packets::walk(&bin).is_ok(), pgp_verdict(&bin));
            assert_eq!(w, p, "fixture {name}: walker {w}, pgp {p}");
            if w {
                bases.push(bin);
            }
        }
    }
    assert!(bases.len() >= 5, "encrypted fixtures decode");
    // The fixtures really have the shapes their names promise.
    let old = payload("encrypted-old-format").expect("old");
    assert_eq!(old[0] & 0xc0, 0x80, "old-format PKESK header");
    let partial = payload("encrypted-partial").expect("partial");
    let seipd_at = packets::next_packet(&partial, 0).expect("pkesk").end;
    assert!((224..=254).contains(&partial[seipd_at + 1]), "SEIPD with a partial length");
    let v2 = payload("encrypted-seipd2").expect("v2");
    assert_eq!(v2[2], 6, "PKESK v6");
    // Hand-made structural edge cases go through both parsers too.
    let edge: Vec<Vec<u8>> = vec![
        vec![0xd2, 0xe1, 7, 7, 2, 8, 8],
        [&[0xd2, 0xe9][..], &[7; 512], &[0xe1, 7, 7, 2, 8, 8]].concat(),
        [&[0xc1, 0xe9][..], &[7; 512], &[0]].concat(),
        vec![0x87, 9, 9, 9],
        vec![0xd2, 0xff, 0, 0, 0, 1, 7],
    ];
    for d in &edge {
        assert_eq!(packets::walk(d).is_ok(), pgp_verdict(d), "edge case {:02x?}", &d[..d.len().min(8)]);
    }
    let mut rng = rand08::rngs::StdRng::seed_from_u64(28);
    let mut checked = 0;
    for round in 0..4000 {
        let base = &bases[round % bases.len()];
        let data: Vec<u8> = match round % 4 {
            0 => (0..rng.gen_range(0..40)).map(|_| rng.r#gen::<u8>()).collect(),
            1 => base[..rng.gen_range(0..base.len())].to_vec(),
            2 => {
                let mut d = base.clone();
                d.extend((0..rng.gen_range(1..8)).map(|_| rng.r#gen::<u8>()));
                d
            }
            _ => [base.as_slice(), base.as_slice()].concat(),
        };
        let (w, p) = (packets::walk(&data).is_ok(), pgp_verdict(&data));
        assert_eq!(w, p, "round {round}: walker {w}, pgp {p}, data {:02x?}", &data[..data.len().min(16)]);
        checked += 1;
    }
    println!("differential: {} fixtures, {checked} random inputs agree", bases.len());
}
