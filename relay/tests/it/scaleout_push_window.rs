//! Issue 27, PUSH-14 across nodes: the 2 s window after a successful request is one decision for
//! the cluster, kept in the database. Messages for one token submitted through alternating nodes,
//! each right after the previous notification arrived, are notified at most once per window (a
//! node that only remembered its own requests would send the next one at once) and each is
//! notified (PUSH-15).

use std::time::Duration;

use crate::harness::*;
use crate::push_notify::{Proxy, token};
use crate::scaleout_pg::{cluster_with, fresh_database};

#[test]
fn scaleout_push_window_across_nodes() {
    let proxy = Proxy::start(&[], Duration::ZERO);
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(window(&proxy));
}

async fn wait_hits(proxy: &Proxy, n: usize) -> usize {
    for _ in 0..100 {
        if proxy.hits().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.hits().len()
}

async fn window(proxy: &Proxy) {
    let Some(url) = fresh_database().await else { return };
    let nodes = cluster_with(&url, 2, &format!("[push]\nnotify_url = \"{}\"\n", proxy.url()));
    let (alice, bob, tok) = (nodes[0].new_address(), nodes[0].new_address(), token());
    create_account(&nodes[0], &alice).await;
    let mut c = Lines::tls(&nodes[0].addr(nodes[0].ports.imaps)).await;
    c.line().await;
    let r = c.imap("a", &format!("LOGIN {bob} {PASSWORD}")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("a OK")), "{r:?}");
    let r = c.imap("b", &format!("SETMETADATA INBOX (/private/devicetoken \"{tok}\")")).await;
    assert!(r.last().is_some_and(|l| l.starts_with("b OK")), "{r:?}");

    // Message i through node i % 2, as soon as notification i - 1 reached the proxy: the
    // delivering node wakes at once and claims the new job, though another node sent the last.
    const N: usize = 4;
    for i in 0..N {
        let node = &nodes[i % 2];
        let r = submit(node, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
        assert!(r.starts_with("250"), "{r}");
        assert_eq!(wait_hits(proxy, i + 1).await, i + 1, "message {i} notified (PUSH-15)");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let hits = proxy.hits();
    assert_eq!(hits.len(), N, "one request per message, none twice");
    let gaps: Vec<Duration> = hits.windows(2).map(|w| w[1].at - w[0].at).collect();
    println!("PUSH-14 across two nodes: gaps between notifications {gaps:?}");
    for g in &gaps {
        assert!(*g >= Duration::from_millis(1900), "a request within the 2 s window of another node's: {gaps:?}");
    }
}
