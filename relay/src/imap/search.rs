//! SEARCH / UID SEARCH (IMAP-13). Flags come from the session's view, sizes and dates from the
//! store rows, and text keys are case-insensitive substring matches over the stored bytes.

use imap_codec::imap_types::core::{AString, Charset};
use imap_codec::imap_types::search::SearchKey;

use super::mime;
use super::replies as r;
use super::session::{Reply, Session};
use super::view::Selected;
use crate::store::{Flags, MessageMeta};

struct Msg<'a> {
    seq: usize,
    meta: &'a MessageMeta,
    flags: u32,
    kw: Option<&'a str>,
    recent: bool,
    raw: Option<Vec<u8>>,
}

fn needs_raw(k: &SearchKey<'_>) -> bool {
    use SearchKey as K;
    match k {
        K::And(v) => v.as_ref().iter().any(needs_raw),
        K::Not(a) => needs_raw(a),
        K::Or(a, b) => needs_raw(a) || needs_raw(b),
        K::Bcc(_) | K::Body(_) | K::Cc(_) | K::From(_) | K::Header(..) | K::Subject(_) | K::Text(_) | K::To(_) => true,
        K::SentBefore(_) | K::SentOn(_) | K::SentSince(_) => true,
        _ => false,
    }
}

/// Case-insensitive substring search in linear time: memmem over lowercased windows of the
/// haystack (a naive window compare is O(hay × needle), issue 26).
fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    const CHUNK: usize = 64 * 1024;
    if needle.is_empty() {
        return true;
    }
    if needle.len() > hay.len() {
        return false;
    }
    let lower = needle.to_ascii_lowercase();
    let finder = memchr::memmem::Finder::new(&lower);
    let mut buf = Vec::with_capacity(CHUNK.min(hay.len()) + lower.len());
    let mut start = 0;
    loop {
        // Each window also holds the start of any match beginning in its first CHUNK octets.
        let end = (start + CHUNK + lower.len() - 1).min(hay.len());
        buf.clear();
        buf.extend(hay[start..end].iter().map(u8::to_ascii_lowercase));
        if finder.find(&buf).is_some() {
            return true;
        }
        if end == hay.len() {
            return false;
        }
        start += CHUNK;
    }
}

/// The sequence sets of a search program, each resolved once into merged ranges, keyed by the
/// address of its key node (issue 26: resolving per message cost ranges × messages²).
type Sets = std::collections::HashMap<usize, Vec<std::ops::Range<usize>>>;

fn key_id(k: &SearchKey<'_>) -> usize {
    k as *const SearchKey<'_> as usize
}

fn collect_sets(k: &SearchKey<'_>, sel: &Selected, out: &mut Sets) {
    use SearchKey as K;
    match k {
        K::And(v) => v.as_ref().iter().for_each(|k| collect_sets(k, sel, out)),
        K::Not(a) => collect_sets(a, sel, out),
        K::Or(a, b) => {
            collect_sets(a, sel, out);
            collect_sets(b, sel, out);
        }
        K::SequenceSet(set) => {
            out.insert(key_id(k), sel.resolve_ranges(set, false));
        }
        K::Uid(set) => {
            out.insert(key_id(k), sel.resolve_ranges(set, true));
        }
        _ => {}
    }
}

fn in_ranges(ranges: Option<&Vec<std::ops::Range<usize>>>, i: usize) -> bool {
    let Some(r) = ranges else { return false };
    let at = r.partition_point(|r| r.end <= i);
    r.get(at).is_some_and(|r| r.contains(&i))
}

fn key_count(k: &SearchKey<'_>) -> usize {
    use SearchKey as K;
    match k {
        K::And(v) => 1 + v.as_ref().iter().map(key_count).sum::<usize>(),
        K::Not(a) => 1 + key_count(a),
        K::Or(a, b) => 1 + key_count(a) + key_count(b),
        _ => 1,
    }
}

fn header_has(raw: &[u8], name: &str, needle: &AString<'_>) -> bool {
    let h = &raw[..mime::split(raw)];
    mime::fields(h).into_iter().any(|(n, r)| {
        n == name && {
            let line = &h[r];
            let c = line.iter().position(|b| *b == b':').map(|c| c + 1).unwrap_or(0);
            contains_ci(&line[c..], needle.as_ref())
        }
    })
}

fn day(ts: i64) -> i64 {
    ts.div_euclid(86_400)
}

