//! The page frame shared by every HTML page: inline CSS only, no scripts, no external loads
//! (HTTP-5), readable on a phone and with a screen reader.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = "\
:root{color-scheme:light dark;--fg:#1b1b1f;--bg:#fafafa;--muted:#5a5a66;--card:#fff;--accent:#0b6bcb;--warn:#a4000f}\
@media (prefers-color-scheme:dark){:root{--fg:#ececf1;--bg:#16161a;--muted:#a6a6b3;--card:#212127;--accent:#6cb3ff;--warn:#ff8a8a}}\
*{box-sizing:border-box}\
body{margin:0;font:17px/1.55 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
main{max-width:40rem;margin:0 auto;padding:1.25rem 1rem 3rem}\
h1{font-size:1.6rem;line-height:1.25;margin:.5rem 0 1rem}\
h2{font-size:1.2rem;margin:1.75rem 0 .5rem}\
a{color:var(--accent)}\
p,li{max-width:65ch}\
.card h2{margin-top:0}\
.card{background:var(--card);border-radius:12px;padding:1rem;box-shadow:0 1px 3px rgba(0,0,0,.12);margin:1rem 0}\
.qr{display:block;margin:0 auto;width:min(80vw,300px);height:auto;background:#fff;padding:8px;border-radius:8px}\
.link{display:block;text-align:left;word-break:break-all;font:14px/1.4 ui-monospace,monospace;background:var(--bg);padding:.6rem;border-radius:6px;user-select:all}\
.button{display:inline-block;background:var(--accent);color:#fff;text-decoration:none;padding:.7rem 1.2rem;border-radius:8px;font-weight:600;border:0;font-size:1rem}\
.center{text-align:center}\
.muted{color:var(--muted)}\
.warn{color:var(--warn);font-weight:600}\
nav{display:flex;gap:1.2rem;flex-wrap:wrap;margin-top:2rem;padding-top:1rem;border-top:1px solid rgba(127,127,127,.3)}\
label{display:block;margin:.8rem 0 .3rem;font-weight:600}\
input{width:100%;font-size:1rem;padding:.6rem;border-radius:6px;border:1px solid var(--muted);background:var(--card);color:var(--fg)}\
table{border-collapse:collapse;width:100%;font-size:.95rem}\
th,td{text-align:left;vertical-align:top;padding:.45rem .4rem;border-bottom:1px solid rgba(127,127,127,.3)}\
";

/// Escape text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A full HTML document. `body` is trusted markup built by the page functions.
pub fn page(domain: &str, title: &str, body: &str) -> String {
    let d = esc(domain);
    let t = esc(title);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t} · {d}</title><style>{CSS}</style></head>\
<body><main>{body}<nav aria-label=\"Site\"><a href=\"/\">Home</a><a href=\"/info\">Info</a>\
<a href=\"/privacy\">Privacy</a><a href=\"/delete\">Delete account</a></nav></main></body></html>\n"
    )
}

/// An HTML response with the given status.
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(super::esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
