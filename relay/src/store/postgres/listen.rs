//! The LISTEN side of cross-node events: one dedicated connection per node (not from the pool:
//! a pooled connection is reset between uses). Each other node's notification becomes the local
//! event it describes. After every (re)connect, every account with a live session is told its
//! mailboxes changed, so sessions read "changes since my modseq" and nothing committed while the
//! connection was down is missed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{CHANNEL, Pg, parse_payload};
use crate::store::events::{MailboxEvent, StoreEvent};

const RETRY: Duration = Duration::from_millis(500);

pub(super) async fn run(config: tokio_postgres::Config, pg: Arc<Pg>) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(msg) = stream.next().await {
                        match msg {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "store: LISTEN connection lost");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    tracing::warn!(error = %e, "store: LISTEN failed");
                } else {
                    catch_up(&pg).await;
                    while let Some(p) = rx.recv().await {
                        if let Some(ev) = parse_payload(pg.node, &p) {
                            pg.events.publish(ev);
                        }
                    }
                }
                driver.abort();
                // The client drops here; sessions keep working on their cursor.
            }
            Err(e) => tracing::warn!(error = %e, "store: cannot connect the LISTEN connection"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

async fn catch_up(pg: &Pg) {
    let accounts = pg.events.subscribed_accounts();
    if accounts.is_empty() {
        return;
    }
    match pg.mailboxes_of(&accounts).await {
        Ok(list) => {
            for (account, mailbox) in list {
                pg.events.publish(StoreEvent::Mailbox { account, event: MailboxEvent::Changed { mailbox } });
            }
            // And the scheduler looks at the queue: new entries may have been missed too.
            pg.events.publish(StoreEvent::QueueChanged);
        }
        Err(e) => tracing::warn!(error = %e, "store: catch-up after LISTEN reconnect failed"),
    }
}
