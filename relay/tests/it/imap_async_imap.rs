//! The Delta Chat client library (async-imap 0.12) against chatrelay over real TLS: the calls
//! Delta Chat core makes, in its order (login, capabilities, COMPRESS, GETMETADATA, SELECT,
//! IDLE, UID FETCH, UID STORE + CLOSE, GETQUOTAROOT).

use std::time::Instant;

use async_imap::extensions::idle::IdleResponse;
use futures::TryStreamExt;
use tokio::net::TcpStream;

use crate::harness::{PASSWORD, Relay, tls_wrap};
use crate::imap_helpers::*;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn session(relay: &crate::harness::Relay, addr: &str) -> async_imap::Session<Tls> {
    let tcp = TcpStream::connect(relay.addr(relay.ports.imaps)).await.expect("io");
    let mut client = async_imap::Client::new(tls_wrap(tcp, &[b"imap"]).await);
    let greeting = client.read_response().await.expect("io").expect("greeting");
    assert!(format!("{:?}", greeting.parsed()).contains("XCHATMAIL"));
    client.login(addr, PASSWORD).await.map_err(|(e, _)| e).expect("login")
}

#[tokio::test]
async fn imap_async_imap_delta_chat_flow() {
    let relay = Relay::start("");
    let addr = relay.new_address();
    let mut s = session(&relay, &addr).await;
    let caps = s.capabilities().await.expect("io");
    assert!(caps.has_str("XCHATMAIL") && caps.has_str("IDLE") && caps.has_str("COMPRESS=DEFLATE"));
    let mut s = s.compress(|z| z).await.expect("COMPRESS DEFLATE");
    let md = s
        .get_metadata(
            "",
            "",
            "(/shared/comment /shared/admin /shared/vendor/deltachat/irohrelay /shared/vendor/deltachat/turn)",
        )
        .await
        .expect("GETMETADATA never fails");
    assert!(md.is_empty(), "{md:?}");
    s.run_command_and_check_ok("SETMETADATA \"INBOX\" (/private/devicetoken \"openpgp:abc\")").await.expect("io");
    // (imap-proto only parses /private/vendor/... and /private/comment names, so the token is
    // read back in the raw-line tests; Delta Chat itself only sets it.)
    let md = s.get_metadata("", "", "/shared/vendor/deltachat/maxsmtprecipients").await.expect("io");
    assert_eq!(md.len(), 1);
    assert_eq!(md[0].value.as_deref(), Some("1000"));
    let mbox = s.select("INBOX").await.expect("io");
    assert_eq!(mbox.exists, 0);

    // The second session logs in first so the timing covers only APPEND → commit → EXISTS.
    let mut b = session(&relay, &addr).await;
    let mut idle = s.idle();
    idle.init().await.expect("io");
    let (wait, _stop) = idle.wait();
    let msg = sample_message(&addr, &addr, "delivered while idling");
    let t = Instant::now();
    let writer = tokio::spawn({
        let msg = msg.clone();
        async move {
            b.append("INBOX", None, None, &msg).await.expect("io");
            t.elapsed()
        }
    });
    let resp =
        tokio::time::timeout(std::time::Duration::from_secs(10), wait).await.expect("IDLE woke").expect("test step");
    let woke = t.elapsed();
    assert!(matches!(resp, IdleResponse::NewData(_)), "{resp:?}");
    let appended = writer.await.expect("io");
    println!("async-imap IDLE woke {woke:?} after APPEND started (APPEND OK after {appended:?})");
    let mut s = idle.done().await.expect("io");

    let fetched: Vec<_> =
        s.uid_fetch("1:*", "(UID RFC822.SIZE BODY.PEEK[])").await.expect("io").try_collect().await.expect("io");
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].body(), Some(msg.as_slice()));
    assert_eq!(fetched[0].size, Some(msg.len() as u32));
    // Delta Chat's prefetch of new messages.
    let pre: Vec<_> = s
        .uid_fetch(
            "1:*",
            "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE X-MICROSOFT-ORIGINAL-MESSAGE-ID FROM IN-REPLY-TO REFERENCES CHAT-VERSION AUTO-SUBMITTED AUTOCRYPT-SETUP-MESSAGE)])",
        )
        .await
        .expect("prefetch")
        .try_collect()
        .await
        .expect("prefetch");
    assert_eq!(pre.len(), 1);
    let hdr = String::from_utf8_lossy(pre[0].header().expect("header fields")).into_owned();
    assert!(hdr.contains("Message-ID: <") && hdr.contains("From: <") && !hdr.contains("Subject:"), "{hdr}");
    assert_eq!(pre[0].uid, Some(1));
    let _: Vec<_> = s.uid_store("1", "+FLAGS (\\Deleted)").await.expect("io").try_collect().await.expect("io");
    s.close().await.expect("io");
    let mbox = s.select("INBOX").await.expect("io");
    assert_eq!(mbox.exists, 0, "CLOSE expunged the \\Deleted message");
    let (roots, quotas) = s.get_quota_root("INBOX").await.expect("io");
    assert_eq!(roots.len(), 1);
    assert_eq!(quotas.len(), 1);
    s.logout().await.expect("io");
}
