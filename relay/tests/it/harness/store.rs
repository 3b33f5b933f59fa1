//! Direct access to a relay's store and database (retention, push).

#![allow(dead_code)]

use super::*;

// ---------------------------------------------------------------- store access (retention, push)

impl Relay {
    /// A direct connection to the relay's SQLite file (stop the relay before writing to it).
    pub fn db(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.data_dir().join("chatrelay.db")).expect("open db");
        c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
        c
    }

    /// Run `f` on a `relay::store::Store` opened on the relay's data_dir, on a fresh runtime.
    pub fn with_store<T>(&self, f: impl AsyncFnOnce(&relay::store::Store) -> T) -> T {
        let rt = tokio::runtime::Runtime::new().expect("rt");
        rt.block_on(async {
            let store = relay::store::Store::open(&self.data_dir()).expect("open store");
            f(&store).await
        })
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Create an account directly in the store (no password login possible: the hash is a dummy).
pub async fn seed_account(store: &relay::store::Store, address: &str) -> relay::store::Account {
    match store.create_account(address, "seeded".into(), address.as_bytes().to_vec()).await.expect("create") {
        relay::store::CreateOutcome::Created(a) | relay::store::CreateOutcome::AlreadyExists(a) => a,
        other => panic!("cannot seed {address}: {other:?}"),
    }
}

/// Deliver `size` bytes as one message to `to`, sent by `sender_account`; returns the UID.
pub async fn seed_message(
    store: &relay::store::Store,
    to: relay::store::AccountId,
    sender_account: Option<relay::store::AccountId>,
    size: usize,
) -> u32 {
    let body = bytes::Bytes::from(vec![b'x'; size]);
    let blob = store.put_blob(body).await.expect("blob");
    let r = store
        .deliver(relay::store::Delivery {
            sender: "someone@chat.test".into(),
            sender_account,
            local: vec![to],
            local_blob: Some(blob),
            push: true,
            ..Default::default()
        })
        .await
        .expect("deliver");
    r.stored[0].2
}

/// Count rows of a query returning one integer.
pub fn count(db: &rusqlite::Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// Poll `cond` every 100 ms for at most `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Relay {
    /// Wait until the log says the relay is ready. Signal handlers are installed just before that
    /// line, after the listeners accept, so a SIGTERM sent earlier can kill the process outright.
    pub fn wait_logged_ready(&self) {
        let ok = wait_until(Duration::from_secs(10), || self.log().lines().any(|l| l.contains(" ready")));
        assert!(ok, "no ready line:\n{}", self.log());
    }
}
