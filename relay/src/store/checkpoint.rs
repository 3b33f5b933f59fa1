//! WAL checkpoints off the commit path. SQLite's automatic checkpoint runs inside the commit that
//! crosses the threshold, so that one delivery would wait for a few MB of page copies and a
//! database fsync. Instead the writer counts its commits and wakes this thread only at the first
//! one after a checkpoint and at the `COMMITS`th (a wakeup per commit cost every delivery a context
//! switch); it runs a PASSIVE checkpoint (never blocks the writer or readers) once `COMMITS`
//! commits have gathered or no commit came for a whole `QUIET` period (so 1–2 × `QUIET` after the
//! last one), and never more often than every `MIN_INTERVAL`. A complete
//! checkpoint makes the next commit restart the WAL, which costs that commit an extra fsync of
//! the WAL header, so checkpointing after every commit would put two fsyncs on the path of most
//! deliveries at low rates. Durability is unchanged: a committed transaction is already fsync'd
//! in the WAL.
//!
//! PRIV-16a: after a commit that removed messages (the writer calls `want_scrub`), the first quiet
//! checkpoint is a TRUNCATE one, so older copies of the removed rows do not stay in the WAL.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::Result;

/// Bursts of commits share one checkpoint.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// A checkpoint is due after this many commits (a few MB of WAL at most for small messages)...
const COMMITS: u64 = 100;
/// ...or once the writer has been idle this long.
const QUIET: Duration = Duration::from_secs(2);
/// Backstop for the writer if this thread cannot keep up (pages, ~100 MB).
pub(super) const WRITER_AUTOCHECKPOINT: i64 = 25_000;
/// The WAL file is cut back to this size after a checkpoint let it restart.
pub(super) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

pub(super) struct Checkpointer {
    nudge: SyncSender<()>,
    commits: Arc<AtomicU64>,
    scrub: Arc<AtomicBool>,
}

impl Checkpointer {
    pub fn spawn(db_path: &Path) -> Result<Self> {
        let conn = super::open_conn(db_path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let (nudge, rx) = mpsc::sync_channel(1);
        let commits = Arc::new(AtomicU64::new(0));
        let seen = commits.clone();
        let scrub = Arc::new(AtomicBool::new(false));
        let wanted = scrub.clone();
        std::thread::Builder::new().name("store-checkpoint".into()).spawn(move || run(conn, rx, &seen, &wanted))?;
        Ok(Self { nudge, commits, scrub })
    }

    /// The commit about to be reported removed data: cut the WAL at the next quiet checkpoint.
    pub fn want_scrub(&self) {
        self.scrub.store(true, Ordering::Relaxed);
    }

    /// Called by the writer after a commit; never blocks, and only wakes the thread when it has
    /// something to decide.
    pub fn nudge(&self) {
        let n = self.commits.fetch_add(1, Ordering::Relaxed) + 1;
        if n != 1 && n != COMMITS {
            return;
        }
        match self.nudge.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => tracing::warn!("checkpoint thread gone"),
        }
    }
}

fn run(conn: Connection, rx: Receiver<()>, commits: &AtomicU64, scrub: &AtomicBool) {
    // Ends when the writer (the only sender) is dropped at shutdown. The checkpoint never runs
    // right after a commit: that is when the sessions it woke read the new rows and answer their
    // clients, and a checkpoint then competes with them for the CPU and the disk.
    while rx.recv().is_ok() {
        let earliest = Instant::now() + MIN_INTERVAL;
        let mut seen = commits.load(Ordering::Relaxed);
        let mut quiet = false;
        loop {
            match rx.recv_timeout(QUIET) {
                Ok(()) if commits.load(Ordering::Relaxed) < COMMITS => {}
                Ok(()) => {
                    std::thread::sleep(earliest.saturating_duration_since(Instant::now()));
                    break;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = commits.load(Ordering::Relaxed);
                    if now == seen || now >= COMMITS {
                        quiet = now == seen;
                        break;
                    }
                    seen = now;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        // Commits counted from here on are either covered by the checkpoint below or start
        // the next round (the writer wakes us again at the first).
        let _ = rx.try_recv();
        commits.store(0, Ordering::Relaxed);
        // TRUNCATE holds off writers while readers finish, so only when the writer is idle.
        let truncate = quiet && scrub.swap(false, Ordering::Relaxed);
        if !checkpoint(&conn, truncate) && truncate {
            // Not cut this time (a reader held on): again at the next quiet checkpoint.
            scrub.store(true, Ordering::Relaxed);
        }
    }
}

/// Returns whether the whole WAL was checkpointed (and, for TRUNCATE, cut).
fn checkpoint(conn: &Connection, truncate: bool) -> bool {
    let sql = if truncate { "PRAGMA wal_checkpoint(TRUNCATE)" } else { "PRAGMA wal_checkpoint(PASSIVE)" };
    let res = conn.query_row(sql, [], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
    match res {
        Ok((busy, log, done)) => {
            tracing::trace!(log, done, truncate, "wal checkpoint");
            busy == 0
        }
        Err(e) => {
            tracing::warn!(error = %e, "wal checkpoint failed");
            false
        }
    }
}
