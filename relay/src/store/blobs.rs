//! Message bytes. Small messages (up to `INLINE_MAX`) live in the `blob_data` table and are
//! written inside the same commit as the rows that reference them, so storing one costs no extra
//! fsync (the group commit's WAL fsync covers it). Larger ones are one file each under
//! `data_dir/blobs/`, written once and fsync'd together with the directory before any row may
//! reference them. Either kind is removed when no row references it any more; inline ones in the
//! same transaction, files right after the commit. Files left by a crash before their commit are
//! orphans that the expiry pass removes (RET-3).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rand::RngExt;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, StoreError};

/// Messages up to this size are kept in the database. SQLite reads and writes blobs of this size
/// faster than the file system does, and each one saves a file fsync and a directory fsync.
pub const INLINE_MAX: usize = 128 * 1024;

/// A random name; it reveals nothing about the message or its sender. File blobs are 32 hex
/// digits (the file name); inline blobs are `i` followed by 31 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(pub(crate) String);

fn random_hex(n: usize) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

impl BlobId {
    pub fn random() -> Self {
        Self(random_hex(32))
    }
    pub(crate) fn random_inline() -> Self {
        Self(format!("i{}", random_hex(31)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// True when the bytes are in the database rather than in a file.
    pub fn is_inline(&self) -> bool {
        self.0.starts_with('i')
    }
    /// Accepts only ids this module could have made, so a stored name never escapes the blob dir.
    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix('i').unwrap_or(s);
        (s.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.to_string()))
    }
    /// A file name in the blob dir that this module could have written.
    pub(crate) fn parse_file_name(s: &str) -> Option<Self> {
        Self::parse(s).filter(|id| !id.is_inline())
    }
}

/// Message bytes ready to be referenced by a store call (`deliver`, `append`): a durable file,
/// or bytes that the call writes into the database in its own transaction.
#[derive(Debug, Clone)]
pub struct NewBlob {
    id: BlobId,
    size: u64,
    inline: Option<Bytes>,
}

impl NewBlob {
    pub fn id(&self) -> &BlobId {
        &self.id
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The bytes of a small blob (none: they are in the spill file).
    pub(crate) fn inline_data(&self) -> Option<&Bytes> {
        self.inline.as_ref()
    }
}

pub(crate) fn path_of(dir: &Path, id: &BlobId) -> PathBuf {
    dir.join(&id.0)
}

/// Make a new blob file durable: its data, then its directory entry. Its pages then stay in the
/// page cache only while it is among the most recently written blobs (`RecentBlobs`): a file
/// blob is written once and read about once, by the recipients' FETCH a moment later, so those
/// reads find it cached, while older blobs leave the cache. Letting every blob stay cached only
/// pushes out the database's pages and makes every later write allocate pages afresh, which costs
/// more than the write itself on small VMs that hand free memory back to the host (P3',
/// docs/decisions.md). Dropping pages is only a hint; errors do not matter.
fn make_durable(file: &File, path: &Path, size: u64, dir: &Path) -> std::io::Result<()> {
    file.sync_all()?;
    let old = match RECENT.lock() {
        Ok(mut r) => r.push(path.to_path_buf(), size),
        Err(_) => vec![path.to_path_buf()],
    };
    for p in old {
        // Gone already (delivered and expunged, or discarded): its pages went with it.
        if let Ok(f) = File::open(&p) {
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        }
    }
    sync_dir(dir)
}

/// Bytes of recently written blob files left in the page cache for their recipients' FETCH
/// (issue 30: a 5 MiB attachment read back from disk cost its receiver 17–80 ms here, from the
/// cache 1.5 ms). A few large messages' worth: bounded, so the cache keeps recycling its pages.
const RECENT_BYTES: u64 = 32 * 1024 * 1024;
/// Files remembered at most (small file blobs are > `INLINE_MAX`).
const RECENT_FILES: usize = 64;

static RECENT: std::sync::Mutex<RecentBlobs> =
    std::sync::Mutex::new(RecentBlobs { files: std::collections::VecDeque::new(), bytes: 0 });

/// The most recently written blob files, oldest first, within `RECENT_BYTES` and `RECENT_FILES`.
struct RecentBlobs {
    files: std::collections::VecDeque<(PathBuf, u64)>,
    bytes: u64,
}

impl RecentBlobs {
    /// Remember a new file; returns the files that fall out of the window (their pages go).
    fn push(&mut self, path: PathBuf, size: u64) -> Vec<PathBuf> {
        self.files.push_back((path, size));
        self.bytes += size;
        let mut out = Vec::new();
        while self.bytes > RECENT_BYTES || self.files.len() > RECENT_FILES {
            let Some((p, n)) = self.files.pop_front() else { break };
            self.bytes -= n;
            out.push(p);
        }
        out
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `parts` one after the other as a new durable file (blocking; call from a blocking thread).
fn write_file(dir: &Path, parts: &[Bytes]) -> Result<BlobId> {
    let id = BlobId::random();
    let path = path_of(dir, &id);
    let mut f = File::options().write(true).create_new(true).open(&path)?;
    let written = parts.iter().try_for_each(|p| f.write_all(p));
    let size = parts.iter().map(|p| p.len() as u64).sum();
    if let Err(e) = written.and_then(|()| make_durable(&f, &path, size, dir)) {
        let _ = std::fs::remove_file(&path);
        return Err(StoreError::Io(e));
    }
    Ok(id)
}

/// Inside a write job: make `blob` part of this transaction (a no-op for files, which are
/// already durable). Call once per blob, before inserting rows that reference it.
pub(crate) fn persist(tx: &Connection, blob: &NewBlob) -> Result<()> {
    if let Some(data) = &blob.inline {
        tx.prepare_cached("INSERT OR IGNORE INTO blob_data(id, data) VALUES(?1, ?2)")?
            .execute(params![blob.id.0, data.as_ref()])?;
    }
    Ok(())
}

/// Streams a message into a new blob: bytes are kept in memory up to `SPILL` and then written
/// through to a file, so a large message never needs more memory than that.
pub struct BlobWriter {
    dir: PathBuf,
    id: BlobId,
    buf: Vec<u8>,
    file: Option<File>,
    size: u64,
    finished: bool,
}

const SPILL: usize = 256 * 1024;
const _: () = assert!(INLINE_MAX <= SPILL, "an inline blob must never have been spilled to a file");

impl BlobWriter {
    pub(crate) async fn create(dir: &Path) -> Result<Self> {
        Ok(Self { dir: dir.to_path_buf(), id: BlobId::random(), buf: Vec::new(), file: None, size: 0, finished: false })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SPILL {
            self.flush_buf().await?;
        }
        Ok(())
    }

    async fn flush_buf(&mut self) -> Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let mut file = match self.file.take() {
            Some(f) => f,
            None => File::options().write(true).create_new(true).open(path_of(&self.dir, &self.id))?,
        };
        let file = tokio::task::spawn_blocking(move || file.write_all(&buf).map(|()| file))
            .await
            .map_err(|_| StoreError::Closed)??;
        self.file = Some(file);
        Ok(())
    }

    /// Make the blob durable (small ones: ready to be written with the rows) and return it.
    pub async fn finish(mut self) -> Result<NewBlob> {
        let buf = std::mem::take(&mut self.buf);
        let size = self.size;
        if self.file.is_none() && buf.len() <= INLINE_MAX {
            self.finished = true;
            return Ok(NewBlob { id: BlobId::random_inline(), size, inline: Some(Bytes::from(buf)) });
        }
        let file = self.file.take();
        let (dir, id) = (self.dir.clone(), self.id.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut f = match file {
                Some(f) => f,
                None => File::options().write(true).create_new(true).open(path_of(&dir, &id))?,
            };
            f.write_all(&buf)?;
            make_durable(&f, &path_of(&dir, &id), size, &dir)?;
            Ok(())
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        self.finished = true;
        Ok(NewBlob { id: self.id.clone(), size, inline: None })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(path_of(&self.dir, &self.id));
        }
    }
}

/// Which of `candidates` no message row and no queue entry refers to.
pub(crate) fn unreferenced(conn: &Connection, candidates: &[BlobId]) -> Result<Vec<BlobId>> {
    let mut m = conn.prepare_cached("SELECT 1 FROM messages WHERE blob = ?1 LIMIT 1")?;
    let mut q = conn.prepare_cached("SELECT 1 FROM queue WHERE blob = ?1 LIMIT 1")?;
    let mut out = Vec::new();
    for id in candidates {
        let in_msgs = m.query_row([&id.0], |_| Ok(())).optional()?.is_some();
        let in_queue = q.query_row([&id.0], |_| Ok(())).optional()?.is_some();
        if !in_msgs && !in_queue && !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// Inside the group transaction, after its jobs: delete the inline blobs among `released` that
/// nothing references any more. Returns the file blobs, to be removed after the commit.
pub(crate) fn drop_released(conn: &Connection, released: Vec<BlobId>) -> Result<Vec<BlobId>> {
    let (inline, files): (Vec<BlobId>, Vec<BlobId>) = released.into_iter().partition(BlobId::is_inline);
    if !inline.is_empty() {
        let mut del = conn.prepare_cached("DELETE FROM blob_data WHERE id = ?1")?;
        for id in unreferenced(conn, &inline)? {
            del.execute([&id.0])?;
        }
    }
    Ok(files)
}

impl super::Store {
    /// Prepare a whole message for a store call: small ones stay in memory until that call's
    /// commit writes them; larger ones become a durable file now.
    pub async fn put_blob(&self, data: Bytes) -> Result<NewBlob> {
        self.put_blob_parts(vec![data]).await
    }

    /// `put_blob` of the concatenation of `parts`, without concatenating large ones in memory.
    pub async fn put_blob_parts(&self, parts: Vec<Bytes>) -> Result<NewBlob> {
        let size: usize = parts.iter().map(Bytes::len).sum();
        if size <= INLINE_MAX {
            let data = match <[Bytes; 1]>::try_from(parts) {
                Ok([one]) => one,
                Err(parts) => Bytes::from(parts.concat()),
            };
            return Ok(NewBlob { id: BlobId::random_inline(), size: size as u64, inline: Some(data) });
        }
        let dir = self.blob_dir().to_path_buf();
        let id =
            tokio::task::spawn_blocking(move || write_file(&dir, &parts)).await.map_err(|_| StoreError::Closed)??;
        Ok(NewBlob { id, size: size as u64, inline: None })
    }

    /// Forget a blob that no store call took (its file, if it has one).
    pub fn discard_blob(&self, blob: &NewBlob) {
        if blob.inline.is_none() {
            let _ = std::fs::remove_file(self.blob_path(&blob.id));
        }
    }

    /// Read a whole message (large FETCHes stream from `blob_path` instead; see `is_inline`).
    pub async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        if let Some(pg) = self.pg() {
            return pg.read_blob(id).await;
        }
        if id.is_inline() {
            let key = id.0.clone();
            // Inline bodies are at most INLINE_MAX bytes: a point lookup.
            return self
                .read_point(move |c| {
                    c.prepare_cached("SELECT data FROM blob_data WHERE id = ?1")?
                        .query_row([key], |r| r.get::<_, Vec<u8>>(0))
                        .optional()?
                        .ok_or(StoreError::NotFound)
                })
                .await;
        }
        Ok(tokio::fs::read(self.blob_path(id)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window keeps the newest files within its byte and file budgets and gives back the
    /// oldest first.
    #[test]
    fn recent_window_drops_the_oldest() {
        let mut r = RecentBlobs { files: Default::default(), bytes: 0 };
        let mib = 1024 * 1024;
        assert!(r.push("a".into(), 20 * mib).is_empty());
        assert!(r.push("b".into(), 10 * mib).is_empty());
        assert_eq!(r.push("c".into(), 5 * mib), vec![PathBuf::from("a")]);
        assert_eq!(r.bytes, 15 * mib);
        // One file larger than the window is dropped at once, with everything before it.
        assert_eq!(r.push("d".into(), 40 * mib), vec![PathBuf::from("b"), "c".into(), "d".into()]);
        assert_eq!((r.files.len(), r.bytes), (0, 0));
        let mut dropped = 0;
        for i in 0..RECENT_FILES + 10 {
            dropped += r.push(format!("f{i}").into(), 200 * 1024).len();
        }
        assert_eq!((dropped, r.files.len()), (10, RECENT_FILES));
    }
}
