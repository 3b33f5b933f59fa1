//! Issue 30, ACC-19/19a/20: relay-issued credentials (from `/new` and the QR page) are stored in
//! the fast token form; user-chosen and forged "tokens" get argon2id; old accounts (argon2id,
//! imported SHA512-CRYPT) keep logging in and upgrade when their password proves relay-issued.
//! Real IMAP and SMTP logins against a real relay; the stored form is read from its database.

use crate::harness::*;

const TOKEN_FORM: &str = "$chatrelay-t1$";
const ARGON2_FORM: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

/// The stored password hash of `addr`, read from the relay's database.
fn stored_hash(relay: &Relay, addr: &str) -> Option<String> {
    relay.db().query_row("SELECT password_hash FROM accounts WHERE address = ?1", [addr], |r| r.get(0)).ok()
}

/// IMAP LOGIN over TLS (993); the tagged reply.
async fn imap_login(relay: &Relay, user: &str, password: &str) -> String {
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    let greeting = c.line().await.unwrap_or_default();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let lines = c.imap("a", &format!("LOGIN \"{user}\" \"{password}\"")).await;
    let _ = c.imap("z", "LOGOUT").await;
    lines.last().cloned().unwrap_or_default()
}

async fn smtp_auth(relay: &Relay, user: &str, password: &str) -> String {
    let (mut c, r) = smtp_login(relay, user, password).await;
    let _ = c.cmd("QUIT").await;
    r
}

async fn new_credentials(relay: &Relay) -> (String, String) {
    let j = relay.https("POST", "/new").await.json();
    (j["email"].as_str().expect("email").to_string(), j["password"].as_str().expect("password").to_string())
}

/// Replace the last character of a token's tag: same shape, wrong MAC.
fn forge(token: &str) -> String {
    let (head, last) = token.split_at(token.len() - 1);
    format!("{head}{}", if last == "A" { "B" } else { "A" })
}

/// Must show: a relay-issued password (from `/new` and from the QR page) logs in over IMAP and
/// SMTP and is stored in the fast form; after a restart (empty login cache) it still logs in
/// through that form and a wrong password is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_issued_password_is_stored_in_the_fast_form() {
    let mut relay = Relay::start("");
    let (email, token) = new_credentials(&relay).await;
    assert!(token.len() >= 29 && token.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
    let r = imap_login(&relay, &email, &token).await;
    assert!(r.starts_with("a OK"), "{r}");
    let h = stored_hash(&relay, &email).expect("account created");
    assert!(h.starts_with(TOKEN_FORM), "relay-issued token stored in the fast form: {h}");
    assert!(!h.contains(&token), "only a hash is stored");

    // The QR page's dclogin: link carries a token too.
    let html = relay.https("GET", "/").await.text();
    let start = html.find("<code class=\"link\">").expect("link text") + "<code class=\"link\">".len();
    let url = html[start..].split('<').next().expect("link").replace("&amp;", "&");
    let (qr_email, q) = crate::http_pages::parse_dclogin(&url);
    let qr_token = q.iter().find(|(k, _)| k == "p").map(|(_, v)| v.clone()).expect("p=");
    let r = smtp_auth(&relay, &qr_email, &qr_token).await;
    assert!(r.starts_with("235"), "{r}");
    let h = stored_hash(&relay, &qr_email).expect("account created");
    assert!(h.starts_with(TOKEN_FORM), "{h}");

    relay.stop();
    relay.spawn();
    let t0 = std::time::Instant::now();
    let r = smtp_auth(&relay, &email, &token).await;
    assert!(r.starts_with("235"), "{r}");
    let r = imap_login(&relay, &qr_email, &qr_token).await;
    assert!(r.starts_with("a OK"), "{r}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(stored_hash(&relay, &email).as_deref().map(|h| h.starts_with(TOKEN_FORM)), Some(true));
    let r = imap_login(&relay, &email, &forge(&token)).await;
    assert!(r.starts_with("a NO"), "wrong password refused: {r}");
    let r = smtp_auth(&relay, &email, &token[..token.len() - 1]).await;
    assert!(r.starts_with("535"), "wrong password refused: {r}");
}

/// Must show: a user-chosen password is stored with argon2id at the ACC-19 cost and keeps
/// logging in after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_chosen_password_is_stored_with_argon2id() {
    let mut relay = Relay::start("");
    let addr = relay.new_address();
    // Alphanumeric and as long as a token, but without a valid tag.
    let chosen = "MyOwnPasswordIsLongEnough2026xyz";
    let r = imap_login(&relay, &addr, chosen).await;
    assert!(r.starts_with("a OK"), "{r}");
    let h = stored_hash(&relay, &addr).expect("account created");
    assert!(h.starts_with(ARGON2_FORM), "user-chosen password stored with argon2id: {h}");
    relay.stop();
    relay.spawn();
    let r = smtp_auth(&relay, &addr, chosen).await;
    assert!(r.starts_with("235"), "{r}");
    assert_eq!(stored_hash(&relay, &addr), Some(h), "no change of the stored form");
}

