//! Just enough MIME structure for FETCH: header/body split, header fields, part tree with byte
//! ranges into the stored message, BODY/BODYSTRUCTURE and ENVELOPE text (IMAP-12). Sections are
//! always cut from the exact stored bytes.

use std::ops::Range;

/// A quoted string, or a literal when the value cannot be quoted (8-bit, CR, LF).
pub fn nstring(v: Option<&[u8]>) -> String {
    match v {
        None => "NIL".into(),
        Some(b) if b.iter().all(|c| (0x20..0x7f).contains(c)) => {
            let s = String::from_utf8_lossy(b);
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        }
        Some(b) => format!("{{{}}}\r\n{}", b.len(), String::from_utf8_lossy(b)),
    }
}

fn q(s: &str) -> String {
    nstring(Some(s.as_bytes()))
}

/// Where the header ends and the body starts (after the blank line).
pub fn split(raw: &[u8]) -> usize {
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(b"\r\n") {
            return i + 2;
        }
        if raw[i] == b'\n' {
            return i + 1;
        }
        match raw[i..].iter().position(|b| *b == b'\n') {
            Some(p) => i += p + 1,
            None => return raw.len(),
        }
    }
    raw.len()
}

/// Header fields as (name, raw lines including CRLF) in order.
pub fn fields(header: &[u8]) -> Vec<(String, Range<usize>)> {
    let mut out: Vec<(String, Range<usize>)> = Vec::new();
    let mut i = 0;
    while i < header.len() {
        let end = header[i..].iter().position(|b| *b == b'\n').map(|p| i + p + 1).unwrap_or(header.len());
        let line = &header[i..end];
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(last) = out.last_mut() {
                last.1.end = end;
            }
        } else if let Some(c) = line.iter().position(|b| *b == b':') {
            out.push((String::from_utf8_lossy(&line[..c]).trim().to_ascii_lowercase(), i..end));
        }
        i = end;
    }
    out
}

/// The unfolded value of the first field `name`.
pub fn field_value(header: &[u8], name: &str) -> Option<String> {
    let (_, r) = fields(header).into_iter().find(|(n, _)| n == name)?;
    let raw = &header[r];
    let c = raw.iter().position(|b| *b == b':')?;
    let v = String::from_utf8_lossy(&raw[c + 1..]).replace("\r\n", "").replace('\n', "");
    Some(v.trim().to_string())
}

/// Split `value; a=b; c="d"` into the lowercased value and its parameters.
fn parse_params(v: &str) -> (String, Vec<(String, String)>) {
    let mut it = v.split(';');
    let main = it.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = it
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string()))
        })
        .collect();
    (main, params)
}

/// Parse `type/subtype; a=b; c="d"`.
fn parse_ctype(v: &str) -> (String, String, Vec<(String, String)>) {
    let (main, params) = parse_params(v);
    let (t, st) = main.split_once('/').unwrap_or(("text", "plain"));
    (t.trim().to_string(), st.trim().to_string(), params)
}

pub struct Part {
    pub start: usize,
    pub body: usize,
    pub end: usize,
    pub ctype: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
    pub children: Vec<Part>,
    /// For message/rfc822: the encapsulated message.
    pub inner: Option<Box<Part>>,
}

pub fn parse(raw: &[u8]) -> Part {
    parse_range(raw, 0, raw.len(), 0)
}

fn parse_range(raw: &[u8], start: usize, end: usize, depth: u32) -> Part {
    let body = start + split(&raw[start..end]);
    let header = &raw[start..body];
    let (ctype, subtype, params) = match field_value(header, "content-type") {
        Some(v) => parse_ctype(&v),
        None => ("text".into(), "plain".into(), vec![("charset".into(), "us-ascii".into())]),
    };
    let mut p = Part { start, body, end, ctype, subtype, params, children: Vec::new(), inner: None };
    if depth > 20 {
        return p;
    }
    if p.ctype == "multipart" {
        if let Some(b) = p.params.iter().find(|(k, _)| k == "boundary").map(|(_, v)| format!("--{v}")) {
            p.children = split_multipart(raw, body, end, b.as_bytes())
                .into_iter()
                .map(|(s, e)| parse_range(raw, s, e, depth + 1))
                .collect();
        }
    } else if p.ctype == "message" && p.subtype == "rfc822" {
        p.inner = Some(Box::new(parse_range(raw, body, end, depth + 1)));
    }
    p
}

