//! `chatrelay dns --config FILE` (OPS-7..11): print the records to publish in zone-file format
//! (TTL 3600), then check each against live DNS through `delivery.resolver` and print one status
//! line per record: `<name> <TYPE> OK`, `MISSING` or `WRONG (found ...)`. Exit 0 only when every
//! required record is OK. Host addresses come from the interfaces (never from connecting out).

use std::net::IpAddr;
use std::path::Path;

use hickory_resolver::proto::rr::{RData, RecordType};

use super::{Failure, load_config, runtime};
use crate::config::{Config, TlsMode};
use crate::http::mta_sts_policy;

mod host;

const TTL: u32 = 3600;

/// What a record must contain; `check` compares the answers against it.
#[derive(Debug, Clone)]
enum Want {
    Ip(IpAddr),
    /// The host the name should point at (MX exchange, CNAME target).
    Host(String),
    /// The TXT record starting with `prefix` must equal `text` (spaces ignored).
    Txt {
        prefix: &'static str,
        text: String,
    },
    Srv {
        port: u16,
        target: String,
    },
    /// `issue` CAA value.
    Caa(String),
    /// No value can be computed (e.g. no global address): always MISSING.
    Unknown,
}

#[derive(Debug, Clone)]
struct Rec {
    name: String,
    rtype: RecordType,
    /// RDATA in zone-file presentation.
    rdata: String,
    required: bool,
    want: Want,
}

#[derive(Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Missing(Option<String>),
    Wrong(String),
}

pub fn run(config: &Path, given: Vec<IpAddr>) -> Result<bool, Failure> {
    let cfg = load_config(config)?;
    if crate::outbound::mx::address_literal(&cfg.mail_domain).is_some() {
        // Issue 29: an IP-only relay has no zone; peers reach it by its address.
        println!("; {} is an IP-only relay: there are no DNS records to publish", cfg.mail_domain);
        return Ok(true);
    }
    let ips = if given.is_empty() { host::global_addresses() } else { given };
    let dkim = dkim_txt(&cfg)?;
    let recs = records(&cfg, &ips, &dkim, &mta_sts_id(&cfg), &acme_account_uri(&cfg));
    let d = &cfg.mail_domain;
    println!("; DNS records for {d} (zone-file format)");
    if ips.is_empty() {
        println!("; no global-scope address found on this host's interfaces: set the A/AAAA records by hand");
        println!("; (or pass the public address with --ip when the host is behind 1:1 NAT)");
    }
    let mut required_done = false;
    println!("; required");
    for r in &recs {
        if !r.required && !required_done {
            println!("; recommended");
            required_done = true;
        }
        match r.want {
            Want::Unknown => println!("; {} {TTL} IN {} <address of this host>", r.name, r.rtype),
            _ => println!("{} {TTL} IN {} {}", r.name, r.rtype, r.rdata),
        }
    }
    println!();
    println!("; checking against DNS (resolver: {})", cfg.delivery.resolver);
    let all_ok = runtime()?.block_on(async {
        // An operator runs this by hand: answer within seconds even when DNS does not.
        let resolver = crate::outbound::dns::build(&cfg.delivery.resolver, std::time::Duration::from_secs(3), false)
            .map_err(Failure::runtime)?;
        let answers = futures::future::join_all(recs.iter().map(|r| records_at(&resolver, &r.name, r.rtype))).await;
        let mut ok = true;
        for (r, found) in recs.iter().zip(answers) {
            let status = match found {
                Ok(found) => check(&r.want, &found),
                Err(e) => Status::Missing(Some(format!("lookup failed: {e}"))),
            };
            ok &= !r.required || status == Status::Ok;
            let tail = if r.required { "" } else { " (recommended)" };
            match status {
                Status::Ok => println!("{} {} OK{tail}", r.name, r.rtype),
                Status::Missing(None) => println!("{} {} MISSING{tail}", r.name, r.rtype),
                Status::Missing(Some(why)) => println!("{} {} MISSING ({why}){tail}", r.name, r.rtype),
                Status::Wrong(found) => println!("{} {} WRONG (found {found}){tail}", r.name, r.rtype),
            }
        }
        // OPS-10: reverse DNS is a hint only.
        for ip in &ips {
            let names =
                records_at(&resolver, &hickory_resolver::proto::rr::Name::from(*ip).to_ascii(), RecordType::PTR).await;
            let names: Vec<String> = names
                .unwrap_or_default()
                .iter()
                .filter_map(|r| match r {
                    RData::PTR(p) => Some(norm(&p.0.to_ascii())),
                    _ => None,
                })
                .collect();
            if !names.iter().any(|n| n == &norm(d)) {
                println!(
                    "; hint: reverse DNS (PTR) of {ip} should name {d}. (found: {})",
                    if names.is_empty() { "none".into() } else { names.join(", ") }
                );
            }
        }
        Ok::<bool, Failure>(ok)
    })?;
    Ok(all_ok)
}

