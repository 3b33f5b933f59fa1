//! Issue 26, bounded work: one client cannot stall, bloat or brute-force the relay. Each attack
//! runs against a real relay (one async worker on this 2-core machine, as on a small VPS) while a
//! well-behaved client's port-25 greeting and a delivery to an idling IMAP session must still
//! complete, and the relay's RSS (VmRSS) must stay within the stated bound (peak RSS, VmHWM, grows < 24 MiB).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fixtures::encrypted_eml;
use crate::harness::*;
use crate::imap_helpers::{assert_ok, last, login, wait_line};
use crate::robust_common::rss_kib;

/// Peak RSS (VmHWM) of a process in KiB: the bound holds for the whole attack, not just after
/// it (memory is given back once connections close).
fn peak_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A normal client's view while an attack runs.
struct Probe {
    alice: String,
    bob: String,
    idle: Lines,
    deliveries: u32,
}

impl Probe {
    /// alice may send; bob idles on INBOX.
    async fn new(relay: &Relay) -> Self {
        let (alice, bob) = (relay.new_address(), relay.new_address());
        create_account(relay, &alice).await;
        let mut idle = login(relay, &bob).await;
        assert_ok(&idle.imap("s", "SELECT INBOX").await);
        idle.send("i IDLE").await;
        assert_eq!(idle.line().await.as_deref(), Some("+ idling"));
        Self { alice, bob, idle, deliveries: 0 }
    }

    /// Port-25 greeting latency, then submission → EXISTS on the idling session.
    async fn run(&mut self, relay: &Relay) -> (Duration, Duration) {
        let t = Instant::now();
        let mut c = tokio::time::timeout(Duration::from_secs(10), async {
            let mut c = Lines::plain(&relay.addr(relay.ports.smtp)).await;
            let g = c.reply().await;
            assert!(g.starts_with("220 "), "{g}");
            c
        })
        .await
        .expect("port-25 greeting within 10 s while the attack runs");
        let greeting = t.elapsed();
        let _ = c.cmd("QUIT").await;
        let t = Instant::now();
        let eml = encrypted_eml(&self.alice, &self.bob);
        let delivered = tokio::time::timeout(Duration::from_secs(15), async {
            let r = submit(relay, &self.alice, PASSWORD, &self.alice, &[&self.bob], &eml).await;
            assert!(r.starts_with("250"), "{r}");
            wait_line(&mut self.idle, |l| l.ends_with(" EXISTS")).await
        })
        .await
        .expect("delivery to the idling session within 15 s while the attack runs");
        self.deliveries += 1;
        assert_eq!(delivered.0, format!("* {} EXISTS", self.deliveries));
        (greeting, t.elapsed())
    }
}

/// Run `probe` rounds while `attack` loops; returns the worst greeting and delivery times.
async fn under_attack(relay: &Relay, probe: &mut Probe, rounds: u32) -> (Duration, Duration) {
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let (g, d) = probe.run(relay).await;
        worst = (worst.0.max(g), worst.1.max(d));
    }
    worst
}

/// Log in over 993 and SELECT INBOX.
async fn selected(relay: &Relay, addr: &str) -> Lines {
    let mut c = login(relay, addr).await;
    assert_ok(&c.imap("s", "SELECT INBOX").await);
    c
}

/// Append `n` small messages with pipelined LITERAL+ APPENDs.
async fn fill_inbox(c: &mut Lines, n: usize) {
    let mut buf = Vec::new();
    for i in 0..n {
        let msg = format!("Subject: m{i}\r\n\r\nbody {i}\r\n");
        buf.extend_from_slice(format!("p{i} APPEND INBOX {{{}+}}\r\n{msg}\r\n", msg.len()).as_bytes());
    }
    c.send_raw(&buf).await;
    for i in 0..n {
        assert_ok(&c.until_tag(&format!("p{i}")).await);
    }
}

