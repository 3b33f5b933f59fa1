//! Accounts, tombstones.

use super::blobs::drop_unreferenced;
use super::mailbox::next_uidvalidity;
use super::*;

pub(super) async fn by_address(c: &impl GenericClient, address: &str) -> Result<Option<Account>> {
    let st = format!("SELECT {ACC_COLS} FROM accounts WHERE address = $1");
    Ok(c.query_opt(&st, &[&address]).await?.as_ref().map(account_of))
}

pub(super) async fn by_id(c: &impl GenericClient, id: AccountId) -> Result<Option<Account>> {
    let st = format!("SELECT {ACC_COLS} FROM accounts WHERE id = $1");
    Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(account_of))
}

pub(super) async fn is_tombstoned(c: &impl GenericClient, hash: &[u8]) -> Result<bool> {
    Ok(c.query_opt(&c.prepare_cached("SELECT 1 FROM tombstones WHERE hash = $1").await?, &[&hash]).await?.is_some())
}

/// The rows of account `id` deleted in `tx` (with a tombstone unless `None`); returns the
/// objects no row names any more, to delete after the commit.
pub(super) async fn delete_account_in(tx: &Tx<'_>, id: AccountId, tombstone: Option<&[u8]>) -> Result<Vec<String>> {
    // Its row first, like every other writer (`lock_accounts`).
    tx.execute(&tx.prepare_cached("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE").await?, &[&id]).await?;
    let blobs: Vec<String> = tx
        .query(
            &tx.prepare_cached(
                "SELECT DISTINCT m.blob FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = $1
                 UNION SELECT blob FROM queue WHERE sender_account = $1",
            )
            .await?,
            &[&id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.execute(
        &tx.prepare_cached("DELETE FROM expunged WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = $1)")
            .await?,
        &[&id],
    )
    .await?;
    tx.execute(&tx.prepare_cached("DELETE FROM queue WHERE sender_account = $1").await?, &[&id]).await?;
    tx.execute(
        &tx.prepare_cached("DELETE FROM messages WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = $1)")
            .await?,
        &[&id],
    )
    .await?;
    if tx.execute(&tx.prepare_cached("DELETE FROM accounts WHERE id = $1").await?, &[&id]).await? == 0 {
        return Err(StoreError::NotFound);
    }
    if let Some(hash) = tombstone {
        tx.execute(
            &tx.prepare_cached("INSERT INTO tombstones(hash) VALUES($1) ON CONFLICT DO NOTHING").await?,
            &[&hash],
        )
        .await?;
    }
    drop_unreferenced(tx, &blobs).await
}

impl Pg {
    // ---- accounts ----

    pub(crate) async fn account_by_address(&self, address: &str) -> Result<Option<Account>> {
        by_address(&self.client().await?, address).await
    }

    pub(crate) async fn account_by_id(&self, id: AccountId) -> Result<Option<Account>> {
        by_id(&self.client().await?, id).await
    }

    pub(crate) async fn is_tombstoned(&self, hash: &[u8]) -> Result<bool> {
        is_tombstoned(&self.client().await?, hash).await
    }

    /// ACC-12 across nodes: the UNIQUE address decides; the loser of a race reads the winner's
    /// row (READ COMMITTED: the statement after the conflict sees the committed row).
    pub(crate) async fn create_account(
        &self,
        address: &str,
        password_hash: String,
        tombstone: Vec<u8>,
    ) -> Result<CreateOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if is_tombstoned(&tx, &tombstone).await? {
            return Ok(CreateOutcome::Tombstoned);
        }
        let day = today();
        let row = tx
            .query_opt(
                &tx.prepare_cached(
                    "INSERT INTO accounts(address, password_hash, created_day, last_login_day) VALUES($1, $2, $3, $3)
                 ON CONFLICT(address) DO NOTHING RETURNING id",
                )
                .await?,
                &[&address, &password_hash, &day],
            )
            .await?;
        let Some(row) = row else {
            let existing = by_address(&tx, address).await?.ok_or(StoreError::NotFound)?;
            return Ok(CreateOutcome::AlreadyExists(existing));
        };
        let id: i64 = row.get(0);
        let uv = i64::from(next_uidvalidity(&tx).await?);
        tx.execute(
            &tx.prepare_cached("INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES($1, 'INBOX', $2)").await?,
            &[&id, &uv],
        )
        .await?;
        let acc = by_id(&tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(CreateOutcome::Created(acc))
    }

    pub(crate) async fn set_password_hash(&self, id: AccountId, hash: String) -> Result<()> {
        let c = self.client().await?;
        c.execute(&c.prepare_cached("UPDATE accounts SET password_hash = $2 WHERE id = $1").await?, &[&id, &hash])
            .await?;
        Ok(())
    }

    pub(crate) async fn touch_login(&self, id: AccountId, day: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached("UPDATE accounts SET last_login_day = $2 WHERE id = $1 AND last_login_day < $2").await?,
            &[&id, &day],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn set_blocked(&self, id: AccountId, blocked: bool) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if tx
            .execute(
                &tx.prepare_cached("UPDATE accounts SET blocked = $2 WHERE id = $1").await?,
                &[&id, &(blocked as i64)],
            )
            .await?
            == 0
        {
            return Err(StoreError::NotFound);
        }
        let mut p = Pending::default();
        if blocked {
            p.push(StoreEvent::Mailbox { account: id, event: MailboxEvent::AccountGone });
        }
        p.notify(&tx, self.node).await?;
        tx.commit().await?;
        self.publish(p);
        Ok(())
    }

    pub(crate) async fn set_cleartext(&self, id: AccountId, allowed: bool) -> Result<()> {
        let c = self.client().await?;
        if c.execute(
            &c.prepare_cached("UPDATE accounts SET cleartext = $2 WHERE id = $1").await?,
            &[&id, &(allowed as i64)],
        )
        .await?
            == 0
        {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub(crate) async fn add_tombstone(&self, hash: Vec<u8>) -> Result<()> {
        let c = self.client().await?;
        c.execute(&c.prepare_cached("INSERT INTO tombstones(hash) VALUES($1) ON CONFLICT DO NOTHING").await?, &[&hash])
            .await?;
        Ok(())
    }

    /// ACC-26/27 in one transaction, as `accounts::delete_in_tx`.
    pub(crate) async fn delete_account(&self, id: AccountId, tombstone: Vec<u8>) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let objects = delete_account_in(&tx, id, Some(&tombstone)).await?;
        let mut p = Pending::default();
        p.push(StoreEvent::Mailbox { account: id, event: MailboxEvent::AccountGone });
        self.commit_publish(tx, p, objects).await?;
        Ok(())
    }

    pub(crate) async fn list_accounts(&self) -> Result<Vec<(Account, u64)>> {
        let c = self.client().await?;
        let st = format!(
            "SELECT {ACC_COLS}, (SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = a.id)
             FROM accounts a ORDER BY address"
        );
        Ok(c.query(&st, &[]).await?.iter().map(|r| (account_of(r), r.get::<_, i64>(8).max(0) as u64)).collect())
    }

    pub(crate) async fn account_count(&self) -> Result<u64> {
        let c = self.client().await?;
        Ok(c.query_one(&c.prepare_cached("SELECT count(*) FROM accounts").await?, &[]).await?.get::<_, i64>(0).max(0)
            as u64)
    }
}