/// The answers of type `rtype` at the absolute `name`; no records is an empty list, not an error.
async fn records_at(
    resolver: &hickory_resolver::TokioResolver,
    name: &str,
    rtype: RecordType,
) -> Result<Vec<RData>, String> {
    use crate::outbound::dns::{LookupFailure, classify};
    let fq = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
    match resolver.lookup(fq.as_str(), rtype).await {
        Ok(l) => Ok(l.answers().iter().filter(|r| r.record_type() == rtype).map(|r| r.data.clone()).collect()),
        Err(e) if classify(&e) != LookupFailure::Temporary => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

fn norm(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// TXT strings as zone-file character-strings of at most 255 characters each.
fn txt_rdata(text: &str) -> String {
    let chunks: Vec<String> =
        text.as_bytes().chunks(255).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    chunks.join(" ")
}

fn records(cfg: &Config, ips: &[IpAddr], dkim: &str, sts_id: &str, account_uri: &Option<String>) -> Vec<Rec> {
    let d = &cfg.mail_domain;
    let fq = format!("{d}.");
    let rec = |name: String, rtype, rdata: String, required, want| Rec { name, rtype, rdata, required, want };
    let txt = |name: String, prefix, text: String, required| {
        rec(name, RecordType::TXT, txt_rdata(&text), required, Want::Txt { prefix, text })
    };
    let mut out = Vec::new();
    if !ips.iter().any(IpAddr::is_ipv4) {
        out.push(rec(fq.clone(), RecordType::A, String::new(), true, Want::Unknown));
    }
    for ip in ips {
        let t = if ip.is_ipv4() { RecordType::A } else { RecordType::AAAA };
        out.push(rec(fq.clone(), t, ip.to_string(), true, Want::Ip(*ip)));
    }
    out.push(rec(fq.clone(), RecordType::MX, format!("10 {fq}"), true, Want::Host(d.clone())));
    let selector = &cfg.dkim.selector;
    out.push(txt(
        format!("{selector}._domainkey.{fq}"),
        "v=DKIM1",
        format!("v=DKIM1;k=rsa;p={dkim};s=email;t=s"),
        true,
    ));
    // OPS-11: no MTA-STS in self-signed mode (a policy would make senders refuse our certificate).
    if cfg.tls.mode != TlsMode::SelfSigned {
        out.push(txt(format!("_mta-sts.{fq}"), "v=STSv1", format!("v=STSv1; id={sts_id}"), true));
        out.push(rec(format!("mta-sts.{fq}"), RecordType::CNAME, fq.clone(), true, Want::Host(d.clone())));
    }
    out.push(rec(format!("www.{fq}"), RecordType::CNAME, fq.clone(), true, Want::Host(d.clone())));
    out.push(txt(fq.clone(), "v=spf1", "v=spf1 a ~all".into(), false));
    out.push(txt(format!("_dmarc.{fq}"), "v=DMARC1", "v=DMARC1;p=reject;adkim=s;aspf=s".into(), false));
    for (svc, port) in [("_submission", 587), ("_submissions", 465), ("_imap", 143), ("_imaps", 993)] {
        out.push(rec(
            format!("{svc}._tcp.{fq}"),
            RecordType::SRV,
            format!("0 1 {port} {fq}"),
            false,
            Want::Srv { port, target: d.clone() },
        ));
    }
    if cfg.tls.mode == TlsMode::Acme {
        let value = match account_uri {
            Some(uri) => format!("letsencrypt.org;accounturi={uri}"),
            None => "letsencrypt.org".to_string(),
        };
        out.push(rec(fq, RecordType::CAA, format!("0 issue \"{value}\""), false, Want::Caa(value)));
    }
    out
}

fn check(want: &Want, found: &[RData]) -> Status {
    let missing = Status::Missing(None);
    match want {
        Want::Unknown => missing,
        Want::Ip(ip) => {
            let got: Vec<IpAddr> = found
                .iter()
                .filter_map(|r| match r {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            verdict(got.contains(ip), got.iter().map(|i| i.to_string()).collect())
        }
        Want::Host(host) => {
            let got: Vec<String> = found
                .iter()
                .filter_map(|r| match r {
                    RData::MX(mx) => Some(norm(&mx.exchange.to_ascii())),
                    RData::CNAME(c) => Some(norm(&c.0.to_ascii())),
                    _ => None,
                })
                .collect();
            verdict(got.iter().any(|g| g == &norm(host)), got.iter().map(|g| format!("{g}.")).collect())
        }
        Want::Txt { prefix, text } => {
            let got: Vec<String> = found
                .iter()
                .filter_map(|r| match r {
                    RData::TXT(t) => {
                        Some(t.txt_data.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect::<String>())
                    }
                    _ => None,
                })
                .filter(|t| t.trim_start().to_ascii_lowercase().starts_with(&prefix.to_ascii_lowercase()))
                .collect();
            verdict(got.iter().any(|g| squash(g) == squash(text)), got.iter().map(|g| format!("\"{g}\"")).collect())
        }
        Want::Srv { port, target } => {
            let got: Vec<(u16, String)> = found
                .iter()
                .filter_map(|r| match r {
                    RData::SRV(s) => Some((s.port, norm(&s.target.to_ascii()))),
                    _ => None,
                })
                .collect();
            verdict(
                got.iter().any(|(p, t)| p == port && t == &norm(target)),
                got.iter().map(|(p, t)| format!("{p} {t}.")).collect(),
            )
        }
        Want::Caa(value) => {
            let got: Vec<String> = found
                .iter()
                .filter_map(|r| match r {
                    RData::CAA(c) if c.tag.eq_ignore_ascii_case("issue") => {
                        Some(String::from_utf8_lossy(&c.value).into_owned())
                    }
                    _ => None,
                })
                .collect();
            verdict(
                got.iter().any(|g| squash(g).eq_ignore_ascii_case(&squash(value))),
                got.iter().map(|g| format!("\"{g}\"")).collect(),
            )
        }
    }
}

fn verdict(ok: bool, got: Vec<String>) -> Status {
    if ok {
        Status::Ok
    } else if got.is_empty() {
        Status::Missing(None)
    } else {
        Status::Wrong(got.join(", "))
    }
}

/// The DKIM public key: base64 DER SubjectPublicKeyInfo of the signing key.
fn dkim_txt(cfg: &Config) -> Result<String, Failure> {
    use base64::Engine;
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let path = cfg.dkim.key.clone().unwrap_or_else(|| crate::outbound::dkim_key::default_path(&cfg.data_dir));
    let pem = std::fs::read_to_string(&path).map_err(|e| {
        Failure::Runtime(format!("DKIM key {}: {e} (run `chatrelay init` or `serve` first)", path.display()))
    })?;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|e| Failure::Runtime(format!("DKIM key {}: not an RSA private key: {e}", path.display())))?;
    let der = key.to_public_key().to_public_key_der().map_err(Failure::runtime)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(der.as_bytes()))
}

/// The `_mta-sts` id: the time the served policy last changed, kept in `data_dir/mta-sts.id` as
/// `<id> <sha256 of the policy>` so it is stable between runs and moves when the policy changes.
fn mta_sts_id(cfg: &Config) -> String {
    use sha2::{Digest, Sha256};
    let path = cfg.data_dir.join("mta-sts.id");
    let hash: String =
        Sha256::digest(mta_sts_policy(&cfg.mail_domain).as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some((id, h)) = text.trim().split_once(' ')
        && h == hash
        && id.len() == 12
        && id.bytes().all(|b| b.is_ascii_digit())
    {
        return id.to_string();
    }
    let id = now_id();
    if let Err(e) = std::fs::write(&path, format!("{id} {hash}\n")) {
        eprintln!("chatrelay: cannot keep the MTA-STS id in {}: {e}", path.display());
    }
    id
}

/// Current UTC time as YYYYmmddHHMM.
fn now_id() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let day = super::accounts::day(secs.div_euclid(86_400)).replace('-', "");
    let rem = secs.rem_euclid(86_400);
    format!("{day}{:02}{:02}", rem / 3600, rem % 3600 / 60)
}

/// The ACME account URI, once `serve` in acme mode created the account (CAA accounturi, OPS-9).
fn acme_account_uri(cfg: &Config) -> Option<String> {
    let uri = std::fs::read_to_string(crate::tls::acme::account_uri_path(&cfg.data_dir)).ok()?;
    let uri = uri.trim();
    (!uri.is_empty()).then(|| uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_split_and_id() {
        let long = "x".repeat(600);
        let r = txt_rdata(&long);
        assert_eq!(r.matches('"').count(), 6);
        assert!(r.split('"').all(|s| s.len() <= 255));
        let id = now_id();
        assert_eq!(id.len(), 12);
        assert!(id.starts_with("20"));
    }
}
