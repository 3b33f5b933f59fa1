//! Issue 28: IMAP and submission over WebSocket (`wss://<host>/imap`, `/smtp` on the HTTPS
//! listener), driven by a real WebSocket client (tokio-tungstenite) over real TLS.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::*;
use crate::imap_helpers::{assert_ok, last, read_literal, wait_line};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// The client side of a websockify-style tunnel: writes become binary frames, reads
/// concatenate the payloads of incoming data frames.
struct WsBytes {
    ws: WebSocketStream<Tls>,
    pending: bytes::Bytes,
    eof: bool,
}

impl AsyncRead for WsBytes {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                Some(Ok(Message::Binary(b))) => this.pending = b,
                Some(Ok(other)) => panic!("the relay sends binary frames only, got {other:?}"),
            }
        }
    }
}

impl AsyncWrite for WsBytes {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io::Error::other)?;
        // Large writes go out in frames of at most 64 KiB, as the operator guide asks of clients.
        let n = buf.len().min(64 * 1024);
        Pin::new(&mut this.ws)
            .start_send(Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n])))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_flush(cx).map_err(io::Error::other)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_close(cx).map_err(io::Error::other)
    }
}

/// Open `wss://chat.test<path>` on the relay's HTTPS port (TLS with ALPN http/1.1, then the
/// HTTP/1.1 upgrade). Err carries the refusal's status and body.
async fn ws_open(relay: &Relay, path: &str) -> Result<WebSocketStream<Tls>, (u16, String)> {
    let tcp = TcpStream::connect(relay.addr(relay.ports.https)).await.expect("connect");
    let tls = tls_wrap(tcp, &[b"http/1.1"]).await;
    let req = format!("wss://chat.test{path}").into_client_request().expect("request");
    let fut = tokio_tungstenite::client_async(req, tls);
    match tokio::time::timeout(T, fut).await.expect("upgrade timed out") {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101);
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            let body = r.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            Err((r.status().as_u16(), body))
        }
        Err(e) => panic!("websocket handshake: {e}"),
    }
}

async fn ws_lines(relay: &Relay, path: &str) -> Lines {
    let ws = ws_open(relay, path).await.unwrap_or_else(|e| panic!("upgrade refused: {e:?}"));
    Lines { io: BufReader::new(Box::new(WsBytes { ws, pending: bytes::Bytes::new(), eof: false })) }
}

async fn ws_imap_login(relay: &Relay, addr: &str) -> Lines {
    let mut c = ws_lines(relay, "/imap").await;
    let g = c.line().await.expect("greeting");
    assert!(g.starts_with("* OK [CAPABILITY IMAP4rev1") && g.contains("AUTH=PLAIN"), "{g}");
    assert!(!g.contains("STARTTLS"), "the tunnel counts as TLS: {g}");
    let r = c.imap("l", &format!("LOGIN \"{addr}\" \"{PASSWORD}\"")).await;
    assert!(last(&r).starts_with("l OK"), "{r:?}");
    c
}

/// Must show: a WebSocket IMAP session receives a delivery while idling (the mail itself
/// submitted over WebSocket), then FETCHes it; a shutdown says BYE to the tunnelled session and
/// waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_imap_idle_delivery_fetch_and_ws_submission() {
    let mut relay = Relay::start("");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    let mut b = ws_imap_login(&relay, &bob).await;
    assert_ok(&b.imap("s", "SELECT INBOX").await);
    b.send("i IDLE").await;
    assert_eq!(b.line().await.as_deref(), Some("+ idling"));

    // Submission over WebSocket: the same dialogue as on 465 (AUTH offered at once).
    let mut s = ws_lines(&relay, "/smtp").await;
    assert!(s.reply().await.starts_with("220 chat.test"));
    let ehlo = s.cmd("EHLO client.test").await;
    assert!(ehlo.contains("AUTH PLAIN") && !ehlo.contains("STARTTLS"), "{ehlo}");
    use base64::Engine as _;
    let token = base64::prelude::BASE64_STANDARD.encode(format!("\0{alice}\0{PASSWORD}"));
    let r = s.cmd(&format!("AUTH PLAIN {token}")).await;
    assert!(r.starts_with("235"), "{r}");
    let eml = encrypted_eml(&alice, &bob);
    let r = send_mail(&mut s, &alice, &[&bob], &eml).await;
    assert!(r.starts_with("250"), "{r}");
    // A message of many frames (1.5 MB in 64 KiB frames) streams through the tunnel too.
    let big = crate::smtp_large::big_encrypted_eml(&alice, &alice, 1_500_000);
    let r = send_mail(&mut s, &alice, &[&alice], &big).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(s.cmd("QUIT").await.starts_with("221"));

    let (l, _) = wait_line(&mut b, |l| l.ends_with(" EXISTS")).await;
    assert_eq!(l, "* 1 EXISTS");
    b.send("DONE").await;
    assert_eq!(last(&b.until_tag("i").await), "i OK IDLE terminated");
    let stored = inbox_messages(&relay, &bob).await;
    assert_eq!(stored.len(), 1);
    b.send("f UID FETCH 1 (BODY.PEEK[])").await;
    let head = b.line().await.expect("line");
    assert!(head.contains("BODY[] {"), "{head}");
    assert_eq!(read_literal(&mut b, &head).await, stored[0], "BODY[] over WebSocket is the stored message");
    assert_eq!(last(&b.until_tag("f").await), "f OK Fetch completed.");

    // SIGTERM: the tunnelled session is told and the relay still drains to exit 0.
    b.send("i2 IDLE").await;
    assert_eq!(b.line().await.as_deref(), Some("+ idling"));
    let reader = tokio::spawn(async move { wait_line(&mut b, |l| l.starts_with("* BYE")).await.0 });
    let code = tokio::task::spawn_blocking(move || relay.stop()).await.expect("join");
    assert_eq!(reader.await.expect("reader"), "* BYE Server shutting down");
    assert_eq!(code, Some(0));
}

