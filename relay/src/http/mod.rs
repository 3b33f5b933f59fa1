//! HTTP (port 80), HTTPS (port 443, shared with IMAP and SMTP by ALPN) and the metrics listener.
//!
//! In: one accepted TCP connection plus its `ConnInfo`, from `server.rs` (connection limits are
//! already applied). Out: axum routers served by hyper's auto (HTTP/1.1 + h2) connection builder;
//! the `ConnInfo` rides along as a request extension so handlers can rate-limit by peer IP.
//! Rules: no access log and never an IP, query string or form field in a log (HTTP-28, PRIV-6);
//! headers at most 16 KiB, 30 s per request (60 s for `/mxdeliv`), bodies at most 64 KiB except
//! `/mxdeliv` (HTTP-24, HTTP-27); every page carries the security headers of HTTP-5; a connection
//! finishes its in-flight request and closes when `ctx.shutdown` fires.

mod acme;
mod alpn;
mod autoconfig;
mod delete;
mod health;
mod html;
pub mod limiter;
pub mod mxdeliv;
mod new;
mod pages;
mod privacy;
mod routes;
mod ws;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::context::{ConnInfo, Ctx};

pub use acme::{ChallengeStore, challenges};
pub(crate) use autoconfig::mta_sts_policy;
/// The `/account/delete` body parser, for fuzzing (issue 12).
pub use delete::parse_fields as parse_delete_fields;

/// Largest request head we read (HTTP-27). hyper answers 431 above it.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time to receive a request head; slow-loris connections are closed (HTTP-27).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Port 80: ACME challenges, everything else redirects to HTTPS (HTTP-1).
pub async fn serve_http(ctx: Ctx, tcp: TcpStream, conn: ConnInfo) {
    serve_conn(&ctx, tcp, conn, routes::http(ctx.clone())).await
}

/// Port 443: peek the ClientHello and hand the connection to IMAP, SMTP or HTTPS (HTTP-2, HTTP-3).
pub async fn serve_https(ctx: Ctx, tcp: TcpStream, conn: ConnInfo) {
    alpn::route(ctx, tcp, conn).await
}

/// The metrics listener: `/metrics` and `/healthz` only, plain HTTP (HTTP-4).
pub async fn serve_metrics(ctx: Ctx, tcp: TcpStream, conn: ConnInfo) {
    serve_conn(&ctx, tcp, conn, routes::metrics(ctx.clone())).await
}

/// Serve one connection with `router` until the client closes it or shutdown completes it.
pub(crate) async fn serve_conn<S>(ctx: &Ctx, io: S, conn: ConnInfo, router: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // hyper-util's auto builder waits for the protocol preface without a timer, and hyper's
    // header timer starts only with a request head: a client that connects and sends nothing
    // would be held forever. So the first request must arrive within HEADER_TIMEOUT (HTTP-27).
    let seen = Arc::new(AtomicBool::new(false));
    let seen2 = seen.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        seen2.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(conn);
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_HEADER_BYTES);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_BYTES as u32);
    // With upgrades, so `/imap`, `/smtp` (WebSocket) and `/relay` (iroh) can take the connection over.
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(connection);
    let first = tokio::time::sleep(HEADER_TIMEOUT);
    tokio::pin!(first);
    let mut first_armed = true;
    loop {
        tokio::select! {
            res = connection.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(conn = conn.id, error = %e, "http connection ended");
                }
                return;
            }
            _ = &mut first, if first_armed => {
                if !seen.load(Ordering::Relaxed) {
                    tracing::debug!(conn = conn.id, "no request within the header timeout");
                    return;
                }
                first_armed = false;
            }
            _ = ctx.shutdown.cancelled() => break,
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
}
