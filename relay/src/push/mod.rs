//! Push notifications to the notification proxy. Filled in by the push issue; until then jobs
//! wait durably in the store.

use crate::context::Ctx;

pub async fn run(ctx: Ctx) {
    ctx.shutdown.cancelled().await;
}
