//! End-of-DATA checks shared by submission, MX ingress and `/mxdeliv`: no bare CR (FLT-31),
//! the message must have a readable header section (SMTP-31) and its `From:` must be exactly
//! one address equal to MAIL FROM (SMTP-32). All of it on the filter's one strict reading
//! (filter.md section 2a), the same reading the encryption check then judges.

use super::reply::{self, Reply};
use crate::address::Address;
use crate::filter::reading::{self, ReadError, Reading};

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

/// FLT-31: a CR not followed by LF anywhere in the data is refused on every listener and over
/// `/mxdeliv` (the SMTP smuggling class), before anything else reads the message.
pub fn check_line_ends(bytes: &[u8]) -> Result<(), Reply> {
    if reading::has_bare_cr(bytes) { Err(reply::bare_cr()) } else { Ok(()) }
}

/// Read the message strictly. No data or no header section is the SMTP-31 parse failure; a
/// malformed top-level header line means not even From can be read with certainty, so the
/// message is not encrypted (FLT-28) whatever the recipient allows.
pub fn parse(bytes: &[u8]) -> Result<Reading<'_>, Reply> {
    match reading::read(bytes) {
        Ok(r) => Ok(r),
        Err(ReadError::Empty) => Err(reply::parse_failed("empty message")),
        Err(ReadError::NoHeader) => Err(reply::parse_failed("no header section")),
        Err(ReadError::BareCr) => Err(reply::bare_cr()),
        Err(_) => Err(reply::encryption_needed()),
    }
}

/// The single address of the single `From:` field (lowercased), or `500 Invalid FROM header`
/// (SMTP-32, FLT-29: a missing or repeated From is a From violation).
pub fn from_address(msg: &Reading<'_>) -> Result<Address, Reply> {
    let (addr, value) = reading::from_field(&msg.top).map_err(|(_, v)| reply::bad_from_header(&v))?;
    Address::parse(&addr).map_err(|_| reply::bad_from_header(&value))
}

/// SMTP-32: `From:` equals MAIL FROM, case-insensitively. Returns the From address.
pub fn check_from(msg: &Reading<'_>, mail_from: &str) -> Result<Address, Reply> {
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
        let m = |s: &'static str| parse(s.as_bytes()).expect("parses");
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
        let dup = m("From: b@x.org\r\nFrom: a@x.org\r\n\r\nhi\r\n");
        assert_eq!(
            check_from(&dup, "a@x.org").map_err(|r| r.to_string()),
            Err("500 Invalid FROM header: b@x.org".into())
        );
        let cr = m("From: b@x.org\r\n\r\nhi\r\n");
        assert!(check_from(&cr, "b@x.org").is_ok());
        assert_eq!(check_line_ends(b"From: victim@x.org\rFrom: a@x.org\r\n\r\n").map_err(|r| r.code), Err(550));
        assert_eq!(parse(b"From: victim@x.org\rFrom: a@x.org\r\n\r\n").map_err(|r| r.code).err(), Some(550));
    }
}
