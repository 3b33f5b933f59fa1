//! Issue 31, items 1, 5 and 6: DKIM verification as an unauthenticated attacker and a weak signer
//! would try it, over `POST /mxdeliv` of a real relay whose resolver is the in-test DNS server
//! of a signing remote domain. While the costly messages run, a port-25 greeting and a delivery
//! to an idling IMAP session must still complete.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::dns_server::SigningDomain;
use crate::harness::*;
use crate::imap_helpers::{assert_ok, login, wait_line};
use crate::robust_common::rss_kib;

const REMOTE: &str = "_s.test";
const NO_VALID: &str = "554 5.7.1 No valid DKIM signature found";

/// The tags of a `DKIM-Signature: ...` header (unfolded), in order.
fn tags(header: &str) -> Vec<(String, String)> {
    let v = header.split_once(':').unwrap().1;
    let unfolded: String = v.replace("\r\n", "").chars().filter(|c| *c != '\t').collect();
    unfolded
        .split(';')
        .filter_map(|t| t.split_once('=').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect()
}

/// A signature header built from a real one with some tags replaced; long values are folded.
fn forged(real: &str, replace: &[(&str, String)]) -> String {
    let mut out = String::from("DKIM-Signature:");
    for (k, v) in tags(real) {
        let v = replace.iter().find(|(rk, _)| *rk == k).map(|(_, rv)| rv.clone()).unwrap_or(v);
        out.push_str(&format!(" {k}="));
        // Fold every ~70 characters at a ':' (h=) so no line is over 998 bytes.
        let mut line = 0;
        for part in v.split_inclusive(':') {
            if line > 70 {
                out.push_str("\r\n\t");
                line = 0;
            }
            out.push_str(part);
            line += part.len();
        }
        out.push(';');
    }
    out.push_str("\r\n");
    out
}

fn crlf(eml: &str) -> String {
    eml.replace("\r\n", "\n").replace('\n', "\r\n")
}

async fn post(relay: &Relay, from: &str, to: &str, body: &[u8]) -> (u16, String, Duration) {
    let a = relay.addr(relay.ports.https);
    let t = Instant::now();
    let r = https_req(&a, "POST", "/mxdeliv", &a, &[("X-Mail-From", from), ("X-Mail-To", to)], body).await;
    (r.status, r.text().trim().to_string(), t.elapsed())
}

/// The slowest of port-25 greetings taken every 50 ms until `stop`.
async fn greeting_probe(addr: String, stop: tokio::sync::watch::Receiver<bool>) -> Duration {
    let mut worst = Duration::ZERO;
    while !*stop.borrow() {
        let t = Instant::now();
        let mut c = Lines::plain(&addr).await;
        assert!(c.reply().await.starts_with("220 "));
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worst
}

/// Item 1: signatures with a correct `bh=`, a junk `b=` and ~34,000 distinct `h=` names
/// (just under the size the old code verified on the async worker; 2 s each there, and the
/// whole relay froze meanwhile). Now refused at once; greetings and IDLE stay live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_h_signature_is_cheap_and_nothing_freezes() {
    let s = SigningDomain::start(REMOTE).await;
    let relay = Relay::start(&s.resolver_toml());
    let sender = format!("{}@{REMOTE}", random_local());
    let bob = relay.new_address();
    let mut idle = login(&relay, &bob).await;
    assert_ok(&idle.imap("s", "SELECT INBOX").await);
    idle.send("i IDLE").await;
    assert_eq!(idle.line().await.as_deref(), Some("+ idling"));

    let eml = crlf(&encrypted_eml(&sender, &bob));
    let real = s.header(&eml);
    let mut names = vec!["from".to_string()];
    let mut i = 0;
    while names.iter().map(|n| n.len() + 1).sum::<usize>() < 236_000 {
        names.push(format!("x{i}"));
        i += 1;
    }
    let junk_b = "A".repeat(344);
    let attack = format!("{}{eml}", forged(&real, &[("h", names.join(":")), ("b", junk_b)]));
    assert!(attack.len() < 256 * 1024, "verified on the async worker by the old code: {}", attack.len());
    let rss_before = rss_kib(relay.pid());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(greeting_probe(relay.addr(relay.ports.smtp), stop_rx));
    let started = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let (addr, sender, bob, body) = (relay.addr(relay.ports.https), sender.clone(), bob.clone(), attack.clone());
        attackers.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = https_req(
                &addr,
                "POST",
                "/mxdeliv",
                &addr,
                &[("X-Mail-From", &sender), ("X-Mail-To", &bob)],
                body.as_bytes(),
            )
            .await;
            (r.status, r.text().trim().to_string(), t.elapsed())
        }));
    }
    // A well-behaved peer delivers to the idling session meanwhile.
    let good = s.sign(&encrypted_eml(&sender, &bob));
    let (st, text, good_took) = post(&relay, &sender, &bob, good.as_bytes()).await;
    assert_eq!((st, text.as_str()), (200, "250 OK"));
    let (_, exists_after) = wait_line(&mut idle, |l| l.ends_with(" EXISTS")).await;
    let mut slowest = Duration::ZERO;
    for a in attackers {
        let (st, text, took) = a.await.unwrap();
        assert_eq!((st, text.as_str()), (400, NO_VALID));
        slowest = slowest.max(took);
    }
    let all = started.elapsed();
    stop_tx.send(true).unwrap();
    let worst_greeting = probe.await.unwrap();
    let rss_after = rss_kib(relay.pid());
    println!(
        "4 × {} KB big-h= POSTs: slowest {slowest:?}, all {all:?}; good POST {good_took:?}, IDLE EXISTS after \
         {exists_after:?}; worst greeting {worst_greeting:?}; RSS {rss_before} → {rss_after} KiB",
        attack.len() / 1024
    );
    assert!(slowest < Duration::from_secs(2), "each costly signature must be refused fast: {slowest:?}");
    assert!(worst_greeting < Duration::from_secs(1), "greeting delayed {worst_greeting:?}");
    assert!(good_took < Duration::from_secs(3), "good delivery took {good_took:?}");
    assert!(rss_after < rss_before + 64 * 1024, "RSS {rss_before} → {rss_after} KiB");
    idle.send("DONE").await;
}

