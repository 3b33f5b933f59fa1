//! The only cleartext that passes (FLT-21..FLT-26): a Secure-Join request (both variants), a
//! self-sent Autocrypt Setup Message (outgoing) and a mail-system bounce (incoming). Each check
//! is exact; anything extra means no exception.

use mail_parser::Message;

use super::mime::{is_type, root_children};
use super::{Envelope, Exception, Variant};

fn header<'m>(msg: &'m Message<'_>, name: &'static str) -> Option<&'m str> {
    msg.header_raw(name).map(str::trim)
}

/// FLT-21.
fn secure_join(msg: &Message<'_>) -> bool {
    if !matches!(header(msg, "Secure-Join"), Some("vc-request" | "vg-request")) {
        return false;
    }
    if !msg.root_part().is_multipart() {
        return false;
    }
    let Some(children) = root_children(msg) else {
        return false;
    };
    let [part] = children.as_slice() else {
        return false;
    };
    if part.is_multipart() || !is_type(part, "text", "plain") {
        return false;
    }
    let body = String::from_utf8_lossy(part.contents()).trim().to_lowercase();
    body == "secure-join: vc-request" || body == "secure-join: vg-request"
}

/// FLT-23: exactly one recipient, the sender itself; subject checked before SMTP-45 rewrites it.
fn autocrypt_setup(msg: &Message<'_>, env: &Envelope<'_>) -> bool {
    let [rcpt] = env.rcpts else { return false };
    rcpt.eq_ignore_ascii_case(env.mail_from)
        && !env.mail_from.is_empty()
        && header(msg, "Subject") == Some("Autocrypt Setup Message")
        && is_type(msg.root_part(), "multipart", "mixed")
}

/// FLT-24.
fn bounce(msg: &Message<'_>) -> bool {
    let auto = header(msg, "Auto-Submitted").is_some_and(|v| !v.is_empty());
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .is_some_and(|a| a.to_lowercase().starts_with("mailer-daemon@"));
    auto && from && is_type(msg.root_part(), "multipart", "report")
}

pub fn find(msg: &Message<'_>, variant: Variant, env: &Envelope<'_>) -> Option<Exception> {
    if secure_join(msg) {
        return Some(Exception::SecureJoin);
    }
    match variant {
        Variant::Outgoing if autocrypt_setup(msg, env) => Some(Exception::AutocryptSetup),
        Variant::Incoming if bounce(msg) => Some(Exception::Bounce),
        _ => None,
    }
}
