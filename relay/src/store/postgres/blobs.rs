//! Message bodies: `blob_data` rows, inline or in the object store.

use super::*;

/// Delete the `blob_data` rows among `ids` that nothing references any more. Returns those
/// whose bytes are in the object store, to be deleted there after the commit.
pub(super) async fn drop_unreferenced(tx: &Tx<'_>, ids: &[String]) -> Result<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            &tx.prepare_cached(
                "DELETE FROM blob_data d WHERE d.id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = d.id)
             AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob = d.id)
             RETURNING d.id, d.external",
            )
            .await?,
            &[&ids],
        )
        .await?;
    Ok(rows.iter().filter(|r| r.get::<_, i64>(1) != 0).map(|r| r.get(0)).collect())
}

pub(super) async fn insert_body(tx: &Tx<'_>, b: &Body) -> Result<()> {
    tx.execute(
        &tx.prepare_cached("INSERT INTO blob_data(id, data, external) VALUES($1, $2, $3) ON CONFLICT DO NOTHING")
            .await?,
        &[&b.id.0, &b.data.as_ref(), &i64::from(b.external)],
    )
    .await?;
    Ok(())
}

impl Pg {
    pub(crate) async fn read_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let c = self.client().await?;
        let row = c
            .query_opt(&c.prepare_cached("SELECT data, external FROM blob_data WHERE id = $1").await?, &[&id.0])
            .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        drop(c);
        match (row.get::<_, i64>(1), &self.s3) {
            (0, _) => Ok(row.get::<_, Vec<u8>>(0)),
            (_, Some(s3)) => s3.get(id.as_str()).await,
            (_, None) => Err(StoreError::Invalid("body is in the object store, but [blobs] backend is not s3")),
        }
    }
}

/// `[blobs] orphan_grace` by default: far longer than any transaction between a PUT and its
/// COMMIT, so an object younger than this may still be about to get its row.
pub(super) const ORPHAN_GRACE_SECS: i64 = 86_400;
/// Keys per ListObjectsV2 request, and at most this many listed per pass: a pass's work is
/// bounded however large the bucket; the next pass resumes after the last key looked at
/// (kv `orphan_sweep_after`) and starts over once it reached the end.
const SWEEP_PAGE: usize = 1000;
const SWEEP_MAX_LISTED: usize = 10 * SWEEP_PAGE;

impl Pg {
    /// RET-3 for the bucket: delete objects older than the grace period that no `blob_data` row
    /// names (left by a crash between the PUT and the COMMIT), at most `BATCH` per pass, under
    /// the expiry advisory lock (another node's pass skips). Only keys this relay could have made
    /// are considered. `dry`: count them, delete nothing, move no cursor, take no lock.
    pub(crate) async fn sweep_orphan_objects(&self, now: i64, dry: bool) -> Result<u64> {
        let Some(s3) = &self.s3 else { return Ok(0) };
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !dry && !Self::expiry_turn(&tx).await? {
            return Ok(0);
        }
        let mut cursor: String = tx
            .query_opt(&tx.prepare_cached("SELECT value FROM kv WHERE key = 'orphan_sweep_after'").await?, &[])
            .await?
            .map(|r| r.get(0))
            .unwrap_or_default();
        let cutoff = s3::iso_seconds(now - self.orphan_grace_secs);
        let (mut listed, mut removed) = (0usize, 0u64);
        'pages: loop {
            let (keys, more) = s3.list(&cursor, SWEEP_PAGE).await?;
            listed += keys.len();
            let old: Vec<String> = keys
                .iter()
                .filter(|(k, modified)| BlobId::parse(k).is_some() && *modified < cutoff)
                .map(|(k, _)| k.clone())
                .collect();
            let known: std::collections::HashSet<String> = if old.is_empty() {
                Default::default()
            } else {
                tx.query(&tx.prepare_cached("SELECT id FROM blob_data WHERE id = ANY($1)").await?, &[&old])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            };
            for (key, _) in &keys {
                if removed >= BATCH as u64 {
                    break 'pages;
                }
                if old.contains(key) && !known.contains(key) {
                    if !dry {
                        s3.delete(key).await?;
                    }
                    removed += 1;
                }
                cursor.clone_from(key);
            }
            if !more || keys.is_empty() {
                cursor.clear();
                break;
            }
            if listed >= SWEEP_MAX_LISTED {
                break;
            }
        }
        if dry {
            return Ok(removed);
        }
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO kv(key, value) VALUES('orphan_sweep_after', $1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            )
            .await?,
            &[&cursor],
        )
        .await?;
        tx.commit().await?;
        if removed > 0 {
            tracing::info!(removed, "object store: orphan objects removed");
        }
        Ok(removed)
    }
}
