//! The delivering transaction itself refuses a sender that was deleted or blocked after its end
//! of DATA (issue 24): no window between the re-check and the commit.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use relay::store::{Delivery, Store, StoreError};

use crate::harness::seed_account;

async fn deliver(
    store: &Store,
    sender: relay::store::AccountId,
    rcpt: relay::store::AccountId,
) -> Result<(), StoreError> {
    let blob = store.put_blob(Bytes::from_static(b"Subject: x\r\n\r\nbody\r\n")).await.unwrap();
    let d = Delivery {
        sender: "s@chat.test".into(),
        sender_account: Some(sender),
        local: vec![rcpt],
        local_blob: Some(blob),
        remote: Vec::new(),
        remote_blob: None,
        push: false,
    };
    store.deliver(d).await.map(|_| ())
}

#[tokio::test]
async fn deliver_refuses_a_sender_gone_inside_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let sender = seed_account(&store, "s@chat.test").await;
    let rcpt = seed_account(&store, "r@chat.test").await;
    let inbox = store.mailbox(rcpt.id, "INBOX").await.unwrap().unwrap();

    deliver(&store, sender.id, rcpt.id).await.unwrap();
    assert_eq!(store.messages(inbox.id).await.unwrap().len(), 1);

    store.set_blocked(sender.id, true).await.unwrap();
    assert!(matches!(deliver(&store, sender.id, rcpt.id).await, Err(StoreError::SenderGone)));
    store.set_blocked(sender.id, false).await.unwrap();
    store.delete_account(sender.id, b"tomb".to_vec()).await.unwrap();
    assert!(matches!(deliver(&store, sender.id, rcpt.id).await, Err(StoreError::SenderGone)));
    assert_eq!(store.messages(inbox.id).await.unwrap().len(), 1, "nothing stored for a gone sender");
}
