//! Issue 31, items 4 and 7: deletion leaves no trace in `data_dir` (PRIV-16a), stale
//! pre-migration backups are removed, and push jobs go with their tokens.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::harness::*;
use crate::imap_helpers::{assert_ok, login};

/// Every file under `dir` whose raw bytes contain one of `needles`: (file, needle).
fn traces(dir: &Path, needles: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(bytes) = std::fs::read(&p) else { continue };
            for n in needles {
                if bytes.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n.as_bytes())) {
                    out.push((p.display().to_string(), n.to_string()));
                }
            }
        }
    }
    out
}

/// `traces` once none are left, or what is left after `wait`.
async fn traces_after(dir: &Path, needles: &[&str], wait: Duration) -> Vec<(String, String)> {
    let deadline = Instant::now() + wait;
    loop {
        let left = traces(dir, needles);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Item 4: an account with a push token, a mailbox of its own and a message is deleted; then
/// none of its address, token, mailbox name or message bytes is in any file of `data_dir`
/// (database, WAL, blobs), read raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_account_leaves_no_trace_in_data_dir() {
    let relay = Relay::start("");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &alice).await;
    let token = format!("openpgp:TOKEN{}", rand_u64());
    let folder = format!("Folder{}", rand_u64());
    let mut c = login(&relay, &bob).await;
    assert_ok(&c.imap("m", &format!("SETMETADATA INBOX (/private/devicetoken \"{token}\")")).await);
    assert_ok(&c.imap("c", &format!("CREATE {folder}")).await);
    // A message to bob whose Message-ID is unique (encrypted_eml makes a random one).
    let eml = encrypted_eml(&alice, &bob);
    let marker =
        eml.lines().find(|l| l.starts_with("Message-ID:")).unwrap().trim()[13..].trim_end_matches('>').to_string();
    let rep = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &eml).await;
    assert!(rep.starts_with("250"), "{rep}");
    assert_ok(&c.imap("s", "SELECT INBOX").await);
    let needles = [bob.as_str(), token.as_str(), folder.as_str(), marker.as_str()];
    assert_eq!(traces(&relay.data_dir(), &[&marker]).len().min(1), 1, "the message is stored somewhere first");
    let _ = c.imap("l", "LOGOUT").await;

    let a = relay.addr(relay.ports.https);
    let body = serde_json::json!({"email": bob, "password": PASSWORD}).to_string();
    let r =
        https_req(&a, "POST", "/account/delete", &a, &[("Content-Type", "application/json")], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The scrub runs before the reply; allow a moment for readers still on an old snapshot.
    let left = traces_after(&relay.data_dir(), &needles, Duration::from_secs(5)).await;
    let files: Vec<String> = std::fs::read_dir(relay.data_dir())
        .unwrap()
        .flatten()
        .map(|e| format!("{} ({} B)", e.file_name().to_string_lossy(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect();
    println!("data_dir after deletion: {files:?}");
    assert!(left.is_empty(), "traces of the deleted account: {left:?}");
}

/// Item 4: pre-migration backups are removed once no longer needed (after `BACKUP_KEEP`),
/// by the expiry pass; a fresh one stays for going back.
#[tokio::test]
async fn stale_migration_backup_is_removed() {
    let relay = Relay::start("");
    let old = relay.data_dir().join("chatrelay.db.v1.bak");
    let fresh = relay.data_dir().join("chatrelay.db.v2.bak");
    for p in [&old, &fresh] {
        std::fs::write(p, b"SQLite format 3\0 old copy").unwrap();
    }
    let two_days = SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options().write(true).open(&old).unwrap().set_modified(two_days).unwrap();
    let (code, out, err) = relay.cli(&["expire"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!old.exists(), "a backup older than a day must be gone");
    assert!(fresh.exists(), "a fresh backup stays");
}

/// Item 7: tokens dropped by the 20-token cap take their pending push jobs with them, so the
/// cap bounds tokens and jobs together.
#[tokio::test]
async fn replaced_push_tokens_take_their_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = relay::store::Store::open(dir.path()).unwrap();
    let acc = seed_account(&store, &format!("{}@chat.test", random_local())).await;
    for i in 0..20 {
        store.add_push_token(acc.id, format!("openpgp:old{i}")).await.unwrap();
    }
    seed_message(&store, acc.id, None, 100).await;
    // 20 new tokens replace the old ones (the cap keeps the 20 most recently set).
    for i in 0..20 {
        store.add_push_token(acc.id, format!("openpgp:new{i}")).await.unwrap();
    }
    seed_message(&store, acc.id, None, 100).await;
    let jobs = store.due_push_jobs(i64::MAX, 1000).await.unwrap();
    let tokens = store.push_tokens(acc.id).await.unwrap();
    let stale: Vec<&str> = jobs.iter().map(|j| j.token.as_str()).filter(|t| !tokens.iter().any(|k| k == t)).collect();
    println!("{} tokens, {} jobs, {} for dropped tokens", tokens.len(), jobs.len(), stale.len());
    assert_eq!(tokens.len(), 20);
    assert!(stale.is_empty(), "jobs for tokens that are gone: {stale:?}");
    assert!(jobs.len() <= 20, "jobs {}", jobs.len());
}

/// Item 4: a message a user deletes (STORE \Deleted + EXPUNGE) is gone from every file of
/// `data_dir` once the relay has been quiet for a moment (the WAL is cut by the next quiet
/// checkpoint after a removal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expunged_message_leaves_no_trace() {
    let relay = Relay::start("");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    create_account(&relay, &alice).await;
    let mut c = login(&relay, &bob).await;
    let eml = encrypted_eml(&alice, &bob);
    let marker =
        eml.lines().find(|l| l.starts_with("Message-ID:")).unwrap().trim()[13..].trim_end_matches('>').to_string();
    let rep = submit(&relay, &alice, PASSWORD, &alice, &[&bob], &eml).await;
    assert!(rep.starts_with("250"), "{rep}");
    assert_ok(&c.imap("s", "SELECT INBOX").await);
    assert_ok(&c.imap("d", "UID STORE 1 +FLAGS (\\Deleted)").await);
    assert_ok(&c.imap("e", "EXPUNGE").await);
    let t = Instant::now();
    let left = traces_after(&relay.data_dir(), &[&marker], Duration::from_secs(10)).await;
    println!("expunged message gone from data_dir after {:?}", t.elapsed());
    assert!(left.is_empty(), "traces of the expunged message: {left:?}");
}

/// Item 4 for expiry: inactive accounts deleted by the serve loop's pass leave no trace either;
/// the pass scrubs once at its end rather than once per account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_accounts_leave_no_trace_in_data_dir() {
    let relay = Relay::start("expire_interval = \"1s\"\n");
    let mut needles = Vec::new();
    for _ in 0..3 {
        let addr = relay.new_address();
        let token = format!("openpgp:TOKEN{}", rand_u64());
        let mut c = login(&relay, &addr).await;
        assert_ok(&c.imap("m", &format!("SETMETADATA INBOX (/private/devicetoken \"{token}\")")).await);
        let _ = c.imap("l", "LOGOUT").await;
        needles.push(addr);
        needles.push(token);
    }
    let refs: Vec<&str> = needles.iter().map(String::as_str).collect();
    let db = relay.db();
    for addr in needles.iter().step_by(2) {
        db.execute("UPDATE accounts SET last_login_day = last_login_day - 100 WHERE address = ?1", [addr])
            .expect("age login");
    }
    drop(db);
    let left = traces_after(&relay.data_dir(), &refs, Duration::from_secs(15)).await;
    assert!(left.is_empty(), "traces of expired accounts: {left:?}");
    assert!(relay.log().contains("account deleted"), "deleted by the expiry pass");
}
