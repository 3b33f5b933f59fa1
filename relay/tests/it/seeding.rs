//! Store seeding shared by the retention and push tests: a relay stopped for seeding, accounts
//! with a push token, backdated messages, and an account's messages and usage read back.

use relay::store::{Account, AccountId, Store};

use crate::harness::{Relay, seed_account, seed_message};

pub const DAY: i64 = 86_400;

impl Relay {
    /// Start a relay, wait for its ready line and stop it cleanly: migrated and ready for seeding.
    pub fn stopped(extra: &str) -> Self {
        let mut r = Self::start(extra);
        r.wait_logged_ready();
        assert_eq!(r.stop(), Some(0), "clean stop");
        r
    }
}

/// An account with the push token `tok` and, given a size, one message of that size from someone
/// else (its delivery creates a push job).
pub async fn seed_subscriber(s: &Store, addr: &str, tok: &str, message: Option<usize>) -> Account {
    let a = seed_account(s, addr).await;
    s.add_push_token(a.id, tok.to_string()).await.expect("token");
    if let Some(size) = message {
        seed_message(s, a.id, None, size).await;
    }
    a
}

/// Seed one message per `(size, age in seconds)` into `acc`'s INBOX and move each one's
/// `internal_date` back by its age; returns the UIDs in order.
pub fn seed_aged(relay: &Relay, acc: AccountId, msgs: &[(usize, i64)]) -> Vec<u32> {
    let uids = relay.with_store(async |s| {
        let mut uids = Vec::new();
        for (size, _) in msgs {
            uids.push(seed_message(s, acc, None, *size).await);
        }
        uids
    });
    let db = relay.db();
    for (uid, (_, age)) in uids.iter().zip(msgs) {
        db.execute(
            "UPDATE messages SET internal_date = internal_date - ?1 WHERE uid = ?2
             AND mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = ?3)",
            rusqlite::params![age, uid, acc],
        )
        .expect("age");
    }
    uids
}

/// The UIDs (ascending) of `acc`'s messages and its usage counter.
pub fn account_state(db: &rusqlite::Connection, acc: AccountId) -> (Vec<u32>, i64) {
    let mut st = db
        .prepare("SELECT m.uid FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = ?1 ORDER BY m.uid")
        .expect("prepare");
    let uids = st.query_map([acc], |r| r.get(0)).expect("q").map(|r| r.expect("row")).collect();
    let usage = db.query_row("SELECT usage_bytes FROM accounts WHERE id = ?1", [acc], |r| r.get(0)).expect("usage");
    (uids, usage)
}
