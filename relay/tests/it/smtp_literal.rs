//! Address-literal senders (`user@[127.0.0.1]`) read alike on port 25 and `/mxdeliv` (issue 31,
//! item 8): both accept the path, and both skip DKIM only when the peer is that address (SMTP-44).

#![allow(clippy::unwrap_used)]

use crate::delivery_relay::post_mxdeliv;
use crate::harness::{Relay, create_account, encrypted_eml, inbox_messages, mx_send, with_open_gates};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literal_senders_alike_on_port25_and_mxdeliv() {
    let relay = Relay::start(&with_open_gates(""));
    let bob = relay.new_address();
    create_account(&relay, &bob).await;

    // The peer (127.0.0.1) is the literal: no DNS to verify, DKIM skipped, delivered.
    let own = "alice@[127.0.0.1]";
    let eml = encrypted_eml(own, &bob);
    assert!(mx_send(&relay, own, &bob, eml.as_bytes()).await.starts_with("250"), "port 25, own literal");
    let (status, body) = post_mxdeliv(&relay, own, &bob, &crlf(&encrypted_eml(own, &bob))).await;
    assert_eq!(status, 200, "mxdeliv, own literal: {body}");
    assert!(body.starts_with("250"), "{body}");
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 2, "both stored");

    // Another literal than the peer: DKIM applies, and there is no signature, on both paths.
    let other = "alice@[127.0.0.9]";
    let eml = encrypted_eml(other, &bob);
    assert_eq!(mx_send(&relay, other, &bob, eml.as_bytes()).await, "554 5.7.1 No DKIM signature found");
    let (status, body) = post_mxdeliv(&relay, other, &bob, &crlf(&eml)).await;
    assert_ne!(status, 200, "{body}");
    assert!(body.starts_with("554"), "mxdeliv, other literal: {body}");
    assert_eq!(inbox_messages(&relay, &bob).await.len(), 2, "nothing more stored");
}

fn crlf(eml: &str) -> Vec<u8> {
    eml.replace("\r\n", "\n").replace('\n', "\r\n").into_bytes()
}
