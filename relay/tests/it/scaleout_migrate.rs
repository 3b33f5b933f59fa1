//! Issue 27: `chatrelay migrate --to postgres` moves a single node's accounts (with their password
//! hashes), messages (inline and file bodies), flags and UIDs into PostgreSQL, verified by counts
//! and checksums, resumable; then a cluster node serves them.

use crate::harness::*;
use crate::imap_helpers::{append, assert_ok, last, login, read_literal};
use crate::scaleout_pg::{fresh_database, pg_extra};

fn uidvalidity(select: &[String]) -> String {
    select.iter().find(|l| l.contains("UIDVALIDITY")).cloned().unwrap_or_default()
}

#[tokio::test]
async fn scaleout_migrate_single_node_into_the_cluster() {
    let Some(url) = fresh_database().await else { return };
    // A single SQLite node that knows the database URL but does not use it yet.
    let single = Relay::start(&format!("[store]\nbackend = \"sqlite\"\nurl = \"{url}\"\n"));
    let (alice, bob) = (single.new_address(), single.new_address());
    create_account(&single, &alice).await;
    create_account(&single, &bob).await;
    for _ in 0..3 {
        let r = submit(&single, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let mut b = login(&single, &bob).await;
    // Larger than the inline limit: a message file in data_dir/blobs.
    let big = crate::imap_helpers::sample_message(&alice, &bob, &"x".repeat(200 * 1024));
    assert_ok(&append(&mut b, "a", "INBOX", "()", &big).await);
    let sel = b.imap("s", "SELECT INBOX").await;
    assert!(sel.iter().any(|l| l == "* 4 EXISTS"), "{sel:?}");
    let uv = uidvalidity(&sel);
    assert_ok(&b.imap("f", "UID STORE 1 +FLAGS (\\Seen)").await);
    drop(b);

    // Migrate while the node runs; then once more, as an interrupted run would be resumed.
    let (code, out, err) = single.cli(&["migrate", "--to", "postgres"]);
    println!("{out}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("verified") && out.contains("checksum messages: equal"), "{out}");
    assert!(out.contains("message files copied: 1"), "{out}");
    let (code, out, err) = single.cli(&["migrate", "--to", "postgres"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("message files copied: 0") && out.contains("verified"), "resumed run copies nothing: {out}");
    let mut single = single;
    single.stop();

    // A cluster node on the database serves the moved data.
    let mut node = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &pg_extra(&url));
    // No secret.key copied: the node adopts the one `migrate` put in the database.
    node.spawn();
    assert_eq!(
        std::fs::read(node.data_dir().join("secret.key")).expect("adopted secret"),
        std::fs::read(single.data_dir().join("secret.key")).expect("secret"),
    );
    assert_eq!(
        std::fs::read(node.data_dir().join("dkim.pem")).expect("adopted dkim key"),
        std::fs::read(single.data_dir().join("dkim.pem")).expect("dkim key"),
        "the cluster signs with the key the migrated relay published"
    );
    let mut b = login(&node, &bob).await; // the moved password hash
    let sel = b.imap("s", "SELECT INBOX").await;
    assert!(sel.iter().any(|l| l == "* 4 EXISTS"), "{sel:?}");
    assert_eq!(uidvalidity(&sel), uv, "UIDVALIDITY kept: clients keep their caches");
    let r = b.imap("f", "UID FETCH 1 (FLAGS)").await;
    assert!(r.iter().any(|l| l.contains("\\Seen")), "{r:?}");
    b.send("g UID FETCH 4 (BODY.PEEK[])").await;
    let head = b.line().await.expect("line");
    assert!(head.contains("BODY[] {"), "{head}");
    assert_eq!(read_literal(&mut b, &head).await, big, "the file body came through");
    assert_eq!(last(&b.until_tag("g").await), "g OK Fetch completed.");
    // New mail continues the UIDs.
    let r = submit(&node, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert!(r.starts_with("250"), "{r}");
    let r = b.imap("n", "NOOP").await;
    assert!(r.iter().any(|l| l == "* 5 EXISTS"), "{r:?}");
    let r = b.imap("u", "UID SEARCH ALL").await;
    assert!(r.iter().any(|l| l == "* SEARCH 1 2 3 4 5"), "{r:?}");
}
