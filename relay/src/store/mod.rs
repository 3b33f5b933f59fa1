//! The store: the only writer of accounts, mailboxes, messages, metadata, push jobs and the queue.
//!
//! In: typed calls from the protocol stages. Out: committed state plus `StoreEvent`s published
//! after each commit (IMAP IDLE and the push notifier listen to them).
//! Rules: rusqlite types never leave this module; writes go to one writer thread that
//! group-commits; reads run on `spawn_blocking`, except bounded point lookups on the latency path
//! (`read_point`: a few rows by key, microseconds) which run in place; a write that
//! returned `Ok` is on stable storage (message file and directory fsync'd, WAL fsync'd with
//! `synchronous = FULL`; small message bodies are rows written in that same commit). A later
//! PostgreSQL + S3 backend replaces this module behind the same API.

mod accounts;
mod blobs;
mod checkpoint;
mod deliver;
mod events;
mod invites;
mod mailbox;
mod mailbox_ops;
mod metadata;
mod mta_sts;
pub mod postgres;
mod push;
mod queue;
mod retention;
mod schema;
mod scrub;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

pub use accounts::{Account, AccountId, CreateOutcome, DeleteReason};
pub use blobs::{BlobId, BlobWriter, INLINE_MAX, NewBlob};
pub use deliver::{Delivery, DeliveryReceipt, RemoteBatch};
pub use events::{Events, MailboxEvent, MessageStored, Subscription};
pub use invites::{Invite, InviteUse};
pub use mailbox::{Flags, MailboxId, MailboxInfo, MessageMeta};
pub use mailbox_ops::{FlagOp, MAX_KEYWORDS, MAX_MAILBOXES};
pub use mta_sts::CachedPolicy;
pub use push::{JobDone, PushJob};
pub use queue::{AttemptOutcome, QueueEntry, QueueRcpt};
/// Recipient states of a queue entry.
pub mod queue_state {
    pub use super::queue::{BOUNCED, DONE, PENDING};
}
pub use retention::{Cleanup, ExpireRule, ExpiryReport, Removed, RetentionPolicy};

