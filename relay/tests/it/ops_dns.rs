//! OPS-7..11: `chatrelay dns` prints the zone and checks it against a DNS server: the shared
//! in-test server of `dns_server`, answering from records the test sets.

use std::path::PathBuf;

use hickory_resolver::proto::rr::rdata::{A, CAA, CNAME, MX, SRV, TXT};
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::dns_server::TestDns;
use crate::harness::BIN;

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

/// A data_dir with a DKIM key and a config for `domain` in `[tls] mode` that resolves through
/// `server`; returns the temp dir (keep it), the config path and the data_dir.
fn setup(domain: &str, mode: &str, server: &TestDns) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    relay::outbound::dkim_key::ensure(&data.join("dkim.pem")).expect("dkim key");
    let cfg = tmp.path().join("chatrelay.toml");
    let toml = format!(
        "mail_domain = \"{domain}\"\ndata_dir = \"{}\"\n[tls]\nmode = \"{mode}\"\n[delivery]\nresolver = \"{}\"\n",
        data.display(),
        server.addr
    );
    std::fs::write(&cfg, toml).expect("config");
    (tmp, cfg, data)
}

/// Run `chatrelay dns` (without blocking the runtime the DNS server runs on); returns (exit code,
/// stdout).
async fn dns(cfg: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out =
        tokio::process::Command::new(BIN).args(["dns", "--config"]).arg(cfg).args(extra).output().await.expect("run");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The status line of `<name> <TYPE>` in the check part.
fn status<'a>(out: &'a str, owner: &str, rtype: &str) -> Vec<&'a str> {
    let check = out.split("; checking against DNS").nth(1).unwrap_or("");
    let prefix = format!("{owner} {rtype} ");
    check.lines().filter(|l| l.starts_with(&prefix)).map(|l| &l[prefix.len()..]).collect()
}

/// The quoted strings of the zone line `<owner> 3600 IN TXT ...` starting with `start`, joined.
fn zone_txt(out: &str, owner: &str, start: &str) -> String {
    let prefix = format!("{owner} 3600 IN TXT ");
    let line = out
        .lines()
        .find(|l| l.starts_with(&prefix) && l[prefix.len()..].starts_with(&format!("\"{start}")))
        .expect("zone TXT line");
    let strings: Vec<&str> = line[prefix.len()..].split('"').skip(1).step_by(2).collect();
    assert!(strings.iter().all(|s| s.len() <= 255), "TXT strings are at most 255 characters: {line}");
    strings.concat()
}