/// Item 5: 500 signatures with distinct selectors in one POST asked DNS 500 times and flushed
/// the key cache. Now at most `MAX_SIGNATURES` keys are looked up per message, and the key of a
/// real peer stays cached through three such POSTs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_selectors_are_capped_and_keep_the_cache() {
    let s = SigningDomain::start(REMOTE).await;
    let relay = Relay::start(&s.resolver_toml());
    let sender = format!("{}@{REMOTE}", random_local());
    let bob = relay.new_address();
    create_account(&relay, &bob).await;
    let good = s.sign(&encrypted_eml(&sender, &bob));
    assert_eq!(post(&relay, &sender, &bob, good.as_bytes()).await.0, 200);
    let real_key = format!("dkim._domainkey.{REMOTE}");
    let real_before = s.dns.queries_for(&real_key);
    let all_before = s.dns.queries_for(&format!("_domainkey.{REMOTE}"));

    let eml = crlf(&encrypted_eml(&sender, &bob));
    let real = s.header(&eml);
    let rss_before = rss_kib(relay.pid());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(greeting_probe(relay.addr(relay.ports.smtp), stop_rx));
    let mut took = Vec::new();
    for round in 0..3 {
        let mut sigs = String::new();
        for i in 0..500 {
            sigs.push_str(&forged(&real, &[("s", format!("r{round}sel{i}")), ("b", "A".repeat(344))]));
        }
        let (st, text, t) = post(&relay, &sender, &bob, format!("{sigs}{eml}").as_bytes()).await;
        assert_eq!((st, text.as_str()), (400, NO_VALID));
        took.push(t);
    }
    let asked = s.dns.queries_for(&format!("_domainkey.{REMOTE}")) - all_before;
    let rss_after = rss_kib(relay.pid());
    stop_tx.send(true).unwrap();
    let worst_greeting = probe.await.unwrap();
    assert_eq!(post(&relay, &sender, &bob, good.as_bytes()).await.0, 200);
    let real_again = s.dns.queries_for(&real_key) - real_before;
    println!(
        "3 × 500-selector POSTs: {asked} key queries in all, times {took:?}; real key re-asked {real_again}×; \
         RSS {rss_before} → {rss_after} KiB; worst greeting {worst_greeting:?}"
    );
    assert!(worst_greeting < Duration::from_secs(1), "greeting delayed {worst_greeting:?}");
    assert!(rss_after < rss_before + 32 * 1024, "RSS {rss_before} → {rss_after} KiB");
    assert!(asked <= 3 * 2 * relay::dkim::MAX_SIGNATURES, "DNS queries per message must be capped: {asked}");
    assert_eq!(real_again, 0, "the real peer's key must stay cached");
}

