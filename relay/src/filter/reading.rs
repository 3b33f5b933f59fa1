//! The one strict reading of a message (filter.md section 2a, FLT-28..FLT-31). Every judgement
//! (the From check, the exceptions, the encryption check, header cleanup) reads the message
//! through this module, so what is judged is one structure that every RFC reader agrees on.
//! Anything two readers could read differently is an error here, never resolved: duplicate
//! fields or parameters (first-wins and last-wins readers disagree), delimiter-like lines
//! (line-prefix and exact-line readers disagree), a boundary inside a line (substring readers),
//! bare CR (CR-as-newline readers), whitespace-only header lines, comments in Content-Type,
//! RFC 2231 boundary forms, parts without a header/body separator, NUL.
//!
//! Line ends are LF or CRLF (the SMTP path stores CRLF only; fixtures and `/mxdeliv` may carry
//! bare LF in bodies). Pure functions, no allocation proportional to the input beyond the list
//! of fields and parts (and a decoded body, on request).

use std::borrow::Cow;

use base64::prelude::{BASE64_STANDARD, Engine as _};

/// Nesting of multiparts deeper than this is refused (real mail the filter passes has depth 1).
pub const MAX_DEPTH: usize = 8;

/// Why the strict reading refuses a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("empty message")]
    Empty,
    #[error("no header section")]
    NoHeader,
    #[error("bare CR")]
    BareCr,
    #[error("NUL byte")]
    Nul,
    #[error("malformed header line")]
    HeaderLine,
    #[error("control character in a header")]
    HeaderByte,
    #[error("non-ASCII value in a field the filter reads")]
    NotAscii,
    #[error("header field given more than once")]
    Repeated,
    #[error("not exactly one From field")]
    FromCount,
    #[error("missing MIME-Version or not 1.0")]
    MimeVersion,
    #[error("malformed Content-Type")]
    ContentType,
    #[error("parameter given more than once")]
    Param,
    #[error("invalid boundary")]
    Boundary,
    #[error("delimiter-like line or boundary inside a line")]
    Delimiter,
    #[error("multipart without close delimiter")]
    Unclosed,
    #[error("part without header/body separator")]
    PartHead,
    #[error("multipart nested too deeply")]
    Depth,
    #[error("unknown or malformed transfer encoding")]
    Encoding,
}

/// True when `bytes` holds a CR not followed by LF (FLT-31).
pub fn has_bare_cr(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\r', bytes).any(|i| bytes.get(i + 1) != Some(&b'\n'))
}

/// One line: content without its line end, and the offset after the line end.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    start: usize,
    text: &'a [u8],
    next: usize,
}

fn line_at(data: &[u8], start: usize) -> Line<'_> {
    let rest = &data[start..];
    match memchr::memchr(b'\n', rest) {
        Some(lf) => {
            let text = &rest[..lf];
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            Line { start, text, next: start + lf + 1 }
        }
        None => Line { start, text: rest, next: data.len() },
    }
}

fn lines(data: &[u8]) -> impl Iterator<Item = Line<'_>> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        (pos < data.len()).then(|| {
            let l = line_at(data, pos);
            pos = l.next;
            l
        })
    })
}

/// One header field: its name and its raw value (after the colon, folds included).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// The unfolded value (CR and LF removed, RFC 5322 section 2.2.3), trimmed.
    pub fn value(&self) -> String {
        let v: Vec<u8> = self.raw.iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect();
        String::from_utf8_lossy(&v).trim().to_string()
    }
    /// The unfolded value when it is all ASCII (fields the filter judges must be).
    pub fn ascii(&self) -> Result<String, ReadError> {
        if self.raw.is_ascii() { Ok(self.value()) } else { Err(ReadError::NotAscii) }
    }
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// A header section: its fields in order.
#[derive(Debug, Clone, Default)]
pub struct Header<'a> {
    pub fields: Vec<Field<'a>>,
}

