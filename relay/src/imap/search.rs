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

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
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

fn eval(k: &SearchKey<'_>, m: &Msg<'_>, sel: &Selected) -> bool {
    use SearchKey as K;
    let f = |bit| m.flags & bit != 0;
    let raw = m.raw.as_deref().unwrap_or_default();
    match k {
        K::And(v) => v.as_ref().iter().all(|k| eval(k, m, sel)),
        K::SequenceSet(set) => sel.resolve(set, false).binary_search(&(m.seq - 1)).is_ok(),
        K::Uid(set) => sel.resolve(set, true).binary_search(&(m.seq - 1)).is_ok(),
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
        K::Not(a) => !eval(a, m, sel),
        K::Or(a, b) => eval(a, m, sel) || eval(b, m, sel),
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
    let mut hits = Vec::new();
    for meta in &metas {
        let Some(i) = sel.index_of(meta.uid) else { continue };
        let v = &sel.msgs[i];
        let raw = if want_raw { s.ctx.store.read_blob(&meta.blob).await.ok() } else { None };
        let m = Msg { seq: i + 1, meta, flags: v.flags, kw: v.kw.as_deref(), recent: v.recent, raw };
        if keys.iter().all(|k| eval(k, &m, sel)) {
            hits.push(if uid { v.uid } else { (i + 1) as u32 });
        }
    }
    let list: Vec<String> = hits.iter().map(|h| h.to_string()).collect();
    let line = if list.is_empty() { "* SEARCH\r\n".to_string() } else { format!("* SEARCH {}\r\n", list.join(" ")) };
    s.untagged(&line);
    Reply::Done(r::OK_SEARCH.into())
}
