//! Issue 6: retention (retention.md) on a real relay process and its real SQLite file.
//! Messages are seeded through `relay::store::Store` while the relay is stopped; ages are set by
//! editing `internal_date` in the database.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::harness::*;
use crate::seeding::{DAY, account_state, seed_aged};

/// Message blobs: files in the blob dir plus small bodies kept in the database.
fn blob_files(relay: &Relay) -> usize {
    let files = std::fs::read_dir(relay.data_dir().join("blobs")).map(|d| d.count()).unwrap_or(0);
    files + count(&relay.db(), "SELECT count(*) FROM blob_data") as usize
}

fn summary_value(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("summary has no {key:?}:\n{out}"))
}

fn write_orphan(dir: &Path, name: &str, age: Duration) {
    let p = dir.join(name);
    std::fs::write(&p, b"left by a crash").expect("orphan");
    let f = std::fs::File::options().write(true).open(&p).expect("open orphan");
    f.set_modified(SystemTime::now() - age).expect("mtime");
}

/// RET-1, RET-2 step 2, RET-4: with delete_mails_after = 3s and expire_interval = 1s a delivered
/// message is removed by the pass inside `serve`, with its file, usage and an expunge record.
#[test]
fn serve_pass_removes_old_mail() {
    let mut relay = Relay::stopped("delete_mails_after = \"3s\"\nexpire_interval = \"1s\"\n");
    let addr = relay.new_address();
    let (acc, uid) = relay.with_store(async |s| {
        let a = seed_account(s, &addr).await;
        let uid = seed_message(s, a.id, None, 5000).await;
        (a, uid)
    });
    assert_eq!(blob_files(&relay), 1);
    let started = std::time::Instant::now();
    relay.spawn();
    let db = relay.db();
    assert!(
        wait_until(Duration::from_secs(20), || count(&db, "SELECT count(*) FROM messages") == 0),
        "message still there:\n{}",
        relay.log()
    );
    println!("old message removed {:?} after start", started.elapsed());
    let usage: i64 =
        db.query_row("SELECT usage_bytes FROM accounts WHERE id = ?1", [acc.id], |r| r.get(0)).expect("usage");
    assert_eq!(usage, 0, "usage counter follows the deletion (RET-7)");
    let expunged: i64 =
        db.query_row("SELECT count(*) FROM expunged WHERE uid = ?1", [uid], |r| r.get(0)).expect("expunged");
    assert_eq!(expunged, 1, "an expunge record lets sessions catch up (RET-11)");
    assert!(wait_until(Duration::from_secs(5), || blob_files(&relay) == 0), "the message file is removed");
    assert!(relay.log().contains("expiry pass done"));
    // RET-16.
    assert_eq!(relay.metric("chatrelay_expiry_removed_total{reason=\"age\"}"), Some(1.0));
    assert!(relay.metric("chatrelay_expiry_duration_seconds_count").is_some_and(|n| n >= 1.0));
    assert_eq!(relay.stop(), Some(0));
}

/// RET-2 step 3: only messages that are seen AND larger than large_message_size AND older than
/// delete_large_after go.
#[test]
fn serve_pass_removes_only_seen_large_mail() {
    let mut relay =
        Relay::stopped("delete_large_after = \"2s\"\nlarge_message_size = \"1K\"\nexpire_interval = \"1s\"\n");
    let addr = relay.new_address();
    let (large_seen, large_unseen, small_seen) = relay.with_store(async |s| {
        let a = seed_account(s, &addr).await;
        (
            seed_message(s, a.id, None, 4000).await,
            seed_message(s, a.id, None, 4000).await,
            seed_message(s, a.id, None, 500).await,
        )
    });
    let db = relay.db();
    db.execute("UPDATE messages SET flags = 1 WHERE uid IN (?1, ?2)", [large_seen, small_seen]).expect("mark seen");
    relay.spawn();
    let uids = |db: &rusqlite::Connection| -> Vec<u32> {
        let mut st = db.prepare("SELECT uid FROM messages ORDER BY uid").expect("prepare");
        st.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || !uids(&db).contains(&large_seen)),
        "seen large message still there:\n{}",
        relay.log()
    );
    // Let a few more passes run: the other two must survive them.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(uids(&db), vec![large_unseen, small_seen], "unseen large and seen small messages stay");
    assert_eq!(relay.stop(), Some(0));
}

