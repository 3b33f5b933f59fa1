//! SELECT, EXAMINE, CLOSE, UNSELECT and EXPUNGE (IMAP-18, IMAP-20).

use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;

use super::mailboxes::name_of;
use super::replies as r;
use super::session::{Reply, Session};
use super::view::Selected;
use crate::store::Flags;

pub async fn select(s: &mut Session, mailbox: &Mailbox<'_>, read_only: bool) -> Reply {
    s.sel = None;
    // The new view is read below, after everything heard so far.
    s.pending.drain(&mut s.sub, None);
    s.pending.reset();
    let Some(acc) = s.account.as_ref().map(|a| a.id) else { return Reply::Done(r::BAD_STATE_AUTH.into()) };
    let Some(name) = name_of(mailbox) else { return Reply::Done(r::NO_NAME.into()) };
    // Rows, UIDNEXT and HIGHESTMODSEQ from one read transaction (IMAP-28a).
    let (info, rows) = match s.ctx.store.snapshot(acc, &name).await {
        Ok(Some(v)) => v,
        Ok(None) => return Reply::Done(r::NO_MAILBOX.into()),
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    let uidnext = info.uidnext;
    let sel = Selected::from_snapshot(info, &rows, read_only);
    drop(rows);
    let mut out = String::new();
    sel.flags_lines(&mut out);
    out.push_str(&format!("* {} EXISTS\r\n* {} RECENT\r\n", sel.msgs.len(), sel.recent_count()));
    if let Some(i) = sel.msgs.iter().position(|m| m.flags & Flags::SEEN == 0) {
        out.push_str(&format!("* OK [UNSEEN {}] First unseen.\r\n", i + 1));
    }
    out.push_str(&format!(
        "* OK [UIDVALIDITY {}] UIDs valid\r\n* OK [UIDNEXT {uidnext}] Predicted next UID\r\n",
        sel.uidvalidity
    ));
    s.untagged(&out);
    s.sel = Some(sel);
    Reply::Done(if read_only { r::OK_EXAMINE } else { r::OK_SELECT }.into())
}

/// CLOSE expunges `\Deleted` silently (read-write only); UNSELECT does not (IMAP-20).
pub async fn close(s: &mut Session, expunge: bool) -> Reply {
    let Some(sel) = s.sel.take() else { return Reply::Done(r::BAD_STATE_SELECTED.into()) };
    if expunge
        && !sel.read_only
        && let Some(acc) = s.account.as_ref().map(|a| a.id)
    {
        // Flags set by other sessions count too: take them from the store, not the view.
        let uids: Vec<u32> = match s.ctx.store.messages(sel.id).await {
            Ok(rows) => rows.into_iter().filter(|m| m.flags.has(Flags::DELETED)).map(|m| m.uid).collect(),
            Err(_) => Vec::new(),
        };
        if !uids.is_empty() && s.ctx.store.expunge(acc, sel.id, uids).await.is_err() {
            return Reply::Done(r::NO_TEMP.into());
        }
    }
    Reply::Done(if expunge { r::OK_CLOSE } else { r::OK_UNSELECT }.into())
}

/// EXPUNGE / UID EXPUNGE: the `* n EXPUNGE` lines come from the catch-up that follows.
pub async fn expunge(s: &mut Session, only: Option<&SequenceSet>) -> Reply {
    s.catch_up(true).await;
    let Some(acc) = s.account.as_ref().map(|a| a.id) else { return Reply::Done(r::BAD_STATE_AUTH.into()) };
    let Some(sel) = s.sel.as_ref() else { return Reply::Done(r::BAD_STATE_SELECTED.into()) };
    if sel.read_only {
        return Reply::Done(r::NO_READ_ONLY.into());
    }
    let idx: Vec<usize> = match only {
        Some(set) => sel.resolve(set, true),
        None => (0..sel.msgs.len()).collect(),
    };
    let uids: Vec<u32> =
        idx.into_iter().map(|i| &sel.msgs[i]).filter(|m| m.flags & Flags::DELETED != 0).map(|m| m.uid).collect();
    if !uids.is_empty() && s.ctx.store.expunge(acc, sel.id, uids).await.is_err() {
        return Reply::Done(r::NO_TEMP.into());
    }
    Reply::Done(r::OK_EXPUNGE.into())
}