async fn metric(relay: &Relay, sample: &str) -> f64 {
    let text = http_req(&relay.addr(relay.ports.metrics), "GET", "/metrics", "x").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Spawn `conns` attacker loops running `cmd` (tagged) until stopped; each run must complete.
fn hammer(
    conns: Vec<Lines>,
    cmd: String,
    stop: Arc<AtomicBool>,
    runs: Arc<AtomicU32>,
) -> Vec<tokio::task::JoinHandle<()>> {
    conns
        .into_iter()
        .map(|mut c| {
            let (cmd, stop, runs) = (cmd.clone(), stop.clone(), runs.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = c.imap(&format!("h{i}"), &cmd).await;
                    assert!(last(&r).starts_with(&format!("h{i} OK")), "{:?}", r.last());
                    runs.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect()
}

/// LIST with many `*a` against a 250-octet name: was exponential backtracking (24 s for four
/// `*a`, each more ×45) on the only worker; now linear, and the worker is shared.
#[tokio::test]
async fn list_wildcards_do_not_stall_the_relay() {
    let relay = Relay::start("");
    let mut probe = Probe::new(&relay).await;
    let attacker = relay.new_address();
    let mut c = login(&relay, &attacker).await;
    assert_ok(&c.imap("c", &format!("CREATE {}", "a".repeat(250))).await);
    let t = Instant::now();
    let worst = format!("LIST \"\" \"{}b\"", "*a".repeat(60));
    let r = c.imap("l", &worst).await;
    assert_eq!(last(&r), "l OK LIST completed.");
    let one = t.elapsed();
    println!("LIST with 60 `*a` on a 250-octet name: {one:?}");
    assert!(one < Duration::from_secs(2), "{one:?}");
    let (stop, runs) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let mut conns = vec![c];
    for _ in 0..3 {
        conns.push(login(&relay, &attacker).await);
    }
    let tasks = hammer(conns, worst, stop.clone(), runs.clone());
    let (g, d) = under_attack(&relay, &mut probe, 3).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("attacker LIST completes");
    }
    println!("4 LIST attackers ({} runs): worst greeting {g:?}, delivery {d:?}", runs.load(Ordering::Relaxed));
    assert!(g < Duration::from_secs(2) && d < Duration::from_secs(5), "greeting {g:?}, delivery {d:?}");
}

/// SEARCH / FETCH with 6,000 ranges on 500 messages: the set was resolved again for every
/// message (ranges × messages²); now once, into merged ranges.
#[tokio::test]
async fn search_sequence_sets_resolve_once() {
    let relay = Relay::start("");
    let mut probe = Probe::new(&relay).await;
    let attacker = relay.new_address();
    let mut c = selected(&relay, &attacker).await;
    fill_inbox(&mut c, 500).await;
    assert_ok(&c.imap("s2", "SELECT INBOX").await);
    let set = vec!["1:*"; 6000].join(",");
    let t = Instant::now();
    let r = c.imap("q", &format!("SEARCH {set}")).await;
    assert_eq!(last(&r), "q OK Search completed.");
    let all: Vec<String> = (1..=500).map(|i| i.to_string()).collect();
    assert_eq!(r[0], format!("* SEARCH {}", all.join(" ")));
    let one = t.elapsed();
    println!("SEARCH with 6000 ranges on 500 messages: {one:?}");
    assert!(one < Duration::from_secs(2), "{one:?}");
    let r = c.imap("u", &format!("UID SEARCH UID {set} 7,3:4")).await;
    assert_eq!(r[0], "* SEARCH 3 4 7");
    let r = c.imap("f", &format!("FETCH {},2,1:3 (UID)", vec!["490:*"; 6000].join(","))).await;
    assert_eq!(r.len(), 3 + 11 + 1, "1..3 and 490..500 once each: {:?}", &r[..4]);
    // While four attackers repeat it, normal clients are served.
    let (stop, runs) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU32::new(0)));
    let mut conns = vec![c];
    for _ in 0..3 {
        conns.push(selected(&relay, &attacker).await);
    }
    let tasks = hammer(conns, format!("UID SEARCH {set} UNSEEN"), stop.clone(), runs.clone());
    let (g, d) = under_attack(&relay, &mut probe, 3).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("attacker SEARCH completes");
    }
    println!("4 SEARCH attackers ({} runs): worst greeting {g:?}, delivery {d:?}", runs.load(Ordering::Relaxed));
    assert!(g < Duration::from_secs(2) && d < Duration::from_secs(5), "greeting {g:?}, delivery {d:?}");
}