impl<'a> Header<'a> {
    pub fn count(&self, name: &str) -> usize {
        self.fields.iter().filter(|f| f.is(name)).count()
    }
    /// The field when it occurs exactly once (occurrence limits are checked by `read`).
    pub fn one(&self, name: &str) -> Option<&Field<'a>> {
        let mut it = self.fields.iter().filter(|f| f.is(name));
        match (it.next(), it.next()) {
            (Some(f), None) => Some(f),
            _ => None,
        }
    }
}

/// Read a header section at the start of `data` (FLT-28). Returns the header and the offset
/// of the body, or None for the body when no empty line ends the section.
pub fn header<'a>(data: &'a [u8]) -> Result<(Header<'a>, Option<usize>), ReadError> {
    let mut h = Header::default();
    // The field being read: (name start, colon, end after its last line).
    let mut cur: Option<(usize, usize, usize)> = None;
    let finish = |h: &mut Header<'a>, c: Option<(usize, usize, usize)>| {
        if let Some((s, colon, e)) = c {
            h.fields.push(Field { name: &data[s..colon], raw: &data[colon + 1..strip_eol(data, e)] });
        }
    };
    let mut body_at = None;
    for l in lines(data) {
        if l.text.is_empty() {
            body_at = Some(l.next);
            break;
        }
        // Controls other than HTAB (NUL, bare CR, ESC...) make a line readers disagree on.
        if l.text.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(ReadError::HeaderByte);
        }
        if matches!(l.text[0], b' ' | b'\t') {
            // A continuation line needs a field before it and some content (a whitespace-only
            // line is the header end for some readers and a fold for others).
            let Some(c) = cur.as_mut() else { return Err(ReadError::HeaderLine) };
            if l.text.iter().all(|&b| b == b' ' || b == b'\t') {
                return Err(ReadError::HeaderLine);
            }
            c.2 = l.next;
            continue;
        }
        let colon = memchr::memchr(b':', l.text).ok_or(ReadError::HeaderLine)?;
        if colon == 0 || !l.text[..colon].iter().all(|&b| (0x21..=0x7e).contains(&b)) {
            return Err(ReadError::HeaderLine);
        }
        finish(&mut h, cur.take());
        cur = Some((l.start, l.start + colon, l.next));
    }
    finish(&mut h, cur.take());
    Ok((h, body_at))
}

/// `end` minus the line end just before it.
fn strip_eol(data: &[u8], end: usize) -> usize {
    let mut e = end;
    if e > 0 && data[e - 1] == b'\n' {
        e -= 1;
        if e > 0 && data[e - 1] == b'\r' {
            e -= 1;
        }
    }
    e
}

/// A parsed `Content-Type` (RFC 2045 section 5.1), type and subtype lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub ty: String,
    pub sub: String,
    /// (lowercased attribute, value) pairs; each attribute once.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(a, _)| a == name).map(|(_, v)| v.as_str())
    }
}

