//! `chatrelay init --from-chatmail-ini FILE` (OPS-2): turn a chatmail/relay `chatmail.ini`
//! `[params]` section into our commented config template with the values filled in.
//!
//! Same-named keys carry over; day counts become durations (`20` → `"20d"`);
//! `tls_external_cert_and_key` becomes `tls.mode = "files"` with `cert`/`key`; `privacy_*` go to
//! `[privacy]`; `iroh_relay` to `[server_metadata]`. Keys with no counterpart are returned so the
//! caller lists them on stderr. The result is validated by the caller with the real loader.

use std::collections::BTreeMap;

/// How a chatmail.ini value is written in TOML.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    /// A size: a plain number stays a number, `500M` becomes a string.
    Size,
    /// chatmail.ini counts days; we write `"<n>d"`.
    Days,
    Str,
}

/// chatmail.ini key → (our table, our key, kind). `""` is the top level.
const MAP: &[(&str, &str, &str, Kind)] = &[
    ("mail_domain", "", "mail_domain", Kind::Str),
    ("max_user_send_per_minute", "", "max_user_send_per_minute", Kind::Int),
    ("max_user_send_burst_size", "", "max_user_send_burst_size", Kind::Int),
    ("max_mailbox_size", "", "max_mailbox_size", Kind::Size),
    ("max_message_size", "", "max_message_size", Kind::Size),
    ("delete_mails_after", "", "delete_mails_after", Kind::Days),
    ("delete_large_after", "", "delete_large_after", Kind::Days),
    ("delete_inactive_users_after", "", "delete_inactive_users_after", Kind::Days),
    ("username_min_length", "", "username_min_length", Kind::Int),
    ("username_max_length", "", "username_max_length", Kind::Int),
    ("password_min_length", "", "password_min_length", Kind::Int),
    ("max_smtp_recipients", "", "max_smtp_recipients", Kind::Int),
    ("acme_email", "tls", "acme_email", Kind::Str),
    ("iroh_relay", "server_metadata", "iroh_relay", Kind::Str),
    ("privacy_postal", "privacy", "postal", Kind::Str),
    ("privacy_mail", "privacy", "mail", Kind::Str),
    ("privacy_pdo", "privacy", "pdo", Kind::Str),
    ("privacy_supervisor", "privacy", "supervisor", Kind::Str),
];

