//! Account rows: lookup, creation (one transaction with its INBOX, guarded by the UNIQUE address),
//! last-login days, blocking, the cleartext permission, tombstones and deletion (ACC-26).

use rusqlite::{Connection, OptionalExtension, params};

use super::blobs::BlobId;
use super::events::{MailboxEvent, StoreEvent};
use super::writer::Tx;
use super::{Result, Store, StoreError, today};

pub type AccountId = i64;

#[derive(Debug, Clone)]
pub struct Account {
    pub id: AccountId,
    pub address: String,
    pub password_hash: String,
    pub created_day: i64,
    pub last_login_day: i64,
    pub blocked: bool,
    pub cleartext: bool,
    pub usage_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    SelfService,
    Admin,
    Inactive,
}

impl DeleteReason {
    pub fn label(self) -> &'static str {
        match self {
            Self::SelfService => "self",
            Self::Admin => "admin",
            Self::Inactive => "inactive",
        }
    }
}

#[derive(Debug)]
pub enum CreateOutcome {
    Created(Account),
    /// Another login created it first (ACC-12); verify against this row instead.
    AlreadyExists(Account),
    Tombstoned,
}

const COLS: &str = "id, address, password_hash, created_day, last_login_day, blocked, cleartext, usage_bytes";

fn row_to_account(r: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        address: r.get(1)?,
        password_hash: r.get(2)?,
        created_day: r.get(3)?,
        last_login_day: r.get(4)?,
        blocked: r.get::<_, i64>(5)? != 0,
        cleartext: r.get::<_, i64>(6)? != 0,
        usage_bytes: r.get::<_, i64>(7)?.max(0) as u64,
    })
}

pub(crate) fn by_address(c: &Connection, address: &str) -> Result<Option<Account>> {
    let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM accounts WHERE address = ?1"))?;
    Ok(st.query_row([address], row_to_account).optional()?)
}

pub(crate) fn by_id(c: &Connection, id: AccountId) -> Result<Option<Account>> {
    let mut st = c.prepare_cached(&format!("SELECT {COLS} FROM accounts WHERE id = ?1"))?;
    Ok(st.query_row([id], row_to_account).optional()?)
}

pub(crate) fn is_tombstoned(c: &Connection, hash: &[u8]) -> Result<bool> {
    let mut st = c.prepare_cached("SELECT 1 FROM tombstones WHERE hash = ?1")?;
    Ok(st.query_row([hash], |_| Ok(())).optional()?.is_some())
}

