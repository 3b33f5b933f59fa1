//! IMAP and submission over WebSocket (issue 28): `GET /imap` and `GET /smtp` with an upgrade on
//! the HTTPS listener carry the raw IMAP (as on 993) and submission (as on 465) byte streams in
//! binary frames, websockify-style, for networks that block mail ports and ALPN fingerprints.
//!
//! In: an upgrade request on a TLS connection (the HTTPS listener only: `wss`, never `ws`).
//! Out: the same `imap::serve` / `smtp::serve` session the TCP listeners run, on a byte stream
//! made of the frames, with the same command limits and timeouts; a slot of a connection cap
//! per protocol (`max_imap_connections`, `max_smtp_connections`) is held for the session's life.
//! Rules: only over TLS 1.3, like IMAP and submission everywhere (IMAP-1, SMTP-2, HTTP-3);
//! frames (and messages) at most `MAX_FRAME` bytes; text frames are read as their UTF-8 bytes
//! (some tools such as websocat send text by default); everything sent is binary.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::routes::json;
use crate::context::{ConnInfo, Ctx};
use crate::limits::ConnLimiter;
use crate::tls::MaybeTls;

/// Largest frame and message accepted from a client. It bounds what tungstenite buffers before
/// the session sees a byte; the session's own budgets (IMAP-43/44, SMTP-19) apply on top.
pub(crate) const MAX_FRAME: usize = 1024 * 1024;

/// The TLS version of the HTTPS connection a request came on, set by the port-443 router.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverTls {
    pub tls13: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Imap,
    Smtp,
}

impl Proto {
    fn label(self) -> &'static str {
        match self {
            Self::Imap => "imap",
            Self::Smtp => "smtp",
        }
    }
}

/// Per-protocol connection caps for tunnelled sessions. The TCP connection's own slot (counted
/// by the HTTPS listener) is released once hyper hands the upgraded stream over, so the session
/// holds one of these instead, sized like the protocol's own listener.
fn limiter(ctx: &Ctx, p: Proto) -> Arc<ConnLimiter> {
    static IMAP: OnceLock<Arc<ConnLimiter>> = OnceLock::new();
    static SMTP: OnceLock<Arc<ConnLimiter>> = OnceLock::new();
    let cfg = ctx.config.get();
    match p {
        Proto::Imap => IMAP.get_or_init(|| ConnLimiter::new(cfg.max_imap_connections, cfg.max_imap_connections / 5)),
        Proto::Smtp => SMTP.get_or_init(|| ConnLimiter::new(cfg.max_smtp_connections, cfg.max_smtp_connections / 5)),
    }
    .clone()
}

pub(crate) async fn imap(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    tls: Option<Extension<OverTls>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade(ctx, conn, tls.map(|t| t.0), ws, Proto::Imap).await
}

pub(crate) async fn smtp(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    tls: Option<Extension<OverTls>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade(ctx, conn, tls.map(|t| t.0), ws, Proto::Smtp).await
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    json(status, serde_json::json!({ "reason": reason }))
}

async fn upgrade(
    ctx: Ctx,
    conn: ConnInfo,
    tls: Option<OverTls>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    proto: Proto,
) -> Response {
    if !ctx.config.get().websocket {
        return super::pages::not_found(State(ctx)).await;
    }
    match tls {
        Some(OverTls { tls13: true }) => {}
        Some(_) => return refuse(StatusCode::FORBIDDEN, "IMAP and submission over WebSocket need TLS 1.3"),
        None => return refuse(StatusCode::FORBIDDEN, "IMAP and submission over WebSocket need wss (TLS)"),
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            let reason = format!("a WebSocket upgrade is required here: {}", e.body_text());
            return refuse(e.status(), &reason);
        }
    };
    let client = crate::limits::client_of(conn.peer, &ctx.config.get());
    let Some(slot) = limiter(&ctx, proto).try_acquire(client) else {
        ctx.metrics.limit_hit("connections");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many connections, try again later");
    };
    // The session outlives this request (axum runs it on a task of its own): a tracker token
    // makes `serve` wait for it on shutdown like for every other session.
    let token = ctx.tasks.token();
    let mut ws = ws.max_frame_size(MAX_FRAME).max_message_size(MAX_FRAME);
    // websockify's subprotocol name; chosen only when the client asks for it.
    if ws.requested_protocols().any(|p| p.as_bytes() == b"binary") {
        ws = ws.protocols(["binary"]);
    }
    tracing::debug!(conn = conn.id, proto = proto.label(), "websocket session");
    ws.on_failed_upgrade(move |e| tracing::debug!(conn = conn.id, error = %e, "websocket upgrade failed")).on_upgrade(
        move |socket| async move {
            let stream = MaybeTls::tunnel(WsStream::new(socket));
            match proto {
                Proto::Imap => crate::imap::serve(ctx, stream, conn).await,
                Proto::Smtp => crate::smtp::serve(ctx, stream, crate::smtp::Kind::Submissions, conn).await,
            }
            drop(slot);
            drop(token);
            crate::memory::connection_closed();
        },
    )
}

/// A WebSocket as a byte stream: reads concatenate the payloads of data frames, each write is
/// one binary frame. A close frame or the end of the connection reads as EOF.
pub(crate) struct WsStream {
    ws: WebSocket,
    /// What is left of the last data frame.
    pending: Bytes,
    eof: bool,
}

impl WsStream {
    pub(crate) fn new(ws: WebSocket) -> Self {
        Self { ws, pending: Bytes::new(), eof: false }
    }
}

fn ws_err(e: axum::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, e)
}

impl AsyncRead for WsStream {
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
            // Pings are answered by tungstenite itself when it reads them.
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(ws_err(e))),
                Some(Ok(Message::Binary(b))) => this.pending = b,
                Some(Ok(Message::Text(t))) => this.pending = Bytes::copy_from_slice(t.as_str().as_bytes()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_err)?;
        let n = buf.len().min(MAX_FRAME);
        Pin::new(&mut this.ws).start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).map_err(ws_err)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_flush(cx).map_err(ws_err)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Sends a close frame and flushes; the client then closes the TCP connection.
        Pin::new(&mut self.get_mut().ws).poll_close(cx).map_err(ws_err)
    }
}
