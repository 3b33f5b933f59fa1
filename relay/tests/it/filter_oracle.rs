//! An independent, deliberately lenient MIME reader for the differential check of FLT-34. It
//! shares no code with `relay::filter::reading` and models how real clients read mail, in every
//! combination of the choices on which they differ:
//! - a repeated field: the first (Python's `email`, many clients) or the last (mail-parser);
//! - a delimiter: only an exact `--boundary` line, or any line starting with it, or
//!   `--boundary` anywhere in a line (mail-parser);
//! - line ends: LF (CRLF stripped) only, or a lone CR too (Python's universal newlines);
//! - a whitespace-only line in a header section: a fold, or the end of the header.
//!
//! Also included by `fuzz/fuzz_targets/filter_differential.rs` (`#[path]`), so keep it free of
//! test-only crates.

#![allow(dead_code)]

/// The choices a reader makes where RFCs leave room or readers are lenient.
#[derive(Debug, Clone, Copy)]
pub struct Personality {
    pub last_wins: bool,
    pub delim: Delim,
    pub cr_newline: bool,
    pub blank_ws_ends_header: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delim {
    Exact,
    Prefix,
    Anywhere,
}

/// Every combination (3 × 2 × 2 × 2 = 24 readers).
pub fn personalities() -> Vec<Personality> {
    let mut v = Vec::new();
    for last_wins in [false, true] {
        for delim in [Delim::Exact, Delim::Prefix, Delim::Anywhere] {
            for cr_newline in [false, true] {
                for blank_ws_ends_header in [false, true] {
                    v.push(Personality { last_wins, delim, cr_newline, blank_ws_ends_header });
                }
            }
        }
    }
    v
}

/// What a reader shows: the top-level type, the From field's address, and for a multipart its
/// direct parts as (type, decoded body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub mime_type: String,
    pub from: Option<String>,
    pub parts: Vec<(String, Vec<u8>)>,
}

/// (start, end of content, start of next line).
fn split_lines(data: &[u8], p: Personality) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut start = 0;
    while i < data.len() {
        match data[i] {
            b'\n' => {
                let end = if i > start && data[i - 1] == b'\r' { i - 1 } else { i };
                out.push((start, end, i + 1));
                start = i + 1;
            }
            b'\r' if p.cr_newline && data.get(i + 1) != Some(&b'\n') => {
                out.push((start, i, i + 1));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < data.len() {
        out.push((start, data.len(), data.len()));
    }
    out
}

struct Head {
    fields: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str, p: Personality) -> Option<&str> {
        let mut it = self.fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        if p.last_wins { it.next_back() } else { it.next() }
    }
}

/// Header fields and the offset of the body.
fn read_head(data: &[u8], p: Personality) -> (Head, usize) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut body = data.len();
    for (s, e, n) in split_lines(data, p) {
        let line = &data[s..e];
        let blank = line.iter().all(|c| *c == b' ' || *c == b'\t');
        if line.is_empty() || (blank && p.blank_ws_ends_header) {
            body = n;
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(last) = fields.last_mut() {
                last.1.push_str(&String::from_utf8_lossy(line));
            }
            continue;
        }
        if let Some(c) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..c]).trim().to_string();
            fields.push((name, String::from_utf8_lossy(&line[c + 1..]).to_string()));
        }
    }
    for f in &mut fields {
        f.1 = f.1.trim().to_string();
    }
    (Head { fields }, body)
}

