//! Every SMTP reply text in one table (smtp.md section 9). Texts marked (ref) match
//! chatmail/relay + filtermail byte for byte. Addresses in a leading `<addr>:` position keep
//! Postfix's literal angle brackets, as the reference prints them.

use std::fmt;

/// One SMTP reply: code, enhanced status code (may be empty) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub esc: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, esc: &'static str, text: impl Into<String>) -> Self {
        Self { code, esc, text: text.into() }
    }
    /// 4xx and 5xx count towards the error limit (SMTP-24).
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }
    /// The reply as one wire line with CRLF.
    pub fn wire(&self) -> String {
        format!("{self}\r\n")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.esc.is_empty(), self.text.starts_with(':')) {
            (true, _) => write!(f, "{} {}", self.code, self.text),
            // `450 4.7.1: Too much mail from ...` (ref) has no space before the colon.
            (false, true) => write!(f, "{} {}{}", self.code, self.esc, self.text),
            (false, false) => write!(f, "{} {} {}", self.code, self.esc, self.text),
        }
    }
}

pub fn greeting(domain: &str) -> Reply {
    Reply::new(220, "", format!("{domain} ESMTP"))
}
pub fn ok() -> Reply {
    Reply::new(250, "2.0.0", "OK")
}
pub fn mail_ok() -> Reply {
    Reply::new(250, "2.1.0", "Ok")
}
pub fn rcpt_ok() -> Reply {
    Reply::new(250, "2.1.5", "Ok")
}
pub fn data_go() -> Reply {
    Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
}
pub fn queued(id: &str) -> Reply {
    Reply::new(250, "2.0.0", format!("OK: queued as {id}"))
}
pub fn bye() -> Reply {
    Reply::new(221, "2.0.0", "Bye")
}
pub fn help() -> Reply {
    Reply::new(214, "2.0.0", "See RFC 5321")
}
/// The argument is client input: echoed as one sanitised line (FLT-32).
pub fn vrfy(arg: &str) -> Reply {
    Reply::new(252, "2.0.0", echo(arg))
}
pub fn expn_disabled() -> Reply {
    Reply::new(502, "5.5.1", "EXPN command is disabled")
}
pub fn ready_tls() -> Reply {
    Reply::new(220, "2.0.0", "Ready to start TLS")
}
pub fn tls_active() -> Reply {
    Reply::new(503, "5.5.1", "Error: TLS already active")
}
pub fn starttls_first() -> Reply {
    Reply::new(530, "5.7.0", "Must issue a STARTTLS command first")
}
pub fn auth_required() -> Reply {
    Reply::new(530, "5.7.0", "Authentication required")
}
pub fn auth_needs_tls() -> Reply {
    Reply::new(538, "5.7.11", "Encryption required for requested authentication mechanism")
}
pub fn auth_not_enabled() -> Reply {
    Reply::new(503, "5.5.1", "Error: authentication not enabled")
}
pub fn auth_already() -> Reply {
    Reply::new(503, "5.5.1", "Error: already authenticated")
}
pub fn auth_mechanism() -> Reply {
    Reply::new(504, "5.5.4", "Unsupported authentication mechanism")
}
pub fn auth_aborted() -> Reply {
    Reply::new(501, "5.7.0", "Authentication aborted")
}
pub fn auth_ok() -> Reply {
    Reply::new(235, "2.7.0", "Authentication successful")
}
pub fn auth_failed() -> Reply {
    Reply::new(535, "5.7.8", "Error: authentication failed")
}
/// A storage error during login is temporary (SMTP-51).
pub fn auth_temp() -> Reply {
    Reply::new(454, "4.7.0", "Temporary authentication failure")
}
pub fn auth_too_many() -> Reply {
    Reply::new(421, "4.7.0", "Too many authentication failures")
}
pub fn bad_sequence() -> Reply {
    Reply::new(503, "5.5.1", "Error: bad sequence of commands")
}
pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.2", "Error: command not recognized")
}
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2", "Error: line too long")
}
pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Syntax: {usage}"))
}
pub fn bad_sender_syntax() -> Reply {
    Reply::new(501, "5.1.7", "Bad sender address syntax")
}
pub fn bad_rcpt_syntax() -> Reply {
    Reply::new(501, "5.1.3", "Bad recipient address syntax")
}
pub fn too_many_errors() -> Reply {
    Reply::new(421, "4.7.0", "Too many errors")
}
pub fn too_many_commands() -> Reply {
    Reply::new(421, "4.7.0", "Too many commands before AUTH or MAIL")
}
pub fn timeout(domain: &str) -> Reply {
    Reply::new(421, "4.4.2", format!("{domain} Error: timeout exceeded"))
}
pub fn shutting_down() -> Reply {
    Reply::new(421, "4.3.2", "Service shutting down")
}
pub fn account_deleted() -> Reply {
    Reply::new(421, "4.7.0", "Account deleted")
}
pub fn not_owned(addr: &str, login: &str) -> Reply {
    Reply::new(553, "5.7.1", format!("<{addr}>: Sender address rejected: not owned by user {login}"))
}
pub fn rate_limited(addr: &str, secs: u64) -> Reply {
    Reply::new(450, "4.7.1", format!(": Too much mail from {addr}, retry in {secs} seconds"))
}
pub fn too_many_rcpts() -> Reply {
    Reply::new(452, "4.5.3", "Error: too many recipients")
}
pub fn relay_denied(addr: &str) -> Reply {
    Reply::new(554, "5.7.1", format!("<{addr}>: Relay access denied"))
}
pub fn user_unknown(addr: &str) -> Reply {
    Reply::new(550, "5.1.1", format!("<{addr}>: Recipient address rejected: User unknown"))
}
pub fn mailbox_full(addr: &str) -> Reply {
    Reply::new(452, "4.2.2", format!("<{addr}>: Mailbox full"))
}
pub fn too_large() -> Reply {
    Reply::new(552, "5.3.4", "Message size exceeds fixed limit")
}
/// The global in-flight budget (issue 31) was spent: the sender retries later.
pub fn over_budget() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system resources, try again later")
}
/// Inbound mail claiming our own domain in From (issue 31): ours leaves only by submission.
pub fn own_domain_from() -> Reply {
    Reply::new(554, "5.7.1", "Mail from this domain is only accepted by submission")
}
pub fn parse_failed(reason: &str) -> Reply {
    Reply::new(500, "", format!("Failed to parse message: {reason}"))
}
/// FLT-32: client input echoed in a reply is one line of printable ASCII, at most 200 chars:
/// line breaks and other controls become a space, other bytes `?`, so no crafted value can end
/// the reply line or add one of its own.
pub fn echo(value: &str) -> String {
    value
        .chars()
        .take(ECHO_MAX)
        .map(|c| {
            if c.is_ascii_control() {
                ' '
            } else if c.is_ascii() {
                c
            } else {
                '?'
            }
        })
        .collect()
}
/// Characters of client input a reply echoes at most (FLT-32).
pub const ECHO_MAX: usize = 200;

