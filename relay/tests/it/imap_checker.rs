//! Issue 25: the IMAP concurrency checker. Several sessions of one account (raw sockets and
//! async-imap, the library Delta Chat uses) and SMTP deliveries run a seeded random mix of
//! deliveries, APPEND, STORE, EXPUNGE, MOVE, SELECT, IDLE start/stop and FETCH for a bounded
//! time, and every response is checked against what the session was told before (RFC 3501/9051):
//!
//! - UIDNEXT of a SELECT is above every UID that SELECT counted, and every message announced
//!   later has a UID at or above it (one snapshot, announced exactly once: IMAP-28a);
//! - EXISTS never shrinks without EXPUNGE, EXPUNGE and FETCH name existing sequence numbers,
//!   and the UIDs the session learns stay strictly increasing with the sequence numbers;
//! - every message stored in a mailbox is announced to each session that has it selected: by
//!   the first command started after the commit, and within 1 s while the session idles;
//! - no connection ends without a BYE or a tagged reply.
//!
//! What is stored, and when, comes from an oracle that polls the relay's database read-only.
//! `IMAP_CHECKER_SECS` (default 10) and `IMAP_CHECKER_SEED` (default random) set the
//! run; the seed is printed first, so a failure replays the same choices with that seed. (Not
//! `CHATRELAY_*`: the relay reads those as configuration and refuses unknown keys.)
//!
//! `run` takes the nodes and the database: one SQLite node here, two nodes of one PostgreSQL
//! in `scaleout_checker` (sessions spread over the nodes, deliveries into either, the oracle
//! reading PostgreSQL).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use crate::harness::{Lines, PASSWORD, Relay, smtp_login};
use crate::imap_helpers::sample_message;

const BOXES: [&str; 2] = ["INBOX", "Other"];
/// How late a wake-up may be while a session idles (the bound; IMAP-29 targets 50 ms).
const IDLE_BOUND: Duration = Duration::from_secs(1);
/// Between a commit becoming visible in the database and its event reaching the sessions.
const PUBLISH_SLACK: Duration = Duration::from_millis(200);
/// How long one response line may take before the checker calls the session hung.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A stored message as the oracle saw it.
struct Entry {
    /// First poll that saw it finished here: the commit was no later.
    seen: Instant,
    /// The last poll that still saw it had started here: an expunge came no earlier.
    present_from: Instant,
    gone: bool,
}

impl Entry {
    /// Whether it may have been expunged before `t` (then a session need not have been told).
    fn maybe_gone_before(&self, t: Instant) -> bool {
        self.gone && self.present_from < t
    }
}

#[derive(Default)]
struct Ledger {
    boxes: HashMap<String, BTreeMap<u32, Entry>>,
    /// When the last finished poll had started.
    polled_from: Option<Instant>,
}

/// Wait until a poll that started after `t` has finished, so everything expunged before `t`
/// is marked gone (a FETCH leaves out messages already expunged elsewhere, IMAP-27).
async fn wait_poll_after(ledger: &Shared, t: Instant) {
    for _ in 0..200 {
        if lock(ledger).polled_from.is_some_and(|p| p > t) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

type Shared = Arc<Mutex<Ledger>>;

fn lock(l: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    match l.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The relay's database, which the oracle polls and failure reports quote.
#[derive(Clone, Debug)]
pub enum Db {
    /// The SQLite file of the one node.
    Sqlite(std::path::PathBuf),
    /// The PostgreSQL database (a `postgres://` URL) every node shares.
    Postgres(String),
}

/// The stored messages of `address`, as (mailbox name, UID).
const ORACLE_SQL: &str = "SELECT mb.name, m.uid FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id
                     JOIN accounts a ON a.id = mb.account_id WHERE a.address = ";

/// A read-only connection the oracle thread polls through.
enum Reader {
    Sqlite(rusqlite::Connection),
    /// A client driven by a runtime of the oracle's own thread (its connection task runs while
    /// a query is awaited).
    Postgres(tokio::runtime::Runtime, tokio_postgres::Client),
}

impl Reader {
    fn open(db: &Db) -> Self {
        match db {
            Db::Sqlite(path) => {
                let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .expect("open db");
                c.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
                Self::Sqlite(c)
            }
            Db::Postgres(url) => {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                let client = rt.block_on(async {
                    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("connect");
                    tokio::spawn(conn);
                    client
                });
                Self::Postgres(rt, client)
            }
        }
    }

    fn rows(&self, address: &str) -> Vec<(String, u32)> {
        match self {
            Self::Sqlite(c) => {
                let mut st = c.prepare_cached(&format!("{ORACLE_SQL}?1")).expect("prepare");
                st.query_map([address], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u32)))
                    .expect("query")
                    .collect::<rusqlite::Result<_>>()
                    .expect("rows")
            }
            Self::Postgres(rt, c) => rt
                .block_on(c.query(&format!("{ORACLE_SQL}$1"), &[&address]))
                .expect("oracle query")
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u32))
                .collect(),
        }
    }
}

