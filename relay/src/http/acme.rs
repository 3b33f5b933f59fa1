//! Pending ACME HTTP-01 challenges, answered on port 80 (HTTP-1). The ACME client (a later issue)
//! inserts `token -> key authorization` before asking the CA to validate and removes it after.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

#[derive(Default)]
pub struct ChallengeStore {
    pending: Mutex<HashMap<String, String>>,
}

impl ChallengeStore {
    pub fn insert(&self, token: String, key_authorization: String) {
        if let Ok(mut m) = self.pending.lock() {
            m.insert(token, key_authorization);
        }
    }

    pub fn remove(&self, token: &str) {
        if let Ok(mut m) = self.pending.lock() {
            m.remove(token);
        }
    }

    pub fn get(&self, token: &str) -> Option<String> {
        self.pending.lock().ok().and_then(|m| m.get(token).cloned())
    }
}

/// The process-wide challenge store (one relay per process).
pub fn challenges() -> &'static ChallengeStore {
    static STORE: OnceLock<ChallengeStore> = OnceLock::new();
    STORE.get_or_init(ChallengeStore::default)
}
