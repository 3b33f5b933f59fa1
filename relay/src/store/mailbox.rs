//! Mailboxes and message rows: the primitives every path shares (insert with the next UID,
//! remove with expunge records and usage accounting) plus the queries IMAP needs.

use rusqlite::{Connection, OptionalExtension, params};

use super::accounts::AccountId;
use super::blobs::BlobId;
use super::events::{MailboxEvent, StoreEvent};
use super::writer::Tx;
use super::{Result, Store, StoreError};

pub type MailboxId = i64;

/// System flags as a bitmask; keywords are stored beside it as text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(pub u32);

impl Flags {
    pub const SEEN: u32 = 1;
    pub const ANSWERED: u32 = 2;
    pub const FLAGGED: u32 = 4;
    pub const DELETED: u32 = 8;
    pub const DRAFT: u32 = 16;

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

#[derive(Debug, Clone)]
pub struct MailboxInfo {
    pub id: MailboxId,
    pub account: AccountId,
    pub name: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: i64,
    pub subscribed: bool,
}

#[derive(Debug, Clone)]
pub struct MessageMeta {
    pub uid: u32,
    pub blob: BlobId,
    pub size: u64,
    pub internal_date: i64,
    pub flags: Flags,
    pub keywords: String,
    pub modseq: i64,
}

const MBOX_COLS: &str = "id, account_id, name, uidvalidity, uidnext, highestmodseq, subscribed";

fn row_to_mailbox(r: &rusqlite::Row<'_>) -> rusqlite::Result<MailboxInfo> {
    Ok(MailboxInfo {
        id: r.get(0)?,
        account: r.get(1)?,
        name: r.get(2)?,
        uidvalidity: r.get::<_, i64>(3)? as u32,
        uidnext: r.get::<_, i64>(4)? as u32,
        highestmodseq: r.get(5)?,
        subscribed: r.get::<_, i64>(6)? != 0,
    })
}

const MSG_COLS: &str = "uid, blob, size, internal_date, flags, keywords, modseq";

pub(crate) fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageMeta> {
    Ok(MessageMeta {
        uid: r.get::<_, i64>(0)? as u32,
        blob: BlobId(r.get(1)?),
        size: r.get::<_, i64>(2)?.max(0) as u64,
        internal_date: r.get(3)?,
        flags: Flags(r.get::<_, i64>(4)? as u32),
        keywords: r.get(5)?,
        modseq: r.get(6)?,
    })
}

pub(crate) fn mailbox_by_name(c: &Connection, account: AccountId, name: &str) -> Result<Option<MailboxInfo>> {
    let mut st = c.prepare_cached(&format!("SELECT {MBOX_COLS} FROM mailboxes WHERE account_id = ?1 AND name = ?2"))?;
    Ok(st.query_row(params![account, name], row_to_mailbox).optional()?)
}

pub(crate) fn mailbox_by_id(c: &Connection, id: MailboxId) -> Result<Option<MailboxInfo>> {
    let mut st = c.prepare_cached(&format!("SELECT {MBOX_COLS} FROM mailboxes WHERE id = ?1"))?;
    Ok(st.query_row([id], row_to_mailbox).optional()?)
}

/// The account's INBOX, created if a legacy or imported account lacks one.
pub(crate) fn inbox_id(tx: &Tx<'_>, account: AccountId) -> Result<MailboxId> {
    if let Some(m) = mailbox_by_name(tx, account, "INBOX")? {
        return Ok(m.id);
    }
    let uv = super::accounts::next_uidvalidity(tx)?;
    tx.execute("INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES(?1, 'INBOX', ?2)", params![account, uv])?;
    Ok(tx.last_insert_rowid())
}

/// Insert one message row with the next UID; updates usage; publishes nothing (callers decide).
pub(crate) fn insert_message(
    tx: &Tx<'_>,
    mailbox: MailboxId,
    blob: &BlobId,
    size: u64,
    internal_date: i64,
    flags: Flags,
    keywords: &str,
) -> Result<u32> {
    let (uid, modseq): (i64, i64) = tx
        .prepare_cached(
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 WHERE id = ?1
             RETURNING uidnext - 1, highestmodseq",
        )?
        .query_row([mailbox], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    tx.prepare_cached(
        "INSERT INTO messages(mailbox_id, uid, blob, size, internal_date, flags, keywords, modseq)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![mailbox, uid, blob.0, size as i64, internal_date, flags.0 as i64, keywords, modseq])?;
    tx.prepare_cached(
        "UPDATE accounts SET usage_bytes = usage_bytes + ?2 WHERE id = (SELECT account_id FROM mailboxes WHERE id = ?1)",
    )?
    .execute(params![mailbox, size as i64])?;
    Ok(uid as u32)
}

/// Remove messages by UID: rows deleted, expunge records written, usage reduced, files released
/// after commit, sessions told. Returns the UIDs actually removed.
pub(crate) fn remove_messages(tx: &mut Tx<'_>, account: AccountId, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let modseq: i64 = tx.query_row(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?1 RETURNING highestmodseq",
        [mailbox],
        |r| r.get(0),
    )?;
    let mut removed = Vec::with_capacity(uids.len());
    let mut freed: i64 = 0;
    let mut released = Vec::new();
    {
        let mut del = tx.prepare_cached("DELETE FROM messages WHERE mailbox_id = ?1 AND uid = ?2 RETURNING blob, size")?;
        let mut rec = tx.prepare_cached("INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES(?1, ?2, ?3)")?;
        for &uid in uids {
            let row: Option<(String, i64)> =
                del.query_row(params![mailbox, uid], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
            if let Some((blob, size)) = row {
                rec.execute(params![mailbox, uid, modseq])?;
                freed += size;
                removed.push(uid);
                released.push(BlobId(blob));
            }
        }
    }
    tx.execute("UPDATE accounts SET usage_bytes = max(0, usage_bytes - ?2) WHERE id = ?1", params![account, freed])?;
    for b in released {
        tx.release_blob(b);
    }
    if !removed.is_empty() {
        tx.publish(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox } });
    }
    Ok(removed)
}

impl Store {
    pub async fn mailbox(&self, account: AccountId, name: &str) -> Result<Option<MailboxInfo>> {
        let name = name.to_string();
        self.read(move |c| mailbox_by_name(c, account, &name)).await
    }

