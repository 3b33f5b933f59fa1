//! Issue 27: push jobs on the shared database: a token set through one node, a message
//! submitted through another, exactly one request to the notification proxy (each job is claimed
//! by one node, though every node's notifier polls).

use std::time::Duration;

use crate::harness::*;
use crate::push_notify::{Proxy, token};
use crate::scaleout_pg::{cluster_with, fresh_database, pg_client};

#[test]
fn scaleout_push_once_across_nodes() {
    // The stand-in proxy runs its own runtime, so this test drives one of its own beside it.
    let proxy = Proxy::start(&[], Duration::ZERO);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(push_once(&proxy));
}

async fn push_once(proxy: &Proxy) {
    let Some(url) = fresh_database().await else { return };
    let nodes = cluster_with(&url, 3, &format!("[push]\nnotify_url = \"{}\"\n", proxy.url()));
    let (alice, bob, tok) = (nodes[0].new_address(), nodes[0].new_address(), token());
    create_account(&nodes[0], &alice).await;
    let mut c = Lines::tls(&nodes[1].addr(nodes[1].ports.imaps)).await;
    c.line().await;
    let r = c.imap("a", &format!("LOGIN {bob} {PASSWORD}")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("a OK")), "{r:?}");
    let r = c.imap("b", &format!("SETMETADATA INBOX (/private/devicetoken \"{tok}\")")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("b OK")), "{r:?}");

    let r = submit(&nodes[2], &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert!(r.starts_with("250"), "{r}");
    let mut waited = 0;
    while proxy.hits().is_empty() && waited < 100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let hits = proxy.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].body, tok);
    // Every node's notifier polls every second: none sends it again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(proxy.hits().len(), 1, "one request for one message, whichever node sent it");
    let db = pg_client(&url).await;
    let jobs: i64 = db.query_one("SELECT count(*) FROM push_jobs", &[]).await.expect("n").get(0);
    assert_eq!(jobs, 0, "the job is gone after the 200");
}
