//! Post-commit events. Sessions subscribe per account (IMAP: "mailbox X changed", "account gone");
//! the push notifier and others subscribe to the global `MessageStored` stream. Channels are
//! bounded: a receiver that lags is told so (`Lagged`) and must resynchronise from the store,
//! which is always possible because events only say *that* something changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{AccountId, MailboxId};

const PER_ACCOUNT_CAPACITY: usize = 64;
const GLOBAL_CAPACITY: usize = 4096;

/// A message was stored for a local account (delivery, bounce, /mxdeliv; not APPEND/COPY/MOVE).
#[derive(Debug, Clone)]
pub struct MessageStored {
    pub account: AccountId,
    pub mailbox: MailboxId,
    pub uid: u32,
    /// The mailbox's modseq after this message (its `highestmodseq` at the commit).
    pub modseq: i64,
    pub size: u64,
    /// The account's usage after this message, so quota checks need no read (RET-6).
    pub usage_bytes: u64,
    /// False for self-sent copies (bcc-self, PUSH-5).
    pub notify: bool,
    /// When the delivery committed (Unix ms), for latency metrics.
    pub stored_at_ms: i64,
}

/// What an IMAP session of an account needs to hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxEvent {
    /// Messages, flags or expunges changed in this mailbox; catch up from the store.
    Changed { mailbox: MailboxId },
    /// One message was delivered to this mailbox with default flags: all a view needs to
    /// show it when `modseq` is the view's next one (else catch up from the store).
    Appended { mailbox: MailboxId, uid: u32, modseq: i64 },
    /// Mailboxes were created, deleted or renamed.
    MailboxesChanged,
    /// The account was deleted or blocked: close the session (ACC-28).
    AccountGone,
}

#[derive(Debug, Clone)]
pub enum StoreEvent {
    Mailbox {
        account: AccountId,
        event: MailboxEvent,
    },
    Stored(MessageStored),
    /// New work in the outbound queue.
    QueueChanged,
}

#[derive(Clone)]
pub struct Events {
    inner: Arc<EventsInner>,
}

struct EventsInner {
    accounts: Mutex<HashMap<AccountId, broadcast::Sender<MailboxEvent>>>,
    stored: broadcast::Sender<MessageStored>,
    queue: tokio::sync::Notify,
}

/// A per-account subscription; unregisters itself when the last one of an account is dropped.
pub struct Subscription {
    pub rx: broadcast::Receiver<MailboxEvent>,
    account: AccountId,
    events: Events,
}

impl Subscription {
    pub fn account(&self) -> AccountId {
        self.account
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // This receiver is still alive here, so 1 means "only us".
        if let Ok(mut map) = self.events.inner.accounts.lock()
            && map.get(&self.account).is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.account);
        }
    }
}

impl Events {
    pub fn new() -> Self {
        let (stored, _) = broadcast::channel(GLOBAL_CAPACITY);
        Self {
            inner: Arc::new(EventsInner {
                accounts: Mutex::new(HashMap::new()),
                stored,
                queue: tokio::sync::Notify::new(),
            }),
        }
    }

    pub fn subscribe(&self, account: AccountId) -> Subscription {
        let rx = match self.inner.accounts.lock() {
            Ok(mut map) => map.entry(account).or_insert_with(|| broadcast::channel(PER_ACCOUNT_CAPACITY).0).subscribe(),
            Err(p) => {
                p.into_inner().entry(account).or_insert_with(|| broadcast::channel(PER_ACCOUNT_CAPACITY).0).subscribe()
            }
        };
        Subscription { rx, account, events: self.clone() }
    }

    /// Accounts with a live subscription (the catch-up after a lost cross-node event stream).
    pub(crate) fn subscribed_accounts(&self) -> Vec<AccountId> {
        self.inner.accounts.lock().map(|m| m.keys().copied().collect()).unwrap_or_default()
    }

    /// All stored messages, for push, metrics and benchmarks.
    pub fn subscribe_stored(&self) -> broadcast::Receiver<MessageStored> {
        self.inner.stored.subscribe()
    }

    /// Wait until the queue changed (the outbound scheduler's wake-up).
    pub async fn queue_changed(&self) {
        self.inner.queue.notified().await
    }

    /// Publish an event that does not come from a store transaction (e.g. admin block via control).
    pub fn publish(&self, ev: StoreEvent) {
        match ev {
            StoreEvent::Mailbox { account, event } => {
                if let Ok(map) = self.inner.accounts.lock()
                    && let Some(tx) = map.get(&account)
                {
                    let _ = tx.send(event);
                }
            }
            StoreEvent::Stored(m) => {
                let (account, mailbox, uid, modseq) = (m.account, m.mailbox, m.uid, m.modseq);
                let _ = self.inner.stored.send(m);
                self.publish(StoreEvent::Mailbox { account, event: MailboxEvent::Appended { mailbox, uid, modseq } });
            }
            StoreEvent::QueueChanged => self.inner.queue.notify_one(),
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}
