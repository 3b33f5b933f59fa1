//! `chatrelay queue --config FILE list|retry ID|drop ID` (OPS-20). Retry and drop go through the
//! control socket of a running `serve` (OPS-15), whose scheduler then wakes at once; without one
//! they open the database directly.

use clap::Subcommand;

use super::Failure;
use crate::config::Config;
use crate::control::Request;
use crate::store::{Store, now_secs};

#[derive(Subcommand, Debug)]
pub enum QueueAction {
    /// One line per entry: id, age, sender, recipient domain, recipients, attempts, next attempt, last error.
    List,
    /// Make the entry due now.
    Retry { id: String },
    /// Remove the entry without a bounce.
    Drop { id: String },
}

/// `90s` → "1m", for the list columns.
pub fn human(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A queue change, run here or inside `serve` through the control socket (OPS-15), where a retry
/// wakes the scheduler at once.
#[derive(Debug, Clone)]
pub enum Change {
    Retry(String),
    Drop(String),
}

/// Apply `change`; returns the line to print.
pub async fn apply(store: &Store, change: Change) -> Result<String, Failure> {
    match change {
        Change::Retry(id) => match store.queue_retry_now(&id).await.map_err(Failure::runtime)? {
            true => Ok(format!("queue entry {id} is due now")),
            false => Err(Failure::Runtime(format!("no queue entry {id}"))),
        },
        Change::Drop(id) => match store.queue_drop(&id).await.map_err(Failure::runtime)? {
            true => Ok(format!("queue entry {id} dropped")),
            false => Err(Failure::Runtime(format!("no queue entry {id}"))),
        },
    }
}

pub fn run(cfg: Config, action: QueueAction) -> Result<(), Failure> {
    let req = match &action {
        QueueAction::List => None,
        QueueAction::Retry { id } => Some(Request::QueueRetry { id: id.clone() }),
        QueueAction::Drop { id } => Some(Request::QueueDrop { id: id.clone() }),
    };
    if let Some(reply) = req.and_then(|r| crate::control::request(&cfg.data_dir, &r)) {
        if !reply.ok {
            return Err(Failure::Runtime(reply.message));
        }
        println!("{}", reply.message);
        return Ok(());
    }
    let rt = super::runtime()?;
    rt.block_on(async move {
        let store = Store::open_config(&cfg).map_err(Failure::runtime)?;
        match action {
            QueueAction::List => {
                let now = now_secs();
                for e in store.list_queue().await.map_err(Failure::runtime)? {
                    let next = if e.next_attempt <= now {
                        "now".to_string()
                    } else {
                        format!("in {}", human(e.next_attempt - now))
                    };
                    let sender = if e.sender.is_empty() { "<>" } else { e.sender.as_str() };
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        e.id,
                        human(now - e.created_at),
                        sender,
                        e.domain,
                        e.pending().count(),
                        e.attempts,
                        next,
                        if e.last_error.is_empty() { "-" } else { e.last_error.as_str() }
                    );
                }
                Ok(())
            }
            QueueAction::Retry { id } => {
                println!("{}", apply(&store, Change::Retry(id)).await?);
                Ok(())
            }
            QueueAction::Drop { id } => {
                println!("{}", apply(&store, Change::Drop(id)).await?);
                Ok(())
            }
        }
    })
}