#[derive(Debug, thiserror::Error)]
pub enum IniError {
    #[error("{0}: line {1}: expected `key = value`")]
    Syntax(String, usize),
    #[error("{0}: no [params] section")]
    NoParams(String),
    #[error("{0}: [params] has no mail_domain")]
    NoDomain(String),
    #[error("{0}: {1} = {2:?}: {3}")]
    Value(String, String, String, &'static str),
}

/// The converted config text and the chatmail.ini keys that have no counterpart.
pub struct Converted {
    pub toml: String,
    pub unmapped: Vec<String>,
}

/// The `[params]` key/value pairs of an ini text (`#`/`;` comments, last value wins).
fn params(text: &str, origin: &str) -> Result<BTreeMap<String, String>, IniError> {
    let mut section = String::new();
    let mut seen = false;
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            seen |= section == "params";
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(IniError::Syntax(origin.to_string(), i + 1));
        };
        if section == "params" {
            out.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    if !seen {
        return Err(IniError::NoParams(origin.to_string()));
    }
    Ok(out)
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn value(origin: &str, key: &str, v: &str, kind: Kind) -> Result<String, IniError> {
    let bad = |why| IniError::Value(origin.to_string(), key.to_string(), v.to_string(), why);
    Ok(match kind {
        Kind::Str => toml_str(v),
        Kind::Int => v.parse::<u64>().map_err(|_| bad("expected a whole number"))?.to_string(),
        Kind::Size if v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty() => v.to_string(),
        Kind::Size => {
            crate::config::units::parse_size(v).map_err(|_| bad("expected a size like 500M"))?;
            toml_str(v)
        }
        Kind::Days if v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty() => toml_str(&format!("{v}d")),
        Kind::Days => {
            crate::config::units::parse_duration(v).map_err(|_| bad("expected a number of days"))?;
            toml_str(v)
        }
    })
}

/// Replace the value of `key` in `table` of the template, keeping its comment. Returns whether the
/// key was found.
fn set(text: &mut String, table: &str, key: &str, val: &str) -> bool {
    let mut current = String::new();
    let mut out = String::with_capacity(text.len() + 64);
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('[') {
            current = t.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string();
        }
        let is_key = t.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='));
        // A commented-out `# key = ...` line is also a slot (dkim.key in the template).
        let commented = t
            .strip_prefix("# ")
            .and_then(|r| r.strip_prefix(key))
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if !done && current == table && (is_key || commented) {
            let comment = if is_key { line.find(" #").map(|i| &line[i..]).unwrap_or("\n") } else { "\n" };
            let assign = format!("{key} = {val}");
            let pad = if comment.starts_with(" #") { 35usize.saturating_sub(assign.len()).max(1) - 1 } else { 0 };
            out.push_str(&assign);
            out.push_str(&" ".repeat(pad));
            out.push_str(if comment.ends_with('\n') { comment } else { "\n" });
            done = true;
        } else {
            out.push_str(line);
        }
    }
    *text = out;
    done
}

/// Convert `ini` (the text of a chatmail.ini) onto `template`.
pub fn convert(ini: &str, origin: &str, template: &str) -> Result<Converted, IniError> {
    let params = params(ini, origin)?;
    if params.get("mail_domain").is_none_or(|d| d.is_empty()) {
        return Err(IniError::NoDomain(origin.to_string()));
    }
    let mut toml = template.to_string();
    let mut unmapped = Vec::new();
    for (k, v) in &params {
        if let Some((_, table, key, kind)) = MAP.iter().find(|m| m.0 == k) {
            let val = value(origin, k, v, *kind)?;
            set(&mut toml, table, key, &val);
            continue;
        }
        match k.as_str() {
            "tls_cert" => {
                let mode = match v.to_lowercase().as_str() {
                    "acme" | "" => "acme",
                    "self" => "self-signed",
                    _ => {
                        return Err(IniError::Value(
                            origin.into(),
                            k.clone(),
                            v.clone(),
                            "expected \"acme\" or \"self\"",
                        ));
                    }
                };
                // tls_external_cert_and_key wins when both are given (chatmail/relay does the same).
                if !params.contains_key("tls_external_cert_and_key") {
                    set(&mut toml, "tls", "mode", &toml_str(mode));
                }
            }
            "tls_external_cert_and_key" => {
                let parts: Vec<&str> = v.split_whitespace().collect();
                let [cert, key] = parts[..] else {
                    return Err(IniError::Value(origin.into(), k.clone(), v.clone(), "expected `CERT_PATH KEY_PATH`"));
                };
                set(&mut toml, "tls", "mode", &toml_str("files"));
                set(&mut toml, "tls", "cert", &toml_str(cert));
                set(&mut toml, "tls", "key", &toml_str(key));
            }
            "disable_ipv6" => match v.to_lowercase().as_str() {
                "true" | "yes" | "1" => toml = toml.replace("\"[::]:", "\"0.0.0.0:"),
                _ => {}
            },
            // An empty optional setting means "not set" in chatmail.ini: nothing to carry over.
            _ if v.is_empty() => {}
            _ => unmapped.push(k.clone()),
        }
    }
    Ok(Converted { toml, unmapped })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../../config/chatrelay.toml");

    #[test]
    fn converts_and_keeps_comments() {
        let ini = "[params]\nmail_domain = c.example\ndelete_mails_after = 40\nmax_mailbox_size = 1G\n\
                   tls_external_cert_and_key = /a/cert.pem /b/key.pem\nprivacy_mail = p@c.example\nimap_rawlog = false\n";
        let c = convert(ini, "x.ini", TEMPLATE).expect("convert");
        assert!(c.toml.contains("mail_domain = \"c.example\""), "{}", c.toml);
        assert!(c.toml.contains("delete_mails_after = \"40d\""));
        assert!(c.toml.contains("max_mailbox_size = \"1G\""));
        assert!(c.toml.contains("mode = \"files\""));
        assert!(c.toml.contains("cert = \"/a/cert.pem\""));
        assert!(c.toml.contains("mail = \"p@c.example\""));
        assert!(c.toml.contains("# any message older than this"));
        assert_eq!(c.unmapped, vec!["imap_rawlog".to_string()]);
        let cfg = crate::config::load_str(&c.toml, "t").expect("valid");
        assert_eq!(cfg.delete_mails_after.get().as_secs(), 40 * 86_400);
        assert_eq!(cfg.privacy.mail, "p@c.example");
    }

    #[test]
    fn bad_values_are_named() {
        let e = convert("[params]\nmail_domain = c.example\nusername_min_length = nine\n", "x.ini", TEMPLATE)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("username_min_length")));
        assert!(convert("mail_domain = x\n", "x.ini", TEMPLATE).is_err());
    }
}
