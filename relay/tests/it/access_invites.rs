//! Issue 28: invite-only registration. `chatrelay invites create` → `/new?invite=` → login →
//! exhaustion → refusal; revoke, expiry, list; first logins without an invite are refused; uses
//! are counted atomically under concurrent redemption.

use crate::harness::*;
use crate::imap_helpers::last;

const INVITE: &str = "registration = \"invite\"\n";

/// The token of a `chatrelay invites create` output, after checking its links and QR file.
fn created(out: &(i32, String, String), qr: &std::path::Path) -> String {
    assert_eq!(out.0, 0, "{} {}", out.1, out.2);
    let dc = out.1.lines().find(|l| l.starts_with("dcaccount:")).expect("dcaccount link");
    let https = out.1.lines().find(|l| l.starts_with("https://")).expect("https link");
    assert_eq!(dc, format!("dcaccount:{https}"));
    let token = https.strip_prefix("https://chat.test/new?invite=").expect("link shape").to_string();
    assert!(token.len() >= 20 && token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
    let svg = std::fs::read_to_string(qr).expect("QR file written");
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "QR SVG");
    token
}

async fn post_new(relay: &Relay, query: &str) -> HttpResponse {
    let a = relay.addr(relay.ports.https);
    https_req(&a, "POST", &format!("/new{query}"), &a, &[], b"").await
}

async fn imap_login(relay: &Relay, user: &str, password: &str) -> String {
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    c.line().await.expect("greeting");
    last(&c.imap("l", &format!("LOGIN \"{user}\" \"{password}\"")).await).to_string()
}

/// Must show: invite create → use → exhaustion → refusal, and refusal without an invite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_create_use_exhaust_revoke() {
    let relay = Relay::start(INVITE);
    let qr = relay.dir.path().join("invite.svg");
    let qr_s = qr.to_string_lossy().into_owned();

    // Without an invite: no account by first login (IMAP NO, SMTP 535) and none by /new.
    let stranger = relay.new_address();
    assert_eq!(imap_login(&relay, &stranger, PASSWORD).await, "l NO [AUTHENTICATIONFAILED] Authentication failed.");
    let (_, r) = smtp_login(&relay, &stranger, PASSWORD).await;
    assert!(r.starts_with("535"), "{r}");
    let r = post_new(&relay, "").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["reason"], "registration on this relay needs an invite");
    let r = post_new(&relay, "?invite=NoSuchInviteToken12345").await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (403, Some("unknown invite")));
    let m = http_req(&relay.addr(relay.ports.metrics), "GET", "/metrics", "x").await.text();
    assert!(m.contains("chatrelay_registrations_refused_total{reason=\"invite\"} 2"), "first logins counted");

    let token = created(&relay.cli(&["invites", "create", "--uses", "2", "--expires", "7d", "--qr", &qr_s]), &qr);

    // GET (a browser, a link preview) never counts a use: it hands the invite to the app.
    let a = relay.addr(relay.ports.https);
    let r = https_req(&a, "GET", &format!("/new?invite={token}"), &a, &[], b"").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some(format!("dcaccount:https://chat.test/new?invite={token}").as_str()));

    // Two uses: each POST answers working credentials of an account that now exists.
    for _ in 0..2 {
        let r = post_new(&relay, &format!("?invite={token}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        let (email, pw) = (j["email"].as_str().expect("email"), j["password"].as_str().expect("password"));
        assert!(email.ends_with("@chat.test"));
        assert!(imap_login(&relay, email, pw).await.starts_with("l OK"), "first login with invited credentials");
        assert!(imap_login(&relay, email, "wrong-password-123").await.starts_with("l NO"), "password fixed");
    }
    let r = post_new(&relay, &format!("?invite={token}")).await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (403, Some("this invite has been used up")));

    let (code, list, _) = relay.cli(&["invites", "list"]);
    assert_eq!(code, 0);
    let row = list.lines().next().expect("one invite");
    assert!(row.starts_with("1\thint=") && row.contains("used=2/2") && row.ends_with("used-up"), "{row}");
    assert!(!list.contains(&token), "the token is not kept");

    // Revoke: the next use is refused; revoking twice is an error.
    let token2 = created(&relay.cli(&["invites", "create", "--qr", &qr_s]), &qr);
    let (code, out, err) = relay.cli(&["invites", "revoke", "2"]);
    assert_eq!(code, 0, "{out} {err}");
    let r = post_new(&relay, &format!("?invite={token2}")).await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (403, Some("this invite was revoked")));
    assert_eq!(relay.cli(&["invites", "revoke", "2"]).0, 1);

    // Expiry.
    let token3 = created(&relay.cli(&["invites", "create", "--expires", "1s", "--qr", &qr_s]), &qr);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = post_new(&relay, &format!("?invite={token3}")).await;
    assert_eq!((r.status, r.json()["reason"].as_str()), (403, Some("this invite has expired")));
    let (_, list, _) = relay.cli(&["invites", "list"]);
    assert!(list.lines().nth(1).is_some_and(|l| l.ends_with("revoked")), "{list}");
    assert!(list.lines().nth(2).is_some_and(|l| l.ends_with("expired")), "{list}");

    // Bad arguments are usage errors.
    assert_eq!(relay.cli(&["invites", "create", "--uses", "0"]).0, 2);
    assert_eq!(relay.cli(&["invites", "create", "--expires", "soon"]).0, 2);
    // A QR code that cannot be written makes no invite.
    assert_eq!(relay.cli(&["invites", "create", "--qr", "/nonexistent-dir/invite.svg"]).0, 1);
    assert_eq!(relay.cli(&["invites", "list"]).1.lines().count(), 3);

    // The index page says how to join.
    let r = https_req(&a, "GET", "/", &a, &[], b"").await;
    assert!(r.text().contains("Registration is by invitation"), "{}", r.text());
}

/// Uses are counted atomically: 12 concurrent redemptions of a 3-use invite make exactly 3
/// accounts and 9 refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_uses_are_atomic_at_the_edge() {
    let relay = Relay::start(INVITE);
    let qr = relay.dir.path().join("invite.svg");
    let token = created(&relay.cli(&["invites", "create", "--uses", "3", "--qr", &qr.to_string_lossy()]), &qr);
    let relay = std::sync::Arc::new(relay);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (relay, token) = (relay.clone(), token.clone());
        tasks.push(tokio::spawn(async move { post_new(&relay, &format!("?invite={token}")).await }));
    }
    let mut ok = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let r = t.await.expect("task");
        match r.status {
            200 => ok.push(r.json()["email"].as_str().expect("email").to_string()),
            403 => {
                assert_eq!(r.json()["reason"], "this invite has been used up");
                refused += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert_eq!((ok.len(), refused), (3, 9));
    let db = relay.db();
    assert_eq!(count(&db, "SELECT count(*) FROM accounts"), 3);
    assert_eq!(count(&db, "SELECT used FROM invites"), 3);
}