/// Write `chunks` of `chunk` to `s` ignoring errors (the relay may close early); then read what
/// it answered until EOF (bounded).
async fn flood(
    mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    head: &[u8],
    chunk: &[u8],
    chunks: usize,
) -> Vec<u8> {
    let _ = s.write_all(head).await;
    for _ in 0..chunks {
        if s.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    got
}

/// Before login: a command is at most 8 KiB (line plus literals). LITERAL+ floods are cut off
/// with BYE, synchronising literals over the budget get NO [TOOBIG] before any `+`, and APPEND
/// is refused before its `+`. Was: any number of 64 KiB literals (RSS 16 → 204 MB with 3
/// connections) and `+ OK` for a 30 MB APPEND.
#[tokio::test]
async fn prelogin_command_budget() {
    let relay = Relay::start("");
    let mut probe = Probe::new(&relay).await;
    let imap = relay.addr(relay.ports.imap);
    let (before, peak_before) = (rss_kib(relay.pid()), peak_kib(relay.pid()));
    // Three connections, each 48 MiB of 64 KiB LITERAL+ literals in one command.
    let lit = [format!("{{{}+}}\r\n", 65536).into_bytes(), vec![b'z'; 65536], b" ".to_vec()].concat();
    let floods: Vec<_> = (0..3)
        .map(|_| {
            let (imap, lit) = (imap.clone(), lit.clone());
            tokio::spawn(async move {
                let s = TcpStream::connect(&imap).await.expect("connect");
                flood(s, b"x ID (\"k\" ", &lit, 768).await
            })
        })
        .collect();
    let (g, d) = under_attack(&relay, &mut probe, 2).await;
    let mut answers = Vec::new();
    for f in floods {
        answers.push(String::from_utf8_lossy(&f.await.expect("flood")).into_owned());
    }
    let (after, peak) = (rss_kib(relay.pid()), peak_kib(relay.pid()));
    println!(
        "pre-login literal flood 3 × 48 MiB: RSS {before} → {after} KiB, peak {peak_before} → {peak} KiB; \
         greeting {g:?}, delivery {d:?}"
    );
    assert!(peak.saturating_sub(peak_before) < 24 * 1024, "peak RSS grew {} KiB", peak - peak_before);
    for got in answers {
        assert!(got.contains("* BYE Literal too large"), "{got}");
    }
    assert!(g < Duration::from_secs(2) && d < Duration::from_secs(5), "greeting {g:?}, delivery {d:?}");
    let mut c = Lines::plain(&imap).await;
    c.line().await.expect("greeting");
    c.send("a LOGIN {9000}").await;
    assert_eq!(c.line().await.as_deref(), Some("a NO [TOOBIG] Literal too large"));
    c.send("b APPEND INBOX {31457280}").await;
    assert_eq!(c.line().await.as_deref(), Some("b BAD Not logged in"));
    c.send("c ID (\"name\" {6000+}").await;
    c.send_raw(&vec![b'x'; 6000]).await;
    c.send(")").await;
    assert!(last(&c.until_tag("c").await).starts_with("c OK"), "a literal within the budget is fine");
    assert!(metric(&relay, "chatrelay_limit_hits_total{limit=\"imap_command_bytes\"}").await >= 5.0);
}

/// After COMPRESS DEFLATE the budget counts inflated bytes and inflation goes in small steps:
/// 2 × 128 MiB of zeros (about 130 KiB compressed each) are cut off at the 256 KiB budget. Was:
/// 418 KiB compressed became 392 MB of RSS on 2 connections.
#[tokio::test]
async fn compress_inflation_is_bounded() {
    use flate2::{Compress, Compression, FlushCompress};
    let relay = Relay::start("");
    let mut probe = Probe::new(&relay).await;
    let attacker = relay.new_address();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let mut c = login(&relay, &attacker).await;
        c.send("z COMPRESS DEFLATE").await;
        assert_eq!(c.line().await.as_deref(), Some("z OK DEFLATE active"));
        conns.push(c);
    }
    // One command: SETMETADATA with 2048 literals of 64 KiB zeros, deflated.
    let mut z = Compress::new(Compression::best(), false);
    let mut wire = Vec::new();
    let mut feed = |data: &[u8], flush| {
        let mut out = Vec::with_capacity(data.len() / 100 + 4096);
        z.compress_vec(data, &mut out, flush).expect("deflate");
        while out.len() == out.capacity() {
            out.reserve(out.capacity());
            z.compress_vec(&[], &mut out, flush).expect("deflate");
        }
        wire.extend_from_slice(&out);
    };
    feed(b"m SETMETADATA INBOX (/private/comment ", FlushCompress::None);
    let lit = [b"{65536+}\r\n".to_vec(), vec![0u8; 65536], b" ".to_vec()].concat();
    for _ in 0..2048 {
        feed(&lit, FlushCompress::None);
    }
    feed(b")\r\n", FlushCompress::Sync);
    println!("compressed attack: {} KiB for {} MiB inflated", wire.len() / 1024, 2048 * 65547 / (1 << 20));
    let (before, peak_before) = (rss_kib(relay.pid()), peak_kib(relay.pid()));
    let floods: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let wire = wire.clone();
            tokio::spawn(async move {
                let inner = c.io.into_inner();
                let got = flood(inner, b"", &wire, 1).await;
                got.len()
            })
        })
        .collect();
    let (g, d) = under_attack(&relay, &mut probe, 2).await;
    for f in floods {
        f.await.expect("flood");
    }
    let (after, peak) = (rss_kib(relay.pid()), peak_kib(relay.pid()));
    println!(
        "COMPRESS flood 2 × 128 MiB inflated: RSS {before} → {after} KiB, peak {peak_before} → {peak} KiB; \
         greeting {g:?}, delivery {d:?}"
    );
    assert!(peak.saturating_sub(peak_before) < 24 * 1024, "peak RSS grew {} KiB", peak - peak_before);
    assert!(g < Duration::from_secs(2) && d < Duration::from_secs(5), "greeting {g:?}, delivery {d:?}");
    assert!(metric(&relay, "chatrelay_limit_hits_total{limit=\"imap_command_bytes\"}").await >= 2.0);
}

