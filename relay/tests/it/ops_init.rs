//! OPS-2: `chatrelay init --from-chatmail-ini` converts a chatmail/relay config.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use crate::harness::BIN;

/// Run `chatrelay <args> --config <cfg>` with `CHATRELAY_DATA_DIR=<data>`.
fn chatrelay(args: &[&OsStr], cfg: &Path, data: &Path) -> Output {
    Command::new(BIN).args(args).arg("--config").arg(cfg).env("CHATRELAY_DATA_DIR", data).output().expect("run")
}

/// `chatrelay init --from-chatmail-ini <ini>` writing `cfg`.
fn init_from_ini(ini: &Path, cfg: &Path, data: &Path) -> Output {
    chatrelay(&["init".as_ref(), "--from-chatmail-ini".as_ref(), ini.as_os_str()], cfg, data)
}

/// A chatmail.ini as chatmail/relay's `cmdeploy init` writes it, with an operator's edits.
const CHATMAIL_INI: &str = "\
[params]

# mail domain (MUST be set to fully qualified chat mail domain)
mail_domain = chat.example.org

# email sending rate per user and minute
max_user_send_per_minute = 80
max_user_send_burst_size = 12

# maximum mailbox size of a chatmail address
max_mailbox_size = 750M
max_message_size = 31457280

# days after which mails are unconditionally deleted
delete_mails_after = 40
delete_large_after = 7
delete_inactive_users_after = 100

username_min_length = 9
username_max_length = 12
password_min_length = 10

passthrough_senders =
passthrough_recipients = echo@example.org

filtermail_smtp_port = 10080
postfix_reinject_port = 10025
filtermail_smtp_port_incoming = 10081
postfix_reinject_port_incoming = 10026
disable_ipv6 = False

tls_cert = acme
tls_external_cert_and_key = /etc/ssl/chat/fullchain.pem /etc/ssl/chat/privkey.pem
acme_email = admin@example.org

iroh_relay = https://iroh.example.org
mtail_address = 127.0.0.1

imap_rawlog = false
imap_compress = false

# Privacy Policy
privacy_postal = Example e.V., Hauptstr. 1, 12345 Berlin
privacy_mail = privacy@example.org
privacy_pdo = Jane Doe, Hauptstr. 1, 12345 Berlin
privacy_supervisor = Berliner Beauftragte für Datenschutz
";

#[test]
fn ops_init_from_chatmail_ini() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ini = tmp.path().join("chatmail.ini");
    std::fs::write(&ini, CHATMAIL_INI).expect("ini");
    let cfg = tmp.path().join("etc/chatrelay.toml");
    let data = tmp.path().join("data");
    let out = init_from_ini(&ini, &cfg, &data);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Keys without a counterpart are listed; converted ones are not.
    for k in [
        "passthrough_recipients",
        "filtermail_smtp_port",
        "postfix_reinject_port_incoming",
        "mtail_address",
        "imap_rawlog",
    ] {
        assert!(stderr.contains(k), "{k} not listed: {stderr}");
    }
    for k in ["privacy_mail", "delete_mails_after", "iroh_relay", "tls_external_cert_and_key", "passthrough_senders"] {
        assert!(!stderr.contains(k), "{k} wrongly listed: {stderr}");
    }
    assert!(data.join("dkim.pem").exists());

    // The converted file passes check-config and carries the values.
    let check = chatrelay(&["check-config".as_ref()], &cfg, &data);
    let eff = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    let v: toml::Value = toml::from_str(&eff).expect("effective config is TOML");
    assert_eq!(v["mail_domain"].as_str(), Some("chat.example.org"));
    assert_eq!(v["max_user_send_per_minute"].as_integer(), Some(80));
    assert_eq!(v["max_user_send_burst_size"].as_integer(), Some(12));
    assert_eq!(v["username_max_length"].as_integer(), Some(12));
    assert_eq!(v["password_min_length"].as_integer(), Some(10));
    assert_eq!(v["delete_mails_after"].as_str(), Some("40d"));
    assert_eq!(v["delete_inactive_users_after"].as_str(), Some("100d"));
    assert_eq!(v["max_mailbox_size"].as_integer(), Some(750 * 1024 * 1024), "{eff}");
    assert_eq!(v["tls"]["mode"].as_str(), Some("files"));
    assert_eq!(v["tls"]["cert"].as_str(), Some("/etc/ssl/chat/fullchain.pem"));
    assert_eq!(v["tls"]["key"].as_str(), Some("/etc/ssl/chat/privkey.pem"));
    assert_eq!(v["tls"]["acme_email"].as_str(), Some("admin@example.org"));
    assert_eq!(v["server_metadata"]["iroh_relay"].as_str(), Some("https://iroh.example.org"));
    assert_eq!(v["privacy"]["postal"].as_str(), Some("Example e.V., Hauptstr. 1, 12345 Berlin"));
    assert_eq!(v["privacy"]["mail"].as_str(), Some("privacy@example.org"));
    assert_eq!(v["privacy"]["supervisor"].as_str(), Some("Berliner Beauftragte für Datenschutz"));
    // The written file keeps the template's comments for the operator.
    let text = std::fs::read_to_string(&cfg).expect("config");
    assert!(text.contains("# any message older than this"), "{text}");

    // Refuses to overwrite.
    let again = init_from_ini(&ini, &cfg, &data);
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn ops_init_from_bad_chatmail_ini() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ini = tmp.path().join("chatmail.ini");
    std::fs::write(&ini, "[params]\nmail_domain = c.example.org\ndelete_mails_after = soon\n").expect("ini");
    let cfg = tmp.path().join("chatrelay.toml");
    let out = init_from_ini(&ini, &cfg, &tmp.path().join("d"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("delete_mails_after"));
    assert!(!cfg.exists());
}
