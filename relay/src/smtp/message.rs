//! End-of-DATA checks shared by submission, MX ingress and `/mxdeliv`: the message must parse
//! (SMTP-31) and its `From:` must be exactly one address equal to MAIL FROM (SMTP-32).

use mail_parser::{Message, MessageParser};

use super::reply::{self, Reply};
use crate::address::Address;

/// Messages up to this size are parsed and filtered on the session's own (async) thread; larger
/// ones on the blocking pool. Parsing costs ≈ 3 ms of CPU per MB, and on a small machine there is
/// one async worker (`cli::runtime`): a 30 MB message checked in place would stall every other
/// session on it for ≈ 0.1 s.
pub(crate) const IN_PLACE_MAX: usize = 256 * 1024;

/// Run the end-of-DATA checks `f` for a message of `len` bytes: in place when small, else on a
/// blocking thread. A check that panicked is a local error.
pub async fn checked<T: Send + 'static>(
    len: usize,
    f: impl FnOnce() -> Result<T, Reply> + Send + 'static,
) -> Result<T, Reply> {
    if len <= IN_PLACE_MAX {
        return f();
    }
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| Err(reply::local_error()))
}

/// Parse the message; mail-parser is lenient, so a missing header section is the failure.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, Reply> {
    match MessageParser::default().parse(bytes) {
        Some(m) if !m.headers().is_empty() => Ok(m),
        Some(_) => Err(reply::parse_failed("no header section")),
        None => Err(reply::parse_failed("empty message")),
    }
}

/// The single address of the `From:` header (lowercased), or `500 Invalid FROM header`.
pub fn from_address(msg: &Message<'_>) -> Result<Address, Reply> {
    let raw = msg.header_raw("From").map(str::trim).unwrap_or("");
    let bad = || reply::bad_from_header(raw);
    let mut addrs = msg.from().map(|a| a.iter().collect::<Vec<_>>()).unwrap_or_default().into_iter();
    let (Some(one), None) = (addrs.next(), addrs.next()) else {
        return Err(bad());
    };
    let addr = one.address().ok_or_else(bad)?;
    Address::parse(addr).map_err(|_| bad())
}

/// SMTP-32: `From:` equals MAIL FROM, case-insensitively. Returns the From address.
pub fn check_from(msg: &Message<'_>, mail_from: &str) -> Result<Address, Reply> {
    let from = from_address(msg)?;
    if !from.as_str().eq_ignore_ascii_case(mail_from) {
        return Err(reply::from_mismatch(from.as_str(), mail_from));
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_rules() {
        let m = |s: &'static str| MessageParser::default().parse(s.as_bytes()).expect("parses");
        let ok = m("From: Alice <Alice@X.org>\r\nSubject: a\r\n\r\nhi\r\n");
        assert_eq!(check_from(&ok, "alice@x.org").map(|a| a.to_string()), Ok("alice@x.org".into()));
        let other = m("From: bob@x.org\r\n\r\nhi\r\n");
        assert_eq!(
            check_from(&other, "alice@x.org").map_err(|r| r.to_string()),
            Err("500 Invalid FROM bob@x.org for alice@x.org".into())
        );
        let two = m("From: a@x.org, b@x.org\r\n\r\nhi\r\n");
        assert_eq!(
            check_from(&two, "a@x.org").map_err(|r| r.to_string()),
            Err("500 Invalid FROM header: a@x.org, b@x.org".into())
        );
        let none = m("To: a@x.org\r\n\r\nhi\r\n");
        assert!(check_from(&none, "a@x.org").is_err());
        assert!(parse(b"").is_err());
    }
}
