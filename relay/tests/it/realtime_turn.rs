//! Embedded TURN server (issue 28): credentials from METADATA, a real independent TURN client
//! (coturn's `turnutils_uclient`) relaying UDP through a real chatrelay on loopback, a raw client
//! for Send/Data indications, ChannelData and the refusals (no or wrong credentials, an expired
//! username, the per-username quota), and the address policy at start-up.
//!
//! Loopback peers and relay addresses are refused in production; these tests set the test-only
//! `turn.allow_private_peers = true`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use relay::turn::stun::{self, Builder, Message};

use crate::harness::Relay;
use crate::imap_helpers::*;

fn free_udp_port() -> u16 {
    loop {
        let p = crate::harness::free_port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A relay-port range of its own per test process, away from the TCP test ports (20000-32000).
fn relay_ports() -> String {
    let lo = 40_000 + (std::process::id() % 400) * 50 + (rand_small() % 25) * 2;
    format!("{lo}-{}", lo + 20)
}

fn rand_small() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A relay with TURN on a loopback UDP port; `extra` is appended.
fn turn_relay(extra: &str) -> (Relay, u16) {
    let port = free_udp_port();
    let relay = Relay::start(&format!(
        "turn.listen = \"127.0.0.1:{port}\"\nturn.relay_ip = \"127.0.0.1\"\nturn.relay_ports = \"{}\"\n\
         turn.allow_private_peers = true\n{extra}",
        relay_ports()
    ));
    (relay, port)
}

/// `/shared/vendor/deltachat/turn` over IMAP, if present.
async fn turn_metadata(relay: &Relay) -> Option<String> {
    let addr = relay.new_address();
    let mut c = login(relay, &addr).await;
    let r = c.imap("m", "GETMETADATA \"\" (/shared/vendor/deltachat/turn)").await;
    assert_eq!(last(&r), "m OK Getmetadata completed.", "{r:?}");
    (r.len() > 1).then(|| r[1].trim_end_matches(')').to_string())
}

/// host, port, username, password.
fn parse_turn(v: &str) -> (String, u16, String, String) {
    let mut it = v.splitn(4, ':');
    let host = it.next().expect("host").to_string();
    let port = it.next().and_then(|p| p.parse().ok()).expect("port");
    let user = it.next().expect("user").to_string();
    let pass = it.next().expect("password").to_string();
    (host, port, user, pass)
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
}

/// Error code of an error response.
fn code(m: &Message) -> Option<u16> {
    m.get(stun::A_ERROR_CODE).filter(|v| v.len() >= 4).map(|v| u16::from(v[2]) * 100 + u16::from(v[3]))
}

impl Client {
    fn new(port: u16) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        Self { sock, server: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    /// Send a request until its answer arrives (bounded: 5 s); returns the raw answer.
    fn transact(&self, req: &[u8]) -> Vec<u8> {
        let txid = &req[8..20];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            self.sock.send_to(req, self.server).expect("send");
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                if let Ok((n, _)) = self.sock.recv_from(&mut buf)
                    && n >= 20
                    && &buf[8..20] == txid
                {
                    return buf[..n].to_vec();
                }
            }
        }
        panic!("no answer from the TURN server");
    }

    /// Allocate with long-term credentials: first the 401 challenge, then the signed request.
    /// Returns the answer and the key.
    fn allocate(&self, user: &str, pass: &str, realm_override: Option<&str>) -> (Vec<u8>, Vec<u8>, String) {
        let txid: [u8; 12] = rand::random();
        let first = Builder::new(stun::ALLOCATE, stun::REQUEST, txid)
            .attr(stun::A_REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .finish(None);
        let a = self.transact(&first);
        let m = Message::parse(&a).expect("parse");
        assert_eq!((m.class, code(&m)), (stun::ERROR, Some(401)), "unauthenticated Allocate must be challenged");
        let realm =
            realm_override.map(str::to_string).unwrap_or_else(|| m.string(stun::A_REALM).expect("realm").into());
        let nonce = m.string(stun::A_NONCE).expect("nonce").to_string();
        let key = md5_key(user, &realm, pass);
        let req = Builder::new(stun::ALLOCATE, stun::REQUEST, rand::random())
            .attr(stun::A_REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .attr(stun::A_USERNAME, user.as_bytes())
            .attr(stun::A_REALM, realm.as_bytes())
            .attr(stun::A_NONCE, nonce.as_bytes())
            .finish(Some(&key));
        (self.transact(&req), key, nonce)
    }

    fn signed(
        &self,
        method: u16,
        user: &str,
        realm: &str,
        nonce: &str,
        key: &[u8],
        f: impl FnOnce(Builder) -> Builder,
    ) -> Vec<u8> {
        let b = Builder::new(method, stun::REQUEST, rand::random());
        let b = f(b)
            .attr(stun::A_USERNAME, user.as_bytes())
            .attr(stun::A_REALM, realm.as_bytes())
            .attr(stun::A_NONCE, nonce.as_bytes());
        self.transact(&b.finish(Some(key)))
    }

    fn recv(&self) -> Option<Vec<u8>> {
        self.recv_within(Duration::from_secs(3))
    }

    fn recv_within(&self, limit: Duration) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    }
}

fn md5_key(user: &str, realm: &str, pass: &str) -> Vec<u8> {
    use md5::Digest as _;
    md5::Md5::digest(format!("{user}:{realm}:{pass}").as_bytes()).to_vec()
}

/// The TURN REST password the relay would issue for `user` (from its data_dir's secret).
fn issued_password(relay: &Relay, user: &str) -> String {
    let secret = relay::accounts::Secret::load_or_create(&relay.data_dir()).expect("secret");
    relay::turn::password_for(&secret.keyed_hash(&[b"turn-rest-api"]), user)
}

#[tokio::test]
async fn turn_metadata_credentials_are_fresh_and_time_limited() {
    let (relay, port) = turn_relay("turn.credential_ttl = \"2d\"\n");
    let v = turn_metadata(&relay).await.expect("turn entry advertised");
    let (host, p, user, pass) = parse_turn(&v);
    assert_eq!((host.as_str(), p), ("chat.test", port), "{v}");
    // Delta Chat core reads the username as the expiry timestamp (calls.rs).
    let exp: u64 = user.parse().expect("username is a bare timestamp");
    let t = now();
    assert!(exp >= t + 2 * 86_400 - 5 && exp <= t + 2 * 86_400 + 5, "{exp} vs {t}");
    assert_eq!(pass, issued_password(&relay, &user), "password = base64(HMAC-SHA1(key, username))");
    // Fresh per request: a later request gets a later username.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let v2 = turn_metadata(&relay).await.expect("turn entry");
    let (_, _, user2, pass2) = parse_turn(&v2);
    assert!(user2.parse::<u64>().expect("ts") > exp && pass2 != pass, "{v} then {v2}");
    // The per-install secret differs between installs: another relay's password for the same
    // username is different.
    let (other, _) = turn_relay("");
    assert_ne!(issued_password(&other, &user), pass);
}

#[tokio::test]
async fn turn_off_or_external_is_what_metadata_says() {
    // Disabled: no entry.
    let relay = Relay::start("turn.listen = []\n");
    assert_eq!(turn_metadata(&relay).await, None);
    // An external TURN server configured in server_metadata wins over the embedded one.
    let (relay, _) = turn_relay("[server_metadata]\nturn = \"turn.example.org:3478:user:pw\"\n");
    assert_eq!(turn_metadata(&relay).await.as_deref(), Some("turn.example.org:3478:user:pw"));
    // A loopback relay address without the test-only override: TURN stays off, nothing advertised.
    let port = free_udp_port();
    let relay = Relay::start(&format!("turn.listen = \"127.0.0.1:{port}\"\nturn.relay_ip = \"127.0.0.1\"\n"));
    assert_eq!(turn_metadata(&relay).await, None);
    assert!(relay.log().contains("not a public address"), "{}", relay.log());
    // Nobody answers on the port either.
    let c = Client::new(port);
    let req = Builder::new(stun::BINDING, stun::REQUEST, rand::random()).finish(None);
    c.sock.send_to(&req, c.server).expect("send");
    let mut buf = [0u8; 1500];
    assert!(c.sock.recv_from(&mut buf).is_err(), "no TURN server may answer");
}

/// A real independent TURN client: coturn's turnutils_uclient allocates with the METADATA
/// credentials and relays UDP through chatrelay to coturn's turnutils_peer (an echo peer), over
/// ChannelData (default) and over Send/Data indications (-s).
#[tokio::test]
async fn turn_relays_for_coturn_uclient() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/lib/coturn.sh");
    let ok = Command::new("bash").arg(script).stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        eprintln!(
            "SKIPPED turn_relays_for_coturn_uclient: coturn's turnutils could not be installed (tests/lib/coturn.sh)"
        );
        return;
    }
    let (relay, port) = turn_relay("");
    let v = turn_metadata(&relay).await.expect("turn entry");
    let (_, _, user, pass) = parse_turn(&v);
    let peer_port = free_udp_port();
    let _peer = KillOnDrop(
        Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer"),
    );
    std::thread::sleep(Duration::from_millis(300));
    for send_method in [false, true] {
        let mut args = vec!["-p".to_string(), port.to_string(), "-u".into(), user.clone(), "-w".into(), pass.clone()];
        args.extend(
            ["-e", "127.0.0.1", "-r", &peer_port.to_string(), "-n", "20", "-l", "120", "-c", "-z", "5"]
                .map(String::from),
        );
        if send_method {
            args.push("-s".into());
        }
        args.push("127.0.0.1".into());
        let out = run_bounded(Command::new("turnutils_uclient").args(&args), Duration::from_secs(30));
        // The client sends 20 datagrams to the echo peer through the relay and counts the echoes.
        assert!(out.contains("tot_send_msgs=20, tot_recv_msgs=20"), "send={send_method}:\n{out}\n{}", relay.log());
        assert!(out.contains("Total lost packets 0 (0.000000%)"), "send={send_method}:\n{out}");
        assert!(!out.contains("error"), "send={send_method}:\n{out}");
    }
    // Wrong password: the same client fails to allocate.
    let args = [
        "-p",
        &port.to_string(),
        "-u",
        &user,
        "-w",
        "wrong",
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port.to_string(),
        "-n",
        "2",
        "-c",
        "127.0.0.1",
    ];
    let out = run_bounded(Command::new("turnutils_uclient").args(args), Duration::from_secs(30));
    assert!(out.contains("Cannot complete Allocation") && !out.contains("tot_recv_msgs=2"), "{out}");
}

