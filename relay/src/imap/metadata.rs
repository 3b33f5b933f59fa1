//! GETMETADATA / SETMETADATA (RFC 5464; IMAP-34..38, PUSH-1..3). Server entries come from the
//! config; `/private/devicetoken` is the account's push-token set in the store. Replies follow
//! Dovecot's shapes exactly (IMAP-36a): every value is a literal.

use imap_codec::imap_types::core::NString8;
use imap_codec::imap_types::extensions::metadata::{Entry, EntryValue, GetMetadataOption};
use imap_codec::imap_types::mailbox::Mailbox;

use super::replies as r;
use super::session::{Reply, Session};
use crate::config::Config;

const TOKEN_ENTRY: &str = "/private/devicetoken";
const MAX_VALUE: usize = 4096;

/// "" (server) or INBOX; other mailboxes hold no metadata.
fn target(m: &Mailbox<'_>) -> Option<bool> {
    match m {
        Mailbox::Inbox => Some(false),
        Mailbox::Other(o) if o.as_ref().is_empty() => Some(true),
        Mailbox::Other(_) => None,
    }
}

/// The project's own list of current Delta Chat releases, served when `server_metadata.appversions`
/// is `"builtin"` (the default, issue 28). Kept valid by the `builtin_appversions` test.
const BUILTIN_APPVERSIONS: &str = include_str!("../../../config/appversions.json");
const BUILTIN: &str = "builtin";

/// `server_metadata.appversions`, validated (IMAP-35) and re-serialised on one line.
pub fn appversions(cfg: &Config) -> Option<String> {
    let path = cfg.server_metadata.appversions.trim();
    if path.is_empty() {
        return None;
    }
    if path == BUILTIN {
        return Some(minify(BUILTIN_APPVERSIONS));
    }
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    if validate_appversions(&v) {
        Some(minify(&text))
    } else {
        tracing::warn!("server_metadata.appversions is not a valid appversions document; not served");
        None
    }
}

/// For start-up validation of `server_metadata.appversions` (IMAP-35): Err names the problem.
pub fn check_appversions_file(path: &str) -> Result<(), String> {
    if path == BUILTIN {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{path} is not JSON: {e}"))?;
    if validate_appversions(&v) {
        Ok(())
    } else {
        Err(format!(
            "{path}: expected {{\"clients\": [{{clientId, sources: [{{sourceId, versionInteger, versionString, downloadUrl}}]}}]}}"
        ))
    }
}

/// Drop whitespace outside strings, keeping the document's key order (serde_json would sort).
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_str, mut esc) = (false, false);
    for ch in json.chars() {
        if in_str {
            out.push(ch);
            if esc {
                esc = false;
            } else if ch == '\\' {
                esc = true;
            } else if ch == '"' {
                in_str = false;
            }
        } else if ch == '"' {
            in_str = true;
            out.push(ch);
        } else if !ch.is_whitespace() {
            out.push(ch);
        }
    }
    out
}

pub fn validate_appversions(v: &serde_json::Value) -> bool {
    let Some(obj) = v.as_object() else { return false };
    if obj.len() != 1 {
        return false;
    }
    let Some(clients) = obj.get("clients").and_then(|c| c.as_array()) else { return false };
    !clients.is_empty()
        && clients.iter().all(|c| {
            c.get("clientId").is_some_and(|x| x.is_string())
                && c.get("sources").and_then(|s| s.as_array()).is_some_and(|srcs| {
                    srcs.iter().all(|s| {
                        s.get("sourceId").is_some_and(|x| x.is_string())
                            && s.get("versionInteger").is_some_and(|x| x.is_u64())
                            && s.get("versionString").is_some_and(|x| x.is_string())
                            && s.get("downloadUrl").is_some_and(|x| x.is_string())
                    })
                })
        })
}

fn server_value(cfg: &Config, entry: &str) -> Option<String> {
    let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    match entry {
        "/shared/vendor/deltachat/irohrelay" => nonempty(&cfg.server_metadata.iroh_relay),
        "/shared/vendor/deltachat/turn" => nonempty(&cfg.server_metadata.turn),
        "/shared/vendor/deltachat/maxsmtprecipients" => Some(cfg.max_smtp_recipients.to_string()),
        "/shared/admin" => nonempty(&cfg.privacy.mail).map(|m| format!("mailto:{m}")),
        "/shared/vendor/deltachat/appversions" => appversions(cfg),
        _ => None,
    }
}

/// The embedded TURN server and iroh relay (issue 28), when no external value is configured:
/// TURN credentials are fresh per request.
fn embedded_value(ctx: &crate::context::Ctx, cfg: &Config, entry: &str) -> Option<String> {
    match entry {
        "/shared/vendor/deltachat/turn" => crate::turn::metadata_value(ctx, cfg),
        "/shared/vendor/deltachat/irohrelay" => crate::iroh::metadata_value(cfg),
        _ => None,
    }
}