/// Errors of the store. Callers map them to a protocol reply (`451 4.3.0 Local error`, IMAP `NO`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("message file: {0}")]
    Io(#[from] std::io::Error),
    #[error("database schema version {found} is newer than this chatrelay knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the store is shut down")]
    Closed,
    /// No write transaction could be opened (another process holds the database's write lock,
    /// or the disk refused): the store itself is running.
    #[error("database busy: {0}")]
    Busy(String),
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("over quota")]
    OverQuota,
    /// The sending account was deleted or blocked before its message was committed.
    #[error("sender account gone or blocked")]
    SenderGone,
    #[error("limit reached: {0}")]
    Limit(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

struct Inner {
    db_path: PathBuf,
    blob_dir: PathBuf,
    writer: writer::Writer,
    readers: Mutex<Vec<Connection>>,
    events: Events,
    /// `[store] backend = "postgres"` (issue 27): the calls it serves go there instead.
    pg: Option<Arc<postgres::Pg>>,
}

/// Cheap to clone; all clones share one writer thread and one reader pool.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

const READER_POOL: usize = 8;
/// Idle readers kept after a burst.
const READERS_AT_REST: usize = 2;

/// Prepared statements kept per connection (the store has 41 `prepare_cached` call sites).
const STATEMENT_CACHE: usize = 64;

fn open_conn(path: &Path, flags: OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Statement journals (each writer job's savepoint) and sorts stay in memory instead of
    // spilling to unlinked temp files (an open + unlink + writes inside a group commit).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // PRIV-16a: deleted rows are overwritten with zeros, not left readable in free pages.
    conn.pragma_update(None, "secure_delete", true)?;
    // rusqlite keeps 16 statements by default, fewer than the store's distinct queries, so a busy
    // connection re-parsed SQL all the time and its cached statements were allocated afresh all
    // through a burst (P5: they pin heap pages afterwards). Every query fits in this one.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

impl Store {
    /// Open (creating if needed) the store under `data_dir`, migrating the schema.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let db_path = data_dir.join("chatrelay.db");
        let blob_dir = data_dir.join("blobs");
        std::fs::create_dir_all(&blob_dir)?;
        let mut conn = open_conn(&db_path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::WRITER_AUTOCHECKPOINT)?;
        conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_SIZE_LIMIT)?;
        schema::migrate(&mut conn, &db_path)?;
        let events = Events::new();
        let checkpointer = checkpoint::Checkpointer::spawn(&db_path)?;
        let writer = writer::Writer::spawn(conn, events.clone(), checkpointer)?;
        Ok(Self {
            inner: Arc::new(Inner { db_path, blob_dir, writer, readers: Mutex::new(Vec::new()), events, pg: None }),
        })
    }

    /// Open the store the config names (issue 27): SQLite in `data_dir`, or the shared
    /// PostgreSQL (its schema migrated, its event listener started) beside the node's local
    /// SQLite, which then holds only what the PostgreSQL backend does not serve yet.
    pub fn open_config(cfg: &crate::config::Config) -> Result<Self> {
        let store = Self::open(&cfg.data_dir)?;
        if cfg.store.backend != crate::config::StoreKind::Postgres {
            return Ok(store);
        }
        let Inner { db_path, blob_dir, writer, readers, events, .. } =
            Arc::try_unwrap(store.inner).map_err(|_| StoreError::Closed)?;
        // The DKIM key is shared through the database unless the operator names a file of their own.
        let dkim = cfg.dkim.key.is_none().then(|| crate::outbound::dkim_key::default_path(&cfg.data_dir));
        let pg = postgres::Pg::open(
            &cfg.store.url,
            cfg.store.pool_size,
            cfg.store.timeout.map_or(postgres::DEFAULT_TIMEOUT, crate::config::ConfDuration::get),
            &cfg.blobs,
            events.clone(),
            blob_dir.clone(),
            dkim,
        )?;
        Ok(Self { inner: Arc::new(Inner { db_path, blob_dir, writer, readers, events, pg: Some(pg) }) })
    }

    pub(crate) fn pg(&self) -> Option<&postgres::Pg> {
        self.inner.pg.as_deref()
    }

    /// Which backend serves this store ("sqlite" or "postgres").
    pub fn backend_name(&self) -> &'static str {
        if self.inner.pg.is_some() { "postgres" } else { "sqlite" }
    }

    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    /// Run `f` in the writer thread inside the current group transaction. `f`'s changes are rolled
    /// back alone if it fails; the returned future resolves only after the commit is durable.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut writer::Tx<'_>) -> Result<T> + Send + 'static,
    {
        self.inner.writer.submit(f).await
    }

    /// A bounded point lookup (a few rows by key) on the latency path: run right here on the
    /// calling async thread when a pooled reader is free, since the hop to a blocking thread and
    /// back costs more than the query (issue 11, P2: two context switches, ≈ 0.1 ms on a small
    /// VM). Never for scans or anything whose size the caller does not bound; those use `read`.
    /// WAL readers never wait for the writer, so this does not block on it.
    pub(crate) async fn read_point<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let pooled = self.inner.readers.lock().ok().and_then(|mut p| p.pop());
        match pooled {
            Some(conn) => {
                let out = f(&conn);
                self.inner.give_back(conn);
                out
            }
            None => self.read(f).await,
        }
    }

    /// Run a read-only query on a pooled connection off the async threads.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f)).await.map_err(|_| StoreError::Closed)?
    }

    /// Path of a blob's file, for streaming it out (IMAP FETCH, outbound).
    pub fn blob_path(&self, id: &BlobId) -> PathBuf {
        blobs::path_of(&self.inner.blob_dir, id)
    }

    /// Start writing a new message file. `finish()` makes it durable; the caller then references
    /// it in a `deliver`, `append` or `enqueue` call.
    pub async fn new_blob(&self) -> Result<BlobWriter> {
        BlobWriter::create(&self.inner.blob_dir).await
    }

    pub fn blob_dir(&self) -> &Path {
        &self.inner.blob_dir
    }

    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// After a burst (`memory.rs`): close idle pooled readers beyond `READERS_AT_REST` (each
    /// holds ≈ 0.1 MiB of schema and statement caches; a new one opens in about a millisecond)
    /// and drop the page caches of the rest. They refill on demand from the OS page cache.
    pub async fn release_memory(&self) {
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut pool = inner.readers.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
            pool.truncate(READERS_AT_REST);
            for conn in &pool {
                let _ = conn.execute_batch("PRAGMA shrink_memory");
            }
            if let Ok(mut p) = inner.readers.lock() {
                let room = READER_POOL.saturating_sub(p.len());
                p.extend(pool.into_iter().take(room));
            }
        })
        .await;
    }

    /// A cheap read plus write round trip, for `/healthz`.
    pub async fn health_check(&self) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.health_check().await;
        }
        self.read(|c| Ok(c.query_row("SELECT count(*) FROM kv", [], |r| r.get::<_, i64>(0))?)).await?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO kv(key, value) VALUES('health', strftime('%s','now'))
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [],
            )?;
            Ok(())
        })
        .await
    }
}

impl Inner {
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open_conn(&self.db_path, OpenFlags::SQLITE_OPEN_READ_ONLY)?,
        };
        let out = f(&conn);
        self.give_back(conn);
        out
    }

    fn give_back(&self, conn: Connection) {
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < READER_POOL
        {
            pool.push(conn);
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Days since the Unix epoch, UTC (last-login granularity, ACC-24).
pub fn today() -> i64 {
    now_secs().div_euclid(86_400)
}
