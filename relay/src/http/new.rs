//! `/new` (HTTP-13..17) and the `dclogin:` link of the self-signed index page (HTTP-7): fresh
//! credentials for a new account. Nothing is stored; the first login creates the account (ACC-6).

use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::limiter::{client_key, limits};
use super::routes::json;
use crate::accounts::invites::InviteRefused;
use crate::accounts::{GateClosed, credentials};
use crate::config::{Config, Registration, TlsMode};
use crate::context::{ConnInfo, Ctx};
use crate::store::StoreError;

/// Characters left as they are in `dclogin:` query values (RFC 3986 unreserved).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// How often a colliding localpart is drawn again before giving up (ACC-7). With 36^9 names a
/// second draw is already improbable.
const MAX_DRAWS: usize = 16;

pub(crate) struct Credentials {
    pub email: String,
    pub password: String,
}

/// Draw a localpart that is neither taken nor tombstoned (ACC-4, ACC-5, ACC-7).
pub(crate) async fn generate(ctx: &Ctx) -> Result<Credentials, StoreError> {
    let cfg = ctx.config.get();
    let domain = cfg.mail_domain.to_lowercase();
    for _ in 0..MAX_DRAWS {
        let email = format!("{}@{domain}", credentials::localpart(cfg.username_max_length));
        if ctx.store.account_by_address(&email).await?.is_some() {
            continue;
        }
        if ctx.store.is_tombstoned(ctx.accounts.secret().tombstone(&email)).await? {
            continue;
        }
        // A relay-issued token (ACC-19a): stored and verified with the fast hash at first login.
        let password = credentials::password(ctx.accounts.secret(), &email, cfg.password_min_length);
        return Ok(Credentials { email, password });
    }
    Err(StoreError::Limit("no free address found"))
}

/// The host part of the request's Host (or HTTP/2 :authority), without port or IPv6 brackets.
/// Anything that does not look like a host name or IP falls back to `mail_domain`.
pub(crate) fn request_host(cfg: &Config, headers: &HeaderMap, uri: &Uri) -> String {
    let raw = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default().to_string()
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(&raw).to_string()
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    if ok { host.to_ascii_lowercase() } else { cfg.mail_domain.clone() }
}

/// The `dclogin:` URL of HTTP-7 for these credentials. Ports are those of the first `imaps` and
/// `submissions` listeners; `ic=3` makes the app accept the self-signed certificate.
pub(crate) fn dclogin_url(cfg: &Config, creds: &Credentials, host: &str) -> String {
    let imaps = cfg.listen.imaps.first().map(|a| a.port()).unwrap_or(993);
    let subs = cfg.listen.submissions.first().map(|a| a.port()).unwrap_or(465);
    let e = |s: &str| utf8_percent_encode(s, VALUE).to_string();
    format!(
        "dclogin:{}/?p={}&v=1&ih={}&ip={imaps}&is=ssl&sh={}&sp={subs}&ss=ssl&ic=3",
        creds.email,
        e(&creds.password),
        e(host),
        e(host)
    )
}

/// GET and POST `/new`.
pub(crate) async fn handler(
    State(ctx): State<Ctx>,
    Extension(conn): Extension<ConnInfo>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if !limits().new.allow(&client_key(conn.peer), Instant::now()) {
        let mut r = json(StatusCode::TOO_MANY_REQUESTS, serde_json::json!({"reason": "too many requests"}));
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let cfg = ctx.config.get();
    let self_signed = cfg.tls.mode == TlsMode::SelfSigned;
    if cfg.registration == Registration::Invite {
        return invited(&ctx, &cfg, method, &headers, &uri).await;
    }
    if method == Method::GET && !self_signed {
        // HTTP-16: the legacy flow opens the app, which then POSTs here.
        let loc = format!("dcaccount:https://{}/new", cfg.mail_domain);
        return match HeaderValue::from_str(&loc) {
            Ok(v) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, v)]).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    if let Err(gate) = ctx.accounts.registration_open() {
        ctx.metrics.registrations_refused.get_or_create(&vec![("reason", gate.label())]).inc();
        return match gate {
            GateClosed::Closed => json(StatusCode::FORBIDDEN, serde_json::json!({"reason": "registration is closed"})),
            _ => {
                let body = serde_json::json!({"reason": "registration temporarily unavailable, try again later"});
                let mut r = json(StatusCode::TOO_MANY_REQUESTS, body);
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
                r
            }
        };
    }
    let creds = match generate(&ctx).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot generate credentials");
            return json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"reason": "temporarily unavailable"}));
        }
    };
    let mut body = serde_json::json!({"email": creds.email, "password": creds.password});
    if self_signed {
        body["dclogin_url"] = dclogin_url(&cfg, &creds, &request_host(&cfg, &headers, &uri)).into();
    }
    let mut r = json(StatusCode::OK, body);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The `invite` query parameter, if any.
