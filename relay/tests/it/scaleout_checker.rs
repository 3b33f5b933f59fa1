//! Issue 27: the IMAP concurrency checker of issue 25 (`imap_checker`) across two nodes of one
//! PostgreSQL: raw and async-imap sessions of one account spread over node 1 and node 2,
//! deliveries into either node, the oracle polling PostgreSQL. Every invariant of the one-node
//! run must hold across nodes (the view contract, docs/scale-out.md "Ordering across nodes").
//!
//! A short run by default (6 s, for CI); a long one, replaying a seed or not:
//! `IMAP_CHECKER_SECS=300 [IMAP_CHECKER_SEED=N] cargo test -p relay --test it -- scaleout_checker --nocapture`
//! with `RELAYTEST_PG_URL` set (tests/scaleout/run.sh starts the engine).

use crate::harness::{Ports, Relay, rand_u64};
use crate::imap_checker::{Db, Setup, UNLIMITED_SEND, run};
use crate::scaleout_pg::{fresh_database, pg_extra};

/// `n` nodes of one domain on `url`, sharing the keyed-hash secret, with the checker's limits
/// at top level (before `[store]`).
fn nodes(url: &str, n: usize) -> Vec<Relay> {
    let secret: [u8; 32] = std::array::from_fn(|i| (rand_u64() as u8).wrapping_add(i as u8));
    (0..n)
        .map(|_| {
            let mut r =
                Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &format!("{UNLIMITED_SEND}{}", pg_extra(url)));
            std::fs::create_dir_all(r.data_dir()).expect("data dir");
            std::fs::write(r.data_dir().join("secret.key"), secret).expect("secret");
            r.spawn();
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaleout_checker() {
    let Some(url) = fresh_database().await else { return };
    let nodes = nodes(&url, 2);
    run(Setup {
        label: "scale-out checker (2 nodes, one PostgreSQL)",
        nodes: &nodes,
        db: Db::Postgres(url),
        default_secs: 6,
        raw_sessions: 4,
        dc_sessions: 2,
    })
    .await;
}

/// Two accounts writing to each other at once, each copying itself (Delta Chat's multi-device
/// self-copy), through both nodes: every delivery locks its sender's row and its recipients'
/// rows, so the lock order across accounts must be fixed or PostgreSQL aborts one of two
/// crossing deliveries as a deadlock (answered 451). All must be accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaleout_crossing_deliveries_do_not_deadlock() {
    use crate::harness::{PASSWORD, create_account, encrypted_eml, send_mail, smtp_login};
    let Some(url) = fresh_database().await else { return };
    let nodes = nodes(&url, 2);
    let (a, b) = (nodes[0].new_address(), nodes[0].new_address());
    create_account(&nodes[0], &a).await;
    create_account(&nodes[0], &b).await;
    const EACH: usize = 15;
    let mut tasks = Vec::new();
    for (k, (from, to)) in [(&a, &b), (&b, &a), (&a, &b), (&b, &a)].into_iter().enumerate() {
        let (mut c, r) = smtp_login(&nodes[k % 2], from, PASSWORD).await;
        assert!(r.starts_with("235"), "{r}");
        let (from, to) = (from.clone(), to.clone());
        tasks.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for _ in 0..EACH {
                let r = send_mail(&mut c, &from, &[&to, &from], &encrypted_eml(&from, &to)).await;
                if !r.starts_with("250") {
                    refused.push(r);
                }
            }
            refused
        }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        refused.extend(t.await.expect("sender"));
    }
    println!("crossing deliveries: {} sent, {} refused", 4 * EACH, refused.len());
    assert!(refused.is_empty(), "refused: {refused:?}");
}