/// RET-2 step 1, ACC-37/38, RET-3, RET-13: `chatrelay expire` deletes an inactive account with all
/// it owns and tombstones it; expired tokens and old orphan files go; active data stays.
#[test]
fn expire_cli_deletes_inactive_account_and_cleans_up() {
    let relay = Relay::stopped("");
    let (old_addr, new_addr) = (relay.new_address(), relay.new_address());
    let (old, new) = relay.with_store(async |s| {
        let old = seed_account(s, &old_addr).await;
        let new = seed_account(s, &new_addr).await;
        seed_message(s, old.id, None, 3000).await;
        seed_message(s, old.id, None, 3000).await;
        seed_message(s, new.id, None, 1000).await;
        s.add_push_token(old.id, "openpgp:old-device".into()).await.expect("token");
        s.add_push_token(new.id, "openpgp:stale-device".into()).await.expect("token");
        s.add_push_token(new.id, "openpgp:fresh-device".into()).await.expect("token");
        (old, new)
    });
    let db = relay.db();
    db.execute("UPDATE accounts SET last_login_day = last_login_day - 100 WHERE id = ?1", [old.id]).expect("age login");
    db.execute("UPDATE push_tokens SET set_at = set_at - 91 * 86400 WHERE token = 'openpgp:stale-device'", [])
        .expect("age token");
    let blobs = relay.data_dir().join("blobs");
    write_orphan(&blobs, "0123456789abcdef0123456789abcdef", Duration::from_secs(2 * 3600));
    write_orphan(&blobs, "fedcba9876543210fedcba9876543210", Duration::from_secs(60));
    assert_eq!(blob_files(&relay), 5);

    let (code, out, err) = relay.cli(&["expire"]);
    assert_eq!(code, 0, "expire failed: {err}");
    println!("{out}");
    assert_eq!(summary_value(&out, "accounts deleted"), 1);
    assert_eq!(summary_value(&out, "bytes freed"), 6000);
    assert_eq!(summary_value(&out, "push tokens expired"), 1);
    assert_eq!(summary_value(&out, "orphan files removed"), 1);

    let n = |sql: &str, id: i64| -> i64 { db.query_row(sql, [id], |r| r.get(0)).expect(sql) };
    assert_eq!(n("SELECT count(*) FROM accounts WHERE id = ?1", old.id), 0, "inactive account row gone");
    assert_eq!(n("SELECT count(*) FROM mailboxes WHERE account_id = ?1", old.id), 0);
    assert_eq!(n("SELECT count(*) FROM push_tokens WHERE account_id = ?1", old.id), 0);
    assert_eq!(n("SELECT count(*) FROM accounts WHERE id = ?1", new.id), 1, "active account stays");
    assert_eq!(count(&db, "SELECT count(*) FROM messages"), 1, "only the active account's message is left");
    let tokens: Vec<String> = {
        let mut st = db.prepare("SELECT token FROM push_tokens").expect("prepare");
        st.query_map([], |r| r.get(0)).expect("q").map(|r| r.expect("row")).collect()
    };
    assert_eq!(tokens, vec!["openpgp:fresh-device".to_string()], "expired token removed, valid one kept");
    let secret = relay::accounts::Secret::load_or_create(&relay.data_dir()).expect("secret");
    let tomb: i64 = db
        .query_row("SELECT count(*) FROM tombstones WHERE hash = ?1", [secret.tombstone(&old_addr)], |r| r.get(0))
        .expect("tombstone");
    assert_eq!(tomb, 1, "inactive deletion writes a tombstone (ACC-38)");
    // 2 message files of the old account and the old orphan gone; the active message and the
    // young orphan (maybe a delivery in progress) stay.
    assert_eq!(blob_files(&relay), 2);
    assert!(blobs.join("fedcba9876543210fedcba9876543210").exists());
}

