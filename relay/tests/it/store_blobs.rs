//! Where message bodies live: small ones (up to `INLINE_MAX`) as rows written in the delivery's
//! own commit, larger ones as fsync'd files. Both read back byte for byte over IMAP and both are
//! removed with the last message that references them.

use std::time::Duration;

use crate::harness::*;
use crate::imap_helpers::{append, assert_ok, login, read_literal, sample_message, wait_line};

fn blob_files(relay: &Relay) -> usize {
    std::fs::read_dir(relay.data_dir().join("blobs")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn small_bodies_in_the_database_large_ones_in_files() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    let small = sample_message(&addr, &addr, &"s".repeat(4000));
    let large = sample_message(&addr, &addr, &"L".repeat(relay::store::INLINE_MAX + 1000));
    assert_ok(&append(&mut c, "a1", "INBOX", "()", &small).await);
    assert_ok(&append(&mut c, "a2", "INBOX", "()", &large).await);

    let db = relay.db();
    assert_eq!(count(&db, "SELECT count(*) FROM blob_data"), 1, "the small body is a row");
    assert_eq!(blob_files(&relay), 1, "the large body is a file");
    let inline_len = count(&db, "SELECT length(data) FROM blob_data");
    assert_eq!(inline_len as usize, small.len());

    assert_ok(&c.imap("s1", "SELECT INBOX").await);
    for (seq, want) in [(1, &small), (2, &large)] {
        c.send(&format!("f{seq} FETCH {seq} BODY.PEEK[]")).await;
        let (head, _) = wait_line(&mut c, |l| l.starts_with(&format!("* {seq} FETCH"))).await;
        assert_eq!(&read_literal(&mut c, &head).await, want, "message {seq} byte for byte");
        let rest = c.until_tag(&format!("f{seq}")).await;
        assert_ok(&rest);
    }
    // Delta Chat's prefetch asks for the header only; an inline body is cut at the blank line.
    c.send("h1 FETCH 1 BODY.PEEK[HEADER]").await;
    let (head, _) = wait_line(&mut c, |l| l.starts_with("* 1 FETCH")).await;
    let header = read_literal(&mut c, &head).await;
    let end = small.windows(4).position(|w| w == b"\r\n\r\n").expect("header end") + 4;
    assert_eq!(header, &small[..end]);
    assert_ok(&c.until_tag("h1").await);

    assert_ok(&c.imap("d1", "STORE 1:2 +FLAGS.SILENT (\\Deleted)").await);
    assert_ok(&c.imap("e1", "EXPUNGE").await);
    assert!(
        wait_until(Duration::from_secs(5), || count(&db, "SELECT count(*) FROM blob_data") == 0
            && blob_files(&relay) == 0),
        "bodies removed with their last message"
    );
}

/// One body shared by several local recipients is written once and stays until the last of them
/// is expunged.
#[tokio::test]
async fn shared_body_outlives_the_first_expunge() {
    let relay = Relay::start("");
    let (a, b, sender) = (relay.new_address(), relay.new_address(), relay.new_address());
    create_account(&relay, &a).await;
    create_account(&relay, &b).await;
    let eml = encrypted_eml(&sender, &a);
    let r = submit(&relay, &sender, PASSWORD, &sender, &[&a, &b], &eml).await;
    assert!(r.starts_with("250 "), "{r}");
    let db = relay.db();
    assert_eq!(count(&db, "SELECT count(*) FROM blob_data"), 1, "one body for both recipients");
    assert_eq!(count(&db, "SELECT count(DISTINCT blob) FROM messages"), 1);
    assert_eq!(blob_files(&relay), 0, "a small message needs no file");

    let mut c = login(&relay, &a).await;
    assert_ok(&c.imap("s1", "SELECT INBOX").await);
    assert_ok(&c.imap("d1", "STORE 1 +FLAGS.SILENT (\\Deleted)").await);
    assert_ok(&c.imap("e1", "EXPUNGE").await);
    assert_eq!(count(&db, "SELECT count(*) FROM blob_data"), 1, "b still has the message");
    assert_eq!(inbox_messages(&relay, &b).await.len(), 1);

    let mut c = login(&relay, &b).await;
    assert_ok(&c.imap("s1", "SELECT INBOX").await);
    assert_ok(&c.imap("d1", "STORE 1 +FLAGS.SILENT (\\Deleted)").await);
    assert_ok(&c.imap("e1", "EXPUNGE").await);
    assert!(wait_until(Duration::from_secs(5), || count(&db, "SELECT count(*) FROM blob_data") == 0), "body gone");
}
