//! MTA-STS (RFC 8461, DLV-28..DLV-33): TXT `_mta-sts.<domain>`, the policy fetched over verified
//! HTTPS from `mta-sts.<domain>`, cached in the database, applied as enforce / testing / none.
//! chatrelay: the policy host is asked on `delivery.https_port` (443 unless a test changes it).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::rr::RData;

use super::attempt::Transport;
use super::mx::{self, MxHost};
use crate::store::{CachedPolicy, Store, now_secs};

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_POLICY: u64 = 64 * 1024;
/// RFC 8461 3.2: max_age is at most one year.
const MAX_AGE_LIMIT: i64 = 31_557_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub id: String,
    pub mode: Mode,
    pub mx: Vec<String>,
    pub max_age: i64,
}

impl Policy {
    /// RFC 8461 3.2 policy text.
    pub fn parse(text: &str, id: &str) -> Option<Self> {
        let (mut version, mut mode, mut max_age, mut mx) = (None, None, None, Vec::new());
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            match k.trim() {
                "version" => version = Some(v == "STSv1"),
                "mode" => {
                    mode = match v {
                        "enforce" => Some(Mode::Enforce),
                        "testing" => Some(Mode::Testing),
                        "none" => Some(Mode::None),
                        _ => return None,
                    }
                }
                "max_age" => max_age = v.parse::<i64>().ok().map(|a| a.clamp(0, MAX_AGE_LIMIT)),
                "mx" => mx.push(v.trim_end_matches('.').to_ascii_lowercase()),
                _ => {}
            }
        }
        if version != Some(true) {
            return None;
        }
        let mode = mode?;
        if mode != Mode::None && mx.is_empty() {
            return None;
        }
        Some(Self { id: id.to_string(), mode, mx, max_age: max_age? })
    }

    /// RFC 8461 4.1: exact match, or `*.` matching exactly one leftmost label.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => *p == host,
        })
    }
}

/// The `id` of a valid `v=STSv1; id=...` TXT record.
fn txt_id(record: &str) -> Option<String> {
    let mut parts = record.split(';').map(str::trim);
    if parts.next()? != "v=STSv1" {
        return None;
    }
    parts
        .find_map(|p| p.strip_prefix("id="))
        .map(str::to_string)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn unexpired(c: &CachedPolicy, now: i64) -> bool {
    c.fetched_at + c.max_age > now
}

/// The policy applying to `domain`, if any (DLV-28, DLV-29, DLV-32).
pub async fn policy_for(t: &Transport, store: &Store, https_port: u16, domain: &str) -> Option<Policy> {
    if domain.starts_with('_') || mx::address_literal(domain).is_some() {
        return None;
    }
    let now = now_secs();
    let cached = store.mta_sts_get(domain).await.ok().flatten();
    let from_cache = |c: &Option<CachedPolicy>| {
        c.as_ref().filter(|c| unexpired(c, now)).and_then(|c| Policy::parse(&c.policy, &c.policy_id))
    };
    let txt_name = format!("_mta-sts.{}.", domain.trim_end_matches('.'));
    let id = match t.resolver.txt_lookup(txt_name.as_str()).await {
        Ok(l) => l.answers().iter().find_map(|r| match &r.data {
            RData::TXT(txt) => {
                txt_id(&txt.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<String>())
            }
            _ => None,
        }),
        Err(_) => None,
    };
    let Some(id) = id else { return from_cache(&cached) };
    if let Some(c) = cached.as_ref().filter(|c| c.policy_id == id && unexpired(c, now)) {
        return Policy::parse(&c.policy, &c.policy_id);
    }
    match fetch(t, https_port, domain).await {
        Ok(text) => match Policy::parse(&text, &id) {
            Some(p) => {
                let row = CachedPolicy { policy_id: id, policy: text, fetched_at: now, max_age: p.max_age };
                if let Err(e) = store.mta_sts_put(domain, row).await {
                    tracing::warn!(error = %e, "mta-sts: cannot cache policy");
                }
                Some(p)
            }
            None => from_cache(&cached),
        },
        Err(e) => {
            tracing::warn!(domain = %domain, error = %e, "mta-sts: policy fetch failed");
            from_cache(&cached)
        }
    }
}

/// GET the policy with a verified certificate, no redirects, 10 s, 64 KiB (DLV-29).
async fn fetch(t: &Transport, port: u16, domain: &str) -> Result<String, String> {
    let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
    let addrs = mx::addresses(&t.resolver, &MxHost { name: host.clone(), addrs: Vec::new() }).await?;
    let head = format!("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut last = String::from("no address");
    for ip in addrs {
        let req = super::https::request(
            SocketAddr::new(ip, port),
            &host,
            t.tls.verified_https.clone(),
            head.as_bytes(),
            &[],
            MAX_POLICY,
        );
        match tokio::time::timeout(FETCH_TIMEOUT, req).await {
            Ok(Ok((200, body))) => return Ok(body),
            Ok(Ok((status, _))) => last = format!("HTTP status {status}"),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timeout".into(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parse_and_match() {
        let p = Policy::parse(
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
            "x1",
        )
        .expect("policy");
        assert_eq!(p.mode, Mode::Enforce);
        assert!(p.allows("mail.example.com") && p.allows("MAIL.example.com."));
        assert!(p.allows("mx1.example.net") && !p.allows("a.b.example.net") && !p.allows("example.net"));
        assert!(!p.allows("evil.example.com"));
        assert!(Policy::parse("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n", "x").is_none());
        assert!(Policy::parse("version: STSv1\nmode: enforce\nmax_age: 1\n", "x").is_none(), "enforce needs mx");
        assert_eq!(txt_id("v=STSv1; id=20240101T000000"), Some("20240101T000000".into()));
        assert_eq!(txt_id("v=STSv2; id=1"), None);
    }
}