/// Item 6 (RFC 8301, RFC 6376): a 512-bit RSA key, a signature whose `h=` leaves out From, and a
/// key in testing mode (`t=y`) never make a message pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_signatures_are_refused() {
    let s = SigningDomain::start(REMOTE).await;
    let relay = Relay::start(&s.resolver_toml());
    let bob = relay.new_address();
    create_account(&relay, &bob).await;

    // 512-bit RSA key, published under its own selector.
    use rsa::pkcs8::EncodePrivateKey;
    let small = rsa::RsaPrivateKey::new(&mut rand08::thread_rng(), 512).unwrap();
    let pem = small.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let weak = relay::dkim::Signer::from_pem(pem.as_bytes(), REMOTE, "weak").unwrap();
    s.dns.dkim("weak", REMOTE, &weak.public_key_b64());
    let sender = format!("{}@{REMOTE}", random_local());
    let msg = weak.sign(crlf(&encrypted_eml(&sender, &bob)).as_bytes()).unwrap();
    let (st, text, _) = post(&relay, &sender, &bob, &msg).await;
    assert_eq!((st, text.as_str()), (400, NO_VALID), "512-bit RSA key");

    // A correct signature whose h= does not cover From: the From local part could be changed.
    let sender = format!("{}@{REMOTE}", random_local());
    let eml = crlf(&encrypted_eml(&sender, &bob));
    let real = s.header(&eml);
    let h: Vec<String> =
        tags(&real).into_iter().find(|(k, _)| k == "h").unwrap().1.split(':').map(|x| x.trim().to_string()).collect();
    assert!(h.iter().any(|x| x.eq_ignore_ascii_case("from")));
    let without_from: Vec<&str> = h.iter().map(String::as_str).filter(|x| !x.eq_ignore_ascii_case("from")).collect();
    // Re-sign with the domain's own key and an h= list without From.
    let signer = mail_auth::dkim::DkimSigner::from_key(
        mail_auth::common::crypto::RsaKey::<mail_auth::common::crypto::Sha256>::from_key_der(
            rustls_pemfile::private_key(&mut &s.key_pem()[..]).unwrap().unwrap(),
        )
        .unwrap(),
    )
    .domain(REMOTE)
    .selector("dkim")
    .headers(without_from.clone())
    .header_canonicalization(mail_auth::dkim::Canonicalization::Relaxed)
    .body_canonicalization(mail_auth::dkim::Canonicalization::Simple);
    let sig = signer.sign(eml.as_bytes()).unwrap();
    let msg = format!("{}{eml}", mail_auth::common::headers::HeaderWriter::to_header(&sig));
    let (st, text, _) = post(&relay, &sender, &bob, msg.as_bytes()).await;
    assert_eq!((st, text.as_str()), (400, NO_VALID), "h= without From ({without_from:?})");

    // rsa-sha1 (RFC 8301 3.1), with the domain's own key and a full h= list.
    let sender = format!("{}@{REMOTE}", random_local());
    let eml = crlf(&encrypted_eml(&sender, &bob));
    let der = rustls_pemfile::private_key(&mut &s.key_pem()[..]).unwrap().unwrap();
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_der(der.secret_der()).unwrap();
    let sig = mail_auth::dkim::DkimSigner::from_key(Sha1Key(key))
        .domain(REMOTE)
        .selector("dkim")
        .headers(h.iter().map(String::as_str).collect::<Vec<_>>())
        .sign(eml.as_bytes())
        .unwrap();
    let header = mail_auth::common::headers::HeaderWriter::to_header(&sig);
    assert!(header.contains("a=rsa-sha1"), "{header}");
    let (st, text, _) = post(&relay, &sender, &bob, format!("{header}{eml}").as_bytes()).await;
    assert_eq!((st, text.as_str()), (400, NO_VALID), "rsa-sha1");

    // The same domain's key in testing mode: treated as unsigned (RFC 6376 3.6.1).
    let testing = format!("v=DKIM1; k=rsa; t=y; p={}", s.public_key_b64());
    s.dns.set_txt(&format!("test._domainkey.{REMOTE}"), &testing);
    let t_signer = relay::dkim::Signer::from_pem(&s.key_pem(), REMOTE, "test").unwrap();
    let sender = format!("{}@{REMOTE}", random_local());
    let msg = t_signer.sign(crlf(&encrypted_eml(&sender, &bob)).as_bytes()).unwrap();
    let (st, text, _) = post(&relay, &sender, &bob, &msg).await;
    assert_eq!((st, text.as_str()), (400, "554 5.7.1 No DKIM signature found"), "t=y key");

    // The control: the domain's normal signature passes.
    let sender = format!("{}@{REMOTE}", random_local());
    let good = s.sign(&encrypted_eml(&sender, &bob));
    assert_eq!(post(&relay, &sender, &bob, good.as_bytes()).await.0, 200);
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 1, "only the good one was stored");
}

/// An rsa-sha1 signer (mail-auth only signs rsa-sha256; verifiers used to accept both).
struct Sha1Key(rsa::RsaPrivateKey);

impl mail_auth::common::crypto::SigningKey for Sha1Key {
    type Hasher = mail_auth::common::crypto::Sha1;

    fn sign(&self, input: impl mail_auth::common::headers::Writable) -> mail_auth::Result<Vec<u8>> {
        let hash = <Self as mail_auth::common::crypto::SigningKey>::hash(self, input);
        // DigestInfo prefix of SHA-1 (RFC 8017 9.2).
        let prefix: &[u8] = &[0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14];
        let pad = rsa::Pkcs1v15Sign { hash_len: Some(20), prefix: prefix.into() };
        Ok(self.0.sign(pad, hash.as_ref()).unwrap())
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        mail_auth::common::crypto::Algorithm::RsaSha1
    }
}
