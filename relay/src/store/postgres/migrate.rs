//! `chatrelay migrate --to postgres` (issue 27): copy a single node's SQLite store and blob
//! files into the shared PostgreSQL, then verify by counts and checksums.
//!
//! Rows keep their ids (accounts, mailboxes, UIDs, modseqs: IMAP clients keep their state) and
//! are inserted with `ON CONFLICT DO NOTHING`, one transaction per table, so an interrupted run is
//! resumed by running it again. File blobs become `blob_data` rows under a deterministic inline
//! id (`i` + the last 31 hex digits of the file name), so the references in `messages` and
//! `queue` are rewritten the same way on every run. SQLite is read through one read transaction
//! per table; mail that a still-running node accepts meanwhile is copied by a later run.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use super::super::blobs::BlobId;
use super::super::{Result, StoreError};

/// Tables in foreign-key order, with the column that names a blob (rewritten), if any.
const TABLES: &[(&str, &str, Option<&str>)] = &[
    ("accounts", "id, address, password_hash, created_day, last_login_day, blocked, cleartext, usage_bytes", None),
    ("mailboxes", "id, account_id, name, uidvalidity, uidnext, highestmodseq, subscribed", None),
    ("messages", "mailbox_id, uid, blob, size, internal_date, flags, keywords, modseq", Some("blob")),
    ("expunged", "mailbox_id, uid, modseq, expunged_at", None),
    ("metadata", "account_id, mailbox, entry, value", None),
    ("push_tokens", "account_id, token, set_at", None),
    (
        "push_jobs",
        "id, account_id, token, created_at, first_attempt, next_attempt, attempts, messages, last_message_at",
        None,
    ),
    ("queue", "id, blob, sender, sender_account, domain, created_at, next_attempt, attempts, last_error", Some("blob")),
    ("queue_rcpts", "queue_id, rcpt, state, last_reply", None),
    ("tombstones", "hash", None),
    ("mta_sts", "domain, policy_id, policy, fetched_at, max_age", None),
    ("kv", "key, value", None),
    ("invites", "id, token_hash, hint, max_uses, used, created_at, expires_at, revoked", None),
];

/// Rows whose contents are checksummed on both sides (ordered by these columns).
const CHECKED: &[(&str, &str)] = &[
    ("accounts", "id, address, password_hash, blocked, usage_bytes"),
    ("mailboxes", "id, account_id, name, uidvalidity, uidnext, highestmodseq"),
    ("messages", "mailbox_id, uid, blob, size, flags, keywords, modseq"),
];

#[derive(Debug, Default)]
pub struct MigrateReport {
    /// table -> (rows in SQLite, rows in PostgreSQL after the copy, rows inserted by this run)
    pub tables: BTreeMap<&'static str, (u64, u64, u64)>,
    /// Message bodies copied from files by this run, and their bytes.
    pub files: (u64, u64),
    /// table -> checksums equal
    pub checksums: BTreeMap<&'static str, bool>,
    /// Body bytes in SQLite (rows + files) and in PostgreSQL, of every referenced blob.
    pub body_bytes: (u64, u64),
    /// ACME accounts and TLS certificates inserted by this run.
    pub acme: (u64, u64),
}

impl MigrateReport {
    pub fn ok(&self) -> bool {
        self.tables.values().all(|(s, p, _)| p >= s)
            && self.checksums.values().all(|ok| *ok)
            && self.body_bytes.0 == self.body_bytes.1
    }
}

/// The inline id a file blob gets in PostgreSQL.
pub fn inline_id_of(id: &str) -> String {
    if id.starts_with('i') { id.to_string() } else { format!("i{}", &id[id.len().saturating_sub(31)..]) }
}

enum Val {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

fn val(v: ValueRef<'_>) -> Val {
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        ValueRef::Real(f) => Val::Int(f as i64),
        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
    }
}

