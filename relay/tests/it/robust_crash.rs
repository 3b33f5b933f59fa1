//! Issue 12, crash safety (SMTP-48): submissions over several connections while the relay is
//! killed with SIGKILL at random points, 20 times. After every restart each message that got a
//! 250 is in the local recipient's INBOX (at least once) and its remote copy is still queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::harness::*;

const ROUNDS: usize = 20;
const CONNS: usize = 4;
const REMOTE: &str = "far@remote.example";

/// One transaction that never panics on a dead connection; `None` when the connection broke.
async fn try_send(c: &mut Lines, from: &str, rcpts: &[&str], eml: &str) -> Option<String> {
    async fn cmd(c: &mut Lines, line: &str) -> Option<String> {
        let w = c.io.get_mut();
        w.write_all(format!("{line}\r\n").as_bytes()).await.ok()?;
        w.flush().await.ok()?;
        let r = c.reply().await;
        (!r.is_empty()).then_some(r)
    }
    if !cmd(c, &format!("MAIL FROM:<{from}>")).await?.starts_with("250") {
        return None;
    }
    for r in rcpts {
        if !cmd(c, &format!("RCPT TO:<{r}>")).await?.starts_with("250") {
            return None;
        }
    }
    if !cmd(c, "DATA").await?.starts_with("354") {
        return None;
    }
    let w = c.io.get_mut();
    w.write_all(smtp_data(eml).as_bytes()).await.ok()?;
    w.flush().await.ok()?;
    let r = c.reply().await;
    (!r.is_empty()).then_some(r)
}

/// Log in on 465 without panicking if the relay dies meanwhile.
async fn try_login(relay_addr: &str, user: &str) -> Option<Lines> {
    use base64::Engine as _;
    let s = tokio::net::TcpStream::connect(relay_addr).await.ok()?;
    let connector = tokio_rustls::TlsConnector::from(client_config(&[]));
    let name = rustls::pki_types::ServerName::try_from("chat.test").ok()?.to_owned();
    let tls = tokio::time::timeout(T, connector.connect(name, s)).await.ok()?.ok()?;
    let mut c = Lines { io: tokio::io::BufReader::new(Box::new(tls)) };
    c.line().await?;
    let w = c.io.get_mut();
    w.write_all(b"EHLO load.example\r\n").await.ok()?;
    c.reply().await;
    let tok = base64::prelude::BASE64_STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
    let w = c.io.get_mut();
    w.write_all(format!("AUTH PLAIN {tok}\r\n").as_bytes()).await.ok()?;
    c.reply().await.starts_with("235").then_some(c)
}

fn marker_of(msg: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(msg);
    let i = s.find("<crash-")?;
    let j = s[i..].find('@')?;
    Some(s[i + 1..i + j].to_string())
}

/// Markers of every blob the queue references, read from the relay's database and blob files.
async fn queued_markers(relay: &Relay) -> Vec<String> {
    let db = relay.data_dir().join("chatrelay.db");
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("db");
    let mut st = c.prepare("SELECT blob FROM queue").expect("prepare");
    let blobs: Vec<String> = st.query_map([], |r| r.get(0)).expect("query").filter_map(|r| r.ok()).collect();
    let store = relay::store::Store::open(&relay.data_dir()).expect("store");
    let mut out = Vec::new();
    for b in blobs {
        let id = relay::store::BlobId::parse(&b).expect("blob id");
        let bytes = store.read_blob(&id).await.expect("queued blob file exists");
        out.extend(marker_of(&bytes));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_accepted_message() {
    let mut relay = Relay::start("max_user_send_per_minute = 100000\nmax_user_send_burst_size = 100000\n");
    let bob = relay.new_address();
    create_account(&relay, &bob).await;
    let senders: Vec<String> = (0..CONNS).map(|_| relay.new_address()).collect();
    for s in &senders {
        create_account(&relay, s).await;
    }
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut total_sent = 0usize;
    for round in 0..ROUNDS {
        let addr = relay.addr(relay.ports.submissions);
        let mut tasks = Vec::new();
        for (k, sender) in senders.iter().enumerate() {
            let (addr, sender, bob, accepted) = (addr.clone(), sender.clone(), bob.clone(), accepted.clone());
            tasks.push(tokio::spawn(async move {
                let Some(mut c) = try_login(&addr, &sender).await else { return 0 };
                let mut n = 0;
                for i in 0..10_000 {
                    let marker = format!("crash-{round}-{k}-{i}");
                    let eml = crate::fixtures::encrypted_eml(&sender, &bob)
                        .replace("<fixture@fixture.test>", &format!("<{marker}@fixture.test>"));
                    match try_send(&mut c, &sender, &[&bob, REMOTE], &eml).await {
                        Some(r) if r.starts_with("250 ") => {
                            accepted.lock().expect("lock").push(marker);
                            n += 1;
                        }
                        Some(r) => panic!("refused while the relay was up: {r}"),
                        None => return n,
                    }
                }
                n
            }));
        }
        // Kill at a random point: during logins, mid-transaction, mid-commit.
        let delay = 150 + rand_u64() % 900;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        relay.kill9();
        for t in tasks {
            total_sent += t.await.expect("load task");
        }
        relay.spawn();

        // Every 250 survived: in bob's INBOX and (remote copy) in the queue.
        let mut inbox: HashMap<String, usize> = HashMap::new();
        for m in inbox_messages(&relay, &bob).await {
            *inbox.entry(marker_of(&m).expect("stored message has its marker")).or_default() += 1;
        }
        let queued = queued_markers(&relay).await;
        let accepted_now = accepted.lock().expect("lock").clone();
        let lost_local: Vec<_> = accepted_now.iter().filter(|m| !inbox.contains_key(*m)).collect();
        let lost_remote: Vec<_> = accepted_now.iter().filter(|m| !queued.contains(m)).collect();
        assert!(lost_local.is_empty(), "round {round}: accepted but not in INBOX: {lost_local:?}");
        assert!(lost_remote.is_empty(), "round {round}: accepted but not queued: {lost_remote:?}");
        let dup = inbox.values().filter(|n| **n > 1).count();
        println!(
            "round {round}: killed after {delay} ms; {} accepted so far, {} in INBOX ({} duplicated), {} queued",
            accepted_now.len(),
            inbox.len(),
            dup,
            queued.len()
        );
    }
    assert!(total_sent >= ROUNDS, "the load generator got messages through ({total_sent})");
    relay.stop();
    let db = relay.data_dir().join("chatrelay.db");
    let c = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("db");
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(ok, "ok");
    println!("{ROUNDS} SIGKILLs, {total_sent} messages accepted, in {:?}", started.elapsed());
}
