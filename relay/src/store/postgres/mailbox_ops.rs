//! Message operations: insert, remove, APPEND, COPY/MOVE, STORE, EXPUNGE.

use super::blobs::{drop_unreferenced, insert_body};
use super::mailbox::mailbox_by_id;
use super::*;

/// The SQLite store's `remove_messages` in `tx`: rows deleted, expunge records written at one
/// new modseq, usage reduced, unreferenced bodies dropped (their objects into `objects`), the
/// change into `p`. Returns the UIDs removed and the bytes freed.
pub(super) async fn remove_messages(
    tx: &Tx<'_>,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[u32],
    p: &mut Pending,
    objects: &mut Vec<String>,
) -> Result<(Vec<u32>, i64)> {
    let modseq = next_modseq(tx, account, mailbox).await?;
    let uids: Vec<i64> = uids.iter().map(|u| i64::from(*u)).collect();
    let rows = tx
        .query(
            &tx.prepare_cached(
                "DELETE FROM messages WHERE mailbox_id = $1 AND uid = ANY($2) RETURNING uid, blob, size",
            )
            .await?,
            &[&mailbox, &uids],
        )
        .await?;
    let mut removed: Vec<u32> = Vec::with_capacity(rows.len());
    let mut blobs = Vec::with_capacity(rows.len());
    let mut freed: i64 = 0;
    for r in &rows {
        let uid: i64 = r.get(0);
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO expunged(mailbox_id, uid, modseq) VALUES($1, $2, $3)
             ON CONFLICT(mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
            )
            .await?,
            &[&mailbox, &uid, &modseq],
        )
        .await?;
        removed.push(uid as u32);
        blobs.push(r.get::<_, String>(1));
        freed += r.get::<_, i64>(2);
    }
    tx.execute(
        &tx.prepare_cached("UPDATE accounts SET usage_bytes = greatest(0, usage_bytes - $2) WHERE id = $1").await?,
        &[&account, &freed],
    )
    .await?;
    objects.extend(drop_unreferenced(tx, &blobs).await?);
    if !removed.is_empty() {
        p.push(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox } });
    }
    Ok((removed, freed))
}

/// IMAP-19: at most `MAX_KEYWORDS` distinct keywords in a mailbox with `new` added.
pub(super) async fn keyword_limit(tx: &Tx<'_>, mailbox: MailboxId, new: &[String]) -> Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let rows = tx
        .query(
            &tx.prepare_cached("SELECT DISTINCT keywords FROM messages WHERE mailbox_id = $1 AND keywords != ''")
                .await?,
            &[&mailbox],
        )
        .await?;
    let mut all: Vec<String> = Vec::new();
    let stored = rows.iter().flat_map(|r| r.get::<_, String>(0).split(' ').map(str::to_string).collect::<Vec<_>>());
    for k in stored.chain(new.iter().cloned()) {
        if !k.is_empty() && !all.iter().any(|x| x.eq_ignore_ascii_case(&k)) {
            all.push(k);
        }
    }
    if all.len() > MAX_KEYWORDS { Err(StoreError::Limit("keywords")) } else { Ok(()) }
}

pub(super) struct Inserted {
    pub(super) uid: u32,
    pub(super) modseq: i64,
    pub(super) usage_bytes: u64,
}

