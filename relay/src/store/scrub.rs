//! PRIV-16a: deleted data leaves no readable trace in `data_dir`. With `secure_delete` (set on
//! every connection in `open_conn`) SQLite zeroes deleted rows in the database file, but the WAL
//! still holds older copies of those pages until a checkpoint has copied everything back and the
//! WAL is cut to nothing; `scrub` does that after account deletions and expiry passes. It also
//! removes pre-migration backups (OPS-25) once `BACKUP_KEEP` has passed: they are copies of
//! everything, including what was deleted since.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::OpenFlags;

use super::{Result, Store};

/// How long a pre-migration backup is kept for going back to the previous version.
pub const BACKUP_KEEP: Duration = Duration::from_secs(24 * 3600);

impl Store {
    /// Checkpoint the whole WAL into the database and truncate it, then remove stale backups.
    /// Waits (up to the busy timeout) for readers on older snapshots; a failure is logged and
    /// retried at the next deletion or pass.
    pub async fn scrub(&self) -> Result<()> {
        let db = self.db_path().to_path_buf();
        tokio::task::spawn_blocking(move || scrub_now(&db)).await.map_err(|_| super::StoreError::Closed)?
    }
}

fn scrub_now(db: &Path) -> Result<()> {
    let conn = super::open_conn(db, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if busy != 0 {
        tracing::warn!(log, done, "scrub: WAL checkpoint incomplete (busy); retried after the next deletion");
    }
    remove_stale_backups(db, BACKUP_KEEP);
    Ok(())
}

/// Remove `chatrelay.db.v<N>.bak` files next to `db` older than `keep`.
pub(super) fn remove_stale_backups(db: &Path, keep: Duration) {
    let (Some(dir), Some(name)) = (db.parent(), db.file_name().and_then(|n| n.to_str())) else { return };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!("{name}.v");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(f) = file.to_str() else { continue };
        if !(f.starts_with(&prefix) && f.ends_with(".bak")) {
            continue;
        }
        let age = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
        if age.is_some_and(|a| a >= keep) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(file = f, "removed a pre-migration database backup"),
                Err(err) => tracing::warn!(file = f, error = %err, "cannot remove a pre-migration backup"),
            }
        }
    }
}