pub async fn get(s: &mut Session, options: &[GetMetadataOption], m: &Mailbox<'_>, entries: &[Entry<'_>]) -> Reply {
    let Some(server) = target(m) else { return Reply::Done(r::GETMETADATA_OK.into()) };
    let Some(acc) = s.account.as_ref().map(|a| a.id) else { return Reply::Done(r::BAD_STATE_AUTH.into()) };
    let maxsize = options.iter().find_map(|o| match o {
        GetMetadataOption::MaxSize(n) => Some(*n as usize),
        _ => None,
    });
    let cfg = s.ctx.config.get();
    let mut values: Vec<(String, String)> = Vec::new();
    for e in entries {
        let name = String::from_utf8_lossy(e.as_ref()).to_ascii_lowercase();
        let v = if name == TOKEN_ENTRY {
            match s.ctx.store.push_tokens(acc).await {
                Ok(t) if !t.is_empty() => Some(t.join(" ")),
                _ => None,
            }
        } else if server {
            server_value(&cfg, &name).or_else(|| embedded_value(&s.ctx, &cfg, &name))
        } else {
            None
        };
        if let Some(v) = v {
            values.push((name, v));
        }
    }
    drop(cfg);
    let mut longest_skipped = 0;
    if let Some(max) = maxsize {
        values.retain(|(_, v)| {
            let keep = v.len() <= max;
            if !keep {
                longest_skipped = longest_skipped.max(v.len());
            }
            keep
        });
    }
    if !values.is_empty() {
        let mbox = if server { "\"\"" } else { "INBOX" };
        let mut line = format!("* METADATA {mbox} (");
        for (i, (k, v)) in values.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(&format!("{k} {{{}}}\r\n{v}", v.len()));
        }
        line.push_str(")\r\n");
        s.untagged(&line);
    }
    if longest_skipped > 0 {
        return Reply::Done(format!("OK [METADATA LONGENTRIES {longest_skipped}] Getmetadata completed."));
    }
    Reply::Done(r::GETMETADATA_OK.into())
}

fn value_bytes<'a>(v: &'a NString8<'_>) -> Option<&'a [u8]> {
    match v {
        NString8::NString(n) => n.0.as_ref().map(|s| s.as_ref()),
        NString8::Literal8(l) => Some(l.data.as_ref()),
    }
}

pub async fn set(s: &mut Session, m: &Mailbox<'_>, values: &[EntryValue<'_>]) -> Reply {
    let Some(acc) = s.account.as_ref().map(|a| a.id) else { return Reply::Done(r::BAD_STATE_AUTH.into()) };
    if target(m).is_none() {
        return Reply::Done(r::META_PERMISSION.into());
    }
    // Check everything first so a rejected entry changes nothing.
    for ev in values {
        let name = String::from_utf8_lossy(ev.entry.as_ref()).to_ascii_lowercase();
        let val = value_bytes(&ev.value);
        if name != TOKEN_ENTRY {
            return Reply::Done(
                if name.starts_with("/private/") { r::META_NOPRIVATE } else { r::META_PERMISSION }.into(),
            );
        }
        if let Some(v) = val {
            if v.len() > MAX_VALUE {
                return Reply::Done(r::META_MAXSIZE.into());
            }
            if v.is_empty() || !v.iter().all(|c| (0x21..0x7f).contains(c)) {
                return Reply::Done(r::META_BAD_TOKEN.into());
            }
        }
    }
    for ev in values {
        let res = match value_bytes(&ev.value) {
            None => s.ctx.store.clear_push_tokens(acc).await,
            Some(v) => s.ctx.store.add_push_token(acc, String::from_utf8_lossy(v).into_owned()).await,
        };
        if res.is_err() {
            return Reply::Done(r::NO_TEMP.into());
        }
    }
    Reply::Done(r::SETMETADATA_OK.into())
}

