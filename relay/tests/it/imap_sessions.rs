//! Several sessions of one account (IMAP-19, IMAP-24..29), UIDVALIDITY on re-creation
//! (IMAP-16) and the appversions server entry (IMAP-35).

use crate::harness::Relay;
use crate::imap_helpers::*;

#[tokio::test]
async fn imap_flags_and_recent_across_sessions() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut a = login(&relay, &addr).await;
    let mut b = login(&relay, &addr).await;
    let mut c = login(&relay, &addr).await;
    assert_ok(&a.imap("s", "SELECT INBOX").await);
    assert_ok(&b.imap("s", "SELECT INBOX").await);
    assert_ok(&append(&mut c, "p", "INBOX", "()", &sample_message(&addr, &addr, "r")).await);
    // \Recent goes to exactly one session.
    let ra = a.imap("n", "NOOP").await;
    let rb = b.imap("n", "NOOP").await;
    assert!(ra.contains(&"* 1 EXISTS".to_string()) && rb.contains(&"* 1 EXISTS".to_string()), "{ra:?} {rb:?}");
    let recent = [&ra, &rb].iter().filter(|r| r.contains(&"* 1 RECENT".to_string())).count();
    let zero = [&ra, &rb].iter().filter(|r| r.contains(&"* 0 RECENT".to_string())).count();
    assert_eq!((recent, zero), (1, 1), "{ra:?} {rb:?}");
    // A flag change by b reaches a while it idles (IMAP-29).
    a.send("i IDLE").await;
    assert_eq!(a.line().await.as_deref(), Some("+ idling"));
    assert_ok(&b.imap("t", "UID STORE 1 +FLAGS.SILENT (\\Seen $label)").await);
    let (l, waited) = wait_line(&mut a, |l| l.contains("FETCH")).await;
    assert!(l.starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen") && l.contains("$label"), "{l}");
    println!("flag change: FETCH read by the idling session {waited:?} after STORE's OK was read");
    // Any other line than DONE ends IDLE with BAD (IMAP-31).
    a.send("NOOP").await;
    assert!(last(&a.until_tag("i").await).starts_with("i BAD"));
    assert_ok(&a.imap("n2", "NOOP").await);
}

#[tokio::test]
async fn imap_uidvalidity_grows_on_recreate() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    let uv = |r: &[String]| -> u64 {
        let l = &r[0];
        let i = l.find("UIDVALIDITY ").expect("uidvalidity") + 12;
        l[i..].trim_end_matches(')').parse().expect("number")
    };
    assert_ok(&c.imap("a", "CREATE Box").await);
    let first = uv(&c.imap("b", "STATUS Box (UIDVALIDITY)").await);
    assert_ok(&c.imap("c", "DELETE Box").await);
    assert_ok(&c.imap("d", "CREATE Box").await);
    let second = uv(&c.imap("e", "STATUS Box (UIDVALIDITY)").await);
    assert!(second > first, "{first} then {second}");
}

#[tokio::test]
async fn imap_appversions_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{ "clients": [ { "clientId": "dc", "sources": [ { "sourceId": "web", "versionInteger": 2,
            "versionString": "2.0", "downloadUrl": "https://example.org/dc" } ] } ] }"#,
    )
    .expect("write");
    let relay = Relay::start(&format!("[server_metadata]\nappversions = \"{}\"\n", good.display()));
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    let r = c.imap("a", "GETMETADATA \"\" /shared/vendor/deltachat/appversions").await;
    let compact = r#"{"clients":[{"clientId":"dc","sources":[{"sourceId":"web","versionInteger":2,"versionString":"2.0","downloadUrl":"https://example.org/dc"}]}]}"#;
    assert_eq!(r[0], format!("* METADATA \"\" (/shared/vendor/deltachat/appversions {{{}}}", compact.len()));
    assert_eq!(r[1], format!("{compact})"));
    drop(c);

    // IMAP-35: an invalid file is refused when the config is loaded, before anything is served.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"clients": [], "extra": 1}"#).expect("write");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!("mail_domain = \"chat.test\"\n[server_metadata]\nappversions = \"{}\"\n", bad.display()),
    )
    .expect("write");
    let out =
        std::process::Command::new(crate::harness::BIN).args(["serve", "--config"]).arg(&cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Catch-up of another session's changes (IMAP-25): a few are read in place, more than the
/// in-place limit (32 rows) go through the full read; both must report everything, in UID order.
#[tokio::test]
async fn imap_catch_up_small_and_large() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut a = login(&relay, &addr).await;
    let mut b = login(&relay, &addr).await;
    assert_ok(&a.imap("s", "SELECT INBOX").await);
    assert_ok(&b.imap("s", "SELECT INBOX").await);
    for (round, n) in [(0, 3), (1, 40)] {
        for i in 0..n {
            let msg = sample_message(&addr, &addr, &format!("m{round}-{i}"));
            assert_ok(&append(&mut b, &format!("p{round}-{i}"), "INBOX", "()", &msg).await);
        }
        let total = if round == 0 { 3 } else { 43 };
        let r = a.imap(&format!("n{round}"), "NOOP").await;
        assert!(r.contains(&format!("* {total} EXISTS")), "{r:?}");
    }
    // b expunges 35 messages (UIDs 2..=36); a hears every one, as sequence numbers that stay
    // valid while it applies them in order (all "* 2 EXPUNGE").
    assert_ok(&b.imap("d", "UID STORE 2:36 +FLAGS.SILENT (\\Deleted)").await);
    assert_ok(&b.imap("e", "EXPUNGE").await);
    let r = a.imap("n2", "NOOP").await;
    let gone: Vec<&String> = r.iter().filter(|l| l.ends_with(" EXPUNGE")).collect();
    assert_eq!(gone.len(), 35, "{r:?}");
    assert!(gone.iter().all(|l| l.as_str() == "* 2 EXPUNGE"), "{r:?}");
    let r = a.imap("f", "UID SEARCH ALL").await;
    let want: Vec<String> = std::iter::once(1).chain(37..=43).map(|u: u32| u.to_string()).collect();
    assert_eq!(r[0], format!("* SEARCH {}", want.join(" ")), "{r:?}");
    // A second small round after the large one still works.
    assert_ok(&b.imap("g", "UID STORE 1 +FLAGS.SILENT (\\Seen)").await);
    let r = a.imap("n3", "NOOP").await;
    assert!(r.iter().any(|l| l.starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen")), "{r:?}");
}
