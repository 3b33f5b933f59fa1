//! A session's view of its selected mailbox (IMAP-24..27): UIDs in a Vec sorted by UID with
//! their flags, and the modseq the view reflects. Catch-up reads only rows changed after that
//! modseq, so per-event work depends on the change, not on the mailbox size.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex};

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::store::{Flags, MailboxId, MailboxInfo, MessageMeta, Store, StoreError};

pub struct ViewMsg {
    pub uid: u32,
    pub flags: u32,
    pub kw: Option<Box<str>>,
    pub recent: bool,
}

impl ViewMsg {
    fn from_meta(m: &MessageMeta, recent: bool) -> Self {
        Self { uid: m.uid, flags: m.flags.0, kw: (!m.keywords.is_empty()).then(|| m.keywords.clone().into()), recent }
    }
}

pub struct Selected {
    pub id: MailboxId,
    pub name: String,
    pub uidvalidity: u32,
    pub read_only: bool,
    pub msgs: Vec<ViewMsg>,
    pub modseq: i64,
    /// Expunged elsewhere but not yet announced (IMAP-26).
    pub pending_expunge: Vec<u32>,
    /// How many of `msgs` carry `\Recent` (kept so an event costs no scan).
    n_recent: usize,
    /// Keywords this session has listed in `* FLAGS` (IMAP-27b), in the order first seen.
    pub keywords: Vec<String>,
}

/// `\Recent` goes to exactly one session (IMAP-19): the highest UID already handed out per
/// mailbox. Keyed by (mailbox id, UIDVALIDITY): SQLite reuses the id of a deleted mailbox, but a
/// UIDVALIDITY is never handed out twice (IMAP-16), so a re-created mailbox starts afresh.
/// In memory only; after a restart the next session sees them as recent again.
type RecentKey = (MailboxId, u32);
static RECENT: LazyLock<Mutex<HashMap<RecentKey, u32>>> = LazyLock::new(|| Mutex::new(HashMap::new()));
/// Mailboxes tracked in `RECENT` before it starts over (deleted mailboxes are never removed one
/// by one); starting over only means some messages are `\Recent` once more.
const RECENT_MAX: usize = 100_000;

fn claim_recent(mailbox: RecentKey, uid: u32) -> bool {
    let mut map = match RECENT.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    if map.len() >= RECENT_MAX && !map.contains_key(&mailbox) {
        *map = HashMap::new();
    }
    let e = map.entry(mailbox).or_insert(0);
    if uid > *e {
        *e = uid;
        true
    } else {
        false
    }
}

pub fn flags_string(flags: u32, kw: Option<&str>, recent: bool) -> String {
    let mut v: Vec<&str> = Vec::new();
    for (bit, name) in [
        (Flags::SEEN, "\\Seen"),
        (Flags::ANSWERED, "\\Answered"),
        (Flags::FLAGGED, "\\Flagged"),
        (Flags::DELETED, "\\Deleted"),
        (Flags::DRAFT, "\\Draft"),
    ] {
        if flags & bit != 0 {
            v.push(name);
        }
    }
    if recent {
        v.push("\\Recent");
    }
    if let Some(k) = kw {
        v.extend(k.split(' ').filter(|k| !k.is_empty()));
    }
    format!("({})", v.join(" "))
}