/// The echo peer dies with the test, also when an assertion fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `cmd` with a deadline; stdout and stderr together.
fn run_bounded(cmd: &mut Command, limit: Duration) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("out");
    let f = std::fs::File::create(&path).expect("out");
    let mut child = cmd.stdout(f.try_clone().expect("dup")).stderr(f).stdin(Stdio::null()).spawn().expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(&path).unwrap_or_default()
}

#[tokio::test]
async fn turn_raw_client_relays_and_refuses() {
    let (relay, port) = turn_relay("turn.max_allocations_per_user = 2\n");
    let v = turn_metadata(&relay).await.expect("turn entry");
    let (_, _, user, pass) = parse_turn(&v);

    // STUN Binding answers with the client's address, no credentials needed.
    let c = Client::new(port);
    let a = c.transact(&Builder::new(stun::BINDING, stun::REQUEST, rand::random()).finish(None));
    let m = Message::parse(&a).expect("parse");
    assert_eq!(m.xor_addr(stun::A_XOR_MAPPED_ADDRESS), c.sock.local_addr().ok());

    // Wrong password: 401.
    let (a, _, _) = c.allocate(&user, "bm90IHRoZSBwYXNzd29yZA==", None);
    let m = Message::parse(&a).expect("parse");
    assert_eq!(code(&m), Some(401), "wrong password");
    // Expired username with its correct password: 401.
    let old = (now() - 10).to_string();
    let (a, _, _) = c.allocate(&old, &issued_password(&relay, &old), None);
    assert_eq!(code(&Message::parse(&a).expect("parse")), Some(401), "expired username");
    // Wrong realm: 401.
    let (a, _, _) = c.allocate(&user, &pass, Some("other.test"));
    assert_eq!(code(&Message::parse(&a).expect("parse")), Some(401), "wrong realm");

    // A good allocation.
    let (a, key, nonce) = c.allocate(&user, &pass, None);
    let m = Message::parse(&a).expect("parse");
    assert_eq!(m.class, stun::SUCCESS, "{:?}", code(&m));
    assert!(m.integrity_ok(&key), "answers are signed with the user's key");
    let relayed = m.xor_addr(stun::A_XOR_RELAYED_ADDRESS).expect("relayed address");
    assert_eq!(m.u32(stun::A_LIFETIME), Some(600));
    let (lo, hi) = relay_range(&relay);
    assert!(relayed.port() >= lo && relayed.port() <= hi, "{relayed} in {lo}-{hi}");

    // A second Allocate on the same 5-tuple: 437.
    let a = c.signed(stun::ALLOCATE, &user, "chat.test", &nonce, &key, |b| {
        b.attr(stun::A_REQUESTED_TRANSPORT, &[17, 0, 0, 0])
    });
    assert_eq!(code(&Message::parse(&a).expect("parse")), Some(437));

    // A peer: nothing reaches the client before a permission exists.
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
    peer.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let peer_addr = peer.local_addr().expect("addr");
    peer.send_to(b"too early", relayed).expect("send");
    assert!(c.recv_within(Duration::from_millis(500)).is_none(), "no permission yet: dropped");
    let a = c.signed(stun::CREATE_PERMISSION, &user, "chat.test", &nonce, &key, |b| {
        b.xor_addr(stun::A_XOR_PEER_ADDRESS, peer_addr)
    });
    assert_eq!(Message::parse(&a).expect("parse").class, stun::SUCCESS);
    // Send indication -> peer.
    let ind = Builder::new(stun::SEND, stun::INDICATION, rand::random())
        .xor_addr(stun::A_XOR_PEER_ADDRESS, peer_addr)
        .attr(stun::A_DATA, b"hello peer")
        .finish(None);
    c.sock.send_to(&ind, c.server).expect("send");
    let mut buf = [0u8; 1500];
    let (n, from) = peer.recv_from(&mut buf).expect("peer receives the relayed datagram");
    assert_eq!((&buf[..n], from), (&b"hello peer"[..], relayed));
    // Peer -> Data indication (the early datagram was dropped, not queued).
    peer.send_to(b"hello client", relayed).expect("send");
    let d = c.recv().expect("data indication");
    let m = Message::parse(&d).expect("parse");
    assert_eq!((m.method, m.class), (stun::DATA, stun::INDICATION));
    assert_eq!(m.get(stun::A_DATA), Some(&b"hello client"[..]));
    assert_eq!(m.xor_addr(stun::A_XOR_PEER_ADDRESS), Some(peer_addr));

    // ChannelBind, then ChannelData both ways.
    let a = c.signed(stun::CHANNEL_BIND, &user, "chat.test", &nonce, &key, |b| {
        b.attr(stun::A_CHANNEL_NUMBER, &[0x40, 0x01, 0, 0]).xor_addr(stun::A_XOR_PEER_ADDRESS, peer_addr)
    });
    assert_eq!(Message::parse(&a).expect("parse").class, stun::SUCCESS);
    c.sock.send_to(&[0x40, 0x01, 0, 3, b'a', b'b', b'c', 0], c.server).expect("send");
    let (n, _) = peer.recv_from(&mut buf).expect("channel data relayed");
    assert_eq!(&buf[..n], b"abc");
    peer.send_to(b"xyz", relayed).expect("send");
    assert_eq!(c.recv().expect("channel data"), vec![0x40, 0x01, 0, 3, b'x', b'y', b'z']);
    // A channel number outside 0x4000..=0x7FFF: 400.
    let a = c.signed(stun::CHANNEL_BIND, &user, "chat.test", &nonce, &key, |b| {
        b.attr(stun::A_CHANNEL_NUMBER, &[0x10, 0x00, 0, 0]).xor_addr(stun::A_XOR_PEER_ADDRESS, peer_addr)
    });
    assert_eq!(code(&Message::parse(&a).expect("parse")), Some(400));

    // Quota: two allocations per username at once; the third client gets 486.
    let c2 = Client::new(port);
    let (a, _, _) = c2.allocate(&user, &pass, None);
    assert_eq!(Message::parse(&a).expect("parse").class, stun::SUCCESS);
    let c3 = Client::new(port);
    let (a, _, _) = c3.allocate(&user, &pass, None);
    assert_eq!(code(&Message::parse(&a).expect("parse")), Some(486), "per-username quota");
    // Refresh with lifetime 0 frees a slot; then the third client succeeds.
    let a = c.signed(stun::REFRESH, &user, "chat.test", &nonce, &key, |b| b.u32(stun::A_LIFETIME, 0));
    let m = Message::parse(&a).expect("parse");
    assert_eq!((m.class, m.u32(stun::A_LIFETIME)), (stun::SUCCESS, Some(0)));
    let (a, _, _) = c3.allocate(&user, &pass, None);
    assert_eq!(Message::parse(&a).expect("parse").class, stun::SUCCESS, "slot freed by Refresh(0)");
    // The deleted allocation relays nothing any more.
    peer.send_to(b"gone", relayed).expect("send");
    assert!(c.recv().is_none(), "no data after the allocation was deleted");

    // Junk never kills the server.
    for junk in [&b""[..], &[0u8; 3], &[0x40, 0x01, 0xff, 0xff], &[0u8; 20], &[0xffu8; 100]] {
        c.sock.send_to(junk, c.server).expect("send");
    }
    let a = c.transact(&Builder::new(stun::BINDING, stun::REQUEST, rand::random()).finish(None));
    assert_eq!(Message::parse(&a).expect("parse").class, stun::SUCCESS);
}

fn relay_range(relay: &Relay) -> (u16, u16) {
    let cfg = relay::config::load(&relay.config_path).expect("config");
    cfg.turn.port_range().expect("range")
}