/// Poll the database every few milliseconds and record when each message appears and goes.
fn oracle(db: Db, address: String, ledger: Shared, stop: Arc<AtomicBool>) -> u64 {
    let reader = Reader::open(&db);
    let mut polls = 0;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let rows = reader.rows(&address);
        let done = Instant::now();
        let mut l = lock(&ledger);
        let mut present: HashMap<&str, Vec<u32>> = HashMap::new();
        for (name, uid) in &rows {
            present.entry(name.as_str()).or_default().push(*uid);
            let e = l.boxes.entry(name.clone()).or_default().entry(*uid).or_insert(Entry {
                seen: done,
                present_from: started,
                gone: false,
            });
            e.present_from = started;
        }
        for (name, entries) in l.boxes.iter_mut() {
            let here = present.get(name.as_str());
            for (uid, e) in entries.iter_mut() {
                if !e.gone && !here.is_some_and(|v| v.contains(uid)) {
                    e.gone = true;
                }
            }
        }
        l.polled_from = Some(started);
        drop(l);
        polls += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    polls
}

/// Rows about `uid` (messages with their modseq, expunge records) and the mailboxes' modseqs.
async fn db_rows(db: &Db, uid: u32) -> String {
    match db {
        Db::Sqlite(path) => sqlite_rows(path, uid),
        Db::Postgres(url) => {
            let Ok((c, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
                return String::new();
            };
            tokio::spawn(conn);
            let uid = i64::from(uid);
            let mut parts = Vec::new();
            for sql in [
                "SELECT mailbox_id, uid, modseq, flags FROM messages WHERE uid = ",
                "SELECT mailbox_id, uid, modseq FROM expunged WHERE uid = ",
                "SELECT id, name, uidnext, highestmodseq FROM mailboxes WHERE 0 < ",
            ] {
                let rows = c.query(&format!("{sql}$1"), &[&uid]).await.unwrap_or_default();
                let text: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| match r.try_get::<_, i64>(i) {
                                Ok(v) => v.to_string(),
                                Err(_) => r.try_get::<_, String>(i).unwrap_or_else(|_| "?".into()),
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .collect();
                parts.push(text.join(" | "));
            }
            format!(
                "messages (mailbox,uid,modseq,flags) [{}] expunged (mailbox,uid,modseq) [{}] mailboxes (id,name,uidnext,modseq) [{}]",
                parts[0], parts[1], parts[2]
            )
        }
    }
}

fn sqlite_rows(db: &std::path::Path, uid: u32) -> String {
    let Ok(c) = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return String::new();
    };
    let q = |sql: &str| -> String {
        let Ok(mut st) = c.prepare(sql) else { return String::new() };
        let n = st.column_count();
        st.query_map([uid], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i) {
                    Ok(rusqlite::types::ValueRef::Integer(v)) => v.to_string(),
                    Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                    _ => "?".into(),
                })
                .collect::<Vec<_>>()
                .join(","))
        })
        .map(|rows| rows.filter_map(Result::ok).collect::<Vec<_>>().join(" | "))
        .unwrap_or_default()
    };
    format!(
        "messages (mailbox,uid,modseq,flags) [{}] expunged (mailbox,uid,modseq) [{}] mailboxes (id,name,uidnext,modseq) [{}]",
        q("SELECT mailbox_id, uid, modseq, flags FROM messages WHERE uid = ?1"),
        q("SELECT mailbox_id, uid, modseq FROM expunged WHERE uid = ?1"),
        q("SELECT id, name, uidnext, highestmodseq FROM mailboxes WHERE ?1 > 0")
    )
}