/// Lenient Content-Type: comments dropped, parameters split on `;` outside quotes.
fn parse_ct(v: &str, p: Personality) -> (String, Vec<(String, String)>) {
    let mut clean = String::new();
    let (mut depth, mut q) = (0usize, false);
    for c in v.chars() {
        match c {
            '"' if depth == 0 => {
                q = !q;
                clean.push(c)
            }
            '(' if !q => depth += 1,
            ')' if !q && depth > 0 => depth -= 1,
            _ if depth == 0 => clean.push(c),
            _ => {}
        }
    }
    let mut pieces = Vec::new();
    let (mut cur, mut q) = (String::new(), false);
    for c in clean.chars() {
        if c == '"' {
            q = !q;
        }
        if c == ';' && !q {
            pieces.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    pieces.push(cur);
    let ty = pieces[0].trim().to_ascii_lowercase().replace(' ', "");
    let mut params: Vec<(String, String)> = Vec::new();
    for piece in &pieces[1..] {
        let Some((a, val)) = piece.split_once('=') else { continue };
        let a = a.trim().to_ascii_lowercase();
        let val = val.trim();
        let val = match val.strip_prefix('"') {
            Some(inner) => {
                let mut out = String::new();
                let mut esc = false;
                for c in inner.chars() {
                    if esc {
                        out.push(c);
                        esc = false;
                    } else if c == '\\' {
                        esc = true;
                    } else if c == '"' {
                        break;
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            None => val.to_string(),
        };
        if p.last_wins {
            params.retain(|(x, _)| *x != a);
            params.push((a, val));
        } else if !params.iter().any(|(x, _)| *x == a) {
            params.push((a, val));
        }
    }
    (ty, params)
}

fn decode(body: &[u8], cte: Option<&str>) -> Vec<u8> {
    match cte.map(|c| c.trim().to_ascii_lowercase()).as_deref() {
        Some("base64") => {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
            for &c in body {
                if c == b'=' {
                    break;
                }
                let Some(v) = A.iter().position(|&x| x == c) else { continue };
                acc = (acc << 6) | v as u32;
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                    acc &= (1 << bits) - 1;
                }
            }
            out
        }
        Some("quoted-printable") => {
            let mut out = Vec::new();
            let text = body;
            let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
            let trailing_newline = text.ends_with(b"\n");
            if trailing_newline {
                lines.pop();
            }
            let n = lines.len();
            for (k, raw) in lines.into_iter().enumerate() {
                let mut l = raw.strip_suffix(b"\r").unwrap_or(raw);
                while let [rest @ .., b' ' | b'\t'] = l {
                    l = rest;
                }
                let mut soft = false;
                let mut i = 0;
                while i < l.len() {
                    if l[i] == b'=' && i + 1 == l.len() {
                        soft = true;
                        break;
                    }
                    if l[i] == b'=' && i + 3 <= l.len() {
                        let h = std::str::from_utf8(&l[i + 1..i + 3]).ok();
                        if let Some(v) = h.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                            out.push(v);
                            i += 3;
                            continue;
                        }
                    }
                    out.push(l[i]);
                    i += 1;
                }
                if !soft && (k + 1 < n || trailing_newline) {
                    out.extend_from_slice(b"\r\n");
                }
            }
            out
        }
        _ => body.to_vec(),
    }
}

/// The direct parts of a multipart body as raw byte slices.
fn parts<'a>(body: &'a [u8], boundary: &str, p: Personality) -> Vec<&'a [u8]> {
    let dash = format!("--{boundary}");
    let dash = dash.as_bytes();
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    let mut prev_eol_at = 0usize;
    for (s, e, n) in split_lines(body, p) {
        let line = &body[s..e];
        let at = match p.delim {
            Delim::Exact => {
                let rest = line.strip_prefix(dash);
                rest.filter(|r| {
                    let r = r.strip_prefix(b"--").unwrap_or(r);
                    r.iter().all(|c| *c == b' ' || *c == b'\t')
                })
                .map(|_| 0)
            }
            Delim::Prefix => line.starts_with(dash).then_some(0),
            Delim::Anywhere => line.windows(dash.len().max(1)).position(|w| w == dash),
        };
        if let Some(at) = at {
            let close = line[at + dash.len()..].starts_with(b"--");
            if let Some(st) = open.take() {
                let end = if at == 0 { prev_eol_at } else { s + at };
                out.push(&body[st..end.max(st)]);
            }
            if close {
                return out;
            }
            open = Some(n);
        }
        prev_eol_at = e;
    }
    if let Some(st) = open {
        out.push(&body[st..]);
    }
    out
}

fn address(v: &str) -> String {
    match (v.rfind('<'), v.rfind('>')) {
        (Some(l), Some(g)) if l < g => v[l + 1..g].trim().to_ascii_lowercase(),
        _ => v.trim().to_ascii_lowercase(),
    }
}

/// Read `data` as one personality would.
pub fn read(data: &[u8], p: Personality) -> Seen {
    let (head, at) = read_head(data, p);
    let (mime_type, params) =
        head.get("Content-Type", p).map(|v| parse_ct(v, p)).unwrap_or(("text/plain".into(), vec![]));
    let from = head.get("From", p).map(address);
    let mut seen = Seen { mime_type: mime_type.clone(), from, parts: Vec::new() };
    if mime_type.starts_with("multipart/") {
        let boundary = params.iter().find(|(a, _)| a == "boundary").map(|(_, v)| v.clone()).unwrap_or_default();
        if boundary.is_empty() {
            return seen;
        }
        for part in parts(&data[at..], &boundary, p) {
            let (ph, pat) = read_head(part, p);
            let ty = ph.get("Content-Type", p).map(|v| parse_ct(v, p).0).unwrap_or_else(|| "text/plain".into());
            let body = decode(&part[pat.min(part.len())..], ph.get("Content-Transfer-Encoding", p));
            seen.parts.push((ty, body));
        }
    }
    seen
}

/// What the filter's strict reading shows, in the oracle's terms.
fn strict_seen(data: &[u8]) -> Option<Seen> {
    use relay::filter::reading;
    let r = reading::read(data).ok()?;
    let root = r.tree.as_ref().ok()?;
    let mime_type = root.ctype.as_ref().map(|c| format!("{}/{}", c.ty, c.sub)).unwrap_or_else(|| "text/plain".into());
    // The From check's reading: the strict field rule, then a valid address.
    let from = reading::from_field(&r.top)
        .ok()
        .and_then(|(a, _)| relay::address::Address::parse(&a).ok())
        .map(|a| a.as_str().to_string());
    let parts = root
        .parts
        .iter()
        .map(|p| {
            let ty = p.ctype.as_ref().map(|c| format!("{}/{}", c.ty, c.sub)).unwrap_or_else(|| "text/plain".into());
            (ty, p.decoded().map(|d| d.into_owned()).unwrap_or_default())
        })
        .collect();
    Some(Seen { mime_type, from, parts })
}

/// mail-parser's reading (what the IMAP side serves), for the judged shapes.
fn mail_parser_seen(data: &[u8]) -> Option<Seen> {
    use mail_parser::MimeHeaders;
    let msg = mail_parser::MessageParser::default().parse(data)?;
    let ty = |ct: Option<&mail_parser::ContentType<'_>>| {
        ct.map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")).to_ascii_lowercase())
            .unwrap_or_else(|| "text/plain".into())
    };
    let root = msg.root_part();
    let from = msg.from().and_then(|a| a.first()).and_then(|a| a.address()).map(|a| a.to_ascii_lowercase());
    let parts = root
        .sub_parts()
        .map(|ids| {
            ids.iter().filter_map(|&id| msg.part(id)).map(|p| (ty(p.content_type()), p.contents().to_vec())).collect()
        })
        .unwrap_or_default();
    Some(Seen { mime_type: ty(root.content_type()), from, parts })
}