/// The value as the PostgreSQL column's type wants it.
fn param(v: Val, ty: &Type) -> Box<dyn ToSql + Sync + Send> {
    match (v, ty) {
        (Val::Null, _) => Box::new(None::<i64>),
        (Val::Int(i), &Type::INT8) => Box::new(i),
        (Val::Int(i), &Type::TEXT) => Box::new(i.to_string()),
        (Val::Int(i), _) => Box::new(i.to_string().into_bytes()),
        (Val::Text(s), &Type::INT8) => Box::new(s.trim().parse::<i64>().unwrap_or(0)),
        (Val::Text(s), &Type::BYTEA) => Box::new(s.into_bytes()),
        (Val::Text(s), _) => Box::new(s),
        (Val::Bytes(b), &Type::TEXT) => Box::new(String::from_utf8_lossy(&b).into_owned()),
        (Val::Bytes(b), _) => Box::new(b),
    }
}

fn read_table(db: &rusqlite::Connection, table: &str, cols: &str) -> Result<Vec<Vec<Val>>> {
    let n = cols.split(',').count();
    let mut st = db.prepare(&format!("SELECT {cols} FROM {table}"))?;
    let rows = st.query_map([], |r| (0..n).map(|i| r.get_ref(i).map(val)).collect::<rusqlite::Result<Vec<_>>>())?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

async fn copy_table(
    pg: &mut Client,
    db: &rusqlite::Connection,
    table: &str,
    cols: &str,
    blob_col: Option<&str>,
) -> Result<u64> {
    let rows = read_table(db, table, cols)?;
    let names: Vec<&str> = cols.split(',').map(str::trim).collect();
    let blob_at = blob_col.and_then(|b| names.iter().position(|n| *n == b));
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
    let tx = pg.transaction().await?;
    let st = tx
        .prepare(&format!("INSERT INTO {table}({cols}) VALUES({}) ON CONFLICT DO NOTHING", placeholders.join(", ")))
        .await?;
    let types = st.params().to_vec();
    let mut inserted = 0;
    for row in rows {
        let params: Vec<Box<dyn ToSql + Sync + Send>> = row
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let v = match (v, blob_at) {
                    (Val::Text(s), Some(b)) if b == i => Val::Text(inline_id_of(&s)),
                    (v, _) => v,
                };
                param(v, &types[i])
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        inserted += tx.execute(&st, &refs).await?;
    }
    tx.commit().await?;
    Ok(inserted)
}

/// Bodies: inline rows as they are, files read once each (their rows rewritten above).
async fn copy_bodies(pg: &mut Client, db: &rusqlite::Connection, blob_dir: &Path) -> Result<(u64, u64)> {
    let referenced: Vec<String> = {
        let mut st = db.prepare("SELECT blob FROM messages UNION SELECT blob FROM queue")?;
        st.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let (mut files, mut bytes) = (0u64, 0u64);
    for id in referenced {
        let target = inline_id_of(&id);
        if pg.query_opt("SELECT 1 FROM blob_data WHERE id = $1", &[&target]).await?.is_some() {
            continue;
        }
        let data: Vec<u8> = if id.starts_with('i') {
            db.query_row("SELECT data FROM blob_data WHERE id = ?1", [&id], |r| r.get(0))?
        } else {
            let Some(parsed) = BlobId::parse(&id) else { return Err(StoreError::Invalid("malformed blob name")) };
            files += 1;
            std::fs::read(super::super::blobs::path_of(blob_dir, &parsed))?
        };
        bytes += data.len() as u64;
        pg.execute("INSERT INTO blob_data(id, data) VALUES($1, $2) ON CONFLICT DO NOTHING", &[&target, &data]).await?;
    }
    Ok((files, bytes))
}

/// A digest of `cols` of every row in key order, blob names as PostgreSQL holds them.
fn sqlite_digest(db: &rusqlite::Connection, table: &str, cols: &str) -> Result<Vec<u8>> {
    let mut h = Sha256::new();
    let names: Vec<&str> = cols.split(',').map(str::trim).collect();
    for row in {
        let mut st = db.prepare(&format!("SELECT {cols} FROM {table} ORDER BY {cols}"))?;
        let n = names.len();
        st.query_map([], |r| (0..n).map(|i| r.get_ref(i).map(val)).collect::<rusqlite::Result<Vec<_>>>())?
            .collect::<rusqlite::Result<Vec<_>>>()?
    } {
        for (i, v) in row.into_iter().enumerate() {
            match v {
                Val::Null => h.update(b"\0N"),
                Val::Int(x) => h.update(x.to_string()),
                Val::Text(s) if names[i] == "blob" => h.update(inline_id_of(&s)),
                Val::Text(s) => h.update(s),
                Val::Bytes(b) => h.update(b),
            }
            h.update(b"\x1f");
        }
        h.update(b"\x1e");
    }
    Ok(h.finalize().to_vec())
}

async fn pg_digest(pg: &Client, table: &str, cols: &str) -> Result<Vec<u8>> {
    let mut h = Sha256::new();
    let n = cols.split(',').count();
    // Every checked table's first columns are a unique integer key: both sides order alike.
    let cast: Vec<String> = cols.split(',').map(|c| format!("{}::text", c.trim())).collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY {cols}", cast.join(", "));
    for row in pg.query(&sql, &[]).await? {
        for i in 0..n {
            match row.get::<_, Option<String>>(i) {
                None => h.update(b"\0N"),
                Some(s) => h.update(s),
            }
            h.update(b"\x1f");
        }
        h.update(b"\x1e");
    }
    Ok(h.finalize().to_vec())
}

/// Copy `data_dir`'s store into the database at `url` (schema migrated first) and verify it.
pub async fn migrate(data_dir: &Path, url: &str) -> Result<MigrateReport> {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("chatrelay.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    db.busy_timeout(std::time::Duration::from_secs(10))?;
    let (mut pg, conn) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(conn);
    super::schema::migrate(&mut pg).await?;
    let mut report = MigrateReport::default();
    for (table, cols, blob_col) in TABLES {
        let inserted = copy_table(&mut pg, &db, table, cols, *blob_col).await?;
        report.tables.insert(*table, (0, 0, inserted));
    }
    report.files = copy_bodies(&mut pg, &db, &data_dir.join("blobs")).await?;
    // The keyed-hash secret, so the cluster's nodes adopt this node's tombstones and logins.
    if let Ok(secret) = std::fs::read(data_dir.join(crate::accounts::Secret::FILE))
        && secret.len() == 32
    {
        let hex: String = secret.iter().map(|x| format!("{x:02x}")).collect();
        pg.execute("INSERT INTO kv(key, value) VALUES('secret_key', $1) ON CONFLICT(key) DO NOTHING", &[&hex]).await?;
    }
    // The DKIM key in DNS, so the cluster's nodes sign with it (they adopt it at start).
    if let Ok(pem) = std::fs::read_to_string(crate::outbound::dkim_key::default_path(data_dir)) {
        pg.execute("INSERT INTO kv(key, value) VALUES('dkim_pem', $1) ON CONFLICT(key) DO NOTHING", &[&pem]).await?;
    }
    // The ACME account and certificate, so the cluster's nodes serve this node's certificate.
    report.acme = super::tls_material::migrate_files(&pg, data_dir).await?;
    for seq in ["accounts", "mailboxes", "push_jobs", "invites"] {
        pg.execute(
            &format!("SELECT setval(pg_get_serial_sequence('{seq}', 'id'), greatest((SELECT max(id) FROM {seq}), 1))"),
            &[],
        )
        .await?;
    }
    // Verification.
    for (table, entry) in report.tables.iter_mut() {
        let s: i64 = db.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        let p: i64 = pg.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?.get(0);
        entry.0 = s.max(0) as u64;
        entry.1 = p.max(0) as u64;
    }
    for (table, cols) in CHECKED {
        let same = sqlite_digest(&db, table, cols)? == pg_digest(&pg, table, cols).await?;
        report.checksums.insert(*table, same);
    }
    let referenced: Vec<(String, u64)> = {
        let mut st = db.prepare("SELECT blob, max(size) FROM messages GROUP BY blob")?;
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
            .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let want: u64 = referenced.iter().map(|(_, n)| n).sum();
    let ids: Vec<String> = referenced.iter().map(|(id, _)| inline_id_of(id)).collect();
    let have: i64 = pg
        .query_one("SELECT coalesce(sum(length(data)), 0)::bigint FROM blob_data WHERE id = ANY($1)", &[&ids])
        .await?
        .get(0);
    report.body_bytes = (want, have.max(0) as u64);
    drop(pg);
    let _ = driver.await;
    Ok(report)
}
