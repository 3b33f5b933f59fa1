//! `GET /privacy` (HTTP-10): the privacy policy with the operator's contacts from `[privacy]`
//! (empty fields left out) and the data table of privacy.md section 5 with the configured periods.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::html::{esc, page, respond};
use super::pages::{period, size};
use crate::config::Config;
use crate::context::Ctx;

fn contacts(c: &Config) -> String {
    let p = &c.privacy;
    let rows = [
        ("Operator (postal address)", &p.postal),
        ("Contact e-mail", &p.mail),
        ("Data protection officer", &p.pdo),
        ("Supervisory authority", &p.supervisor),
    ];
    let items: String = rows
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("<tr><th scope=\"row\">{k}</th><td>{}</td></tr>", esc(v.trim()).replace('\n', "<br>")))
        .collect();
    if items.is_empty() {
        String::new()
    } else {
        format!("<h2>Who is responsible</h2><table><tbody>{items}</tbody></table>")
    }
}

fn data_table(c: &Config) -> String {
    let mails = period(c.delete_mails_after.get());
    let large = period(c.delete_large_after.get());
    let inactive = period(c.delete_inactive_users_after.get());
    let queue = period(c.delivery.queue_lifetime.get());
    let rows: [(&str, String, String); 10] = [
        (
            "Account",
            "address, password hash (argon2id), creation day, last-login day, cleartext-allowed flag".into(),
            format!("until deleted by you or the operator, or {inactive} after the last login"),
        ),
        (
            "Messages",
            "end-to-end encrypted messages as received, with flags and arrival time".into(),
            format!(
                "at most {mails}; seen messages over {} at most {large}; oldest first when the mailbox passes 75 % of {}; usually deleted by your device right after download",
                size(c.large_message_size.bytes()),
                size(c.max_mailbox_size.bytes())
            ),
        ),
        (
            "Push tokens",
            "opaque tokens encrypted for the notification proxy".into(),
            "90 days after your device last set them, or until the proxy reports them invalid".into(),
        ),
        ("Pending push notifications", "account reference and token".into(), "at most 5 hours".into()),
        ("Outgoing queue", "encrypted message, sender, recipients".into(), format!("until delivered, at most {queue}")),
        (
            "Tombstones",
            "keyed hash of a deleted address, nothing else".into(),
            "forever, so the address is never reused".into(),
        ),
        ("MTA-STS cache", "policies of remote mail domains".into(), "until their max_age".into()),
        (
            "Keys",
            "DKIM key, TLS key and certificate, ACME account key, keyed-hash secret".into(),
            "until the operator removes them".into(),
        ),
        (
            "Memory only",
            "rate-limit and connection counters keyed by IP address; password-verification cache keyed by a keyed hash"
                .into(),
            "seconds to minutes; the cache at most 1 hour".into(),
        ),
        (
            "Logs",
            "service events, never IP addresses or message contents".into(),
            "3 days in RAM with the recommended settings".into(),
        ),
    ];
    let body: String = rows
        .iter()
        .map(|(a, b, k)| format!("<tr><th scope=\"row\">{a}</th><td>{}</td><td>{}</td></tr>", esc(b), esc(k)))
        .collect();
    format!(
        "<table><thead><tr><th scope=\"col\">Data</th><th scope=\"col\">Content</th><th scope=\"col\">Kept for</th></tr></thead><tbody>{body}</tbody></table>"
    )
}

pub(crate) async fn privacy(State(ctx): State<Ctx>) -> Response {
    let c = ctx.config.get();
    let body = format!(
        "<h1>Privacy policy</h1>\
<p>{d} is a chatmail relay. It is built to know as little as possible about you: it needs no name, \
phone number or other e-mail address, accepts only end-to-end encrypted messages, which it cannot \
read, and deletes them soon.</p>{contacts}\
<h2>What is never recorded</h2><ul>\
<li>Your IP address is never written to logs, the database or any file. It is held in memory only \
for connection and rate limits.</li>\
<li>Message contents, including subjects, are never logged. Outgoing messages have their subject \
replaced and client headers removed.</li>\
<li>Your password is never stored or logged; only a hash of it is kept.</li>\
<li>No login history is kept; only the day of your last login.</li>\
<li>This website sets no cookies, runs no scripts and loads nothing from other sites.</li></ul>\
<h2>What is stored and for how long</h2>{table}\
<h2>Deleting your data</h2><p>You can delete your account at any time on the \
<a href=\"/delete\">deletion page</a>. All its messages and data are removed at once. Backups the \
operator makes on their own are outside the relay's control.</p>",
        d = esc(&c.mail_domain),
        contacts = contacts(&c),
        table = data_table(&c),
    );
    respond(StatusCode::OK, page(&c.mail_domain, "Privacy", &body))
}