    pub async fn mailbox_by_id(&self, id: MailboxId) -> Result<Option<MailboxInfo>> {
        self.read(move |c| mailbox_by_id(c, id)).await
    }

    pub async fn list_mailboxes(&self, account: AccountId) -> Result<Vec<MailboxInfo>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!("SELECT {MBOX_COLS} FROM mailboxes WHERE account_id = ?1 ORDER BY name"))?;
            let rows = st.query_map([account], row_to_mailbox)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// All messages of a mailbox in UID order (the session's view on SELECT).
    pub async fn messages(&self, mailbox: MailboxId) -> Result<Vec<MessageMeta>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = ?1 ORDER BY uid"))?;
            let rows = st.query_map([mailbox], row_to_message)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Messages added or changed after `modseq`, and UIDs expunged after it (session catch-up).
    pub async fn changes_since(&self, mailbox: MailboxId, modseq: i64) -> Result<(Vec<MessageMeta>, Vec<u32>, i64)> {
        self.read(move |c| {
            let highest: i64 = c
                .prepare_cached("SELECT highestmodseq FROM mailboxes WHERE id = ?1")?
                .query_row([mailbox], |r| r.get(0))
                .optional()?
                .ok_or(StoreError::NotFound)?;
            let mut st = c.prepare_cached(&format!(
                "SELECT {MSG_COLS} FROM messages WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid"
            ))?;
            let changed = st.query_map(params![mailbox, modseq], row_to_message)?.collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare_cached("SELECT uid FROM expunged WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY uid")?;
            let gone = st
                .query_map(params![mailbox, modseq], |r| r.get::<_, i64>(0).map(|u| u as u32))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((changed, gone, highest))
        })
        .await
    }

