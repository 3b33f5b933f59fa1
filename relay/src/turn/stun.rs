//! STUN message codec (RFC 8489) with the TURN attributes (RFC 8656) the embedded server uses.
//!
//! In: one UDP datagram. Out: a parsed `Message` that borrows the datagram, or a `StunError`;
//! never a panic on any input. Encoding builds replies with MESSAGE-INTEGRITY (HMAC-SHA1 under
//! the long-term key) and FINGERPRINT.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{KeyInit, Mac};

pub const MAGIC: u32 = 0x2112_A442;
pub const HEADER: usize = 20;

// Methods.
pub const BINDING: u16 = 0x001;
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const SEND: u16 = 0x006;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Classes.
pub const REQUEST: u8 = 0;
pub const INDICATION: u8 = 1;
pub const SUCCESS: u8 = 2;
pub const ERROR: u8 = 3;

// Attributes.
pub const A_MAPPED_ADDRESS: u16 = 0x0001;
pub const A_USERNAME: u16 = 0x0006;
pub const A_MESSAGE_INTEGRITY: u16 = 0x0008;
pub const A_ERROR_CODE: u16 = 0x0009;
pub const A_UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const A_CHANNEL_NUMBER: u16 = 0x000C;
pub const A_LIFETIME: u16 = 0x000D;
pub const A_XOR_PEER_ADDRESS: u16 = 0x0012;
pub const A_DATA: u16 = 0x0013;
pub const A_REALM: u16 = 0x0014;
pub const A_NONCE: u16 = 0x0015;
pub const A_XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const A_REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const A_EVEN_PORT: u16 = 0x0018;
pub const A_REQUESTED_TRANSPORT: u16 = 0x0019;
pub const A_DONT_FRAGMENT: u16 = 0x001A;
pub const A_XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const A_RESERVATION_TOKEN: u16 = 0x0022;
pub const A_SOFTWARE: u16 = 0x8022;
pub const A_FINGERPRINT: u16 = 0x8028;

/// Comprehension-required attributes (< 0x8000) this server understands; any other one in a
/// request is answered with 420 (RFC 8489 §14).
pub const KNOWN_REQUIRED: &[u16] = &[
    A_MAPPED_ADDRESS,
    A_USERNAME,
    A_MESSAGE_INTEGRITY,
    A_ERROR_CODE,
    A_UNKNOWN_ATTRIBUTES,
    A_CHANNEL_NUMBER,
    A_LIFETIME,
    A_XOR_PEER_ADDRESS,
    A_DATA,
    A_REALM,
    A_NONCE,
    A_XOR_RELAYED_ADDRESS,
    A_REQUESTED_ADDRESS_FAMILY,
    A_EVEN_PORT,
    A_REQUESTED_TRANSPORT,
    A_DONT_FRAGMENT,
    A_XOR_MAPPED_ADDRESS,
    A_RESERVATION_TOKEN,
];

const FINGERPRINT_XOR: u32 = 0x5354_554E;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StunError {
    #[error("not a STUN message")]
    NotStun,
    #[error("truncated STUN message")]
    Truncated,
    #[error("bad attribute {0:#06x}")]
    BadAttribute(u16),
}

/// A parsed STUN message borrowing its datagram.
#[derive(Debug)]
pub struct Message<'a> {
    pub method: u16,
    pub class: u8,
    pub txid: [u8; 12],
    raw: &'a [u8],
    /// (type, value offset, value length) in order of appearance.
    attrs: Vec<(u16, usize, usize)>,
}

