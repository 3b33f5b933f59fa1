//! Registration invites on the shared database: an invite made with `chatrelay invites create`
//! through any node is valid on every node, and its uses are counted in one row for all of them.

use super::*;
use crate::store::invites::{Invite, InviteUse};

const COLS: &str = "id, hint, max_uses, used, created_at, expires_at, revoked";

fn invite_of(r: &Row) -> Invite {
    Invite {
        id: r.get(0),
        hint: r.get(1),
        max_uses: u32::try_from(r.get::<_, i64>(2)).unwrap_or(0),
        used: u32::try_from(r.get::<_, i64>(3)).unwrap_or(0),
        created_at: r.get(4),
        expires_at: r.get(5),
        revoked: r.get::<_, i64>(6) != 0,
    }
}

impl Pg {
    pub(crate) async fn create_invite(
        &self,
        token_hash: [u8; 32],
        hint: String,
        max_uses: u32,
        expires_at: Option<i64>,
    ) -> Result<Invite> {
        let c = self.client().await?;
        let st = format!(
            "INSERT INTO invites(token_hash, hint, max_uses, created_at, expires_at) VALUES($1, $2, $3, $4, $5)
             RETURNING {COLS}"
        );
        let row =
            c.query_one(&st, &[&token_hash.as_slice(), &hint, &i64::from(max_uses), &now_secs(), &expires_at]).await?;
        Ok(invite_of(&row))
    }

    pub(crate) async fn list_invites(&self) -> Result<Vec<Invite>> {
        let c = self.client().await?;
        Ok(c.query(&format!("SELECT {COLS} FROM invites ORDER BY id"), &[]).await?.iter().map(invite_of).collect())
    }

    pub(crate) async fn revoke_invite(&self, id: i64) -> Result<bool> {
        let c = self.client().await?;
        Ok(c.execute(&c.prepare_cached("UPDATE invites SET revoked = 1 WHERE id = $1 AND revoked = 0").await?, &[&id])
            .await?
            == 1)
    }

    /// One conditional UPDATE: two nodes' concurrent uses of one invite queue on its row lock,
    /// and the second re-checks `used < max_uses` against the first's committed row (READ
    /// COMMITTED re-evaluates the WHERE of an UPDATE that waited), so N uses make N accounts.
    pub(crate) async fn use_invite(&self, token_hash: [u8; 32]) -> Result<InviteUse> {
        let c = self.client().await?;
        let now = now_secs();
        let hash = token_hash.as_slice();
        let counted = c
            .query_opt(
                &c.prepare_cached(
                    "UPDATE invites SET used = used + 1 WHERE token_hash = $1 AND revoked = 0
                   AND used < max_uses AND (expires_at IS NULL OR expires_at > $2) RETURNING id",
                )
                .await?,
                &[&hash, &now],
            )
            .await?;
        if let Some(r) = counted {
            return Ok(InviteUse::Counted { id: r.get(0) });
        }
        let found = c.query_opt(&format!("SELECT {COLS} FROM invites WHERE token_hash = $1"), &[&hash]).await?;
        Ok(match found.as_ref().map(invite_of) {
            None => InviteUse::Unknown,
            Some(i) if i.revoked => InviteUse::Revoked,
            Some(i) if i.expires_at.is_some_and(|e| e <= now) => InviteUse::Expired,
            Some(_) => InviteUse::UsedUp,
        })
    }

    pub(crate) async fn refund_invite(&self, id: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(&c.prepare_cached("UPDATE invites SET used = used - 1 WHERE id = $1 AND used > 0").await?, &[&id])
            .await?;
        Ok(())
    }
}