struct Slot {
    uid: Option<u32>,
    /// Counted in the EXISTS of the SELECT (else announced later).
    snap: bool,
    told: Instant,
}

/// One raw-socket session and what it has been told.
struct Raw {
    id: usize,
    c: Lines,
    /// The database, quoted when a check fails.
    db: Arc<Db>,
    n: u64,
    mailbox: Option<String>,
    slots: Vec<Slot>,
    uidnext: u32,
    in_select: bool,
    /// When the current SELECT was sent.
    selected_at: Instant,
    /// The last lines sent and received, shown when a check fails.
    log: std::collections::VecDeque<String>,
}

const LOG_LINES: usize = 400;

fn num_after(l: &str, word: &str) -> Option<u32> {
    let i = l.find(word)? + word.len();
    let d: String = l[i..].chars().take_while(char::is_ascii_digit).collect();
    d.parse().ok()
}

impl Raw {
    fn fail(&self, what: String) -> String {
        let t = self.selected_at.elapsed();
        let log: Vec<&str> = self.log.iter().map(String::as_str).collect();
        format!(
            "session {} in {:?} (selected {t:?} ago): {what}\nlast lines:\n{}",
            self.id,
            self.mailbox,
            log.join("\n")
        )
    }

    fn note(&mut self, l: &str) {
        if self.log.len() >= LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(l.chars().take(160).collect());
    }

    async fn send(&mut self, l: &str) {
        self.note(&format!("C: {l}"));
        self.c.send(l).await;
    }

    /// Check one response line against the session's state and advance it.
    fn apply(&mut self, l: &str) -> Result<(), String> {
        let Some(rest) = l.strip_prefix("* ") else { return Ok(()) };
        if rest.starts_with("BYE") {
            return Err(self.fail(format!("unexpected {l}")));
        }
        if let Some(n) = num_after(l, "[UIDNEXT ") {
            if self.in_select && self.uidnext == 0 {
                self.uidnext = n;
            }
            return Ok(());
        }
        let mut words = rest.splitn(3, ' ');
        let (Some(num), Some(kind)) = (words.next(), words.next()) else { return Ok(()) };
        let Ok(n) = num.parse::<usize>() else { return Ok(()) };
        match kind {
            "EXISTS" => {
                if n < self.slots.len() {
                    return Err(self.fail(format!("EXISTS went from {} to {n} without EXPUNGE", self.slots.len())));
                }
                let now = Instant::now();
                while self.slots.len() < n {
                    // The SELECT's own EXISTS comes before its UIDNEXT; an EXISTS after that
                    // (its catch-up) announces messages newer than the snapshot.
                    self.slots.push(Slot { uid: None, snap: self.in_select && self.uidnext == 0, told: now });
                }
            }
            "EXPUNGE" => {
                if n == 0 || n > self.slots.len() {
                    return Err(self.fail(format!("{l} with only {} messages", self.slots.len())));
                }
                self.slots.remove(n - 1);
            }
            "FETCH" => {
                if n == 0 || n > self.slots.len() {
                    return Err(self.fail(format!("{l} with only {} messages", self.slots.len())));
                }
                let Some(uid) = num_after(l, "UID ") else { return Ok(()) };
                let i = n - 1;
                if let Some(known) = self.slots[i].uid
                    && known != uid
                {
                    return Err(self.fail(format!("message {n} was UID {known}, now {l}")));
                }
                let before = self.slots[..i].iter().rev().find_map(|s| s.uid);
                let after = self.slots[i + 1..].iter().find_map(|s| s.uid);
                if before.is_some_and(|b| b >= uid) || after.is_some_and(|a| a <= uid) {
                    return Err(self.fail(format!("{l}: UIDs out of order (before {before:?}, after {after:?})")));
                }
                if self.slots[i].snap && uid >= self.uidnext {
                    return Err(self.fail(format!(
                        "{l}: counted by SELECT, yet UIDNEXT was {} (a stale UIDNEXT hides it)",
                        self.uidnext
                    )));
                }
                if !self.slots[i].snap && uid < self.uidnext {
                    return Err(self.fail(format!(
                        "{l}: announced after SELECT, yet below its UIDNEXT {} (announced twice)",
                        self.uidnext
                    )));
                }
                self.slots[i].uid = Some(uid);
            }
            _ => {}
        }
        Ok(())
    }

