//! Issue 8: push notifications (push.md) from a real relay process to a stand-in notification
//! proxy: a real HTTP/1.1 server on loopback that answers with scripted status codes and records
//! every request body. Tokens and messages are seeded through `relay::store::Store`; messages
//! delivered from this process are picked up by the notifier's 1 s poll.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::harness::*;
use crate::seeding::seed_subscriber;

#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub(crate) at: Instant,
    request_line: String,
    pub(crate) body: String,
}

#[derive(Default)]
struct ProxyState {
    script: VecDeque<u16>,
    hits: Vec<Hit>,
    open: usize,
    max_open: usize,
}

/// The stand-in for the chatmail notification proxy.
pub(crate) struct Proxy {
    pub(crate) addr: String,
    state: Arc<Mutex<ProxyState>>,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    /// Answers the statuses of `script` in order, then 200; each answer after `delay`.
    fn start_inner(script: &[u16], delay: Duration, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(Mutex::new(ProxyState { script: script.iter().copied().collect(), ..Default::default() }));
        let st = state.clone();
        rt.spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), async move {
                        match tls {
                            Some(acceptor) => match acceptor.accept(sock).await {
                                Ok(s) => serve_one(s, st, delay).await,
                                Err(_) => Ok(()),
                            },
                            None => serve_one(sock, st, delay).await,
                        }
                    })
                    .await;
                });
            }
        });
        Self { addr, state, _rt: rt }
    }

    pub(crate) fn start(script: &[u16], delay: Duration) -> Self {
        Self::start_inner(script, delay, None)
    }

    /// An HTTPS proxy with a fresh self-signed certificate for `localhost`; returns the PEM too.
    fn start_tls() -> (Self, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        (Self::start_inner(&[], Duration::ZERO, Some(acceptor)), ck.cert.pem())
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/notify", self.addr)
    }

    pub(crate) fn hits(&self) -> Vec<Hit> {
        self.state.lock().expect("lock").hits.clone()
    }

    pub(crate) fn wait_hits(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        wait_until(timeout, || self.hits().len() >= n);
        self.hits()
    }
}

