//! Mailboxes: reads, snapshots, create, delete, rename, subscribe.

use super::mailbox_ops::{insert_message, remove_messages};
use super::*;

/// A UIDVALIDITY larger than any handed out before (IMAP-16), across all nodes: the kv row is
/// locked by the upsert until this transaction ends.
pub(super) async fn next_uidvalidity(tx: &Tx<'_>) -> Result<u32> {
    let now = now_secs();
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO kv(key, value) VALUES('uidvalidity', $1::bigint::text)
             ON CONFLICT(key) DO UPDATE SET value = greatest(kv.value::bigint + 1, $1::bigint)::text
             RETURNING value::bigint",
            )
            .await?,
            &[&now],
        )
        .await?;
    Ok(row.get::<_, i64>(0).min(i64::from(u32::MAX)) as u32)
}

pub(super) async fn mailbox_by_name(
    c: &impl GenericClient,
    account: AccountId,
    name: &str,
) -> Result<Option<MailboxInfo>> {
    let st = format!("SELECT {MBOX_COLS} FROM mailboxes WHERE account_id = $1 AND name = $2");
    Ok(c.query_opt(&st, &[&account, &name]).await?.as_ref().map(mailbox_of))
}

pub(super) async fn mailbox_by_id(c: &impl GenericClient, id: MailboxId) -> Result<Option<MailboxInfo>> {
    let st = format!("SELECT {MBOX_COLS} FROM mailboxes WHERE id = $1");
    Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(mailbox_of))
}

pub(super) async fn messages_of(c: &impl GenericClient, mailbox: MailboxId) -> Result<Vec<MessageMeta>> {
    let st = format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = $1 ORDER BY uid");
    Ok(c.query(&st, &[&mailbox]).await?.iter().map(message_of).collect())
}

pub(super) async fn inbox_id(tx: &Tx<'_>, account: AccountId) -> Result<MailboxId> {
    if let Some(m) = mailbox_by_name(tx, account, "INBOX").await? {
        return Ok(m.id);
    }
    let uv = i64::from(next_uidvalidity(tx).await?);
    let row = tx
        .query_one(
            &tx.prepare_cached(
                "INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES($1, 'INBOX', $2) RETURNING id",
            )
            .await?,
            &[&account, &uv],
        )
        .await?;
    Ok(row.get(0))
}

/// Changed rows, expunged UIDs and the mailbox's highest modseq.
pub(super) type Changes = (Vec<MessageMeta>, Vec<u32>, i64);

impl Pg {
    // ---- mailboxes ----

    pub(crate) async fn mailbox(&self, account: AccountId, name: &str) -> Result<Option<MailboxInfo>> {
        mailbox_by_name(&self.client().await?, account, name).await
    }

    pub(crate) async fn mailbox_by_id(&self, id: MailboxId) -> Result<Option<MailboxInfo>> {
        mailbox_by_id(&self.client().await?, id).await
    }

    pub(crate) async fn list_mailboxes(&self, account: AccountId) -> Result<Vec<MailboxInfo>> {
        let c = self.client().await?;
        let st = format!("SELECT {MBOX_COLS} FROM mailboxes WHERE account_id = $1 ORDER BY name");
        Ok(c.query(&st, &[&account]).await?.iter().map(mailbox_of).collect())
    }

    pub(crate) async fn messages(&self, mailbox: MailboxId) -> Result<Vec<MessageMeta>> {
        messages_of(&self.client().await?, mailbox).await
    }

    /// IMAP-28a: the mailbox row and its messages as of one snapshot (REPEATABLE READ).
    pub(crate) async fn snapshot(
        &self,
        account: AccountId,
        name: &str,
    ) -> Result<Option<(MailboxInfo, Vec<MessageMeta>)>> {
        let mut c = self.client().await?;
        let tx = c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let Some(info) = mailbox_by_name(&tx, account, name).await? else { return Ok(None) };
        let rows = messages_of(&tx, info.id).await?;
        tx.commit().await?;
        Ok(Some((info, rows)))
    }

    pub(crate) async fn changes_since(&self, mailbox: MailboxId, modseq: i64) -> Result<Changes> {
        let mut c = self.client().await?;
        let tx = c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
        let highest: i64 = tx
            .query_opt(&tx.prepare_cached("SELECT highestmodseq FROM mailboxes WHERE id = $1").await?, &[&mailbox])
            .await?
            .ok_or(StoreError::NotFound)?
            .get(0);
        let st = format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid");
        let changed = tx.query(&st, &[&mailbox, &modseq]).await?.iter().map(message_of).collect();
        let gone = tx
            .query(
                &tx.prepare_cached("SELECT uid FROM expunged WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid")
                    .await?,
                &[&mailbox, &modseq],
            )
            .await?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect();
        tx.commit().await?;
        Ok((changed, gone, highest))
    }

