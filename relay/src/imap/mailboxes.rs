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

/// `*` matches anything, `%` anything but the delimiter.
fn glob(p: &[u8], n: &[u8]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some((b'*', rest)) => (0..=n.len()).any(|i| glob(rest, &n[i..])),
        Some((b'%', rest)) => (0..=n.len()).take_while(|&i| i == 0 || n[i - 1] != b'/').any(|i| glob(rest, &n[i..])),
        Some((c, rest)) => n.first().is_some_and(|x| x == c) && glob(rest, &n[1..]),
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
    let mut out = String::new();
    for b in &boxes {
        let name_cmp: Vec<u8> = if b.name == "INBOX" { b"INBOX".to_vec() } else { b.name.as_bytes().to_vec() };
        let pat_cmp = if full.len() >= 5 && full[..5].eq_ignore_ascii_case(b"INBOX") && b.name == "INBOX" {
            [b"INBOX".as_slice(), &full[5..]].concat()
        } else {
            full.clone()
        };
        if (lsub && !b.subscribed) || !glob(&pat_cmp, &name_cmp) {
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
