//! TLS and ACME material shared by the nodes (issue 27): the ACME account, the issued certificate
//! chain with its key, and the pending HTTP-01 answers live in PostgreSQL (schema version 3), so
//! every node serves the same certificate and any node's port 80 answers the CA.
//!
//! Ordering runs under the advisory lock `LOCK_ACME`, taken as a session lock on a connection
//! taken out of the pool for the order's duration: if the ordering node dies, its connection
//! closes and the lock frees itself. The certificate is written before the lock is released, so a
//! node that takes the lock next sees it and adopts instead of ordering again.

use super::{Pg, Result, now_secs, schema};

/// The stored certificate of a name set.
pub(crate) struct SharedCert {
    pub generation: i64,
    pub chain_pem: String,
    pub key_pem: String,
}

/// This node's turn to order: holds the cluster lock until dropped (the connection closes).
pub(crate) struct AcmeTurn {
    client: deadpool_postgres::ClientWrapper,
}

/// Pending challenges older than this are left-overs of a crashed order.
const CHALLENGE_MAX_AGE_SECS: i64 = 3600;

impl Pg {
    /// The ACME account JSON stored for `directory`.
    pub(crate) async fn acme_account(&self, directory: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached("SELECT account_json FROM acme_accounts WHERE directory = $1").await?,
                &[&directory],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The account's URI (for the CAA record), whichever node created it.
    pub(crate) async fn acme_account_uri(&self, directory: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt(&c.prepare_cached("SELECT uri FROM acme_accounts WHERE directory = $1").await?, &[&directory])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub(crate) async fn put_acme_account(&self, directory: &str, json: &str, uri: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached(
                "INSERT INTO acme_accounts(directory, account_json, uri) VALUES($1, $2, $3)
             ON CONFLICT(directory) DO UPDATE SET account_json = excluded.account_json, uri = excluded.uri",
            )
            .await?,
            &[&directory, &json, &uri],
        )
        .await?;
        Ok(())
    }

    /// The certificate for `names` if its generation differs from `have` (nothing to fetch when
    /// this node serves it already; the poll costs one indexed lookup).
    pub(crate) async fn shared_certificate(&self, names: &str, have: Option<i64>) -> Result<Option<SharedCert>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(
                    "SELECT generation, chain_pem, key_pem FROM tls_certificates
                 WHERE names = $1 AND generation IS DISTINCT FROM $2",
                )
                .await?,
                &[&names, &have],
            )
            .await?;
        Ok(row.map(|r| SharedCert { generation: r.get(0), chain_pem: r.get(1), key_pem: r.get(2) }))
    }

    /// Try to take the cluster's ACME lock; `None` when another node holds it.
    pub(crate) async fn acme_turn(&self) -> Result<Option<AcmeTurn>> {
        // Out of the pool: a session lock must not go back to the pool with the connection.
        let client = deadpool_postgres::Object::take(self.client().await?);
        let got: bool = client
            .query_one(&client.prepare_cached("SELECT pg_try_advisory_lock($1)").await?, &[&schema::LOCK_ACME])
            .await?
            .get(0);
        Ok(got.then_some(AcmeTurn { client }))
    }

    /// Publish an HTTP-01 answer for every node's port 80 (and drop left-overs of crashed orders).
    pub(crate) async fn put_challenge(&self, token: &str, key_authorization: &str) -> Result<()> {
        let c = self.client().await?;
        let now = now_secs();
        c.execute(
            &c.prepare_cached("DELETE FROM acme_challenges WHERE created_at < $1").await?,
            &[&(now - CHALLENGE_MAX_AGE_SECS)],
        )
        .await?;
        c.execute(
            &c.prepare_cached(
                "INSERT INTO acme_challenges(token, key_authorization, created_at) VALUES($1, $2, $3)
             ON CONFLICT(token) DO UPDATE SET key_authorization = excluded.key_authorization,
             created_at = excluded.created_at",
            )
            .await?,
            &[&token, &key_authorization, &now],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn remove_challenges(&self, tokens: &[String]) -> Result<()> {
        let c = self.client().await?;
        c.execute(&c.prepare_cached("DELETE FROM acme_challenges WHERE token = ANY($1)").await?, &[&tokens]).await?;
        Ok(())
    }

    pub(crate) async fn challenge(&self, token: &str) -> Result<Option<String>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached("SELECT key_authorization FROM acme_challenges WHERE token = $1").await?,
                &[&token],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }
}

impl AcmeTurn {
    /// The generation stored for `names`, read under the lock.
    pub(crate) async fn generation(&self, names: &str) -> Result<Option<i64>> {
        let row = self
            .client
            .query_opt(
                &self.client.prepare_cached("SELECT generation FROM tls_certificates WHERE names = $1").await?,
                &[&names],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Store a newly issued certificate (the next generation) and release the lock.
    pub(crate) async fn store(self, names: &str, chain_pem: &str, key_pem: &str, not_after: i64) -> Result<i64> {
        let row = self
            .client
            .query_one(
                "INSERT INTO tls_certificates(names, chain_pem, key_pem, not_after, issued_at, generation)
                 VALUES($1, $2, $3, $4, $5, 1)
                 ON CONFLICT(names) DO UPDATE SET chain_pem = excluded.chain_pem, key_pem = excluded.key_pem,
                 not_after = excluded.not_after, issued_at = excluded.issued_at,
                 generation = tls_certificates.generation + 1
                 RETURNING generation",
                &[&names, &chain_pem, &key_pem, &not_after, &now_secs()],
            )
            .await?;
        // Closing the connection (on drop) releases the lock as well; unlocking first lets a
        // waiting node go on at once.
        let _ = self
            .client
            .execute(&self.client.prepare_cached("SELECT pg_advisory_unlock($1)").await?, &[&schema::LOCK_ACME])
            .await;
        Ok(row.get(0))
    }
}

/// `migrate --to postgres`: the single node's ACME account and certificate, unless the cluster
/// has its own already. Returns (accounts, certificates) inserted.
pub(crate) async fn migrate_files(pg: &tokio_postgres::Client, data_dir: &std::path::Path) -> Result<(u64, u64)> {
    let dir = crate::tls::acme::dir(data_dir);
    let mut out = (0, 0);
    if let Ok(json) = std::fs::read_to_string(dir.join("account.json"))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&json)
        && let Some(directory) = v.get("directory").and_then(|d| d.as_str())
    {
        let uri = std::fs::read_to_string(dir.join("account-uri")).unwrap_or_default();
        out.0 = pg
            .execute(
                "INSERT INTO acme_accounts(directory, account_json, uri) VALUES($1, $2, $3)
                 ON CONFLICT(directory) DO NOTHING",
                &[&directory, &json, &uri.trim()],
            )
            .await?;
    }
    if let (Ok(names), Ok(chain), Ok(key)) = (
        std::fs::read_to_string(dir.join("names")),
        std::fs::read_to_string(dir.join("cert.pem")),
        std::fs::read_to_string(dir.join("key.pem")),
    ) {
        let not_after = crate::tls::pem_not_after(chain.as_bytes()).unwrap_or(0);
        out.1 = pg
            .execute(
                "INSERT INTO tls_certificates(names, chain_pem, key_pem, not_after, issued_at, generation)
                 VALUES($1, $2, $3, $4, $5, 1) ON CONFLICT(names) DO NOTHING",
                &[&names, &chain, &key, &not_after, &now_secs()],
            )
            .await?;
    }
    Ok(out)
}