    pub(crate) async fn create_mailbox(&self, account: AccountId, name: String) -> Result<MailboxInfo> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Serialises mailbox creation per account (the count check below).
        lock_accounts(&tx, &[account]).await?;
        if mailbox_by_name(&tx, account, &name).await?.is_some() {
            return Err(StoreError::Exists);
        }
        let n: i64 = tx
            .query_one(&tx.prepare_cached("SELECT count(*) FROM mailboxes WHERE account_id = $1").await?, &[&account])
            .await?
            .get(0);
        if n >= MAX_MAILBOXES {
            return Err(StoreError::Limit("mailboxes"));
        }
        let uv = i64::from(next_uidvalidity(&tx).await?);
        let st =
            format!("INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES($1, $2, $3) RETURNING {MBOX_COLS}");
        let info = mailbox_of(&tx.query_one(&st, &[&account, &name, &uv]).await?);
        let mut p = Pending::default();
        p.push(StoreEvent::Mailbox { account, event: MailboxEvent::MailboxesChanged });
        p.notify(&tx, self.node).await?;
        tx.commit().await?;
        self.publish(p);
        Ok(info)
    }

    pub(crate) async fn delete_mailbox(&self, account: AccountId, name: String) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_accounts(&tx, &[account]).await?;
        let m = mailbox_by_name(&tx, account, &name).await?.ok_or(StoreError::NotFound)?;
        let uids: Vec<u32> = tx
            .query(&tx.prepare_cached("SELECT uid FROM messages WHERE mailbox_id = $1").await?, &[&m.id])
            .await?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect();
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        remove_messages(&tx, account, m.id, &uids, &mut p, &mut objects).await?;
        tx.execute(&tx.prepare_cached("DELETE FROM expunged WHERE mailbox_id = $1").await?, &[&m.id]).await?;
        tx.execute(&tx.prepare_cached("DELETE FROM mailboxes WHERE id = $1").await?, &[&m.id]).await?;
        p.push(StoreEvent::Mailbox { account, event: MailboxEvent::MailboxesChanged });
        self.commit_publish(tx, p, objects).await?;
        Ok(())
    }

    /// RENAME as on SQLite: INBOX's messages move to a new mailbox; children follow a parent.
    pub(crate) async fn rename_mailbox(&self, account: AccountId, from: String, to: String) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_accounts(&tx, &[account]).await?;
        let src = mailbox_by_name(&tx, account, &from).await?.ok_or(StoreError::NotFound)?;
        if mailbox_by_name(&tx, account, &to).await?.is_some() {
            return Err(StoreError::Exists);
        }
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        if from == "INBOX" {
            let uv = i64::from(next_uidvalidity(&tx).await?);
            let dst: i64 = tx
                .query_one(
                    &tx.prepare_cached(
                        "INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES($1, $2, $3) RETURNING id",
                    )
                    .await?,
                    &[&account, &to, &uv],
                )
                .await?
                .get(0);
            let st = format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = $1 ORDER BY uid FOR SHARE");
            let rows: Vec<MessageMeta> = tx.query(&st, &[&src.id]).await?.iter().map(message_of).collect();
            for m in &rows {
                insert_message(&tx, dst, &m.blob, m.size, m.internal_date, m.flags, &m.keywords).await?;
            }
            let uids: Vec<u32> = rows.iter().map(|m| m.uid).collect();
            remove_messages(&tx, account, src.id, &uids, &mut p, &mut objects).await?;
        } else {
            tx.execute(
                &tx.prepare_cached("UPDATE mailboxes SET name = $3 WHERE account_id = $1 AND name = $2").await?,
                &[&account, &from, &to],
            )
            .await?;
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE mailboxes SET name = $3 || substr(name, length($2) + 1)
                 WHERE account_id = $1 AND substr(name, 1, length($2) + 1) = $2 || '/'",
                )
                .await?,
                &[&account, &from, &to],
            )
            .await?;
        }
        p.push(StoreEvent::Mailbox { account, event: MailboxEvent::MailboxesChanged });
        self.commit_publish(tx, p, objects).await?;
        Ok(())
    }

    pub(crate) async fn set_subscribed(&self, account: AccountId, name: String, on: bool) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                &c.prepare_cached("UPDATE mailboxes SET subscribed = $3 WHERE account_id = $1 AND name = $2").await?,
                &[&account, &name, &(on as i64)],
            )
            .await?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    pub(crate) async fn messages_by_uids(&self, mailbox: MailboxId, uids: Vec<u32>) -> Result<Vec<MessageMeta>> {
        let c = self.client().await?;
        let want: Vec<i64> = uids.iter().map(|u| i64::from(*u)).collect();
        let st = format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = $1 AND uid = ANY($2)");
        let mut found: HashMap<u32, MessageMeta> =
            c.query(&st, &[&mailbox, &want]).await?.iter().map(message_of).map(|m| (m.uid, m)).collect();
        Ok(uids.iter().filter_map(|u| found.remove(u)).collect())
    }

    pub(crate) async fn usage(&self, account: AccountId) -> Result<u64> {
        let c = self.client().await?;
        let row = c
            .query_opt(&c.prepare_cached("SELECT usage_bytes FROM accounts WHERE id = $1").await?, &[&account])
            .await?;
        Ok(row.ok_or(StoreError::NotFound)?.get::<_, i64>(0).max(0) as u64)
    }

    /// The mailboxes of `accounts`, for the catch-up after a LISTEN reconnect.
    pub(super) async fn mailboxes_of(&self, accounts: &[AccountId]) -> Result<Vec<(AccountId, MailboxId)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached("SELECT account_id, id FROM mailboxes WHERE account_id = ANY($1)").await?,
                &[&accounts],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