fn is_token(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// Strict Content-Type: `type/subtype *(; attr=value)`, value a token or a quoted string,
/// no comments, no whitespace around `/` and `=`, each parameter (by its RFC 2231 base name)
/// once, `boundary` only in its plain form.
pub fn content_type(value: &str) -> Result<ContentType, ReadError> {
    let s = value.as_bytes();
    let mut i = 0;
    let ws = |i: &mut usize| {
        while *i < s.len() && matches!(s[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> Result<String, ReadError> {
        let start = *i;
        while *i < s.len() && is_token(s[*i]) {
            *i += 1;
        }
        if *i == start {
            return Err(ReadError::ContentType);
        }
        Ok(String::from_utf8_lossy(&s[start..*i]).to_ascii_lowercase())
    };
    ws(&mut i);
    let ty = token(&mut i)?;
    if s.get(i) != Some(&b'/') {
        return Err(ReadError::ContentType);
    }
    i += 1;
    let sub = token(&mut i)?;
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        ws(&mut i);
        if i == s.len() {
            break;
        }
        if s[i] != b';' {
            return Err(ReadError::ContentType);
        }
        i += 1;
        ws(&mut i);
        if i == s.len() {
            break; // a trailing `;` is common and harmless
        }
        let attr = token(&mut i)?;
        if s.get(i) != Some(&b'=') {
            return Err(ReadError::ContentType);
        }
        i += 1;
        let val = if s.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match s.get(i) {
                    None => return Err(ReadError::ContentType),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        // Escapes in a boundary are read differently by readers; refused there.
                        if attr == "boundary" {
                            return Err(ReadError::Boundary);
                        }
                        let c = *s.get(i + 1).ok_or(ReadError::ContentType)?;
                        v.push(c);
                        i += 2;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&v).into_owned()
        } else {
            let start = i;
            while i < s.len() && is_token(s[i]) {
                i += 1;
            }
            if i == start {
                return Err(ReadError::ContentType);
            }
            String::from_utf8_lossy(&s[start..i]).into_owned()
        };
        let base = attr.split('*').next().unwrap_or("").to_string();
        if base == "boundary" && attr != base {
            return Err(ReadError::Boundary);
        }
        if params.iter().any(|(a, _)| a.split('*').next() == Some(base.as_str())) {
            return Err(ReadError::Param);
        }
        params.push((attr, val));
    }
    Ok(ContentType { ty, sub, params })
}

/// RFC 2046 section 5.1.1: 1 to 70 of bchars, not ending in a space.
fn valid_boundary(b: &str) -> bool {
    let ok = |c: u8| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c);
    !b.is_empty() && b.len() <= 70 && !b.ends_with(' ') && b.bytes().all(ok)
}

/// Content-Transfer-Encoding of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cte {
    Identity,
    Base64,
    QuotedPrintable,
}

fn cte(h: &Header<'_>) -> Result<Cte, ReadError> {
    let Some(f) = h.one("Content-Transfer-Encoding") else { return Ok(Cte::Identity) };
    let v = f.ascii()?.to_ascii_lowercase();
    match v.as_str() {
        "7bit" | "8bit" | "binary" => Ok(Cte::Identity),
        "base64" => Ok(Cte::Base64),
        "quoted-printable" => Ok(Cte::QuotedPrintable),
        _ => Err(ReadError::Encoding),
    }
}

/// One MIME entity of the strict reading.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    pub header: Header<'a>,
    /// None when the entity has no Content-Type (the default, text/plain).
    pub ctype: Option<ContentType>,
    pub cte: Cte,
    /// The encoded body (for a multipart: preamble, parts and epilogue).
    pub body: &'a [u8],
    /// The subparts of a multipart, in order.
    pub parts: Vec<Entity<'a>>,
}

impl Entity<'_> {
    pub fn is_type(&self, ty: &str, sub: &str) -> bool {
        self.ctype.as_ref().is_some_and(|c| c.ty == ty && c.sub == sub)
    }
    pub fn is_multipart(&self) -> bool {
        self.ctype.as_ref().is_some_and(|c| c.ty == "multipart")
    }
    /// The body with its transfer encoding removed (strict: a malformed encoding is an error).
    pub fn decoded(&self) -> Result<Cow<'_, [u8]>, ReadError> {
        match self.cte {
            Cte::Identity => Ok(Cow::Borrowed(self.body)),
            Cte::Base64 => decode_base64(self.body).map(Cow::Owned),
            Cte::QuotedPrintable => decode_qp(self.body).map(Cow::Owned),
        }
    }
}

