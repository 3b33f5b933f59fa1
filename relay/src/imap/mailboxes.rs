//! Mailbox management: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB, STATUS and
//! APPEND (IMAP-11, IMAP-15..17, IMAP-21, IMAP-23).

use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::status::StatusDataItemName;

use super::replies as r;
use super::session::{Reply, Session};
use super::store::flag_bits;
use crate::store::{Flags, StoreError};

/// The stored name of a mailbox argument, or None if it is not acceptable (IMAP-15).
pub fn name_of(m: &Mailbox<'_>) -> Option<String> {
    let name = match m {
        Mailbox::Inbox => return Some("INBOX".into()),
        Mailbox::Other(o) => std::str::from_utf8(o.as_ref()).ok()?,
    };
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%');
    ok.then(|| name.to_string())
}

/// A mailbox name as an IMAP quoted string.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn err_reply(e: StoreError) -> Reply {
    Reply::Done(
        match e {
            StoreError::NotFound => r::NO_MAILBOX,
            StoreError::Exists => r::NO_EXISTS,
            StoreError::Limit("keywords") => r::NO_LIMIT_KEYWORDS,
            StoreError::Limit(_) => r::NO_LIMIT_MAILBOXES,
            StoreError::OverQuota => r::OVER_QUOTA,
            _ => r::NO_TEMP,
        }
        .into(),
    )
}

fn account(s: &Session) -> i64 {
    s.account.as_ref().map(|a| a.id).unwrap_or(0)
}

pub async fn create(s: &mut Session, m: &Mailbox<'_>) -> Reply {
    // `CREATE name/` means `name` (RFC 3501 6.3.3: a trailing separator only declares intent).
    let trimmed = match m {
        Mailbox::Other(o) => std::str::from_utf8(o.as_ref()).ok().and_then(|n| n.strip_suffix('/')),
        Mailbox::Inbox => None,
    };
    let name = match trimmed {
        Some(t) => Mailbox::try_from(t).ok().and_then(|m| name_of(&m)),
        None => name_of(m),
    };
    let Some(name) = name else { return Reply::Done(r::NO_NAME.into()) };
    match s.ctx.store.create_mailbox(account(s), name).await {
        Ok(_) => Reply::Done(r::OK_CREATE.into()),
        Err(e) => err_reply(e),
    }
}

pub async fn delete(s: &mut Session, m: &Mailbox<'_>) -> Reply {
    let Some(name) = name_of(m) else { return Reply::Done(r::NO_NAME.into()) };
    if name == "INBOX" {
        return Reply::Done(r::NO_INBOX.into());
    }
    if s.sel.as_ref().is_some_and(|sel| sel.name == name) {
        s.sel = None;
    }
    match s.ctx.store.delete_mailbox(account(s), name).await {
        Ok(()) => Reply::Done(r::OK_DELETE.into()),
        Err(e) => err_reply(e),
    }
}

pub async fn rename(s: &mut Session, from: &Mailbox<'_>, to: &Mailbox<'_>) -> Reply {
    let (Some(f), Some(t)) = (name_of(from), name_of(to)) else { return Reply::Done(r::NO_NAME.into()) };
    if t == "INBOX" {
        return Reply::Done(r::NO_EXISTS.into());
    }
    match s.ctx.store.rename_mailbox(account(s), f, t).await {
        Ok(()) => Reply::Done(r::OK_RENAME.into()),
        Err(e) => err_reply(e),
    }
}

pub async fn subscribe(s: &mut Session, m: &Mailbox<'_>, on: bool) -> Reply {
    let Some(name) = name_of(m) else { return Reply::Done(r::NO_NAME.into()) };
    match s.ctx.store.set_subscribed(account(s), name, on).await {
        Ok(()) => Reply::Done(if on { r::OK_SUBSCRIBE } else { r::OK_UNSUBSCRIBE }.into()),
        Err(e) => err_reply(e),
    }
}

