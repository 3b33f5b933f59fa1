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
            "DELETE FROM blob_data d WHERE d.id = ANY($1)
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = d.id)
             AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob = d.id)
             RETURNING d.id, d.external",
            &[&ids],
        )
        .await?;
    Ok(rows.iter().filter(|r| r.get::<_, i64>(1) != 0).map(|r| r.get(0)).collect())
}

pub(super) async fn insert_body(tx: &Tx<'_>, b: &Body) -> Result<()> {
    tx.execute(
        "INSERT INTO blob_data(id, data, external) VALUES($1, $2, $3) ON CONFLICT DO NOTHING",
        &[&b.id.0, &b.data.as_ref(), &i64::from(b.external)],
    )
    .await?;
    Ok(())
}

impl Pg {
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
}
