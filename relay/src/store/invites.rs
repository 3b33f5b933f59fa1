//! Registration invites (issue 28, `registration = "invite"`): a token allows a number of new
//! accounts until it expires or is revoked. Only a SHA-256 of the token is kept, so the database
//! cannot hand out working invites; `hint` (the token's first characters) lets an operator tell
//! them apart. On PostgreSQL (issue 27) they live in the shared database (`store/postgres/invites.rs`).

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, now_secs};

/// One invite as `chatrelay invites list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub id: i64,
    pub hint: String,
    pub max_uses: u32,
    pub used: u32,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None`: never.
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

/// What using a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteUse {
    /// One use counted; `id` for `refund_invite` should the account not come about.
    Counted {
        id: i64,
    },
    Unknown,
    Revoked,
    Expired,
    UsedUp,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Invite> {
    Ok(Invite {
        id: r.get(0)?,
        hint: r.get(1)?,
        max_uses: r.get(2)?,
        used: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        revoked: r.get::<_, i64>(6)? != 0,
    })
}

const COLUMNS: &str = "id, hint, max_uses, used, created_at, expires_at, revoked";

impl Store {
    pub async fn create_invite(
        &self,
        token_hash: [u8; 32],
        hint: String,
        max_uses: u32,
        expires_at: Option<i64>,
    ) -> Result<Invite> {
        if let Some(pg) = self.pg() {
            return pg.create_invite(token_hash, hint, max_uses, expires_at).await;
        }
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO invites(token_hash, hint, max_uses, created_at, expires_at) VALUES(?1, ?2, ?3, ?4, ?5)",
                params![token_hash.to_vec(), hint, max_uses, now_secs(), expires_at],
            )?;
            let id = tx.last_insert_rowid();
            Ok(tx.query_row(&format!("SELECT {COLUMNS} FROM invites WHERE id = ?1"), [id], row)?)
        })
        .await
    }

    pub async fn list_invites(&self) -> Result<Vec<Invite>> {
        if let Some(pg) = self.pg() {
            return pg.list_invites().await;
        }
        self.read(|c| {
            let mut st = c.prepare(&format!("SELECT {COLUMNS} FROM invites ORDER BY id"))?;
            let rows = st.query_map([], row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Whether an invite with this id existed and was not yet revoked.
    pub async fn revoke_invite(&self, id: i64) -> Result<bool> {
        if let Some(pg) = self.pg() {
            return pg.revoke_invite(id).await;
        }
        self.write(move |tx| Ok(tx.execute("UPDATE invites SET revoked = 1 WHERE id = ?1 AND revoked = 0", [id])? == 1))
            .await
    }

    /// Count one use of the invite with this token hash, if it is valid now. One conditional
    /// UPDATE, so concurrent uses (and other processes) can never pass `max_uses` between them.
    pub async fn use_invite(&self, token_hash: [u8; 32]) -> Result<InviteUse> {
        if let Some(pg) = self.pg() {
            return pg.use_invite(token_hash).await;
        }
        self.write(move |tx| {
            let now = now_secs();
            let hash = token_hash.to_vec();
            let counted = tx
                .query_row(
                    "UPDATE invites SET used = used + 1 WHERE token_hash = ?1 AND revoked = 0
                       AND used < max_uses AND (expires_at IS NULL OR expires_at > ?2) RETURNING id",
                    params![hash, now],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?;
            if let Some(id) = counted {
                return Ok(InviteUse::Counted { id });
            }
            let found = tx
                .query_row(&format!("SELECT {COLUMNS} FROM invites WHERE token_hash = ?1"), [hash], row)
                .optional()?;
            Ok(match found {
                None => InviteUse::Unknown,
                Some(i) if i.revoked => InviteUse::Revoked,
                Some(i) if i.expires_at.is_some_and(|e| e <= now) => InviteUse::Expired,
                Some(_) => InviteUse::UsedUp,
            })
        })
        .await
    }

    /// Give back a use counted by `use_invite` whose account was not created.
    pub async fn refund_invite(&self, id: i64) -> Result<()> {
        if let Some(pg) = self.pg() {
            return pg.refund_invite(id).await;
        }
        self.write(move |tx| {
            tx.execute("UPDATE invites SET used = used - 1 WHERE id = ?1 AND used > 0", [id])?;
            Ok(())
        })
        .await
    }
}