fn invite_param(uri: &Uri) -> Option<&str> {
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix("invite="))
}

/// `/new` with `registration = "invite"` (issue 28). GET never counts a use (link previews fetch
/// links): it sends the browser on to the app with the same invite. POST counts one use and
/// creates the account, answering the credentials, or says in `reason` why not.
async fn invited(ctx: &Ctx, cfg: &Config, method: Method, headers: &HeaderMap, uri: &Uri) -> Response {
    let Some(token) = invite_param(uri) else {
        let e = InviteRefused::Missing;
        ctx.metrics.registrations_refused.get_or_create(&vec![("reason", e.label())]).inc();
        return json(StatusCode::FORBIDDEN, serde_json::json!({"reason": e.to_string()}));
    };
    if method == Method::GET {
        let token = if crate::accounts::invites::plausible(token) { token } else { "" };
        let loc = format!("dcaccount:https://{}/new?invite={token}", cfg.mail_domain);
        return match HeaderValue::from_str(&loc) {
            Ok(v) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, v)]).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        };
    }
    let creds = match generate(ctx).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot generate credentials");
            return json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"reason": "temporarily unavailable"}));
        }
    };
    if let Err(e) = ctx.accounts.create_invited(token, &creds.email, &creds.password).await {
        ctx.metrics.registrations_refused.get_or_create(&vec![("reason", e.label())]).inc();
        tracing::info!(reason = e.label(), "invite refused");
        return match e {
            InviteRefused::Gate(_) => {
                let body = serde_json::json!({"reason": "registration temporarily unavailable, try again later"});
                let mut r = json(StatusCode::TOO_MANY_REQUESTS, body);
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
                r
            }
            InviteRefused::Store(e) => {
                tracing::error!(error = %e, "cannot create an invited account");
                json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"reason": "temporarily unavailable"}))
            }
            e => json(StatusCode::FORBIDDEN, serde_json::json!({"reason": e.to_string()})),
        };
    }
    let mut body = serde_json::json!({"email": creds.email, "password": creds.password});
    if cfg.tls.mode == TlsMode::SelfSigned {
        body["dclogin_url"] = dclogin_url(cfg, &creds, &request_host(cfg, headers, uri)).into();
    }
    let mut r = json(StatusCode::OK, body);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dclogin_shape() {
        let mut cfg = Config::default();
        cfg.listen.imaps = vec!["127.0.0.1:2993".parse().expect("addr")];
        cfg.listen.submissions = vec!["127.0.0.1:2465".parse().expect("addr")];
        let c = Credentials { email: "abc@x.test".into(), password: "Pw9".into() };
        assert_eq!(
            dclogin_url(&cfg, &c, "::1"),
            "dclogin:abc@x.test/?p=Pw9&v=1&ih=%3A%3A1&ip=2993&is=ssl&sh=%3A%3A1&sp=2465&ss=ssl&ic=3"
        );
    }

    #[test]
    fn host_parsing() {
        let cfg = Config { mail_domain: "x.test".into(), ..Config::default() };
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(v).expect("header"));
            request_host(&cfg, &m, &Uri::from_static("/"))
        };
        assert_eq!(h("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(h("[::1]:8443"), "::1");
        assert_eq!(h("Chat.Example"), "chat.example");
        assert_eq!(h("evil\"host"), "x.test");
        assert_eq!(request_host(&cfg, &HeaderMap::new(), &Uri::from_static("/")), "x.test");
    }
}