/// Refusals: no upgrade, a plain `ws://` on port 80, TLS 1.2, the per-client cap, and the
/// switch `websocket = false`. Text frames are read as bytes (websocat's default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_refusals_and_limits() {
    let relay = Relay::start("max_imap_connections = 5\n");
    let a = relay.addr(relay.ports.https);

    // A plain GET is no upgrade: a JSON reason, no session.
    let r = https_req(&a, "GET", "/imap", &a, &[], b"").await;
    assert!(r.status == 400 || r.status == 426, "{} {}", r.status, r.text());
    assert!(r.json()["reason"].as_str().is_some_and(|s| s.contains("WebSocket upgrade")), "{}", r.text());
    let r = https_req(&a, "POST", "/smtp", &a, &[], b"").await;
    assert_eq!(r.status, 405, "{}", r.text());

    // ws:// on the plain HTTP listener: redirected to https, never upgraded.
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let r = http_req(&relay.addr(relay.ports.http), "GET", "/imap", "chat.test").await;
    assert_eq!(r.status, 301);
    let tcp = TcpStream::connect(relay.addr(relay.ports.http)).await.expect("connect");
    let r = http_on(tcp, "GET", "/imap", "chat.test", &upgrade, b"").await;
    assert_eq!(r.status, 301, "plain ws is never upgraded");
    assert_eq!(r.header("location"), Some("https://chat.test/imap"));

    // TLS 1.2 HTTPS: the upgrade is refused like ALPN imap over TLS 1.2 (HTTP-3).
    let tls12 = tokio_rustls::TlsConnector::from(client_config_versions(&[&rustls::version::TLS12], &[b"http/1.1"]));
    let name = rustls::pki_types::ServerName::try_from("chat.test").expect("name");
    let tls = tls12.connect(name, TcpStream::connect(&a).await.expect("connect")).await.expect("TLS 1.2");
    let r = http_on(tls, "GET", "/imap", "chat.test", &upgrade, b"").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("TLS 1.3"), "{}", r.text());

    // One client may hold a fifth of max_imap_connections (here 1) tunnelled IMAP sessions.
    let mut first = ws_open(&relay, "/imap").await.expect("first session");
    let Err(refused) = ws_open(&relay, "/imap").await else { panic!("second session must be refused") };
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(refused.1.is_empty() || refused.1.contains("too many connections"), "{refused:?}");

    // A text frame carries the command bytes just the same; replies are binary frames.
    first.send(Message::text("t NOOP\r\n")).await.expect("send text");
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("t OK NOOP completed.") {
        match tokio::time::timeout(T, first.next()).await.expect("reply in time") {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            other => panic!("unexpected {other:?} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    assert!(String::from_utf8_lossy(&got).starts_with("* OK [CAPABILITY"), "greeting first");
    let mut first =
        Lines { io: BufReader::new(Box::new(WsBytes { ws: first, pending: bytes::Bytes::new(), eof: false })) };
    assert_eq!(last(&first.imap("o", "LOGOUT").await), "o OK Logout completed.");
    assert!(first.line().await.is_none(), "the session ends after LOGOUT");
    drop(first);
    // The slot is free again once the session ended.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = ws_open(&relay, "/imap").await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "slot released after LOGOUT");

    // A frame over 1 MiB ends the tunnel (closed, no session state, no hang).
    let mut ws = again.take().expect("session");
    // The relay may close while the frame is still being written: a broken pipe is the same end.
    let sent = ws.send(Message::binary(vec![b'x'; 1024 * 1024 + 1])).await;
    let mut ended = sent.is_err();
    for _ in 0..if ended { 0 } else { 10 } {
        match tokio::time::timeout(T, ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Binary(_))) => continue,
            _ => {
                ended = true;
                break;
            }
        }
    }
    assert!(ended, "an oversized frame closes the connection");
    let mut alive = false;
    for _ in 0..50 {
        if ws_open(&relay, "/imap").await.is_ok() {
            alive = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(alive, "the relay serves new tunnels after closing an oversized one");

    let off = Relay::start("websocket = false\n");
    let Err(err) = ws_open(&off, "/smtp").await else { panic!("websocket = false must refuse") };
    assert_eq!(err.0, 404);
}
