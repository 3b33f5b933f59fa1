//! The verified-login cache (ACC-22): keyed by HMAC(secret, address, password), so it never holds
//! a password or an unkeyed hash of one. Bounded (100 000 entries, oldest evicted) and entries
//! live one hour. An entry also names the account id and its stored hash, so a deleted, re-created
//! or re-hashed account never matches an old entry.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_ENTRIES: usize = 100_000;
const TTL: Duration = Duration::from_secs(3600);

type Key = [u8; 32];

struct Entry {
    account: i64,
    hash_tag: u64,
    at: Instant,
}

#[derive(Default)]
pub struct LoginCache {
    inner: Mutex<(HashMap<Key, Entry>, VecDeque<Key>)>,
}

fn tag(stored_hash: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stored_hash.hash(&mut h);
    h.finish()
}

impl LoginCache {
    pub fn hit(&self, key: &Key, account: i64, stored_hash: &str) -> bool {
        let Ok(g) = self.inner.lock() else { return false };
        g.0.get(key).is_some_and(|e| e.account == account && e.hash_tag == tag(stored_hash) && e.at.elapsed() < TTL)
    }

    pub fn insert(&self, key: Key, account: i64, stored_hash: &str) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order) = &mut *g;
        if map.insert(key, Entry { account, hash_tag: tag(stored_hash), at: Instant::now() }).is_none() {
            order.push_back(key);
        }
        while map.len() > MAX_ENTRIES {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Drop every entry of an account (deletion, blocking).
    pub fn forget(&self, account: i64) {
        let Ok(mut g) = self.inner.lock() else { return };
        let (map, order) = &mut *g;
        map.retain(|_, e| e.account != account);
        order.retain(|k| map.contains_key(k));
    }
}
