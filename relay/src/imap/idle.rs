//! IDLE (IMAP-28..32): wait on the socket, the account's store events, a 2-minute keepalive,
//! the 30-minute limit and shutdown. New mail is announced straight from the commit event.

use std::time::Duration;

use super::pending::next_event;
use super::replies as r;
use super::session::{AUTH_TIMEOUT, Reply, Session};

const KEEPALIVE: Duration = Duration::from_secs(120);

pub async fn idle(s: &mut Session, _tag: &str) -> Reply {
    if !s.account_alive() {
        return Reply::Close;
    }
    // `+ idling` first, then what is pending (IMAP-28): async-imap files untagged responses
    // that come before the continuation away from its IDLE loop, so an EXISTS sent earlier
    // would never wake Delta Chat.
    s.untagged(r::IDLING);
    s.catch_up(true).await;
    if !s.account_alive() {
        return Reply::Close;
    }
    if s.conn.flush().await.is_err() {
        return Reply::Close;
    }
    let _g = super::GaugeGuard::inc(s.ctx.metrics.imap_idle_connections.clone());
    s.conn.shrink();
    let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    loop {
        if s.conn.has_line() {
            break;
        }
        if s.conn.buffered() > 1024 {
            return Reply::Done(r::BAD_EXPECTED_DONE.into());
        }
        tokio::select! {
            res = s.conn.fill() => if !matches!(res, Ok(n) if n > 0) { return Reply::Close },
            ev = next_event(&mut s.sub) => {
                if !s.hear(ev) {
                    return Reply::Close;
                }
                // Changes in other mailboxes need no work here.
                if !s.pending.any() {
                    continue;
                }
                s.catch_up(true).await;
                if s.conn.flush().await.is_err() {
                    return Reply::Close;
                }
            }
            _ = keepalive.tick() => {
                s.untagged(r::STILL_HERE);
                if s.conn.flush().await.is_err() {
                    return Reply::Close;
                }
            }
            _ = tokio::time::sleep_until(deadline) => { s.untagged(r::BYE_IDLE_TIMEOUT); return Reply::Close }
            _ = s.ctx.shutdown.cancelled() => { s.untagged(r::BYE_SHUTDOWN); return Reply::Close }
        }
    }
    match s.conn.read_line(1024).await {
        Ok(super::io::Line::Ok(l)) if l.trim_ascii().eq_ignore_ascii_case(b"DONE") => Reply::Done(r::IDLE_DONE.into()),
        Ok(_) => Reply::Done(r::BAD_EXPECTED_DONE.into()),
        Err(_) => Reply::Close,
    }
}