impl Selected {
    /// Build the view from one consistent snapshot (`Store::snapshot`, IMAP-28a): the rows
    /// are exactly the state at `info.highestmodseq`, which becomes the view's cursor, so every
    /// later change is seen by exactly one of the snapshot and the catch-up.
    pub fn from_snapshot(info: MailboxInfo, rows: &[MessageMeta], read_only: bool) -> Self {
        let key = (info.id, info.uidvalidity);
        let msgs: Vec<ViewMsg> =
            rows.iter().map(|m| ViewMsg::from_meta(m, !read_only && claim_recent(key, m.uid))).collect();
        let n_recent = msgs.iter().filter(|m| m.recent).count();
        let mut keywords: Vec<String> = Vec::new();
        for m in &msgs {
            for k in m.kw.as_deref().unwrap_or("").split(' ').filter(|k| !k.is_empty()) {
                if !keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                    keywords.push(k.to_string());
                }
            }
        }
        Self {
            id: info.id,
            name: info.name,
            uidvalidity: info.uidvalidity,
            read_only,
            msgs,
            modseq: info.highestmodseq,
            pending_expunge: Vec::new(),
            n_recent,
            keywords,
        }
    }

    /// `* FLAGS` and `* OK [PERMANENTFLAGS]` listing the system flags and the known keywords.
    pub fn flags_lines(&self, out: &mut String) {
        let mut kw = String::new();
        for k in &self.keywords {
            kw.push(' ');
            kw.push_str(k);
        }
        let _ = write!(out, "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw})\r\n");
        if self.read_only {
            out.push_str("* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n");
        } else {
            let _ = write!(
                out,
                "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft{kw} \\*)] Flags permitted.\r\n"
            );
        }
    }

    /// Add keywords this session has not listed yet and announce the new list (IMAP-27b), so
    /// the untagged FLAGS comes before any FETCH that shows them.
    pub fn learn_keywords<'a>(&mut self, kws: impl IntoIterator<Item = &'a str>, out: &mut String) {
        let mut new = false;
        for k in kws {
            if !k.is_empty() && !self.keywords.iter().any(|x| x.eq_ignore_ascii_case(k)) {
                self.keywords.push(k.to_string());
                new = true;
            }
        }
        if new {
            self.flags_lines(out);
        }
    }

    pub fn index_of(&self, uid: u32) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    pub fn recent_count(&self) -> usize {
        self.n_recent
    }

    pub fn max_uid(&self) -> u32 {
        self.msgs.last().map(|m| m.uid).unwrap_or(0)
    }

    /// Indexes (0-based, ascending, unique) selected by a sequence set.
    pub fn resolve(&self, set: &SequenceSet, by_uid: bool) -> Vec<usize> {
        self.resolve_ranges(set, by_uid).into_iter().flatten().collect()
    }

    /// The set as sorted, disjoint, non-adjacent index ranges: O(ranges × log) whatever their
    /// overlap, so `1:*,1:*,...` costs no more than one `1:*` afterwards (issue 26).
    pub fn resolve_ranges(&self, set: &SequenceSet, by_uid: bool) -> Vec<std::ops::Range<usize>> {
        let n = self.msgs.len();
        if n == 0 {
            return Vec::new();
        }
        let largest = if by_uid { self.max_uid() } else { n as u32 };
        let val = |s: &SeqOrUid| match s {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => largest,
        };
        let mut ranges = Vec::new();
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(s) => (val(s), val(s)),
                Sequence::Range(x, y) => (val(x).min(val(y)), val(x).max(val(y))),
            };
            let r = if by_uid {
                self.msgs.partition_point(|m| m.uid < a)..self.msgs.partition_point(|m| m.uid <= b)
            } else {
                (a as usize).max(1) - 1..(b as usize).min(n)
            };
            if r.start < r.end {
                ranges.push(r);
            }
        }
        ranges.sort_unstable_by_key(|r| r.start);
        let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(ranges.len().min(n));
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }

    /// Bring the view up to date from the store and write the untagged responses (IMAP-25).
    /// Expunges are held back when `allow_expunge` is false (IMAP-26).
    pub async fn catch_up(&mut self, store: &Store, allow_expunge: bool, out: &mut String) -> Result<(), StoreError> {
        let (changed, gone, highest) = store.changes_since(self.id, self.modseq).await?;
        self.apply(&changed, gone, highest, allow_expunge, out);
        Ok(())
    }

    /// Show a delivered message (default flags) without reading the store, when its modseq is
    /// the view's next one, so nothing else can have changed in between. Already seen: true,
    /// nothing to do. A gap: false, the caller catches up from the store.
    pub fn apply_appended(&mut self, uid: u32, modseq: i64, allow_expunge: bool, out: &mut String) -> bool {
        if modseq <= self.modseq {
            return true;
        }
        if modseq != self.modseq + 1 {
            return false;
        }
        let meta = MessageMeta {
            uid,
            blob: crate::store::BlobId(String::new()),
            size: 0,
            internal_date: 0,
            flags: Flags::default(),
            keywords: String::new(),
            modseq,
        };
        self.apply(std::slice::from_ref(&meta), Vec::new(), modseq, allow_expunge, out);
        true
    }

    /// Announce expunges held back during a FETCH, STORE or SEARCH (IMAP-26).
    pub fn release_expunges(&mut self, out: &mut String) {
        if !self.pending_expunge.is_empty() {
            self.apply(&[], Vec::new(), self.modseq, true, out);
        }
    }

    fn apply(&mut self, changed: &[MessageMeta], gone: Vec<u32>, highest: i64, allow_expunge: bool, out: &mut String) {
        for uid in gone {
            if self.index_of(uid).is_some() && !self.pending_expunge.contains(&uid) {
                self.pending_expunge.push(uid);
            }
        }
        if allow_expunge && !self.pending_expunge.is_empty() {
            self.pending_expunge.sort_unstable();
            for uid in std::mem::take(&mut self.pending_expunge) {
                if let Some(i) = self.index_of(uid) {
                    if self.msgs.remove(i).recent {
                        self.n_recent -= 1;
                    }
                    let _ = write!(out, "* {} EXPUNGE\r\n", i + 1);
                }
            }
        }
        self.learn_keywords(changed.iter().flat_map(|m| m.keywords.split(' ')), out);
        let before = self.msgs.len();
        for m in changed {
            match self.msgs.binary_search_by_key(&m.uid, |v| v.uid) {
                Ok(i) => {
                    let v = &mut self.msgs[i];
                    let kw = (!m.keywords.is_empty()).then_some(m.keywords.as_str());
                    if v.flags != m.flags.0 || v.kw.as_deref() != kw {
                        v.flags = m.flags.0;
                        v.kw = kw.map(Into::into);
                        let _ = write!(
                            out,
                            "* {} FETCH (UID {} FLAGS {})\r\n",
                            i + 1,
                            m.uid,
                            flags_string(v.flags, v.kw.as_deref(), v.recent)
                        );
                    }
                }
                Err(i) if i == self.msgs.len() => {
                    let recent = !self.read_only && claim_recent((self.id, self.uidvalidity), m.uid);
                    self.n_recent += usize::from(recent);
                    self.msgs.push(ViewMsg::from_meta(m, recent));
                }
                // A UID below our newest that we never saw cannot exist (UIDs only grow).
                Err(_) => {}
            }
        }
        if self.msgs.len() != before {
            let _ = write!(out, "* {} EXISTS\r\n", self.msgs.len());
            let _ = write!(out, "* {} RECENT\r\n", self.n_recent);
        }
        self.modseq = self.modseq.max(highest);
    }
}

