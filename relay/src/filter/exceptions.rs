//! The only cleartext that passes (FLT-21..FLT-26): a Secure-Join request (both variants), a
//! self-sent Autocrypt Setup Message (outgoing) and a mail-system bounce (incoming). Each check
//! is exact, on the strict reading (the fields it reads occur once, FLT-29); anything extra
//! means no exception.

use super::reading::{self, Entity};
use super::{Envelope, Exception, Variant};

/// The value of a top-level field that occurs once and is ASCII.
fn header(root: &Entity<'_>, name: &str) -> Option<String> {
    root.header.one(name).and_then(|f| f.ascii().ok())
}

/// FLT-21.
fn secure_join(root: &Entity<'_>) -> bool {
    if !matches!(header(root, "Secure-Join").as_deref(), Some("vc-request" | "vg-request")) {
        return false;
    }
    if !root.is_multipart() {
        return false;
    }
    let [part] = root.parts.as_slice() else {
        return false;
    };
    if part.is_multipart() || !part.is_type("text", "plain") {
        return false;
    }
    let Ok(body) = part.decoded() else { return false };
    let body = String::from_utf8_lossy(&body).trim().to_lowercase();
    body == "secure-join: vc-request" || body == "secure-join: vg-request"
}

/// FLT-23: exactly one recipient, the sender itself; subject checked before SMTP-45 rewrites it.
fn autocrypt_setup(root: &Entity<'_>, env: &Envelope<'_>) -> bool {
    let [rcpt] = env.rcpts else { return false };
    rcpt.eq_ignore_ascii_case(env.mail_from)
        && !env.mail_from.is_empty()
        && header(root, "Subject").as_deref() == Some("Autocrypt Setup Message")
        && root.is_type("multipart", "mixed")
}

/// FLT-24: the From address is read with the same strict rule as the From check.
fn bounce(root: &Entity<'_>) -> bool {
    let auto = header(root, "Auto-Submitted").is_some_and(|v| !v.is_empty());
    let from = reading::from_field(&root.header).is_ok_and(|(a, _)| a.to_lowercase().starts_with("mailer-daemon@"));
    auto && from && root.is_type("multipart", "report")
}

pub fn find(root: &Entity<'_>, variant: Variant, env: &Envelope<'_>) -> Option<Exception> {
    if secure_join(root) {
        return Some(Exception::SecureJoin);
    }
    match variant {
        Variant::Outgoing if autocrypt_setup(root, env) => Some(Exception::AutocryptSetup),
        Variant::Incoming if bounce(root) => Some(Exception::Bounce),
        _ => None,
    }
}