/// FLT-34: when the filter accepts `data` as encrypted or as a Secure-Join request, every
/// personality of the lenient reader and mail-parser see the same top-level type, the same
/// From address and the same parts with the same types and decoded bodies. `Err` says who
/// disagreed.
pub fn differential(data: &[u8]) -> Result<bool, String> {
    use relay::filter::{self, Envelope, Exception, Variant, Verdict};
    let rcpts = vec!["bob@chat.test".to_string()];
    let env = Envelope { mail_from: "alice@chat.test", rcpts: &rcpts };
    let mut judged = false;
    for v in [Variant::Outgoing, Variant::Incoming] {
        let verdict = filter::check_bytes(data, v, &env);
        if !matches!(verdict, Verdict::Encrypted | Verdict::Exception(Exception::SecureJoin)) {
            continue;
        }
        judged = true;
        let strict = strict_seen(data).ok_or("accepted without a strict reading")?;
        let text = |s: &Seen| {
            let mut s = s.clone();
            for (t, b) in &mut s.parts {
                // Text bodies are compared as trimmed text (mail-parser converts charsets).
                if t.starts_with("text/") {
                    *b = String::from_utf8_lossy(b).trim().as_bytes().to_vec();
                }
            }
            s
        };
        // A From that the strict rule cannot read is refused by the From check (SMTP-32) before
        // the filter; only a From it reads must read the same everywhere.
        let from_too = |mut s: Seen| {
            if strict.from.is_none() {
                s.from = None;
            }
            s
        };
        for p in personalities() {
            let seen = from_too(read(data, p));
            if text(&seen) != text(&strict) {
                return Err(format!("{verdict:?} but reader {p:?} sees {seen:?}, filter read {strict:?}"));
            }
        }
        let mp = from_too(mail_parser_seen(data).ok_or("mail-parser does not parse")?);
        if text(&mp) != text(&strict) {
            return Err(format!("{verdict:?} but mail-parser sees {mp:?}, filter read {strict:?}"));
        }
    }
    Ok(judged)
}
