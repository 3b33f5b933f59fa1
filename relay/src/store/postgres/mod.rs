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

mod listen;
pub mod migrate;
pub(crate) mod s3;
pub(crate) mod schema;

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

/// The NOTIFY channel every node listens on.
pub(crate) const CHANNEL: &str = "chatrelay";
const DEFAULT_POOL: usize = 16;

type Tx<'a> = deadpool_postgres::Transaction<'a>;

pub(crate) struct Pg {
    pool: Pool,
    /// Random per process: tells this node's notifications from the others'.
    node: u64,
    events: Events,
    blob_dir: PathBuf,
    /// `[blobs] backend = "s3"`: bodies over `INLINE_MAX` go there.
    s3: Option<s3::S3>,
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

/// A notification payload: `node account kind [mailbox uid modseq]`.
fn payload(node: u64, account: AccountId, ev: &MailboxEvent) -> String {
    match ev {
        MailboxEvent::Appended { mailbox, uid, modseq } => format!("{node:x} {account} A {mailbox} {uid} {modseq}"),
        MailboxEvent::Changed { mailbox } => format!("{node:x} {account} C {mailbox}"),
        MailboxEvent::MailboxesChanged => format!("{node:x} {account} M"),
        MailboxEvent::AccountGone => format!("{node:x} {account} G"),
    }
}

/// Parse a payload; `None` for one of this node's own or a malformed one.
pub(crate) fn parse_payload(me: u64, p: &str) -> Option<StoreEvent> {
    let mut it = p.split(' ');
    let node = u64::from_str_radix(it.next()?, 16).ok()?;
    if node == me {
        return None;
    }
    let account: AccountId = it.next()?.parse().ok()?;
    let ev = match it.next()? {
        "Q" => return Some(StoreEvent::QueueChanged),
        "A" => MailboxEvent::Appended {
            mailbox: it.next()?.parse().ok()?,
            uid: it.next()?.parse().ok()?,
            modseq: it.next()?.parse().ok()?,
        },
        "C" => MailboxEvent::Changed { mailbox: it.next()?.parse().ok()? },
        "M" => MailboxEvent::MailboxesChanged,
        "G" => MailboxEvent::AccountGone,
        _ => return None,
    };
    Some(StoreEvent::Mailbox { account, event: ev })
}

/// The events of one transaction: NOTIFY'd inside it, published locally after its commit.
#[derive(Default)]
struct Pending(Vec<StoreEvent>);

impl Pending {
    fn push(&mut self, ev: StoreEvent) {
        self.0.push(ev);
    }
    async fn notify(&self, tx: &Tx<'_>, node: u64) -> Result<()> {
        for ev in &self.0 {
            let (account, mev) = match ev {
                StoreEvent::Mailbox { account, event } => (*account, event.clone()),
                StoreEvent::Stored(m) => {
                    (m.account, MailboxEvent::Appended { mailbox: m.mailbox, uid: m.uid, modseq: m.modseq })
                }
                StoreEvent::QueueChanged => {
                    // Every node's scheduler may take the new entries.
                    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &format!("{node:x} 0 Q")]).await?;
                    continue;
                }
            };
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload(node, account, &mev)]).await?;
        }
        Ok(())
    }
}

async fn by_address(c: &impl GenericClient, address: &str) -> Result<Option<Account>> {
    let st = format!("SELECT {ACC_COLS} FROM accounts WHERE address = $1");
    Ok(c.query_opt(&st, &[&address]).await?.as_ref().map(account_of))
}

async fn by_id(c: &impl GenericClient, id: AccountId) -> Result<Option<Account>> {
    let st = format!("SELECT {ACC_COLS} FROM accounts WHERE id = $1");
    Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(account_of))
}

async fn is_tombstoned(c: &impl GenericClient, hash: &[u8]) -> Result<bool> {
    Ok(c.query_opt("SELECT 1 FROM tombstones WHERE hash = $1", &[&hash]).await?.is_some())
}

/// A UIDVALIDITY larger than any handed out before (IMAP-16), across all nodes: the kv row is
/// locked by the upsert until this transaction ends.
async fn next_uidvalidity(tx: &Tx<'_>) -> Result<u32> {
    let now = now_secs();
    let row = tx
        .query_one(
            "INSERT INTO kv(key, value) VALUES('uidvalidity', $1::bigint::text)
             ON CONFLICT(key) DO UPDATE SET value = greatest(kv.value::bigint + 1, $1::bigint)::text
             RETURNING value::bigint",
            &[&now],
        )
        .await?;
    Ok(row.get::<_, i64>(0).min(i64::from(u32::MAX)) as u32)
}

async fn mailbox_by_name(c: &impl GenericClient, account: AccountId, name: &str) -> Result<Option<MailboxInfo>> {
    let st = format!("SELECT {MBOX_COLS} FROM mailboxes WHERE account_id = $1 AND name = $2");
    Ok(c.query_opt(&st, &[&account, &name]).await?.as_ref().map(mailbox_of))
}

async fn mailbox_by_id(c: &impl GenericClient, id: MailboxId) -> Result<Option<MailboxInfo>> {
    let st = format!("SELECT {MBOX_COLS} FROM mailboxes WHERE id = $1");
    Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(mailbox_of))
}

async fn messages_of(c: &impl GenericClient, mailbox: MailboxId) -> Result<Vec<MessageMeta>> {
    let st = format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = $1 ORDER BY uid");
    Ok(c.query(&st, &[&mailbox]).await?.iter().map(message_of).collect())
}

async fn inbox_id(tx: &Tx<'_>, account: AccountId) -> Result<MailboxId> {
    if let Some(m) = mailbox_by_name(tx, account, "INBOX").await? {
        return Ok(m.id);
    }
    let uv = i64::from(next_uidvalidity(tx).await?);
    let row = tx
        .query_one(
            "INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES($1, 'INBOX', $2) RETURNING id",
            &[&account, &uv],
        )
        .await?;
    Ok(row.get(0))
}

