//! Issue 5: the HTTPS pages, `/new`, port 80 and the metrics listener, against a running relay
//! over real TLS.

use crate::harness::*;

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'";

fn assert_security_headers(r: &HttpResponse) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{:?}", r.headers);
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.header("set-cookie").is_none());
}

/// Split a `dclogin:` URL into its address and query pairs.
pub fn parse_dclogin(url: &str) -> (String, Vec<(String, String)>) {
    let rest = url.strip_prefix("dclogin:").unwrap_or_else(|| panic!("not dclogin: {url}"));
    let (addr, query) = rest.split_once("/?").expect("/? in dclogin");
    let pairs = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("k=v");
            (k.to_string(), percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
        .collect();
    (addr.to_string(), pairs)
}

fn get<'a>(pairs: &'a [(String, String)], k: &str) -> &'a str {
    pairs.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {k} in {pairs:?}"))
}

fn check_local(email: &str, domain: &str) {
    let (local, dom) = email.split_once('@').expect("@");
    assert_eq!(dom, domain);
    assert_eq!(local.len(), 9, "{email}");
    assert!(local.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{email}");
}

/// HTTP-6, HTTP-7: self-signed index shows a fresh dclogin: link (QR + text) for the request host
/// and the imaps/submissions ports, never cached; HTTP-5 headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_self_signed_dclogin() {
    let relay = Relay::start("");
    let r = relay.https("GET", "/").await;
    assert_eq!(r.status, 200);
    assert_security_headers(&r);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/html"));
    let html = r.text();
    assert!(html.contains("<svg class=\"qr\""), "inline SVG QR");
    assert!(!html.contains("<script"), "no JavaScript");
    for link in ["/info", "/privacy", "/delete"] {
        assert!(html.contains(&format!("href=\"{link}\"")), "links to {link}");
    }
    let start = html.find("<code class=\"link\">").expect("link text") + "<code class=\"link\">".len();
    let url = html[start..].split('<').next().expect("link").replace("&amp;", "&");
    let (addr, q) = parse_dclogin(&url);
    check_local(&addr, "chat.test");
    assert_eq!(get(&q, "ih"), "127.0.0.1");
    assert_eq!(get(&q, "sh"), "127.0.0.1");
    assert_eq!(get(&q, "ip"), relay.ports.imaps.to_string());
    assert_eq!(get(&q, "sp"), relay.ports.submissions.to_string());
    assert_eq!(get(&q, "ic"), "3");
    assert_eq!(get(&q, "is"), "ssl");
    assert_eq!(get(&q, "v"), "1");
    assert!(get(&q, "p").len() >= 20);
    let again = relay.https("GET", "/").await.text();
    assert!(!again.contains(&addr), "each GET makes new credentials");
    let (code, _, err) = relay.cli(&["accounts", "show", &addr]);
    assert_eq!(code, 1, "showing the page creates no account: {err}");
}

/// HTTP-13, HTTP-14, ACC-4..6: POST /new returns usable credentials and creates nothing; the
/// credentials are accepted by the relay's login path (which then creates the account).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_new_returns_working_credentials() {
    let relay = Relay::start("");
    let r = relay.https("POST", "/new").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    let email = j["email"].as_str().expect("email").to_string();
    let password = j["password"].as_str().expect("password").to_string();
    check_local(&email, "chat.test");
    assert!(password.len() >= 20 && password.bytes().all(|b| b.is_ascii_alphanumeric()));
    let (addr, q) = parse_dclogin(j["dclogin_url"].as_str().expect("dclogin_url in self-signed mode"));
    assert_eq!(addr, email);
    assert_eq!(get(&q, "p"), password);
    let (code, _, _) = relay.cli(&["accounts", "show", &email]);
    assert_eq!(code, 1, "no account before the first login");
    let (_store, accounts) = relay.accounts();
    let acc = accounts.login(&email, &password, "imap").await.expect("generated credentials log in");
    assert_eq!(acc.address, email);
    let (code, out, err) = relay.cli(&["accounts", "show", &email]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&email) && out.contains("mailbox\tINBOX"), "{out}");
    // GET /new answers like POST in self-signed mode (HTTP-16).
    let g = relay.https("GET", "/new").await;
    assert_eq!(g.status, 200);
    assert!(g.json()["dclogin_url"].is_string());
}

/// Must-show: the /new credentials log in over IMAP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_credentials_log_in_over_imap() {
    let relay = Relay::start("");
    let j = relay.https("POST", "/new").await.json();
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    let greeting = c.line().await.expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let lines = c
        .imap("a", &format!("LOGIN {} {}", j["email"].as_str().unwrap_or(""), j["password"].as_str().unwrap_or("")))
        .await;
    assert!(lines.last().is_some_and(|l| l.starts_with("a OK")), "{lines:?}");
}

/// HTTP-8, HTTP-15: closed registration: no QR on the index, /new 403 with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_closed() {
    let relay = Relay::start("registration = \"closed\"");
    let r = relay.https("POST", "/new").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reason"], "registration is closed");
    let page = relay.https("GET", "/").await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("Registration is closed"));
    assert!(!html.contains("<svg") && !html.contains("dclogin:"), "no QR when closed");
}