pub fn encode_type(method: u16, class: u8) -> u16 {
    let m = method & 0x0FFF;
    let c = u16::from(class & 3);
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

fn decode_type(t: u16) -> (u16, u8) {
    let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
    let class = (((t >> 4) & 1) | ((t >> 7) & 2)) as u8;
    (method, class)
}

impl<'a> Message<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<Self, StunError> {
        if raw.len() < HEADER || raw[0] & 0xC0 != 0 {
            return Err(StunError::NotStun);
        }
        let t = u16::from_be_bytes([raw[0], raw[1]]);
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        if u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) != MAGIC || len % 4 != 0 {
            return Err(StunError::NotStun);
        }
        if raw.len() != HEADER + len {
            return Err(StunError::Truncated);
        }
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&raw[8..20]);
        let (method, class) = decode_type(t);
        let mut attrs = Vec::new();
        let mut at = HEADER;
        while at < raw.len() {
            if at + 4 > raw.len() {
                return Err(StunError::Truncated);
            }
            let at_type = u16::from_be_bytes([raw[at], raw[at + 1]]);
            let at_len = usize::from(u16::from_be_bytes([raw[at + 2], raw[at + 3]]));
            let start = at + 4;
            if start + at_len > raw.len() {
                return Err(StunError::BadAttribute(at_type));
            }
            attrs.push((at_type, start, at_len));
            at = start + at_len.div_ceil(4) * 4;
            // At most 64 attributes: a legal request needs far fewer.
            if attrs.len() > 64 {
                return Err(StunError::BadAttribute(at_type));
            }
        }
        Ok(Self { method, class, txid, raw, attrs })
    }

    /// Every attribute as (type, value), in order of appearance.
    pub fn attributes(&self) -> impl Iterator<Item = (u16, &'a [u8])> + '_ {
        let raw = self.raw;
        self.attrs.iter().filter_map(move |&(t, off, len)| raw.get(off..off + len).map(|v| (t, v)))
    }

    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        // Attributes after MESSAGE-INTEGRITY (other than FINGERPRINT) must be ignored.
        let mut after_mi = false;
        for &(at, off, len) in &self.attrs {
            if after_mi && at != A_FINGERPRINT {
                continue;
            }
            if at == t {
                return self.raw.get(off..off + len);
            }
            if at == A_MESSAGE_INTEGRITY {
                after_mi = true;
            }
        }
        None
    }

    pub fn all(&self, t: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        let raw = self.raw;
        let mi = self.attrs.iter().position(|a| a.0 == A_MESSAGE_INTEGRITY).unwrap_or(self.attrs.len());
        self.attrs[..mi].iter().filter(move |a| a.0 == t).filter_map(move |&(_, off, len)| raw.get(off..off + len))
    }

    /// Comprehension-required attributes this server does not know.
    pub fn unknown_required(&self) -> Vec<u16> {
        self.attrs.iter().map(|a| a.0).filter(|t| *t < 0x8000 && !KNOWN_REQUIRED.contains(t)).collect()
    }

    pub fn string(&self, t: u16) -> Option<&'a str> {
        self.get(t).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn u32(&self, t: u16) -> Option<u32> {
        self.get(t).and_then(|v| v.get(..4)).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn xor_addr(&self, t: u16) -> Option<SocketAddr> {
        self.get(t).and_then(|v| decode_xor_addr(v, &self.txid))
    }

    /// Check MESSAGE-INTEGRITY with `key` (RFC 8489 §14.5): the HMAC covers the message up to the
    /// attribute, with the header length counting up to the end of it.
    pub fn integrity_ok(&self, key: &[u8]) -> bool {
        let Some(&(_, off, len)) = self.attrs.iter().find(|a| a.0 == A_MESSAGE_INTEGRITY) else { return false };
        if len != 20 {
            return false;
        }
        let start = off - 4;
        let Ok(fake_len) = u16::try_from(off + len - HEADER) else { return false };
        let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.raw[..2]);
        mac.update(&fake_len.to_be_bytes());
        mac.update(&self.raw[4..start]);
        mac.verify_slice(&self.raw[off..off + len]).is_ok()
    }
}

pub fn decode_xor_addr(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
    match v[1] {
        1 if v.len() == 8 => {
            let x = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port))
        }
        2 if v.len() == 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC.to_be_bytes());
            key[4..].copy_from_slice(txid);
            let mut ip = [0u8; 16];
            for i in 0..16 {
                ip[i] = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

fn encode_xor_addr(addr: SocketAddr, txid: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC >> 16) as u16;
    // A client on a dual-stack socket appears as ::ffff:a.b.c.d; it is an IPv4 client.
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => {
            let mut v = vec![0, 1];
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
            v
        }
        IpAddr::V6(ip) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC.to_be_bytes());
            key[4..].copy_from_slice(txid);
            let mut v = vec![0, 2];
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(ip.octets().iter().zip(key).map(|(a, b)| a ^ b));
            v
        }
    }
}

/// Builds one STUN message.
pub struct Builder {
    buf: Vec<u8>,
    txid: [u8; 12],
}