/// Seed the quota scenario: `max_mailbox_size = 100K`, nine 10 000-byte messages per account.
/// Account A has 5 old messages (so the trim can reach 70 %), account B only one.
fn seed_quota(relay: &Relay) -> (i64, Vec<u32>, i64, Vec<u32>) {
    let (a_addr, b_addr) = (relay.new_address(), relay.new_address());
    let (a, b) = relay.with_store(async |s| (seed_account(s, &a_addr).await.id, seed_account(s, &b_addr).await.id));
    // Three days old, one minute apart (oldest first), then young ones.
    let ages = |old: i64| -> Vec<(usize, i64)> {
        (0..9).map(|i| (10_000, if i < old { 3 * DAY - i * 60 } else { 0 })).collect()
    };
    (a, seed_aged(relay, a, &ages(5)), b, seed_aged(relay, b, &ages(1)))
}

/// RET-5: a mailbox over 75 % is trimmed oldest first to at most 70 %; messages younger than 24 h
/// are never touched and the trim stops at the first of them.
#[test]
fn quota_trim_down_to_70_percent_keeps_young_messages() {
    let relay = Relay::stopped("max_mailbox_size = \"100K\"\n");
    let (a, a_uids, b, b_uids) = seed_quota(&relay);
    let (code, out, err) = relay.cli(&["expire"]);
    assert_eq!(code, 0, "{err}");
    println!("{out}");
    let db = relay.db();
    let (left_a, usage_a) = account_state(&db, a);
    assert_eq!(left_a, a_uids[2..].to_vec(), "the two oldest messages of A are trimmed");
    assert!(usage_a <= 100 * 1024 * 70 / 100, "A is at most 70 % full: {usage_a}");
    let (left_b, usage_b) = account_state(&db, b);
    assert_eq!(left_b, b_uids[1..].to_vec(), "B loses only its one old message; the young ones stay");
    assert_eq!(usage_b, 80_000, "B stays above 70 % because the rest is younger than 24 h");
    assert_eq!(summary_value(&out, "messages deleted (quota)"), 3);
    assert_eq!(summary_value(&out, "bytes freed"), 30_000);
}

/// RET-14: `--dry-run` prints the numbers a pass would produce and changes nothing; the real pass
/// afterwards produces exactly those numbers.
#[test]
fn dry_run_reports_and_changes_nothing() {
    let relay = Relay::stopped("max_mailbox_size = \"100K\"\ndelete_mails_after = \"2d\"\n");
    let _ = seed_quota(&relay);
    let inactive = relay.new_address();
    let acc = relay.with_store(async |s| {
        let acc = seed_account(s, &inactive).await;
        seed_message(s, acc.id, None, 777).await;
        acc
    });
    let db = relay.db();
    db.execute("UPDATE accounts SET last_login_day = last_login_day - 200 WHERE id = ?1", [acc.id]).expect("age login");
    write_orphan(&relay.data_dir().join("blobs"), "00000000000000000000000000000001", Duration::from_secs(7200));
    let snapshot = |db: &rusqlite::Connection| {
        (
            count(db, "SELECT count(*) FROM accounts"),
            count(db, "SELECT count(*) FROM messages"),
            count(db, "SELECT coalesce(sum(usage_bytes), 0) FROM accounts"),
            count(db, "SELECT count(*) FROM tombstones"),
            count(db, "SELECT count(*) FROM expunged"),
        )
    };
    let before = (snapshot(&db), blob_files(&relay));

    let (code, dry, err) = relay.cli(&["expire", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    println!("{dry}");
    assert!(dry.starts_with("dry run"), "says it is a dry run");
    assert_eq!((snapshot(&db), blob_files(&relay)), before, "the dry run changed nothing");
    assert_eq!(summary_value(&dry, "accounts deleted"), 1);
    // A has 5 messages 3 days old, B one: all older than 2 days, so the age rule takes them, and
    // the quota trim then has nothing old left to take.
    assert_eq!(summary_value(&dry, "messages deleted (age)"), 6);
    assert_eq!(summary_value(&dry, "orphan files removed"), 1);

    let (code, real, err) = relay.cli(&["expire"]);
    assert_eq!(code, 0, "{err}");
    let body = |s: &str| s.lines().filter(|l| !l.starts_with("dry run")).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&dry), body(&real), "the real pass removed exactly what the dry run reported");
    assert_ne!(snapshot(&db), before.0, "the real pass changed the store");
}