/// Byte ranges of the parts between boundary lines (excluding the CRLF before a boundary).
fn split_multipart(raw: &[u8], start: usize, end: usize, b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut cur: Option<usize> = None;
    let mut i = start;
    while i < end {
        let le = raw[i..end].iter().position(|c| *c == b'\n').map(|p| i + p + 1).unwrap_or(end);
        let line = &raw[i..le];
        if line.starts_with(b) {
            let rest = &line[b.len()..];
            if let Some(s) = cur {
                let mut e = i;
                if e >= s + 2 && &raw[e - 2..e] == b"\r\n" {
                    e -= 2;
                } else if e > s && raw[e - 1] == b'\n' {
                    e -= 1;
                }
                out.push((s, e.max(s)));
            }
            if rest.starts_with(b"--") {
                return out;
            }
            cur = Some(le);
        }
        i = le;
    }
    if let Some(s) = cur {
        out.push((s, end));
    }
    out
}

impl Part {
    /// Part by IMAP part path (1-based numbers, RFC 3501 6.4.5). `self` is a message (or the
    /// encapsulated message of a message/rfc822 part): its part 1 is itself unless it is
    /// multipart. A path that goes on past a message/rfc822 part continues in the message it
    /// encapsulates, so `BODY[2]` is that whole message and `BODY[2.1]` its first part.
    pub fn find(&self, path: &[u32]) -> Option<&Part> {
        let Some((&n, rest)) = path.split_first() else { return Some(self) };
        let child = if self.ctype == "multipart" {
            self.children.get((n as usize).checked_sub(1)?)?
        } else if n == 1 {
            self
        } else {
            return None;
        };
        if rest.is_empty() {
            return Some(child);
        }
        match &child.inner {
            Some(m) => m.find(rest),
            // Only multiparts have subparts below a part number.
            None if child.ctype == "multipart" => child.find(rest),
            None => None,
        }
    }

    fn params_list(&self) -> String {
        if self.params.is_empty() {
            return "NIL".into();
        }
        let v: Vec<String> =
            self.params.iter().map(|(k, v)| format!("{} {}", q(&k.to_ascii_uppercase()), q(v))).collect();
        format!("({})", v.join(" "))
    }

