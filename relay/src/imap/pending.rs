//! What a session has heard from the store since its last catch-up. Every change to a mailbox
//! is published as an event after its commit and before the writing call returns, so a view
//! whose session heard nothing about its mailbox is current and needs no query; a new delivery
//! whose modseq is the view's next one can be applied from the event alone. Anything else (flag
//! changes, expunges, a lagging channel, mailbox renames) makes the next catch-up read the store.
//! The session's catch-up and its handling of incoming events live here too.

use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::replies as r;
use super::session::Session;
use crate::store::{MailboxEvent, MailboxId, StoreError, Subscription};

/// Deliveries remembered between catch-ups before falling back to a query.
const MAX_APPENDED: usize = 32;

#[derive(Default)]
pub struct Pending {
    /// The selected mailbox may have changed in a way only the store can tell.
    pub stale: bool,
    /// Deliveries to the selected mailbox heard of, in commit order: (uid, modseq).
    pub appended: Vec<(u32, i64)>,
    /// The account was deleted or blocked.
    pub account_gone: bool,
}

impl Pending {
    /// A new view was just read from the store: what was heard before is in it.
    pub fn reset(&mut self) {
        self.stale = false;
        self.appended.clear();
    }

    pub fn note(&mut self, ev: MailboxEvent, selected: Option<MailboxId>) {
        match ev {
            MailboxEvent::AccountGone => self.account_gone = true,
            MailboxEvent::MailboxesChanged => self.stale = true,
            MailboxEvent::Changed { mailbox } => self.stale |= selected == Some(mailbox),
            MailboxEvent::Appended { mailbox, uid, modseq } if selected == Some(mailbox) => {
                if self.appended.len() < MAX_APPENDED {
                    self.appended.push((uid, modseq));
                } else {
                    self.stale = true;
                }
            }
            MailboxEvent::Appended { .. } => {}
        }
    }

    /// Take in everything already queued on the subscription.
    pub fn drain(&mut self, sub: &mut Option<Subscription>, selected: Option<MailboxId>) {
        let Some(sub) = sub.as_mut() else { return };
        loop {
            match sub.rx.try_recv() {
                Ok(ev) => self.note(ev, selected),
                Err(TryRecvError::Lagged(_)) => self.stale = true,
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    /// Whether the selected mailbox has anything to catch up on.
    pub fn any(&self) -> bool {
        self.stale || !self.appended.is_empty()
    }
}

/// Wait for the next account event; never resolves without a subscription.
pub async fn next_event(sub: &mut Option<Subscription>) -> MailboxEvent {
    match sub {
        None => std::future::pending().await,
        Some(s) => match s.rx.recv().await {
            Ok(ev) => ev,
            // Lagged: something changed, catch up from the store (events only say *that*).
            Err(RecvError::Lagged(_)) => MailboxEvent::MailboxesChanged,
            Err(RecvError::Closed) => std::future::pending().await,
        },
    }
}

impl Session {
    /// Take in one event. False when the account is gone: the BYE is queued, close the session.
    pub fn hear(&mut self, ev: MailboxEvent) -> bool {
        let selected = self.sel.as_ref().map(|s| s.id);
        self.pending.note(ev, selected);
        self.account_alive()
    }

    /// False (with the BYE queued) once the account was deleted or blocked (ACC-28).
    pub fn account_alive(&mut self) -> bool {
        if self.pending.account_gone {
            self.untagged(r::BYE_ACCOUNT_GONE);
        }
        !self.pending.account_gone
    }

    /// Announce what other sessions changed in the selected mailbox.
    pub async fn catch_up(&mut self, allow_expunge: bool) {
        let Some(sel) = self.sel.as_mut() else { return };
        self.pending.drain(&mut self.sub, Some(sel.id));
        let mut out = String::new();
        if allow_expunge {
            sel.release_expunges(&mut out);
        }
        // Deliveries in commit order straight from their events; anything else, or a gap,
        // reads the store.
        let mut query = std::mem::take(&mut self.pending.stale);
        for (uid, modseq) in self.pending.appended.drain(..) {
            if !query && !sel.apply_appended(uid, modseq, allow_expunge, &mut out) {
                query = true;
            }
        }
        if query {
            match sel.catch_up(&self.ctx.store, allow_expunge, &mut out).await {
                Ok(()) => {}
                // Deleted by another session: nothing left to show; later commands get BAD.
                Err(StoreError::NotFound) => self.sel = None,
                Err(e) => {
                    // Try again at the next catch-up.
                    self.pending.stale = true;
                    tracing::warn!(conn = self.info.id, error = %e, "imap catch-up failed");
                }
            }
        }
        self.conn.push(out.as_bytes());
    }
}
