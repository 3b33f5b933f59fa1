//! Cross-node events: the NOTIFY payload and the events of one transaction.

use super::*;

/// A notification payload: `node account kind [mailbox uid modseq]`.
pub(super) fn payload(node: u64, account: AccountId, ev: &MailboxEvent) -> String {
    match ev {
        MailboxEvent::Appended { mailbox, uid, modseq } => format!("{node:x} {account} A {mailbox} {uid} {modseq}"),
        MailboxEvent::Changed { mailbox } => format!("{node:x} {account} C {mailbox}"),
        MailboxEvent::MailboxesChanged => format!("{node:x} {account} M"),
        MailboxEvent::AccountGone => format!("{node:x} {account} G"),
    }
}

/// Parse a payload; `None` for one of this node's own or a malformed one.
pub(crate) fn parse_payload(me: u64, p: &str) -> Option<StoreEvent> {
    let mut it = p.split(' ');
    let node = u64::from_str_radix(it.next()?, 16).ok()?;
    if node == me {
        return None;
    }
    let account: AccountId = it.next()?.parse().ok()?;
    let ev = match it.next()? {
        "Q" => return Some(StoreEvent::QueueChanged),
        "A" => MailboxEvent::Appended {
            mailbox: it.next()?.parse().ok()?,
            uid: it.next()?.parse().ok()?,
            modseq: it.next()?.parse().ok()?,
        },
        "C" => MailboxEvent::Changed { mailbox: it.next()?.parse().ok()? },
        "M" => MailboxEvent::MailboxesChanged,
        "G" => MailboxEvent::AccountGone,
        _ => return None,
    };
    Some(StoreEvent::Mailbox { account, event: ev })
}

/// The events of one transaction: NOTIFY'd inside it, published locally after its commit.
#[derive(Default)]
pub(super) struct Pending(pub(super) Vec<StoreEvent>);

impl Pending {
    pub(super) fn push(&mut self, ev: StoreEvent) {
        self.0.push(ev);
    }
    pub(super) async fn notify(&self, tx: &Tx<'_>, node: u64) -> Result<()> {
        for ev in &self.0 {
            let (account, mev) = match ev {
                StoreEvent::Mailbox { account, event } => (*account, event.clone()),
                StoreEvent::Stored(m) => {
                    (m.account, MailboxEvent::Appended { mailbox: m.mailbox, uid: m.uid, modseq: m.modseq })
                }
                StoreEvent::QueueChanged => {
                    // Every node's scheduler may take the new entries.
                    tx.execute(
                        &tx.prepare_cached("SELECT pg_notify($1, $2)").await?,
                        &[&CHANNEL, &format!("{node:x} 0 Q")],
                    )
                    .await?;
                    continue;
                }
            };
            tx.execute(
                &tx.prepare_cached("SELECT pg_notify($1, $2)").await?,
                &[&CHANNEL, &payload(node, account, &mev)],
            )
            .await?;
        }
        Ok(())
    }
}