    /// Expunge the given UIDs of a mailbox (IMAP EXPUNGE/CLOSE/MOVE, retention).
    pub async fn expunge(&self, account: AccountId, mailbox: MailboxId, uids: Vec<u32>) -> Result<Vec<u32>> {
        self.write(move |tx| remove_messages(tx, account, mailbox, &uids)).await
    }
}

/// How STORE combines the given flags with the stored ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Replace,
    Add,
    Remove,
}

/// At most this many mailboxes per account and keywords per mailbox (IMAP-15, IMAP-19).
pub const MAX_MAILBOXES: i64 = 100;
pub const MAX_KEYWORDS: usize = 50;

fn merge_keywords(old: &str, op: FlagOp, kws: &[String]) -> String {
    let mut set: Vec<&str> = match op {
        FlagOp::Replace => Vec::new(),
        _ => old.split(' ').filter(|k| !k.is_empty()).collect(),
    };
    match op {
        FlagOp::Remove => set.retain(|k| !kws.iter().any(|x| x.eq_ignore_ascii_case(k))),
        _ => {
            for k in kws {
                if !set.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    set.push(k);
                }
            }
        }
    }
    set.join(" ")
}

fn keywords_in_use(c: &Connection, mailbox: MailboxId) -> Result<Vec<String>> {
    let mut st = c.prepare_cached("SELECT DISTINCT keywords FROM messages WHERE mailbox_id = ?1 AND keywords != ''")?;
    let mut all: Vec<String> = Vec::new();
    for row in st.query_map([mailbox], |r| r.get::<_, String>(0))? {
        for k in row?.split(' ').filter(|k| !k.is_empty()) {
            if !all.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                all.push(k.to_string());
            }
        }
    }
    Ok(all)
}

fn check_keyword_limit(c: &Connection, mailbox: MailboxId, new: &[String]) -> Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let mut all = keywords_in_use(c, mailbox)?;
    for k in new {
        if !all.iter().any(|x| x.eq_ignore_ascii_case(k)) {
            all.push(k.clone());
        }
    }
    if all.len() > MAX_KEYWORDS { Err(StoreError::Limit("keywords")) } else { Ok(()) }
}