/// A LIST pattern in a form whose matching is linear (issue 26): runs of wildcards collapsed
/// (`*` absorbs `%`), and the count of literal octets kept to reject names too short at once.
pub struct Pattern {
    p: Vec<u8>,
    literals: usize,
}

impl Pattern {
    pub fn new(raw: &[u8]) -> Self {
        let mut p: Vec<u8> = Vec::with_capacity(raw.len());
        for &c in raw {
            match (c, p.last().copied()) {
                (b'*', Some(b'*')) | (b'%', Some(b'%' | b'*')) => {}
                (b'*', Some(b'%')) => {
                    if let Some(last) = p.last_mut() {
                        *last = b'*';
                    }
                }
                _ => p.push(c),
            }
        }
        let literals = p.iter().filter(|c| !matches!(c, b'*' | b'%')).count();
        Self { p, literals }
    }

    /// Rough cost of matching one name, for `limits::Yielder`.
    pub fn cost(&self, name: &[u8]) -> usize {
        if self.literals > name.len() { 1 } else { self.p.len() * (name.len() + 1) }
    }

    /// `*` matches anything, `%` anything but the delimiter. One pass over the pattern, keeping
    /// the set of name positions reachable so far: O(pattern × name), no backtracking.
    pub fn matches(&self, n: &[u8]) -> bool {
        if self.literals > n.len() {
            return false;
        }
        let mut reach = vec![false; n.len() + 1];
        reach[0] = true;
        for &c in &self.p {
            match c {
                b'*' => {
                    for i in 1..=n.len() {
                        reach[i] |= reach[i - 1];
                    }
                }
                b'%' => {
                    for i in 1..=n.len() {
                        reach[i] |= reach[i - 1] && n[i - 1] != b'/';
                    }
                }
                c => {
                    for i in (1..=n.len()).rev() {
                        reach[i] = reach[i - 1] && n[i - 1] == c;
                    }
                    reach[0] = false;
                }
            }
            if !reach.contains(&true) {
                return false;
            }
        }
        reach[n.len()]
    }
}

