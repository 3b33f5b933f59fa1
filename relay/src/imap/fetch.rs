//! FETCH / UID FETCH (IMAP-12, IMAP-27, IMAP-47). `BODY[]` is the stored file, byte for byte;
//! large messages are streamed from it in chunks so memory does not grow with message size.

use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName, Section};
use imap_codec::imap_types::sequence::SequenceSet;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::io::SOFT_FLUSH;
use super::mime;
use super::replies as r;
use super::session::{Reply, Session};
use super::view::flags_string;
use crate::store::{FlagOp, Flags, MessageMeta};

/// Some messages of the set were expunged by another session while this FETCH read them
/// (IMAP-27a, RFC 5530); the rest was sent and the connection stays open.
const NO_EXPUNGE_ISSUED: &str = "NO [EXPUNGEISSUED] Some messages were expunged";
/// Messages up to this size are read whole; larger ones are streamed or read in part.
const IN_MEMORY: u64 = 1024 * 1024;
/// How much of a large message is read to find its header.
const HEADER_PREFIX: usize = 256 * 1024;

pub fn imap_date(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = crate::civil::from_days(days);
    const MON: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "\"{d:02}-{}-{y:04} {:02}:{:02}:{:02} +0000\"",
        MON[(m - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn is_header_only(n: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName as N;
    matches!(
        n,
        N::Envelope
            | N::Rfc822Header
            | N::BodyExt {
                section: Some(
                    Section::Header(None) | Section::HeaderFields(None, _) | Section::HeaderFieldsNot(None, _)
                ),
                ..
            }
    )
}

fn is_whole(n: &MessageDataItemName<'_>) -> bool {
    matches!(n, MessageDataItemName::Rfc822 | MessageDataItemName::BodyExt { section: None, partial: None, .. })
}

fn needs_content(n: &MessageDataItemName<'_>) -> bool {
    use MessageDataItemName as N;
    !matches!(n, N::Uid | N::Flags | N::InternalDate | N::Rfc822Size)
}

fn section_label(s: &Option<Section<'_>>) -> String {
    let path = |p: &imap_codec::imap_types::fetch::Part| {
        p.0.as_ref().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(".")
    };
    let pre = |p: &Option<imap_codec::imap_types::fetch::Part>| {
        p.as_ref().map(|p| format!("{}.", path(p))).unwrap_or_default()
    };
    let names = |l: &[imap_codec::imap_types::core::AString<'_>]| {
        l.iter().map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_uppercase()).collect::<Vec<_>>().join(" ")
    };
    match s {
        None => String::new(),
        Some(Section::Part(p)) => path(p),
        Some(Section::Header(p)) => format!("{}HEADER", pre(p)),
        Some(Section::HeaderFields(p, l)) => format!("{}HEADER.FIELDS ({})", pre(p), names(l.as_ref())),
        Some(Section::HeaderFieldsNot(p, l)) => format!("{}HEADER.FIELDS.NOT ({})", pre(p), names(l.as_ref())),
        Some(Section::Text(p)) => format!("{}TEXT", pre(p)),
        Some(Section::Mime(p)) => format!("{}.MIME", path(p)),
    }
}

/// The bytes of a section, cut from `raw` (whole message or, for header sections, its prefix).
fn section_bytes(raw: &[u8], s: &Option<Section<'_>>) -> Vec<u8> {
    let root = mime::parse(raw);
    let msg_of = |p: &Option<imap_codec::imap_types::fetch::Part>| -> Option<(usize, usize, usize)> {
        let part = match p {
            None => &root,
            Some(p) => {
                let path: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
                let part = root.find(&path)?;
                part.inner.as_deref()?
            }
        };
        Some((part.start, part.body, part.end))
    };
    let filter = |hdr: &[u8], names: &[imap_codec::imap_types::core::AString<'_>], keep: bool| {
        let want: Vec<String> =
            names.iter().map(|a| String::from_utf8_lossy(a.as_ref()).to_ascii_lowercase()).collect();
        let mut out = Vec::new();
        for (name, r) in mime::fields(hdr) {
            if want.contains(&name) == keep {
                out.extend_from_slice(&hdr[r]);
            }
        }
        out.extend_from_slice(b"\r\n");
        out
    };
    match s {
        None => raw.to_vec(),
        Some(Section::Header(p)) => msg_of(p).map(|(a, b, _)| raw[a..b].to_vec()).unwrap_or_default(),
        Some(Section::Text(p)) => msg_of(p).map(|(_, b, e)| raw[b..e].to_vec()).unwrap_or_default(),
        Some(Section::HeaderFields(p, l)) => {
            msg_of(p).map(|(a, b, _)| filter(&raw[a..b], l.as_ref(), true)).unwrap_or_default()
        }
        Some(Section::HeaderFieldsNot(p, l)) => {
            msg_of(p).map(|(a, b, _)| filter(&raw[a..b], l.as_ref(), false)).unwrap_or_default()
        }
        Some(Section::Part(p)) => {
            let path: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
            root.find(&path).map(|x| raw[x.body..x.end].to_vec()).unwrap_or_default()
        }
        Some(Section::Mime(p)) => {
            let path: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
            root.find(&path).map(|x| raw[x.start..x.body].to_vec()).unwrap_or_default()
        }
    }
}

fn literal(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
}

pub async fn fetch(s: &mut Session, set: &SequenceSet, items: MacroOrMessageDataItemNames<'_>, uid: bool) -> Reply {
    let names: Vec<MessageDataItemName<'_>> = match items {
        MacroOrMessageDataItemNames::Macro(m) => {
            m.expand().into_iter().map(imap_codec::imap_types::IntoStatic::into_static).collect()
        }
        MacroOrMessageDataItemNames::MessageDataItemNames(v) => v,
    };
    if names.iter().any(|n| matches!(n, MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. })) {
        return Reply::Done(r::BAD_BINARY.into());
    }
    let Some(acc) = s.account.as_ref().map(|a| a.id) else { return Reply::Done(r::BAD_STATE_AUTH.into()) };
    let Some(sel) = s.sel.as_mut() else { return Reply::Done(r::BAD_STATE_SELECTED.into()) };
    let idx = sel.resolve(set, uid);
    let uids: Vec<u32> = idx.iter().map(|&i| sel.msgs[i].uid).collect();
    let metas = match s.ctx.store.messages_by_uids(sel.id, uids).await {
        Ok(m) => m,
        Err(_) => return Reply::Done(r::NO_TEMP.into()),
    };
    // Non-PEEK body fetches set \Seen (RFC 3501 6.4.5).
    let sets_seen = !sel.read_only
        && names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Text
                    | MessageDataItemName::BodyExt { peek: false, .. }
            )
        });
    let mut seen_now: Vec<u32> = Vec::new();
    if sets_seen {
        let unseen: Vec<u32> = metas.iter().filter(|m| !m.flags.has(Flags::SEEN)).map(|m| m.uid).collect();
        if !unseen.is_empty()
            && let Ok(ch) = s.ctx.store.store_flags(acc, sel.id, unseen, FlagOp::Add, Flags::SEEN, Vec::new()).await
        {
            for m in ch {
                if let Some(i) = sel.index_of(m.uid) {
                    sel.msgs[i].flags = m.flags.0;
                }
                seen_now.push(m.uid);
            }
        }
    }
    let want_flags = names.iter().any(|n| matches!(n, MessageDataItemName::Flags));
    let mut gone = 0usize;
    for m in metas {
        let Some(i) = s.sel.as_ref().and_then(|sel| sel.index_of(m.uid)) else { continue };
        let (flags, kw, recent) = match s.sel.as_ref() {
            Some(sel) => (sel.msgs[i].flags, sel.msgs[i].kw.clone(), sel.msgs[i].recent),
            None => continue,
        };
        match write_one(
            s,
            i + 1,
            &m,
            &names,
            uid,
            flags_string(flags, kw.as_deref(), recent),
            !want_flags && seen_now.contains(&m.uid),
        )
        .await
        {
            Ok(Sent::Yes) => {}
            Ok(Sent::Gone) => gone += 1,
            Err(_) => return Reply::Close,
        }
    }
    if gone > 0 {
        return Reply::Done(NO_EXPUNGE_ISSUED.into());
    }
    Reply::Done(r::OK_FETCH.into())
}

