//! The expiry pass's queries (retention.md). Owned by the retention work.
//!
//! Every deleting call does at most `BATCH` deletions in one write job (RET-12) and goes through
//! `mailbox::remove_messages`, so usage, expunge records, file removal and the `Changed` event that
//! makes IMAP sessions send EXPUNGE (RET-11) are the same as for an IMAP EXPUNGE.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rusqlite::params;

use super::accounts::{self, Account, AccountId};
use super::blobs::{self, BlobId};
use super::mailbox::{MailboxId, remove_messages};
use super::writer::Tx;
use super::{Result, Store, StoreError};

/// At most this many deletions per transaction (RET-12).
pub const BATCH: usize = 1000;
/// The trim never touches messages younger than this (RET-5).
pub const TRIM_MIN_AGE_SECS: i64 = 86_400;
/// Push jobs older than this are dropped (RET-3, PUSH-11).
pub const PUSH_JOB_MAX_AGE_MS: i64 = 5 * 3600 * 1000;
/// Expunge records kept for session catch-up this long (RET-3).
pub const EXPUNGED_KEEP_SECS: i64 = 86_400;

/// What the pass uses from the config, in store terms.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    pub delete_mails_after_secs: i64,
    pub delete_large_after_secs: i64,
    pub large_message_size: u64,
    pub delete_inactive_after_secs: i64,
    pub max_mailbox_size: u64,
}

impl RetentionPolicy {
    /// Usage above this starts a trim (RET-2 step 4, RET-6).
    pub fn trim_threshold(&self) -> u64 {
        self.max_mailbox_size / 100 * 75 + self.max_mailbox_size % 100 * 75 / 100
    }
    /// The trim stops at or below this (RET-5).
    pub fn trim_target(&self) -> u64 {
        self.max_mailbox_size / 100 * 70 + self.max_mailbox_size % 100 * 70 / 100
    }
    /// Accounts whose last-login day is before this day are inactive (ACC-37): the whole last
    /// login day lies more than `delete_inactive_after` in the past.
    pub fn inactive_before_day(&self, now: i64) -> i64 {
        (now - self.delete_inactive_after_secs).div_euclid(86_400)
    }
}

/// Counts of one pass (RET-13).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    pub accounts_deleted: u64,
    pub removed_age: u64,
    pub removed_large: u64,
    pub removed_quota: u64,
    pub bytes_freed: u64,
    pub tokens_expired: u64,
    pub orphans_removed: u64,
}

/// Which message rule a batch applies (RET-2 steps 2 and 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireRule {
    Age,
    Large,
}

/// Messages and bytes removed by one batch; `more` when the batch was full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub count: u64,
    pub bytes: u64,
    pub more: bool,
}

/// Rows of other cleanup removed by one call (RET-3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub tokens: u64,
    pub push_jobs: u64,
    pub expunged: u64,
    pub mta_sts: u64,
    pub more: bool,
}

struct Victim {
    account: AccountId,
    mailbox: MailboxId,
    uid: u32,
    size: u64,
}

fn victim(r: &rusqlite::Row<'_>) -> rusqlite::Result<Victim> {
    Ok(Victim {
        account: r.get(0)?,
        mailbox: r.get(1)?,
        uid: r.get::<_, i64>(2)? as u32,
        size: r.get::<_, i64>(3)?.max(0) as u64,
    })
}

/// Remove the victims mailbox by mailbox through the shared primitive.
fn remove_victims(tx: &mut Tx<'_>, victims: Vec<Victim>) -> Result<(u64, u64)> {
    let mut by_box: BTreeMap<(AccountId, MailboxId), Vec<(u32, u64)>> = BTreeMap::new();
    for v in victims {
        by_box.entry((v.account, v.mailbox)).or_default().push((v.uid, v.size));
    }
    let (mut count, mut bytes) = (0u64, 0u64);
    for ((account, mailbox), list) in by_box {
        let uids: Vec<u32> = list.iter().map(|(u, _)| *u).collect();
        let removed = remove_messages(tx, account, mailbox, &uids)?;
        for (uid, size) in list {
            if removed.contains(&uid) {
                count += 1;
                bytes += size;
            }
        }
    }
    Ok((count, bytes))
}