/// One LOGIN on a fresh 993 connection; (tagged reply, time to answer).
async fn try_login(relay: &Relay, user: &str, pw: &str) -> (String, Duration) {
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    c.line().await.expect("greeting");
    let t = Instant::now();
    let r = c.imap("a", &format!("LOGIN \"{user}\" \"{pw}\"")).await;
    (last(&r).to_string(), t.elapsed())
}

/// Failed logins per client prefix wait longer each time, then are refused without a hash —
/// even with the right password — while only failures count (successes before never slowed).
#[tokio::test]
async fn guess_flood_is_slowed_then_refused() {
    let relay = Relay::start(
        "limits.auth_free_failures = 0\nlimits.auth_max_delay = \"2s\"\nlimits.auth_failures_per_client = 3\n",
    );
    let victim = relay.new_address();
    // Many quick successful logins (a client's normal burst) are never slowed.
    let t = Instant::now();
    for _ in 0..10 {
        let (r, _) = try_login(&relay, &victim, PASSWORD).await;
        assert!(r.starts_with("a OK"), "{r}");
    }
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let mut times = Vec::new();
    for _ in 0..3 {
        let (r, took) = try_login(&relay, &victim, "wrong-password").await;
        assert_eq!(r, "a NO [AUTHENTICATIONFAILED] Authentication failed.");
        times.push(took);
    }
    println!("failed logins answered after {times:?}");
    assert!(times[0] >= Duration::from_millis(950) && times[0] < Duration::from_millis(1900), "{times:?}");
    assert!(times[1] >= Duration::from_millis(1950), "second failure waits 1 s more: {times:?}");
    assert!(times[2] >= Duration::from_millis(2950), "third waits 2 s more: {times:?}");
    // Over the limit: refused at once, right password or not, and no hash is run.
    let (r, took) = try_login(&relay, &victim, PASSWORD).await;
    assert_eq!(r, "a NO [AUTHENTICATIONFAILED] Authentication failed.");
    assert!(took < Duration::from_millis(1900), "{took:?}");
    assert!(metric(&relay, "chatrelay_limit_hits_total{limit=\"auth_client\"}").await >= 1.0);
    assert!(metric(&relay, "chatrelay_limit_hits_total{limit=\"auth_delay\"}").await >= 2.0);
    let log = relay.log();
    let hits: Vec<&str> = log.lines().filter(|l| l.contains("limit hit") || l.contains("login failed")).collect();
    assert!(!hits.is_empty() && hits.iter().all(|l| !l.contains("127.0.0.1")), "no IP logged: {hits:?}");
}