async fn serve_one<S>(sock: S, st: Arc<Mutex<ProxyState>>, delay: Duration) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::new(sock);
    let mut request_line = String::new();
    r.read_line(&mut request_line).await?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    let status = {
        let mut s = st.lock().expect("lock");
        s.open += 1;
        s.max_open = s.max_open.max(s.open);
        s.hits.push(Hit {
            at: Instant::now(),
            request_line: request_line.trim().to_string(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        s.script.pop_front().unwrap_or(200)
    };
    tokio::time::sleep(delay).await;
    st.lock().expect("lock").open -= 1;
    let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    r.get_mut().write_all(resp.as_bytes()).await?;
    r.get_mut().shutdown().await
}

/// A stopped relay that notifies `proxy`, ready for seeding.
fn push_relay(proxy: &Proxy) -> Relay {
    Relay::stopped(&format!("[push]\nnotify_url = \"{}\"\n", proxy.url()))
}

pub(crate) fn token() -> String {
    format!("openpgp:{}", random_local().repeat(4))
}

pub(crate) fn jobs(relay: &Relay) -> i64 {
    count(&relay.db(), "SELECT count(*) FROM push_jobs")
}

/// PUSH-4, PUSH-7, PUSH-11, PUSH-17: a message stored while the relay was down is notified after
/// start (the job is durable), one delivered while it runs too; each POST's body is exactly the
/// token, the job is gone afterwards, and the token never appears in the log.
#[test]
fn delivered_message_posts_the_token() {
    let proxy = Proxy::start(&[], Duration::ZERO);
    let mut relay = push_relay(&proxy);
    let (addr, tok) = (relay.new_address(), token());
    let acc = relay.with_store(async |s| seed_subscriber(s, &addr, &tok, Some(500)).await);
    assert_eq!(jobs(&relay), 1, "the delivery transaction created the job");
    relay.spawn();
    let hits = proxy.wait_hits(1, Duration::from_secs(15));
    assert_eq!(hits.len(), 1, "one POST for the message stored before start:\n{}", relay.log());
    assert_eq!(hits[0].request_line, "POST /notify HTTP/1.1");
    assert_eq!(hits[0].body, tok, "the body is exactly the token");
    assert!(wait_until(Duration::from_secs(5), || jobs(&relay) == 0), "job deleted after 200");

    let sent = Instant::now();
    relay.with_store(async |s| seed_message(s, acc.id, None, 500).await);
    let hits = proxy.wait_hits(2, Duration::from_secs(15));
    assert_eq!(hits.len(), 2, "a message stored while running is notified");
    assert_eq!(hits[1].body, tok);
    println!("notification {:?} after delivery (includes the 1 s poll)", hits[1].at - sent);
    assert!(wait_until(Duration::from_secs(5), || jobs(&relay) == 0));
    assert_eq!(relay.stop(), Some(0));
    assert!(!relay.log().contains(&tok), "the token never appears in the log (PUSH-17)");
}

/// PUSH-9: 410 deletes the token and its jobs; no retry follows.
#[test]
fn gone_410_removes_the_token() {
    let proxy = Proxy::start(&[410], Duration::ZERO);
    let mut relay = push_relay(&proxy);
    let (addr, tok) = (relay.new_address(), token());
    let acc = relay.with_store(async |s| seed_subscriber(s, &addr, &tok, Some(500)).await);
    relay.spawn();
    assert_eq!(proxy.wait_hits(1, Duration::from_secs(15)).len(), 1, "{}", relay.log());
    let tokens = || -> i64 {
        relay
            .db()
            .query_row("SELECT count(*) FROM push_tokens WHERE account_id = ?1", [acc.id], |r| r.get(0))
            .expect("q")
    };
    assert!(wait_until(Duration::from_secs(5), || tokens() == 0), "token removed after 410");
    assert_eq!(jobs(&relay), 0, "its job is dropped");
    let left = relay.with_store(async |s| s.push_tokens(acc.id).await.expect("tokens"));
    assert!(left.is_empty(), "push_tokens() is empty: {left:?}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.hits().len(), 1, "no retry after 410");
}

/// PUSH-9, PUSH-10: a 500 is retried (after 1 s) and the message is notified exactly once more.
#[test]
fn server_error_is_retried_then_delivered_once() {
    let proxy = Proxy::start(&[500], Duration::ZERO);
    let mut relay = push_relay(&proxy);
    let (addr, tok) = (relay.new_address(), token());
    relay.with_store(async |s| seed_subscriber(s, &addr, &tok, Some(500)).await);
    relay.spawn();
    let hits = proxy.wait_hits(2, Duration::from_secs(15));
    assert_eq!(hits.len(), 2, "first attempt (500) and one retry:\n{}", relay.log());
    assert!(hits.iter().all(|h| h.body == tok));
    println!("retry came {:?} after the failed attempt (PUSH-10: 1 s)", hits[1].at - hits[0].at);
    assert!(wait_until(Duration::from_secs(5), || jobs(&relay) == 0), "job done after the 200");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.hits().len(), 2, "no further request after the 200");
    // PUSH-16.
    assert_eq!(relay.metric("chatrelay_push_requests_total{result=\"retry\"}"), Some(1.0));
    assert_eq!(relay.metric("chatrelay_push_requests_total{result=\"ok\"}"), Some(1.0));
    assert_eq!(relay.metric("chatrelay_push_latency_seconds_count"), Some(1.0));
    assert_eq!(relay.metric("chatrelay_push_pending"), Some(0.0));
    assert!(!relay.metrics_text().contains(&tok), "no token in metrics");
}

/// PUSH-5: a self-sent copy produces no job and no request; a message from someone else does.
#[test]
fn self_sent_copy_is_not_notified() {
    let proxy = Proxy::start(&[], Duration::ZERO);
    let mut relay = push_relay(&proxy);
    let (addr, tok) = (relay.new_address(), token());
    let acc = relay.with_store(async |s| seed_subscriber(s, &addr, &tok, None).await);
    relay.spawn();
    relay.with_store(async |s| seed_message(s, acc.id, Some(acc.id), 500).await);
    assert_eq!(jobs(&relay), 0, "no job for a self-sent copy");
    std::thread::sleep(Duration::from_secs(3));
    assert!(proxy.hits().is_empty(), "no POST for a self-sent copy");
    relay.with_store(async |s| seed_message(s, acc.id, None, 500).await);
    assert_eq!(proxy.wait_hits(1, Duration::from_secs(15)).len(), 1, "a message from another sender is notified");
}

/// PUSH-13..15: 20 messages in a burst give far fewer than 20 requests, and the last message of
/// the burst is followed by a request that started after it was stored.
#[test]
fn burst_is_coalesced_and_last_message_notified() {
    // A slow proxy keeps requests in flight while messages arrive (the PUSH-15 race).
    let proxy = Proxy::start(&[], Duration::from_millis(300));
    let mut relay = push_relay(&proxy);
    let (addr, tok) = (relay.new_address(), token());
    let acc = relay.with_store(async |s| seed_subscriber(s, &addr, &tok, None).await);
    relay.spawn();
    let last_stored = relay.with_store(async |s| {
        for _ in 0..20 {
            seed_message(s, acc.id, None, 300).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        Instant::now() - Duration::from_millis(150)
    });
    let after_last = || proxy.hits().iter().any(|h| h.at > last_stored);
    assert!(wait_until(Duration::from_secs(15), after_last), "no request after the last message:\n{}", relay.log());
    assert!(wait_until(Duration::from_secs(10), || jobs(&relay) == 0), "nothing left pending");
    std::thread::sleep(Duration::from_secs(3));
    let hits = proxy.hits();
    println!("20 messages over ~3 s -> {} requests", hits.len());
    assert!(hits.len() < 10, "burst coalesced: {} requests", hits.len());
    assert!(hits.iter().all(|h| h.body == tok));
    for w in hits.windows(2) {
        println!("gap between requests: {:?}", w[1].at - w[0].at);
    }
    // Every message is accounted for: each request covers its first message plus the merged ones.
    let coalesced = relay.metric("chatrelay_push_coalesced_total").unwrap_or(0.0);
    assert_eq!(coalesced as usize + hits.len(), 20, "coalesced {coalesced} + requests {}", hits.len());
}

/// PUSH-12: with 20 tokens due at once and a slow proxy, at most 16 requests are open at a time
/// and every token is still notified.
#[test]
fn at_most_16_requests_in_flight() {
    let proxy = Proxy::start(&[], Duration::from_millis(1500));
    let mut relay = push_relay(&proxy);
    let addrs: Vec<String> = (0..20).map(|_| relay.new_address()).collect();
    let tokens: Vec<String> = relay.with_store(async |s| {
        let mut tokens = Vec::new();
        for a in &addrs {
            let t = token();
            seed_subscriber(s, a, &t, Some(100)).await;
            tokens.push(t);
        }
        tokens
    });
    relay.spawn();
    let hits = proxy.wait_hits(20, Duration::from_secs(20));
    assert_eq!(hits.len(), 20, "every token notified:\n{}", relay.log());
    let max_open = proxy.state.lock().expect("lock").max_open;
    println!("max concurrent requests seen by the proxy: {max_open}");
    assert!(max_open <= 16, "at most 16 in flight, saw {max_open}");
    let mut bodies: Vec<String> = hits.into_iter().map(|h| h.body).collect();
    bodies.sort();
    let mut want = tokens;
    want.sort();
    assert_eq!(bodies, want);
}

/// PUSH-6: with `notify_url = ""` nothing is sent and pending jobs wait; after a SIGHUP reload that
/// sets the URL, they are sent.
#[test]
fn empty_notify_url_sends_nothing_until_reloaded() {
    let proxy = Proxy::start(&[], Duration::ZERO);
    let mut relay = Relay::stopped("[push]\nnotify_url = \"\"\n");
    let (addr, tok) = (relay.new_address(), token());
    relay.with_store(async |s| seed_subscriber(s, &addr, &tok, Some(100)).await);
    relay.spawn();
    std::thread::sleep(Duration::from_secs(3));
    assert!(proxy.hits().is_empty());
    assert_eq!(jobs(&relay), 1, "the job waits while push is off");
    let cfg = std::fs::read_to_string(&relay.config_path).expect("config");
    std::fs::write(&relay.config_path, cfg.replace("notify_url = \"\"", &format!("notify_url = \"{}\"", proxy.url())))
        .expect("write config");
    let _ = std::process::Command::new("kill").args(["-HUP", &relay.pid().to_string()]).status();
    let hits = proxy.wait_hits(1, Duration::from_secs(15));
    assert_eq!(hits.len(), 1, "sent after the reload:\n{}", relay.log());
    assert_eq!(hits[0].body, tok);
}

/// PUSH-8: an HTTPS proxy's certificate must verify against the built-in roots plus
/// `delivery.extra_root_certs`: trusted there, the request goes through; untrusted, it never does.
#[test]
fn https_proxy_is_verified_against_extra_roots() {
    let (proxy, pem) = Proxy::start_tls();
    let url = format!("https://localhost:{}/notify", proxy.addr.rsplit(':').next().expect("port"));
    let untrusted_tok = token();
    for trusted in [false, true] {
        let dir = tempfile::tempdir().expect("tmp");
        let roots = dir.path().join("proxy-ca.pem");
        std::fs::write(&roots, &pem).expect("pem");
        let extra = if trusted { roots.display().to_string() } else { String::new() };
        let mut relay =
            Relay::stopped(&format!("[delivery]\nextra_root_certs = \"{extra}\"\n[push]\nnotify_url = \"{url}\"\n"));
        let (addr, tok) = (relay.new_address(), if trusted { token() } else { untrusted_tok.clone() });
        relay.with_store(async |s| seed_subscriber(s, &addr, &tok, Some(100)).await);
        relay.spawn();
        if trusted {
            let hits = proxy.wait_hits(1, Duration::from_secs(15));
            assert_eq!(hits.len(), 1, "trusted proxy reached:\n{}", relay.log());
            assert_eq!(hits[0].body, tok);
        } else {
            assert!(
                wait_until(Duration::from_secs(10), || relay.log().contains("will retry")),
                "the failed handshake is a retry:\n{}",
                relay.log()
            );
            assert!(proxy.hits().is_empty(), "nothing reached an untrusted proxy");
            assert_eq!(jobs(&relay), 1, "the job waits for its retry");
        }
        assert_eq!(relay.stop(), Some(0));
    }
}
