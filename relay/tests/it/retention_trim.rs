//! Issue 6, RET-6 and RET-8 in process: the real context (`server::build_context`), the real
//! expiry task and the real store on a temp data_dir. Deliveries go through `ctx.store`, so the
//! task hears their `MessageStored` events exactly as it does for SMTP deliveries in `serve`.

use std::time::Duration;

use relay::config::{ByteSize, ConfDuration, Config, TlsMode};
use relay::context::Ctx;

use crate::harness::*;

fn ctx(dir: &std::path::Path, max: u64) -> (Ctx, std::fs::File) {
    let cfg = Config {
        mail_domain: "chat.test".into(),
        data_dir: dir.join("data"),
        max_mailbox_size: ByteSize(max),
        expire_interval: ConfDuration::from_secs(3600),
        tls: relay::config::Tls { mode: TlsMode::SelfSigned, ..Default::default() },
        ..Default::default()
    };
    relay::server::build_context(cfg).expect("context")
}

async fn usage(ctx: &Ctx, id: i64) -> u64 {
    ctx.store.account_by_id(id).await.expect("read").expect("account").usage_bytes
}

/// Make the account's current messages `days` old (the store has no API for that; tests only).
fn age_all(data: &std::path::Path, acc: i64, days: i64) {
    let db = rusqlite::Connection::open(data.join("chatrelay.db")).expect("db");
    db.busy_timeout(Duration::from_secs(10)).expect("busy");
    db.execute(
        "UPDATE messages SET internal_date = internal_date - ?1 * 86400
         WHERE mailbox_id IN (SELECT id FROM mailboxes WHERE account_id = ?2)",
        [days, acc],
    )
    .expect("age");
}

/// RET-6: a delivery that lifts usage above 75 % is followed by a trim to at most 70 % without
/// waiting for the next pass (the interval here is an hour).
#[test]
fn delivery_over_75_percent_triggers_trim() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let (ctx, _lock) = ctx(tmp.path(), 100_000);
        let task = tokio::spawn(relay::expiry::run(ctx.clone()));
        let acc = seed_account(&ctx.store, "trimmed01@chat.test").await;
        for _ in 0..7 {
            seed_message(&ctx.store, acc.id, None, 10_000).await;
        }
        age_all(&tmp.path().join("data"), acc.id, 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(usage(&ctx, acc.id).await, 70_000, "70 % is not above 75 %: nothing trimmed");
        // 80 000 > 75 000: this delivery triggers the trim, which removes the oldest (aged) ones.
        seed_message(&ctx.store, acc.id, None, 10_000).await;
        let mut u = 0;
        for _ in 0..50 {
            u = usage(&ctx, acc.id).await;
            if u <= 70_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(u <= 70_000, "trimmed to at most 70 %: usage {u}");
        let inbox = ctx.store.mailbox(acc.id, "INBOX").await.expect("read").expect("inbox");
        let msgs = ctx.store.messages(inbox.id).await.expect("messages");
        assert_eq!(msgs.len(), 7, "exactly one old message went");
        assert_eq!(msgs.last().map(|m| m.uid), Some(8), "the new message stays");
        assert_eq!(msgs.first().map(|m| m.uid), Some(2), "the oldest went first");
        let metrics = ctx.metrics.render();
        assert!(metrics.contains("chatrelay_expiry_removed_total{reason=\"quota\"} 1"), "{metrics}");
        ctx.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task).await.expect("task returns on shutdown").expect("join");
    });
}

/// RET-8: `make_room` trims an account at or over the limit and says whether there is room now;
/// when everything is younger than 24 h there is none (the caller answers 452 4.2.2).
#[test]
fn make_room_trims_or_reports_full() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let (ctx, _lock) = ctx(tmp.path(), 50_000);
        let young = seed_account(&ctx.store, "younguser@chat.test").await;
        let old = seed_account(&ctx.store, "olduser01@chat.test").await;
        assert!(relay::expiry::make_room(&ctx, young.id).await, "empty mailbox has room");
        for _ in 0..5 {
            seed_message(&ctx.store, young.id, None, 10_000).await;
            seed_message(&ctx.store, old.id, None, 10_000).await;
        }
        age_all(&tmp.path().join("data"), old.id, 3);
        assert!(!relay::expiry::make_room(&ctx, young.id).await, "full of young mail: no room");
        assert_eq!(usage(&ctx, young.id).await, 50_000, "young mail is never trimmed");
        assert!(relay::expiry::make_room(&ctx, old.id).await, "old mail trimmed: room again");
        assert_eq!(usage(&ctx, old.id).await, 30_000, "trimmed down to 70 % (35 000) or below");
    });
}
