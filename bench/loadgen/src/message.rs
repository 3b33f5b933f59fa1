//! Messages: byte for byte the shape of mailbench's `build_message` (PGP/MIME, RFC 3156)
//! around the armored template, with a fresh Message-ID and boundary per message.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// The armored body, CRLF line ends, trimmed like mailbench's `load_template`, and where it
/// came from.
pub struct Template {
    pub armored: String,
    pub source: String,
}

pub fn parse_size(s: &str) -> Result<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>().map(|n| n * mult).with_context(|| format!("bad size {s:?} (use e.g. 4k, 1m)"))
}

/// `--template`, else `<templates dir>/pgp-<size>.asc`, else a synthetic armored body of the
/// same size (said so in `source`; the relay's filter accepts it: PKESK then SEIPD).
pub fn load(template: Option<&Path>, dir: Option<&Path>, size: &str) -> Result<Template> {
    let path: Option<PathBuf> = match template {
        Some(p) => Some(p.to_path_buf()),
        None => dir.map(|d| d.join(format!("pgp-{}.asc", size.to_lowercase()))),
    };
    if let Some(p) = &path
        && (p.exists() || template.is_some())
    {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading template {}", p.display()))?;
        let armored = text.trim().replace("\r\n", "\n").replace('\n', "\r\n");
        if !armored.starts_with("-----BEGIN PGP MESSAGE-----") {
            bail!("{} is not an armored OpenPGP message", p.display());
        }
        return Ok(Template { armored, source: p.display().to_string() });
    }
    let target = parse_size(size)?;
    Ok(Template { armored: synthetic(target), source: format!("synthetic {size} (no template file found)") })
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn seed() -> u64 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (std::process::id() as u64) << 32
}

/// 32 hex digits, unique per process run (like `uuid4().hex`).
pub fn hex128() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let s = seed();
    format!("{:016x}{:016x}", splitmix(s ^ n), splitmix(s.rotate_left(17) ^ n.wrapping_mul(31)))
}

pub fn new_msgid(domain: &str) -> String {
    format!("{}@{domain}", hex128())
}

/// RFC 5322 date in UTC, as Python's `email.utils.formatdate()` writes it.
pub fn rfc5322_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} -0000",
        WD[days.rem_euclid(7) as usize],
        d,
        MON[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// mailbench's `build_message`.
pub fn build(armored: &str, sender: &str, rcpt: &str, msgid: &str) -> Vec<u8> {
    let b = hex128();
    format!(
        "From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: [...]\r\n\
         Date: {date}\r\nMessage-ID: <{msgid}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{b}\"\r\n\r\n\
         --{b}\r\nContent-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n\
         --{b}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n\
         {armored}\r\n\r\n--{b}--\r\n",
        date = rfc5322_now()
    )
    .into_bytes()
}

fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0x00b7_04ce;
    for &b in data {
        crc ^= (b as u32) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4cfb;
            }
        }
    }
    crc & 0x00ff_ffff
}

/// Standard base64 with padding (armor and AUTH PLAIN).
pub(crate) fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let n = (ch[0] as u32) << 16 | (*ch.get(1).unwrap_or(&0) as u32) << 8 | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= ch.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// Armored PKESK (v3, RSA-sized, random) + SEIPD (v1, random) whose whole message is about
/// `target` bytes, for when no gpg-made template is at hand (CI).
pub fn synthetic(target: usize) -> String {
    let bin_len = (target.saturating_sub(900) * 3 / 4).max(600);
    let mut state = seed();
    let mut rnd = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state = splitmix(state);
                state as u8
            })
            .collect()
    };
    let mut pkt = Vec::with_capacity(bin_len + 16);
    // PKESK: version 3, key id, algo 1 (RSA), MPI of 3072 bits.
    let mut pkesk = vec![3u8];
    pkesk.extend(rnd(8));
    pkesk.extend([1u8, 0x0c, 0x00]);
    pkesk.extend(rnd(384));
    pkt.extend([0xc1, 0xc0 + ((pkesk.len() - 192) >> 8) as u8, ((pkesk.len() - 192) & 0xff) as u8]);
    pkt.extend(&pkesk);
    // SEIPD: version 1, then random "ciphertext"; five-octet length.
    let body_len = bin_len.saturating_sub(pkt.len() + 6).max(32);
    pkt.extend([0xd2, 0xff]);
    pkt.extend((body_len as u32).to_be_bytes());
    pkt.push(1);
    pkt.extend(rnd(body_len - 1));
    let mut out = String::from("-----BEGIN PGP MESSAGE-----\r\n\r\n");
    let text = b64(&pkt);
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    let crc = crc24(&pkt).to_be_bytes();
    out.push('=');
    out.push_str(&b64(&crc[1..]));
    out.push_str("\r\n-----END PGP MESSAGE-----");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(parse_size("4k").ok(), Some(4096));
        assert_eq!(parse_size("1m").ok(), Some(1 << 20));
        assert!(parse_size("x").is_err());
        assert_ne!(hex128(), hex128());
        assert_eq!(hex128().len(), 32);
        let s = synthetic(4096);
        let m = build(&s, "a@x", "b@x", "id@x");
        assert!((3500..4700).contains(&m.len()), "{}", m.len());
        assert_eq!(crc24(b""), 0x00b7_04ce);
        let d = rfc5322_now();
        assert!(d.ends_with(" -0000") && d.len() == 31, "{d}");
    }
}
