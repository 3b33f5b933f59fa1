//! ASCII armor of the PGP/MIME payload (FLT-9..FLT-13): BEGIN/END lines, armor headers per
//! variant, the optional CRC24 line, strict standard base64 with padding.

use base64::prelude::{BASE64_STANDARD, Engine as _};

use super::Variant;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

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
    let mut lines: Vec<&[u8]> = body.split(|&c| c == b'\n').map(strip_cr).collect();
    // The last element is what followed the final LF before END: empty when well formed.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    // Armor headers: lines before the first empty line, when they look like headers.
    let mut start = 0;
    if lines.first().is_some_and(|l| is_header(l)) {
        let blank = lines.iter().position(|l| l.is_empty()).ok_or(ArmorError::Base64)?;
        for l in &lines[..blank] {
            if !is_header(l) {
                return Err(ArmorError::Base64);
            }
            if variant == Variant::Outgoing && l.len() >= 8 && l[..8].eq_ignore_ascii_case(b"version:") {
                return Err(ArmorError::VersionHeader);
            }
        }
        start = blank + 1;
    } else if lines.first().is_some_and(|l| l.is_empty()) {
        start = 1;
    }
    let mut data = &lines[start..];
    // FLT-12: an optional CRC24 line `=XXXX` as the last line.
    if let [rest @ .., last] = data
        && last.len() == 5
        && last[0] == b'='
    {
        data = rest;
    }
    let mut b64 = Vec::with_capacity(body.len());
    for l in data {
        // Lines normally hold no CR (split on LF, trailing CR stripped): copy them whole, and
        // filter byte by byte only a line with a stray CR (the per-byte path was 13% of P3').
        if l.contains(&b'\r') {
            b64.extend(l.iter().filter(|&&c| c != b'\r'));
        } else {
            b64.extend_from_slice(l);
        }
    }
    BASE64_STANDARD.decode(&b64).map_err(|_| ArmorError::Base64)
}

#[cfg(test)]
mod tests {
    use super::*;

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
