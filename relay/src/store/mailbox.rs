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

pub(crate) const MSG_COLS: &str = "uid, blob, size, internal_date, flags, keywords, modseq";

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

/// What `insert_message` assigned.
pub(crate) struct Inserted {
    pub uid: u32,
    /// The mailbox's new modseq.
    pub modseq: i64,
    /// The account's usage including this message.
    pub usage_bytes: u64,
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
) -> Result<Inserted> {
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
    let usage: i64 = tx
        .prepare_cached(
            "UPDATE accounts SET usage_bytes = usage_bytes + ?2
             WHERE id = (SELECT account_id FROM mailboxes WHERE id = ?1) RETURNING usage_bytes",
        )?
        .query_row(params![mailbox, size as i64], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    Ok(Inserted { uid: uid as u32, modseq, usage_bytes: u64::try_from(usage).unwrap_or(0) })
}

/// Remove messages by UID: rows deleted, expunge records written, usage reduced, files released
/// after commit, sessions told. Returns the UIDs actually removed.
pub(crate) fn remove_messages(
    tx: &mut Tx<'_>,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[u32],
) -> Result<Vec<u32>> {
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
        let mut del =
            tx.prepare_cached("DELETE FROM messages WHERE mailbox_id = ?1 AND uid = ?2 RETURNING blob, size")?;
        let mut rec =
            tx.prepare_cached("INSERT OR REPLACE INTO expunged(mailbox_id, uid, modseq) VALUES(?1, ?2, ?3)")?;
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
        if let Some(pg) = self.pg() {
            return pg.mailbox(account, name).await;
        }
        let name = name.to_string();
        self.read_point(move |c| mailbox_by_name(c, account, &name)).await
    }

    pub async fn mailbox_by_id(&self, id: MailboxId) -> Result<Option<MailboxInfo>> {
        if let Some(pg) = self.pg() {
            return pg.mailbox_by_id(id).await;
        }
        self.read_point(move |c| mailbox_by_id(c, id)).await
    }

    pub async fn list_mailboxes(&self, account: AccountId) -> Result<Vec<MailboxInfo>> {
        if let Some(pg) = self.pg() {
            return pg.list_mailboxes(account).await;
        }
        self.read(move |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {MBOX_COLS} FROM mailboxes WHERE account_id = ?1 ORDER BY name"))?;
            let rows = st.query_map([account], row_to_mailbox)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// All messages of a mailbox in UID order (the session's view on SELECT).
    pub async fn messages(&self, mailbox: MailboxId) -> Result<Vec<MessageMeta>> {
        if let Some(pg) = self.pg() {
            return pg.messages(mailbox).await;
        }
        self.read(move |c| messages_of(c, mailbox)).await
    }

    /// One consistent snapshot of a mailbox (IMAP-28a): its row (UIDNEXT, HIGHESTMODSEQ) and all
    /// its messages in UID order, read in one read transaction, so UIDNEXT is above every UID
    /// listed and HIGHESTMODSEQ covers exactly these rows. SELECT, EXAMINE and STATUS use it;
    /// reading them apart let a delivery land in between (counted in EXISTS, not in UIDNEXT).
    pub async fn snapshot(&self, account: AccountId, name: &str) -> Result<Option<(MailboxInfo, Vec<MessageMeta>)>> {
        if let Some(pg) = self.pg() {
            return pg.snapshot(account, name).await;
        }
        let name = name.to_string();
        self.read(move |c| {
            let tx = c.unchecked_transaction()?;
            let Some(info) = mailbox_by_name(&tx, account, &name)? else { return Ok(None) };
            let rows = messages_of(&tx, info.id)?;
            tx.commit()?;
            Ok(Some((info, rows)))
        })
        .await
    }

    /// Messages added or changed after `modseq`, and UIDs expunged after it (session catch-up).
    /// The usual catch-up (a new message, a flag change) is a few rows and is read in place
    /// (`read_point`); a larger one is read again off the async threads.
    pub async fn changes_since(&self, mailbox: MailboxId, modseq: i64) -> Result<Changes> {
        const QUICK_ROWS: i64 = 32;
        if let Some(pg) = self.pg() {
            return pg.changes_since(mailbox, modseq).await;
        }
        if let Some(small) = self.read_point(move |c| changes(c, mailbox, modseq, QUICK_ROWS)).await? {
            return Ok(small);
        }
        self.read(move |c| changes(c, mailbox, modseq, -1)?.ok_or(StoreError::Invalid("unbounded catch-up"))).await
    }

    /// Expunge the given UIDs of a mailbox (IMAP EXPUNGE/CLOSE/MOVE, retention).
    pub async fn expunge(&self, account: AccountId, mailbox: MailboxId, uids: Vec<u32>) -> Result<Vec<u32>> {
        if let Some(pg) = self.pg() {
            return pg.expunge(account, mailbox, uids).await;
        }
        self.write(move |tx| remove_messages(tx, account, mailbox, &uids)).await
    }
}

fn messages_of(c: &Connection, mailbox: MailboxId) -> Result<Vec<MessageMeta>> {
    let mut st = c.prepare_cached(&format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = ?1 ORDER BY uid"))?;
    let rows = st.query_map([mailbox], row_to_message)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Changed rows, expunged UIDs and the mailbox's highest modseq.
type Changes = (Vec<MessageMeta>, Vec<u32>, i64);

/// `changes_since` reading at most `limit` changed and `limit` expunged rows (-1: all); `None`
/// when there were more.
fn changes(c: &Connection, mailbox: MailboxId, modseq: i64, limit: i64) -> Result<Option<Changes>> {
    // One read transaction: the modseq returned is exactly the state the rows show, so the
    // session's cursor never skips a change nor counts one twice (IMAP-28a).
    let tx = c.unchecked_transaction()?;
    let out = changes_in(&tx, mailbox, modseq, limit)?;
    tx.commit()?;
    Ok(out)
}

fn changes_in(c: &Connection, mailbox: MailboxId, modseq: i64, limit: i64) -> Result<Option<Changes>> {
    let highest: i64 = c
        .prepare_cached("SELECT highestmodseq FROM mailboxes WHERE id = ?1")?
        .query_row([mailbox], |r| r.get(0))
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let probe = if limit < 0 { -1 } else { limit + 1 };
    // Rows come in (mailbox_id, modseq) index order and are sorted by UID here: `ORDER BY uid`
    // made SQLite build a temporary b-tree per query (or scan the whole mailbox). The limit is
    // part of the SQL text: a bound LIMIT makes SQLite re-prepare the statement on every rebind.
    let mut st = c.prepare_cached(&format!(
        "SELECT {MSG_COLS} FROM messages WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY modseq LIMIT {probe}"
    ))?;
    let mut changed = st.query_map(params![mailbox, modseq], row_to_message)?.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut st = c.prepare_cached(&format!(
        "SELECT uid FROM expunged WHERE mailbox_id = ?1 AND modseq > ?2 ORDER BY modseq LIMIT {probe}"
    ))?;
    let mut gone = st
        .query_map(params![mailbox, modseq], |r| r.get::<_, i64>(0).map(|u| u as u32))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if limit >= 0 && (changed.len() as i64 > limit || gone.len() as i64 > limit) {
        return Ok(None);
    }
    changed.sort_unstable_by_key(|m| m.uid);
    gone.sort_unstable();
    Ok(Some((changed, gone, highest)))
}