    async fn line(&mut self) -> Result<Option<String>, String> {
        let mut buf = Vec::new();
        let n = match tokio::time::timeout(LINE_TIMEOUT, self.c.io.read_until(b'\n', &mut buf)).await {
            Err(_) => return Err(self.fail("no response line for 20 s".into())),
            Ok(Err(_)) => return Ok(None),
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Ok(None);
        }
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        let l = String::from_utf8_lossy(&buf).into_owned();
        self.note(&format!("S: {l}"));
        Ok(Some(l))
    }

    /// Read through the tagged reply, checking every line; literals are skipped.
    async fn finish(&mut self, tag: &str) -> Result<String, String> {
        loop {
            let Some(l) = self.line().await? else {
                return Err(self.fail(format!("connection ended without BYE or tagged reply to {tag}")));
            };
            self.apply(&l)?;
            if let Some((_, lit)) = l.rsplit_once('{')
                && let Ok(k) = lit.trim_end_matches('}').parse::<usize>()
                && l.ends_with('}')
            {
                let mut skip = vec![0u8; k];
                match tokio::time::timeout(LINE_TIMEOUT, self.c.io.read_exact(&mut skip)).await {
                    Ok(Ok(_)) => {}
                    _ => return Err(self.fail(format!("connection ended inside a literal of {tag}"))),
                }
            }
            if l.starts_with(&format!("{tag} ")) {
                let status = l[tag.len() + 1..].to_string();
                if status.starts_with("BAD") {
                    return Err(self.fail(format!("{tag}: {l}")));
                }
                return Ok(status);
            }
        }
    }

    async fn cmd(&mut self, text: &str) -> Result<String, String> {
        self.n += 1;
        let tag = format!("c{}", self.n);
        self.send(&format!("{tag} {text}")).await;
        self.finish(&tag).await
    }

    async fn select(&mut self, name: &str) -> Result<(), String> {
        self.mailbox = None;
        self.slots.clear();
        self.uidnext = 0;
        self.in_select = true;
        self.selected_at = Instant::now();
        let r = self.cmd(&format!("SELECT {name}")).await;
        self.in_select = false;
        let r = r?;
        if !r.starts_with("OK") {
            return Err(self.fail(format!("SELECT {name}: {r}")));
        }
        self.mailbox = Some(name.to_string());
        Ok(())
    }

    /// NOOP, then learn every UID; then each message committed before the NOOP was sent and
    /// still there must be known (told by the SELECT or by an EXISTS since).
    async fn sync_check(&mut self, ledger: &Shared) -> Result<(), String> {
        let Some(name) = self.mailbox.clone() else { return Ok(()) };
        let noop_sent = Instant::now();
        self.cmd("NOOP").await?;
        if !self.slots.is_empty() {
            self.cmd("FETCH 1:* (UID)").await?;
        }
        let done = Instant::now();
        wait_poll_after(ledger, done).await;
        let known: Vec<u32> = self.slots.iter().filter_map(|s| s.uid).collect();
        let missing = {
            let l = lock(ledger);
            l.boxes.get(&name).into_iter().flatten().find_map(|(uid, e)| {
                // The event follows the commit by a moment (published after the group commit):
                // allow PUBLISH_SLACK before a command started after it must tell.
                (e.seen + PUBLISH_SLACK < noop_sent && !e.maybe_gone_before(done) && !known.contains(uid))
                    .then(|| (*uid, noop_sent - e.seen))
            })
        };
        if let Some((uid, ago)) = missing {
            // What the session's view says about it, for the report.
            let probe = self.cmd(&format!("UID FETCH {uid} (UID FLAGS)")).await;
            let tail: Vec<u32> = known.iter().rev().take(8).rev().copied().collect();
            let db = db_rows(&self.db, uid).await;
            return Err(self.fail(format!(
                "UID {uid} (stored {ago:?} before NOOP) was never announced; {} told, the last {tail:?}; \
                 UID FETCH of it: {probe:?}; database: {db}",
                known.len()
            )));
        }
        Ok(())
    }