/// A SETMETADATA/GETMETADATA line with the blanks Dovecot tolerates inside the entry list
/// (`(/private/devicetoken "x" )`, `( /shared/admin)`) removed, for a second parse; None when
/// the command is another one or there is nothing to remove. Quoted strings and literals are
/// copied untouched. The reference relay's own tests send such a line.
pub fn lenient(buf: &[u8]) -> Option<Vec<u8>> {
    let first_line = buf.split(|b| *b == b'\n').next().unwrap_or_default();
    let word = first_line.split(|b| *b == b' ').nth(1).unwrap_or_default();
    if !word.eq_ignore_ascii_case(b"SETMETADATA") && !word.eq_ignore_ascii_case(b"GETMETADATA") {
        return None;
    }
    let mut out = Vec::with_capacity(buf.len());
    let mut i = 0;
    let mut changed = false;
    while i < buf.len() {
        let c = buf[i];
        match c {
            b'"' => {
                // A quoted string up to its closing quote, backslash escapes included.
                let mut j = i + 1;
                while j < buf.len() && buf[j] != b'"' {
                    j += if buf[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(buf.len());
                out.extend_from_slice(&buf[i..end]);
                i = end;
            }
            b'{' => {
                // `{n}` / `{n+}` CRLF and n bytes, verbatim.
                let close = buf[i..].iter().position(|b| *b == b'}').map(|p| i + p);
                let n = close.and_then(|e| {
                    let digits = buf[i + 1..e].strip_suffix(b"+").unwrap_or(&buf[i + 1..e]);
                    std::str::from_utf8(digits).ok()?.parse::<usize>().ok()
                });
                match (close, n) {
                    (Some(e), Some(n)) if buf[e + 1..].starts_with(b"\r\n") => {
                        let end = (e + 3).saturating_add(n).min(buf.len());
                        out.extend_from_slice(&buf[i..end]);
                        i = end;
                    }
                    _ => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            b' ' if matches!(out.last(), Some(b'(')) || buf[i..].iter().find(|b| **b != b' ') == Some(&b')') => {
                changed = true;
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_blanks_in_entry_lists() {
        let fixed = lenient(b"a SETMETADATA INBOX (/private/devicetoken \"x )\" )\r\n").expect("changed");
        assert_eq!(fixed, b"a SETMETADATA INBOX (/private/devicetoken \"x )\")\r\n");
        let fixed = lenient(b"a setmetadata INBOX ( /private/devicetoken {3}\r\n ) )\r\n").expect("changed");
        assert_eq!(fixed, b"a setmetadata INBOX (/private/devicetoken {3}\r\n ) )\r\n");
        assert!(lenient(b"a SETMETADATA INBOX (/private/devicetoken \"x\")\r\n").is_none());
        assert!(lenient(b"a SELECT ( INBOX )\r\n").is_none());
    }

    #[test]
    fn appversions_shape_and_minify() {
        let ok = r#"{ "clients": [ { "clientId": "a b", "sources": [ { "sourceId": "s", "versionInteger": 1,
            "versionString": "1.0", "downloadUrl": "https://x/ \" y" } ] } ] }"#;
        let v: serde_json::Value = serde_json::from_str(ok).expect("json");
        assert!(validate_appversions(&v));
        assert_eq!(
            minify(ok),
            r#"{"clients":[{"clientId":"a b","sources":[{"sourceId":"s","versionInteger":1,"versionString":"1.0","downloadUrl":"https://x/ \" y"}]}]}"#
        );
        for bad in [r#"{"clients": []}"#, r#"{"clients": [{"clientId": "a"}]}"#, r#"{"clients": [], "x": 1}"#, "[]"] {
            let v: serde_json::Value = serde_json::from_str(bad).expect("json");
            assert!(!validate_appversions(&v), "{bad}");
        }
    }

    /// The compiled-in list passes what Delta Chat's core parses strictly (the reference relay's
    /// online test checks the same): exact key sets, non-empty strings, versionInteger a u32,
    /// unique ids, download links on Delta Chat's own hosts.
    #[test]
    fn builtin_appversions() {
        let v: serde_json::Value = serde_json::from_str(BUILTIN_APPVERSIONS).expect("json");
        assert!(validate_appversions(&v));
        let keys = |o: &serde_json::Value| {
            let mut k: Vec<String> = o.as_object().expect("object").keys().cloned().collect();
            k.sort();
            k
        };
        let nonempty = |x: &serde_json::Value| x.as_str().is_some_and(|s| !s.is_empty());
        let mut client_ids = std::collections::HashSet::new();
        for c in v["clients"].as_array().expect("clients") {
            assert_eq!(keys(c), ["clientId", "sources"]);
            assert!(nonempty(&c["clientId"]) && client_ids.insert(c["clientId"].to_string()));
            let mut source_ids = std::collections::HashSet::new();
            let sources = c["sources"].as_array().expect("sources");
            assert!(!sources.is_empty());
            for src in sources {
                assert_eq!(keys(src), ["downloadUrl", "sourceId", "versionInteger", "versionString"]);
                assert!(nonempty(&src["sourceId"]) && source_ids.insert(src["sourceId"].to_string()));
                assert!(src["versionInteger"].as_u64().is_some_and(|n| n < 1 << 32));
                assert!(nonempty(&src["versionString"]));
                let url = src["downloadUrl"].as_str().expect("url");
                assert!(
                    url.starts_with("https://github.com/deltachat/") || url.starts_with("https://download.delta.chat/")
                );
            }
        }
        let cfg = Config::default();
        assert_eq!(appversions(&cfg).as_deref(), Some(minify(BUILTIN_APPVERSIONS).as_str()));
        assert!(!appversions(&cfg).expect("served").contains('\n'));
        assert_eq!(check_appversions_file("builtin"), Ok(()));
    }
}
