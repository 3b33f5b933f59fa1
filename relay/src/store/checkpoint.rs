//! WAL checkpoints off the commit path. SQLite's automatic checkpoint runs inside the commit that
//! crosses the threshold, so that one delivery would wait for a few MB of page copies and a
//! database fsync. Instead the writer nudges this thread after each commit; it runs a PASSIVE
//! checkpoint (never blocks the writer or readers) `MIN_INTERVAL` later, so at most that often. Durability is
//! unchanged: a committed transaction is already fsync'd in the WAL.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::Result;

/// Bursts of commits share one checkpoint.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Backstop for the writer if this thread cannot keep up (pages, ~100 MB).
pub(super) const WRITER_AUTOCHECKPOINT: i64 = 25_000;
/// The WAL file is cut back to this size after a checkpoint let it restart.
pub(super) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

pub(super) struct Checkpointer {
    nudge: SyncSender<()>,
}

impl Checkpointer {
    pub fn spawn(db_path: &Path) -> Result<Self> {
        let conn = super::open_conn(db_path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let (nudge, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new().name("store-checkpoint".into()).spawn(move || run(conn, rx))?;
        Ok(Self { nudge })
    }

    /// Called by the writer after a commit; never blocks.
    pub fn nudge(&self) {
        match self.nudge.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => tracing::warn!("checkpoint thread gone"),
        }
    }
}

fn run(conn: Connection, rx: Receiver<()>) {
    // Ends when the writer (the only sender) is dropped at shutdown. The checkpoint runs
    // `MIN_INTERVAL` after the nudge, not right away: right after a commit is when the sessions
    // it woke read the new rows and answer their clients, and a checkpoint then competes with
    // them for the CPU and the disk (its database fsync).
    while rx.recv().is_ok() {
        std::thread::sleep(MIN_INTERVAL);
        let _ = rx.try_recv();
        let res = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match res {
            Ok((_busy, log, done)) => tracing::trace!(log, done, "wal checkpoint"),
            Err(e) => tracing::warn!(error = %e, "wal checkpoint failed"),
        }
    }
}
