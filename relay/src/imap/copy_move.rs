//! COPY / MOVE and their UID forms (IMAP-21, RFC 4315 COPYUID, RFC 6851 MOVE).

use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;

use super::mailboxes::name_of;
use super::replies as r;
use super::session::{Reply, Session};
use crate::store::StoreError;

/// `1:3,7` style set of UIDs in the given order (COPYUID requires matching order).
pub fn uid_set(uids: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let mut j = i;
        while j + 1 < uids.len() && uids[j + 1] == uids[j] + 1 {
            j += 1;
        }
        out.push(if i == j { uids[i].to_string() } else { format!("{}:{}", uids[i], uids[j]) });
        i = j + 1;
    }
    out.join(",")
}

pub async fn copy_move(s: &mut Session, set: &SequenceSet, dst: &Mailbox<'_>, uid: bool, is_move: bool) -> Reply {
    let Some(acc) = s.account.as_ref().map(|a| a.id) else { return Reply::Done(r::BAD_STATE_AUTH.into()) };
    let Some(name) = name_of(dst) else { return Reply::Done(r::NO_NAME.into()) };
    let Some(sel) = s.sel.as_ref() else { return Reply::Done(r::BAD_STATE_SELECTED.into()) };
    if is_move && sel.read_only {
        return Reply::Done(r::NO_READ_ONLY.into());
    }
    let dst = match s.ctx.store.mailbox(acc, &name).await {
        Ok(Some(m)) => m,
        Ok(None) => return Reply::Done(r::NO_TRYCREATE.into()),
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    let uids: Vec<u32> = sel.resolve(set, uid).into_iter().map(|i| sel.msgs[i].uid).collect();
    let verb = if is_move { "Move" } else { "Copy" };
    if uids.is_empty() {
        return Reply::Done(format!("OK No messages found. {verb} completed."));
    }
    let quota = s.ctx.config.get().max_mailbox_size.0;
    let (uv, pairs) = match s.ctx.store.copy_messages(acc, sel.id, uids, dst.id, is_move, quota).await {
        Ok(v) => v,
        Err(StoreError::OverQuota) => return Reply::Done(r::OVER_QUOTA.into()),
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    if pairs.is_empty() {
        return Reply::Done(format!("OK No messages found. {verb} completed."));
    }
    let src: Vec<u32> = pairs.iter().map(|p| p.0).collect();
    let new: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    let code = format!("COPYUID {uv} {} {}", uid_set(&src), uid_set(&new));
    if is_move {
        // RFC 6851: COPYUID in an untagged OK; the EXPUNGEs follow from the catch-up.
        s.untagged(&format!("* OK [{code}] Moved UIDs.\r\n"));
        return Reply::Done(r::OK_MOVE.into());
    }
    Reply::Done(format!("OK [{code}] Copy completed."))
}
