//! The encryption-only filter (filter.md): decides whether a message counts as OpenPGP-encrypted
//! or is one of the few cleartext exceptions. Pure functions over bytes; no keys, no decryption.
//!
//! In: the parsed message, the variant (outgoing = submission, incoming = port 25 and
//! `/mxdeliv`) and the envelope. Out: a `Verdict`. Callers reply
//! `523 Encryption Needed: Invalid Unencrypted Mail` (FLT-3) to `Verdict::Refused`; the
//! per-account cleartext permission (FLT-25) is applied by the caller, which knows the accounts.
//! Order: the one strict reading (FLT-28..31, `reading`), MIME shape (FLT-5..8), armor
//! (FLT-9..13), packet walk (FLT-14..20), then exceptions. Every judgement reads the message
//! through `reading` only: a message two readers could read differently is refused there.

pub mod armor;
pub mod exceptions;
pub mod mime;
pub mod packets;
pub mod reading;

use reading::{Entity, ReadError, Reading};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Submission (587, 465, 443/smtp).
    Outgoing,
    /// MX ingress (25) and `/mxdeliv`.
    Incoming,
}

/// What the exceptions need from the SMTP envelope.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub mail_from: &'a str,
    pub rcpts: &'a [String],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    SecureJoin,
    AutocryptSetup,
    Bounce,
}

/// Why a message is not encrypted (log and metric detail only; the reply is always 523).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("ambiguous or malformed: {0}")]
    Reading(#[from] ReadError),
    #[error(transparent)]
    Shape(#[from] mime::ShapeError),
    #[error(transparent)]
    Armor(#[from] armor::ArmorError),
    #[error(transparent)]
    Packets(#[from] packets::WalkError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Encrypted,
    Exception(Exception),
    Refused(Refusal),
}

impl Verdict {
    pub fn accepted(self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}

/// The structural encryption rule alone (sections 2 to 4).
pub fn encrypted(root: &Entity<'_>, variant: Variant) -> Result<(), Refusal> {
    let payload = mime::pgp_payload(root)?;
    let packets = armor::dearmor(&payload, variant)?;
    packets::walk(&packets)?;
    Ok(())
}

/// The full filter on a strictly read message: an ambiguous reading is refused before any
/// judgement.
pub fn check(msg: &Reading<'_>, variant: Variant, env: &Envelope<'_>) -> Verdict {
    let root = match &msg.tree {
        Ok(root) => root,
        Err(e) => return Verdict::Refused(Refusal::Reading(*e)),
    };
    match encrypted(root, variant) {
        Ok(()) => Verdict::Encrypted,
        Err(r) => match exceptions::find(root, variant, env) {
            Some(e) => Verdict::Exception(e),
            None => Verdict::Refused(r),
        },
    }
}

/// Read then check; a message without a readable top-level header is refused.
pub fn check_bytes(bytes: &[u8], variant: Variant, env: &Envelope<'_>) -> Verdict {
    match reading::read(bytes) {
        Ok(msg) => check(&msg, variant, env),
        Err(e) => Verdict::Refused(Refusal::Reading(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bounce as Postfix writes it (the chatmail reference's MTA): From with a comment,
    /// 8bit on the multipart, a boundary with `.` and `/`, three parts. Incoming only.
    #[test]
    fn postfix_bounce_is_the_bounce_exception() {
        let b = "3F2A81C0B2.1764000000/mx.remote.test";
        let msg = format!(
            "Date: Wed, 25 Nov 2026 12:00:00 +0000 (UTC)\r\nFrom: MAILER-DAEMON@mx.remote.test (Mail Delivery System)\r\n\
             Subject: Undelivered Mail Returned to Sender\r\nTo: bob@chat.test\r\nAuto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{b}\"\r\n\
             Content-Transfer-Encoding: 8bit\r\nMessage-Id: <20261125120000.3F2A81C0B2@mx.remote.test>\r\n\r\n\
             This is a MIME-encapsulated message.\r\n\r\n--{b}\r\nContent-Description: Notification\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
             This is the mail system at host mx.remote.test.\r\n\r\n--{b}\r\nContent-Description: Delivery report\r\n\
             Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.remote.test\r\n\
             X-Postfix-Queue-ID: 3F2A81C0B2\r\n\r\nFinal-Recipient: rfc822; bob@chat.test\r\nAction: failed\r\n\
             Status: 5.1.1\r\n\r\n--{b}\r\nContent-Description: Undelivered Message Headers\r\n\
             Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\nFrom: bob@chat.test\r\n\
             Content-Type: multipart/encrypted; boundary=\"x\"\r\n\r\n--{b}--\r\n"
        );
        let rcpts = vec!["bob@chat.test".to_string()];
        let env = Envelope { mail_from: "", rcpts: &rcpts };
        assert_eq!(check_bytes(msg.as_bytes(), Variant::Incoming, &env), Verdict::Exception(Exception::Bounce));
        assert!(!check_bytes(msg.as_bytes(), Variant::Outgoing, &env).accepted());
        let two = msg.replacen("From:", "From: victim@chat.test\r\nFrom:", 1);
        assert!(!check_bytes(two.as_bytes(), Variant::Incoming, &env).accepted(), "one From only");
    }

    /// FLT-20 for the whole filter: random bytes and mutated MIME never panic.
    #[test]
    fn random_messages_never_panic() {
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let base = b"Content-Type: multipart/encrypted; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nwV4D\r\n-----END PGP MESSAGE-----\r\n--b--\r\n";
        let rcpts = vec!["a@b.c".to_string()];
        let env = Envelope { mail_from: "a@b.c", rcpts: &rcpts };
        for round in 0..3000 {
            let mut d = base.to_vec();
            for _ in 0..(next() % 6 + 1) {
                let i = (next() as usize) % d.len();
                d[i] = next() as u8;
            }
            if round % 3 == 0 {
                d.truncate((next() as usize) % d.len());
            }
            for v in [Variant::Outgoing, Variant::Incoming] {
                let _ = check_bytes(&d, v, &env);
            }
        }
    }
}