pub async fn list(s: &mut Session, reference: &Mailbox<'_>, wildcard: &ListMailbox<'_>, lsub: bool) -> Reply {
    let verb = if lsub { "LSUB" } else { "LIST" };
    let pat: Vec<u8> = match wildcard {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(st) => st.as_ref().to_vec(),
    };
    let reference = match reference {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    };
    if pat.is_empty() {
        s.untagged(&format!("* {verb} (\\Noselect) \"/\" \"\"\r\n"));
        return Reply::Done(format!("OK {verb} completed."));
    }
    let mut full = reference.into_bytes();
    full.extend_from_slice(&pat);
    let boxes = match s.ctx.store.list_mailboxes(account(s)).await {
        Ok(b) => b,
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    let plain = Pattern::new(&full);
    let inbox_pat = (full.len() >= 5 && full[..5].eq_ignore_ascii_case(b"INBOX"))
        .then(|| Pattern::new(&[b"INBOX".as_slice(), &full[5..]].concat()));
    let mut out = String::new();
    let mut work = crate::limits::Yielder::default();
    for b in &boxes {
        let pat = match &inbox_pat {
            Some(p) if b.name == "INBOX" => p,
            _ => &plain,
        };
        work.add(pat.cost(b.name.as_bytes())).await;
        if (lsub && !b.subscribed) || !pat.matches(b.name.as_bytes()) {
            continue;
        }
        let prefix = format!("{}/", b.name);
        let children = boxes.iter().any(|o| o.name.starts_with(&prefix));
        let attr = if children { "\\HasChildren" } else { "\\HasNoChildren" };
        out.push_str(&format!("* {verb} ({attr}) \"/\" {}\r\n", quote(&b.name)));
    }
    s.untagged(&out);
    Reply::Done(format!("OK {verb} completed."))
}

pub async fn status(s: &mut Session, m: &Mailbox<'_>, items: &[StatusDataItemName]) -> Reply {
    let Some(name) = name_of(m) else { return Reply::Done(r::NO_NAME.into()) };
    // One snapshot, so UIDNEXT is above every message counted (IMAP-28a).
    let (info, rows) = match s.ctx.store.snapshot(account(s), &name).await {
        Ok(Some(v)) => v,
        Ok(None) => return Reply::Done(r::NO_MAILBOX.into()),
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    let mut parts = Vec::new();
    for it in items {
        match it {
            StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", rows.len())),
            StatusDataItemName::Recent => parts.push("RECENT 0".to_string()),
            StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", info.uidnext)),
            StatusDataItemName::UidValidity => parts.push(format!("UIDVALIDITY {}", info.uidvalidity)),
            StatusDataItemName::Unseen => {
                parts.push(format!("UNSEEN {}", rows.iter().filter(|m| !m.flags.has(Flags::SEEN)).count()))
            }
            _ => {}
        }
    }
    s.untagged(&format!("* STATUS {} ({})\r\n", quote(&name), parts.join(" ")));
    Reply::Done(r::OK_STATUS.into())
}

/// APPEND: stored as given, no filter, no push (IMAP-21); quota checked (IMAP-23).
pub async fn append(
    s: &mut Session,
    m: &Mailbox<'_>,
    flags: &[Flag<'_>],
    date: Option<DateTime>,
    msg: LiteralOrLiteral8<'_>,
) -> Reply {
    let Some(name) = name_of(m) else { return Reply::Done(r::NO_NAME.into()) };
    let acc = account(s);
    let info = match s.ctx.store.mailbox(acc, &name).await {
        Ok(Some(i)) => i,
        Ok(None) => return Reply::Done(r::NO_TRYCREATE.into()),
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    let data: &[u8] = match &msg {
        LiteralOrLiteral8::Literal(l) => l.data(),
        LiteralOrLiteral8::Literal8(l) => l.data.as_ref(),
    };
    let cfg = s.ctx.config.get();
    let quota = cfg.max_mailbox_size.0;
    drop(cfg);
    let blob = match write_blob(s, data).await {
        Ok(b) => b,
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    let when = date.map(|d| d.as_ref().timestamp()).unwrap_or_else(crate::store::now_secs);
    let (bits, kws) = flag_bits(flags);
    match s.ctx.store.append(acc, info.id, blob.clone(), when, bits, kws, quota).await {
        Ok((uv, uid)) => Reply::Done(format!("OK [APPENDUID {uv} {uid}] Append completed.")),
        Err(e) => {
            s.ctx.store.discard_blob(&blob);
            err_reply(e)
        }
    }
}

/// Write the message in chunks so no second full copy of it is made in memory.
async fn write_blob(s: &Session, data: &[u8]) -> Result<crate::store::NewBlob, StoreError> {
    let mut w = s.ctx.store.new_blob().await?;
    for chunk in data.chunks(256 * 1024) {
        w.write(chunk).await?;
    }
    w.finish().await
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, n: &str) -> bool {
        Pattern::new(p.as_bytes()).matches(n.as_bytes())
    }

    #[test]
    fn wildcards() {
        assert!(m("*", "a/b"));
        assert!(m("%", "ab"));
        assert!(!m("%", "a/b"));
        assert!(m("a/%", "a/b"));
        assert!(!m("a/%", "a/b/c"));
        assert!(m("a*c", "abbbc"));
        assert!(!m("a*c", "abbbd"));
        assert!(m("%*%", "a/b"));
        assert!(m("*%/c", "a/b/c"));
        assert!(m("", ""));
        assert!(!m("x", ""));
        assert!(m("INBOX", "INBOX"));
    }

    #[test]
    fn adversarial_pattern_is_fast() {
        let name = "a".repeat(250);
        let t = std::time::Instant::now();
        assert!(!m(&format!("{}b", "*a".repeat(2000)), &name));
        assert!(!m(&format!("{}b", "*a".repeat(120)), &name));
        assert!(m(&format!("{}*", "*a".repeat(120)), &name));
        assert!(t.elapsed() < std::time::Duration::from_millis(50), "{:?}", t.elapsed());
    }
}
