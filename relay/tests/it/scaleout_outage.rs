//! Issue 27, failure modes (docs/scale-out.md): while PostgreSQL or the object store cannot be
//! reached, a node refuses with a temporary error (SMTP 4xx, IMAP NO, HTTP 5xx) and never
//! acknowledges what it could not store; when the engine is back, the same node serves again
//! without a restart. The engines sit behind a loopback forwarder the test can cut, so the shared
//! test cluster keeps running for the other tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::harness::*;
use crate::scaleout_pg::{fresh_database, pg_client, pg_extra};

/// A TCP forwarder to `target` that can be cut (open connections reset, new ones closed at once),
/// stalled (open connections freeze, new ones are accepted and never answered: a frozen host or a
/// partition without resets) and restored.
struct Link {
    port: u16,
    up: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    cut_tx: watch::Sender<u64>,
}

impl Link {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind forwarder");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let (cut_tx, cut_rx) = watch::channel(0u64);
        let (up2, stalled2) = (up.clone(), stalled.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if stalled2.load(Ordering::SeqCst) {
                    tokio::spawn(async move {
                        let _held = inbound;
                        std::future::pending::<()>().await;
                    });
                    continue;
                }
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let stalled3 = stalled2.clone();
                let mut cut = cut_rx.clone();
                // Only a cut after this connection opened ends it.
                cut.borrow_and_update();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {
                            if stalled3.load(Ordering::SeqCst) {
                                // Frozen: both sockets stay open, nothing moves, ever.
                                let _held = (inbound, outbound);
                                match std::future::pending::<std::convert::Infallible>().await {}
                            }
                            // Reset rather than close: what a crashed engine looks like. (Linger 0
                            // sends a reset at once; it cannot block the thread.)
                            #[allow(deprecated)]
                            let _ = inbound.set_linger(Some(Duration::ZERO));
                        }
                    }
                });
            }
        });
        Self { port, up, stalled, cut_tx }
    }

    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
        self.cut_tx.send_modify(|n| *n += 1);
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut_tx.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Retries while an engine is down count as sends; the rate limit is not what is tested here.
const RATE: &str = "max_user_send_per_minute = 6000\nmax_user_send_burst_size = 1000\n";

/// `url` with its host:port replaced by the forwarder's.
fn via(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("url scheme");
    let (userhost, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, _) = userhost.rsplit_once('@').map(|(u, h)| (format!("{u}@"), h)).unwrap_or((String::new(), userhost));
    format!("{scheme}://{user}127.0.0.1:{port}/{path}")
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport.rsplit_once('@').map_or(hostport, |(_, h)| h).to_string()
}