/// How one message's FETCH ended, apart from socket errors (which end the session).
enum Sent {
    Yes,
    /// Its content could no longer be read (expunged by another session, IMAP-27a): left out.
    Gone,
}

/// Everything read from the message before the first byte of its response is written, so a
/// message that vanishes is left out whole instead of breaking the response mid-way. The file
/// stays open: on Unix an expunge elsewhere unlinks it, but this handle still reads it.
async fn open_content(
    s: &Session,
    m: &MessageMeta,
    content: bool,
    header_only: bool,
    stream_whole: bool,
) -> std::io::Result<(Vec<u8>, Option<tokio::fs::File>)> {
    if !content {
        return Ok((Vec::new(), None));
    }
    if m.blob.is_inline() {
        // Small messages are rows in the database: one read, cut to the header if that is all.
        let mut all = s.ctx.store.read_blob(&m.blob).await.map_err(std::io::Error::other)?;
        if header_only {
            all.truncate(mime::split(&all));
        }
        return Ok((all, None));
    }
    let mut f = tokio::fs::File::open(s.ctx.store.blob_path(&m.blob)).await?;
    if !header_only && (m.size <= IN_MEMORY || !stream_whole) {
        let mut all = Vec::with_capacity(m.size.min(IN_MEMORY) as usize);
        f.read_to_end(&mut all).await?;
        return Ok((all, None));
    }
    // Header-only requests (Delta Chat's prefetch) read just the start of the file.
    let mut buf = vec![0u8; HEADER_PREFIX.min(m.size as usize)];
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
        if mime::split(&buf[..n]) < n {
            break;
        }
    }
    buf.truncate(n);
    let end = mime::split(&buf);
    buf.truncate(end);
    Ok((buf, stream_whole.then_some(f)))
}