/// RET-11: a session idling on the mailbox receives the EXPUNGE of a message removed by the pass.
#[test]
fn idling_session_sees_expiry_expunge() {
    let mut relay = Relay::start("delete_mails_after = \"8s\"\nexpire_interval = \"1s\"\n");
    let addr = relay.new_address();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let imaps = relay.addr(relay.ports.imaps);
    rt.block_on(async {
        let mut c = Lines::tls(&imaps).await;
        c.line().await;
        let r = c.imap("a", &format!("LOGIN {addr} {PASSWORD}")).await;
        assert!(r.last().is_some_and(|l| l.starts_with("a OK")), "{r:?}");
        c.imap("b", "LOGOUT").await;
    });
    assert_eq!(relay.stop(), Some(0));
    relay.with_store(async |s| {
        let acc = s.account_by_address(&addr).await.expect("read").expect("account");
        seed_message(s, acc.id, None, 2000).await;
    });
    relay.spawn();
    rt.block_on(async {
        let mut c = Lines::tls(&imaps).await;
        c.line().await;
        c.imap("a", &format!("LOGIN {addr} {PASSWORD}")).await;
        let sel = c.imap("b", "SELECT INBOX").await;
        assert!(sel.iter().any(|l| l == "* 1 EXISTS"), "{sel:?}");
        c.send("c IDLE").await;
        assert!(c.line().await.is_some_and(|l| l.starts_with('+')));
        let mut got = false;
        for _ in 0..10 {
            if c.line().await.is_some_and(|l| l == "* 1 EXPUNGE") {
                got = true;
                break;
            }
        }
        assert!(got, "no EXPUNGE while idling");
        c.send("DONE").await;
        let done = c.until_tag("c").await;
        assert!(done.last().is_some_and(|l| l.starts_with("c OK")), "{done:?}");
    });
}

/// RET-15, OPS-15: while `serve` runs, `chatrelay expire` asks it through the control socket
/// (mode 0600) to run the pass, so the deletions happen inside the serving process.
#[test]
fn expire_cli_runs_inside_serve_via_control_socket() {
    let mut relay = Relay::stopped("delete_mails_after = \"1h\"\n");
    let addr = relay.new_address();
    relay.with_store(async |s| {
        let a = seed_account(s, &addr).await;
        seed_message(s, a.id, None, 1234).await;
        seed_message(s, a.id, None, 10).await;
    });
    let db = relay.db();
    db.execute("UPDATE messages SET internal_date = internal_date - 7200 WHERE uid = 1", []).expect("age");
    relay.spawn();
    let sock = relay.data_dir().join("control.sock");
    assert!(wait_for_file(&sock, Duration::from_secs(5)), "serve opened the control socket");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket is private");

    let (code, dry, err) = relay.cli(&["expire", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("inside the running serve"), "{err}");
    assert_eq!(summary_value(&dry, "messages deleted (age)"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM messages"), 2, "dry run changed nothing");

    let (code, out, err) = relay.cli(&["expire"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("inside the running serve"), "{err}");
    assert_eq!(summary_value(&out, "messages deleted (age)"), 1);
    assert_eq!(summary_value(&out, "bytes freed"), 1234);
    assert_eq!(count(&db, "SELECT count(*) FROM messages"), 1, "the old message is gone, the new one stays");
    let ran_in_serve = relay.log().lines().any(|l| l.contains("expiry pass done") && l.contains("\"control\""));
    assert!(ran_in_serve, "the serving process ran the pass");
    assert_eq!(relay.stop(), Some(0));
    assert!(!sock.exists(), "socket removed on shutdown");
    // Stopped: the command works on the database directly.
    let (code, out, err) = relay.cli(&["expire"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("inside the running serve"));
    assert_eq!(summary_value(&out, "messages deleted (age)"), 0);
}