pub fn bad_from_header(value: &str) -> Reply {
    Reply::new(500, "", format!("Invalid FROM header: {}", echo(value)))
}
pub fn from_mismatch(from: &str, mail_from: &str) -> Reply {
    Reply::new(500, "", format!("Invalid FROM {} for {}", echo(from), echo(mail_from)))
}
/// FLT-31: bare CR in the data (Postfix 3.9 refuses bare line ends with the same class).
pub fn bare_cr() -> Reply {
    Reply::new(550, "5.6.0", "Message contains bare CR, refused")
}
/// The sending account was deleted or blocked while its message was in DATA.
pub fn sender_gone() -> Reply {
    Reply::new(554, "5.7.1", "Sender account no longer exists or is blocked")
}
pub fn encryption_needed() -> Reply {
    Reply::new(523, "", "Encryption Needed: Invalid Unencrypted Mail")
}
pub fn no_dkim() -> Reply {
    Reply::new(554, "5.7.1", "No DKIM signature found")
}
pub fn invalid_dkim() -> Reply {
    Reply::new(554, "5.7.1", "No valid DKIM signature found")
}
pub fn dkim_tempfail() -> Reply {
    Reply::new(451, "4.7.5", "DKIM key lookup failed, try again later")
}
pub fn local_error() -> Reply {
    Reply::new(451, "4.3.0", "Local error")
}

/// The `reason` label of `chatrelay_smtp_messages_total` for a refusal (operations.md section 7).
/// Labels never carry an address (PRIV-15).
pub fn metric_reason(r: &Reply) -> &'static str {
    match (r.code, r.esc) {
        // Labels are the fixed set of operations.md: bare CR is a parse refusal, a sender
        // account gone during DATA a sender refusal.
        (550, "5.6.0") => "parse",
        (554, "5.7.1") if r.text.starts_with("Sender account") => "sender_mismatch",
        (554, "5.7.1") if r.text.contains("Relay access denied") => "relay_denied",
        (554, "5.7.1") if r.text.contains("only accepted by submission") => "own_domain",
        (452, "4.3.1") => "resources",
        (554, _) if r.text.starts_with("No DKIM") => "dkim_missing",
        (554, _) | (451, "4.7.5") => "dkim_invalid",
        (550, _) => "unknown_user",
        (553, _) => "sender_mismatch",
        (450, _) => "rate_limit",
        (452, "4.2.2") => "quota",
        (552, _) => "size",
        (523, _) => "encryption",
        (500, _) if r.text.starts_with("Failed to parse") => "parse",
        (500, _) => "from_mismatch",
        _ => "local_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_texts() {
        assert_eq!(rate_limited("a@b.c", 3).to_string(), "450 4.7.1: Too much mail from a@b.c, retry in 3 seconds");
        assert_eq!(encryption_needed().to_string(), "523 Encryption Needed: Invalid Unencrypted Mail");
        assert_eq!(queued("x").to_string(), "250 2.0.0 OK: queued as x");
        assert_eq!(user_unknown("a@b").wire(), "550 5.1.1 <a@b>: Recipient address rejected: User unknown\r\n");
    }

    #[test]
    fn echoed_values_are_one_short_line() {
        let crafted = "a@b.c\r\n250 2.0.0 OK: queued as X\r\n\u{e9}\0";
        let r = bad_from_header(crafted).wire();
        assert_eq!(r, "500 Invalid FROM header: a@b.c  250 2.0.0 OK: queued as X  ? \r\n");
        assert_eq!(r.matches("\r\n").count(), 1);
        assert_eq!(vrfy("a\rb\u{7f}").wire(), "252 2.0.0 a b \r\n");
        let long = "x".repeat(5000);
        assert_eq!(bad_from_header(&long).text.len(), "Invalid FROM header: ".len() + ECHO_MAX);
    }
}
