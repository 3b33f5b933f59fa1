//! The DKIM key cache (SMTP-43): at most `CAPACITY` keys, each kept until its DNS TTL runs out,
//! and dropped at once when a verification with it fails (the key may have been rotated).
//! Negative answers (no such key, bad record) take at most `NEGATIVE_CAPACITY` places and are
//! evicted before any real key, so junk selectors cannot flush the keys of real peers (issue 31).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use mail_auth::{ResolverCache, Txt};

pub const CAPACITY: usize = 1000;
/// Places negative answers may take.
pub const NEGATIVE_CAPACITY: usize = CAPACITY / 4;

#[derive(Default)]
pub struct KeyCache {
    map: Mutex<HashMap<Box<str>, (Txt, Instant)>>,
}

impl KeyCache {
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop the key of `selector._domainkey.domain`.
    pub fn forget(&self, selector: &str, domain: &str) {
        let key = format!("{selector}._domainkey.{domain}.").to_ascii_lowercase();
        if let Ok(mut m) = self.map.lock() {
            m.remove(key.as_str());
        }
    }
}

impl ResolverCache<Box<str>, Txt> for KeyCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut m = self.map.lock().ok()?;
        match m.get(name) {
            Some((v, until)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                m.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.lock().ok()?.remove(name).map(|(v, _)| v)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        // Temporary DNS errors are not cached: the next message asks again.
        if matches!(&value, Txt::Error(mail_auth::Error::Dns(mail_auth::DnsError::Resolver(_)))) {
            return;
        }
        let Ok(mut m) = self.map.lock() else { return };
        if let Some(slot) = m.get_mut(&key) {
            *slot = (value, valid_until);
            return;
        }
        let negative = matches!(&value, Txt::Error(_));
        let now = Instant::now();
        if m.len() >= CAPACITY || negative {
            m.retain(|_, (_, until)| *until > now);
        }
        let negatives = m.values().filter(|(v, _)| matches!(v, Txt::Error(_))).count();
        if m.len() >= CAPACITY || (negative && negatives >= NEGATIVE_CAPACITY) {
            // Drop a negative answer first, else (only for a real key) the key closest to expiry.
            let victim = m
                .iter()
                .filter(|(_, (v, _))| matches!(v, Txt::Error(_)))
                .min_by_key(|(_, (_, until))| *until)
                .or_else(|| if negative { None } else { m.iter().min_by_key(|(_, (_, until))| *until) })
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    m.remove(&k);
                }
                None => return,
            }
        }
        m.insert(key, (value, valid_until));
    }
}
