//! The single writer thread with group commit.
//!
//! Jobs queue up on a channel; the thread takes everything waiting (up to `MAX_BATCH`), runs each
//! job in its own savepoint inside one `BEGIN IMMEDIATE` transaction, deletes the inline blobs
//! that became unreferenced, commits once (one WAL fsync for the whole batch), publishes the
//! events of the jobs that succeeded, removes files of blobs that became unreferenced, and only
//! then answers the callers. So durability is never weakened:
//! every caller's `Ok` comes after its commit is on disk.

use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::blobs::{self, BlobId};
use super::checkpoint::Checkpointer;
use super::events::{Events, StoreEvent};
use super::{Result, StoreError};

const MAX_BATCH: usize = 256;
const QUEUE_DEPTH: usize = 4096;

type Done = Box<dyn FnOnce(Option<&str>) + Send>;
/// Called with the job's savepoint, or with `None` when no transaction could be opened (the
/// job then only reports the failure to its caller).
type Job = Box<dyn FnOnce(Option<&mut Tx<'_>>) -> (bool, Done) + Send>;

/// What a job sees: the connection (inside its savepoint) plus post-commit hooks.
pub struct Tx<'a> {
    conn: &'a Connection,
    events: Vec<StoreEvent>,
    released: Vec<BlobId>,
}

impl Deref for Tx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Tx<'_> {
    /// Publish `ev` once this job's changes are committed.
    pub fn publish(&mut self, ev: StoreEvent) {
        self.events.push(ev);
    }
    /// A row referencing `blob` was removed; delete its file after commit if nothing else uses it.
    pub fn release_blob(&mut self, blob: BlobId) {
        self.released.push(blob);
    }
}

pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    pub fn spawn(conn: Connection, events: Events, checkpointer: Checkpointer) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let blob_dir = conn
            .path()
            .and_then(|p| std::path::Path::new(p).parent().map(|d| d.join("blobs")))
            .ok_or(StoreError::Invalid("database has no path"))?;
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(conn, rx, events, blob_dir, checkpointer))?;
        Ok(Self { tx })
    }

    pub async fn submit<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, wait) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |tx| {
            let Some(tx) = tx else {
                // Issue 31: say why (e.g. another process holds the write lock), not "shut down".
                let done: Done = Box::new(move |e| {
                    let _ = reply.send(Err(StoreError::Busy(e.unwrap_or("no transaction").to_string())));
                });
                return (false, done);
            };
            let out = f(tx);
            let ok = out.is_ok();
            let done: Done = Box::new(move |commit_err| {
                let res = match commit_err {
                    Some(e) if ok => Err(StoreError::Io(std::io::Error::other(e.to_string()))),
                    _ => out,
                };
                let _ = reply.send(res);
            });
            (ok, done)
        });
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    events: Events,
    blob_dir: std::path::PathBuf,
    checkpointer: Checkpointer,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(8);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if run_batch(&mut conn, batch, &events, &blob_dir) {
            checkpointer.want_scrub();
        }
        checkpointer.nudge();
    }
}

/// Returns whether a committed job removed message data (PRIV-16a: the WAL is then cut soon).
fn run_batch(conn: &mut Connection, batch: Vec<Job>, events: &Events, blob_dir: &std::path::Path) -> bool {
    let mut dones: Vec<Done> = Vec::with_capacity(batch.len());
    let mut published = Vec::new();
    let mut released = Vec::new();
    let mut release_files = Vec::new();
    let mut removed_data = false;
    let commit_err: Option<String> = (|| {
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                for job in batch {
                    let (_, done) = job(None);
                    let msg = msg.clone();
                    dones.push(Box::new(move |_| done(Some(&msg))));
                }
                return Err(msg);
            }
        };
        for job in batch {
            let sp = match tx.savepoint() {
                Ok(sp) => sp,
                Err(e) => {
                    // Cannot even open a savepoint: the job never ran, fail it alone.
                    let msg = e.to_string();
                    let (_, done) = job(None);
                    dones.push(Box::new(move |_| done(Some(&msg))));
                    continue;
                }
            };
            let mut t = Tx { conn: &sp, events: Vec::new(), released: Vec::new() };
            match catch_unwind(AssertUnwindSafe(|| job(Some(&mut t)))) {
                Ok((true, done)) => {
                    let Tx { events: ev, released: rel, .. } = t;
                    if sp.commit().is_ok() {
                        published.extend(ev);
                        released.extend(rel);
                        dones.push(done);
                    } else {
                        dones.push(Box::new(move |_| done(Some("savepoint release failed"))));
                    }
                }
                Ok((false, done)) => {
                    drop(t);
                    drop(sp); // rolls back this job only
                    dones.push(done);
                }
                Err(_) => {
                    tracing::error!("store job panicked; its changes were rolled back");
                    drop(t);
                    drop(sp);
                }
            }
        }
        removed_data = !released.is_empty();
        match blobs::drop_released(&tx, std::mem::take(&mut released)) {
            Ok(files) => release_files = files,
            // Not fatal: the rows are gone; the bytes stay until the next release of that blob.
            Err(e) => tracing::error!(error = %e, "removing unreferenced inline blobs failed"),
        }
        tx.commit().map_err(|e| e.to_string())
    })()
    .err();

    if let Some(e) = &commit_err {
        tracing::error!(error = %e, "store commit failed");
    } else {
        for ev in published {
            events.publish(ev);
        }
        if !release_files.is_empty()
            && let Ok(list) = blobs::unreferenced(conn, &release_files)
        {
            for id in list {
                let _ = std::fs::remove_file(blobs::path_of(blob_dir, &id));
            }
        }
    }
    for done in dones {
        done(commit_err.as_deref());
    }
    removed_data && commit_err.is_none()
}
