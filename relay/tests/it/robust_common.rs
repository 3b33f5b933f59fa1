//! Issue 12 helpers shared by the `robust_*` files: raw sessions on each listener, row counts read
//! straight from the relay's SQLite file (read-only; WAL lets us read while it runs), process RSS.

#![allow(dead_code)]

use crate::harness::*;

/// Rows in `messages` and `queue` of the relay's database (0 when the file does not exist yet).
pub fn counts(relay: &Relay) -> (i64, i64) {
    let db = relay.data_dir().join("chatrelay.db");
    let Ok(c) = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return (0, 0);
    };
    let n = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).expect(sql);
    (n("SELECT COUNT(*) FROM messages"), n("SELECT COUNT(*) FROM queue"))
}

/// Port 25 after STARTTLS and a second EHLO.
pub async fn mx_tls(relay: &Relay) -> Lines {
    let mut c = Lines::plain(&relay.addr(relay.ports.smtp)).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO peer.example").await.starts_with("250"));
    assert_eq!(c.cmd("STARTTLS").await, "220 2.0.0 Ready to start TLS");
    let mut c = c.starttls().await;
    assert!(c.cmd("EHLO peer.example").await.starts_with("250"));
    c
}

/// A greeted plain connection (EHLO done) on `port`.
pub async fn plain_ehlo(relay: &Relay, port: u16) -> Lines {
    let mut c = Lines::plain(&relay.addr(port)).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.example").await.starts_with("250"));
    c
}

/// A greeted implicit-TLS connection (EHLO done) on 465.
pub async fn tls465(relay: &Relay) -> Lines {
    let mut c = Lines::tls(&relay.addr(relay.ports.submissions)).await;
    assert!(c.reply().await.starts_with("220 "));
    assert!(c.cmd("EHLO client.example").await.starts_with("250"));
    c
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The soft open-files limit of this process.
pub fn fd_limit() -> u64 {
    let s = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// An account on `relay` with `PASSWORD`, created through a real SMTP login; returns its address.
pub async fn account(relay: &Relay) -> String {
    let a = relay.new_address();
    create_account(relay, &a).await;
    a
}
