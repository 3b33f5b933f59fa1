//! The PostgreSQL backend (issue 27): the same calls as the SQLite store, for several nodes
//! sharing one database. Every write is one transaction; `Ok` comes only after its COMMIT
//! returned (PostgreSQL's commit is durable with `synchronous_commit = on`, the default).
//! Message bodies are rows of `blob_data` written in the delivering transaction (as SQLite's small
//! ones are), whatever their size, until the object-store backend takes the large ones.
//!
//! Cross-node events: a transaction that changes a mailbox also calls `pg_notify` with the
//! account and its modseq; PostgreSQL delivers notifications only at commit, so a node hears of a
//! change exactly when it is visible. Each node publishes its own events locally right after the
//! commit (as the SQLite store does) and ignores its own notifications; `listen.rs` turns the
//! other nodes' notifications into the same local events, and after each (re)connect of the
//! LISTEN connection tells every subscribed account to catch up from its modseq cursor, so a
//! notification lost while disconnected only delays a wake-up.
//!
//! One file per job, as on the SQLite side: `accounts`, `deliver`, `mailbox`, `mailbox_ops`,
//! `queue`, `push`, `retention`, `blobs`, `events`, `keys`, `invites`; this file holds the pool, the row
//! mappers and the commit-then-publish path they share.

mod accounts;
mod blobs;
mod deliver;
mod events;
mod invites;
mod keys;
mod listen;
mod mailbox;
mod mailbox_ops;
pub mod migrate;
mod push;
mod queue;
mod retention;
pub(crate) mod s3;
pub(crate) mod schema;
pub(crate) mod tls_material;
mod watchdog;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{IsolationLevel, NoTls, Row};

use super::accounts::{Account, AccountId, CreateOutcome};
use super::blobs::{BlobId, NewBlob};
use super::deliver::{Delivery, DeliveryReceipt};
use super::events::{Events, MailboxEvent, MessageStored, StoreEvent};
use super::mailbox::{Flags, MailboxId, MailboxInfo, MessageMeta};
use super::mailbox_ops::{FlagOp, MAX_KEYWORDS, MAX_MAILBOXES};
use super::push::{JobDone, PushJob};
use super::queue::{AttemptOutcome, QueueEntry, QueueRcpt};
use super::retention::{
    BATCH, Cleanup, EXPUNGED_KEEP_SECS, ExpireRule, PUSH_JOB_MAX_AGE_MS, Removed, RetentionPolicy, TRIM_MIN_AGE_SECS,
};
use super::{Result, StoreError, now_millis, now_secs, today};

use events::Pending;
pub(crate) use events::parse_payload;
use keys::{share_dkim, share_secret};

/// The NOTIFY channel every node listens on.
pub(crate) const CHANNEL: &str = "chatrelay";

const DEFAULT_POOL: usize = 16;
/// How long the database may take to answer a request, to accept a connection, or to hand out a
/// pooled one, before the call fails (451/NO) instead of hanging (`[store] timeout`).
pub(crate) const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// The lock order of every write transaction, so two of them never wait for each other in a
/// circle (PostgreSQL would abort one as a deadlock: a 451 or NO): an account's row before any of
/// its mailbox or message rows, and accounts in ascending id order, all in this one statement.
/// `FOR NO KEY UPDATE` is what the usage `UPDATE` takes anyway; it lets the sender check of a
/// delivery (`FOR KEY SHARE`) through, so deliveries crossing between two accounts do not wait.
async fn lock_accounts(tx: &Tx<'_>, accounts: &[AccountId]) -> Result<()> {
    tx.execute(
        &tx.prepare_cached("SELECT 1 FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE").await?,
        &[&accounts],
    )
    .await?;
    Ok(())
}

pub(crate) struct Pg {
    pool: Pool,
    /// Random per process: tells this node's notifications from the others'.
    node: u64,
    events: Events,
    blob_dir: PathBuf,
    /// `[blobs] backend = "s3"`: bodies over `INLINE_MAX` go there.
    s3: Option<s3::S3>,
    /// `[blobs] orphan_grace`: an object without a row is swept only when older than this.
    orphan_grace_secs: i64,
}

/// A message body ready for the delivering transaction.
struct Body {
    id: BlobId,
    /// Empty when the body is in the object store.
    data: Bytes,
    /// Read from a spill file, which goes after the commit.
    spilled: bool,
    /// Already PUT to the object store.
    external: bool,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // SQLSTATE class 08 (connection) and a closed client: the database is unreachable, not
        // wrong; callers answer 451 / NO either way.
        StoreError::Busy(format!("postgres: {e}"))
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Busy(format!("postgres pool: {e}"))
}

const ACC_COLS: &str = "id, address, password_hash, created_day, last_login_day, blocked, cleartext, usage_bytes";

const MBOX_COLS: &str = "id, account_id, name, uidvalidity, uidnext, highestmodseq, subscribed";

