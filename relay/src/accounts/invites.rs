//! Invite-only registration (issue 28, `registration = "invite"`). `chatrelay invites create`
//! makes a random token; `POST /new?invite=TOKEN` (what Delta Chat does with a
//! `dcaccount:https://<domain>/new?invite=TOKEN` link) counts one use and creates the account at
//! once with fresh credentials, so the first login is an ordinary login. A first login of an
//! unknown address in this mode is refused like any other refused creation (ACC-13).
//!
//! Rules: a use is counted atomically in the store before the account is made and given back if
//! it is not; the token is never stored or logged, only its SHA-256.

use rand::RngExt;
use sha2::{Digest, Sha256};

use super::{Accounts, GateClosed, password};
use crate::store::{CreateOutcome, InviteUse, StoreError};

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// 22 characters of 62: about 131 bits.
const TOKEN_LEN: usize = 22;
/// Characters of the token kept in clear for `invites list`.
pub const HINT_LEN: usize = 4;

/// Why `/new` with an invite made no account. `reason()` is the JSON `reason` clients show.
#[derive(Debug, thiserror::Error)]
pub enum InviteRefused {
    #[error("registration on this relay needs an invite")]
    Missing,
    #[error("unknown invite")]
    Unknown,
    #[error("this invite was revoked")]
    Revoked,
    #[error("this invite has expired")]
    Expired,
    #[error("this invite has been used up")]
    UsedUp,
    #[error("registration refused: {}", .0.label())]
    Gate(GateClosed),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl InviteRefused {
    /// The metric label of `chatrelay_registrations_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "invite_missing",
            Self::Unknown | Self::Revoked | Self::Expired | Self::UsedUp => "invite_invalid",
            Self::Gate(g) => g.label(),
            Self::Store(_) => "store",
        }
    }
}

/// A new random token (the CLI shows it once, in the link).
pub fn new_token() -> String {
    let mut rng = rand::rng();
    (0..TOKEN_LEN).map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char).collect()
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `token` could be one of ours; anything else is unknown without a store lookup.
pub fn plausible(token: &str) -> bool {
    (1..=64).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Accounts {
    /// `/new` in invite mode: count one use of `token` and create `addr` with `password` (fresh
    /// generated credentials). The resource gates (ACC-16) still apply, before the use counts.
    pub async fn create_invited(&self, token: &str, addr: &str, password: &str) -> Result<(), InviteRefused> {
        let cfg = self.config.get();
        if let Err(g) = self.gates.check_resources(&cfg) {
            return Err(InviteRefused::Gate(g));
        }
        if !plausible(token) {
            return Err(InviteRefused::Unknown);
        }
        let id = match self.store.use_invite(token_hash(token)).await? {
            InviteUse::Counted { id } => id,
            InviteUse::Unknown => return Err(InviteRefused::Unknown),
            InviteUse::Revoked => return Err(InviteRefused::Revoked),
            InviteUse::Expired => return Err(InviteRefused::Expired),
            InviteUse::UsedUp => return Err(InviteRefused::UsedUp),
        };
        let made = self.create_now(addr, password).await;
        if made.is_err() {
            // The use bought nothing: give it back (best effort; the store error is reported).
            let _ = self.store.refund_invite(id).await;
        }
        made
    }

    async fn create_now(&self, addr: &str, password: &str) -> Result<(), InviteRefused> {
        let pw = password.to_string();
        let hash = self
            .run_hash_job(move || password::hash(&pw))
            .await
            .map_err(|_| InviteRefused::Store(StoreError::Closed))?
            .map_err(|_| InviteRefused::Store(StoreError::Invalid("password hash")))?;
        match self.store.create_account(addr, hash, self.secret.tombstone(addr)).await? {
            CreateOutcome::Created(acc) => {
                self.metrics.accounts_created.inc();
                self.metrics.accounts.inc();
                tracing::info!("account created by invite");
                let key = self.secret.keyed_hash(&[b"login", addr.as_bytes(), password.as_bytes()]);
                self.cache.insert(key, acc.id, &acc.password_hash);
                Ok(())
            }
            // The generator checked both a moment ago; a race this narrow is simply refused.
            CreateOutcome::AlreadyExists(_) | CreateOutcome::Tombstoned => {
                Err(InviteRefused::Store(StoreError::Exists))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = new_token();
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(plausible(&t));
        assert_ne!(t, new_token());
        assert!(!plausible(""));
        assert!(!plausible("abc-def"));
        assert!(!plausible(&"a".repeat(65)));
        assert_eq!(token_hash("x"), token_hash("x"));
        assert_ne!(token_hash("x"), token_hash("y"));
    }
}
