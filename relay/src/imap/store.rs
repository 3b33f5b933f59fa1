//! STORE / UID STORE: FLAGS, +FLAGS, -FLAGS and .SILENT (IMAP-11, IMAP-19).

use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::SequenceSet;

use super::replies as r;
use super::session::{Reply, Session};
use super::view::flags_string;
use crate::store::{FlagOp, Flags, StoreError};

/// System flags as bits plus keywords.
pub fn flag_bits(flags: &[Flag<'_>]) -> (u32, Vec<String>) {
    let mut bits = 0;
    let mut kws = Vec::new();
    for f in flags {
        match f {
            Flag::Seen => bits |= Flags::SEEN,
            Flag::Answered => bits |= Flags::ANSWERED,
            Flag::Flagged => bits |= Flags::FLAGGED,
            Flag::Deleted => bits |= Flags::DELETED,
            Flag::Draft => bits |= Flags::DRAFT,
            // `\Recent` and unknown system flags cannot be stored.
            Flag::Extension(_) => {}
            Flag::Keyword(k) => kws.push(k.as_ref().to_string()),
        }
    }
    (bits, kws)
}

pub async fn store(
    s: &mut Session,
    set: &SequenceSet,
    kind: StoreType,
    resp: StoreResponse,
    flags: &[Flag<'_>],
    uid: bool,
) -> Reply {
    let Some(acc) = s.account.as_ref().map(|a| a.id) else { return Reply::Done(r::BAD_STATE_AUTH.into()) };
    let Some(sel) = s.sel.as_mut() else { return Reply::Done(r::BAD_STATE_SELECTED.into()) };
    if sel.read_only {
        return Reply::Done(r::NO_READ_ONLY.into());
    }
    let idx = sel.resolve(set, uid);
    let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
    let op = match kind {
        StoreType::Replace => FlagOp::Replace,
        StoreType::Add => FlagOp::Add,
        StoreType::Remove => FlagOp::Remove,
    };
    let (bits, kws) = flag_bits(flags);
    let changed = match s.ctx.store.store_flags(acc, sel.id, uids, op, bits, kws).await {
        Ok(c) => c,
        Err(StoreError::Limit(_)) => return Reply::Done(r::NO_LIMIT_KEYWORDS.into()),
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    // A keyword new to the mailbox is listed in `* FLAGS` before it shows up in a FETCH (IMAP-27b).
    let mut out = String::new();
    sel.learn_keywords(changed.iter().flat_map(|m| m.keywords.split(' ')), &mut out);
    for m in changed {
        if let Some(i) = sel.index_of(m.uid) {
            sel.msgs[i].flags = m.flags.0;
            sel.msgs[i].kw = (!m.keywords.is_empty()).then(|| m.keywords.into());
        }
    }
    if resp == StoreResponse::Answer {
        for i in idx {
            let v = &sel.msgs[i];
            let f = flags_string(v.flags, v.kw.as_deref(), v.recent);
            if uid {
                out.push_str(&format!("* {} FETCH (UID {} FLAGS {f})\r\n", i + 1, v.uid));
            } else {
                out.push_str(&format!("* {} FETCH (FLAGS {f})\r\n", i + 1));
            }
        }
    }
    s.untagged(&out);
    Reply::Done(r::OK_STORE.into())
}
