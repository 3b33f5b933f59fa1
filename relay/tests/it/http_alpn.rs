//! Issue 5 / HTTP-2, HTTP-3: port 443 carries IMAP, SMTP submission and HTTPS, chosen by ALPN.

use tokio::net::TcpStream;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_routes_443() {
    let relay = Relay::start("");
    let a = relay.addr(relay.ports.https);

    let mut imap = Lines::tls_alpn(&a, &[b"imap"]).await;
    let g = imap.line().await.expect("IMAP greeting");
    assert!(g.starts_with("* OK") || g.starts_with("* BYE"), "{g}");

    let mut smtp = Lines::tls_alpn(&a, &[b"smtp"]).await;
    let g = smtp.reply().await;
    assert!(g.starts_with("220") || g.starts_with("554"), "{g}");

    for alpn in [&[][..], &[&b"acme-tls/1"[..], b"xmpp-client"][..], &[&b"http/1.1"[..]][..]] {
        let s = TcpStream::connect(&a).await.expect("connect");
        let tls = tls_wrap(s, alpn).await;
        let negotiated = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        let r = http_on(tls, "GET", "/", &a, &[], b"").await;
        assert_eq!(r.status, 200, "ALPN {alpn:?}");
        assert!(r.text().contains("chatmail relay"), "index page for ALPN {alpn:?}");
        let expect = if alpn.contains(&&b"http/1.1"[..]) { Some(b"http/1.1".to_vec()) } else { None };
        assert_eq!(negotiated, expect, "unknown ALPN is HTTPS without ALPN");
    }
    let s = TcpStream::connect(&a).await.expect("connect");
    let tls = tls_wrap(s, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "browsers get HTTP/2");
}

/// HTTP-3: a TLS 1.2 client asking for `imap` on 443 is refused; HTTPS over TLS 1.2 works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_over_443_needs_tls13() {
    let relay = Relay::start("");
    let a = relay.addr(relay.ports.https);
    let tls12 =
        |alpn: &[u8]| tokio_rustls::TlsConnector::from(client_config_versions(&[&rustls::version::TLS12], &[alpn]));
    let name = rustls::pki_types::ServerName::try_from("chat.test").expect("name");
    let s = TcpStream::connect(&a).await.expect("connect");
    let res = tokio::time::timeout(T, tls12(b"imap").connect(name.clone(), s)).await.expect("no hang");
    assert!(res.is_err(), "TLS 1.2 + imap must not complete");
    let s = TcpStream::connect(&a).await.expect("connect");
    let tls =
        tokio::time::timeout(T, tls12(b"http/1.1").connect(name, s)).await.expect("no hang").expect("TLS 1.2 HTTPS");
    assert_eq!(http_on(tls, "GET", "/robots.txt", &a, &[], b"").await.status, 200);
}

/// Shutdown: idle HTTP connections, a half-open TLS handshake on 443 and a keep-alive HTTPS
/// connection do not hold SIGTERM up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_open_http_connections() {
    use tokio::io::AsyncWriteExt;
    let mut relay = Relay::start("");
    let a = relay.addr(relay.ports.https);
    let _half_open = TcpStream::connect(&a).await.expect("connect");
    let _idle80 = TcpStream::connect(relay.addr(relay.ports.http)).await.expect("connect");
    let s = TcpStream::connect(&a).await.expect("connect");
    let mut keep = tls_wrap(s, &[b"http/1.1"]).await;
    keep.write_all(format!("GET /robots.txt HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes()).await.expect("write");
    let mut l = Lines { io: tokio::io::BufReader::new(Box::new(keep)) };
    assert_eq!(l.line().await.as_deref(), Some("HTTP/1.1 200 OK"));
    let started = std::time::Instant::now();
    let code = tokio::task::spawn_blocking(move || relay.stop()).await.expect("join");
    println!("SIGTERM to exit with open HTTP connections: {:?}", started.elapsed());
    assert_eq!(code, Some(0));
}
