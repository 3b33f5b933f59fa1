//! Embedded iroh relay (issue 28): Delta Chat's realtime channel for webxdc apps.
//!
//! The `iroh-relay` 0.35 server (the protocol Delta Chat core 2.x speaks; core pins iroh 0.35)
//! runs in-process on an ephemeral loopback port in plain HTTP, exactly as the reference runs
//! it behind nginx: `/relay`, `/ping` and `/generate_204` of the HTTPS listener are proxied to
//! it, upgrades included. Like the reference, its own STUN and QUIC address discovery stay off
//! (STUN is answered by the embedded TURN server on 3478; QUIC discovery needs a port and a
//! certificate of its own and is being removed upstream).
//!
//! iroh-relay 0.35's HTTP service type is private, so it cannot be mounted on our router
//! directly; the in-process hop costs one loopback connection per relay client.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use crate::config::Config;
use crate::context::Ctx;

/// Paths the reference proxies to iroh-relay.
pub const PATHS: [&str; 3] = ["/relay", "/ping", "/generate_204"];

/// The loopback address of the running iroh relay; unset while none runs.
static INTERNAL: OnceLock<SocketAddr> = OnceLock::new();
/// The server handle: dropping it would stop the relay, so it lives for the process.
#[cfg(feature = "iroh")]
static SERVER: OnceLock<tokio::sync::Mutex<Option<iroh_relay::server::Server>>> = OnceLock::new();

/// Longest response head or body accepted from the internal relay on a non-upgrade request.
const MAX_PLAIN_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IrohError {
    #[error("iroh relay: {0}")]
    Start(String),
}

/// `/shared/vendor/deltachat/irohrelay` for the embedded relay, when it runs.
pub fn metadata_value(cfg: &Config) -> Option<String> {
    INTERNAL.get().map(|_| format!("https://{}", cfg.mail_domain))
}

/// Start the embedded relay when `iroh_relay.enabled` and an HTTPS listener exists.
#[cfg(feature = "iroh")]
pub async fn start(ctx: &Ctx) -> Result<(), IrohError> {
    let cfg = ctx.config.get();
    if !cfg.iroh_relay.enabled || cfg.listen.https.is_empty() {
        return Ok(());
    }
    let relay = iroh_relay::server::RelayConfig::<(), ()> {
        http_bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: None,
        limits: Default::default(),
        key_cache_capacity: None,
        access: iroh_relay::server::AccessConfig::Everyone,
    };
    let config =
        iroh_relay::server::ServerConfig::<(), ()> { relay: Some(relay), stun: None, quic: None, metrics_addr: None };
    let server = iroh_relay::server::Server::spawn(config).await.map_err(|e| IrohError::Start(e.to_string()))?;
    let addr = server.http_addr().ok_or_else(|| IrohError::Start("no http address".into()))?;
    let _ = INTERNAL.set(addr);
    let _ = SERVER.set(tokio::sync::Mutex::new(Some(server)));
    ctx.tasks.spawn(stop_on_shutdown(ctx.clone()));
    tracing::info!("iroh relay ready at /relay");
    Ok(())
}

/// A build without the `iroh` feature (the fuzz targets, a slimmer binary) serves no relay:
/// nothing is advertised and the paths answer 404.
#[cfg(not(feature = "iroh"))]
pub async fn start(ctx: &Ctx) -> Result<(), IrohError> {
    let cfg = ctx.config.get();
    if cfg.iroh_relay.enabled && !cfg.listen.https.is_empty() {
        tracing::warn!("iroh_relay.enabled, but this chatrelay was built without the iroh feature");
    }
    Ok(())
}

#[cfg(feature = "iroh")]
async fn stop_on_shutdown(ctx: Ctx) {
    ctx.shutdown.cancelled().await;
    if let Some(m) = SERVER.get()
        && let Some(s) = m.lock().await.take()
    {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.shutdown()).await;
    }
}

/// Proxy one request of [`PATHS`] to the internal relay; an upgrade (`Upgrade: iroh derp http`
/// or `websocket`) is spliced both ways until either side closes or shutdown.
pub async fn proxy(State(ctx): State<Ctx>, mut req: Request) -> Response {
    let Some(addr) = INTERNAL.get().copied() else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let mut out = hyper::Request::builder()
        .method(req.method().clone())
        .uri(req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()));
    for (k, v) in req.headers() {
        out = out.header(k, v);
    }
    let Ok(out) = out.body(http_body_util::Empty::<bytes::Bytes>::new()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let backend = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.ok()?;
        tokio::spawn(conn.with_upgrades());
        sender.send_request(out).await.ok()
    };
    let Ok(Some(mut resp)) = tokio::time::timeout(std::time::Duration::from_secs(10), backend).await else {
        return (StatusCode::BAD_GATEWAY, "iroh relay unavailable\n").into_response();
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        let ctx2 = ctx.clone();
        ctx.tasks.spawn(async move {
            let (Ok(c), Ok(b)) = (client_upgrade.await, backend_upgrade.await) else { return };
            let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
            tokio::select! {
                _ = ctx2.shutdown.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut c, &mut b) => {}
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (parts, body) = resp.into_parts();
    match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_PLAIN_BODY)).await {
        Ok(b) => Response::from_parts(parts, Body::from(b.to_bytes())),
        Err(_) => (StatusCode::BAD_GATEWAY, "iroh relay unavailable\n").into_response(),
    }
}