    /// IDLE for a while; afterwards every message stored while idling (and not gone) must have
    /// been announced within IDLE_BOUND of its commit.
    async fn idle(&mut self, ledger: &Shared, ms: u64) -> Result<(), String> {
        self.n += 1;
        let tag = format!("c{}", self.n);
        self.send(&format!("{tag} IDLE")).await;
        // `+ idling` comes before anything else (IMAP-28).
        let first = self.line().await?.ok_or_else(|| self.fail("connection ended at IDLE".into()))?;
        if first != "+ idling" {
            return Err(self.fail(format!("IDLE answered {first:?} before the continuation")));
        }
        let start = Instant::now();
        let until = start + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(until.into(), self.line()).await {
                Err(_) => break,
                Ok(r) => {
                    let l = r?.ok_or_else(|| self.fail("connection ended during IDLE".into()))?;
                    self.apply(&l)?;
                }
            }
        }
        let end = Instant::now();
        self.send("DONE").await;
        let r = self.finish(&tag).await?;
        if !r.starts_with("OK") {
            return Err(self.fail(format!("IDLE ended {r}")));
        }
        if self.mailbox.is_none() {
            return Ok(());
        }
        self.sync_check(ledger).await?;
        let name = self.mailbox.clone().unwrap_or_default();
        let l = lock(ledger);
        let entries = l.boxes.get(&name);
        for s in &self.slots {
            let Some(e) = s.uid.and_then(|u| entries.and_then(|m| m.get(&u))) else { continue };
            let due = e.seen + IDLE_BOUND;
            if e.seen > start && due < end && s.told > due && !e.maybe_gone_before(due) {
                return Err(self.fail(format!(
                    "UID {:?} stored while idling was announced {:?} after it was stored (bound {IDLE_BOUND:?})",
                    s.uid,
                    s.told - e.seen
                )));
            }
        }
        Ok(())
    }

    async fn step(&mut self, rng: &mut Rng, ledger: &Shared, addr: &str) -> Result<(), String> {
        let len = self.slots.len() as u64;
        let seq = 1 + rng.below(len);
        let other = match self.mailbox.as_deref() {
            Some("INBOX") => "Other",
            _ => "INBOX",
        };
        match rng.below(100) {
            0..15 => {
                let target = BOXES[rng.below(2) as usize];
                let msg = sample_message(addr, addr, &format!("s{} {}", self.id, self.n));
                self.n += 1;
                let tag = format!("c{}", self.n);
                self.send(&format!("{tag} APPEND {target} () {{{}+}}", msg.len())).await;
                self.c.send_raw(&msg).await;
                self.c.send_raw(b"\r\n").await;
                let r = self.finish(&tag).await?;
                if !r.starts_with("OK") && !r.contains("OVERQUOTA") {
                    return Err(self.fail(format!("APPEND: {r}")));
                }
            }
            15..30 if self.mailbox.is_some() && len > 0 => {
                let flags =
                    ["+FLAGS (\\Seen)", "+FLAGS (\\Deleted)", "-FLAGS (\\Deleted)", "+FLAGS.SILENT (\\Flagged)"];
                let what = if rng.below(4) == 0 {
                    format!("+FLAGS ($k{})", rng.below(6))
                } else {
                    flags[rng.below(flags.len() as u64) as usize].to_string()
                };
                self.cmd(&format!("STORE {seq} {what}")).await?;
            }
            30..38 if self.mailbox.is_some() => {
                self.cmd("EXPUNGE").await?;
            }
            38..46 if self.mailbox.is_some() && len > 0 => {
                let r = self.cmd(&format!("MOVE {seq} {other}")).await?;
                if !r.starts_with("OK") && !r.contains("OVERQUOTA") {
                    return Err(self.fail(format!("MOVE: {r}")));
                }
            }
            46..54 => self.select(BOXES[rng.below(2) as usize]).await?,
            54..66 if self.mailbox.is_some() => self.idle(ledger, 100 + rng.below(1400)).await?,
            66..78 if self.mailbox.is_some() && len > 0 => {
                let what = match rng.below(3) {
                    0 => "FETCH 1:* (UID FLAGS)".to_string(),
                    1 => format!("FETCH {seq}:* (UID BODY.PEEK[])"),
                    _ => "UID FETCH 1:* (UID RFC822.SIZE)".to_string(),
                };
                let r = self.cmd(&what).await?;
                if !r.starts_with("OK") && !r.contains("[EXPUNGEISSUED]") {
                    return Err(self.fail(format!("{what}: {r}")));
                }
            }
            78..90 => self.sync_check(ledger).await?,
            _ => {
                self.cmd("NOOP").await?;
            }
        }
        Ok(())
    }
}

