//! The outbound queue (delivery.md section 1): entries per recipient domain with per-recipient
//! state, the retry schedule and bounces. Owned by the outbound work.

#[derive(Debug, Clone)]
pub struct QueueRcpt {
    pub rcpt: String,
    pub state: String,
    pub last_reply: String,
}

#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub id: String,
    pub blob: super::BlobId,
    pub sender: String,
    pub sender_account: Option<super::AccountId>,
    pub domain: String,
    pub created_at: i64,
    pub next_attempt: i64,
    pub attempts: u32,
    pub last_error: String,
    pub rcpts: Vec<QueueRcpt>,
}
