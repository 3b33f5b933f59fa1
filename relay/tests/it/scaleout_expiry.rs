//! Issue 27: the expiry pass on the shared database (run by one node, batches under an advisory
//! lock): old messages go and a session on another node is told; inactive accounts go.

use std::time::Duration;

use crate::harness::*;
use crate::imap_helpers::{assert_ok, login};
use crate::scaleout_pg::{cluster, fresh_database, pg_client};

#[tokio::test]
async fn scaleout_expiry_pass_on_the_shared_database() {
    let Some(url) = fresh_database().await else { return };
    let nodes = cluster(&url, 2);
    let (alice, bob, carol) = (nodes[0].new_address(), nodes[0].new_address(), nodes[0].new_address());
    for a in [&alice, &bob, &carol] {
        create_account(&nodes[0], a).await;
    }
    for _ in 0..2 {
        let r = submit(&nodes[0], &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
        assert!(r.starts_with("250"), "{r}");
    }
    let mut b = login(&nodes[1], &bob).await;
    let sel = b.imap("s", "SELECT INBOX").await;
    assert!(sel.iter().any(|l| l == "* 2 EXISTS"), "{sel:?}");

    // Message 1 is older than delete_mails_after; carol has not logged in for a year.
    let db = pg_client(&url).await;
    db.execute(
        "UPDATE messages SET internal_date = 0 WHERE uid = 1 AND mailbox_id =
         (SELECT b.id FROM mailboxes b JOIN accounts a ON a.id = b.account_id WHERE a.address = $1)",
        &[&bob],
    )
    .await
    .expect("age");
    db.execute("UPDATE accounts SET last_login_day = 0 WHERE address = $1", &[&carol]).await.expect("inactive");

    let (code, out, err) = nodes[0].cli(&["expire"]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!("{out}");

    // Node 2's session hears of the expunge made through node 1.
    let mut gone = false;
    for _ in 0..50 {
        let r = b.imap("n", "NOOP").await;
        if r.iter().any(|l| l == "* 1 EXPUNGE") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the expired message was expunged on node 2's session");
    assert_ok(&b.imap("u", "UID SEARCH ALL").await);
    let left: i64 = db
        .query_one(
            "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id JOIN accounts a ON a.id = b.account_id
             WHERE a.address = $1",
            &[&bob],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 1);
    let carol_rows: i64 =
        db.query_one("SELECT count(*) FROM accounts WHERE address = $1", &[&carol]).await.expect("n").get(0);
    assert_eq!(carol_rows, 0, "the inactive account was deleted");
    let blobs: i64 = db.query_one("SELECT count(*) FROM blob_data", &[]).await.expect("n").get(0);
    assert_eq!(blobs, 1, "the expired body went with its row");
}
