//! Issue 27, RET-14 on PostgreSQL: `chatrelay expire --dry-run` reports what a pass would remove
//! (through a running node's control socket, and offline from a CLI of its own) and removes
//! nothing: rows, bodies and the other node's session are as before; the real pass then removes
//! what the dry run listed.

use std::time::Duration;

use crate::harness::*;
use crate::imap_helpers::login;
use crate::scaleout_pg::{cluster, fresh_database, pg_client, pg_extra};

/// Counts that any removal would change.
async fn state(db: &tokio_postgres::Client) -> Vec<i64> {
    let mut out = Vec::new();
    for q in [
        "SELECT count(*) FROM accounts",
        "SELECT count(*) FROM messages",
        "SELECT count(*) FROM blob_data",
        "SELECT count(*) FROM expunged",
        "SELECT count(*) FROM tombstones",
        "SELECT coalesce(sum(highestmodseq), 0)::bigint FROM mailboxes",
        "SELECT coalesce(sum(usage_bytes), 0)::bigint FROM accounts",
    ] {
        out.push(db.query_one(q, &[]).await.expect(q).get(0));
    }
    out
}

#[tokio::test]
async fn scaleout_expire_dry_run_lists_and_removes_nothing() {
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
    let db = pg_client(&url).await;
    db.execute(
        "UPDATE messages SET internal_date = 0 WHERE uid = 1 AND mailbox_id =
         (SELECT b.id FROM mailboxes b JOIN accounts a ON a.id = b.account_id WHERE a.address = $1)",
        &[&bob],
    )
    .await
    .expect("age");
    db.execute("UPDATE accounts SET last_login_day = 0 WHERE address = $1", &[&carol]).await.expect("inactive");
    let before = state(&db).await;

    // Through the running node 2, and from a CLI whose node is not running (it opens the
    // shared database itself): the same report.
    let (code, live, err) = nodes[1].cli(&["expire", "--dry-run"]);
    assert_eq!(code, 0, "{live}\n{err}");
    println!("{live}");
    let offline = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &pg_extra(&url));
    let (code, off, err) = offline.cli(&["expire", "--dry-run"]);
    assert_eq!(code, 0, "{off}\n{err}");
    for out in [&live, &off] {
        assert!(out.starts_with("dry run: nothing was changed"), "{out}");
        assert!(out.contains("accounts deleted: 1\n"), "{out}");
        assert!(out.contains("messages deleted (age): 1\n"), "{out}");
    }
    assert_eq!(state(&db).await, before, "a dry run changes no row");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = b.imap("n", "NOOP").await;
    assert!(!r.iter().any(|l| l.ends_with(" EXPUNGE")), "no expunge reached node 2's session: {r:?}");

    // The pass itself removes what the dry run listed.
    let (code, out, err) = nodes[0].cli(&["expire"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("accounts deleted: 1\n") && out.contains("messages deleted (age): 1\n"), "{out}");
    let after = state(&db).await;
    assert_eq!((after[0], after[1]), (before[0] - 1, before[1] - 1), "{before:?} -> {after:?}");
}