    /// BODY (`ext = false`) or BODYSTRUCTURE (`ext = true`) of this part.
    pub fn structure(&self, raw: &[u8], ext: bool) -> String {
        if self.ctype == "multipart" {
            let mut s = String::from("(");
            for c in &self.children {
                s.push_str(&c.structure(raw, ext));
            }
            if self.children.is_empty() {
                s.push_str("(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)");
            }
            s.push_str(&format!(" {}", q(&self.subtype.to_ascii_uppercase())));
            if ext {
                s.push_str(&format!(" {} NIL NIL NIL", self.params_list()));
            }
            s.push(')');
            return s;
        }
        let header = &raw[self.start..self.body];
        let id = field_value(header, "content-id");
        let desc = field_value(header, "content-description");
        let enc =
            field_value(header, "content-transfer-encoding").unwrap_or_else(|| "7BIT".into()).to_ascii_uppercase();
        let size = self.end - self.body;
        let mut s = format!(
            "({} {} {} {} {} {} {}",
            q(&self.ctype.to_ascii_uppercase()),
            q(&self.subtype.to_ascii_uppercase()),
            self.params_list(),
            nstring(id.as_deref().map(str::as_bytes)),
            nstring(desc.as_deref().map(str::as_bytes)),
            q(&enc),
            size
        );
        if let Some(inner) = &self.inner {
            let ih = &raw[inner.start..inner.body];
            s.push_str(&format!(" {} {}", envelope(ih), inner.structure(raw, ext)));
            s.push_str(&format!(" {}", lines(&raw[self.body..self.end])));
        } else if self.ctype == "text" {
            s.push_str(&format!(" {}", lines(&raw[self.body..self.end])));
        }
        if ext {
            let disp = field_value(header, "content-disposition").map(|v| {
                let (d, p) = parse_params(&v);
                let params = if p.is_empty() {
                    "NIL".to_string()
                } else {
                    format!(
                        "({})",
                        p.iter()
                            .map(|(k, v)| format!("{} {}", q(&k.to_ascii_uppercase()), q(v)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                };
                format!("({} {params})", q(&d.to_ascii_uppercase()))
            });
            s.push_str(&format!(" NIL {} NIL NIL", disp.unwrap_or_else(|| "NIL".into())));
        }
        s.push(')');
        s
    }
}

fn lines(b: &[u8]) -> usize {
    b.iter().filter(|c| **c == b'\n').count()
}

fn addr_one(addr: &mail_parser::Addr<'_>) -> String {
    let email = addr.address.as_deref().unwrap_or("");
    let (mbox, host) = email.rsplit_once('@').unwrap_or((email, ""));
    format!(
        "({} NIL {} {})",
        nstring(addr.name.as_deref().map(str::as_bytes)),
        q(mbox),
        if host.is_empty() { "NIL".into() } else { q(host) }
    )
}

/// An address list; a named group keeps its syntax (RFC 3501 7.4.2): a start marker with the
/// group name as mailbox and NIL host, its members, then an end marker `(NIL NIL NIL NIL)`.
fn addr_list(a: Option<&mail_parser::Address<'_>>) -> String {
    let Some(a) = a else { return "NIL".into() };
    let mut out = Vec::new();
    match a {
        mail_parser::Address::List(list) => out.extend(list.iter().map(addr_one)),
        mail_parser::Address::Group(groups) => {
            for g in groups {
                match g.name.as_deref() {
                    Some(name) => {
                        out.push(format!("(NIL NIL {} NIL)", nstring(Some(name.as_bytes()))));
                        out.extend(g.addresses.iter().map(addr_one));
                        out.push("(NIL NIL NIL NIL)".into());
                    }
                    None => out.extend(g.addresses.iter().map(addr_one)),
                }
            }
        }
    }
    if out.is_empty() { "NIL".into() } else { format!("({})", out.join("")) }
}

/// ENVELOPE of a header block (RFC 3501 7.4.2).
pub fn envelope(header: &[u8]) -> String {
    let raw_nstring = |name: &str| nstring(field_value(header, name).as_deref().map(str::as_bytes));
    let parsed = mail_parser::MessageParser::default().parse_headers(header);
    let (from, sender, reply_to, to, cc, bcc) = match &parsed {
        Some(m) => {
            let from = addr_list(m.from());
            let sender = m.sender().map(|a| addr_list(Some(a))).unwrap_or_else(|| from.clone());
            let reply_to = m.reply_to().map(|a| addr_list(Some(a))).unwrap_or_else(|| from.clone());
            (from, sender, reply_to, addr_list(m.to()), addr_list(m.cc()), addr_list(m.bcc()))
        }
        None => ("NIL".into(), "NIL".into(), "NIL".into(), "NIL".into(), "NIL".into(), "NIL".into()),
    };
    format!(
        "({} {} {from} {sender} {reply_to} {to} {cc} {bcc} {} {})",
        raw_nstring("date"),
        raw_nstring("subject"),
        raw_nstring("in-reply-to"),
        raw_nstring("message-id")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIECES: &[&str] = &[
        "Content-Type: multipart/mixed; boundary=\"b\"\r\n",
        "Content-Type: message/rfc822\r\n",
        "Content-Type: text/plain\r\n",
        "\r\n",
        "\n",
        "--b\r\n",
        "--b--\r\n",
        "--b",
        "From: A <a@b>\r\n",
        "Subject: =?utf-8?q?x?=\r\n",
        " folded\r\n",
        "body\r\n",
        "\u{e4}\u{ff}",
        ":",
        "Content-Disposition: attachment; filename=\"x\r\n",
    ];

    /// Arbitrary MIME-ish input never panics and every range stays inside the message.
    #[test]
    fn no_panic_on_random_structure() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..3000 {
            let mut raw = Vec::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 24) as usize;
            for i in 0..n {
                let k = ((seed >> (i % 50)) as usize + i * 7) % PIECES.len();
                raw.extend_from_slice(PIECES[k].as_bytes());
            }
            let p = parse(&raw);
            let _ = p.structure(&raw, true);
            let _ = p.structure(&raw, false);
            let _ = envelope(&raw[..split(&raw)]);
            for path in [&[1u32][..], &[1, 1], &[2], &[1, 2, 1]] {
                if let Some(x) = p.find(path) {
                    assert!(x.start <= x.body && x.body <= x.end && x.end <= raw.len());
                }
            }
        }
    }
}
