//! Issue 6 end to end over real SMTP: the trim right after a delivery (RET-6) and the quota check
//! at RCPT (RET-8). Old mail is seeded through the store while the relay is stopped and aged by
//! editing `internal_date`.

use std::time::Duration;

use crate::harness::*;
use crate::seeding::{DAY, account_state, seed_aged};

const MAX: i64 = 100 * 1024;

/// A running relay with `max_mailbox_size = 100K`, alice and bob created over SMTP, and bob's
/// mailbox holding `old` messages of the given sizes and ages in seconds (oldest first).
fn relay_with_old_mail(rt: &tokio::runtime::Runtime, old: &[(usize, i64)]) -> (Relay, String, String, i64, Vec<u32>) {
    let mut relay = Relay::start("max_mailbox_size = \"100K\"\n");
    let (alice, bob) = (relay.new_address(), relay.new_address());
    rt.block_on(create_account(&relay, &alice));
    rt.block_on(create_account(&relay, &bob));
    assert_eq!(relay.stop(), Some(0));
    let id = relay.with_store(async |s| s.account_by_address(&bob).await.expect("read").expect("bob").id);
    let uids = seed_aged(&relay, id, old);
    relay.spawn();
    (relay, alice, bob, id, uids)
}

fn state(relay: &Relay, acc: i64) -> (Vec<u32>, i64) {
    account_state(&relay.db(), acc)
}

/// RET-6: a submission that lifts bob above 75 % is followed at once (the pass interval is an
/// hour) by a trim to at most 70 %, oldest first; the new message stays.
#[test]
fn delivery_over_75_percent_is_trimmed_at_once() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let eml_len = encrypted_eml("a@chat.test", "b@chat.test").len() as i64;
    let threshold = MAX * 75 / 100;
    let second = (threshold - 60_000 - eml_len / 2) as usize;
    let (relay, alice, bob, acc, old) = relay_with_old_mail(&rt, &[(60_000, 3 * DAY), (second, 2 * DAY)]);
    let (_, before) = state(&relay, acc);
    assert!(before <= threshold, "not above 75 % before: {before}");

    let r = rt.block_on(submit(&relay, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)));
    assert!(r.starts_with("250"), "{r}");
    let trimmed = wait_until(Duration::from_secs(10), || state(&relay, acc).1 <= MAX * 70 / 100);
    let (uids, usage) = state(&relay, acc);
    assert!(trimmed, "usage {usage} not trimmed to 70 %:\n{}", relay.log());
    assert!(!uids.contains(&old[0]), "the oldest message went");
    assert!(uids.contains(&old[1]), "one deletion was enough; the next stays");
    assert_eq!(uids.len(), 2, "the new message stays: {uids:?}");
    assert_eq!(relay.metric("chatrelay_expiry_removed_total{reason=\"quota\"}"), Some(1.0));
}

/// RET-8, RET-10: a mailbox at the limit with nothing older than 24 h refuses the recipient with
/// a transient 452 and keeps every message.
#[test]
fn full_of_young_mail_gets_452() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (relay, alice, bob, acc, old) = relay_with_old_mail(&rt, &[(MAX as usize, 0)]);
    let r = rt.block_on(submit(&relay, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)));
    assert_eq!(r, format!("452 4.2.2 <{bob}>: Mailbox full"));
    assert_eq!(state(&relay, acc).0, old, "nothing deleted, nothing added");
}

/// RET-8: a mailbox at the limit with old mail is trimmed at RCPT and the message is accepted.
#[test]
fn full_of_old_mail_is_trimmed_at_rcpt() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (relay, alice, bob, acc, old) = relay_with_old_mail(&rt, &[(MAX as usize, 2 * DAY)]);
    let r = rt.block_on(submit(&relay, &alice, PASSWORD, &alice, &[&bob], &encrypted_eml(&alice, &bob)));
    assert!(r.starts_with("250"), "accepted after the trim: {r}");
    let (uids, usage) = state(&relay, acc);
    assert!(!uids.contains(&old[0]), "the old message was trimmed");
    assert_eq!(uids.len(), 1, "the new message is stored");
    assert!(usage < MAX * 70 / 100);
}
