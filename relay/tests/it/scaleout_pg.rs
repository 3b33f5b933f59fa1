//! Issue 27: several chatrelay nodes on one PostgreSQL, on loopback. The engine comes from
//! `scripts/pg-cluster.sh` (run by `tests/scaleout/run.sh`), which sets `RELAYTEST_PG_URL`;
//! without it every test here prints why and returns.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::imap_helpers::{assert_ok, last, read_literal, wait_line};

/// A fresh database on the test cluster, or `None` (with the reason printed) when there is none.
pub async fn fresh_database() -> Option<String> {
    let Ok(base) = std::env::var("RELAYTEST_PG_URL") else {
        eprintln!("SKIPPED: RELAYTEST_PG_URL is not set (run tests/scaleout/run.sh, which starts PostgreSQL)");
        return None;
    };
    let (client, conn) =
        tokio_postgres::connect(&base, tokio_postgres::NoTls).await.expect("connect to the test cluster");
    tokio::spawn(conn);
    let name = format!("t_{}", random_local());
    client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
    let (head, _) = base.rsplit_once('/').expect("url with a database");
    Some(format!("{head}/{name}"))
}

pub async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

pub fn pg_extra(url: &str) -> String {
    format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 8\n")
}

/// `n` nodes of one relay domain on one database, sharing the keyed-hash secret as a deployment
/// must (docs/scale-out.md).
pub fn cluster(url: &str, n: usize) -> Vec<Relay> {
    cluster_with(url, n, "")
}

/// `cluster` with `extra` TOML tables after `[store]`.
pub fn cluster_with(url: &str, n: usize, extra: &str) -> Vec<Relay> {
    let secret: [u8; 32] = std::array::from_fn(|i| (rand_u64() as u8).wrapping_add(i as u8));
    (0..n)
        .map(|_| {
            let mut r = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &format!("{}{extra}", pg_extra(url)));
            std::fs::create_dir_all(r.data_dir()).expect("data dir");
            std::fs::write(r.data_dir().join("secret.key"), secret).expect("secret");
            r.spawn();
            r
        })
        .collect()
}

