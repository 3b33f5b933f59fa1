//! OPS-13: deploy/install.sh installs user, binary, config, data dir, unit and journald settings,
//! and a second run upgrades the binary while keeping config and data. Runs into a temporary tree
//! (`INSTALL_ROOT`) so the test machine is not changed; needs root and `useradd --prefix`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::harness::BIN;

fn run_install(root: &std::path::Path, bin: &std::path::Path) -> (bool, String) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/install.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("chat.example.net")
        .arg(bin)
        .env("INSTALL_ROOT", root)
        // Never ask real DNS from a test: the final `chatrelay dns` check goes to a dead local port.
        .env("CHATRELAY_DELIVERY__RESOLVER", "127.0.0.1:9")
        .output()
        .expect("run install.sh");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn install_sh_installs_and_is_idempotent() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("SKIPPED install_sh_installs_and_is_idempotent: needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).expect("etc");
    for f in ["passwd", "group", "shadow", "gshadow"] {
        let _ = std::fs::copy(format!("/etc/{f}"), root.join("etc").join(f));
    }
    let (ok, log) = run_install(&root, std::path::Path::new(BIN));
    assert!(ok, "{log}");
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(passwd.lines().any(|l| l.starts_with("chatrelay:") && l.ends_with("/usr/sbin/nologin")), "service user");
    let installed = root.join("usr/local/bin/chatrelay");
    assert!(std::fs::metadata(&installed).expect("binary").permissions().mode() & 0o111 != 0);
    let config = root.join("etc/chatrelay/chatrelay.toml");
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains("mail_domain = \"chat.example.net\""));
    assert!(text.contains("data_dir = \"/var/lib/chatrelay\""));
    let data = root.join("var/lib/chatrelay");
    assert_eq!(std::fs::metadata(&data).expect("data").permissions().mode() & 0o777, 0o700);
    assert!(data.join("dkim.pem").exists() && data.join("secret.key").exists());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/chatrelay.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/chatrelay serve --config"), "unit runs the installed binary");
    assert!(unit.contains("ProtectSystem=strict"), "the hardened unit");
    let journald = std::fs::read_to_string(root.join("etc/systemd/journald.conf.d/chatrelay.conf")).expect("journald");
    assert!(journald.contains("Storage=volatile") && journald.contains("MaxRetentionSec=3d"));
    assert!(log.contains("_domainkey"), "prints the DNS records: {log}");

    // Second run: the operator's edits and the keys survive; the binary is replaced.
    std::fs::write(&config, format!("{text}\n# operator edit\n")).expect("edit");
    let dkim = std::fs::read(data.join("dkim.pem")).expect("dkim");
    std::fs::write(&installed, b"old").expect("stale binary");
    let (ok, log) = run_install(&root, std::path::Path::new(BIN));
    assert!(ok, "{log}");
    assert!(std::fs::read_to_string(&config).expect("config").contains("# operator edit"));
    assert_eq!(std::fs::read(data.join("dkim.pem")).expect("dkim"), dkim);
    assert_eq!(std::fs::read(&installed).expect("binary"), std::fs::read(BIN).expect("built"));
    let users = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert_eq!(users.lines().filter(|l| l.starts_with("chatrelay:")).count(), 1, "one service user");
}
