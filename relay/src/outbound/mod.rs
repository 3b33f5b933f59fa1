//! Outbound delivery: drains the queue to remote relays. Filled in by the delivery issue.

pub mod dkim_key;

use crate::context::Ctx;

/// The queue scheduler; until delivery lands, entries wait durably in the queue.
pub async fn run(ctx: Ctx) {
    ctx.shutdown.cancelled().await;
}
