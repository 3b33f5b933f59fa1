//! Address literals in `MAIL FROM` and `RCPT TO` (`user@[192.0.2.1]`, `user@[IPv6:2001:db8::1]`).
//!
//! smtp-proto's path parser refuses a domain in brackets, while Postfix, the reference and
//! `/mxdeliv` accept it (IP-only relays; SMTP-44 decides what is then checked). So that port 25,
//! submission and `/mxdeliv` read such a sender alike, the path is swapped for a placeholder of
//! the same shape, smtp-proto parses the rest of the line (its parameters) as usual, and the real
//! address, validated by [`Address::parse`], is put back.

use crate::address::Address;

/// The placeholder domain: `.invalid` can never be a real destination (RFC 2606).
const PLACEHOLDER: &str = "literal.invalid";

/// A command line whose address literal was swapped out, and the address to put back.
#[derive(Debug, PartialEq, Eq)]
pub struct Swapped {
    pub line: Vec<u8>,
    pub address: String,
}

/// `Some` when `line` is `MAIL FROM:<…@[…]>` or `RCPT TO:<…@[…]>` with a valid address literal.
pub fn swap(line: &[u8]) -> Option<Swapped> {
    let upper = |n: usize| line.get(..n).map(|p| p.to_ascii_uppercase());
    let verb_len = if upper(10).as_deref() == Some(b"MAIL FROM:") {
        10
    } else if upper(8).as_deref() == Some(b"RCPT TO:") {
        8
    } else {
        return None;
    };
    let open = verb_len + line[verb_len..].iter().take_while(|b| **b == b' ').count();
    if line.get(open) != Some(&b'<') {
        return None;
    }
    let close = open + line[open..].iter().position(|b| *b == b'>')?;
    let inner = std::str::from_utf8(&line[open + 1..close]).ok()?;
    if !inner.contains("@[") {
        return None;
    }
    let addr = Address::parse(inner).ok()?;
    if !addr.is_ip_literal() {
        return None;
    }
    let mut out = Vec::with_capacity(line.len());
    out.extend_from_slice(&line[..=open]);
    out.extend_from_slice(addr.local().as_bytes());
    out.push(b'@');
    out.extend_from_slice(PLACEHOLDER.as_bytes());
    out.extend_from_slice(&line[close..]);
    Some(Swapped { line: out, address: addr.as_str().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_valid_literals_only() {
        let s = swap(b"MAIL FROM:<Bob@[127.0.0.1]> SIZE=100\r\n").expect("v4");
        assert_eq!(s.line, b"MAIL FROM:<bob@literal.invalid> SIZE=100\r\n");
        assert_eq!(s.address, "bob@[127.0.0.1]");
        let s = swap(b"rcpt to: <x@[IPv6:2001:db8::1]>\r\n").expect("v6");
        assert_eq!(s.address, "x@[ipv6:2001:db8::1]");
        for no in [
            &b"MAIL FROM:<a@example.org>\r\n"[..],
            b"MAIL FROM:<a@[999.1.1.1]>\r\n",
            b"MAIL FROM:<a@[127.0.0.1]\r\n",
            b"MAIL FROM:<@x,a@[127.0.0.1]>\r\n",
            b"RCPT TO:<a@b@[127.0.0.1]>\r\n",
            b"EHLO [127.0.0.1]\r\n",
            b"MAIL\r\n",
        ] {
            assert_eq!(swap(no), None, "{}", String::from_utf8_lossy(no));
        }
    }
}
