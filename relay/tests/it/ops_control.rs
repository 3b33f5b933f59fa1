//! OPS-15: the control socket. State-changing CLI subcommands go through a running `serve`;
//! without one they work on the database directly.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use crate::harness::*;

/// The relay's log without ANSI colour codes.
pub fn plain_log(relay: &Relay) -> String {
    let mut out = String::new();
    let log = relay.log();
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn control_requests(relay: &Relay, op: &str) -> usize {
    plain_log(relay).lines().filter(|l| l.contains("control request") && l.contains(&format!("op=\"{op}\""))).count()
}

/// One raw request line over the socket; returns the reply line.
fn raw(sock: &std::path::Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).expect("connect control socket");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
    s.write_all(line.as_bytes()).expect("write");
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).expect("read");
    serde_json::from_str(&reply).expect("reply is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_control_socket_delete_and_fallback() {
    let mut relay = Relay::start("");
    let sock = relay.data_dir().join("control.sock");
    assert!(wait_for_file(&sock, std::time::Duration::from_secs(10)), "control.sock exists while serving");
    let mode = std::fs::metadata(&sock).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");

    // The wire protocol: ping, the expire hook (retention, RET-15), garbage.
    assert_eq!(raw(&sock, "{\"op\":\"ping\"}\n")["ok"], true);
    let exp = raw(&sock, "{\"op\":\"expire\",\"dry_run\":true}\n");
    assert_eq!(exp["ok"], true, "{exp}");
    assert!(exp["message"].as_str().unwrap_or("").starts_with("dry run"), "{exp}");
    let bad = raw(&sock, "rm -rf /\n");
    assert_eq!(bad["ok"], false);
    assert!(bad["message"].as_str().unwrap_or("").starts_with("bad request"), "{bad}");

    // Through the running relay.
    let (store, accounts) = relay.accounts();
    let email = relay.new_address();
    accounts.login(&email, PASSWORD, "imap").await.expect("create");
    let (code, out, err) = relay.cli(&["accounts", "delete", &email]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("deleted {email}")), "{out}");
    assert_eq!(control_requests(&relay, "account_delete"), 1, "the relay handled it:\n{}", relay.log());
    assert!(store.account_by_address(&email).await.expect("read").is_none(), "account gone");
    assert!(plain_log(&relay).contains("account deleted reason=\"admin\""), "the live accounts layer deleted it");

    // Errors come back over the socket with exit 1 and a clear line.
    let (code, _, err) = relay.cli(&["accounts", "delete", &email]);
    assert_eq!(code, 1);
    assert!(err.contains("tombstone"), "{err}");
    assert_eq!(control_requests(&relay, "account_delete"), 2);

    // Cleartext and block also go through the socket.
    let other = relay.new_address();
    accounts.login(&other, PASSWORD, "imap").await.expect("create");
    assert_eq!(relay.cli(&["accounts", "allow-cleartext", &other]).0, 0);
    assert_eq!(control_requests(&relay, "account_allow_cleartext"), 1);
    assert_eq!(relay.cli(&["accounts", "block", &other]).0, 0);
    assert_eq!(control_requests(&relay, "account_block"), 1);
    let a = store.account_by_address(&other).await.expect("read").expect("still there");
    assert!(a.blocked && a.cleartext);

    // Stopped: the socket is removed and the CLI works on the database directly.
    assert_eq!(relay.stop(), Some(0));
    assert!(!sock.exists(), "control.sock removed on shutdown");
    let third = relay.new_address();
    accounts.login(&third, PASSWORD, "imap").await.expect("create");
    let (code, out, err) = relay.cli(&["accounts", "delete", &third]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted"));
    assert!(store.account_by_address(&third).await.expect("read").is_none());
    assert_eq!(control_requests(&relay, "account_delete"), 2, "no relay handled this one");

    // A stale socket file (relay killed) does not break the CLI either.
    relay.spawn();
    assert!(wait_for_file(&sock, std::time::Duration::from_secs(10)));
    relay.kill9();
    assert!(sock.exists(), "SIGKILL leaves the socket file behind");
    let fourth = relay.new_address();
    accounts.login(&fourth, PASSWORD, "imap").await.expect("create");
    assert_eq!(relay.cli(&["accounts", "delete", &fourth]).0, 0);
    assert!(store.account_by_address(&fourth).await.expect("read").is_none());
}

/// OPS-15 for `queue retry|drop`: through a running relay, whose scheduler wakes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_control_queue_retry_and_drop() {
    use relay::store::{Delivery, RemoteBatch};
    let relay = Relay::start("");
    let (store, _) = relay.accounts();
    let blob = store.put_blob(bytes::Bytes::from_static(b"From: <x@chat.test>\r\n\r\nx\r\n")).await.expect("blob");
    let r = store
        .deliver(Delivery {
            sender: "sender123@chat.test".into(),
            remote: vec![RemoteBatch { domain: "_far.test".into(), rcpts: vec!["a@_far.test".into()] }],
            remote_blob: Some(blob),
            ..Default::default()
        })
        .await
        .expect("enqueue");
    let id = r.queue_ids[0].clone();
    let (code, out, err) = relay.cli(&["queue", "retry", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("due now"), "{out}");
    assert_eq!(control_requests(&relay, "queue_retry"), 1, "{}", plain_log(&relay));
    let (code, _, err) = relay.cli(&["queue", "retry", "nosuchid"]);
    assert_eq!(code, 1);
    assert!(err.contains("no queue entry nosuchid"), "{err}");
    let (code, out, err) = relay.cli(&["queue", "drop", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dropped"), "{out}");
    assert_eq!(control_requests(&relay, "queue_drop"), 1);
    assert!(relay.cli(&["queue", "list"]).1.trim().is_empty(), "queue empty");
}
