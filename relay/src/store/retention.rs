//! The expiry pass's queries (retention.md). Owned by the retention work.

/// What the pass uses from the config, in store terms.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    pub delete_mails_after_secs: i64,
    pub delete_large_after_secs: i64,
    pub large_message_size: u64,
    pub inactive_days: i64,
    pub max_mailbox_size: u64,
}

/// Counts of one pass (RET-13).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryReport {
    pub accounts_deleted: u64,
    pub removed_age: u64,
    pub removed_large: u64,
    pub removed_quota: u64,
    pub bytes_freed: u64,
    pub tokens_expired: u64,
    pub orphans_removed: u64,
}