/// Failures per account: past the limit only logins the verified-login cache knows pass (the
/// owner's client), other attempts are refused without an argon2 hash.
#[tokio::test]
async fn guesses_at_one_account_cannot_lock_out_its_owner() {
    let relay = Relay::start("limits.auth_free_failures = 100\nlimits.auth_failures_per_account = 3\n");
    let victim = relay.new_address();
    assert!(try_login(&relay, &victim, PASSWORD).await.0.starts_with("a OK"));
    for i in 0..4 {
        let (r, _) = try_login(&relay, &victim, &format!("guess-number-{i}")).await;
        assert!(r.starts_with("a NO"), "{r}");
    }
    assert_eq!(metric(&relay, "chatrelay_limit_hits_total{limit=\"auth_account\"}").await, 1.0);
    let (r, _) = try_login(&relay, &victim, PASSWORD).await;
    assert!(r.starts_with("a OK"), "the owner's known-good login still passes: {r}");
}

/// A wrong password for an existing account (an argon2 hash) and an unknown address (none)
/// answer after the same time. Was: the wrong password 11-20 ms slower.
#[tokio::test]
async fn wrong_password_and_unknown_address_take_the_same_time() {
    let relay = Relay::start("limits.auth_free_failures = 100\n");
    let known = relay.new_address();
    assert!(try_login(&relay, &known, PASSWORD).await.0.starts_with("a OK"));
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..5 {
        let (r, t) = try_login(&relay, &known, &format!("wrong-password-{i}")).await;
        assert!(r.starts_with("a NO"), "{r}");
        wrong.push(t);
        let (r, t) = try_login(&relay, &format!("x{i}@unknown.example"), PASSWORD).await;
        assert!(r.starts_with("a NO"), "{r}");
        unknown.push(t);
    }
    wrong.sort();
    unknown.sort();
    let (w, u) = (wrong[2], unknown[2]);
    println!("median failure: wrong password {w:?}, unknown address {u:?}");
    let diff = w.abs_diff(u);
    assert!(diff < Duration::from_millis(8), "wrong {wrong:?} vs unknown {unknown:?}");
}

