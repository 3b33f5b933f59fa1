//! The MTA-STS policy cache (delivery.md DLV-29): one row per domain with the policy id, the raw
//! policy text, when it was fetched and its `max_age`.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPolicy {
    pub policy_id: String,
    pub policy: String,
    pub fetched_at: i64,
    pub max_age: i64,
}

impl Store {
    pub async fn mta_sts_get(&self, domain: &str) -> Result<Option<CachedPolicy>> {
        let domain = domain.to_ascii_lowercase();
        self.read(move |c| {
            Ok(c.query_row(
                "SELECT policy_id, policy, fetched_at, max_age FROM mta_sts WHERE domain = ?1",
                [domain],
                |r| {
                    Ok(CachedPolicy {
                        policy_id: r.get(0)?,
                        policy: r.get(1)?,
                        fetched_at: r.get(2)?,
                        max_age: r.get(3)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    pub async fn mta_sts_put(&self, domain: &str, p: CachedPolicy) -> Result<()> {
        let domain = domain.to_ascii_lowercase();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO mta_sts(domain, policy_id, policy, fetched_at, max_age) VALUES(?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(domain) DO UPDATE SET policy_id = excluded.policy_id, policy = excluded.policy,
                 fetched_at = excluded.fetched_at, max_age = excluded.max_age",
                params![domain, p.policy_id, p.policy, p.fetched_at, p.max_age],
            )?;
            Ok(())
        })
        .await
    }
}