async fn write_one(
    s: &mut Session,
    seq: usize,
    m: &MessageMeta,
    names: &[MessageDataItemName<'_>],
    uid: bool,
    flags: String,
    add_flags: bool,
) -> std::io::Result<Sent> {
    use MessageDataItemName as N;
    let content = names.iter().any(needs_content);
    let header_only = names.iter().filter(|n| needs_content(n)).all(is_header_only);
    let streamable = names.iter().filter(|n| needs_content(n)).all(|n| is_header_only(n) || is_whole(n));
    let stream_whole = m.size > IN_MEMORY && streamable && !header_only;
    let (raw, mut file) = match open_content(s, m, content, header_only, stream_whole).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(conn = s.info.id, error = %e, "message gone before FETCH read it");
            return Ok(Sent::Gone);
        }
    };
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut streams: Vec<(usize, String)> = Vec::new();
    if uid && !names.iter().any(|n| matches!(n, N::Uid)) {
        parts.push(format!("UID {}", m.uid).into_bytes());
    }
    if add_flags {
        parts.push(format!("FLAGS {flags}").into_bytes());
    }
    for n in names {
        let mut out = Vec::new();
        match n {
            N::Uid => out.extend_from_slice(format!("UID {}", m.uid).as_bytes()),
            N::Flags => out.extend_from_slice(format!("FLAGS {flags}").as_bytes()),
            N::InternalDate => out.extend_from_slice(format!("INTERNALDATE {}", imap_date(m.internal_date)).as_bytes()),
            N::Rfc822Size => out.extend_from_slice(format!("RFC822.SIZE {}", m.size).as_bytes()),
            N::Envelope => {
                out.extend_from_slice(format!("ENVELOPE {}", mime::envelope(&raw[..mime::split(&raw)])).as_bytes())
            }
            N::Body => out.extend_from_slice(format!("BODY {}", mime::parse(&raw).structure(&raw, false)).as_bytes()),
            N::BodyStructure => {
                out.extend_from_slice(format!("BODYSTRUCTURE {}", mime::parse(&raw).structure(&raw, true)).as_bytes())
            }
            N::Rfc822 | N::BodyExt { section: None, partial: None, .. } if stream_whole => {
                let label = if matches!(n, N::Rfc822) { "RFC822".to_string() } else { "BODY[]".to_string() };
                streams.push((parts.len(), label));
                continue;
            }
            N::Rfc822 => {
                out.extend_from_slice(b"RFC822 ");
                literal(&mut out, &raw);
            }
            N::Rfc822Header => {
                out.extend_from_slice(b"RFC822.HEADER ");
                literal(&mut out, &raw[..mime::split(&raw)]);
            }
            N::Rfc822Text => {
                out.extend_from_slice(b"RFC822.TEXT ");
                literal(&mut out, &raw[mime::split(&raw)..]);
            }
            N::BodyExt { section, partial, .. } => {
                let data = section_bytes(&raw, section);
                out.extend_from_slice(format!("BODY[{}]", section_label(section)).as_bytes());
                match partial {
                    Some((origin, count)) => {
                        let a = (*origin as usize).min(data.len());
                        let b = a.saturating_add(count.get() as usize).min(data.len());
                        out.extend_from_slice(format!("<{origin}> ").as_bytes());
                        literal(&mut out, &data[a..b]);
                    }
                    None => {
                        out.push(b' ');
                        literal(&mut out, &data);
                    }
                }
            }
            _ => continue,
        }
        parts.push(out);
    }
    drop(raw);
    s.conn.push(format!("* {seq} FETCH (").as_bytes());
    let mut first = true;
    let mut si = 0;
    for (k, p) in parts.iter().enumerate() {
        while si < streams.len() && streams[si].0 == k {
            sep(s, &mut first);
            stream_file(s, &streams[si].1, file.as_mut(), m.size).await?;
            si += 1;
        }
        sep(s, &mut first);
        s.conn.push(p);
    }
    while si < streams.len() {
        sep(s, &mut first);
        stream_file(s, &streams[si].1, file.as_mut(), m.size).await?;
        si += 1;
    }
    s.conn.push(b")\r\n");
    if s.conn.pending() > SOFT_FLUSH {
        // Mostly message bytes when content was sent (chatmail bodies are armored ciphertext):
        // Huffman-coded under COMPRESS, like a streamed body.
        if content && !header_only {
            s.conn.flush_bulk().await?;
        } else {
            s.conn.flush().await?;
        }
    }
    Ok(Sent::Yes)
}