fn decode_base64(body: &[u8]) -> Result<Vec<u8>, ReadError> {
    let clean: Vec<u8> = body.iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect();
    BASE64_STANDARD.decode(&clean).map_err(|_| ReadError::Encoding)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn decode_qp(body: &[u8]) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::with_capacity(body.len());
    let mut ls = lines(body).peekable();
    while let Some(l) = ls.next() {
        // Trailing whitespace is transport padding (RFC 2045 section 6.7 rule 3).
        let t = l.text.trim_ascii_end();
        let mut i = 0;
        let mut soft = false;
        while i < t.len() {
            if t[i] == b'=' {
                if i + 1 == t.len() {
                    soft = true;
                    break;
                }
                let (h, lo) = (t.get(i + 1).and_then(|&c| hex(c)), t.get(i + 2).and_then(|&c| hex(c)));
                let (Some(h), Some(lo)) = (h, lo) else { return Err(ReadError::Encoding) };
                out.push(h << 4 | lo);
                i += 3;
            } else {
                out.push(t[i]);
                i += 1;
            }
        }
        let had_eol = l.next > l.start + l.text.len();
        if !soft && had_eol && (ls.peek().is_some() || l.next == body.len()) {
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(out)
}

/// A strictly read message: its top-level header (always well formed) and the whole MIME tree,
/// or why the tree is ambiguous.
#[derive(Debug, Clone)]
pub struct Reading<'a> {
    pub top: Header<'a>,
    /// Offset of the top-level body (the message length when there is no body).
    pub body_at: usize,
    pub tree: Result<Entity<'a>, ReadError>,
}

/// Top-level fields limited to one (RFC 5322 section 3.6), besides From (exactly one, checked
/// with the From rule) and the fields the exceptions read (FLT-29).
const ONCE_TOP: &[&str] = &[
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Secure-Join",
    "Auto-Submitted",
];
/// MIME fields limited to one per entity (FLT-29).
const ONCE_MIME: &[&str] = &["MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-Disposition"];

/// Read a message. `Err` only for a bare CR or when there is no usable top-level header
/// section (empty, no header, a malformed top-level header line or control byte): then not
/// even the From field can be read with certainty. Every other ambiguity is in `tree`.
pub fn read(bytes: &[u8]) -> Result<Reading<'_>, ReadError> {
    if bytes.is_empty() {
        return Err(ReadError::Empty);
    }
    // FLT-31: no reading at all of data with a bare CR (readers split lines differently).
    if has_bare_cr(bytes) {
        return Err(ReadError::BareCr);
    }
    let (top, body_at) = header(bytes)?;
    if top.fields.is_empty() {
        return Err(ReadError::NoHeader);
    }
    let body_at = body_at.unwrap_or(bytes.len());
    let tree = tree(bytes, &top, body_at);
    Ok(Reading { top, body_at, tree })
}

fn tree<'a>(bytes: &'a [u8], top: &Header<'a>, body_at: usize) -> Result<Entity<'a>, ReadError> {
    if memchr::memchr(0, bytes).is_some() {
        return Err(ReadError::Nul);
    }
    // The From check refuses this first with its own reply; the filter judges alone too.
    if top.count("From") != 1 {
        return Err(ReadError::FromCount);
    }
    if ONCE_TOP.iter().any(|n| top.count(n) > 1) {
        return Err(ReadError::Repeated);
    }
    // A reader that ignores Content-Type without MIME-Version shows the raw body.
    if top.count("Content-Type") > 0 {
        let mv = top.one("MIME-Version").ok_or(ReadError::MimeVersion)?.ascii()?;
        // `1.0`, optionally with the comment some MUAs add (`1.0 (Mac OS X Mail ...)`).
        if mv != "1.0" && !mv.starts_with("1.0 (") {
            return Err(ReadError::MimeVersion);
        }
    }
    entity(top.clone(), &bytes[body_at..], 0)
}

fn entity<'a>(head: Header<'a>, body: &'a [u8], depth: usize) -> Result<Entity<'a>, ReadError> {
    if ONCE_MIME.iter().any(|n| head.count(n) > 1) {
        return Err(ReadError::Repeated);
    }
    let ctype = match head.one("Content-Type") {
        Some(f) => Some(content_type(&f.ascii()?)?),
        None => None,
    };
    let cte = cte(&head)?;
    let mut parts = Vec::new();
    if let Some(ct) = ctype.as_ref().filter(|c| c.ty == "multipart") {
        if depth >= MAX_DEPTH {
            return Err(ReadError::Depth);
        }
        if cte != Cte::Identity {
            return Err(ReadError::Encoding);
        }
        let boundary = ct.param("boundary").ok_or(ReadError::Boundary)?;
        if !valid_boundary(boundary) {
            return Err(ReadError::Boundary);
        }
        for p in split_parts(body, boundary.as_bytes())? {
            let (h, at) = header(p)?;
            let at = at.ok_or(ReadError::PartHead)?;
            parts.push(entity(h, &p[at..], depth + 1)?);
        }
    }
    Ok(Entity { header: head, ctype, cte, body, parts })
}

