//! Giving memory back after load (issue 11, P5: RSS back to ≤ 1.2× rest). glibc keeps freed
//! blocks inside its arenas, so after 1,000 connections have come and gone their TLS and session
//! buffers stay resident (measured: 36.6 MiB after such a burst, 20.7 MiB after one
//! `malloc_trim`). A background task trims a few seconds after connections have closed, after
//! asking the store to drop its idle readers' page caches; it does nothing while the relay is
//! quiet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::context::Ctx;

static CLOSED: AtomicU64 = AtomicU64::new(0);
const CHECK_EVERY: Duration = Duration::from_secs(3);

/// A connection ended (called by the accept loop).
pub fn connection_closed() {
    CLOSED.fetch_add(1, Ordering::Relaxed);
}

/// Until shutdown: trim the heap when connections closed since the last check.
pub async fn run(ctx: Ctx) {
    let mut seen = CLOSED.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let now = CLOSED.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            ctx.store.release_memory().await;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

/// Return free heap pages of every arena to the kernel.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own free lists; it is
    // thread-safe (it locks each arena).
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
