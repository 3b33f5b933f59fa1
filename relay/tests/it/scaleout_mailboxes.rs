//! Issue 27: the IMAP mailbox operations on the shared database, seen across nodes: CREATE,
//! APPEND, COPY, MOVE, RENAME, DELETE.

use crate::imap_helpers::{append, assert_ok, login, read_literal, sample_message};
use crate::scaleout_pg::{cluster, fresh_database};

#[tokio::test]
async fn scaleout_mailbox_operations_across_nodes() {
    let Some(url) = fresh_database().await else { return };
    let nodes = cluster(&url, 2);
    let bob = nodes[0].new_address();
    let mut one = login(&nodes[0], &bob).await;
    let mut two = login(&nodes[1], &bob).await;
    assert_ok(&one.imap("c", "CREATE Archive").await);
    let msg = sample_message("a@chat.test", &bob, "hello across nodes");
    let r = append(&mut one, "a", "INBOX", "(\\Seen $Label)", &msg).await;
    assert_ok(&r);
    assert!(r.iter().any(|l| l.contains("APPENDUID")), "{r:?}");
    assert_ok(&one.imap("a2", "SELECT INBOX").await);
    assert_ok(&one.imap("cp", "UID COPY 1 Archive").await);
    assert_ok(&one.imap("mv", "UID MOVE 1 Archive").await);

    // Node 2 sees both copies in Archive, INBOX empty, flags kept, the body shared.
    let sel = two.imap("s", "SELECT Archive").await;
    assert!(sel.iter().any(|l| l == "* 2 EXISTS"), "{sel:?}");
    let r = two.imap("f", "UID FETCH 1:2 (FLAGS)").await;
    assert_eq!(r.iter().filter(|l| l.contains("\\Seen") && l.contains("$Label")).count(), 2, "{r:?}");
    two.send("g UID FETCH 2 (BODY.PEEK[])").await;
    let head = two.line().await.expect("line");
    assert_eq!(read_literal(&mut two, &head).await, msg);
    two.until_tag("g").await;
    let st = two.imap("st", "STATUS INBOX (MESSAGES)").await;
    assert!(st.iter().any(|l| l.contains("(MESSAGES 0)")), "{st:?}");

    // RENAME and DELETE through node 2, seen by node 1's LIST.
    assert_ok(&two.imap("u", "UNSELECT").await);
    assert_ok(&two.imap("r", "RENAME Archive Old").await);
    let l = one.imap("l", "LIST \"\" *").await;
    assert!(l.iter().any(|x| x.ends_with("\"Old\"") || x.ends_with(" Old")), "{l:?}");
    assert!(!l.iter().any(|x| x.contains("Archive")), "{l:?}");
    assert_ok(&two.imap("d", "DELETE Old").await);
    let l = one.imap("l2", "LIST \"\" *").await;
    assert!(!l.iter().any(|x| x.contains("Old")), "{l:?}");
}
