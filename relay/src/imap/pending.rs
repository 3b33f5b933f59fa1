//! What a session has heard from the store since its last catch-up. Every change to a mailbox
//! is published as an event after its commit and before the writing call returns, so a view
//! whose session heard nothing about its mailbox is current and needs no query; a new delivery
//! whose modseq is the view's next one can be applied from the event alone. Anything else (flag
//! changes, expunges, a lagging channel, mailbox renames) makes the next catch-up read the store.

use tokio::sync::broadcast::error::TryRecvError;

use crate::store::{MailboxEvent, MailboxId, Subscription};

/// Deliveries remembered between catch-ups before falling back to a query.
const MAX_APPENDED: usize = 32;

#[derive(Default)]
pub struct Pending {
    /// The selected mailbox may have changed in a way only the store can tell.
    pub stale: bool,
    /// Deliveries heard of, in commit order: (mailbox, uid, modseq).
    pub appended: Vec<(MailboxId, u32, i64)>,
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
                    self.appended.push((mailbox, uid, modseq));
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