/// Submit until the reply starts with `want` (the pool may need a moment to notice), bounded.
async fn submit_until(node: &Relay, from: &str, to: &str, eml: &str, want: char, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let started = Instant::now();
        let r = submit(node, from, PASSWORD, from, &[to], eml).await;
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: a submission took {:?}", started.elapsed());
        if r.starts_with(want) {
            return r;
        }
        assert!(!r.starts_with('5'), "{what}: a permanent refusal for a temporary outage: {r}");
        assert!(Instant::now() < deadline, "{what}: still {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stored_count(url: &str) -> i64 {
    let db = pg_client(url).await;
    db.query_one("SELECT count(*) FROM messages", &[]).await.expect("count").get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_database_outage_refuses_and_recovers() {
    let Some(url) = fresh_database().await else { return };
    let link = Link::start(host_port(&url)).await;
    let mut node =
        Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &format!("{RATE}{}", pg_extra(&via(&url, link.port))));
    node.spawn();
    let (alice, bob) = (node.new_address(), node.new_address());
    create_account(&node, &alice).await;
    create_account(&node, &bob).await;
    let eml = encrypted_eml(&alice, &bob);
    let r = submit(&node, &alice, PASSWORD, &alice, &[&bob], &eml).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(stored_count(&url).await, 1);

    link.cut();
    let r = submit_until(&node, &alice, &bob, &eml, '4', "database down").await;
    assert!(r.starts_with("4"), "{r}");
    // A new IMAP login is refused with NO, not an OK, a hang or a dropped connection.
    let mut c = Lines::tls(&node.addr(node.ports.imaps)).await;
    let _ = c.line().await.expect("greeting");
    let l = c.imap("l", &format!("LOGIN \"{}\" \"{PASSWORD}\"", node.new_address())).await;
    let tagged = l.last().cloned().unwrap_or_default();
    assert!(tagged.starts_with("l NO"), "a login needing the database while it is down: {l:?}");
    // An account cannot be handed out that was never stored.
    let resp = node.https("POST", "/new").await;
    assert!(resp.status >= 500, "/new while the database is down: {} {}", resp.status, resp.text());
    assert_eq!(stored_count(&url).await, 1, "nothing acknowledged or stored while down");

    link.restore();
    let r = submit_until(&node, &alice, &bob, &eml, '2', "database back").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(stored_count(&url).await, 2, "the node serves again without a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_object_store_outage_refuses_large_bodies_only() {
    let Some(url) = fresh_database().await else { return };
    let (Ok(endpoint), Ok(_)) = (std::env::var("RELAYTEST_S3_ENDPOINT"), std::env::var("AWS_ACCESS_KEY_ID")) else {
        eprintln!("SKIPPED: RELAYTEST_S3_ENDPOINT / AWS_ACCESS_KEY_ID not set (run tests/scaleout/run.sh)");
        return;
    };
    let link = Link::start(host_port(&endpoint)).await;
    let bucket = format!("b{}", random_local());
    let extra = format!(
        "{RATE}{}[blobs]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:{}\"\nbucket = \"{bucket}\"\nregion = \"us-east-1\"\n",
        pg_extra(&url),
        link.port
    );
    let mut node = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &extra);
    node.spawn();
    let (alice, bob) = (node.new_address(), node.new_address());
    create_account(&node, &alice).await;
    create_account(&node, &bob).await;
    let big = crate::smtp_large::big_encrypted_eml(&alice, &bob, 600 * 1024);
    let small = encrypted_eml(&alice, &bob);

    link.cut();
    let r = submit_until(&node, &alice, &bob, &big, '4', "object store down").await;
    assert!(r.starts_with("4"), "{r}");
    let r = submit(&node, &alice, PASSWORD, &alice, &[&bob], &small).await;
    assert!(r.starts_with("250"), "a small body stays inline in the database: {r}");
    assert_eq!(stored_count(&url).await, 1, "the large message was not stored");

    link.restore();
    let r = submit_until(&node, &alice, &bob, &big, '2', "object store back").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(stored_count(&url).await, 2);
}

/// A database that stops answering without closing anything: store calls fail within
/// `[store] timeout` (4xx, not a hang), and once it answers again the node serves, and its LISTEN
/// connection, frozen with the rest, was replaced: a delivery on node 1 still wakes an IDLE
/// session on node 2 (without the pings, that connection would wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaleout_stalled_database_fails_fast_and_wakeups_resume() {
    let Some(url) = fresh_database().await else { return };
    let link = Link::start(host_port(&url)).await;
    let secret = [5u8; 32];
    let extra = format!("{RATE}{}timeout = \"2s\"\n", pg_extra(&via(&url, link.port)));
    let nodes: Vec<Relay> = (0..2)
        .map(|_| {
            let mut r = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), &extra);
            std::fs::create_dir_all(r.data_dir()).expect("dir");
            std::fs::write(r.data_dir().join("secret.key"), secret).expect("secret");
            r.spawn();
            r
        })
        .collect();
    let (alice, bob) = (nodes[0].new_address(), nodes[0].new_address());
    create_account(&nodes[0], &alice).await;
    create_account(&nodes[0], &bob).await;
    let eml = encrypted_eml(&alice, &bob);
    let mut idle = crate::imap_helpers::login(&nodes[1], &bob).await;
    let sel = idle.imap("s", "SELECT INBOX").await;
    assert!(sel.iter().any(|l| l == "* 0 EXISTS"), "{sel:?}");
    idle.send("i IDLE").await;
    assert!(idle.line().await.unwrap_or_default().starts_with("+ "), "idling");

    link.stall();
    let started = Instant::now();
    let r = submit(&nodes[0], &alice, PASSWORD, &alice, &[&bob], &eml).await;
    let took = started.elapsed();
    assert!(r.starts_with('4'), "a submission while the database is frozen: {r}");
    assert!(took < Duration::from_secs(12), "refused after {took:?}, not within a few timeouts");
    // Longer than the timeout: node 2's frozen LISTEN connection misses a ping meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;

    link.restore();
    let r = submit_until(&nodes[0], &alice, &bob, &eml, '2', "database answering again").await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(stored_count(&url).await, 1, "only the acknowledged message is stored");
    // (wait_line fails when no line comes within 15 s: the IDLE session was never woken.)
    let (line, _) = crate::imap_helpers::wait_line(&mut idle, |l| l.ends_with(" EXISTS")).await;
    assert_eq!(line, "* 1 EXISTS", "the IDLE session on node 2 was woken after the outage");
}