/// Must show: a forged "relay-issued" password (bad MAC, or a real token used for another
/// address) is treated as user-chosen: argon2id, over both IMAP and SMTP first logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_token_is_treated_as_user_chosen() {
    let relay = Relay::start("");
    let (email, token) = new_credentials(&relay).await;
    let forged = forge(&token);
    let r = imap_login(&relay, &email, &forged).await;
    assert!(r.starts_with("a OK"), "a forged token is still a valid (user-chosen) password: {r}");
    let h = stored_hash(&relay, &email).expect("account created");
    assert!(h.starts_with(ARGON2_FORM), "bad MAC → argon2id: {h}");
    // The real token is now a wrong password for that account.
    let r = imap_login(&relay, &email, &token).await;
    assert!(r.starts_with("a NO"), "{r}");

    // A genuine token for one address, used as the password of another: not proven there.
    let (_, token2) = new_credentials(&relay).await;
    let other = relay.new_address();
    let r = smtp_auth(&relay, &other, &token2).await;
    assert!(r.starts_with("235"), "{r}");
    let h = stored_hash(&relay, &other).expect("account created");
    assert!(h.starts_with(ARGON2_FORM), "token of another address → argon2id: {h}");
}

/// Must show: old accounts keep logging in: argon2id of a user-chosen (or old generated)
/// password stays argon2id; argon2id of a password that proves relay-issued is upgraded to the
/// token form; an imported `{SHA512-CRYPT}` hash becomes argon2id (ACC-20), or the token form
/// when its password proves relay-issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_accounts_log_in_and_upgrade() {
    let relay = Relay::start("");
    let (issued_addr, issued_pw) = new_credentials(&relay).await;
    let (crypt_issued_addr, crypt_issued_pw) = new_credentials(&relay).await;
    let old_addr = relay.new_address();
    let crypt_addr = relay.new_address();
    let old_pw = "Old20CharGenerated1x"; // what /new handed out before tokens: no tag
    // `openssl passwd -6 -salt saltsalt hunter2hunter2`
    let crypt = "{SHA512-CRYPT}$6$saltsalt$yj/VLDgMjQCnRrAPBPKh5HRcgRfPSij0FYWRBJPofYcgCjjgCNa3CNbnWjuOFhRBFREybzjwmhkhe33hM4L6b1";
    let crypt_of_issued = {
        let out = std::process::Command::new("openssl")
            .args(["passwd", "-6", "-salt", "pepperpe", &crypt_issued_pw])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        out.map(|c| format!("{{SHA512-CRYPT}}{c}"))
    };
    let old_hash = relay::accounts::password::hash(old_pw).expect("hash");
    let issued_argon = relay::accounts::password::hash(&issued_pw).expect("hash");
    let mut seeded = vec![
        (old_addr.clone(), old_hash.clone()),
        (issued_addr.clone(), issued_argon.clone()),
        (crypt_addr.clone(), crypt.to_string()),
    ];
    if let Some(c) = &crypt_of_issued {
        seeded.push((crypt_issued_addr.clone(), c.clone()));
    }
    // Written next to the running relay (SQLite WAL), as an import or an older version would have.
    let store = relay::store::Store::open(&relay.data_dir()).expect("open store");
    for (addr, hash) in seeded {
        let out = store.create_account(&addr, hash, addr.as_bytes().to_vec()).await.expect("create");
        assert!(matches!(out, relay::store::CreateOutcome::Created(_)), "{out:?}");
    }
    drop(store);

    let r = imap_login(&relay, &old_addr, old_pw).await;
    assert!(r.starts_with("a OK"), "{r}");
    assert_eq!(stored_hash(&relay, &old_addr).as_deref(), Some(old_hash.as_str()), "stays argon2id");

    let r = smtp_auth(&relay, &issued_addr, &issued_pw).await;
    assert!(r.starts_with("235"), "{r}");
    let h = stored_hash(&relay, &issued_addr).expect("account");
    assert!(h.starts_with(TOKEN_FORM), "argon2id of a proven token upgraded: {h}");
    let r = imap_login(&relay, &issued_addr, &issued_pw).await;
    assert!(r.starts_with("a OK"), "{r}");

    let r = imap_login(&relay, &crypt_addr, "hunter2hunter2").await;
    assert!(r.starts_with("a OK"), "{r}");
    let h = stored_hash(&relay, &crypt_addr).expect("account");
    assert!(h.starts_with(ARGON2_FORM), "imported crypt → argon2id: {h}");
    let r = smtp_auth(&relay, &crypt_addr, "hunter2hunter2").await;
    assert!(r.starts_with("235"), "{r}");

    match crypt_of_issued {
        Some(_) => {
            let r = imap_login(&relay, &crypt_issued_addr, &crypt_issued_pw).await;
            assert!(r.starts_with("a OK"), "{r}");
            let h = stored_hash(&relay, &crypt_issued_addr).expect("account");
            assert!(h.starts_with(TOKEN_FORM), "imported crypt of a proven token → token form: {h}");
        }
        None => eprintln!("SKIP crypt-of-token case: `openssl passwd -6` not available"),
    }
}