/// An async-imap session in Delta Chat's loop: SELECT, IDLE until woken or a timeout, DONE.
/// A message stored in INBOX while it idles must wake it within IDLE_BOUND.
async fn dc_loop(relay_addr: String, addr: String, seed: u64, stop: Instant, ledger: Shared) -> Result<u64, String> {
    use async_imap::extensions::idle::IdleResponse;
    let mut rng = Rng::new(seed);
    let tcp = tokio::net::TcpStream::connect(&relay_addr).await.map_err(|e| e.to_string())?;
    let mut client = async_imap::Client::new(crate::harness::tls_wrap(tcp, &[b"imap"]).await);
    client.read_response().await.map_err(|e| e.to_string())?;
    let mut s = client.login(&addr, PASSWORD).await.map_err(|(e, _)| e.to_string())?;
    let mut rounds = 0;
    while Instant::now() < stop {
        let mb = s.select("INBOX").await.map_err(|e| format!("async-imap SELECT: {e}"))?;
        let uidnext = mb.uid_next.ok_or("async-imap: SELECT without UIDNEXT")?;
        let mut idle = s.idle();
        idle.init().await.map_err(|e| format!("async-imap IDLE: {e}"))?;
        let start = Instant::now();
        let (wait, _stop) = idle.wait_with_timeout(Duration::from_millis(300 + rng.below(2000)));
        let resp = wait.await.map_err(|e| format!("async-imap IDLE wait: {e}"))?;
        let end = Instant::now();
        s = idle.done().await.map_err(|e| format!("async-imap DONE: {e}"))?;
        rounds += 1;
        if matches!(resp, IdleResponse::Timeout) {
            wait_poll_after(&ledger, end).await;
            let l = lock(&ledger);
            for (uid, e) in l.boxes.get("INBOX").into_iter().flatten() {
                // At or above the UIDNEXT it saw, so news to it; stored long enough before the end.
                let due = e.seen.max(start) + IDLE_BOUND;
                if *uid >= uidnext && due < end && !e.maybe_gone_before(due) {
                    return Err(format!(
                        "async-imap: UID {uid} (UIDNEXT was {uidnext}) stored {:?} into IDLE never woke it",
                        e.seen.saturating_duration_since(start)
                    ));
                }
            }
        }
    }
    let _ = s.logout().await;
    Ok(rounds)
}

/// One checker run: which nodes, which database, how many sessions of each kind.
pub struct Setup<'a> {
    /// What the header line calls the run (`imap concurrency checker` for the SQLite one).
    pub label: &'a str,
    /// Raw session `i` runs on node `i % n`, async-imap session `j` on node `(j + 1) % n`; each
    /// delivery goes into a node chosen by the seed.
    pub nodes: &'a [Relay],
    pub db: Db,
    /// The duration when `IMAP_CHECKER_SECS` is not set.
    pub default_secs: u64,
    pub raw_sessions: usize,
    pub dc_sessions: usize,
}

/// The relay configuration the checker's nodes need (its SMTP sender is not rate limited).
pub const UNLIMITED_SEND: &str = "max_user_send_per_minute = 100000\nmax_user_send_burst_size = 10000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imap_concurrency_checker() {
    let relay = Relay::start(UNLIMITED_SEND);
    let db = Db::Sqlite(relay.data_dir().join("chatrelay.db"));
    let setup = Setup {
        label: "imap concurrency checker",
        nodes: std::slice::from_ref(&relay),
        db,
        default_secs: 10,
        raw_sessions: 3,
        dc_sessions: 1,
    };
    run(setup).await;
}