/// Accounts made by first login draw from the `/new` bucket of the same client.
#[tokio::test]
async fn account_creation_by_login_shares_the_new_limiter() {
    let relay = Relay::start("limits.new_accounts_burst = 3\nlimits.new_accounts_per_second = 0.01\n");
    let first = relay.new_address();
    for a in [first.clone(), relay.new_address(), relay.new_address()] {
        assert!(try_login(&relay, &a, PASSWORD).await.0.starts_with("a OK"));
    }
    let (r, _) = try_login(&relay, &relay.new_address(), PASSWORD).await;
    assert!(r.starts_with("a NO"), "fourth new account from this client: {r}");
    assert_eq!(relay.https("POST", "/new").await.status, 429, "the /new bucket is the same one");
    assert!(try_login(&relay, &first, PASSWORD).await.0.starts_with("a OK"), "existing accounts log in");
    assert_eq!(metric(&relay, "chatrelay_limit_hits_total{limit=\"new_accounts\"}").await, 1.0);
}

/// The pre-login timeout counts from connect: NOOPs every 300 ms do not extend it.
#[tokio::test]
async fn prelogin_noop_loop_is_disconnected() {
    let relay = Relay::start("limits.imap_prelogin_timeout = \"3s\"\n");
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    let t = Instant::now();
    c.line().await.expect("greeting");
    let mut i = 0;
    let bye = loop {
        // The BYE may already be on its way: a failed write is fine, the read tells.
        let _ = c.io.get_mut().write_all(format!("n{i} NOOP\r\n").as_bytes()).await;
        let l = c.line().await;
        match l.as_deref() {
            Some(l) if l.starts_with(&format!("n{i} OK")) => {}
            other => break other.map(str::to_string),
        }
        assert!(t.elapsed() < Duration::from_secs(8), "still connected after {:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
        i += 1;
    };
    println!("NOOP loop closed after {:?} with {bye:?}", t.elapsed());
    assert_eq!(bye.as_deref(), Some("* BYE Autologout"));
    assert!(t.elapsed() >= Duration::from_millis(2900) && t.elapsed() < Duration::from_secs(5));
    assert!(c.line().await.is_none());
    // A client that pipelines NOOPs without pause (input always buffered) is cut off too.
    let s = tls_wrap(TcpStream::connect(relay.addr(relay.ports.imaps)).await.expect("connect"), &[]).await;
    let (mut rd, mut wr) = tokio::io::split(s);
    let t = Instant::now();
    let writer = tokio::spawn(async move {
        let batch = "p NOOP\r\n".repeat(200);
        while t.elapsed() < Duration::from_secs(8) {
            if wr.write_all(batch.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let keep = got.len().saturating_sub(64);
                    got.drain(..keep);
                }
            }
        }
    })
    .await;
    let _ = writer.await;
    println!("pipelined NOOPs closed after {:?}", t.elapsed());
    assert!(closed.is_ok() && t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(String::from_utf8_lossy(&got).contains("* BYE Autologout"), "{:?}", String::from_utf8_lossy(&got));
    assert!(metric(&relay, "chatrelay_limit_hits_total{limit=\"imap_prelogin_timeout\"}").await >= 2.0);
}

/// Connect to `addr` from the loopback source address `from`.
async fn connect_from(from: &str, addr: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{from}:0").parse().expect("bind addr")).expect("bind");
    sock.connect(addr.parse().expect("addr")).await.expect("connect")
}

async fn first_line(s: TcpStream) -> String {
    let mut c = Lines { io: tokio::io::BufReader::new(Box::new(s)) };
    c.line().await.unwrap_or_default()
}

/// Per-client connection caps count the client's prefix (here IPv4 /24; IPv6 /64 by default),
/// not single addresses.
#[tokio::test]
async fn connection_cap_counts_the_client_prefix() {
    let relay = Relay::start("max_imap_connections = 10\nlimits.ipv4_prefix = 24\n");
    let imap = relay.addr(relay.ports.imap);
    let a = connect_from("127.0.0.1", &imap).await;
    let mut a = Lines { io: tokio::io::BufReader::new(Box::new(a)) };
    assert!(a.line().await.expect("greeting").starts_with("* OK"));
    let b = connect_from("127.0.0.2", &imap).await;
    let mut b = Lines { io: tokio::io::BufReader::new(Box::new(b)) };
    assert!(b.line().await.expect("greeting").starts_with("* OK"));
    // Cap per client: 10 / 5 = 2, and 127.0.0.1, .2 and .3 are one client.
    assert_eq!(first_line(connect_from("127.0.0.3", &imap).await).await, "* BYE Too many connections");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(first_line(connect_from("127.0.0.3", &imap).await).await.starts_with("* OK"));
    assert!(metric(&relay, "chatrelay_limit_hits_total{limit=\"connections\"}").await >= 1.0);
    drop(b);
}

/// SMTP commands before AUTH or an accepted MAIL share a short budget of count and time.
#[tokio::test]
async fn smtp_setup_budget() {
    let relay = Relay::start("limits.smtp_setup_commands = 5\nlimits.smtp_setup_timeout = \"3s\"\n");
    let mut c = Lines::plain(&relay.addr(relay.ports.smtp)).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO peer.example").await.starts_with("250"));
    for _ in 0..3 {
        assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    }
    assert_eq!(c.cmd("NOOP").await, "250 2.0.0 OK");
    assert_eq!(c.reply().await, "421 4.7.0 Too many commands before AUTH or MAIL");
    assert!(c.line().await.is_none());
    // Time: counted from connect, whatever is sent.
    let t = Instant::now();
    let mut c = Lines::plain(&relay.addr(relay.ports.smtp)).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO peer.example").await.starts_with("250"));
    assert_eq!(c.reply().await, "421 4.4.2 chat.test Error: timeout exceeded");
    assert!(t.elapsed() >= Duration::from_millis(2900) && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // A transaction ends the budget: after MAIL, any number of commands.
    let alice = relay.new_address();
    create_account(&relay, &alice).await;
    let (mut s, r) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(r.starts_with("235"), "{r}");
    for _ in 0..10 {
        assert_eq!(s.cmd("NOOP").await, "250 2.0.0 OK");
    }
    assert!(metric(&relay, "chatrelay_limit_hits_total{limit=\"smtp_setup\"}").await >= 2.0);
}

/// After login a command's literals share the 256 KiB budget, while the one message literal of
/// APPEND may be up to max_message_size wherever it stands (after a literal mailbox name too).
#[tokio::test]
async fn postlogin_budget_and_large_append() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut c = login(&relay, &addr).await;
    c.send("a APPEND {5}").await;
    assert!(c.line().await.expect("line").starts_with('+'));
    c.send("INBOX {300000}").await;
    assert!(c.line().await.expect("line").starts_with('+'));
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    msg.resize(300_000, b'x');
    c.send_raw(&msg).await;
    c.send_raw(b"\r\n").await;
    assert!(last(&c.until_tag("a").await).starts_with("a OK [APPENDUID"));
    c.send("b SETMETADATA INBOX (/private/comment {60000}").await;
    for i in 0..4 {
        assert!(c.line().await.expect("line").starts_with('+'), "literal {i}");
        c.send_raw(&vec![b'y'; 60000]).await;
        c.send(" /private/comment {60000}").await;
    }
    assert_eq!(c.line().await.as_deref(), Some("b NO [TOOBIG] Literal too large"));
    assert_ok(&c.imap("c", "NOOP").await);
}

/// A client that starts AUTHENTICATE and never sends the continuation is closed at the
/// pre-login deadline from connect, not after a fresh 60 s wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_authenticate_ends_at_the_prelogin_deadline() {
    let relay = Relay::start("limits.imap_prelogin_timeout = \"3s\"\n");
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    let t = Instant::now();
    c.line().await.expect("greeting");
    c.send("a AUTHENTICATE PLAIN").await;
    assert_eq!(c.line().await.as_deref().map(str::trim_end), Some("+"));
    let end = tokio::time::timeout(Duration::from_secs(20), c.line()).await;
    println!("stalled AUTHENTICATE closed after {:?} with {end:?}", t.elapsed());
    assert!(end.is_ok(), "still open after 20 s");
    assert!(t.elapsed() < Duration::from_secs(6), "closed only after {:?}", t.elapsed());
}