fn usage_of(c: &Connection, account: AccountId) -> Result<u64> {
    let u: i64 = c
        .prepare_cached("SELECT usage_bytes FROM accounts WHERE id = ?1")?
        .query_row([account], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    Ok(u.max(0) as u64)
}

fn owned_mailbox(c: &Connection, account: AccountId, mailbox: MailboxId) -> Result<MailboxInfo> {
    mailbox_by_id(c, mailbox)?.filter(|m| m.account == account).ok_or(StoreError::NotFound)
}

/// Copy rows to `dst` with new UIDs (same blob, flags, keywords, date). Returns (old, new) pairs.
fn copy_rows(tx: &Tx<'_>, src: MailboxId, uids: &[u32], dst: MailboxId) -> Result<Vec<(u32, u32)>> {
    let mut out = Vec::with_capacity(uids.len());
    for &uid in uids {
        let row = tx
            .prepare_cached(&format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = ?1 AND uid = ?2"))?
            .query_row(params![src, uid], row_to_message)
            .optional()?;
        if let Some(m) = row {
            let new = insert_message(tx, dst, &m.blob, m.size, m.internal_date, m.flags, &m.keywords)?;
            out.push((uid, new));
        }
    }
    Ok(out)
}

impl Store {
    /// CREATE (IMAP-15, IMAP-16): a fresh UIDVALIDITY larger than any before.
    pub async fn create_mailbox(&self, account: AccountId, name: String) -> Result<MailboxInfo> {
        self.write(move |tx| {
            if mailbox_by_name(tx, account, &name)?.is_some() {
                return Err(StoreError::Exists);
            }
            let n: i64 = tx.query_row("SELECT count(*) FROM mailboxes WHERE account_id = ?1", [account], |r| r.get(0))?;
            if n >= MAX_MAILBOXES {
                return Err(StoreError::Limit("mailboxes"));
            }
            let uv = super::accounts::next_uidvalidity(tx)?;
            tx.execute("INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES(?1, ?2, ?3)", params![account, name, uv])?;
            let m = mailbox_by_id(tx, tx.last_insert_rowid())?.ok_or(StoreError::NotFound)?;
            tx.publish(StoreEvent::Mailbox { account, event: MailboxEvent::MailboxesChanged });
            Ok(m)
        })
        .await
    }

    /// DELETE: messages removed (files released, usage reduced), then the mailbox row.
    pub async fn delete_mailbox(&self, account: AccountId, name: String) -> Result<()> {
        self.write(move |tx| {
            let m = mailbox_by_name(tx, account, &name)?.ok_or(StoreError::NotFound)?;
            let uids: Vec<u32> = {
                let mut st = tx.prepare_cached("SELECT uid FROM messages WHERE mailbox_id = ?1")?;
                st.query_map([m.id], |r| r.get::<_, i64>(0).map(|u| u as u32))?.collect::<rusqlite::Result<_>>()?
            };
            remove_messages(tx, account, m.id, &uids)?;
            tx.execute("DELETE FROM expunged WHERE mailbox_id = ?1", [m.id])?;
            tx.execute("DELETE FROM mailboxes WHERE id = ?1", [m.id])?;
            tx.publish(StoreEvent::Mailbox { account, event: MailboxEvent::MailboxesChanged });
            Ok(())
        })
        .await
    }

    /// RENAME. Renaming INBOX moves its messages into a new mailbox (RFC 3501 6.3.5); children
    /// `from/...` follow their parent.
    pub async fn rename_mailbox(&self, account: AccountId, from: String, to: String) -> Result<()> {
        self.write(move |tx| {
            let src = mailbox_by_name(tx, account, &from)?.ok_or(StoreError::NotFound)?;
            if mailbox_by_name(tx, account, &to)?.is_some() {
                return Err(StoreError::Exists);
            }
            if from == "INBOX" {
                let uv = super::accounts::next_uidvalidity(tx)?;
                tx.execute("INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES(?1, ?2, ?3)", params![account, to, uv])?;
                let dst = tx.last_insert_rowid();
                let uids: Vec<u32> = {
                    let mut st = tx.prepare_cached("SELECT uid FROM messages WHERE mailbox_id = ?1 ORDER BY uid")?;
                    st.query_map([src.id], |r| r.get::<_, i64>(0).map(|u| u as u32))?.collect::<rusqlite::Result<_>>()?
                };
                copy_rows(tx, src.id, &uids, dst)?;
                remove_messages(tx, account, src.id, &uids)?;
            } else {
                tx.execute("UPDATE mailboxes SET name = ?3 WHERE account_id = ?1 AND name = ?2", params![account, from, to])?;
                tx.execute(
                    "UPDATE mailboxes SET name = ?3 || substr(name, length(?2) + 1)
                     WHERE account_id = ?1 AND substr(name, 1, length(?2) + 1) = ?2 || '/'",
                    params![account, from, to],
                )?;
            }
            tx.publish(StoreEvent::Mailbox { account, event: MailboxEvent::MailboxesChanged });
            Ok(())
        })
        .await
    }

    pub async fn set_subscribed(&self, account: AccountId, name: String, on: bool) -> Result<()> {
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE mailboxes SET subscribed = ?3 WHERE account_id = ?1 AND name = ?2",
                params![account, name, on as i64],
            )?;
            if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
        })
        .await
    }

    /// STORE: change flags of `uids` with one modseq bump; returns the rows that changed.
    pub async fn store_flags(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: Vec<u32>,
        op: FlagOp,
        flags: u32,
        keywords: Vec<String>,
    ) -> Result<Vec<MessageMeta>> {
        self.write(move |tx| {
            owned_mailbox(tx, account, mailbox)?;
            if op != FlagOp::Remove {
                check_keyword_limit(tx, mailbox, &keywords)?;
            }
            let modseq: i64 = tx.query_row(
                "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?1 RETURNING highestmodseq",
                [mailbox],
                |r| r.get(0),
            )?;
            let mut changed = Vec::new();
            for uid in uids {
                let row = tx
                    .prepare_cached(&format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = ?1 AND uid = ?2"))?
                    .query_row(params![mailbox, uid], row_to_message)
                    .optional()?;
                let Some(mut m) = row else { continue };
                let nf = match op {
                    FlagOp::Replace => flags,
                    FlagOp::Add => m.flags.0 | flags,
                    FlagOp::Remove => m.flags.0 & !flags,
                };
                let nk = merge_keywords(&m.keywords, op, &keywords);
                if nf == m.flags.0 && nk == m.keywords {
                    continue;
                }
                tx.prepare_cached("UPDATE messages SET flags = ?3, keywords = ?4, modseq = ?5 WHERE mailbox_id = ?1 AND uid = ?2")?
                    .execute(params![mailbox, uid, nf as i64, nk, modseq])?;
                m.flags = Flags(nf);
                m.keywords = nk;
                m.modseq = modseq;
                changed.push(m);
            }
            if !changed.is_empty() {
                tx.publish(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox } });
            }
            Ok(changed)
        })
        .await
    }

    /// APPEND (IMAP-21, IMAP-23): no filter, no push; `max_usage` is the account quota in bytes.
    /// Returns (uidvalidity, uid).
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        blob: BlobId,
        size: u64,
        internal_date: i64,
        flags: u32,
        keywords: Vec<String>,
        max_usage: u64,
    ) -> Result<(u32, u32)> {
        self.write(move |tx| {
            let m = owned_mailbox(tx, account, mailbox)?;
            if usage_of(tx, account)? + size > max_usage {
                return Err(StoreError::OverQuota);
            }
            check_keyword_limit(tx, mailbox, &keywords)?;
            let kw = merge_keywords("", FlagOp::Add, &keywords);
            let uid = insert_message(tx, mailbox, &blob, size, internal_date, Flags(flags), &kw)?;
            tx.publish(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox } });
            Ok((m.uidvalidity, uid))
        })
        .await
    }

    /// COPY / MOVE: (uidvalidity of dst, (source uid, new uid) pairs). MOVE removes the sources
    /// in the same transaction; COPY checks the quota (IMAP-23).
    pub async fn copy_messages(
        &self,
        account: AccountId,
        src: MailboxId,
        uids: Vec<u32>,
        dst: MailboxId,
        remove: bool,
        max_usage: u64,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        self.write(move |tx| {
            owned_mailbox(tx, account, src)?;
            let d = owned_mailbox(tx, account, dst)?;
            if !remove {
                let mut add = 0u64;
                let mut st = tx.prepare_cached("SELECT size FROM messages WHERE mailbox_id = ?1 AND uid = ?2")?;
                for &u in &uids {
                    add += st.query_row(params![src, u], |r| r.get::<_, i64>(0)).optional()?.unwrap_or(0).max(0) as u64;
                }
                if add > 0 && usage_of(tx, account)? + add > max_usage {
                    return Err(StoreError::OverQuota);
                }
            }
            let pairs = copy_rows(tx, src, &uids, dst)?;
            if remove {
                let moved: Vec<u32> = pairs.iter().map(|p| p.0).collect();
                remove_messages(tx, account, src, &moved)?;
            }
            if !pairs.is_empty() {
                tx.publish(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox: dst } });
            }
            Ok((d.uidvalidity, pairs))
        })
        .await
    }

    /// Rows for the given UIDs (FETCH/SEARCH); UIDs no longer present are skipped (IMAP-27).
    pub async fn messages_by_uids(&self, mailbox: MailboxId, uids: Vec<u32>) -> Result<Vec<MessageMeta>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = ?1 AND uid = ?2"))?;
            let mut out = Vec::with_capacity(uids.len());
            for uid in uids {
                if let Some(m) = st.query_row(params![mailbox, uid], row_to_message).optional()? {
                    out.push(m);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Bytes stored by an account over all mailboxes (QUOTA, IMAP-39).
    pub async fn usage(&self, account: AccountId) -> Result<u64> {
        self.read(move |c| usage_of(c, account)).await
    }
}