/// A UIDVALIDITY larger than any handed out before (IMAP-16).
pub(crate) fn next_uidvalidity(c: &Connection) -> Result<u32> {
    let last: i64 = c
        .query_row("SELECT value FROM kv WHERE key = 'uidvalidity'", [], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let next = (last + 1).max(super::now_secs()).min(i64::from(u32::MAX));
    c.execute(
        "INSERT INTO kv(key, value) VALUES('uidvalidity', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [next.to_string()],
    )?;
    Ok(next as u32)
}

/// Delete an account and everything it owns inside `tx` (ACC-26), writing the tombstone (ACC-27).
pub(crate) fn delete_in_tx(tx: &mut Tx<'_>, id: AccountId, tombstone: &[u8]) -> Result<()> {
    let mut blobs: Vec<BlobId> = Vec::new();
    {
        let mut st = tx.prepare(
            "SELECT DISTINCT m.blob FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = ?1
             UNION SELECT blob FROM queue WHERE sender_account = ?1",
        )?;
        let rows = st.query_map([id], |r| r.get::<_, String>(0))?;
        for r in rows {
            blobs.push(BlobId(r?));
        }
    }
    tx.execute("DELETE FROM expunged WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = ?1)", [id])?;
    tx.execute("DELETE FROM queue WHERE sender_account = ?1", [id])?;
    tx.execute("DELETE FROM messages WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = ?1)", [id])?;
    let n = tx.execute("DELETE FROM accounts WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    tx.execute("INSERT OR IGNORE INTO tombstones(hash) VALUES(?1)", [tombstone])?;
    for b in blobs {
        tx.release_blob(b);
    }
    tx.publish(StoreEvent::Mailbox { account: id, event: MailboxEvent::AccountGone });
    Ok(())
}

impl Store {
    pub async fn account_by_address(&self, address: &str) -> Result<Option<Account>> {
        if let Some(pg) = self.pg() {
            return pg.account_by_address(address).await;
        }
        let a = address.to_string();
        self.read_point(move |c| by_address(c, &a)).await
    }

    pub async fn account_by_id(&self, id: AccountId) -> Result<Option<Account>> {
        if let Some(pg) = self.pg() {
            return pg.account_by_id(id).await;
        }
        self.read_point(move |c| by_id(c, id)).await
    }

    pub async fn is_tombstoned(&self, hash: Vec<u8>) -> Result<bool> {
        if let Some(pg) = self.pg() {
            return pg.is_tombstoned(&hash).await;
        }
        self.read(move |c| is_tombstoned(c, &hash)).await
    }

    /// Create an account with an empty INBOX, unless it exists or is tombstoned (ACC-12, ACC-14).
    pub async fn create_account(
        &self,
        address: &str,
        password_hash: String,
        tombstone: Vec<u8>,
    ) -> Result<CreateOutcome> {
        if let Some(pg) = self.pg() {
            return pg.create_account(address, password_hash, tombstone).await;
        }
        let address = address.to_string();
        self.write(move |tx| {
            if is_tombstoned(tx, &tombstone)? {
                return Ok(CreateOutcome::Tombstoned);
            }
            if let Some(a) = by_address(tx, &address)? {
                return Ok(CreateOutcome::AlreadyExists(a));
            }
            let day = today();
            tx.execute(
                "INSERT INTO accounts(address, password_hash, created_day, last_login_day) VALUES(?1, ?2, ?3, ?3)",
                params![address, password_hash, day],
            )?;
            let id = tx.last_insert_rowid();
            let uv = next_uidvalidity(tx)?;
            tx.execute(
                "INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES(?1, 'INBOX', ?2)",
                params![id, uv],
            )?;
            let acc = by_id(tx, id)?.ok_or(StoreError::NotFound)?;
            Ok(CreateOutcome::Created(acc))
        })
        .await
    }

    /// Replace a password hash (imported SHA512-CRYPT upgraded to argon2id, ACC-20).
    pub async fn set_password_hash(&self, id: AccountId, hash: String) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.set_password_hash(id, hash).await;
        }
        self.write(move |tx| {
            tx.execute("UPDATE accounts SET password_hash = ?2 WHERE id = ?1", params![id, hash])?;
            Ok(())
        })
        .await
    }

    /// Record today's login day if it changed (ACC-24: at most one write per account per day).
    pub async fn touch_login(&self, account: &Account) -> Result<()> {
        let day = today();
        if account.last_login_day >= day {
            return Ok(());
        }
        let id = account.id;
        if let Some(pg) = self.pg() {
            return pg.touch_login(id, day).await;
        }
        self.write(move |tx| {
            tx.execute(
                "UPDATE accounts SET last_login_day = ?2 WHERE id = ?1 AND last_login_day < ?2",
                params![id, day],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn set_blocked(&self, id: AccountId, blocked: bool) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.set_blocked(id, blocked).await;
        }
        self.write(move |tx| {
            if tx.execute("UPDATE accounts SET blocked = ?2 WHERE id = ?1", params![id, blocked as i64])? == 0 {
                return Err(StoreError::NotFound);
            }
            if blocked {
                tx.publish(StoreEvent::Mailbox { account: id, event: MailboxEvent::AccountGone });
            }
            Ok(())
        })
        .await
    }

    pub async fn set_cleartext(&self, id: AccountId, allowed: bool) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.set_cleartext(id, allowed).await;
        }
        self.write(move |tx| {
            if tx.execute("UPDATE accounts SET cleartext = ?2 WHERE id = ?1", params![id, allowed as i64])? == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }

    /// Add a tombstone without an account (blocking an address that never existed).
    pub async fn add_tombstone(&self, hash: Vec<u8>) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.add_tombstone(hash).await;
        }
        self.write(move |tx| {
            tx.execute("INSERT OR IGNORE INTO tombstones(hash) VALUES(?1)", [hash])?;
            Ok(())
        })
        .await
    }

    /// Delete an account and all it owns, then tombstone the address (ACC-26, ACC-27).
    /// PRIV-16a: the WAL is then checkpointed and cut, so nothing of it stays readable.
    pub async fn delete_account(&self, id: AccountId, tombstone: Vec<u8>) -> Result<()> {
        self.delete_account_unscrubbed(id, tombstone).await?;
        if let Err(e) = self.scrub().await {
            tracing::warn!(error = %e, "scrub after an account deletion failed");
        }
        Ok(())
    }

    /// `delete_account` without the scrub, for the expiry pass: it deletes many accounts and
    /// scrubs once at its end (one WAL truncation per pass, not one per account).
    pub async fn delete_account_unscrubbed(&self, id: AccountId, tombstone: Vec<u8>) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.delete_account(id, tombstone).await;
        }
        self.write(move |tx| delete_in_tx(tx, id, &tombstone)).await
    }

    pub async fn list_accounts(&self) -> Result<Vec<(Account, u64)>> {
        if let Some(pg) = self.pg() {
            return pg.list_accounts().await;
        }
        self.read(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLS}, (SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = a.id)
                 FROM accounts a ORDER BY address"
            ))?;
            let rows = st.query_map([], |r| Ok((row_to_account(r)?, r.get::<_, i64>(8)?.max(0) as u64)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub async fn account_count(&self) -> Result<u64> {
        if let Some(pg) = self.pg() {
            return pg.account_count().await;
        }
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM accounts", [], |r| r.get::<_, i64>(0))?.max(0) as u64)).await
    }
}
