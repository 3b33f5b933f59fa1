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
