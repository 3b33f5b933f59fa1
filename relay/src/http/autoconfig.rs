//! Thunderbird autoconfig (HTTP-19..21) and the MTA-STS policy (HTTP-22, HTTP-23).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::html::esc;
use crate::config::{Config, TlsMode};
use crate::context::Ctx;

fn first_port(list: &[std::net::SocketAddr]) -> Option<u16> {
    list.first().map(|a| a.port())
}

/// The XML. Entries of disabled listeners are left out (HTTP-21).
pub(crate) fn xml(c: &Config) -> String {
    let d = esc(&c.mail_domain);
    let l = &c.listen;
    let server = |tag: &str, kind: &str, port: Option<u16>, socket: &str| {
        port.map(|p| {
            format!(
                "    <{tag} type=\"{kind}\">\n      <hostname>{d}</hostname>\n      <port>{p}</port>\n      \
<socketType>{socket}</socketType>\n      <username>%EMAILADDRESS%</username>\n      \
<authentication>password-cleartext</authentication>\n    </{tag}>\n"
            )
        })
        .unwrap_or_default()
    };
    let https = first_port(&l.https);
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n  <emailProvider id=\"{d}\">\n    \
<domain>{d}</domain>\n    <displayName>{d} chatmail</displayName>\n    <displayShortName>{d}</displayShortName>\n"
    );
    out += &server("incomingServer", "imap", first_port(&l.imaps), "SSL");
    out += &server("incomingServer", "imap", first_port(&l.imap), "STARTTLS");
    out += &server("incomingServer", "imap", https, "SSL");
    out += &server("outgoingServer", "smtp", first_port(&l.submissions), "SSL");
    out += &server("outgoingServer", "smtp", first_port(&l.submission), "STARTTLS");
    out += &server("outgoingServer", "smtp", https, "SSL");
    out += "  </emailProvider>\n</clientConfig>\n";
    out
}

pub(crate) async fn autoconfig(State(ctx): State<Ctx>) -> Response {
    ([(header::CONTENT_TYPE, "application/xml; charset=utf-8")], xml(&ctx.config.get())).into_response()
}

/// The MTA-STS policy served at `/.well-known/mta-sts.txt` (HTTP-22). `chatrelay dns` hashes the
/// same text, so the `_mta-sts` id moves exactly when the policy changes (OPS-8).
pub(crate) fn mta_sts_policy(domain: &str) -> String {
    format!("version: STSv1\r\nmode: enforce\r\nmx: {domain}\r\nmax_age: 2419200\r\n")
}

pub(crate) async fn mta_sts(State(ctx): State<Ctx>) -> Response {
    let c = ctx.config.get();
    if c.tls.mode == TlsMode::SelfSigned {
        return super::pages::not_found(State(ctx.clone())).await;
    }
    let body = mta_sts_policy(&c.mail_domain);
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn order_and_disabled_listeners() {
        let mut c = crate::config::Config { mail_domain: "x.test".into(), ..Default::default() };
        let x = super::xml(&c);
        let ports: Vec<&str> = x.match_indices("<port>").map(|(i, _)| &x[i + 6..i + 9]).collect();
        assert_eq!(ports, ["993", "143", "443", "465", "587", "443"]);
        c.listen.imap.clear();
        assert!(!super::xml(&c).contains("<port>143</port>"));
    }
}
