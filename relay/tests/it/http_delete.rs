//! Issue 5: self-service deletion (HTTP-18, ACC-31..34) and the `accounts` CLI (OPS-18, OPS-19,
//! ACC-35, ACC-36).

use crate::harness::*;
use relay::accounts::AuthError;
use relay::store::Delivery;

/// Create an account through the relay's login path and store one message for it, large enough
/// to be a file (not a database row); returns the message file's path.
async fn account_with_message(relay: &Relay, email: &str) -> std::path::PathBuf {
    let (store, accounts) = relay.accounts();
    let acc = accounts.login(email, PASSWORD, "imap").await.expect("create on first login");
    let pad = "x".repeat(relay::store::INLINE_MAX);
    let body = bytes::Bytes::from(format!(
        "Subject: [...]\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n{pad}\r\n-----END PGP MESSAGE-----\r\n"
    ));
    let blob = store.put_blob(body).await.expect("blob");
    let path = store.blob_path(blob.id());
    store
        .deliver(Delivery {
            sender: "a@chat.test".into(),
            sender_account: None,
            local: vec![acc.id],
            local_blob: Some(blob),
            remote: Vec::new(),
            remote_blob: None,
            push: false,
        })
        .await
        .expect("deliver");
    assert!(path.exists());
    path
}

async fn delete_json(relay: &Relay, email: &str, password: &str) -> HttpResponse {
    let a = relay.addr(relay.ports.https);
    let body = serde_json::json!({"email": email, "password": password}).to_string();
    https_req(&a, "POST", "/account/delete", &a, &[("Content-Type", "application/json")], body.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_deletion() {
    let relay = Relay::start("");
    let email = relay.new_address();
    let file = account_with_message(&relay, &email).await;

    let wrong = delete_json(&relay, &email, "wrong-password-123").await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["reason"], "invalid address or password");
    let unknown = delete_json(&relay, &relay.new_address(), PASSWORD).await;
    assert_eq!((unknown.status, unknown.json()), (401, wrong.json()), "same reply for unknown address (ACC-33)");
    assert_eq!(relay.cli(&["accounts", "show", &relay.new_address()]).0, 1, "no account created by a failed deletion");

    let ok = delete_json(&relay, &email, PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json(), serde_json::json!({"deleted": true}));
    assert!(wait_for_file_gone(&file), "message file removed");

    let (code, _, err) = relay.cli(&["accounts", "show", &email]);
    assert_eq!(code, 1);
    assert!(err.contains("tombstone"), "{err}");
    let (_store, accounts) = relay.accounts();
    let again = accounts.login(&email, "any-other-password-1", "imap").await;
    assert!(matches!(again, Err(AuthError::Tombstoned)), "{again:?}");
    let again = accounts.login(&email, PASSWORD, "imap").await;
    assert!(matches!(again, Err(AuthError::Tombstoned)), "not re-created: {again:?}");
    assert_eq!(relay.cli(&["accounts", "show", &email]).0, 1);
    let deleted_again = delete_json(&relay, &email, PASSWORD).await;
    assert_eq!(deleted_again.status, 401, "tombstone gets the same 401");
    assert!(!relay.log().contains("127.0.0.1"), "no client IP in the log (HTTP-28)");
}

fn wait_for_file_gone(p: &std::path::Path) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if !p.exists() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// ACC-31: a form post gets an HTML page; ACC-34: the 6th attempt from one client is throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_post_and_throttling() {
    let relay = Relay::start("");
    let email = relay.new_address();
    account_with_message(&relay, &email).await;
    let a = relay.addr(relay.ports.https);
    let form = |pw: &str| format!("email={}&password={pw}", email.replace('@', "%40"));
    let ctype = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = https_req(&a, "POST", "/account/delete", &a, &ctype, form("nope-nope-nope").as_bytes()).await;
    assert_eq!(r.status, 401);
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/html"));
    assert!(r.text().contains("Invalid address or password"));
    let ok = https_req(&a, "POST", "/account/delete", &a, &ctype, form(PASSWORD).as_bytes()).await;
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("Account deleted"));
    let mut last = None;
    for _ in 0..4 {
        last = Some(delete_json(&relay, &email, PASSWORD).await);
    }
    let t = last.expect("responses");
    assert_eq!(t.status, 429, "6th attempt within 15 minutes: {}", t.text());
    assert_eq!(t.json()["reason"], "too many attempts");
    let retry: u64 = t.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!(retry > 0 && retry <= 900, "{retry}");
}

/// OPS-18, OPS-19, ACC-35, ACC-36 through the CLI, next to a running relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_cli() {
    let relay = Relay::start("");
    let email = relay.new_address();
    let file = account_with_message(&relay, &email).await;
    let (code, out, _) = relay.cli(&["accounts", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains(&email) && out.contains("messages=1") && out.contains("flags=-"), "{out}");
    assert_eq!(relay.cli(&["accounts", "allow-cleartext", &email]).0, 0);
    assert!(relay.cli(&["accounts", "show", &email]).1.contains("flags=cleartext"));
    assert_eq!(relay.cli(&["accounts", "deny-cleartext", &email]).0, 0);
    assert_eq!(relay.cli(&["accounts", "block", &email]).0, 0);
    assert!(relay.cli(&["accounts", "show", &email]).1.contains("blocked"));
    let (_s, accounts) = relay.accounts();
    assert!(matches!(accounts.login(&email, PASSWORD, "imap").await, Err(AuthError::Blocked)));
    assert!(file.exists(), "blocking keeps the data");

    let (code, _, err) = relay.cli(&["accounts", "show", "nobody@chat.test"]);
    assert_eq!(code, 1);
    assert!(err.contains("no account nobody@chat.test"), "{err}");
    assert_eq!(relay.cli(&["accounts", "delete", "nobody@chat.test"]).0, 1);
    assert_eq!(relay.cli(&["accounts", "frobnicate"]).0, 2, "usage error");

    let fresh = relay.new_address();
    assert_eq!(relay.cli(&["accounts", "block", &fresh]).0, 0);
    assert!(
        matches!(accounts.login(&fresh, PASSWORD, "imap").await, Err(AuthError::Tombstoned)),
        "blocked address cannot be created"
    );

    let (code, out, err) = relay.cli(&["accounts", "delete", &email]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted"));
    assert!(wait_for_file_gone(&file));
    assert!(relay.cli(&["accounts", "show", &email]).2.contains("tombstone"));
    let m = http_req(&relay.addr(relay.ports.metrics), "GET", "/metrics", "x").await.text();
    assert!(m.contains("chatrelay_accounts 0"), "gauge follows the store: {m}");
}

/// Must-show over the wire: an account made by IMAP LOGIN, deleted over HTTPS, can no longer log
/// in, with its password or any other, and is not re-created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_account_cannot_log_in_over_imap() {
    let relay = Relay::start("");
    let email = relay.new_address();
    let login = |pw: &'static str| {
        let (a, e) = (relay.addr(relay.ports.imaps), email.clone());
        async move {
            let mut c = Lines::tls(&a).await;
            let _greeting = c.line().await;
            c.imap("a", &format!("LOGIN {e} {pw}")).await.last().cloned().unwrap_or_default()
        }
    };
    assert!(login(PASSWORD).await.starts_with("a OK"), "first login creates the account");
    let ok = delete_json(&relay, &email, PASSWORD).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(login(PASSWORD).await.starts_with("a NO"), "deleted account cannot log in");
    assert!(login("another-password-42").await.starts_with("a NO"), "nor be re-created");
    assert_eq!(relay.cli(&["accounts", "show", &email]).0, 1);
}