impl Builder {
    pub fn new(method: u16, class: u8, txid: [u8; 12]) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&encode_type(method, class).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC.to_be_bytes());
        buf.extend_from_slice(&txid);
        Self { buf, txid }
    }

    pub fn attr(mut self, t: u16, v: &[u8]) -> Self {
        self.push(t, v);
        self
    }

    fn push(&mut self, t: u16, v: &[u8]) {
        // Values come from this server (addresses, reason texts, relayed datagrams up to 64 KiB
        // minus headers, which the UDP receive buffer already bounds).
        let len = u16::try_from(v.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&t.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(&v[..usize::from(len)]);
        let pad = (4 - v.len() % 4) % 4;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self.set_len(self.buf.len() - HEADER);
    }

    fn set_len(&mut self, len: usize) {
        let l = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
        self.buf[2] = l[0];
        self.buf[3] = l[1];
    }

    pub fn xor_addr(self, t: u16, addr: SocketAddr) -> Self {
        let v = encode_xor_addr(addr, &self.txid);
        self.attr(t, &v)
    }

    pub fn u32(self, t: u16, v: u32) -> Self {
        self.attr(t, &v.to_be_bytes())
    }

    pub fn error(self, code: u16, reason: &str) -> Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(A_ERROR_CODE, &v)
    }

    /// Append MESSAGE-INTEGRITY (when `key` is given) and FINGERPRINT, and return the bytes.
    pub fn finish(mut self, key: Option<&[u8]>) -> Vec<u8> {
        if let Some(key) = key {
            self.set_len(self.buf.len() - HEADER + 24);
            let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(&self.buf);
            let tag = mac.finalize().into_bytes();
            self.push(A_MESSAGE_INTEGRITY, &tag);
        }
        self.set_len(self.buf.len() - HEADER + 8);
        let crc = crc32fast::hash(&self.buf) ^ FINGERPRINT_XOR;
        self.push(A_FINGERPRINT, &crc.to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_roundtrip() {
        for m in [BINDING, ALLOCATE, REFRESH, SEND, DATA, CREATE_PERMISSION, CHANNEL_BIND] {
            for c in 0..4 {
                assert_eq!(decode_type(encode_type(m, c)), (m, c));
            }
        }
        assert_eq!(encode_type(BINDING, REQUEST), 0x0001);
        assert_eq!(encode_type(BINDING, SUCCESS), 0x0101);
        assert_eq!(encode_type(ALLOCATE, ERROR), 0x0113);
        assert_eq!(encode_type(DATA, INDICATION), 0x0017);
    }

    #[test]
    fn integrity_roundtrip_and_addresses() {
        let txid = [7u8; 12];
        let peer: SocketAddr = "192.0.2.1:32853".parse().expect("addr");
        let peer6: SocketAddr = "[2001:db8::1]:40000".parse().expect("addr");
        let bytes = Builder::new(ALLOCATE, REQUEST, txid)
            .xor_addr(A_XOR_PEER_ADDRESS, peer)
            .xor_addr(A_XOR_MAPPED_ADDRESS, peer6)
            .attr(A_USERNAME, b"1700000000")
            .finish(Some(b"key"));
        let m = Message::parse(&bytes).expect("parse");
        assert_eq!((m.method, m.class), (ALLOCATE, REQUEST));
        assert_eq!(m.xor_addr(A_XOR_PEER_ADDRESS), Some(peer));
        assert_eq!(m.xor_addr(A_XOR_MAPPED_ADDRESS), Some(peer6));
        assert!(m.integrity_ok(b"key"));
        assert!(!m.integrity_ok(b"other"));
        assert_eq!(m.string(A_USERNAME), Some("1700000000"));
    }

    fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex")).collect()
    }

    /// RFC 5769 §2.1 sample request and §2.2 sample IPv4 response, both signed with the password
    /// "VOkJxbRl1RmTxUk/WvJxBt"; the response maps 192.0.2.1:32853.
    #[test]
    fn rfc5769_vectors() {
        let req = hex("00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
            80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
            00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
            00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
            00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
            80 28 00 04 e5 7a 3b cf");
        let resp = hex("01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
            80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
            00 20 00 08 00 01 a1 47 e1 12 a6 43
            00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
            80 28 00 04 c0 7d 4c 96");
        let key = b"VOkJxbRl1RmTxUk/WvJxBt";
        let m = Message::parse(&req).expect("parse");
        assert_eq!((m.method, m.class), (BINDING, REQUEST));
        assert_eq!(m.string(A_USERNAME), Some("evtj:h6vY"));
        assert!(m.integrity_ok(key));
        assert!(!m.integrity_ok(b"VOkJxbRl1RmTxUk/WvJxBu"));
        let r = Message::parse(&resp).expect("parse");
        assert_eq!((r.method, r.class), (BINDING, SUCCESS));
        assert!(r.integrity_ok(key));
        assert_eq!(r.xor_addr(A_XOR_MAPPED_ADDRESS), "192.0.2.1:32853".parse().ok());
        for v in [&req, &resp] {
            let crc = crc32fast::hash(&v[..v.len() - 8]) ^ FINGERPRINT_XOR;
            assert_eq!(&v[v.len() - 4..], &crc.to_be_bytes());
        }
        // Our encoder reproduces the response byte for byte.
        let txid: [u8; 12] = resp[8..20].try_into().expect("txid");
        let ours = Builder::new(BINDING, SUCCESS, txid)
            .attr(A_SOFTWARE, b"test vector")
            .xor_addr(A_XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().expect("addr"))
            .finish(Some(key));
        // RFC 5769 pads SOFTWARE with 0x20 where we pad with zeros; compare after equalising.
        let mut expect = resp.clone();
        expect[20 + 4 + 11] = 0;
        let mut ours_fixed = ours.clone();
        ours_fixed[20 + 4 + 11] = 0;
        assert_eq!(ours_fixed[..ours.len() - 32], expect[..resp.len() - 32]);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(Message::parse(&[]).err(), Some(StunError::NotStun));
        assert_eq!(Message::parse(&[0u8; 19]).err(), Some(StunError::NotStun));
        let mut b = Builder::new(BINDING, REQUEST, [1; 12]).attr(A_SOFTWARE, b"x").finish(None);
        b.truncate(b.len() - 4);
        assert!(Message::parse(&b).is_err());
        // An attribute length running past the end.
        let mut b = Builder::new(BINDING, REQUEST, [1; 12]).attr(0x7777, b"abcd").finish(None);
        b[HEADER + 3] = 200;
        assert_eq!(Message::parse(&b).err(), Some(StunError::BadAttribute(0x7777)));
    }
}
