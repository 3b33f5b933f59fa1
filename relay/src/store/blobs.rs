//! Message files. Each blob is one file under `data_dir/blobs/`, named by a random id, written
//! once, fsync'd together with its directory before any row may reference it, and removed when no
//! row references it any more. Files left by a crash before the commit are orphans that the
//! expiry pass removes (RET-3).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngExt;
use rusqlite::{Connection, OptionalExtension};

use super::{Result, StoreError};

/// A random file name; it reveals nothing about the message or its sender.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(pub(crate) String);

impl BlobId {
    pub fn random() -> Self {
        let bytes: [u8; 16] = rand::rng().random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Accepts only ids this module could have made, so a stored name never escapes the blob dir.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Self(s.to_string()))
    }
}

pub(crate) fn path_of(dir: &Path, id: &BlobId) -> PathBuf {
    dir.join(&id.0)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `data` as a new durable blob (blocking; call from a blocking thread).
pub(crate) fn write_blob(dir: &Path, data: &[u8]) -> Result<BlobId> {
    let id = BlobId::random();
    let path = path_of(dir, &id);
    let mut f = File::options().write(true).create_new(true).open(&path)?;
    if let Err(e) = f.write_all(data).and_then(|()| f.sync_all()).and_then(|()| sync_dir(dir)) {
        let _ = std::fs::remove_file(&path);
        return Err(StoreError::Io(e));
    }
    Ok(id)
}

/// Streams a message into a new blob: bytes are kept in memory up to `SPILL` and then written
/// through, so a large message never needs more memory than that.
pub struct BlobWriter {
    dir: PathBuf,
    id: BlobId,
    buf: Vec<u8>,
    file: Option<File>,
    size: u64,
    finished: bool,
}

const SPILL: usize = 256 * 1024;

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

    /// Make the blob durable and return its id and size.
    pub async fn finish(mut self) -> Result<(BlobId, u64)> {
        let buf = std::mem::take(&mut self.buf);
        let file = self.file.take();
        let (dir, id) = (self.dir.clone(), self.id.clone());
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut f = match file {
                Some(f) => f,
                None => File::options().write(true).create_new(true).open(path_of(&dir, &id))?,
            };
            f.write_all(&buf)?;
            f.sync_all()?;
            sync_dir(&dir)?;
            Ok(())
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        self.finished = true;
        Ok((self.id.clone(), self.size))
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

impl super::Store {
    /// Write a whole message as a durable blob.
    pub async fn put_blob(&self, data: bytes::Bytes) -> Result<BlobId> {
        let dir = self.blob_dir().to_path_buf();
        tokio::task::spawn_blocking(move || write_blob(&dir, &data)).await.map_err(|_| StoreError::Closed)?
    }

    /// Read a whole blob (small messages; large FETCHes stream from `blob_path`).
    pub async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        Ok(tokio::fs::read(self.blob_path(id)).await?)
    }
}