/// Day number of a SEARCH date, via its `YYYY-MM-DD` display form (no direct chrono dependency).
fn date_day(d: &imap_codec::imap_types::datetime::NaiveDate) -> i64 {
    let text = d.as_ref().to_string();
    let mut it = text.split('-').map(|p| p.parse::<i64>().unwrap_or(1));
    let (y, m, dd) = (it.next().unwrap_or(1970), it.next().unwrap_or(1), it.next().unwrap_or(1));
    days_from_civil(y, m, dd)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The Date: header as a day number, if it parses.
fn sent_day(raw: &[u8]) -> Option<i64> {
    let h = &raw[..mime::split(raw)];
    let m = mail_parser::MessageParser::default().parse_headers(h)?;
    Some(day(m.date()?.to_timestamp()))
}

fn eval(k: &SearchKey<'_>, m: &Msg<'_>, sets: &Sets) -> bool {
    use SearchKey as K;
    let f = |bit| m.flags & bit != 0;
    let raw = m.raw.as_deref().unwrap_or_default();
    match k {
        K::And(v) => v.as_ref().iter().all(|k| eval(k, m, sets)),
        K::SequenceSet(_) | K::Uid(_) => in_ranges(sets.get(&key_id(k)), m.seq - 1),
        K::All => true,
        K::Answered => f(Flags::ANSWERED),
        K::Deleted => f(Flags::DELETED),
        K::Draft => f(Flags::DRAFT),
        K::Flagged => f(Flags::FLAGGED),
        K::Seen => f(Flags::SEEN),
        K::Unanswered => !f(Flags::ANSWERED),
        K::Undeleted => !f(Flags::DELETED),
        K::Undraft => !f(Flags::DRAFT),
        K::Unflagged => !f(Flags::FLAGGED),
        K::Unseen => !f(Flags::SEEN),
        K::Recent => m.recent,
        K::New => m.recent && !f(Flags::SEEN),
        K::Old => !m.recent,
        K::Keyword(a) => m.kw.is_some_and(|kw| kw.split(' ').any(|x| x.eq_ignore_ascii_case(a.as_ref()))),
        K::Unkeyword(a) => !m.kw.is_some_and(|kw| kw.split(' ').any(|x| x.eq_ignore_ascii_case(a.as_ref()))),
        K::Larger(n) => m.meta.size > u64::from(*n),
        K::Smaller(n) => m.meta.size < u64::from(*n),
        K::Before(d) => day(m.meta.internal_date) < date_day(d),
        K::On(d) => day(m.meta.internal_date) == date_day(d),
        K::Since(d) => day(m.meta.internal_date) >= date_day(d),
        K::SentBefore(d) => sent_day(raw).is_some_and(|x| x < date_day(d)),
        K::SentOn(d) => sent_day(raw).is_some_and(|x| x == date_day(d)),
        K::SentSince(d) => sent_day(raw).is_some_and(|x| x >= date_day(d)),
        K::Header(name, v) => header_has(raw, &String::from_utf8_lossy(name.as_ref()).to_ascii_lowercase(), v),
        K::From(v) => header_has(raw, "from", v),
        K::To(v) => header_has(raw, "to", v),
        K::Cc(v) => header_has(raw, "cc", v),
        K::Bcc(v) => header_has(raw, "bcc", v),
        K::Subject(v) => header_has(raw, "subject", v),
        K::Body(v) => contains_ci(&raw[mime::split(raw)..], v.as_ref()),
        K::Text(v) => contains_ci(raw, v.as_ref()),
        K::Not(a) => !eval(a, m, sets),
        K::Or(a, b) => eval(a, m, sets) || eval(b, m, sets),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

pub async fn search(s: &mut Session, charset: Option<&Charset<'_>>, keys: &[SearchKey<'_>], uid: bool) -> Reply {
    if let Some(c) = charset {
        let c: &str = c.as_ref();
        if !c.eq_ignore_ascii_case("US-ASCII") && !c.eq_ignore_ascii_case("UTF-8") {
            return Reply::Done(r::BAD_CHARSET.into());
        }
    }
    let Some(sel) = s.sel.as_ref() else { return Reply::Done(r::BAD_STATE_SELECTED.into()) };
    let metas = match s.ctx.store.messages(sel.id).await {
        Ok(m) => m,
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    let want_raw = keys.iter().any(needs_raw);
    let mut sets = Sets::new();
    keys.iter().for_each(|k| collect_sets(k, sel, &mut sets));
    let per_msg = keys.iter().map(key_count).sum::<usize>();
    let mut work = crate::limits::Yielder::default();
    let mut hits = Vec::new();
    for meta in &metas {
        let Some(i) = sel.index_of(meta.uid) else { continue };
        let v = &sel.msgs[i];
        let raw = if want_raw { s.ctx.store.read_blob(&meta.blob).await.ok() } else { None };
        let m = Msg { seq: i + 1, meta, flags: v.flags, kw: v.kw.as_deref(), recent: v.recent, raw };
        work.add(per_msg.saturating_mul(1 + m.raw.as_ref().map_or(0, |r| r.len() / 64))).await;
        if keys.iter().all(|k| eval(k, &m, &sets)) {
            hits.push(if uid { v.uid } else { (i + 1) as u32 });
        }
    }
    let list: Vec<String> = hits.iter().map(|h| h.to_string()).collect();
    let line = if list.is_empty() { "* SEARCH\r\n".to_string() } else { format!("* SEARCH {}\r\n", list.join(" ")) };
    s.untagged(&line);
    Reply::Done(r::OK_SEARCH.into())
}
