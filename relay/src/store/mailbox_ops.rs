//! Mailbox operations IMAP needs beyond the shared primitives in `mailbox.rs`: create, delete,
//! rename, subscribe, flag changes with one modseq bump, APPEND, COPY/MOVE and quota usage.
//! Every change publishes `MailboxEvent`s after commit so other sessions catch up (IMAP-24).

use rusqlite::{Connection, OptionalExtension, params};

use super::accounts::AccountId;
use super::blobs::NewBlob;
use super::events::{MailboxEvent, StoreEvent};
use super::mailbox::{
    Flags, MSG_COLS, MailboxId, MailboxInfo, MessageMeta, insert_message, mailbox_by_id, mailbox_by_name,
    remove_messages, row_to_message,
};
use super::writer::Tx;
use super::{Result, Store, StoreError};

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

pub(super) fn merge_keywords(old: &str, op: FlagOp, kws: &[String]) -> String {
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
            let new = insert_message(tx, dst, &m.blob, m.size, m.internal_date, m.flags, &m.keywords)?.uid;
            out.push((uid, new));
        }
    }
    Ok(out)
}

impl Store {
    /// CREATE (IMAP-15, IMAP-16): a fresh UIDVALIDITY larger than any before.
    pub async fn create_mailbox(&self, account: AccountId, name: String) -> Result<MailboxInfo> {
        if let Some(pg) = self.pg() {
            return pg.create_mailbox(account, name).await;
        }
        self.write(move |tx| {
            if mailbox_by_name(tx, account, &name)?.is_some() {
                return Err(StoreError::Exists);
            }
            let n: i64 =
                tx.query_row("SELECT count(*) FROM mailboxes WHERE account_id = ?1", [account], |r| r.get(0))?;
            if n >= MAX_MAILBOXES {
                return Err(StoreError::Limit("mailboxes"));
            }
            let uv = super::accounts::next_uidvalidity(tx)?;
            tx.execute(
                "INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES(?1, ?2, ?3)",
                params![account, name, uv],
            )?;
            let m = mailbox_by_id(tx, tx.last_insert_rowid())?.ok_or(StoreError::NotFound)?;
            tx.publish(StoreEvent::Mailbox { account, event: MailboxEvent::MailboxesChanged });
            Ok(m)
        })
        .await
    }

    /// DELETE: messages removed (files released, usage reduced), then the mailbox row.
    pub async fn delete_mailbox(&self, account: AccountId, name: String) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.delete_mailbox(account, name).await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.rename_mailbox(account, from, to).await;
        }
        self.write(move |tx| {
            let src = mailbox_by_name(tx, account, &from)?.ok_or(StoreError::NotFound)?;
            if mailbox_by_name(tx, account, &to)?.is_some() {
                return Err(StoreError::Exists);
            }
            if from == "INBOX" {
                let uv = super::accounts::next_uidvalidity(tx)?;
                tx.execute(
                    "INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES(?1, ?2, ?3)",
                    params![account, to, uv],
                )?;
                let dst = tx.last_insert_rowid();
                let uids: Vec<u32> = {
                    let mut st = tx.prepare_cached("SELECT uid FROM messages WHERE mailbox_id = ?1 ORDER BY uid")?;
                    st.query_map([src.id], |r| r.get::<_, i64>(0).map(|u| u as u32))?
                        .collect::<rusqlite::Result<_>>()?
                };
                copy_rows(tx, src.id, &uids, dst)?;
                remove_messages(tx, account, src.id, &uids)?;
            } else {
                tx.execute(
                    "UPDATE mailboxes SET name = ?3 WHERE account_id = ?1 AND name = ?2",
                    params![account, from, to],
                )?;
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
        if let Some(pg) = self.pg() {
            return pg.set_subscribed(account, name, on).await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.store_flags(account, mailbox, uids, op, flags, keywords).await;
        }
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
                tx.prepare_cached(
                    "UPDATE messages SET flags = ?3, keywords = ?4, modseq = ?5 WHERE mailbox_id = ?1 AND uid = ?2",
                )?
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
        blob: NewBlob,
        internal_date: i64,
        flags: u32,
        keywords: Vec<String>,
        max_usage: u64,
    ) -> Result<(u32, u32)> {
        if let Some(pg) = self.pg() {
            return pg.append(account, mailbox, &blob, internal_date, flags, keywords, max_usage).await;
        }
        self.write(move |tx| {
            let m = owned_mailbox(tx, account, mailbox)?;
            let size = blob.size();
            if usage_of(tx, account)? + size > max_usage {
                return Err(StoreError::OverQuota);
            }
            check_keyword_limit(tx, mailbox, &keywords)?;
            let kw = merge_keywords("", FlagOp::Add, &keywords);
            super::blobs::persist(tx, &blob)?;
            let uid = insert_message(tx, mailbox, blob.id(), size, internal_date, Flags(flags), &kw)?.uid;
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
        if let Some(pg) = self.pg() {
            return pg.copy_messages(account, src, uids, dst, remove, max_usage).await;
        }
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
        if let Some(pg) = self.pg() {
            return pg.messages_by_uids(mailbox, uids).await;
        }
        // A FETCH of a few new messages (the IDLE wake-up) is read in place; long sets are not.
        let small = uids.len() <= 32;
        let lookup = move |c: &Connection| {
            let mut st =
                c.prepare_cached(&format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = ?1 AND uid = ?2"))?;
            let mut out = Vec::with_capacity(uids.len());
            for uid in uids {
                if let Some(m) = st.query_row(params![mailbox, uid], row_to_message).optional()? {
                    out.push(m);
                }
            }
            Ok(out)
        };
        if small { self.read_point(lookup).await } else { self.read(lookup).await }
    }

    /// Bytes stored by an account over all mailboxes (QUOTA, IMAP-39).
    pub async fn usage(&self, account: AccountId) -> Result<u64> {
        if let Some(pg) = self.pg() {
            return pg.usage(account).await;
        }
        self.read(move |c| usage_of(c, account)).await
    }
}
