//! The LISTEN side of cross-node events: one dedicated connection per node (not from the pool:
//! a pooled connection is reset between uses). Each other node's notification becomes the local
//! event it describes. After every (re)connect, every account with a live session is told its
//! mailboxes changed, so sessions read "changes since my modseq" and nothing committed while the
//! connection was down is missed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_postgres::AsyncMessage;

use super::{CHANNEL, Pg, parse_payload};
use crate::store::events::{MailboxEvent, StoreEvent};

const RETRY: Duration = Duration::from_millis(500);

pub(super) async fn run(config: tokio_postgres::Config, pg: Arc<Pg>, timeout: Duration) {
    // A LISTEN connection only receives, so a database that stops answering would leave it
    // waiting forever (and every cross-node wake-up lost): it pings, and the watchdog on its
    // socket ends it when a ping goes unanswered.
    let ping_every = (timeout / 3).max(Duration::from_millis(500));
    // Named, so an operator can tell it apart in pg_stat_activity.
    let mut config = config;
    config.application_name("chatrelay-listen");
    loop {
        match super::watchdog::connect(&config, timeout).await {
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
                    let mut ping = tokio::time::interval(ping_every);
                    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            p = rx.recv() => {
                                let Some(p) = p else { break };
                                if let Some(ev) = parse_payload(pg.node, &p) {
                                    pg.events.publish(ev);
                                }
                            }
                            _ = ping.tick() => {
                                if let Err(e) = client.simple_query("").await {
                                    tracing::warn!(error = %e, "store: LISTEN connection stopped answering");
                                    break;
                                }
                            }
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