/// The SQLite store's `remove_messages` in `tx`: rows deleted, expunge records written at one
/// new modseq, usage reduced, unreferenced bodies dropped (their objects into `objects`), the
/// change into `p`. Returns the UIDs removed and the bytes freed.
async fn remove_messages(
    tx: &Tx<'_>,
    account: AccountId,
    mailbox: MailboxId,
    uids: &[u32],
    p: &mut Pending,
    objects: &mut Vec<String>,
) -> Result<(Vec<u32>, i64)> {
    let modseq: i64 = tx
        .query_opt(
            "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1 AND account_id = $2
             RETURNING highestmodseq",
            &[&mailbox, &account],
        )
        .await?
        .ok_or(StoreError::NotFound)?
        .get(0);
    let uids: Vec<i64> = uids.iter().map(|u| i64::from(*u)).collect();
    let rows = tx
        .query(
            "DELETE FROM messages WHERE mailbox_id = $1 AND uid = ANY($2) RETURNING uid, blob, size",
            &[&mailbox, &uids],
        )
        .await?;
    let mut removed: Vec<u32> = Vec::with_capacity(rows.len());
    let mut blobs = Vec::with_capacity(rows.len());
    let mut freed: i64 = 0;
    for r in &rows {
        let uid: i64 = r.get(0);
        tx.execute(
            "INSERT INTO expunged(mailbox_id, uid, modseq) VALUES($1, $2, $3)
             ON CONFLICT(mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
            &[&mailbox, &uid, &modseq],
        )
        .await?;
        removed.push(uid as u32);
        blobs.push(r.get::<_, String>(1));
        freed += r.get::<_, i64>(2);
    }
    tx.execute("UPDATE accounts SET usage_bytes = greatest(0, usage_bytes - $2) WHERE id = $1", &[&account, &freed])
        .await?;
    objects.extend(drop_unreferenced(tx, &blobs).await?);
    if !removed.is_empty() {
        p.push(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox } });
    }
    Ok((removed, freed))
}

/// The lock order of every write transaction, so two of them never wait for each other in a
/// circle (PostgreSQL would abort one as a deadlock: a 451 or NO): an account's row before any of
/// its mailbox or message rows, and accounts in ascending id order, all in this one statement.
/// `FOR NO KEY UPDATE` is what the usage `UPDATE` takes anyway; it lets the sender check of a
/// delivery (`FOR KEY SHARE`) through, so deliveries crossing between two accounts do not wait.
async fn lock_accounts(tx: &Tx<'_>, accounts: &[AccountId]) -> Result<()> {
    tx.execute("SELECT 1 FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE", &[&accounts]).await?;
    Ok(())
}

/// PUSH-13 as on SQLite: one pending job per valid token, later messages merged into it.
async fn enqueue_push(tx: &Tx<'_>, account: AccountId, now_ms: i64) -> Result<()> {
    let now = now_ms / 1000;
    tx.execute(
        "INSERT INTO push_jobs(account_id, token, created_at, next_attempt, last_message_at)
         SELECT account_id, token, $2, $2, $2 FROM push_tokens
         WHERE account_id = $1 AND set_at > $3 AND set_at <= $4
         ON CONFLICT(account_id, token) DO UPDATE SET
           messages = push_jobs.messages + 1, last_message_at = excluded.last_message_at",
        &[&account, &now_ms, &(now - super::push::TOKEN_LIFETIME_SECS), &(now + 60)],
    )
    .await?;
    Ok(())
}

/// How long a claimed push job is left to its node: a request takes seconds; a node that died
/// holding it hands it on after this.
const PUSH_LEASE_MS: i64 = 30_000;

/// IMAP-19: at most `MAX_KEYWORDS` distinct keywords in a mailbox with `new` added.
async fn keyword_limit(tx: &Tx<'_>, mailbox: MailboxId, new: &[String]) -> Result<()> {
    if new.is_empty() {
        return Ok(());
    }
    let rows = tx
        .query("SELECT DISTINCT keywords FROM messages WHERE mailbox_id = $1 AND keywords != ''", &[&mailbox])
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

struct Inserted {
    uid: u32,
    modseq: i64,
    usage_bytes: u64,
}

/// The SQLite store's `insert_message`: the mailbox row's UPDATE locks it until commit, so UIDs
/// and modseqs of one mailbox are handed out in commit order across nodes.
async fn insert_message(
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
            "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 WHERE id = $1
             RETURNING uidnext - 1, highestmodseq",
            &[&mailbox],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
    let (uid, modseq): (i64, i64) = (row.get(0), row.get(1));
    tx.execute(
        "INSERT INTO messages(mailbox_id, uid, blob, size, internal_date, flags, keywords, modseq)
         VALUES($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&mailbox, &uid, &blob.0, &(size as i64), &internal_date, &i64::from(flags.0), &keywords, &modseq],
    )
    .await?;
    let usage: i64 = tx
        .query_opt(
            "UPDATE accounts SET usage_bytes = usage_bytes + $2
             WHERE id = (SELECT account_id FROM mailboxes WHERE id = $1) RETURNING usage_bytes",
            &[&mailbox, &(size as i64)],
        )
        .await?
        .ok_or(StoreError::NotFound)?
        .get(0);
    Ok(Inserted { uid: uid as u32, modseq, usage_bytes: u64::try_from(usage).unwrap_or(0) })
}

/// Delete the `blob_data` rows among `ids` that nothing references any more. Returns those
/// whose bytes are in the object store, to be deleted there after the commit.
async fn drop_unreferenced(tx: &Tx<'_>, ids: &[String]) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            "DELETE FROM blob_data d WHERE d.id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = d.id)
             AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob = d.id)
             RETURNING d.id, d.external",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().filter(|r| r.get::<_, i64>(1) != 0).map(|r| r.get(0)).collect())
}

/// How long a claimed queue entry is left to its node before another may retake it: longer
/// than one attempt can last (connect, TLS and DATA timeouts together).
const QUEUE_LEASE_SECS: i64 = 900;
/// The scheduler's concurrency limits (outbound::MAX_PER_DOMAIN, MAX_IN_FLIGHT).
const MAX_PER_DOMAIN: i64 = 4;
const MAX_IN_FLIGHT: usize = 100;
const QUEUE_COLS: &str = "id, blob, sender, sender_account, domain, created_at, next_attempt, attempts, last_error";