const MSG_COLS: &str = "uid, blob, size, internal_date, flags, keywords, modseq";

fn account_of(r: &Row) -> Account {
    Account {
        id: r.get(0),
        address: r.get(1),
        password_hash: r.get(2),
        created_day: r.get(3),
        last_login_day: r.get(4),
        blocked: r.get::<_, i64>(5) != 0,
        cleartext: r.get::<_, i64>(6) != 0,
        usage_bytes: r.get::<_, i64>(7).max(0) as u64,
    }
}

fn mailbox_of(r: &Row) -> MailboxInfo {
    MailboxInfo {
        id: r.get(0),
        account: r.get(1),
        name: r.get(2),
        uidvalidity: r.get::<_, i64>(3) as u32,
        uidnext: r.get::<_, i64>(4) as u32,
        highestmodseq: r.get(5),
        subscribed: r.get::<_, i64>(6) != 0,
    }
}

fn message_of(r: &Row) -> MessageMeta {
    MessageMeta {
        uid: r.get::<_, i64>(0) as u32,
        blob: BlobId(r.get(1)),
        size: r.get::<_, i64>(2).max(0) as u64,
        internal_date: r.get(3),
        flags: Flags(r.get::<_, i64>(4) as u32),
        keywords: r.get(5),
        modseq: r.get(6),
    }
}

impl Pg {
    /// Connect, migrate the schema and start listening for the other nodes' events. Runs the
    /// migration on a thread of its own so it can be called from sync and async code alike.
    pub(crate) fn open(
        url: &str,
        pool_size: usize,
        timeout: std::time::Duration,
        blobs: &crate::config::Blobs,
        events: Events,
        blob_dir: PathBuf,
        dkim_path: Option<PathBuf>,
    ) -> Result<Arc<Self>> {
        let s3 = match blobs.backend {
            crate::config::BlobKind::S3 => Some(s3::S3::new(blobs)?),
            crate::config::BlobKind::Local => None,
        };
        let config: tokio_postgres::Config =
            url.parse().map_err(|e: tokio_postgres::Error| StoreError::Busy(format!("store.url: {e}")))?;
        let mig_cfg = config.clone();
        let data_dir = blob_dir.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        std::thread::scope(|s| {
            s.spawn(|| -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async {
                    let (mut client, conn) = mig_cfg.connect(NoTls).await?;
                    let driver = tokio::spawn(conn);
                    let mut out = schema::migrate(&mut client).await;
                    if out.is_ok() {
                        out = share_secret(&client, &data_dir).await;
                    }
                    if out.is_ok()
                        && let Some(path) = &dkim_path
                    {
                        out = share_dkim(&client, path).await;
                    }
                    drop(client);
                    let _ = driver.await;
                    out
                })
            })
            .join()
            .map_err(|_| StoreError::Closed)?
        })?;
        let mgr = Manager::from_connect(
            config.clone(),
            watchdog::WatchedConnect { timeout },
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let size = if pool_size == 0 { DEFAULT_POOL } else { pool_size };
        // Waiting for a free connection, opening one and checking one are bounded like a query.
        let pool = Pool::builder(mgr)
            .max_size(size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Busy(e.to_string()))?;
        let node = rand::random::<u64>();
        let orphan_grace_secs = blobs.orphan_grace.map_or(blobs::ORPHAN_GRACE_SECS, |d| d.get().as_secs() as i64);
        let pg = Arc::new(Self { pool, node, events, blob_dir, s3, orphan_grace_secs });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(listen::run(config, pg.clone(), timeout));
        }
        Ok(pg)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_err)
    }

    /// Delete objects whose rows are gone (after the commit; one left behind by a crash here is
    /// an orphan in the bucket, never a dangling reference).
    async fn forget_objects(&self, ids: Vec<String>) {
        let Some(s3) = &self.s3 else { return };
        for id in ids {
            if let Err(e) = s3.delete(&id).await {
                tracing::warn!(error = %e, "object store: delete failed; object left behind");
            }
        }
    }

    /// The end of a write that other sessions must hear of: NOTIFY inside the transaction, COMMIT,
    /// then the events for this node's sessions and the removal of objects no row names any more.
    async fn commit_publish(&self, tx: Tx<'_>, p: Pending, objects: Vec<String>) -> Result<()> {
        p.notify(&tx, self.node).await?;
        tx.commit().await?;
        self.publish(p);
        self.forget_objects(objects).await;
        Ok(())
    }

    fn publish(&self, pending: Pending) {
        for ev in pending.0 {
            self.events.publish(ev);
        }
    }

    pub(crate) async fn health_check(&self) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached(
                "INSERT INTO kv(key, value) VALUES('health', extract(epoch FROM now())::bigint::text)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )
            .await?,
            &[],
        )
        .await?;
        Ok(())
    }
}
