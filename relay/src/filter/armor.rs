//! ASCII armor of the PGP/MIME payload (FLT-9..FLT-13): BEGIN/END lines, armor headers per
//! variant, the optional CRC24 line, strict standard base64 with padding.

use base64::prelude::{BASE64_STANDARD, Engine as _};

use super::Variant;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";
/// Base64 characters decoded at a time.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArmorError {
    #[error("no BEGIN PGP MESSAGE line")]
    NoBegin,
    #[error("no END PGP MESSAGE line")]
    NoEnd,
    #[error("Version armor header on outgoing mail")]
    VersionHeader,
    #[error("base64 does not decode")]
    Base64,
}

fn trim_crlf_start(mut b: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = b {
        b = rest;
    }
    b
}

fn trim_crlf_end(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = b {
        b = rest;
    }
    b
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// True for an armor header line `Key: value` (the key has no spaces).
fn is_header(line: &[u8]) -> bool {
    match line.iter().position(|&c| c == b':') {
        Some(i) if i > 0 => line[..i].iter().all(|c| c.is_ascii_graphic()) && line.get(i + 1) == Some(&b' '),
        _ => false,
    }
}

/// Decode an armored OpenPGP message into its binary packets.
pub fn dearmor(input: &[u8], variant: Variant) -> Result<Vec<u8>, ArmorError> {
    let body = trim_crlf_start(input);
    let body = body.strip_prefix(BEGIN).ok_or(ArmorError::NoBegin)?;
    let body = body.strip_prefix(b"\r\n").or_else(|| body.strip_prefix(b"\n")).ok_or(ArmorError::NoBegin)?;
    let body = trim_crlf_end(body).strip_suffix(END).ok_or(ArmorError::NoEnd)?;
    // Lines are found with memchr and base64 is decoded in chunks, so a 30 MB message needs no
    // copy of itself beside the decoded packets (issue 11: RSS growth ≤ 2× the message size).
    let mut it = lines(body).peekable();
    let mut data_at = 0;
    // Armor headers: lines before the first empty line, when they look like headers.
    if it.peek().is_some_and(|&(_, _, l)| is_header(l)) {
        // The block ends at the first empty line; without one the armor is malformed.
        let (_, next, _) = lines(body).find(|&(_, _, l)| l.is_empty()).ok_or(ArmorError::Base64)?;
        data_at = next;
        for (_, _, l) in lines(body).take_while(|&(_, _, l)| !l.is_empty()) {
            if !is_header(l) {
                return Err(ArmorError::Base64);
            }
            if variant == Variant::Outgoing && l.len() >= 8 && l[..8].eq_ignore_ascii_case(b"version:") {
                return Err(ArmorError::VersionHeader);
            }
        }
    } else if let Some(&(_, next, l)) = it.peek()
        && l.is_empty()
    {
        data_at = next;
    }
    let mut data = &body[data_at.min(body.len())..];
    // FLT-12: an optional CRC24 line `=XXXX` as the last line.
    if let Some((at, last)) = last_line(data)
        && last.len() == 5
        && last[0] == b'='
    {
        data = &data[..at];
    }
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let mut b64: Vec<u8> = Vec::with_capacity(CHUNK + 128);
    for (_, _, l) in lines(data) {
        // Lines normally hold no CR (split on LF, trailing CR stripped): copy them whole, and
        // filter byte by byte only a line with a stray CR (the per-byte path was 13% of P3').
        if memchr::memchr(b'\r', l).is_some() {
            b64.extend(l.iter().filter(|&&c| c != b'\r'));
        } else {
            b64.extend_from_slice(l);
        }
        if b64.len() >= CHUNK {
            // Whole 4-character groups, always leaving at least one character: padding is only
            // valid in the final group, so `=` in a flushed chunk is an error, as it was before.
            let n = (b64.len() - 1) / 4 * 4;
            if memchr::memchr(b'=', &b64[..n]).is_some() {
                return Err(ArmorError::Base64);
            }
            BASE64_STANDARD.decode_vec(&b64[..n], &mut out).map_err(|_| ArmorError::Base64)?;
            b64.drain(..n);
        }
    }
    BASE64_STANDARD.decode_vec(&b64, &mut out).map_err(|_| ArmorError::Base64)?;
    Ok(out)
}

/// The lines of `text` split on LF with a trailing CR removed, as (start, start of the next
/// line, line). A last element that is empty after the final LF is not a line.
fn lines(text: &[u8]) -> impl Iterator<Item = (usize, usize, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        if pos >= text.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &text[pos..]).map_or(text.len(), |i| pos + i);
        let line = strip_cr(&text[pos..end]);
        if end == text.len() && line.is_empty() {
            return None;
        }
        let start = pos;
        pos = end + 1;
        Some((start, pos, line))
    })
}