pub(crate) fn expire_batch(tx: &mut Tx<'_>, rule: ExpireRule, p: &RetentionPolicy, now: i64) -> Result<Removed> {
    const COLS: &str =
        "SELECT b.account_id, m.mailbox_id, m.uid, m.size FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id";
    let victims = match rule {
        ExpireRule::Age => {
            let mut st =
                tx.prepare_cached(&format!("{COLS} WHERE m.internal_date < ?1 ORDER BY m.internal_date LIMIT ?2"))?;
            st.query_map(params![now - p.delete_mails_after_secs, BATCH as i64], victim)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        }
        ExpireRule::Large => {
            let mut st = tx.prepare_cached(&format!(
                "{COLS} WHERE m.internal_date < ?1 AND m.size > ?2 AND (m.flags & ?3) != 0 ORDER BY m.internal_date LIMIT ?4"
            ))?;
            st.query_map(
                params![now - p.delete_large_after_secs, p.large_message_size as i64, super::Flags::SEEN, BATCH as i64],
                victim,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        }
    };
    let full = victims.len() >= BATCH;
    let (count, bytes) = remove_victims(tx, victims)?;
    Ok(Removed { count, bytes, more: full })
}

/// One batch of the quota trim of an account (RET-5): oldest first across mailboxes, down to
/// `trim_target`, stopping at the first message younger than 24 h.
pub(crate) fn trim_batch(tx: &mut Tx<'_>, account: AccountId, p: &RetentionPolicy, now: i64) -> Result<Removed> {
    let Some(acc) = accounts::by_id(tx, account)? else { return Ok(Removed::default()) };
    let target = p.trim_target();
    let mut usage = acc.usage_bytes;
    if usage <= target {
        return Ok(Removed::default());
    }
    let rows = {
        let mut st = tx.prepare_cached(
            "SELECT b.account_id, m.mailbox_id, m.uid, m.size, m.internal_date FROM messages m
             JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = ?1 ORDER BY m.internal_date, m.id LIMIT ?2",
        )?;
        st.query_map(params![account, BATCH as i64], |r| Ok((victim(r)?, r.get::<_, i64>(4)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let full = rows.len() >= BATCH;
    let mut victims = Vec::new();
    let mut stopped = false;
    for (v, date) in rows {
        if usage <= target || date > now - TRIM_MIN_AGE_SECS {
            stopped = true;
            break;
        }
        usage = usage.saturating_sub(v.size);
        victims.push(v);
    }
    let (count, bytes) = remove_victims(tx, victims)?;
    Ok(Removed { count, bytes, more: full && !stopped && usage > target })
}

/// Delete at most `BATCH` rows of each kind of RET-3 cleanup.
pub(crate) fn cleanup_batch(tx: &mut Tx<'_>, now: i64) -> Result<Cleanup> {
    let lim = BATCH as i64;
    let tokens = tx.execute(
        "DELETE FROM push_tokens WHERE rowid IN (SELECT rowid FROM push_tokens WHERE set_at <= ?1 LIMIT ?2)",
        params![now - super::push::TOKEN_LIFETIME_SECS, lim],
    )?;
    // Too old, or whose token is gone (expired above): a job never outlives its token.
    let push_jobs = tx.execute(
        "DELETE FROM push_jobs WHERE id IN (SELECT id FROM push_jobs j WHERE created_at < ?1
           OR NOT EXISTS (SELECT 1 FROM push_tokens t WHERE t.account_id = j.account_id AND t.token = j.token)
           LIMIT ?2)",
        params![now * 1000 - PUSH_JOB_MAX_AGE_MS, lim],
    )?;
    let expunged = tx.execute(
        "DELETE FROM expunged WHERE (mailbox_id, uid) IN
           (SELECT mailbox_id, uid FROM expunged WHERE expunged_at < ?1 LIMIT ?2)",
        params![now - EXPUNGED_KEEP_SECS, lim],
    )?;
    let mta_sts = tx.execute(
        "DELETE FROM mta_sts WHERE domain IN (SELECT domain FROM mta_sts WHERE fetched_at + max_age < ?1 LIMIT ?2)",
        params![now, lim],
    )?;
    let more = [tokens, push_jobs, expunged, mta_sts].iter().any(|n| *n >= BATCH);
    Ok(Cleanup {
        tokens: tokens as u64,
        push_jobs: push_jobs as u64,
        expunged: expunged as u64,
        mta_sts: mta_sts as u64,
        more,
    })
}

fn inactive(c: &rusqlite::Connection, before_day: i64) -> Result<Vec<Account>> {
    let mut st = c.prepare_cached("SELECT id FROM accounts WHERE last_login_day < ?1 ORDER BY id")?;
    let ids = st.query_map([before_day], |r| r.get::<_, i64>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(a) = accounts::by_id(c, id)? {
            out.push(a);
        }
    }
    Ok(out)
}

fn over(c: &rusqlite::Connection, threshold: u64) -> Result<Vec<AccountId>> {
    let mut st = c.prepare_cached("SELECT id FROM accounts WHERE usage_bytes > ?1 ORDER BY id")?;
    Ok(st.query_map([threshold as i64], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl Store {
    /// Accounts inactive under the policy (ACC-37).
    pub async fn inactive_accounts(&self, p: RetentionPolicy, now: i64) -> Result<Vec<Account>> {
        if let Some(pg) = self.pg() {
            return pg.inactive_accounts(p.inactive_before_day(now)).await;
        }
        self.read(move |c| inactive(c, p.inactive_before_day(now))).await
    }

    /// Accounts whose usage is above the trim threshold (RET-2 step 4).
    pub async fn accounts_over(&self, threshold: u64) -> Result<Vec<AccountId>> {
        if let Some(pg) = self.pg() {
            return pg.accounts_over(threshold).await;
        }
        self.read(move |c| over(c, threshold)).await
    }

    /// One batch of the age or large rule.
    pub async fn expire_messages(&self, rule: ExpireRule, p: RetentionPolicy, now: i64) -> Result<Removed> {
        if let Some(pg) = self.pg() {
            return pg.expire_messages(rule, p, now).await;
        }
        self.write(move |tx| expire_batch(tx, rule, &p, now)).await
    }

    /// One batch of the quota trim of an account.
    pub async fn trim_account(&self, account: AccountId, p: RetentionPolicy, now: i64) -> Result<Removed> {
        if let Some(pg) = self.pg() {
            return pg.trim_account(account, p, now).await;
        }
        self.write(move |tx| trim_batch(tx, account, &p, now)).await
    }

    /// One batch of the RET-3 cleanup in the database.
    pub async fn cleanup(&self, now: i64) -> Result<Cleanup> {
        if let Some(pg) = self.pg() {
            return pg.cleanup(now).await;
        }
        self.write(move |tx| cleanup_batch(tx, now)).await
    }

    /// Message files older than `min_age_secs` that no message and no queue entry refers to
    /// (left by a crash between writing the file and the commit, RET-3).
    pub async fn orphan_blobs(&self, min_age_secs: u64) -> Result<Vec<BlobId>> {
        let dir = self.blob_dir().to_path_buf();
        let old = tokio::task::spawn_blocking(move || -> Result<Vec<BlobId>> {
            let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(min_age_secs);
            let mut old = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let Some(id) = entry.file_name().to_str().and_then(BlobId::parse_file_name) else { continue };
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() && meta.modified().is_ok_and(|m| m < cutoff) {
                    old.push(id);
                }
            }
            Ok(old)
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        let mut out = Vec::new();
        for chunk in old.chunks(BATCH) {
            let chunk = chunk.to_vec();
            out.extend(self.read(move |c| blobs::unreferenced(c, &chunk)).await?);
        }
        Ok(out)
    }

    /// Remove orphan files found by `orphan_blobs`, re-checking each against the database.
    pub async fn remove_orphans(&self, ids: Vec<BlobId>) -> Result<u64> {
        let mut n = 0;
        for chunk in ids.chunks(BATCH) {
            let chunk = chunk.to_vec();
            for id in self.read(move |c| blobs::unreferenced(c, &chunk)).await? {
                if tokio::fs::remove_file(self.blob_path(&id)).await.is_ok() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Issue 27, `[blobs] backend = "s3"`: orphan objects (no row, older than the grace period)
    /// deleted, at most one batch per pass; with `dry` only counted. 0 without an object store.
    pub async fn sweep_orphan_objects(&self, now: i64, dry: bool) -> Result<u64> {
        match self.pg() {
            Some(pg) => pg.sweep_orphan_objects(now, dry).await,
            None => Ok(0),
        }
    }

    /// RET-14: run the whole database part of a pass in one job and roll it back, so the counts
    /// are exactly those a real pass would produce and nothing changes. `orphans_removed` is left
    /// to the caller (files are not in the transaction).
    pub async fn expiry_dry_run(&self, p: RetentionPolicy, now: i64) -> Result<ExpiryReport> {
        if let Some(pg) = self.pg() {
            return pg.expiry_dry_run(p, now).await;
        }
        let out: Arc<Mutex<Option<Result<ExpiryReport>>>> = Arc::new(Mutex::new(None));
        let slot = out.clone();
        let res = self
            .write(move |tx| {
                let r = dry_run_in_tx(tx, &p, now);
                if let Ok(mut s) = slot.lock() {
                    *s = Some(r);
                }
                Err::<(), _>(StoreError::Invalid("dry run: rolled back"))
            })
            .await;
        let got = out.lock().ok().and_then(|mut s| s.take());
        match (got, res) {
            (Some(r), _) => r,
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Closed),
        }
    }
}

fn dry_run_in_tx(tx: &mut Tx<'_>, p: &RetentionPolicy, now: i64) -> Result<ExpiryReport> {
    let mut rep = ExpiryReport::default();
    for acc in inactive(tx, p.inactive_before_day(now))? {
        accounts::delete_in_tx(tx, acc.id, &[])?;
        rep.accounts_deleted += 1;
        rep.bytes_freed += acc.usage_bytes;
    }
    for rule in [ExpireRule::Age, ExpireRule::Large] {
        loop {
            let r = expire_batch(tx, rule, p, now)?;
            match rule {
                ExpireRule::Age => rep.removed_age += r.count,
                ExpireRule::Large => rep.removed_large += r.count,
            }
            rep.bytes_freed += r.bytes;
            if !r.more {
                break;
            }
        }
    }
    for account in over(tx, p.trim_threshold())? {
        loop {
            let r = trim_batch(tx, account, p, now)?;
            rep.removed_quota += r.count;
            rep.bytes_freed += r.bytes;
            if !r.more {
                break;
            }
        }
    }
    loop {
        let c = cleanup_batch(tx, now)?;
        rep.tokens_expired += c.tokens;
        if !c.more {
            break;
        }
    }
    Ok(rep)
}
