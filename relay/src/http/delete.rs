//! `POST /account/delete` (HTTP-18, ACC-31..34): self-service deletion with the account's own
//! password. Never creates an account; every credential failure gets the same 401; attempts are
//! throttled per client and failures per address, in memory only.

use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::{Extension, Form, Json};
use serde::Deserialize;

use super::html::{page, respond};
use super::limiter::{client_key, limits};
use super::routes::json;
use crate::accounts::AuthError;
use crate::context::{ConnInfo, Ctx};
use crate::store::DeleteReason;

#[derive(Deserialize)]
struct Fields {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

enum Outcome {
    Deleted,
    Invalid,
    Throttled(Duration),
    BadRequest,
    TooLarge,
    Failed,
}

pub(crate) async fn handler(State(ctx): State<Ctx>, Extension(conn): Extension<ConnInfo>, req: Request) -> Response {
    let is_form = is_form(&req);
    let outcome = match parse_fields(req).await {
        Ok((email, password)) => attempt(&ctx, conn, &Fields { email, password }).await,
        Err(StatusCode::PAYLOAD_TOO_LARGE) => Outcome::TooLarge,
        Err(_) => Outcome::BadRequest,
    };
    if is_form { html_reply(&ctx, outcome) } else { json_reply(outcome) }
}

fn is_form(req: &Request) -> bool {
    let ctype = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    ctype.starts_with("application/x-www-form-urlencoded")
}

/// The body parser of `handler` (form or JSON fields), public as a pure entry point for fuzzing.
pub async fn parse_fields(req: Request) -> Result<(String, String), StatusCode> {
    let fields = if is_form(&req) {
        Form::<Fields>::from_request(req, &()).await.map(|f| f.0).map_err(|r| r.status())
    } else {
        Json::<Fields>::from_request(req, &()).await.map(|j| j.0).map_err(|r| r.status())
    };
    fields.map(|f| (f.email, f.password))
}

async fn attempt(ctx: &Ctx, conn: ConnInfo, f: &Fields) -> Outcome {
    let now = Instant::now();
    let ip = client_key(conn.peer);
    let lim = limits();
    if let Err(wait) = lim.delete_ip.check(&ip, now) {
        return Outcome::Throttled(wait);
    }
    lim.delete_ip.hit(&ip, now);
    let addr = f.email.trim().to_lowercase();
    let addr_key = ctx.accounts.secret().keyed_hash(&[b"delete-throttle", addr.as_bytes()]);
    if let Err(wait) = lim.delete_addr.check(&addr_key, now) {
        return Outcome::Throttled(wait);
    }
    match ctx.accounts.verify_existing(&addr, &f.password).await {
        Ok(acc) => match ctx.accounts.delete(&acc, DeleteReason::SelfService).await {
            Ok(()) => Outcome::Deleted,
            Err(e) => {
                tracing::error!(error = %e, "self-service deletion failed");
                Outcome::Failed
            }
        },
        Err(AuthError::Store(e)) => {
            tracing::error!(error = %e, "self-service deletion: store error");
            Outcome::Failed
        }
        Err(e) => {
            tracing::info!(reason = e.reason(), "self-service deletion refused");
            lim.delete_addr.hit(&addr_key, now);
            Outcome::Invalid
        }
    }
}

fn retry_after(mut r: Response, wait: Duration) -> Response {
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

fn json_reply(o: Outcome) -> Response {
    use serde_json::json as j;
    match o {
        Outcome::Deleted => json(StatusCode::OK, j!({"deleted": true})),
        Outcome::Invalid => json(StatusCode::UNAUTHORIZED, j!({"reason": "invalid address or password"})),
        Outcome::Throttled(w) => {
            retry_after(json(StatusCode::TOO_MANY_REQUESTS, j!({"reason": "too many attempts"})), w)
        }
        Outcome::BadRequest => {
            json(StatusCode::BAD_REQUEST, j!({"reason": "expected email and password as JSON or form fields"}))
        }
        Outcome::TooLarge => json(StatusCode::PAYLOAD_TOO_LARGE, j!({"reason": "request too large"})),
        Outcome::Failed => {
            json(StatusCode::INTERNAL_SERVER_ERROR, j!({"reason": "temporarily unavailable, try again later"}))
        }
    }
}

fn html_reply(ctx: &Ctx, o: Outcome) -> Response {
    let d = ctx.config.get().mail_domain.clone();
    let again = "<p><a href=\"/delete\">Try again</a></p>";
    let (status, title, body) = match o {
        Outcome::Deleted => (StatusCode::OK, "Account deleted", "<h1>Account deleted</h1><p>Your account and all its messages are gone from this relay. The address can not be used again.</p>".to_string()),
        Outcome::Invalid => (StatusCode::UNAUTHORIZED, "Not deleted", format!("<h1>Not deleted</h1><p>Invalid address or password.</p>{again}")),
        Outcome::Throttled(w) => {
            let r = respond(StatusCode::TOO_MANY_REQUESTS, page(&d, "Too many attempts", &format!("<h1>Too many attempts</h1><p>Please wait {} minutes and try again.</p>", w.as_secs().div_ceil(60))));
            return retry_after(r, w);
        }
        Outcome::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Not deleted", format!("<h1>Not deleted</h1><p>The request was too large.</p>{again}")),
        Outcome::BadRequest => (StatusCode::BAD_REQUEST, "Not deleted", format!("<h1>Not deleted</h1><p>Please fill in both address and password.</p>{again}")),
        Outcome::Failed => (StatusCode::INTERNAL_SERVER_ERROR, "Error", format!("<h1>Not deleted</h1><p>The relay could not process this right now. Please try again later.</p>{again}")),
    };
    respond(status, page(&d, title, &body))
}