/// The last of `lines(text)`, found from the end: (its start, the line).
fn last_line(text: &[u8]) -> Option<(usize, &[u8])> {
    let mut end = text.len();
    let after = memchr::memrchr(b'\n', text);
    if let Some(i) = after
        && strip_cr(&text[i + 1..]).is_empty()
    {
        end = i;
    }
    if end == 0 && after.is_none() {
        return None;
    }
    let start = memchr::memrchr(b'\n', &text[..end]).map_or(0, |i| i + 1);
    Some((start, strip_cr(&text[start..end])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies longer than one decoding chunk decode exactly as a whole; padding in the middle
    /// is still refused.
    #[test]
    fn chunked_decoding_matches_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let b64 = BASE64_STANDARD.encode(&data);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
        let armored = format!(
            "-----BEGIN PGP MESSAGE-----\r\n\r\n{}\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n",
            lines.join("\r\n")
        );
        assert_eq!(dearmor(armored.as_bytes(), Variant::Outgoing), Ok(data.clone()));
        let short = BASE64_STANDARD.encode(&data[..10]); // ends in padding
        let padded_middle = format!("-----BEGIN PGP MESSAGE-----\r\n\r\n{short}\r\n{b64}\r\n-----END PGP MESSAGE-----");
        assert_eq!(dearmor(padded_middle.as_bytes(), Variant::Outgoing), Err(ArmorError::Base64));
    }

    #[test]
    fn table() {
        let ok = "-----BEGIN PGP MESSAGE-----\r\n\r\nwV4D\r\nAAAA\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n";
        assert_eq!(dearmor(ok.as_bytes(), Variant::Outgoing), Ok(vec![0xc1, 0x5e, 0x03, 0, 0, 0]));
        let lf = ok.replace("\r\n", "\n");
        assert!(dearmor(format!("\n\n{lf}\n\n").as_bytes(), Variant::Outgoing).is_ok());
        let no_blank = "-----BEGIN PGP MESSAGE-----\r\nwV4D\r\n-----END PGP MESSAGE-----";
        assert_eq!(dearmor(no_blank.as_bytes(), Variant::Incoming), Ok(vec![0xc1, 0x5e, 0x03]));
        let ver = "-----BEGIN PGP MESSAGE-----\r\nVersion: X 1\r\nComment: hi\r\n\r\nwV4D\r\n-----END PGP MESSAGE-----";
        assert_eq!(dearmor(ver.as_bytes(), Variant::Outgoing), Err(ArmorError::VersionHeader));
        assert!(dearmor(ver.as_bytes(), Variant::Incoming).is_ok());
        let comment = ver.replace("Version: X 1\r\n", "");
        assert!(dearmor(comment.as_bytes(), Variant::Outgoing).is_ok());
        let bad = [
            (
                "text before",
                "x\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nwV4D\r\n-----END PGP MESSAGE-----",
                ArmorError::NoBegin,
            ),
            ("no end", "-----BEGIN PGP MESSAGE-----\r\n\r\nwV4D\r\n", ArmorError::NoEnd),
            ("bad pad", "-----BEGIN PGP MESSAGE-----\r\n\r\nwV4\r\n-----END PGP MESSAGE-----", ArmorError::Base64),
            ("bad char", "-----BEGIN PGP MESSAGE-----\r\n\r\nwV*D\r\n-----END PGP MESSAGE-----", ArmorError::Base64),
            (
                "signature",
                "-----BEGIN PGP SIGNATURE-----\r\n\r\nwV4D\r\n-----END PGP SIGNATURE-----",
                ArmorError::NoBegin,
            ),
        ];
        for (name, input, want) in bad {
            assert_eq!(dearmor(input.as_bytes(), Variant::Incoming), Err(want), "{name}");
        }
    }
}