#[cfg(test)]
mod tests {
    //! Per-event catch-up cost against a real SQLite store (P2 target: ≤ 1 ms with 1000 messages).

    use super::*;
    use crate::store::CreateOutcome;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_up_cost_does_not_grow_with_mailbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let acc = match store.create_account("p2@chat.test", "x".into(), vec![1]).await.expect("create") {
            CreateOutcome::Created(a) => a,
            _ => panic!("not created"),
        };
        let inbox = store.mailbox(acc.id, "INBOX").await.expect("read").expect("inbox");
        let blob = store.put_blob(bytes::Bytes::from_static(b"Subject: x\r\n\r\nx\r\n")).await.expect("blob");
        let mut out = String::new();
        let mut results = Vec::new();
        for target in [1usize, 1000] {
            let have = store.messages(inbox.id).await.expect("rows").len();
            let jobs = (have..target).map(|_| store.append(acc.id, inbox.id, blob.clone(), 0, 0, Vec::new(), u64::MAX));
            for r in futures::future::join_all(jobs).await {
                r.expect("append");
            }
            let (info, rows) = store.snapshot(acc.id, "INBOX").await.expect("read").expect("inbox");
            let mut sel = Selected::from_snapshot(info, &rows, false);
            assert_eq!(sel.msgs.len(), target);
            let mut total = std::time::Duration::ZERO;
            let rounds = 20;
            for _ in 0..rounds {
                store.append(acc.id, inbox.id, blob.clone(), 0, 0, Vec::new(), u64::MAX).await.expect("append");
                out.clear();
                let t = std::time::Instant::now();
                sel.catch_up(&store, true, &mut out).await.expect("catch up");
                total += t.elapsed();
                assert!(out.contains(" EXISTS\r\n"), "{out}");
            }
            results.push((target, total / rounds));
        }
        for (n, per) in &results {
            println!("catch-up after one new message with {n} messages in the mailbox: {per:?} per event");
        }
    }
}
