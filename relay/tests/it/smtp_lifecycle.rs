//! Issue 3: how SMTP sessions end: account deletion (ACC-28, in-process server so the store event
//! reaches the session), shutdown during DATA (OPS-16), and recipient state on ingress.

use std::time::Duration;

use base64::Engine as _;

use crate::harness::*;

/// ACC-28: an authenticated session is closed with `421 4.7.0 Account deleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_account_closes_its_session() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let toml = format!(
        "mail_domain = \"chat.test\"\ndata_dir = \"{}\"\n{}[listen]\nsmtp = []\nsubmission = []\nsubmissions = \"127.0.0.1:{port}\"\nimap = []\nimaps = []\nhttp = []\nhttps = []\n[tls]\nmode = \"self-signed\"\n",
        tmp.path().join("data").display(),
        with_open_gates("")
    );
    let cfg = relay::config::load_str(&toml, "test").expect("config");
    let (ctx, _lock) = relay::server::build_context(cfg).expect("context");
    let server = tokio::spawn(relay::server::run(ctx.clone()));
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let user = format!("{}@chat.test", random_local());
    let mut c = Lines::tls(&addr).await;
    assert_eq!(c.reply().await, "220 chat.test ESMTP");
    assert!(c.cmd("EHLO x").await.starts_with("250"));
    let token = base64::prelude::BASE64_STANDARD.encode(format!("\0{user}\0{PASSWORD}"));
    assert_eq!(c.cmd(&format!("AUTH PLAIN {token}")).await, "235 2.7.0 Authentication successful");
    let acc = ctx.store.account_by_address(&user).await.expect("read").expect("created");
    ctx.accounts.delete(&acc, relay::store::DeleteReason::Admin).await.expect("delete");
    assert_eq!(c.reply().await, "421 4.7.0 Account deleted");
    assert_eq!(c.line().await, None);
    ctx.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), server).await;
}

/// OPS-16: a transaction in DATA finishes during shutdown; then the session hears 421.
#[tokio::test]
async fn shutdown_lets_data_finish() {
    let mut relay = Relay::start("");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;
    let (mut c, a) = smtp_login(&relay, &alice, PASSWORD).await;
    assert!(a.starts_with("235 "), "{a}");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{alice}>")).await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, "250 2.1.5 Ok");
    assert!(c.cmd("DATA").await.starts_with("354 "));
    let data = smtp_data(&encrypted_eml(&alice, &bob));
    let (head, tail) = data.split_at(data.len() / 2);
    c.send_raw(head.as_bytes()).await;
    let data_dir = relay.data_dir();
    let stopper = std::thread::spawn(move || {
        let code = relay.stop();
        (relay, code)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.send_raw(tail.as_bytes()).await;
    assert!(c.reply().await.starts_with("250 2.0.0 OK: queued as "));
    assert_eq!(c.reply().await, "421 4.3.2 Service shutting down");
    let (_relay, code) = stopper.join().expect("stop");
    assert_eq!(code, Some(0));
    let store = relay::store::Store::open(&data_dir).expect("store");
    let acc = store.account_by_address(&bob).await.expect("read").expect("bob");
    let inbox = store.mailbox(acc.id, "INBOX").await.expect("read").expect("inbox");
    assert_eq!(store.messages(inbox.id).await.expect("messages").len(), 1, "the 250'd message is stored");
}

/// SMTP-38, SMTP-39: blocked recipients are unknown; a full mailbox gets 452 4.2.2.
#[tokio::test]
async fn blocked_and_full_recipients() {
    let relay = Relay::start("max_mailbox_size = \"1K\"\n");
    let (bob, carol) = (relay.new_address(), relay.new_address());
    create_account(&relay, &bob).await;
    create_account(&relay, &carol).await;
    let (mut c, a) = smtp_login(&relay, &carol, PASSWORD).await;
    assert!(a.starts_with("235 "), "{a}");
    let r = send_mail(&mut c, &carol, &[&bob], &encrypted_eml(&carol, &bob)).await;
    assert!(r.starts_with("250 2.0.0 OK: queued as "), "first message fits: {r}");
    assert_eq!(c.cmd(&format!("MAIL FROM:<{carol}>")).await, "250 2.1.0 Ok");
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).await, format!("452 4.2.2 <{bob}>: Mailbox full"));
    {
        let store = relay::store::Store::open(&relay.data_dir()).expect("store");
        let acc = store.account_by_address(&bob).await.expect("read").expect("bob");
        store.set_blocked(acc.id, true).await.expect("block");
    }
    assert_eq!(
        c.cmd(&format!("RCPT TO:<{bob}>")).await,
        format!("550 5.1.1 <{bob}>: Recipient address rejected: User unknown")
    );
}
