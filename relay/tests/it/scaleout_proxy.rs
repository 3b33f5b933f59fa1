//! Issue 27: PROXY protocol v2 on listeners behind a TCP load balancer. The header's client
//! address is the one per-client limits count; a connection without a header is closed.

use std::net::SocketAddr;

use crate::harness::*;

fn proxied_relay(extra: &str) -> Relay {
    let mut r = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), extra);
    let toml = std::fs::read_to_string(&r.config_path).expect("config");
    std::fs::write(&r.config_path, toml.replacen("[listen]\n", "[listen]\nproxy_protocol = true\n", 1))
        .expect("config");
    r.spawn();
    r
}

async fn via_balancer(relay: &Relay, client: &str) -> Lines {
    let mut c = Lines::plain(&relay.addr(relay.ports.smtp)).await;
    let src: SocketAddr = client.parse().expect("addr");
    let dst: SocketAddr = relay.addr(relay.ports.smtp).parse().expect("addr");
    c.send_raw(&relay::proxy::encode(src, dst)).await;
    c
}

#[tokio::test]
async fn proxy_v2_client_address_drives_per_client_limits() {
    // max_smtp_connections = 5 allows one connection per client prefix (cap / 5).
    let relay = proxied_relay("max_smtp_connections = 5\n");
    let mut a = via_balancer(&relay, "203.0.113.7:40001").await;
    assert!(a.reply().await.starts_with("220 "), "first connection of a client is greeted");
    // All connections come from 127.0.0.1; only the header tells the clients apart.
    let mut b = via_balancer(&relay, "203.0.113.7:40002").await;
    let r = b.reply().await;
    assert!(r.starts_with("421 "), "a second one of the same client is over its cap: {r}");
    let mut c = via_balancer(&relay, "198.51.100.9:40003").await;
    assert!(c.reply().await.starts_with("220 "), "another client is counted apart");
    let mut c6 = via_balancer(&relay, "[2001:db8::9]:40004").await;
    assert!(c6.reply().await.starts_with("220 "), "an IPv6 client too");
    let ehlo = a.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250"), "the stream after the header is SMTP: {ehlo}");

    // Without a header (someone reaching the port around the balancer): closed, no greeting.
    let mut d = Lines::plain(&relay.addr(relay.ports.smtp)).await;
    d.send_raw(b"EHLO direct.client.example\r\n").await;
    assert_eq!(d.line().await, None, "no greeting without a PROXY header");
}

/// A real, independent PROXY v2 sender: Debian's HAProxy in TCP mode in front of the relay's SMTP
/// and IMAPS listeners (`send-proxy-v2`), with SMTP health checks that open with a `LOCAL` header
/// (`check-send-proxy`). Clients reach HAProxy from different loopback addresses; the relay must
/// count them apart, pass the TLS bytes after the header untouched, and answer the checks.
#[tokio::test]
async fn proxy_v2_from_haproxy() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/lib/haproxy.sh");
    let ok = std::process::Command::new("bash")
        .arg(script)
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED proxy_v2_from_haproxy: haproxy could not be installed (tests/lib/haproxy.sh)");
        return;
    }
    let relay = proxied_relay("max_smtp_connections = 5\n");
    let (fe_smtp, fe_imaps) = (free_port(), free_port());
    let sock = relay.dir.path().join("haproxy.sock");
    let cfg = format!(
        "global\n  maxconn 200\n  stats socket {sock} mode 600 level admin\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend smtp\n  bind 127.0.0.1:{fe_smtp}\n  default_backend relay_smtp\n\
         frontend imaps\n  bind 127.0.0.1:{fe_imaps}\n  default_backend relay_imaps\n\
         backend relay_smtp\n  option smtpchk EHLO balancer.test\n\
         \x20 server r1 127.0.0.1:{smtp} send-proxy-v2 check check-send-proxy inter 200ms fall 1 rise 1\n\
         backend relay_imaps\n  server r1 127.0.0.1:{imaps} send-proxy-v2\n",
        sock = sock.display(),
        smtp = relay.ports.smtp,
        imaps = relay.ports.imaps,
    );
    let cfg_path = relay.dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).expect("haproxy config");
    let _haproxy = KillOnDrop(
        std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );

    // HAProxy's own SMTP check (a LOCAL header, then EHLO) must pass: L7OK in its statistics.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut last = String::new();
    loop {
        if let Ok(mut s) = tokio::net::UnixStream::connect(&sock).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s.write_all(b"show stat\n").await;
            last.clear();
            let _ = s.read_to_string(&mut last).await;
            if last.lines().any(|l| l.starts_with("relay_smtp,r1,") && l.contains(",L7OK,")) {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "HAProxy's SMTP check never passed: {last}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let from = |src: &'static str, port: u16| async move {
        let s = tokio::net::TcpSocket::new_v4().expect("socket");
        s.bind(format!("{src}:0").parse().expect("addr")).expect("bind source");
        s.connect(format!("127.0.0.1:{port}").parse().expect("addr")).await.expect("connect to haproxy")
    };
    let mut a = Lines { io: tokio::io::BufReader::new(Box::new(from("127.0.1.7", fe_smtp).await)) };
    assert!(a.reply().await.starts_with("220 "), "first client through HAProxy is greeted");
    let mut b = Lines { io: tokio::io::BufReader::new(Box::new(from("127.0.1.7", fe_smtp).await)) };
    let r = b.reply().await;
    assert!(r.starts_with("421 "), "the same client's second connection is over its cap: {r}");
    let mut c = Lines { io: tokio::io::BufReader::new(Box::new(from("127.0.2.9", fe_smtp).await)) };
    assert!(c.reply().await.starts_with("220 "), "another client behind the same balancer is counted apart");
    let ehlo = a.cmd("EHLO client.test").await;
    assert!(ehlo.starts_with("250"), "the stream after HAProxy's header is SMTP: {ehlo}");

    // Implicit TLS: the handshake starts right after the header.
    let t = tls_wrap(from("127.0.3.5", fe_imaps).await, &[]).await;
    let mut i = Lines { io: tokio::io::BufReader::new(Box::new(t)) };
    let greeting = i.line().await.unwrap_or_default();
    assert!(greeting.starts_with("* OK"), "IMAPS through HAProxy: {greeting}");
    i.send("a1 CAPABILITY").await;
    let cap = i.until_tag("a1").await;
    assert!(cap.last().is_some_and(|l| l.starts_with("a1 OK")), "{cap:?}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