/// HTTP-17: 2/s with a burst of 5 per client over GET and POST /new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_is_rate_limited() {
    // The default bucket (the harness raises it for tests that create many accounts).
    let relay = Relay::start("limits.new_accounts_burst = 5\n");
    let mut codes = Vec::new();
    for i in 0..12 {
        let m = if i % 2 == 0 { "POST" } else { "GET" };
        codes.push(relay.https(m, "/new").await.status);
    }
    println!("status codes of 12 quick /new requests: {codes:?}");
    assert!(codes[..5].iter().all(|c| *c == 200), "burst of 5 allowed: {codes:?}");
    let limited = relay.https("POST", "/new").await;
    let limited = if limited.status == 429 { limited } else { relay.https("POST", "/new").await };
    assert_eq!(limited.status, 429, "{codes:?}");
    assert_eq!(limited.json()["reason"], "too many requests");
    assert!(limited.header("retry-after").is_some());
    assert!(!relay.log().contains("127.0.0.1"), "no IP in the log");
}

/// HTTP-9, HTTP-10, HTTP-11, HTTP-12: the static pages carry config values and the right codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_privacy_delete_robots_404() {
    let relay = Relay::start(
        "delete_mails_after = \"13d\"\nmax_message_size = \"10M\"\n[privacy]\nmail = \"dpo@example.org\"\nsupervisor = \"\"",
    );
    let info = relay.https("GET", "/info").await;
    assert_eq!(info.status, 200);
    assert_security_headers(&info);
    assert!(info.text().contains("13 days") && info.text().contains("10 MiB"), "{}", info.text());
    let p = relay.https("GET", "/privacy").await.text();
    assert!(p.contains("13 days") && p.contains("dpo@example.org"), "configured values");
    assert!(!p.contains("Supervisory authority"), "empty fields are left out");
    assert!(p.contains("Tombstones") && p.contains("password hash"), "the data table");
    let d = relay.https("GET", "/delete").await.text();
    assert!(d.contains("action=\"/account/delete\"") && d.contains("name=\"password\"") && d.contains("final"));
    let robots = relay.https("GET", "/robots.txt").await.text();
    assert!(robots.contains("Disallow: /new") && robots.contains("Disallow: /account/"));
    let nf = relay.https("GET", "/nope").await;
    assert_eq!(nf.status, 404);
    assert_security_headers(&nf);
    assert_eq!(relay.https("GET", "/.well-known/mta-sts.txt").await.status, 404, "HTTP-23 self-signed");
    assert_eq!(relay.https("GET", "/account/delete").await.status, 405, "HTTP-18");
    assert_eq!(relay.https("GET", "/metrics").await.status, 404, "HTTP-4");
    let h = relay.https("GET", "/healthz").await;
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
}

/// HTTP-1: port 80 redirects to https://mail_domain<path>, whatever the Host; challenges 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_80_redirects() {
    let relay = Relay::start("");
    let a = relay.addr(relay.ports.http);
    let r = http_req(&a, "GET", "/info?x=1", "evil.example").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://chat.test/info?x=1"));
    let c = http_req(&a, "GET", "/.well-known/acme-challenge/abc", "chat.test").await;
    assert_eq!(c.status, 404);
}

/// HTTP-4, HTTP-25, HTTP-26: the metrics listener serves /metrics and /healthz only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listener() {
    let relay = Relay::start("");
    let a = relay.addr(relay.ports.metrics);
    let m = http_req(&a, "GET", "/metrics", "x").await;
    assert_eq!(m.status, 200);
    let text = m.text();
    for name in ["chatrelay_accounts ", "chatrelay_queue_size", "chatrelay_imap_connections"] {
        assert!(text.contains(name), "{name} in {text}");
    }
    assert!(
        text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).all(|l| l.starts_with("chatrelay_")),
        "{text}"
    );
    let h = http_req(&a, "GET", "/healthz", "x").await;
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    assert_eq!(http_req(&a, "GET", "/", "x").await.status, 404);
}

/// HTTP-15: a resource gate closed (here: disk) gives 429 with Retry-After 600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_gate_closed_is_429() {
    let relay =
        Relay::start("max_load_1m = 100000.0\nmin_available_memory = \"1M\"\nmin_free_disk_space = \"100000000G\"");
    let r = relay.https("POST", "/new").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("600"));
    assert_eq!(r.json()["reason"], "registration temporarily unavailable, try again later");
    let m = http_req(&relay.addr(relay.ports.metrics), "GET", "/metrics", "x").await.text();
    assert!(m.contains("chatrelay_registrations_refused_total{reason=\"disk\"} 1"), "{m}");
}

/// HTTP-24, HTTP-27: the /mxdeliv slot answers until the delivery issue fills it; oversized
/// headers and bodies are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_mxdeliv_slot() {
    let relay = Relay::start("");
    let a = relay.addr(relay.ports.https);
    let mx = https_req(&a, "POST", "/mxdeliv", &a, &[], b"hello").await;
    // The delivery issue filled the slot: no envelope headers is DLV-43's 400.
    assert_eq!((mx.status, mx.text().as_str()), (400, "501 5.5.4 Missing or invalid envelope headers"));
    let big = "x".repeat(20 * 1024);
    let s = tokio::net::TcpStream::connect(&a).await.expect("connect");
    let r = http_on(tls_wrap(s, &[b"http/1.1"]).await, "GET", "/", &a, &[("X-Big", &big)], b"").await;
    assert_eq!(r.status, 431, "headers over 16 KiB");
    let body = format!("{{\"email\":\"{}\",\"password\":\"x\"}}", "a".repeat(70 * 1024));
    let r =
        https_req(&a, "POST", "/account/delete", &a, &[("Content-Type", "application/json")], body.as_bytes()).await;
    assert_eq!(r.status, 413, "body over 64 KiB: {}", r.text());
}
