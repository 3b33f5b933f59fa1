//! The HTML pages: index with the QR code (HTTP-6..8), `/info` (HTTP-9), `/delete` (HTTP-11),
//! `/robots.txt` and the 404 page (HTTP-12). `/privacy` lives in `privacy.rs`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use super::html::{esc, page, respond};
use super::new::{dclogin_url, generate, request_host};
use crate::config::{Registration, TlsMode};
use crate::context::Ctx;

/// Human size: binary units for round binary values ("30 MiB"), else decimal ("200 kB").
pub(crate) fn size(b: u64) -> String {
    const BIN: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    const DEC: [(&str, u64); 3] = [("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1000)];
    for (name, unit) in BIN {
        if b >= unit && b.is_multiple_of(unit) {
            return format!("{} {name}", b / unit);
        }
    }
    for (name, unit) in DEC {
        if b >= unit {
            let v = b as f64 / unit as f64;
            return if v.fract() < 0.05 { format!("{v:.0} {name}") } else { format!("{v:.1} {name}") };
        }
    }
    format!("{b} bytes")
}

/// Human duration in the largest whole unit ("20 days", "5 hours").
pub(crate) fn period(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

/// Inline SVG of `text`, sized by CSS, labelled for screen readers.
fn qr_svg(text: &str) -> Option<String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<svg::Color>()
        .quiet_zone(true)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    let start = svg.find("<svg")?;
    Some(svg[start..].replacen("<svg ", "<svg class=\"qr\" role=\"img\" aria-label=\"QR code of the link below\" ", 1))
}

/// `GET /`.
pub(crate) async fn index(State(ctx): State<Ctx>, headers: HeaderMap, uri: Uri) -> Response {
    let cfg = ctx.config.get();
    let d = esc(&cfg.mail_domain);
    let intro = format!(
        "<h1>{d}</h1><p>This is a <strong>chatmail relay</strong> for \
<a href=\"https://delta.chat\">Delta Chat</a>: a mail server that only carries end-to-end encrypted \
messages, keeps them briefly and then forgets them. You get an address here without giving any \
personal data.</p>"
    );
    if cfg.registration == Registration::Closed {
        let body = format!(
            "{intro}<div class=\"card\"><p><strong>Registration is closed.</strong> \
This relay does not accept new accounts right now. Existing accounts keep working.</p></div>"
        );
        return respond(StatusCode::OK, page(&cfg.mail_domain, "Chatmail relay", &body));
    }
    if cfg.registration == Registration::Invite {
        let body = format!(
            "{intro}<div class=\"card\"><p><strong>Registration is by invitation.</strong> \
Ask the operator of this relay for an invite link or QR code and open it with Delta Chat. \
Existing accounts keep working.</p></div>"
        );
        return respond(StatusCode::OK, page(&cfg.mail_domain, "Chatmail relay", &body));
    }
    let self_signed = cfg.tls.mode == TlsMode::SelfSigned;
    let link = if self_signed {
        match generate(&ctx).await {
            Ok(c) => dclogin_url(&cfg, &c, &request_host(&cfg, &headers, &uri)),
            Err(e) => {
                tracing::error!(error = %e, "cannot generate credentials");
                return respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    page(
                        &cfg.mail_domain,
                        "Unavailable",
                        "<h1>Temporarily unavailable</h1><p>Please try again later.</p>",
                    ),
                );
            }
        }
    } else {
        format!("dcaccount:{}", cfg.mail_domain)
    };
    let Some(svg) = qr_svg(&link) else {
        return respond(StatusCode::INTERNAL_SERVER_ERROR, page(&cfg.mail_domain, "Error", "<h1>Error</h1>"));
    };
    let l = esc(&link);
    let how = if self_signed {
        "<p class=\"muted\">This code holds a fresh address and password made for you just now \
(this relay uses a self-signed certificate). Nothing is stored until the app first logs in; \
reloading the page makes a new one.</p>"
    } else {
        "<p class=\"muted\">The app makes up a random address on this relay and creates the account \
when it first logs in.</p>"
    };
    let body = format!(
        "{intro}<div class=\"card center\"><h2>Get an address</h2>\
<p>Install Delta Chat, then on its welcome screen choose <em>Create New Profile</em> → \
<em>Use Other Server</em> and scan this code, or tap the button on this device.</p>\
{svg}{how}<p><a class=\"button\" href=\"{l}\">Open in Delta Chat</a></p>\
<p>Or copy this link:</p><code class=\"link\">{l}</code></div>"
    );
    let mut r = respond(StatusCode::OK, page(&cfg.mail_domain, "Chatmail relay", &body));
    if self_signed {
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// `GET /info` (HTTP-9).
pub(crate) async fn info(State(ctx): State<Ctx>) -> Response {
    let c = ctx.config.get();
    let body = format!(
        "<h1>About this relay</h1><p>{d} is a chatmail relay: it accepts only end-to-end encrypted \
messages (OpenPGP, as Delta Chat sends them), delivers them to the recipient's device and deletes \
them soon after. Addresses are random and need no phone number or e-mail.</p>\
<h2>Limits</h2><table><tbody>\
<tr><th scope=\"row\">Largest message</th><td>{msg}</td></tr>\
<tr><th scope=\"row\">Mailbox size</th><td>{mbox}; when it is 75 % full the oldest messages are removed</td></tr>\
<tr><th scope=\"row\">Messages are kept</th><td>at most {keep}; seen messages over {large} at most {keep_large}</td></tr>\
<tr><th scope=\"row\">Unused accounts</th><td>deleted {inactive} after the last login</td></tr>\
<tr><th scope=\"row\">Sending</th><td>up to {rate} messages per minute</td></tr>\
</tbody></table><p>Normally your devices download and delete messages right away, so these limits \
rarely matter.</p>",
        d = esc(&c.mail_domain),
        msg = size(c.max_message_size.bytes()),
        mbox = size(c.max_mailbox_size.bytes()),
        keep = period(c.delete_mails_after.get()),
        large = size(c.large_message_size.bytes()),
        keep_large = period(c.delete_large_after.get()),
        inactive = period(c.delete_inactive_users_after.get()),
        rate = c.max_user_send_per_minute,
    );
    respond(StatusCode::OK, page(&c.mail_domain, "Info", &body))
}

/// `GET /delete` (HTTP-11).
pub(crate) async fn delete_form(State(ctx): State<Ctx>) -> Response {
    let c = ctx.config.get();
    let body = format!(
        "<h1>Delete your account</h1>\
<p class=\"warn\">Deletion is immediate and final. All messages on the relay are removed and the \
address can never be used again, by you or anyone else.</p>\
<form class=\"card\" method=\"post\" action=\"/account/delete\">\
<label for=\"email\">Address</label>\
<input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required placeholder=\"name@{d}\">\
<label for=\"password\">Password</label>\
<input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<p><button class=\"button\" type=\"submit\">Delete account now</button></p></form>\
<p class=\"muted\">Use the address and password your app logs in with.</p>",
        d = esc(&c.mail_domain)
    );
    respond(StatusCode::OK, page(&c.mail_domain, "Delete account", &body))
}

/// `GET /robots.txt` (HTTP-12).
pub(crate) async fn robots() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "User-agent: *\nAllow: /\nDisallow: /new\nDisallow: /account/\n",
    )
        .into_response()
}

/// Any unknown path on HTTPS (HTTP-12).
pub(crate) async fn not_found(State(ctx): State<Ctx>) -> Response {
    let c = ctx.config.get();
    let body = "<h1>Not found</h1><p>There is no page at this address.</p>";
    respond(StatusCode::NOT_FOUND, page(&c.mail_domain, "Not found", body))
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_units() {
        assert_eq!(super::size(31_457_280), "30 MiB");
        assert_eq!(super::size(200_000), "200 kB");
        assert_eq!(super::size(1_500_000), "1.5 MB");
        assert_eq!(super::period(std::time::Duration::from_secs(20 * 86_400)), "20 days");
        assert_eq!(super::period(std::time::Duration::from_secs(3600)), "1 hour");
    }

    #[test]
    fn qr_is_inline_svg() {
        let s = super::qr_svg("dcaccount:x.test").expect("svg");
        assert!(s.starts_with("<svg class=\"qr\" role=\"img\""));
        assert!(!s.contains("<?xml"));
    }
}
