//! Header cleanup on the raw top-level header section (SMTP-45, SMTP-46, SMTP-47); MIME part
//! headers and the body are copied untouched.

/// Top-level headers removed on submission (SMTP-45).
pub const SUBMISSION_DROP: &[&str] = &["Received", "X-Originating-IP", "X-Mailer", "User-Agent"];
/// Top-level headers removed on storing into a local mailbox (SMTP-46).
pub const STORAGE_DROP: &[&str] = &["DKIM-Signature", "Authentication-Results", "Received"];

/// Split into (header section including its final blank line, body), where the filter's
/// strict reading puts the header end (one reading for judging and cleanup, FLT-33).
fn split(msg: &[u8]) -> (&[u8], &[u8]) {
    match crate::filter::reading::header(msg) {
        Ok((_, Some(at))) => return (&msg[..at], &msg[at..]),
        Ok((_, None)) => return (msg, &[]),
        Err(_) => {}
    }
    if msg.starts_with(b"\r\n") {
        return (&msg[..2], &msg[2..]);
    }
    match msg.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&msg[..i + 4], &msg[i + 4..]),
        None => (msg, &[]),
    }
}

/// Each header field with its continuation lines, in order (the blank separator line last).
fn fields(head: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        let end = head[i..].iter().position(|&b| b == b'\n').map_or(head.len(), |p| i + p + 1);
        let cont = matches!(head.get(end), Some(b' ' | b'\t'));
        if !cont {
            out.push(&head[start..end]);
            start = end;
        }
        i = end;
    }
    out
}

fn name_of(field: &[u8]) -> &[u8] {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
    field[..colon].trim_ascii()
}

/// Remove top-level fields named in `drop`; replace every `Subject` value with `[...]` when
/// `rewrite_subject` (SMTP-45: a missing Subject is not added).
pub fn clean(msg: &[u8], drop: &[&str], rewrite_subject: bool) -> Vec<u8> {
    let (mut out, body_at) = clean_head(msg, drop, rewrite_subject);
    out.extend_from_slice(&msg[body_at..]);
    out
}

/// `clean` without copying the body: the cleaned header section (with its blank line) and the
/// offset in `msg` where the body starts. A large message is then stored from its one buffer.
pub fn clean_head(msg: &[u8], drop: &[&str], rewrite_subject: bool) -> (Vec<u8>, usize) {
    let (head, _) = split(msg);
    let mut out = Vec::with_capacity(head.len());
    for f in fields(head) {
        let name = name_of(f);
        if drop.iter().any(|d| d.as_bytes().eq_ignore_ascii_case(name)) && !name.is_empty() {
            continue;
        }
        if rewrite_subject && name.eq_ignore_ascii_case(b"Subject") {
            out.extend_from_slice(b"Subject: [...]\r\n");
            continue;
        }
        out.extend_from_slice(f);
    }
    (out, head.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_only_top_level() {
        let msg = b"Received: from x\r\n\tby y\r\nFrom: a@b.c\r\nSubject: secret\r\n stuff\r\nUser-Agent: DC\r\nx-mailer: m\r\n\r\nReceived: in body\r\nSubject: body\r\n";
        let got = clean(msg, SUBMISSION_DROP, true);
        assert_eq!(got, b"From: a@b.c\r\nSubject: [...]\r\n\r\nReceived: in body\r\nSubject: body\r\n".to_vec());
        let stored = clean(b"DKIM-Signature: v=1;\r\n b=x\r\nTo: z@y\r\n\r\nbody", STORAGE_DROP, false);
        assert_eq!(stored, b"To: z@y\r\n\r\nbody".to_vec());
        assert_eq!(clean(b"To: z@y\r\n\r\nx", SUBMISSION_DROP, true), b"To: z@y\r\n\r\nx".to_vec(), "no Subject added");
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 88172645463325252;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let alpha = b"\r\n :Subject\tReceived";
            let d: Vec<u8> = (0..len).map(|i| alpha[(x as usize >> (i % 50)) % alpha.len()]).collect();
            let _ = clean(&d, SUBMISSION_DROP, true);
        }
    }
}
