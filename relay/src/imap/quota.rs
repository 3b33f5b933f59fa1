//! GETQUOTA / GETQUOTAROOT (IMAP-39): one root "" with STORAGE in KiB over all mailboxes.

use imap_codec::imap_types::mailbox::Mailbox;

use super::mailboxes::{name_of, quote};
use super::replies as r;
use super::session::{Reply, Session};

async fn quota_line(s: &Session) -> Option<String> {
    let acc = s.account.as_ref()?.id;
    let used = s.ctx.store.usage(acc).await.ok()?;
    let limit = s.ctx.config.get().max_mailbox_size.0;
    Some(format!("* QUOTA \"\" (STORAGE {} {})\r\n", used.div_ceil(1024), limit / 1024))
}

pub async fn get_quota(s: &mut Session, root: &[u8]) -> Reply {
    if !root.is_empty() {
        return Reply::Done(r::NO_QUOTA_ROOT.into());
    }
    match quota_line(s).await {
        Some(l) => {
            s.untagged(&l);
            Reply::Done(r::OK_GETQUOTA.into())
        }
        None => Reply::Done(r::NO_TEMP.into()),
    }
}

pub async fn get_quota_root(s: &mut Session, m: &Mailbox<'_>) -> Reply {
    let Some(name) = name_of(m) else { return Reply::Done(r::NO_NAME.into()) };
    let acc = s.account.as_ref().map(|a| a.id).unwrap_or(0);
    match s.ctx.store.mailbox(acc, &name).await {
        Ok(Some(_)) => {}
        Ok(None) => return Reply::Done(r::NO_MAILBOX.into()),
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    }
    match quota_line(s).await {
        Some(l) => {
            s.untagged(&format!("* QUOTAROOT {} \"\"\r\n", quote(&name)));
            s.untagged(&l);
            Reply::Done(r::OK_GETQUOTAROOT.into())
        }
        None => Reply::Done(r::NO_TEMP.into()),
    }
}
