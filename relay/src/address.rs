//! The single owner of address parsing and normalisation.
//!
//! Addresses are `localpart@domain`; comparison is on the lowercased form (ACC-1). Anything with
//! source routes, percent hacks, quoted local parts, `!` paths or more than one `@` is not an
//! address chatrelay handles: refusing those shapes closes every classic open-relay trick.

/// A syntactically acceptable, lowercased address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    full: String,
    at: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("address must contain exactly one @")]
    At,
    #[error("address contains characters that are not allowed")]
    Chars,
    #[error("address is too long")]
    TooLong,
}

impl Address {
    /// Parse and lowercase. Accepts a bare address or one in angle brackets.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let s = s.trim();
        let s = s.strip_prefix('<').and_then(|x| x.strip_suffix('>')).unwrap_or(s).trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > 254 {
            return Err(AddressError::TooLong);
        }
        let lower = s.to_lowercase();
        let at = match lower.match_indices('@').map(|(i, _)| i).collect::<Vec<_>>().as_slice() {
            [i] => *i,
            _ => return Err(AddressError::At),
        };
        let (local, domain) = (&lower[..at], &lower[at + 1..]);
        if local.is_empty() || domain.is_empty() || local.len() > 64 {
            return Err(AddressError::At);
        }
        let local_ok = local.chars().all(|c| c.is_alphanumeric() || "._-+=".contains(c))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok || !domain_ok(domain) {
            return Err(AddressError::Chars);
        }
        Ok(Self { full: lower, at })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
    pub fn local(&self) -> &str {
        &self.full[..self.at]
    }
    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..]
    }
    /// True when the domain is an address literal such as `[192.0.2.1]`.
    pub fn is_ip_literal(&self) -> bool {
        self.domain().starts_with('[')
    }
    pub fn is_local(&self, mail_domain: &str) -> bool {
        self.domain().eq_ignore_ascii_case(mail_domain)
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

fn domain_ok(d: &str) -> bool {
    if let Some(inner) = d.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        let ip = inner.strip_prefix("ipv6:").unwrap_or(inner);
        return ip.parse::<std::net::IpAddr>().is_ok();
    }
    !d.starts_with('.')
        && !d.ends_with('.')
        && !d.contains("..")
        && d.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_lowercases() {
        let a = Address::parse("<Abc123xyz@Chat.Example.org>").expect("valid");
        assert_eq!(a.as_str(), "abc123xyz@chat.example.org");
        assert_eq!(a.local(), "abc123xyz");
        assert_eq!(a.domain(), "chat.example.org");
        assert!(a.is_local("chat.example.org"));
        assert!(Address::parse("x@[127.0.0.1]").expect("literal").is_ip_literal());
        assert!(Address::parse("x@_test.localhost").is_ok());
    }

    #[test]
    fn refuses_relay_tricks() {
        for bad in [
            "",
            "a@b@c.org",
            "user%other.org@chat.example.org",
            "@hop.org:user@other.org",
            "\"quoted\"@chat.example.org",
            "a!b@chat.example.org",
            "noat",
            "a@",
            "@b.org",
            "a..b@x.org",
            "a@x..org",
            "a@[not-an-ip]",
            "a b@x.org",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