fn queue_entry_of(r: &Row) -> QueueEntry {
    let blob: String = r.get(1);
    QueueEntry {
        id: r.get(0),
        // A malformed blob name can only come from a corrupted row; it then fails to open.
        blob: BlobId::parse(&blob).unwrap_or_else(|| BlobId(String::from("invalid"))),
        sender: r.get(2),
        sender_account: r.get(3),
        domain: r.get(4),
        created_at: r.get(5),
        next_attempt: r.get(6),
        attempts: r.get::<_, i64>(7).max(0) as u32,
        last_error: r.get(8),
        rcpts: Vec::new(),
    }
}

async fn queue_rcpts(c: &impl GenericClient, id: &str) -> Result<Vec<QueueRcpt>> {
    let rows =
        c.query("SELECT rcpt, state, last_reply FROM queue_rcpts WHERE queue_id = $1 ORDER BY rcpt", &[&id]).await?;
    Ok(rows.iter().map(|r| QueueRcpt { rcpt: r.get(0), state: r.get(1), last_reply: r.get(2) }).collect())
}

async fn insert_body(tx: &Tx<'_>, b: &Body) -> Result<()> {
    tx.execute(
        "INSERT INTO blob_data(id, data, external) VALUES($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&b.id.0, &b.data.as_ref(), &i64::from(b.external)],
    )
    .await?;
    Ok(())
}

/// The keyed-hash secret (`data_dir/secret.key`: tombstones, the login cache) must be the same
/// on every node, or an address deleted through one node could be registered again through
/// another. The first node (or `migrate`) stores it in `kv`; a node without the file adopts the
/// cluster's; a node whose file differs refuses to start rather than split the tombstones.
async fn share_secret(c: &tokio_postgres::Client, data_dir: &std::path::Path) -> Result<()> {
    let path = data_dir.join(crate::accounts::Secret::FILE);
    let local = std::fs::read(&path).ok().filter(|b| b.len() == 32);
    let mine = local.clone().unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec());
    let hex_of = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    c.execute("INSERT INTO kv(key, value) VALUES('secret_key', $1) ON CONFLICT(key) DO NOTHING", &[&hex_of(&mine)])
        .await?;
    let cluster: String = c.query_one("SELECT value FROM kv WHERE key = 'secret_key'", &[]).await?.get(0);
    match local {
        Some(l) if hex_of(&l) == cluster => Ok(()),
        Some(_) => Err(StoreError::Invalid(
            "data_dir/secret.key differs from the cluster's (kv secret_key); remove the file to adopt the cluster's",
        )),
        None => {
            let bytes: Vec<u8> = (0..cluster.len() / 2)
                .filter_map(|i| cluster.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                .collect();
            if bytes.len() != 32 {
                return Err(StoreError::Invalid("the cluster's secret_key is malformed"));
            }
            write_private(&path, &bytes)
        }
    }
}

/// Write a key file readable by the service user only: a temporary file synced, then renamed over
/// `path`, so a crash leaves the old file or the new one, never a torn key.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or(StoreError::Invalid("key file without a directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("adopt.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::File::options();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    std::io::Write::write_all(&mut f, bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The DKIM key (`data_dir/dkim.pem`, when `dkim.key` names no file of the operator's) must be the
/// same on every node, or peers would fail the signatures of the nodes whose key is not in DNS.
/// Same rule as the secret: a node without the file adopts the cluster's; the first node offers
/// its own (generated here if it has none); a node whose own file differs refuses to start. A key
/// this node generated a moment ago and lost the race for is replaced by the winner's.
async fn share_dkim(c: &tokio_postgres::Client, path: &std::path::Path) -> Result<()> {
    const SELECT: &str = "SELECT value FROM kv WHERE key = 'dkim_pem'";
    let local = std::fs::read_to_string(path).ok();
    let generated = local.is_none();
    let mine = match local {
        Some(pem) => pem,
        None => {
            if let Some(row) = c.query_opt(SELECT, &[]).await? {
                let cluster: String = row.get(0);
                return write_private(path, cluster.as_bytes());
            }
            crate::outbound::dkim_key::ensure(path)
                .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
            std::fs::read_to_string(path)?
        }
    };
    c.execute("INSERT INTO kv(key, value) VALUES('dkim_pem', $1) ON CONFLICT(key) DO NOTHING", &[&mine]).await?;
    let cluster: String = c.query_one(SELECT, &[]).await?.get(0);
    if cluster == mine {
        Ok(())
    } else if generated {
        write_private(path, cluster.as_bytes())
    } else {
        Err(StoreError::Invalid(
            "data_dir/dkim.pem differs from the cluster's (kv dkim_pem); remove the file to adopt the cluster's",
        ))
    }
}

/// Changed rows, expunged UIDs and the mailbox's highest modseq.
type Changes = (Vec<MessageMeta>, Vec<u32>, i64);