/// The parts of a multipart body (FLT-30): delimiter lines are exactly `--boundary` or
/// `--boundary--` plus optional SP/HTAB; any other line starting with `--boundary`, any line
/// containing the boundary string, a delimiter after the close delimiter or a missing close
/// delimiter is an error. A part excludes the line end before the next delimiter.
pub fn split_parts<'a>(body: &'a [u8], boundary: &[u8]) -> Result<Vec<&'a [u8]>, ReadError> {
    let finder = memchr::memmem::Finder::new(boundary);
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut closed = false;
    for l in lines(body) {
        let dash = l.text.strip_prefix(b"--").and_then(|r| r.strip_prefix(boundary));
        let Some(rest) = dash else {
            if finder.find(l.text).is_some() {
                return Err(ReadError::Delimiter);
            }
            continue;
        };
        let close = match rest.strip_prefix(b"--") {
            Some(r) if r.iter().all(|&b| b == b' ' || b == b'\t') => true,
            _ if rest.iter().all(|&b| b == b' ' || b == b'\t') => false,
            _ => return Err(ReadError::Delimiter),
        };
        if closed {
            return Err(ReadError::Delimiter);
        }
        if let Some(start) = open.take() {
            let end = strip_eol(body, l.start).max(start);
            parts.push(&body[start..end]);
        }
        if close {
            closed = true;
        } else {
            open = Some(l.next);
        }
    }
    if !closed {
        return Err(ReadError::Unclosed);
    }
    Ok(parts)
}

/// Why the `From:` field does not give one address (SMTP-32, FLT-29).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FromError {
    #[error("no From field or more than one")]
    Count,
    #[error("From is not exactly one plain address")]
    Syntax,
}