async fn imap_login(relay: &Relay, addr: &str, password: &str) -> (Lines, Vec<String>) {
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    let greeting = c.line().await.expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let r = c.imap("l1", &format!("LOGIN \"{addr}\" \"{password}\"")).await;
    (c, r)
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn scaleout_three_nodes_share_accounts_mail_and_wakeups() {
    let Some(url) = fresh_database().await else { return };
    let nodes = cluster(&url, 3);
    let (alice, bob) = (nodes[0].new_address(), nodes[0].new_address());

    // An account created on node 1 logs in on node 2 (and only with its password).
    create_account(&nodes[0], &alice).await;
    create_account(&nodes[0], &bob).await;
    let (_, r) = imap_login(&nodes[1], &bob, "wrong-password-but-long-enough").await;
    assert!(last(&r).starts_with("l1 NO"), "node 2 knows bob's password: {r:?}");
    let (mut on2, r) = imap_login(&nodes[1], &bob, PASSWORD).await;
    assert_ok(&r);
    assert_ok(&on2.imap("s", "SELECT INBOX").await);
    // The admin CLI of another node lists them too (it reads the shared database).
    let (code, out, err) = nodes[2].cli(&["accounts", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&alice) && out.contains(&bob), "{out}");

    // A message submitted on node 1 wakes an IDLE session on node 3.
    let (mut on3, r) = imap_login(&nodes[2], &bob, PASSWORD).await;
    assert_ok(&r);
    assert_ok(&on3.imap("s", "SELECT INBOX").await);
    on3.send("i IDLE").await;
    assert_eq!(on3.line().await.as_deref(), Some("+ idling"));
    let (mut smtp, r) = smtp_login(&nodes[0], &alice, PASSWORD).await;
    assert!(r.starts_with("235"), "{r}");
    let mut to_exists = Vec::new();
    let mut to_250 = Vec::new();
    let mut after_250 = Vec::new();
    let mut sent = Vec::new();
    const N: usize = 10;
    for i in 1..=N {
        let eml = encrypted_eml(&alice, &bob);
        let reader = tokio::spawn(async move {
            let (l, _) = wait_line(&mut on3, |l| l.ends_with(" EXISTS")).await;
            (on3, l, Instant::now())
        });
        let t = Instant::now();
        let reply = send_mail(&mut smtp, &alice, &[&bob], &eml).await;
        let ok_at = Instant::now();
        assert!(reply.starts_with("250"), "{reply}");
        let (back, l, exists_at) = reader.await.expect("reader");
        on3 = back;
        assert_eq!(l, format!("* {i} EXISTS"));
        // Both follow the commit; EXISTS may come first. Measured from the end of DATA.
        to_exists.push(exists_at - t);
        // Signed: how much later than the 250 the other node's EXISTS arrived.
        after_250.push(
            exists_at.saturating_duration_since(ok_at).as_secs_f64() * 1e3
                - ok_at.saturating_duration_since(exists_at).as_secs_f64() * 1e3,
        );
        to_250.push(ok_at - t);
        sent.push(eml);
    }
    after_250.sort_by(f64::total_cmp);
    println!(
        "cross-node SMTP(node 1) -> IDLE EXISTS(node 3), {N} messages: end of DATA -> EXISTS p50 {:?} (max {:?}); \
         -> 250 p50 {:?}; EXISTS after the 250: p50 {:.2} ms",
        p50(to_exists.clone()),
        to_exists.iter().max().copied().unwrap_or_default(),
        p50(to_250),
        after_250[N / 2]
    );
    on3.send("DONE").await;
    assert_eq!(last(&on3.until_tag("i").await), "i OK IDLE terminated");

    // The body fetched on node 2 is the one stored through node 1.
    let r = on2.imap("n", "NOOP").await;
    assert!(r.iter().any(|l| l == &format!("* {N} EXISTS")), "node 2 sees all {N}: {r:?}");
    on2.send("f UID FETCH 1 (BODY.PEEK[])").await;
    let head = on2.line().await.expect("line");
    assert!(head.contains("BODY[] {"), "{head}");
    let body = read_literal(&mut on2, &head).await;
    assert_eq!(last(&on2.until_tag("f").await), "f OK Fetch completed.");
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("-----BEGIN PGP MESSAGE-----"), "the encrypted body came through");

    // Two sessions of one account on different nodes stay consistent: flags set and a message
    // expunged on node 3 show on node 2 at its next command.
    assert_ok(&on3.imap("a", "UID STORE 1 +FLAGS (\\Seen)").await);
    assert_ok(&on3.imap("b", "UID STORE 2 +FLAGS (\\Deleted)").await);
    assert_ok(&on3.imap("c", "EXPUNGE").await);
    let mut seen_flag = false;
    let mut seen_expunge = false;
    for _ in 0..50 {
        let r = on2.imap("n", "NOOP").await;
        seen_flag |= r.iter().any(|l| l.starts_with("* 1 FETCH") && l.contains("\\Seen"));
        seen_expunge |= r.iter().any(|l| l == "* 2 EXPUNGE");
        if seen_flag && seen_expunge {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen_flag && seen_expunge, "node 2 saw the flag ({seen_flag}) and the expunge ({seen_expunge})");
    let r = on2.imap("u", "UID SEARCH ALL").await;
    let expect: String = std::iter::once(1).chain(3..=N).map(|u| format!(" {u}")).collect();
    assert!(r.iter().any(|l| l == &format!("* SEARCH{expect}")), "{r:?}");
    let r = on3.imap("u", "UID SEARCH ALL").await;
    assert!(r.iter().any(|l| l == &format!("* SEARCH{expect}")), "{r:?}");
}

/// SIGKILL of a node under submission load loses no acknowledged message; the others keep serving.
#[tokio::test]
async fn scaleout_killed_node_loses_no_acknowledged_message() {
    let Some(url) = fresh_database().await else { return };
    let mut nodes = cluster(&url, 3);
    let (alice, bob) = (nodes[0].new_address(), nodes[0].new_address());
    create_account(&nodes[0], &alice).await;
    create_account(&nodes[0], &bob).await;

    // Four senders on node 1, each sending until its connection dies; node 1 is killed mid-way.
    // Acks are counted as they arrive: a sender whose connection is cut panics in the harness.
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (mut c, r) = smtp_login(&nodes[0], &alice, PASSWORD).await;
        assert!(r.starts_with("235"), "{r}");
        let (a, b, acks) = (alice.clone(), bob.clone(), acks.clone());
        senders.push(tokio::spawn(async move {
            for _ in 0..200 {
                let eml = encrypted_eml(&a, &b);
                let rcpts = [b.as_str()];
                match tokio::time::timeout(Duration::from_secs(5), send_mail(&mut c, &a, &rcpts, &eml)).await {
                    Ok(r) if r.starts_with("250") => {
                        acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    nodes[0].kill9();
    for s in senders {
        let _ = s.await;
    }
    let acked = acks.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acked > 0, "some messages were acknowledged before the kill");

    // The other nodes keep serving: a submission on node 2 is accepted.
    let r = submit(&nodes[1], &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert!(r.starts_with("250"), "{r}");

    let db = pg_client(&url).await;
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id JOIN accounts a ON a.id = b.account_id
             WHERE a.address = $1",
            &[&bob],
        )
        .await
        .expect("count")
        .get(0);
    println!(
        "kill -9 under load: {acked} acknowledged by node 1 before the kill, {stored} stored (incl. 1 via node 2)"
    );
    assert!(stored > i64::from(acked), "acknowledged {acked} + 1, stored {stored}");
    let (mut on3, r) = imap_login(&nodes[2], &bob, PASSWORD).await;
    assert_ok(&r);
    let r = on3.imap("s", "SELECT INBOX").await;
    assert!(r.iter().any(|l| l == &format!("* {stored} EXISTS")), "node 3 serves all {stored}: {r:?}");
}

/// A lost notification only delays: node 3's LISTEN connection is cut by the database, a message
/// is delivered through node 1 meanwhile, and node 3's IDLE session still hears of it (the
/// catch-up from its modseq cursor after the listener reconnects).
#[tokio::test]
async fn scaleout_lost_listen_connection_catches_up() {
    let Some(url) = fresh_database().await else { return };
    let nodes = cluster(&url, 2);
    let (alice, bob) = (nodes[0].new_address(), nodes[0].new_address());
    create_account(&nodes[0], &alice).await;
    create_account(&nodes[0], &bob).await;
    let (mut on2, r) = imap_login(&nodes[1], &bob, PASSWORD).await;
    assert_ok(&r);
    assert_ok(&on2.imap("s", "SELECT INBOX").await);
    on2.send("i IDLE").await;
    assert_eq!(on2.line().await.as_deref(), Some("+ idling"));

    // Cut every node's LISTEN connection; the message commits before they are back (retry 500 ms).
    let db = pg_client(&url).await;
    let cut: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'chatrelay-listen' AND datname = current_database()) t",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert_eq!(cut, 2, "both nodes had a LISTEN connection");
    let r = submit(&nodes[0], &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)).await;
    assert!(r.starts_with("250"), "{r}");
    let t = Instant::now();
    let (l, _) = wait_line(&mut on2, |l| l.ends_with(" EXISTS")).await;
    assert_eq!(l, "* 1 EXISTS");
    println!("EXISTS after a lost LISTEN connection: {:?} after the 250", t.elapsed());
    on2.send("DONE").await;
    assert_eq!(last(&on2.until_tag("i").await), "i OK IDLE terminated");
}

/// A node whose keyed-hash secret differs from the cluster's refuses to start (tombstones and
/// the login cache would split); a node without one adopts the cluster's.
#[tokio::test]
async fn scaleout_nodes_share_one_secret() {
    let Some(url) = fresh_database().await else { return };
    let first = cluster(&url, 1);
    let mut fresh = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &pg_extra(&url));
    fresh.spawn();
    let want = std::fs::read(first[0].data_dir().join("secret.key")).expect("secret");
    assert_eq!(std::fs::read(fresh.data_dir().join("secret.key")).expect("adopted"), want);
    let dkim = std::fs::read(first[0].data_dir().join("dkim.pem")).expect("dkim key");
    assert_eq!(std::fs::read(fresh.data_dir().join("dkim.pem")).expect("adopted dkim key"), dkim);

    // The right secret but a DKIM key of its own: refused, the cluster's key stays the one in DNS.
    let odd = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &pg_extra(&url));
    std::fs::create_dir_all(odd.data_dir()).expect("dir");
    std::fs::write(odd.data_dir().join("secret.key"), &want).expect("secret");
    relay::outbound::dkim_key::ensure(&odd.data_dir().join("dkim.pem")).expect("own dkim key");
    let err = refused(&odd).await;
    assert!(err.contains("dkim.pem differs"), "{err}");

    let other = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &pg_extra(&url));
    std::fs::create_dir_all(other.data_dir()).expect("dir");
    std::fs::write(other.data_dir().join("secret.key"), [1u8; 32]).expect("secret");
    let err = refused(&other).await;
    assert!(err.contains("secret.key differs"), "{err}");
}

/// Start `node` and expect it to exit with an error; its stderr.
async fn refused(node: &Relay) -> String {
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&node.config_path)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a node with a different key kept running");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err).expect("read");
    assert!(!status.success(), "{err}");
    err
}