fn sep(s: &mut Session, first: &mut bool) {
    if !*first {
        s.conn.push(b" ");
    }
    *first = false;
}

/// `label {size}` + the file's bytes, written through in chunks (IMAP-47). The literal's length
/// is promised up front, so a file that ends early or fails to read is padded with spaces:
/// only socket errors are returned (they end the session), never content errors (IMAP-27a).
async fn stream_file(
    s: &mut Session,
    label: &str,
    file: Option<&mut tokio::fs::File>,
    size: u64,
) -> std::io::Result<()> {
    s.conn.push(format!("{label} {{{size}}}\r\n").as_bytes());
    let mut left = size;
    let mut buf = vec![0u8; SOFT_FLUSH];
    let mut file = file;
    if let Some(f) = file.as_mut()
        && f.seek(std::io::SeekFrom::Start(0)).await.is_err()
    {
        file = None;
    }
    while left > 0 {
        let want = left.min(SOFT_FLUSH as u64) as usize;
        let n = match file.as_mut() {
            Some(f) => f.read(&mut buf[..want]).await.unwrap_or(0),
            None => 0,
        };
        if n == 0 {
            buf.fill(b' ');
            while left > 0 {
                let k = left.min(buf.len() as u64) as usize;
                s.conn.push(&buf[..k]);
                left -= k as u64;
                s.conn.flush().await?;
            }
            tracing::warn!(conn = s.info.id, "message file shorter than recorded size or unreadable");
            break;
        }
        s.conn.push(&buf[..n]);
        left -= n as u64;
        s.conn.flush_bulk().await?;
    }
    Ok(())
}