/// The address of the single `From:` field, strictly: `addr-spec` or `[display-name] <addr-spec>`
/// where the display name is a quoted string or words without specials. Comments, groups,
/// several addresses and non-ASCII are refused (readers differ on them). Returns the bare
/// address text (not yet validated as an address) and the field's unfolded value.
pub fn from_field(top: &Header<'_>) -> Result<(String, String), (FromError, String)> {
    let all: Vec<_> = top.fields.iter().filter(|f| f.is("From")).collect();
    let [f] = all.as_slice() else {
        return Err((FromError::Count, all.first().map(|f| f.value()).unwrap_or_default()));
    };
    let value = f.value();
    let bad = || (FromError::Syntax, value.clone());
    if !f.raw.is_ascii() {
        return Err(bad());
    }
    // One trailing comment of plain words is allowed: Postfix writes bounces as
    // `MAILER-DAEMON@host (Mail Delivery System)`. Nothing address-like may hide in it.
    let mut text = value.as_str();
    if let Some(rest) = text.strip_suffix(')') {
        let open = rest.rfind('(').ok_or_else(bad)?;
        let comment = &rest[open + 1..];
        if !comment.bytes().all(|c| c.is_ascii_alphanumeric() || b" -_.'".contains(&c)) {
            return Err(bad());
        }
        text = rest[..open].trim_end();
    }
    let v = text.as_bytes();
    // Positions of `<` and `>` outside quoted strings; specials outside quotes are refused.
    let (mut quoted, mut esc) = (false, false);
    let (mut lt, mut gt) = (Vec::new(), Vec::new());
    for (i, &c) in v.iter().enumerate() {
        if quoted {
            match (esc, c) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => quoted = true,
            b'<' => lt.push(i),
            b'>' => gt.push(i),
            b'(' | b')' | b',' | b';' | b'\\' => return Err(bad()),
            _ => {}
        }
    }
    if quoted {
        return Err(bad());
    }
    let addr = match (lt.as_slice(), gt.as_slice()) {
        ([], []) => {
            if v.iter().any(|&c| c == b'"' || c == b' ' || c == b'\t') {
                return Err(bad());
            }
            text
        }
        ([l], [g]) if *g == v.len() - 1 && l < g => {
            let display = &v[..*l];
            // Outside quotes the display name holds no address syntax.
            let mut q = false;
            for &c in display {
                if c == b'"' {
                    q = !q;
                } else if !q && matches!(c, b'@' | b':' | b'[' | b']') {
                    return Err(bad());
                }
            }
            &text[l + 1..*g]
        }
        _ => return Err(bad()),
    };
    if addr.is_empty() || addr.bytes().any(|c| c == b' ' || c == b'\t' || c == b'"') {
        return Err(bad());
    }
    Ok((addr.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENC: &str = "From: <a@x.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n boundary=\"BND\"\r\n\r\n--BND\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--BND\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nwV4D\r\n-----END PGP MESSAGE-----\r\n\r\n--BND--\r\n";

    fn tree_of(s: &str) -> Result<Entity<'_>, ReadError> {
        read(s.as_bytes()).and_then(|r| r.tree)
    }

    #[test]
    fn reads_the_encrypted_shape() {
        let t = tree_of(ENC).expect("reads");
        assert!(t.is_type("multipart", "encrypted"));
        assert_eq!(t.parts.len(), 2);
        assert_eq!(t.parts[0].body, b"Version: 1\r\n");
        assert!(t.parts[1].body.ends_with(b"-----END PGP MESSAGE-----\r\n"));
    }

    #[test]
    fn header_lines() {
        let cases: &[(&str, Result<usize, ReadError>)] = &[
            ("A: 1\r\nB: 2\r\n\r\nbody", Ok(2)),
            ("A: 1\r\n folded\r\n\tmore\r\n\r\n", Ok(1)),
            ("A: 1\nB: 2\n\nbody", Ok(2)),
            (" A: 1\r\n\r\n", Err(ReadError::HeaderLine)),
            ("A: 1\r\nno colon\r\n\r\n", Err(ReadError::HeaderLine)),
            ("A : 1\r\n\r\n", Err(ReadError::HeaderLine)),
            (": 1\r\n\r\n", Err(ReadError::HeaderLine)),
            ("A: 1\r\n \r\nB: 2\r\n\r\n", Err(ReadError::HeaderLine)),
            ("A: 1\rB: 2\r\n\r\n", Err(ReadError::HeaderByte)),
            ("A: 1\0\r\n\r\n", Err(ReadError::HeaderByte)),
            ("A\u{e9}: 1\r\n\r\n", Err(ReadError::HeaderLine)),
            ("A: caf\u{e9}\r\n\r\n", Ok(1)),
        ];
        for (input, want) in cases {
            let got = header(input.as_bytes()).map(|(h, _)| h.fields.len());
            assert_eq!(&got, want, "{input:?}");
        }
        let (h, at) = header(b"A: 1\r\n b\r\nC:x\r\n\r\nbody").expect("ok");
        assert_eq!(h.fields[0].value(), "1 b");
        assert_eq!(h.fields[1].value(), "x");
        assert_eq!(at, Some(17));
    }

    #[test]
    fn content_types() {
        let ok =
            content_type("multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"a b\";").expect("ok");
        assert_eq!((ok.ty.as_str(), ok.sub.as_str(), ok.param("boundary")), ("multipart", "encrypted", Some("a b")));
        assert_eq!(content_type("Text/PLAIN").map(|c| c.sub), Ok("plain".into()));
        for bad in [
            "text/plain (comment)",
            "text / plain",
            "text/plain; charset = utf-8",
            "multipart/mixed; boundary=a; boundary=b",
            "multipart/mixed; boundary=a; BOUNDARY=b",
            "multipart/mixed; boundary*=utf-8''a",
            "multipart/mixed; boundary*0=a",
            "multipart/mixed; name=a; name*=utf-8''b",
            "multipart/mixed; boundary=\"a\\\"b\"",
            "multipart/mixed; boundary=\"open",
            "=?utf-8?q?multipart/encrypted?=",
            "multipart/encrypted, text/plain",
            "text/plain;; x=y",
            "",
        ] {
            assert!(content_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn occurrence_limits() {
        let dup_ct = ENC.replacen("MIME-Version", "Content-Type: text/plain\r\nMIME-Version", 1);
        assert_eq!(tree_of(&dup_ct).err(), Some(ReadError::Repeated));
        let dup_subject = ENC.replacen("From:", "Subject: a\r\nSubject: b\r\nFrom:", 1);
        assert_eq!(tree_of(&dup_subject).err(), Some(ReadError::Repeated));
        let dup_in_part = ENC.replacen(
            "Content-Type: application/pgp-encrypted",
            "Content-Type: text/plain\r\nContent-Type: application/pgp-encrypted",
            1,
        );
        assert_eq!(tree_of(&dup_in_part).err(), Some(ReadError::Repeated));
        let dup_cte = ENC.replacen(
            "Content-Type: application/octet-stream",
            "Content-Transfer-Encoding: 7bit\r\nContent-Transfer-Encoding: base64\r\nContent-Type: application/octet-stream",
            1,
        );
        assert_eq!(tree_of(&dup_cte).err(), Some(ReadError::Repeated));
        let commented = ENC.replacen("MIME-Version: 1.0", "MIME-Version: 1.0 (Mac OS X Mail 16.0)", 1);
        assert!(tree_of(&commented).is_ok());
        let v2 = ENC.replacen("MIME-Version: 1.0", "MIME-Version: 2.0", 1);
        assert_eq!(tree_of(&v2).err(), Some(ReadError::MimeVersion));
        let no_mv = ENC.replacen("MIME-Version: 1.0\r\n", "", 1);
        assert_eq!(tree_of(&no_mv).err(), Some(ReadError::MimeVersion));
        let two_sj = ENC.replacen("From:", "Secure-Join: vc-request\r\nSecure-Join: vg-request\r\nFrom:", 1);
        assert_eq!(tree_of(&two_sj).err(), Some(ReadError::Repeated));
    }

    #[test]
    fn delimiters() {
        let b = b"BND";
        let parts = |s: &str| split_parts(s.as_bytes(), b).map(|p| p.len());
        assert_eq!(parts("pre\r\n--BND\r\nA: 1\r\n\r\nx\r\n--BND \t\r\n\r\ny\r\n--BND--\r\nepi\r\n"), Ok(2));
        assert_eq!(parts("--BND\nA: 1\n\nx\n--BND--"), Ok(1));
        for bad in [
            "--BND\r\nA: 1\r\n\r\n-----END PGP MESSAGE-------BND--\r\n--BND--\r\n",
            "--BND\r\nA: 1\r\n\r\nx --BND\r\n--BND--\r\n",
            "--BND\r\nA: 1\r\n\r\nx\r\n--BNDx\r\n--BND--\r\n",
            "--BND\r\nA: 1\r\n\r\nx\r\n--BND--x\r\n",
            "--BND\r\nA: 1\r\n\r\nx\r\n--BND--\r\n--BND\r\n",
            "--BND\r\nA: 1\r\n\r\nx\r\n",
            "--BND\r\nA: BND\r\n\r\nx\r\n--BND--\r\n",
        ] {
            assert!(split_parts(bad.as_bytes(), b).is_err(), "{bad:?}");
        }
        let split = split_parts(b"--BND\r\nA: 1\r\n\r\nx\r\n\r\n--BND--", b).expect("ok");
        assert_eq!(split, vec![&b"A: 1\r\n\r\nx\r\n"[..]]);
    }

    #[test]
    fn attacks_on_the_tree() {
        // Quoted boundary with an escape, a boundary given twice, a part without separator.
        let escaped = ENC.replacen("boundary=\"BND\"", "boundary=\"B\\ND\"", 1);
        assert_eq!(tree_of(&escaped).err(), Some(ReadError::Boundary));
        let twice = ENC.replacen("boundary=\"BND\"", "boundary=\"BND\"; boundary=\"X\"", 1);
        assert_eq!(tree_of(&twice).err(), Some(ReadError::Param));
        let nosep = ENC.replacen(
            "Content-Type: application/pgp-encrypted\r\n\r\n",
            "Content-Type: application/pgp-encrypted\r\n",
            1,
        );
        assert!(tree_of(&nosep).is_err());
        let bare_cr = ENC.replacen("\r\n\r\nVersion: 1", "\r\n\r\nVersion: 1\rX", 1);
        assert_eq!(tree_of(&bare_cr).err(), Some(ReadError::BareCr));
        assert_eq!(read(b"From: a@x.org\r\n\r\nx\ry").err(), Some(ReadError::BareCr));
        let nul = ENC.replacen("wV4D", "wV\x004D", 1);
        assert_eq!(tree_of(&nul).err(), Some(ReadError::Nul));
        let deep = {
            let mut s = String::from(
                "From: a@x.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n",
            );
            for d in 1..=MAX_DEPTH + 1 {
                s.push_str(&format!("--b{}\r\nContent-Type: multipart/mixed; boundary=b{d}\r\n\r\n", d - 1));
            }
            s
        };
        assert!(tree_of(&deep).is_err());
        assert_eq!(read(b"").err(), Some(ReadError::Empty));
        assert_eq!(read(b"\r\nbody").err(), Some(ReadError::NoHeader));
    }

    #[test]
    fn transfer_encodings() {
        let e =
            |cte: Cte, body: &'static [u8]| Entity { header: Header::default(), ctype: None, cte, body, parts: vec![] };
        assert_eq!(e(Cte::Base64, b"VmVy\r\nc2lvbjogMQ==\r\n").decoded().as_deref(), Ok(&b"Version: 1"[..]));
        assert!(e(Cte::Base64, b"VmVy c2lvbjogMQ==").decoded().is_err());
        assert_eq!(e(Cte::QuotedPrintable, b"a=3Db=\r\nc  \r\nd").decoded().as_deref(), Ok(&b"a=bc\r\nd"[..]));
        assert!(e(Cte::QuotedPrintable, b"a=ZZ").decoded().is_err());
    }

    #[test]
    fn from_fields() {
        let from = |s: &str| {
            let msg = format!("{s}\r\n\r\n");
            let (h, _) = header(msg.as_bytes()).expect("header");
            from_field(&h).map(|(a, _)| a).map_err(|(e, _)| e)
        };
        assert_eq!(from("From: a@x.org"), Ok("a@x.org".into()));
        assert_eq!(from("From: <a@x.org>"), Ok("a@x.org".into()));
        assert_eq!(from("From: \"A, <b@y>\" <a@x.org>"), Ok("a@x.org".into()));
        assert_eq!(from("From: =?utf-8?q?A?= <a@x.org>"), Ok("a@x.org".into()));
        assert_eq!(from("From: Alice\r\n <a@x.org>"), Ok("a@x.org".into()));
        assert_eq!(from("From: <a@[192.0.2.1]>"), Ok("a@[192.0.2.1]".into()));
        assert_eq!(from("From: MAILER-DAEMON@x.org (Mail Delivery System)"), Ok("MAILER-DAEMON@x.org".into()));
        assert_eq!(from("To: a@x.org"), Err(FromError::Count));
        assert_eq!(from("From: a@x.org\r\nFrom: b@x.org"), Err(FromError::Count));
        for bad in [
            "From: a@x.org, b@x.org",
            "From: a@x.org (b@x.org)",
            "From: a@x.org (b) (c)",
            "From: (c) a@x.org",
            "From: a@x.org (b <c@d.e>)",
            "From: <a@x.org> <b@x.org>",
            "From: b@x.org <a@x.org>",
            "From: g: a@x.org;",
            "From: <a@x.org",
            "From:",
            "From: <>",
            "From: Name <>",
            "From: \"open <a@x.org>",
            "From: a@x.org b",
            "From: <a@x.org>x",
            "From: caf\u{e9} <a@x.org>",
        ] {
            assert_eq!(from(bad), Err(FromError::Syntax), "{bad:?}");
        }
    }

    #[test]
    fn bare_cr() {
        assert!(!has_bare_cr(b"a\r\nb\nc"));
        assert!(has_bare_cr(b"a\rb"));
        assert!(has_bare_cr(b"a\r"));
        assert!(has_bare_cr(b"a\r\r\n"));
    }
}