impl Pg {
    /// Connect, migrate the schema and start listening for the other nodes' events. Runs the
    /// migration on a thread of its own so it can be called from sync and async code alike.
    pub(crate) fn open(
        url: &str,
        pool_size: usize,
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
        let mgr =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let size = if pool_size == 0 { DEFAULT_POOL } else { pool_size };
        let pool = Pool::builder(mgr).max_size(size).build().map_err(|e| StoreError::Busy(e.to_string()))?;
        let node = rand::random::<u64>();
        let pg = Arc::new(Self { pool, node, events, blob_dir, s3 });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(listen::run(config, pg.clone()));
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
            "INSERT INTO kv(key, value) VALUES('health', extract(epoch FROM now())::bigint::text)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            &[],
        )
        .await?;
        Ok(())
    }

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
                "INSERT INTO accounts(address, password_hash, created_day, last_login_day) VALUES($1, $2, $3, $3)
                 ON CONFLICT(address) DO NOTHING RETURNING id",
                &[&address, &password_hash, &day],
            )
            .await?;
        let Some(row) = row else {
            let existing = by_address(&tx, address).await?.ok_or(StoreError::NotFound)?;
            return Ok(CreateOutcome::AlreadyExists(existing));
        };
        let id: i64 = row.get(0);
        let uv = i64::from(next_uidvalidity(&tx).await?);
        tx.execute("INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES($1, 'INBOX', $2)", &[&id, &uv]).await?;
        let acc = by_id(&tx, id).await?.ok_or(StoreError::NotFound)?;
        tx.commit().await?;
        Ok(CreateOutcome::Created(acc))
    }

    pub(crate) async fn set_password_hash(&self, id: AccountId, hash: String) -> Result<()> {
        let c = self.client().await?;
        c.execute("UPDATE accounts SET password_hash = $2 WHERE id = $1", &[&id, &hash]).await?;
        Ok(())
    }

    pub(crate) async fn touch_login(&self, id: AccountId, day: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute("UPDATE accounts SET last_login_day = $2 WHERE id = $1 AND last_login_day < $2", &[&id, &day])
            .await?;
        Ok(())
    }

    pub(crate) async fn set_blocked(&self, id: AccountId, blocked: bool) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if tx.execute("UPDATE accounts SET blocked = $2 WHERE id = $1", &[&id, &(blocked as i64)]).await? == 0 {
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
        if c.execute("UPDATE accounts SET cleartext = $2 WHERE id = $1", &[&id, &(allowed as i64)]).await? == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    pub(crate) async fn add_tombstone(&self, hash: Vec<u8>) -> Result<()> {
        let c = self.client().await?;
        c.execute("INSERT INTO tombstones(hash) VALUES($1) ON CONFLICT DO NOTHING", &[&hash]).await?;
        Ok(())
    }

    /// ACC-26/27 in one transaction, as `accounts::delete_in_tx`.
    pub(crate) async fn delete_account(&self, id: AccountId, tombstone: Vec<u8>) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Its row first, like every other writer (`lock_accounts`).
        tx.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", &[&id]).await?;
        let blobs: Vec<String> = tx
            .query(
                "SELECT DISTINCT m.blob FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = $1
                 UNION SELECT blob FROM queue WHERE sender_account = $1",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.execute("DELETE FROM expunged WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = $1)", &[&id])
            .await?;
        tx.execute("DELETE FROM queue WHERE sender_account = $1", &[&id]).await?;
        tx.execute("DELETE FROM messages WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = $1)", &[&id])
            .await?;
        if tx.execute("DELETE FROM accounts WHERE id = $1", &[&id]).await? == 0 {
            return Err(StoreError::NotFound);
        }
        tx.execute("INSERT INTO tombstones(hash) VALUES($1) ON CONFLICT DO NOTHING", &[&tombstone]).await?;
        let objects = drop_unreferenced(&tx, &blobs).await?;
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
        Ok(c.query_one("SELECT count(*) FROM accounts", &[]).await?.get::<_, i64>(0).max(0) as u64)
    }

    // ---- delivery ----

    /// The bytes of a new blob: its inline copy, or the spill file (read once, then stored in
    /// the database; the file is removed after the commit).
    /// With an object store, a large body is PUT there now, before the transaction that
    /// references it: the `250` then follows both the PUT and the COMMIT.
    async fn body_of(&self, b: &NewBlob) -> Result<Body> {
        let (id, data, spilled) = match b.inline_data() {
            Some(data) => (b.id().clone(), data.clone(), false),
            None => {
                let data = tokio::fs::read(super::blobs::path_of(&self.blob_dir, b.id())).await?;
                (BlobId::random_inline(), Bytes::from(data), true)
            }
        };
        match &self.s3 {
            Some(s3) if data.len() > super::blobs::INLINE_MAX => {
                s3.put(id.as_str(), data).await?;
                Ok(Body { id, data: Bytes::new(), spilled, external: true })
            }
            _ => Ok(Body { id, data, spilled, external: false }),
        }
    }

    /// SMTP-48/49: every local recipient's row in one transaction; `Ok` after COMMIT (and after
    /// the object store took a large body). On failure an object already PUT is deleted again.
    pub(crate) async fn deliver(&self, d: &Delivery) -> Result<DeliveryReceipt> {
        let mut put = Vec::new();
        let res = self.deliver_in(d, &mut put).await;
        if res.is_err() {
            self.forget_objects(put).await;
        }
        res
    }

    async fn deliver_in(&self, d: &Delivery, put: &mut Vec<String>) -> Result<DeliveryReceipt> {
        let mut receipt = DeliveryReceipt::default();
        let local = match &d.local_blob {
            Some(new) if !d.local.is_empty() => Some((new, self.body_of(new).await?)),
            _ => None,
        };
        let remote = match &d.remote_blob {
            Some(new) if d.remote.iter().any(|b| !b.rcpts.is_empty()) => Some((new, self.body_of(new).await?)),
            _ => None,
        };
        put.extend(local.iter().chain(remote.iter()).filter(|(_, b)| b.external).map(|(_, b)| b.id.0.clone()));
        if local.is_none() && remote.is_none() {
            return Ok(receipt);
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if let Some(id) = d.sender_account {
            // FOR KEY SHARE: a concurrent deletion waits for this commit, or this sees it; a
            // delivery to this account (which locks its row for the usage) does not wait.
            let blocked = tx.query_opt("SELECT blocked FROM accounts WHERE id = $1 FOR KEY SHARE", &[&id]).await?;
            if blocked.is_none_or(|r| r.get::<_, i64>(0) != 0) {
                return Err(StoreError::SenderGone);
            }
        }
        let (now, now_ms) = (now_secs(), now_millis());
        let mut p = Pending::default();
        let mut seen = Vec::with_capacity(d.local.len());
        let no_body = Body { id: BlobId(String::new()), data: Bytes::new(), spilled: false, external: false };
        let (new, body) = match &local {
            Some((new, body)) => (Some(*new), body),
            None => (None, &no_body),
        };
        let blob = &body.id;
        let size = new.map_or(0, NewBlob::size);
        if new.is_some() {
            insert_body(&tx, body).await?;
            lock_accounts(&tx, &d.local).await?;
        }
        for &account in d.local.iter().filter(|_| new.is_some()) {
            if seen.contains(&account) {
                continue;
            }
            seen.push(account);
            let mailbox = inbox_id(&tx, account).await?;
            let ins = insert_message(&tx, mailbox, blob, size, now, Flags::default(), "").await?;
            let notify = d.sender_account != Some(account);
            if notify && d.push {
                enqueue_push(&tx, account, now_ms).await?;
            }
            p.push(StoreEvent::Stored(MessageStored {
                account,
                mailbox,
                uid: ins.uid,
                modseq: ins.modseq,
                size,
                usage_bytes: ins.usage_bytes,
                notify,
                stored_at_ms: now_ms,
            }));
            receipt.stored.push((account, mailbox, ins.uid));
        }
        if let Some((_, rbody)) = &remote {
            insert_body(&tx, rbody).await?;
            let rblob = &rbody.id;
            for batch in d.remote.iter().filter(|b| !b.rcpts.is_empty()) {
                let id = BlobId::random().0[..16].to_string();
                tx.execute(
                    "INSERT INTO queue(id, blob, sender, sender_account, domain, created_at, next_attempt)
                     VALUES($1, $2, $3, $4, $5, $6, $6)",
                    &[&id, &rblob.0, &d.sender, &d.sender_account, &batch.domain, &now],
                )
                .await?;
                for r in &batch.rcpts {
                    tx.execute(
                        "INSERT INTO queue_rcpts(queue_id, rcpt) VALUES($1, $2) ON CONFLICT DO NOTHING",
                        &[&id, r],
                    )
                    .await?;
                }
                receipt.queue_ids.push(id);
            }
            p.push(StoreEvent::QueueChanged);
        }
        p.notify(&tx, self.node).await?;
        tx.commit().await?;
        self.publish(p);
        put.clear();
        for (new, body) in local.iter().chain(remote.iter()) {
            if body.spilled {
                let _ = tokio::fs::remove_file(super::blobs::path_of(&self.blob_dir, new.id())).await;
            }
        }
        Ok(receipt)
    }

    // ---- outbound queue ----

    /// Claim due entries for this node: `FOR UPDATE SKIP LOCKED` so two nodes never claim the
    /// same row, and the claim is a lease (`next_attempt` moved `QUEUE_LEASE_SECS` ahead) that
    /// `record_attempt` replaces. A node that dies mid-attempt leaves the lease to expire and
    /// another node retakes the entry: at least once towards the remote, as on one node.
    /// Only what the scheduler will start is claimed (a claimed entry it skipped would wait for
    /// its lease): per domain up to `MAX_PER_DOMAIN` minus this node's attempts in flight there
    /// (`skip_ids`), and at most `MAX_IN_FLIGHT` in flight in all.
    pub(crate) async fn claim_queue(
        &self,
        now: i64,
        limit: usize,
        skip_ids: Vec<String>,
        skip_domains: Vec<String>,
    ) -> Result<Vec<QueueEntry>> {
        let limit = limit.min(MAX_IN_FLIGHT.saturating_sub(skip_ids.len()));
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let st = "WITH due AS (
                SELECT id, next_attempt, row_number() OVER (PARTITION BY domain ORDER BY next_attempt, created_at) AS n
                FROM queue WHERE next_attempt <= $1 AND NOT (id = ANY($3)) AND NOT (domain = ANY($4))
             ), picked AS (
                SELECT q.id, d.next_attempt FROM queue q JOIN due d ON d.id = q.id
                WHERE d.n <= $6 - (SELECT count(*) FROM queue f WHERE f.id = ANY($3) AND f.domain = q.domain)
                ORDER BY d.next_attempt, q.created_at LIMIT $2 FOR UPDATE OF q SKIP LOCKED
             )
             UPDATE queue q SET next_attempt = $5 FROM picked WHERE q.id = picked.id
             RETURNING q.id, q.blob, q.sender, q.sender_account, q.domain, q.created_at, picked.next_attempt,
                       q.attempts, q.last_error";
        let rows = tx
            .query(st, &[&now, &(limit as i64), &skip_ids, &skip_domains, &(now + QUEUE_LEASE_SECS), &MAX_PER_DOMAIN])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut e = queue_entry_of(r);
            e.rcpts = queue_rcpts(&tx, &e.id).await?;
            out.push(e);
        }
        tx.commit().await?;
        out.sort_by_key(|e| (e.next_attempt, e.created_at));
        Ok(out)
    }

    pub(crate) async fn next_queue_due(&self, skip_ids: Vec<String>, skip_domains: Vec<String>) -> Result<Option<i64>> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT min(next_attempt) FROM queue WHERE NOT (id = ANY($1)) AND NOT (domain = ANY($2))",
                &[&skip_ids, &skip_domains],
            )
            .await?;
        Ok(row.get(0))
    }

    pub(crate) async fn queue_stats(&self) -> Result<(u64, Option<i64>)> {
        let c = self.client().await?;
        let row = c.query_one("SELECT count(*), min(created_at) FROM queue", &[]).await?;
        Ok((row.get::<_, i64>(0).max(0) as u64, row.get(1)))
    }

    pub(crate) async fn queue_entry(&self, id: &str) -> Result<Option<QueueEntry>> {
        let c = self.client().await?;
        let st = format!("SELECT {QUEUE_COLS} FROM queue WHERE id = $1");
        let Some(r) = c.query_opt(&st, &[&id]).await? else { return Ok(None) };
        let mut e = queue_entry_of(&r);
        e.rcpts = queue_rcpts(&c, &e.id).await?;
        Ok(Some(e))
    }

    /// Every entry, oldest first (`chatrelay queue list`).
    pub(crate) async fn list_queue(&self) -> Result<Vec<QueueEntry>> {
        let c = self.client().await?;
        let st = format!("SELECT {QUEUE_COLS} FROM queue ORDER BY created_at, id");
        let mut out = Vec::new();
        for r in c.query(&st, &[]).await? {
            let mut e = queue_entry_of(&r);
            e.rcpts = queue_rcpts(&c, &e.id).await?;
            out.push(e);
        }
        Ok(out)
    }

    /// `queue retry ID`: due now, and every scheduler told.
    pub(crate) async fn queue_retry_now(&self, id: &str) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx.execute("UPDATE queue SET next_attempt = 0 WHERE id = $1", &[&id]).await?;
        let mut p = Pending::default();
        if n > 0 {
            p.push(StoreEvent::QueueChanged);
        }
        p.notify(&tx, self.node).await?;
        tx.commit().await?;
        self.publish(p);
        Ok(n > 0)
    }

    /// `queue drop ID`: the entry and, if nothing else uses it, its body.
    pub(crate) async fn queue_drop(&self, id: &str) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let blob = tx.query_opt("DELETE FROM queue WHERE id = $1 RETURNING blob", &[&id]).await?;
        let objects = match &blob {
            Some(b) => drop_unreferenced(&tx, &[b.get::<_, String>(0)]).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        self.forget_objects(objects).await;
        Ok(blob.is_some())
    }

    /// As on SQLite: recipients' states, then the entry's next attempt (ending the lease) or
    /// its removal with its body once nothing is pending.
    pub(crate) async fn record_attempt(&self, id: &str, outcome: AttemptOutcome) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        for (rcpt, state, reply) in &outcome.rcpts {
            tx.execute(
                "UPDATE queue_rcpts SET state = $3, last_reply = $4 WHERE queue_id = $1 AND rcpt = $2",
                &[&id, rcpt, state, reply],
            )
            .await?;
        }
        let pending: i64 = tx
            .query_one("SELECT count(*) FROM queue_rcpts WHERE queue_id = $1 AND state = 'pending'", &[&id])
            .await?
            .get(0);
        let mut objects = Vec::new();
        let gone = if pending == 0 {
            let blob = tx.query_opt("DELETE FROM queue WHERE id = $1 RETURNING blob", &[&id]).await?;
            if let Some(b) = &blob {
                objects = drop_unreferenced(&tx, &[b.get::<_, String>(0)]).await?;
            }
            blob.is_some()
        } else {
            tx.execute(
                "UPDATE queue SET attempts = attempts + 1, next_attempt = $2, last_error = $3 WHERE id = $1",
                &[&id, &outcome.next_attempt, &outcome.last_error],
            )
            .await?;
            false
        };
        tx.commit().await?;
        self.forget_objects(objects).await;
        Ok(gone)
    }

    pub(crate) async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let c = self.client().await?;
        let row = c.query_opt("SELECT data, external FROM blob_data WHERE id = $1", &[&id.0]).await?;
        let row = row.ok_or(StoreError::NotFound)?;
        drop(c);
        match (row.get::<_, i64>(1), &self.s3) {
            (0, _) => Ok(row.get::<_, Vec<u8>>(0)),
            (_, Some(s3)) => s3.get(id.as_str()).await,
            (_, None) => Err(StoreError::Invalid("body is in the object store, but [blobs] backend is not s3")),
        }
    }

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
            .query_opt("SELECT highestmodseq FROM mailboxes WHERE id = $1", &[&mailbox])
            .await?
            .ok_or(StoreError::NotFound)?
            .get(0);
        let st = format!("SELECT {MSG_COLS} FROM messages WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid");
        let changed = tx.query(&st, &[&mailbox, &modseq]).await?.iter().map(message_of).collect();
        let gone = tx
            .query("SELECT uid FROM expunged WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid", &[&mailbox, &modseq])
            .await?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect();
        tx.commit().await?;
        Ok((changed, gone, highest))
    }

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

    // ---- retention (RET-2, RET-3) ----
    // Each batch is one transaction that first takes `pg_try_advisory_xact_lock`: one node
    // expires at a time and another node's pass finds the batch taken and skips it (rows are
    // locked by their DELETE anyway, so two passes could never remove a message twice).

    async fn expiry_turn(tx: &Tx<'_>) -> Result<bool> {
        Ok(tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&schema::LOCK_EXPIRY]).await?.get(0))
    }

    pub(crate) async fn inactive_accounts(&self, before_day: i64) -> Result<Vec<Account>> {
        let c = self.client().await?;
        let st = format!("SELECT {ACC_COLS} FROM accounts WHERE last_login_day < $1 ORDER BY id");
        Ok(c.query(&st, &[&before_day]).await?.iter().map(account_of).collect())
    }

    pub(crate) async fn accounts_over(&self, threshold: u64) -> Result<Vec<AccountId>> {
        let c = self.client().await?;
        let rows =
            c.query("SELECT id FROM accounts WHERE usage_bytes > $1 ORDER BY id", &[&(threshold as i64)]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Remove `victims` (account, mailbox, uid, size) in `tx`; returns (count, bytes).
    async fn remove_victims(
        tx: &Tx<'_>,
        victims: Vec<(AccountId, MailboxId, u32, u64)>,
        p: &mut Pending,
        objects: &mut Vec<String>,
    ) -> Result<(u64, u64)> {
        let mut by_box: std::collections::BTreeMap<(AccountId, MailboxId), Vec<u32>> = Default::default();
        for (a, m, uid, _) in &victims {
            by_box.entry((*a, *m)).or_default().push(*uid);
        }
        let accounts: Vec<AccountId> = by_box.keys().map(|k| k.0).collect();
        lock_accounts(tx, &accounts).await?;
        let (mut count, mut bytes) = (0u64, 0u64);
        for ((account, mailbox), uids) in by_box {
            let (removed, freed) = remove_messages(tx, account, mailbox, &uids, p, objects).await?;
            count += removed.len() as u64;
            bytes += freed.max(0) as u64;
        }
        Ok((count, bytes))
    }

    pub(crate) async fn expire_messages(&self, rule: ExpireRule, pol: RetentionPolicy, now: i64) -> Result<Removed> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !Self::expiry_turn(&tx).await? {
            return Ok(Removed::default());
        }
        const COLS: &str =
            "SELECT b.account_id, m.mailbox_id, m.uid, m.size FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id";
        let batch = BATCH as i64;
        let rows = match rule {
            ExpireRule::Age => {
                let st = format!("{COLS} WHERE m.internal_date < $1 ORDER BY m.internal_date LIMIT $2");
                tx.query(&st, &[&(now - pol.delete_mails_after_secs), &batch]).await?
            }
            ExpireRule::Large => {
                let st = format!(
                    "{COLS} WHERE m.internal_date < $1 AND m.size > $2 AND (m.flags & $3) != 0 ORDER BY m.internal_date LIMIT $4"
                );
                let seen = i64::from(Flags::SEEN);
                tx.query(&st, &[&(now - pol.delete_large_after_secs), &(pol.large_message_size as i64), &seen, &batch])
                    .await?
            }
        };
        let full = rows.len() >= BATCH;
        let victims = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u32, r.get::<_, i64>(3).max(0) as u64))
            .collect();
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        let (count, bytes) = Self::remove_victims(&tx, victims, &mut p, &mut objects).await?;
        self.commit_publish(tx, p, objects).await?;
        Ok(Removed { count, bytes, more: full })
    }

    pub(crate) async fn trim_account(&self, account: AccountId, pol: RetentionPolicy, now: i64) -> Result<Removed> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !Self::expiry_turn(&tx).await? {
            return Ok(Removed::default());
        }
        let Some(acc) = by_id(&tx, account).await? else { return Ok(Removed::default()) };
        let target = pol.trim_target();
        let mut usage = acc.usage_bytes;
        if usage <= target {
            return Ok(Removed::default());
        }
        let rows = tx
            .query(
                "SELECT b.account_id, m.mailbox_id, m.uid, m.size, m.internal_date FROM messages m
                 JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = $1 ORDER BY m.internal_date, m.uid LIMIT $2",
                &[&account, &(BATCH as i64)],
            )
            .await?;
        let full = rows.len() >= BATCH;
        let (mut victims, mut stopped) = (Vec::new(), false);
        for r in &rows {
            let size = r.get::<_, i64>(3).max(0) as u64;
            if usage <= target || r.get::<_, i64>(4) > now - TRIM_MIN_AGE_SECS {
                stopped = true;
                break;
            }
            usage = usage.saturating_sub(size);
            victims.push((r.get(0), r.get(1), r.get::<_, i64>(2) as u32, size));
        }
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        let (count, bytes) = Self::remove_victims(&tx, victims, &mut p, &mut objects).await?;
        self.commit_publish(tx, p, objects).await?;
        Ok(Removed { count, bytes, more: full && !stopped && usage > target })
    }

    pub(crate) async fn cleanup(&self, now: i64) -> Result<Cleanup> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !Self::expiry_turn(&tx).await? {
            return Ok(Cleanup::default());
        }
        let lim = BATCH as i64;
        let tokens = tx
            .execute(
                "DELETE FROM push_tokens WHERE (account_id, token) IN
                   (SELECT account_id, token FROM push_tokens WHERE set_at <= $1 LIMIT $2)",
                &[&(now - super::push::TOKEN_LIFETIME_SECS), &lim],
            )
            .await?;
        let push_jobs = tx
            .execute(
                "DELETE FROM push_jobs WHERE id IN (SELECT id FROM push_jobs j WHERE created_at < $1
                   OR NOT EXISTS (SELECT 1 FROM push_tokens t WHERE t.account_id = j.account_id AND t.token = j.token)
                   LIMIT $2)",
                &[&(now * 1000 - PUSH_JOB_MAX_AGE_MS), &lim],
            )
            .await?;
        let expunged = tx
            .execute(
                "DELETE FROM expunged WHERE (mailbox_id, uid) IN
                   (SELECT mailbox_id, uid FROM expunged WHERE expunged_at < $1 LIMIT $2)",
                &[&(now - EXPUNGED_KEEP_SECS), &lim],
            )
            .await?;
        let mta_sts = tx
            .execute(
                "DELETE FROM mta_sts WHERE domain IN (SELECT domain FROM mta_sts WHERE fetched_at + max_age < $1 LIMIT $2)",
                &[&now, &lim],
            )
            .await?;
        tx.commit().await?;
        let b = BATCH as u64;
        Ok(Cleanup {
            tokens,
            push_jobs,
            expunged,
            mta_sts,
            more: [tokens, push_jobs, expunged, mta_sts].iter().any(|n| *n >= b),
        })
    }

    pub(crate) async fn create_mailbox(&self, account: AccountId, name: String) -> Result<MailboxInfo> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Serialises mailbox creation per account (the count check below).
        lock_accounts(&tx, &[account]).await?;
        if mailbox_by_name(&tx, account, &name).await?.is_some() {
            return Err(StoreError::Exists);
        }
        let n: i64 = tx.query_one("SELECT count(*) FROM mailboxes WHERE account_id = $1", &[&account]).await?.get(0);
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

    /// A mailbox of `account` by id, or NotFound.
    async fn owned(tx: &Tx<'_>, account: AccountId, mailbox: MailboxId) -> Result<MailboxInfo> {
        mailbox_by_id(tx, mailbox).await?.filter(|m| m.account == account).ok_or(StoreError::NotFound)
    }

    async fn usage_in(tx: &Tx<'_>, account: AccountId) -> Result<u64> {
        let row = tx.query_opt("SELECT usage_bytes FROM accounts WHERE id = $1 FOR NO KEY UPDATE", &[&account]).await?;
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
            let kw = super::mailbox_ops::merge_keywords("", FlagOp::Add, &keywords);
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
            let _ = tokio::fs::remove_file(super::blobs::path_of(&self.blob_dir, blob.id())).await;
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

    pub(crate) async fn delete_mailbox(&self, account: AccountId, name: String) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        lock_accounts(&tx, &[account]).await?;
        let m = mailbox_by_name(&tx, account, &name).await?.ok_or(StoreError::NotFound)?;
        let uids: Vec<u32> = tx
            .query("SELECT uid FROM messages WHERE mailbox_id = $1", &[&m.id])
            .await?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u32)
            .collect();
        let (mut p, mut objects) = (Pending::default(), Vec::new());
        remove_messages(&tx, account, m.id, &uids, &mut p, &mut objects).await?;
        tx.execute("DELETE FROM expunged WHERE mailbox_id = $1", &[&m.id]).await?;
        tx.execute("DELETE FROM mailboxes WHERE id = $1", &[&m.id]).await?;
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
                    "INSERT INTO mailboxes(account_id, name, uidvalidity) VALUES($1, $2, $3) RETURNING id",
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
            tx.execute("UPDATE mailboxes SET name = $3 WHERE account_id = $1 AND name = $2", &[&account, &from, &to])
                .await?;
            tx.execute(
                "UPDATE mailboxes SET name = $3 || substr(name, length($2) + 1)
                 WHERE account_id = $1 AND substr(name, 1, length($2) + 1) = $2 || '/'",
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
                "UPDATE mailboxes SET subscribed = $3 WHERE account_id = $1 AND name = $2",
                &[&account, &name, &(on as i64)],
            )
            .await?;
        if n == 0 { Err(StoreError::NotFound) } else { Ok(()) }
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
        let modseq: i64 = tx
            .query_opt(
                "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1 AND account_id = $2
                 RETURNING highestmodseq",
                &[&mailbox, &account],
            )
            .await?
            .ok_or(StoreError::NotFound)?
            .get(0);
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
            let nk = super::mailbox_ops::merge_keywords(&m.keywords, op, &keywords);
            if nf == m.flags.0 && nk == m.keywords {
                continue;
            }
            tx.execute(
                "UPDATE messages SET flags = $3, keywords = $4, modseq = $5 WHERE mailbox_id = $1 AND uid = $2",
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
        let row = c.query_opt("SELECT usage_bytes FROM accounts WHERE id = $1", &[&account]).await?;
        Ok(row.ok_or(StoreError::NotFound)?.get::<_, i64>(0).max(0) as u64)
    }

    // ---- push tokens (IMAP METADATA /private/devicetoken) ----

    pub(crate) async fn add_push_token(&self, account: AccountId, token: String, max: usize) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO push_tokens(account_id, token, set_at) VALUES($1, $2, $3)
             ON CONFLICT(account_id, token) DO UPDATE SET set_at = excluded.set_at",
            &[&account, &token, &now_secs()],
        )
        .await?;
        tx.execute(
            "DELETE FROM push_tokens WHERE account_id = $1 AND token NOT IN
             (SELECT token FROM push_tokens WHERE account_id = $1 ORDER BY set_at DESC, token LIMIT $2)",
            &[&account, &(max as i64)],
        )
        .await?;
        tx.execute(
            "DELETE FROM push_jobs WHERE account_id = $1 AND token NOT IN (SELECT token FROM push_tokens WHERE account_id = $1)",
            &[&account],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn clear_push_tokens(&self, account: AccountId) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM push_tokens WHERE account_id = $1", &[&account]).await?;
        tx.execute("DELETE FROM push_jobs WHERE account_id = $1", &[&account]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn push_tokens(&self, account: AccountId, valid_after: i64, now: i64) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT token FROM push_tokens WHERE account_id = $1 AND set_at > $2 AND set_at <= $3 ORDER BY set_at, token",
                &[&account, &valid_after, &(now + 60)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    // ---- push jobs (push.md) ----

    /// Due jobs, claimed for this node with `FOR UPDATE SKIP LOCKED` as a lease (`next_attempt`
    /// moved `PUSH_LEASE_MS` ahead) that done/retry/defer/drop replace: each job is sent by one
    /// node. The job returned carries its `next_attempt` from before the claim.
    pub(crate) async fn claim_push_jobs(&self, now_ms: i64, limit: usize) -> Result<Vec<PushJob>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                "WITH picked AS (
                    SELECT id, next_attempt FROM push_jobs WHERE next_attempt <= $1
                    ORDER BY attempts > 0, next_attempt LIMIT $2 FOR UPDATE SKIP LOCKED
                 )
                 UPDATE push_jobs j SET next_attempt = $3 FROM picked WHERE j.id = picked.id
                 RETURNING j.id, j.account_id, j.token, j.created_at, j.first_attempt, picked.next_attempt,
                           j.attempts, j.messages",
                &[&now_ms, &(limit as i64), &(now_ms + PUSH_LEASE_MS)],
            )
            .await?;
        tx.commit().await?;
        let mut jobs: Vec<PushJob> = rows
            .iter()
            .map(|r| PushJob {
                id: r.get(0),
                account: r.get(1),
                token: r.get(2),
                created_at_ms: r.get(3),
                first_attempt_ms: r.get(4),
                next_attempt_ms: r.get(5),
                attempts: r.get::<_, i64>(6).max(0) as u32,
                messages: r.get::<_, i64>(7).max(0) as u32,
            })
            .collect();
        jobs.sort_by_key(|j| (j.attempts > 0, j.next_attempt_ms));
        Ok(jobs)
    }

    pub(crate) async fn push_schedule(&self, now_ms: i64) -> Result<(Option<i64>, u64)> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT (SELECT min(next_attempt) FROM push_jobs WHERE next_attempt > $1), (SELECT count(*) FROM push_jobs)",
                &[&now_ms],
            )
            .await?;
        Ok((r.get(0), r.get::<_, i64>(1).max(0) as u64))
    }

    pub(crate) async fn push_job_done(&self, id: i64, seen: u32, rearm_at_ms: i64) -> Result<JobDone> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let seen = i64::from(seen);
        let n = tx.execute("DELETE FROM push_jobs WHERE id = $1 AND messages <= $2", &[&id, &seen]).await?;
        let out = if n > 0 {
            JobDone::Deleted
        } else {
            let n = tx
                .execute(
                    "UPDATE push_jobs SET messages = greatest(1, messages - $2), created_at = last_message_at,
                       first_attempt = NULL, attempts = 0, next_attempt = $3 WHERE id = $1",
                    &[&id, &seen, &rearm_at_ms],
                )
                .await?;
            if n > 0 { JobDone::Rearmed } else { JobDone::Deleted }
        };
        tx.commit().await?;
        Ok(out)
    }

    /// One statement on the push tables (retry, defer, drop, token removal).
    pub(crate) async fn push_job_set(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<()> {
        self.client().await?.execute(sql, params).await?;
        Ok(())
    }

    /// The mailboxes of `accounts`, for the catch-up after a LISTEN reconnect.
    async fn mailboxes_of(&self, accounts: &[AccountId]) -> Result<Vec<(AccountId, MailboxId)>> {
        let c = self.client().await?;
        let rows = c.query("SELECT account_id, id FROM mailboxes WHERE account_id = ANY($1)", &[&accounts]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
