//! Issue 2: the workspace runs on dev.toml, the config contract, and store durability.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The README's run command on config/dev.toml: all seven dev listeners accept within 5 s and
/// SIGTERM exits 0 within 5 s. data_dir is moved by environment override (also tested here).
#[test]
fn dev_toml_serves_and_stops() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(repo_root().join("config/dev.toml"))
        .env("CHATRELAY_DATA_DIR", tmp.path().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    for port in [2525, 2587, 2465, 2143, 2993, 8080, 8443] {
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(start.elapsed() < Duration::from_secs(5), "port {port} not open within 5 s");
            assert!(child.try_wait().expect("wait").is_none(), "chatrelay exited early");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(tmp.path().join("data/chatrelay.db").exists(), "data_dir override used");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let stop = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(stop.elapsed() < Duration::from_secs(5), "no exit within 5 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut log);
    }
    assert!(log.contains("ready"), "a ready line is logged: {log}");
    assert!(!log.contains("127.0.0.1:2"), "no addresses with ports in logs");
}

#[test]
fn check_config_unknown_key_exits_2_and_names_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, "mail_domain = \"x.test\"\nmax_mesage_size = 5\n[listen]\nimapz = \"127.0.0.1:1\"\n")
        .expect("write");
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_mesage_size"), "{err}");
    assert!(err.contains("listen.imapz"), "all errors together: {err}");
    assert!(err.contains("bad.toml"), "names the file: {err}");
}

#[test]
fn env_overrides_the_file() {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(repo_root().join("config/dev.toml"))
        .env("CHATRELAY_LISTEN__IMAPS", "127.0.0.1:2994")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("imaps = [\"127.0.0.1:2994\"]"), "{text}");
    assert!(text.contains("delete_mails_after = \"20d\""), "defaults filled in: {text}");
}

#[test]
fn missing_config_and_bad_usage_exit_2() {
    let out = Command::new(BIN).args(["check-config", "--config", "/nonexistent/x.toml"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["frobnicate"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn init_writes_config_data_dir_and_keys() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = tmp.path().join("etc/chatrelay.toml");
    let data = tmp.path().join("data");
    let out = Command::new(BIN)
        .args(["init", "chat.example.net", "--config"])
        .arg(&cfg)
        .env("CHATRELAY_DATA_DIR", &data)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&cfg).expect("config written");
    assert!(text.contains("mail_domain = \"chat.example.net\""));
    assert!(data.join("dkim.pem").exists());
    assert!(data.join("secret.key").exists());
    // Refuses to overwrite.
    let again = Command::new(BIN)
        .args(["init", "chat.example.net", "--config"])
        .arg(&cfg)
        .env("CHATRELAY_DATA_DIR", &data)
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
}

const CHILD_ENV: &str = "RELAYTEST_STORE_WRITER";

/// Child half of `store_survives_sigkill`: deliver messages forever, printing each one whose
/// `deliver` returned.
#[test]
fn store_writer_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async move {
        let store = relay::store::Store::open(std::path::Path::new(&dir)).expect("open");
        let acc = match store.create_account("writer001@chat.test", "x".into(), vec![1]).await.expect("create") {
            relay::store::CreateOutcome::Created(a) => a,
            other => panic!("{other:?}"),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..4u64 {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0.. {
                    let body = format!("message {w}-{i}\r\n").repeat(50);
                    let blob = store.put_blob(body.clone().into()).await.expect("blob");
                    let r = store
                        .deliver(relay::store::Delivery {
                            local: vec![acc.id],
                            local_blob: Some(blob),
                            ..Default::default()
                        })
                        .await
                        .expect("deliver");
                    println!("ok {} {w}-{i}", r.stored[0].2);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

#[test]
fn store_survives_sigkill() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "foundation::store_writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let out = child.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    let mut lines = BufReader::new(out).lines();
    while acked.len() < 300 {
        let Some(Ok(l)) = lines.next() else { break };
        if let Some(rest) = l.strip_prefix("ok ") {
            let mut it = rest.split(' ');
            let uid: u32 = it.next().and_then(|u| u.parse().ok()).expect("uid");
            acked.push((uid, it.next().expect("tag").to_string()));
        }
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(acked.len() >= 300, "the writer acknowledged messages before the kill");

    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let store = relay::store::Store::open(tmp.path()).expect("reopen");
        let acc = store.account_by_address("writer001@chat.test").await.expect("read").expect("account");
        let inbox = store.mailbox(acc.id, "INBOX").await.expect("read").expect("inbox");
        let msgs = store.messages(inbox.id).await.expect("messages");
        for (uid, tag) in &acked {
            let m = msgs.iter().find(|m| m.uid == *uid).unwrap_or_else(|| panic!("acked uid {uid} lost"));
            let body = store.read_blob(&m.blob).await.expect("blob file present");
            assert!(
                String::from_utf8_lossy(&body).starts_with(&format!("message {tag}\r\n")),
                "uid {uid} has its bytes"
            );
        }
        let used: u64 = msgs.iter().map(|m| m.size).sum();
        let acc = store.account_by_id(acc.id).await.expect("read").expect("account");
        assert_eq!(acc.usage_bytes, used, "usage counter matches the rows");
    });
}

/// IMAP-35: a broken `server_metadata.appversions` file is refused at start (exit 2, key named).
#[test]
fn bad_appversions_file_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let json = tmp.path().join("appversions.json");
    std::fs::write(&json, "{\"clients\": []}").expect("write");
    let path = tmp.path().join("c.toml");
    std::fs::write(
        &path,
        format!("mail_domain = \"x.test\"\n[server_metadata]\nappversions = \"{}\"\n", json.display()),
    )
    .expect("write");
    let out = Command::new(BIN).args(["check-config", "--config"]).arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server_metadata.appversions"));
}
