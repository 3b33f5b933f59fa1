//! The retention pass. Filled in by the retention issue.

use crate::context::Ctx;

pub async fn run(ctx: Ctx) {
    ctx.shutdown.cancelled().await;
}
