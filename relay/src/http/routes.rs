//! The routers of the three listeners and what every response carries (HTTP-5, HTTP-27).

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;

use super::{autoconfig, delete, health, mxdeliv, new, pages, privacy, ws};
use crate::context::Ctx;

const BODY_LIMIT: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const MXDELIV_TIMEOUT: Duration = Duration::from_secs(60);

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'";

/// A JSON reply (`Content-Type: application/json`).
pub(crate) fn json(status: StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Port 443 (after ALPN routing chose HTTPS).
pub(crate) fn https(ctx: Ctx) -> Router {
    let max_message = usize::try_from(ctx.config.get().max_message_size.bytes()).unwrap_or(usize::MAX);
    let pages = Router::new()
        .route("/", get(pages::index))
        .route("/info", get(pages::info))
        .route("/privacy", get(privacy::privacy))
        .route("/delete", get(pages::delete_form))
        .route("/robots.txt", get(pages::robots))
        .route("/new", get(new::handler).post(new::handler))
        .route("/account/delete", post(delete::handler))
        .route("/.well-known/autoconfig/mail/config-v1.1.xml", get(autoconfig::autoconfig))
        .route("/mail/config-v1.1.xml", get(autoconfig::autoconfig))
        .route("/.well-known/mta-sts.txt", get(autoconfig::mta_sts))
        .route("/healthz", get(health::healthz))
        // IMAP and submission over WebSocket (issue 28); the handlers answer at once, the
        // session then runs on the upgraded stream outside the request timeout.
        .route("/imap", get(ws::imap))
        .route("/smtp", get(ws::smtp))
        .fallback(pages::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));
    // SLOT (HTTP-24): relay-to-relay delivery, implemented in mxdeliv.rs by the delivery issue.
    let mxdeliv = Router::new()
        .route("/mxdeliv", post(mxdeliv::handler))
        .layer(DefaultBodyLimit::max(max_message))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, MXDELIV_TIMEOUT));
    // Issue 28: the embedded iroh relay's paths, proxied like the reference's nginx does.
    let iroh = crate::iroh::PATHS
        .iter()
        .fold(Router::new(), |r, p| r.route(p, get(crate::iroh::proxy)))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));
    pages.merge(mxdeliv).merge(iroh).layer(map_response(security_headers)).with_state(ctx)
}

/// Port 80: ACME HTTP-01 answers, everything else to HTTPS on `mail_domain` (HTTP-1).
pub(crate) fn http(ctx: Ctx) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(acme_challenge))
        .fallback(redirect)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(map_response(security_headers))
        .with_state(ctx)
}

async fn acme_challenge(State(ctx): State<Ctx>, Path(token): Path<String>) -> Response {
    let mut answer = super::challenges().get(&token);
    // Several nodes (issue 27): the order may run on another node; its answers are in the
    // database. Tokens are base64url (RFC 8555 8.3); anything else is not looked up.
    if answer.is_none()
        && let Some(pg) = ctx.store.pg()
        && (1..=256).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        match pg.challenge(&token).await {
            Ok(a) => answer = a,
            Err(e) => {
                tracing::warn!(error = %e, "acme: shared challenge lookup failed");
                return (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response();
            }
        }
    }
    match answer {
        Some(key_auth) => ([(header::CONTENT_TYPE, "text/plain")], key_auth).into_response(),
        None => (StatusCode::NOT_FOUND, "no such challenge\n").into_response(),
    }
}

async fn redirect(State(ctx): State<Ctx>, uri: Uri) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let loc = format!("https://{}{path}", ctx.config.get().mail_domain);
    match HeaderValue::from_str(&loc) {
        Ok(v) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The metrics listener: nothing but `/metrics` and `/healthz` (HTTP-4).
pub(crate) fn metrics(ctx: Ctx) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(health::healthz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .with_state(ctx)
}