#[tokio::test]
async fn ops_dns_prints_and_checks_records() {
    let server = TestDns::start().await;
    let (_tmp, cfg, data) = setup("chat.example", "acme", &server);

    // Nothing published yet: every record MISSING, exit 1.
    let (code, out) = dns(&cfg, &[]).await;
    assert_eq!(code, 1, "{out}");
    let d = "chat.example.";
    for line in [
        format!("{d} 3600 IN MX 10 {d}"),
        format!("{d} 3600 IN TXT \"v=spf1 a ~all\""),
        format!("_dmarc.{d} 3600 IN TXT \"v=DMARC1;p=reject;adkim=s;aspf=s\""),
        format!("mta-sts.{d} 3600 IN CNAME {d}"),
        format!("www.{d} 3600 IN CNAME {d}"),
        format!("_submission._tcp.{d} 3600 IN SRV 0 1 587 {d}"),
        format!("_submissions._tcp.{d} 3600 IN SRV 0 1 465 {d}"),
        format!("_imap._tcp.{d} 3600 IN SRV 0 1 143 {d}"),
        format!("_imaps._tcp.{d} 3600 IN SRV 0 1 993 {d}"),
        format!("{d} 3600 IN CAA 0 issue \"letsencrypt.org\""),
    ] {
        assert!(out.contains(&line), "missing zone line {line:?} in:\n{out}");
    }
    assert_eq!(status(&out, d, "MX"), ["MISSING"], "{out}");
    let dkim = zone_txt(&out, &format!("dkim._domainkey.{d}"), "v=DKIM1");
    let sts = zone_txt(&out, &format!("_mta-sts.{d}"), "v=STSv1");
    assert!(sts.starts_with("v=STSv1; id=") && sts.len() == "v=STSv1; id=".len() + 12, "{sts}");
    // The DKIM record carries the public half of the key file, as DER SubjectPublicKeyInfo.
    {
        use base64::Engine;
        use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(data.join("dkim.pem")).expect("pem"))
            .expect("key");
        let spki = base64::engine::general_purpose::STANDARD
            .encode(key.to_public_key().to_public_key_der().expect("der").as_bytes());
        assert_eq!(dkim, format!("v=DKIM1;k=rsa;p={spki};s=email;t=s"));
        assert!(dkim.len() > 255, "a 2048-bit key needs split strings");
    }

    // Publish most records; DMARC wrong, one SRV missing, no A (unless given with --ip).
    let txt = |s: &str| RData::TXT(TXT::new(vec![s.to_string()]));
    server.set(d, RecordType::MX, vec![RData::MX(MX::new(10, name(d)))]);
    let (first, rest) = dkim.split_at(200);
    server.set(
        &format!("dkim._domainkey.{d}"),
        RecordType::TXT,
        vec![RData::TXT(TXT::new(vec![first.into(), rest.into()]))],
    );
    server.set(&format!("_mta-sts.{d}"), RecordType::TXT, vec![txt(&sts)]);
    server.set(&format!("mta-sts.{d}"), RecordType::CNAME, vec![RData::CNAME(CNAME(name(d)))]);
    server.set(&format!("www.{d}"), RecordType::CNAME, vec![RData::CNAME(CNAME(name(d)))]);
    server.set(d, RecordType::TXT, vec![txt("google-site-verification=abc"), txt("v=spf1 a ~all")]);
    server.set(&format!("_dmarc.{d}"), RecordType::TXT, vec![txt("v=DMARC1;p=none")]);
    server.set(&format!("_imaps._tcp.{d}"), RecordType::SRV, vec![RData::SRV(SRV::new(0, 1, 993, name(d)))]);
    server.set(d, RecordType::CAA, vec![RData::CAA(CAA::new_issue(false, Some(name("letsencrypt.org")), vec![]))]);

    let (code, out) = dns(&cfg, &[]).await;
    println!("{out}");
    assert_eq!(status(&out, d, "MX"), ["OK"], "{out}");
    assert_eq!(status(&out, &format!("dkim._domainkey.{d}"), "TXT"), ["OK"]);
    assert_eq!(status(&out, &format!("_mta-sts.{d}"), "TXT"), ["OK"], "the id is stable between runs");
    assert_eq!(status(&out, &format!("mta-sts.{d}"), "CNAME"), ["OK"]);
    assert_eq!(status(&out, d, "TXT"), ["OK (recommended)"], "SPF found among other TXT records");
    assert_eq!(status(&out, &format!("_dmarc.{d}"), "TXT"), ["WRONG (found \"v=DMARC1;p=none\") (recommended)"]);
    assert_eq!(status(&out, &format!("_submission._tcp.{d}"), "SRV"), ["MISSING (recommended)"]);
    assert_eq!(status(&out, &format!("_imaps._tcp.{d}"), "SRV"), ["OK (recommended)"]);
    assert_eq!(status(&out, d, "CAA"), ["OK (recommended)"]);
    let a = status(&out, d, "A");
    if out.contains("no global-scope address found") {
        assert_eq!(a, ["MISSING"], "{out}");
        assert_eq!(code, 1, "a required record (A) is missing");
    } else {
        assert!(a.iter().all(|s| s.starts_with("MISSING")), "{out}");
        assert_eq!(code, 1);
    }

    // With the public address given and served, every required record is OK: exit 0, even
    // though recommended ones are still missing or wrong.
    server.set(d, RecordType::A, vec![RData::A(A::new(198, 51, 100, 7))]);
    let (code, out) = dns(&cfg, &["--ip", "198.51.100.7"]).await;
    assert!(out.contains(&format!("{d} 3600 IN A 198.51.100.7")), "{out}");
    assert_eq!(status(&out, d, "A"), ["OK"], "{out}");
    assert_eq!(code, 0, "{out}");

    // A wrong required record: WRONG with the value found, exit 1.
    server.set(&format!("www.{d}"), RecordType::CNAME, vec![RData::CNAME(CNAME(name("elsewhere.example.")))]);
    let (code, out) = dns(&cfg, &["--ip", "198.51.100.7"]).await;
    assert_eq!(status(&out, &format!("www.{d}"), "CNAME"), ["WRONG (found elsewhere.example.)"], "{out}");
    assert_eq!(code, 1);
}

#[tokio::test]
async fn ops_dns_self_signed_has_no_mta_sts() {
    let server = TestDns::start().await;
    let (_tmp, cfg, _) = setup("_dev.example", "self-signed", &server);
    let (code, out) = dns(&cfg, &[]).await;
    assert_eq!(code, 1);
    assert!(!out.contains("mta-sts") && !out.contains("STSv1"), "{out}");
    assert!(!out.contains(" CAA "), "no CAA outside acme mode: {out}");
    assert!(out.contains("_dev.example. 3600 IN MX 10 _dev.example."), "{out}");
}