/// The SQLite store's `insert_message`: the mailbox row's UPDATE locks it until commit, so UIDs
/// and modseqs of one mailbox are handed out in commit order across nodes.
pub(super) async fn insert_message(
    tx: &Tx<'_>,
    mailbox: MailboxId,
    blob: &BlobId,
    size: u64,
    internal_date: i64,
    flags: Flags,
    keywords: &str,
) -> Result<Inserted> {
    let row = tx
        .query_opt(
            &tx.prepare_cached(
                "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 WHERE id = $1
             RETURNING uidnext - 1, highestmodseq",
            )
            .await?,
            &[&mailbox],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    let (uid, modseq): (i64, i64) = (row.get(0), row.get(1));
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO messages(mailbox_id, uid, blob, size, internal_date, flags, keywords, modseq)
         VALUES($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?,
        &[&mailbox, &uid, &blob.0, &(size as i64), &internal_date, &i64::from(flags.0), &keywords, &modseq],
    )
    .await?;
    let usage: i64 = tx
        .query_opt(
            &tx.prepare_cached(
                "UPDATE accounts SET usage_bytes = usage_bytes + $2
             WHERE id = (SELECT account_id FROM mailboxes WHERE id = $1) RETURNING usage_bytes",
            )
            .await?,
            &[&mailbox, &(size as i64)],
        )
        .await?
        .ok_or(StoreError::NotFound)?
        .get(0);
    Ok(Inserted { uid: uid as u32, modseq, usage_bytes: u64::try_from(usage).unwrap_or(0) })
}

impl Pg {
    pub(crate) async fn expunge(&self, account: AccountId, mailbox: MailboxId, uids: Vec<u32>) -> Result<Vec<u32>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_accounts(&tx, &[account]).await?;
        let mut p = Pending::default();
        let mut objects = Vec::new();
        let (mut removed, _) = remove_messages(&tx, account, mailbox, &uids, &mut p, &mut objects).await?;
        self.commit_publish(tx, p, objects).await?;
        removed.sort_unstable();
        Ok(removed)
    }

    /// A mailbox of `account` by id, or NotFound.
    async fn owned(tx: &Tx<'_>, account: AccountId, mailbox: MailboxId) -> Result<MailboxInfo> {
        mailbox_by_id(tx, mailbox).await?.filter(|m| m.account == account).ok_or(StoreError::NotFound)
    }

    async fn usage_in(tx: &Tx<'_>, account: AccountId) -> Result<u64> {
        let row = tx
            .query_opt(
                &tx.prepare_cached("SELECT usage_bytes FROM accounts WHERE id = $1 FOR NO KEY UPDATE").await?,
                &[&account],
            )
            .await?;
        Ok(row.ok_or(StoreError::NotFound)?.get::<_, i64>(0).max(0) as u64)
    }

    /// APPEND (IMAP-21, IMAP-23): the quota read locks the account row, so two nodes' APPENDs
    /// cannot both pass it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn append(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        blob: &NewBlob,
        internal_date: i64,
        flags: u32,
        keywords: Vec<String>,
        max_usage: u64,
    ) -> Result<(u32, u32)> {
        let body = self.body_of(blob).await?;
        let put: Vec<String> = if body.external { vec![body.id.0.clone()] } else { Vec::new() };
        let res = async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let m = Self::owned(&tx, account, mailbox).await?;
            if Self::usage_in(&tx, account).await? + blob.size() > max_usage {
                return Err(StoreError::OverQuota);
            }
            keyword_limit(&tx, mailbox, &keywords).await?;
            let kw = crate::store::mailbox_ops::merge_keywords("", FlagOp::Add, &keywords);
            insert_body(&tx, &body).await?;
            let uid = insert_message(&tx, mailbox, &body.id, blob.size(), internal_date, Flags(flags), &kw).await?.uid;
            let mut p = Pending::default();
            p.push(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox } });
            p.notify(&tx, self.node).await?;
            tx.commit().await?;
            self.publish(p);
            Ok((m.uidvalidity, uid))
        }
        .await;
        if res.is_err() {
            self.forget_objects(put).await;
        }
        if body.spilled {
            let _ = tokio::fs::remove_file(crate::store::blobs::path_of(&self.blob_dir, blob.id())).await;
        }
        res
    }

    /// COPY / MOVE. The source rows are read `FOR SHARE`, so an expunge of them on another node
    /// waits for this commit and then sees the copies still using the body.
    pub(crate) async fn copy_messages(
        &self,
        account: AccountId,
        src: MailboxId,
        uids: Vec<u32>,
        dst: MailboxId,
        remove: bool,
        max_usage: u64,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_accounts(&tx, &[account]).await?;
        Self::owned(&tx, account, src).await?;
        let d = Self::owned(&tx, account, dst).await?;
        let want: Vec<i64> = uids.iter().map(|u| i64::from(*u)).collect();
        let st =
            format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = $1 AND uid = ANY($2) ORDER BY uid FOR SHARE");
        let rows: Vec<MessageMeta> = tx.query(&st, &[&src, &want]).await?.iter().map(message_of).collect();
        if !remove {
            let add: u64 = rows.iter().map(|m| m.size).sum();
            if add > 0 && Self::usage_in(&tx, account).await? + add > max_usage {
                return Err(StoreError::OverQuota);
            }
        }
        let mut pairs = Vec::with_capacity(rows.len());
        for m in &rows {
            let new = insert_message(&tx, dst, &m.blob, m.size, m.internal_date, m.flags, &m.keywords).await?.uid;
            pairs.push((m.uid, new));
        }
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        if remove && !pairs.is_empty() {
            let moved: Vec<u32> = pairs.iter().map(|x| x.0).collect();
            remove_messages(&tx, account, src, &moved, &mut p, &mut objects).await?;
        }
        if !pairs.is_empty() {
            p.push(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox: dst } });
        }
        self.commit_publish(tx, p, objects).await?;
        Ok((d.uidvalidity, pairs))
    }

    /// STORE with one modseq bump (the mailbox row lock orders concurrent STOREs across nodes).
    pub(crate) async fn store_flags(
        &self,
        account: AccountId,
        mailbox: MailboxId,
        uids: Vec<u32>,
        op: FlagOp,
        flags: u32,
        keywords: Vec<String>,
    ) -> Result<Vec<MessageMeta>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_accounts(&tx, &[account]).await?;
        let modseq = next_modseq(&tx, account, mailbox).await?;
        if op != FlagOp::Remove {
            keyword_limit(&tx, mailbox, &keywords).await?;
        }
        let uids: Vec<i64> = uids.into_iter().map(i64::from).collect();
        let st =
            format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = $1 AND uid = ANY($2) ORDER BY uid FOR UPDATE");
        let mut changed = Vec::new();
        for r in tx.query(&st, &[&mailbox, &uids]).await? {
            let mut m = message_of(&r);
            let nf = match op {
                FlagOp::Replace => flags,
                FlagOp::Add => m.flags.0 | flags,
                FlagOp::Remove => m.flags.0 & !flags,
            };
            let nk = crate::store::mailbox_ops::merge_keywords(&m.keywords, op, &keywords);
            if nf == m.flags.0 && nk == m.keywords {
                continue;
            }
            tx.execute(
                &tx.prepare_cached(
                    "UPDATE messages SET flags = $3, keywords = $4, modseq = $5 WHERE mailbox_id = $1 AND uid = $2",
                )
                .await?,
                &[&mailbox, &i64::from(m.uid), &i64::from(nf), &nk, &modseq],
            )
            .await?;
            m.flags = Flags(nf);
            m.keywords = nk;
            m.modseq = modseq;
            changed.push(m);
        }
        let mut p = Pending::default();
        if !changed.is_empty() {
            p.push(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox } });
        }
        p.notify(&tx, self.node).await?;
        tx.commit().await?;
        self.publish(p);
        Ok(changed)
    }
}

/// The mailbox's next modseq (its row locked until commit, so modseqs follow commit order); the
/// mailbox must belong to `account`.
async fn next_modseq(tx: &Tx<'_>, account: AccountId, mailbox: MailboxId) -> Result<i64> {
    let sql = "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1 AND account_id = $2
               RETURNING highestmodseq";
    let row = tx.query_opt(&tx.prepare_cached(sql).await?, &[&mailbox, &account]).await?;
    Ok(row.ok_or(StoreError::NotFound)?.get(0))
}
