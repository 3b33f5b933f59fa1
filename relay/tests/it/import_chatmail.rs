//! Issue 29: `chatrelay import --from-chatmail` on a tree in the reference's layout, generated
//! here: `<addr>/password` with `{SHA512-CRYPT}`, Dovecot Maildir `cur/` `new/` (one file gzip
//! compressed as `zlib_save = gz` does) and a `.DeltaChat` subfolder, `enforceE2EEincoming`,
//! `metadata.json` device tokens, the opendkim key. Dry run, import, re-run (idempotent, picks up
//! only new files), then login with the old password over IMAPS and the old messages fetched.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;

/// `openssl passwd -6 -salt saltsalt hunter2hunter2` (as in the password unit test).
const OLD_HASH: &str =
    "{SHA512-CRYPT}$6$saltsalt$yj/VLDgMjQCnRrAPBPKh5HRcgRfPSij0FYWRBJPofYcgCjjgCNa3CNbnWjuOFhRBFREybzjwmhkhe33hM4L6b1";
const OLD_PASSWORD: &str = "hunter2hunter2";

fn message(n: u32, to: &str) -> String {
    format!(
        "From: <x@other.test>\r\nTo: <{to}>\r\nSubject: [...]\r\nMessage-ID: <m{n}@other.test>\r\n\r\nbody number {n}\r\n"
    )
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn import(relay: &Relay, from: &Path, ini: &Path, key: &Path, dry: bool) -> String {
    let (from, ini, key) = (from.to_str().unwrap(), ini.to_str().unwrap(), key.to_str().unwrap());
    let mut args = vec!["import", "--from-chatmail", from, "--chatmail-ini", ini, "--dkim-key", key];
    if dry {
        args.push("--dry-run");
    }
    let (code, out, err) = relay.cli(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_from_a_chatmail_host_then_login_and_fetch() {
    let mut relay = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), "[dkim]\nselector = \"opendkim\"\n");
    let old = tempfile::tempdir().unwrap();
    let root = old.path().join("home/vmail/mail/chat.test");
    let (alice, bob) = ("alice0001@chat.test", "bob000001@chat.test");
    let a = root.join(alice);
    write(&a.join("password"), OLD_HASH.as_bytes());
    write(&a.join("enforceE2EEincoming"), b"");
    write(&a.join("cur/1700000000.M1P10.old,S=90,W=95:2,S"), message(1, alice).as_bytes());
    write(&a.join("cur/1700000100.M2P10.old,S=90,W=95:2,FS"), message(2, alice).as_bytes());
    write(&a.join("new/1700000200.M3P10.old,S=90,W=95"), &gz(message(3, alice).as_bytes()));
    write(&a.join(".DeltaChat/cur/1700000300.M4P10.old:2,S"), message(4, alice).as_bytes());
    write(&a.join("metadata.json"), br#"{"devicetoken": {"tok-alice-1": 1700000000}}"#);
    write(&a.join("dovecot-uidlist"), b"3 V1 N4\n");
    let b = root.join(bob);
    write(&b.join("password"), OLD_HASH.as_bytes()); // no enforceE2EEincoming: cleartext allowed
    std::fs::create_dir_all(b.join("cur")).unwrap();
    write(&root.join("carol0001@chat.test/cur/1.M1P1.x"), b"no password here");
    std::fs::create_dir_all(root.join("pending_notifications")).unwrap();
    let ini = old.path().join("chatmail.ini");
    write(&ini, b"[params]\nmail_domain = chat.test\nmax_user_send_per_minute = 60\n");
    let key = old.path().join("opendkim.private");
    {
        use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
        let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        write(&key, k.to_pkcs1_pem(LineEnding::LF).unwrap().as_bytes());
    }

    // Dry run: the report, and nothing written.
    let out = import(&relay, &root, &ini, &key, true);
    assert!(out.contains("accounts: 2 would be created"), "{out}");
    assert!(out.contains("messages: 4 would be imported"), "{out}");
    assert!(out.contains("carol0001@chat.test: no password file"), "{out}");
    assert!(!relay.data_dir().join("chatrelay.db").exists(), "dry run created a database");

    let out = import(&relay, &root, &ini, &key, false);
    assert!(out.contains("accounts: 2 created, 0 already present"), "{out}");
    assert!(out.contains("messages: 4 imported, 0 already imported"), "{out}");
    assert!(out.contains("push tokens: 1 imported"), "{out}");
    assert!(out.contains("cleartext allowed: 1 accounts"), "{out}");
    assert_eq!(std::fs::read(relay.data_dir().join("dkim.pem")).unwrap(), std::fs::read(&key).unwrap());

    // Mail that reached the old host meanwhile: a re-run imports only that.
    write(&a.join("new/1700000400.M5P10.old,S=90,W=95"), message(5, alice).as_bytes());
    let out = import(&relay, &root, &ini, &key, false);
    assert!(out.contains("accounts: 0 created, 2 already present"), "{out}");
    assert!(out.contains("messages: 1 imported, 4 already imported"), "{out}");
    assert!(out.contains("push tokens: 0 imported"), "{out}");

    {
        let db = relay.db();
        let cleartext = |addr: &str| count(&db, &format!("SELECT cleartext FROM accounts WHERE address = '{addr}'"));
        assert_eq!((cleartext(alice), cleartext(bob)), (0, 1));
        assert_eq!(count(&db, "SELECT COUNT(*) FROM push_tokens WHERE token = 'tok-alice-1'"), 1);
    }

    relay.spawn();
    // A wrong password is refused; the old one works over IMAPS and the old messages are there.
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    assert!(c.line().await.unwrap().starts_with("* OK"));
    let r = c.imap("a0", &format!("LOGIN {alice} wrong-password-1")).await;
    assert!(r.last().unwrap().starts_with("a0 NO"), "{r:?}");
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    assert!(c.line().await.unwrap().starts_with("* OK"));
    let r = c.imap("a1", &format!("LOGIN {alice} {OLD_PASSWORD}")).await;
    assert!(r.last().unwrap().starts_with("a1 OK"), "{r:?}");
    let sel = c.imap("a2", "SELECT INBOX").await;
    assert!(sel.iter().any(|l| l == "* 4 EXISTS"), "{sel:?}");
    let f = c.imap("a3", "FETCH 1:4 (FLAGS BODY.PEEK[TEXT])").await;
    let all = f.join("\n");
    for n in [1, 2, 3, 5] {
        assert!(all.contains(&format!("body number {n}")), "message {n} missing: {all}");
    }
    let flags: Vec<&String> = f.iter().filter(|l| l.contains("FLAGS")).collect();
    assert!(flags[0].contains("\\Seen") && !flags[0].contains("\\Flagged"), "{flags:?}");
    assert!(flags[1].contains("\\Seen") && flags[1].contains("\\Flagged"), "{flags:?}");
    assert!(!flags[2].contains("\\Seen"), "new/ is unseen: {flags:?}");
    let sel = c.imap("a4", "SELECT DeltaChat").await;
    assert!(sel.iter().any(|l| l == "* 1 EXISTS"), "{sel:?}");
    let _ = c.imap("a5", "LOGOUT").await;

    // ACC-20: the first successful login replaced the crypt hash with argon2id.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let h: String = relay
            .db()
            .query_row("SELECT password_hash FROM accounts WHERE address = ?1", [alice], |r| r.get(0))
            .unwrap();
        if h.starts_with("$argon2id$") {
            break;
        }
        assert!(Instant::now() < deadline, "still {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // bob never logged in: still the imported hash, and it works over SMTP too.
    let (_, r) = smtp_login(&relay, bob, OLD_PASSWORD).await;
    assert!(r.starts_with("235"), "{r}");

    // Beside a running serve the import refuses (its account caches would miss the change).
    let (code, _, err) = relay.cli(&["import", "--from-chatmail", root.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("serve is running"), "{err}");
}

#[test]
fn import_refuses_another_domain() {
    let relay = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), "");
    let old = tempfile::tempdir().unwrap();
    let root = old.path().join("other.test");
    std::fs::create_dir_all(&root).unwrap();
    let (code, _, err) = relay.cli(&["import", "--from-chatmail", root.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"other.test\" is not this relay's mail_domain"), "{err}");
}
