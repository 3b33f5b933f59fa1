//! Outbound result texts (delivery.md section 10) and the per-recipient outcome type.

/// What happened to one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// 2xx: done. The text is for the log and the queue (`250 OK (SMTP)`).
    Delivered(String),
    /// 5xx: bounce at once (DLV-7).
    Permanent(String),
    /// 4xx, timeout, connection, TLS or DNS trouble: try again later (DLV-7).
    Temporary(String),
}

impl RcptResult {
    /// Classify a remote reply line by its first digit.
    pub fn from_reply(line: &str) -> Self {
        match line.as_bytes().first() {
            Some(b'2') => Self::Delivered(line.to_string()),
            Some(b'5') => Self::Permanent(line.to_string()),
            _ => Self::Temporary(line.to_string()),
        }
    }
    pub fn text(&self) -> &str {
        match self {
            Self::Delivered(t) | Self::Permanent(t) | Self::Temporary(t) => t,
        }
    }
}

pub const DELIVERED_HTTPS: &str = "250 OK (HTTPS)";
pub const DELIVERED_SMTP: &str = "250 OK (SMTP)";
pub const NULL_MX: &str = "556 5.1.10 Permanent failure: Recipient address has null MX";
pub const LOCAL_ERROR: &str = "451 4.3.0 Local error";

pub fn nxdomain(d: &str) -> String {
    format!("512 5.1.2 Domain {d} does not exist")
}
pub fn dns_failed(d: &str) -> String {
    format!("421 4.4.3 DNS resolution failed for {d}")
}
pub fn all_hosts_failed(mx: &str, error: &str) -> String {
    format!("421 4.4.1 Failed to connect to any mail server; last attempt to {mx}: {error}")
}
pub fn mta_sts_no_mx(d: &str) -> String {
    format!("421 4.7.5 MTA-STS policy allows no usable MX for {d}")
}