/// Run the checker on `setup.nodes` (started, one relay domain, one database) and assert that
/// no invariant broke.
pub async fn run(setup: Setup<'_>) {
    let secs: u64 = std::env::var("IMAP_CHECKER_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(setup.default_secs);
    let seed: u64 =
        std::env::var("IMAP_CHECKER_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(crate::harness::rand_u64);
    let label = setup.label;
    println!("{label}: seed {seed}, {secs} s (replay: IMAP_CHECKER_SEED={seed})");
    let nodes = setup.nodes;
    let n_nodes = nodes.len().max(1);
    let relay = &nodes[0];
    let addr = relay.new_address();
    let sender = relay.new_address();
    crate::harness::create_account(relay, &sender).await;
    let mut first = crate::imap_helpers::login(relay, &addr).await;
    crate::imap_helpers::assert_ok(&first.imap("c", "CREATE Other").await);

    let db = Arc::new(setup.db);
    let ledger: Shared = Arc::default();
    let halt = Arc::new(AtomicBool::new(false));
    let oracle_task = {
        let (db, a, l, h) = ((*db).clone(), addr.clone(), ledger.clone(), halt.clone());
        std::thread::spawn(move || oracle(db, a, l, h))
    };
    let stop = Instant::now() + Duration::from_secs(secs);
    let steps = Arc::new(AtomicU64::new(0));

    let mut tasks: Vec<tokio::task::JoinHandle<Result<String, String>>> = Vec::new();
    for id in 0..setup.raw_sessions {
        let node = id % n_nodes;
        let c = crate::imap_helpers::login(&nodes[node], &addr).await;
        let (ledger, addr, steps, db) = (ledger.clone(), addr.clone(), steps.clone(), db.clone());
        let on = if n_nodes > 1 { format!(" (node {})", node + 1) } else { String::new() };
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(id as u64 + 1));
            let mut s = Raw {
                id,
                c,
                db,
                n: 0,
                mailbox: None,
                slots: Vec::new(),
                uidnext: 0,
                in_select: false,
                selected_at: Instant::now(),
                log: Default::default(),
            };
            s.select("INBOX").await?;
            while Instant::now() < stop {
                s.step(&mut rng, &ledger, &addr).await?;
                steps.fetch_add(1, Ordering::Relaxed);
                let pause = rng.below(40);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            s.sync_check(&ledger).await?;
            Ok(format!("raw session {id}{on}: {} commands", s.n))
        }));
    }
    for j in 0..setup.dc_sessions {
        let node = &nodes[(j + 1) % n_nodes];
        let (ra, a, l) = (node.addr(node.ports.imaps), addr.clone(), ledger.clone());
        let on = if n_nodes > 1 { format!(" {} (node {})", j, (j + 1) % n_nodes + 1) } else { String::new() };
        tasks.push(tokio::spawn(async move {
            let rounds = dc_loop(ra, a, seed.wrapping_add(100 + j as u64), stop, l).await?;
            Ok(format!("async-imap session{on}: {rounds} IDLE rounds"))
        }));
    }
    {
        let mut conns = Vec::new();
        for node in nodes {
            let (smtp, r) = smtp_login(node, &sender, PASSWORD).await;
            assert!(r.starts_with("235"), "{r}");
            conns.push(smtp);
        }
        let (from, to) = (sender.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed.wrapping_add(200));
            // Its own generator, so the one-node run makes the same choices as before nodes.
            let mut pick = Rng::new(seed.wrapping_add(300));
            let mut sent = vec![0u32; conns.len()];
            while Instant::now() < stop {
                let eml = crate::fixtures::encrypted_eml(&from, &to)
                    .replace("<fixture@fixture.test>", &format!("<{}@fixture.test>", rng.next()));
                let k = pick.below(conns.len() as u64) as usize;
                let reply = crate::harness::send_mail(&mut conns[k], &from, &[&to], &eml).await;
                if !reply.starts_with("250") {
                    return Err(format!("delivery refused by node {}: {reply}", k + 1));
                }
                sent[k] += 1;
                tokio::time::sleep(Duration::from_millis(rng.below(200))).await;
            }
            let total: u32 = sent.iter().sum();
            if sent.len() > 1 {
                Ok(format!("SMTP: {total} deliveries (per node {sent:?})"))
            } else {
                Ok(format!("SMTP: {total} deliveries"))
            }
        }));
    }
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => summary.push(s),
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("task panicked: {e}")),
        }
    }
    halt.store(true, Ordering::Relaxed);
    let polls = oracle_task.join().unwrap_or(0);
    let stored: usize = lock(&ledger).boxes.values().map(BTreeMap::len).sum();
    println!(
        "checker: {} steps, {stored} messages stored, {polls} oracle polls; {}",
        steps.load(Ordering::Relaxed),
        summary.join("; ")
    );
    drop(first);
    assert!(failures.is_empty(), "seed {seed} (replay: IMAP_CHECKER_SEED={seed}): {failures:#?}");
}
