//! The OpenPGP packet-header walker (FLT-14..FLT-20): reads only headers and lengths, skips
//! bodies, and decides whether the bytes are "zero or more PKESK/SKESK, then exactly one SEIPD
//! that ends at the end of the data". A flat loop over offsets: no recursion, no allocation,
//! every index checked, so it cannot panic on any input.

/// Why a packet sequence is not an encrypted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("no packets")]
    Empty,
    #[error("first octet of a packet header has bit 7 clear")]
    NotAHeader,
    #[error("packet header or length runs past the end")]
    Truncated,
    #[error("packet tag {0} is not allowed before the SEIPD packet")]
    Unexpected(u8),
    #[error("bytes or packets after the SEIPD packet")]
    Trailing,
    #[error("the last packet is not SEIPD")]
    NoSeipd,
    #[error("partial body length not allowed here")]
    BadPartial,
}

const PKESK: u8 = 1;
const SKESK: u8 = 3;
const SEIPD: u8 = 18;

/// One packet's header: its tag and where its body ends (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub tag: u8,
    pub end: usize,
}

fn byte(data: &[u8], i: usize) -> Result<u8, WalkError> {
    data.get(i).copied().ok_or(WalkError::Truncated)
}

/// Advance `pos` by `n` body bytes, refusing to run past the end.
fn skip(data: &[u8], pos: usize, n: usize) -> Result<usize, WalkError> {
    let end = pos.checked_add(n).ok_or(WalkError::Truncated)?;
    if end > data.len() { Err(WalkError::Truncated) } else { Ok(end) }
}

/// Read the packet starting at `pos` (FLT-14, FLT-15, FLT-16).
pub fn next_packet(data: &[u8], pos: usize) -> Result<Packet, WalkError> {
    let first = byte(data, pos)?;
    if first & 0x80 == 0 {
        return Err(WalkError::NotAHeader);
    }
    let mut p = pos + 1;
    if first & 0x40 == 0 {
        // Old format: tag in bits 5..2, length type in bits 1..0.
        let tag = (first >> 2) & 0x0f;
        let end = match first & 0x03 {
            0 => {
                let n = byte(data, p)? as usize;
                skip(data, p + 1, n)?
            }
            1 => {
                let n = (byte(data, p)? as usize) << 8 | byte(data, p + 1)? as usize;
                skip(data, p + 2, n)?
            }
            2 => {
                let mut n = 0usize;
                for k in 0..4 {
                    n = n << 8 | byte(data, p + k)? as usize;
                }
                skip(data, p + 4, n)?
            }
            _ => data.len(),
        };
        return Ok(Packet { tag, end });
    }
    let tag = first & 0x3f;
    // New format; partial chunks repeat until a definite length ends the packet. The loop
    // consumes at least one octet per round, so it ends. As RFC 9580 4.2.1.4 (and the `pgp`
    // crate) requires, only data packets may use partial lengths and the first chunk is at least
    // 512 octets.
    let mut first_chunk = true;
    loop {
        let o1 = byte(data, p)?;
        match o1 {
            0..=191 => {
                return Ok(Packet { tag, end: skip(data, p + 1, o1 as usize)? });
            }
            192..=223 => {
                let o2 = byte(data, p + 1)? as usize;
                let n = ((o1 as usize - 192) << 8) + o2 + 192;
                return Ok(Packet { tag, end: skip(data, p + 2, n)? });
            }
            255 => {
                let mut n = 0usize;
                for k in 1..=4 {
                    n = n << 8 | byte(data, p + k)? as usize;
                }
                return Ok(Packet { tag, end: skip(data, p + 5, n)? });
            }
            224..=254 => {
                let chunk = 1usize << (o1 & 0x1f);
                if first_chunk && (chunk < 512 || !matches!(tag, 8 | 9 | 11 | SEIPD | 20)) {
                    return Err(WalkError::BadPartial);
                }
                first_chunk = false;
                p = skip(data, p + 1, chunk)?;
            }
        }
    }
}

/// FLT-17, FLT-18: PKESK/SKESK*, then exactly one SEIPD ending at the end of the data.
pub fn walk(data: &[u8]) -> Result<(), WalkError> {
    if data.is_empty() {
        return Err(WalkError::Empty);
    }
    let mut pos = 0;
    while pos < data.len() {
        let pkt = next_packet(data, pos)?;
        match pkt.tag {
            PKESK | SKESK => {}
            SEIPD if pkt.end == data.len() => return Ok(()),
            SEIPD => return Err(WalkError::Trailing),
            other => return Err(WalkError::Unexpected(other)),
        }
        pos = pkt.end;
    }
    Err(WalkError::NoSeipd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_hdr(tag: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0xc0 | tag];
        if len < 192 {
            v.push(len as u8);
        } else {
            v.push(255);
            v.extend_from_slice(&(len as u32).to_be_bytes());
        }
        v.extend(std::iter::repeat_n(0xaa, len));
        v
    }

    #[test]
    fn table() {
        let pk = new_hdr(1, 20);
        let sk = new_hdr(3, 10);
        let se = new_hdr(18, 300);
        let cat = |parts: &[&[u8]]| parts.concat();
        let cases: Vec<(&str, Vec<u8>, Result<(), WalkError>)> = vec![
            ("pkesk+seipd", cat(&[&pk, &pk, &se]), Ok(())),
            ("skesk+seipd", cat(&[&sk, &se]), Ok(())),
            ("seipd alone", se.clone(), Ok(())),
            ("empty", vec![], Err(WalkError::Empty)),
            ("literal", new_hdr(11, 5), Err(WalkError::Unexpected(11))),
            ("compressed", cat(&[&pk, &new_hdr(8, 5)]), Err(WalkError::Unexpected(8))),
            ("aead", cat(&[&pk, &new_hdr(20, 5)]), Err(WalkError::Unexpected(20))),
            ("sed", cat(&[&pk, &new_hdr(9, 5)]), Err(WalkError::Unexpected(9))),
            ("signature", new_hdr(2, 5), Err(WalkError::Unexpected(2))),
            ("two seipd", cat(&[&se, &se]), Err(WalkError::Trailing)),
            ("trailing", cat(&[&pk, &se, &[0x00]]), Err(WalkError::Trailing)),
            ("only pkesk", pk.clone(), Err(WalkError::NoSeipd)),
            ("bit7 clear", vec![0x41, 0], Err(WalkError::NotAHeader)),
            ("truncated body", vec![0xd2, 10, 1, 2], Err(WalkError::Truncated)),
            ("truncated len", vec![0xd2, 255, 0], Err(WalkError::Truncated)),
            // Old format (tags up to 15 only, so SEIPD is always new format): PKESK with 1-, 2-
            // and 4-octet lengths; an indeterminate length runs to the end.
            ("old", cat(&[&[0x84, 1, 9], &[0x85, 0, 2, 1, 2], &[0x86, 0, 0, 0, 1, 7], &[0xd2, 3, 1, 2, 3]]), Ok(())),
            ("old indeterminate", vec![0x87, 9, 9, 9], Err(WalkError::NoSeipd)),
            ("old literal", vec![0xac, 1, 0], Err(WalkError::Unexpected(11))),
            // Partial: 224+9 => 512-octet chunk, 224+1 => 2-octet chunk, then a final length.
            ("partial", [&[0xd2, 0xe9][..], &[7; 512], &[0xe1, 7, 7, 2, 8, 8]].concat(), Ok(())),
            ("partial truncated", [&[0xd2, 0xe9][..], &[7; 500]].concat(), Err(WalkError::Truncated)),
            ("partial small first chunk", vec![0xd2, 0xe1, 7, 7, 2, 8, 8], Err(WalkError::BadPartial)),
            ("partial pkesk", [&[0xc1, 0xe9][..], &[7; 512], &[0]].concat(), Err(WalkError::BadPartial)),
        ];
        for (name, data, want) in cases {
            assert_eq!(walk(&data), want, "{name}");
        }
    }

    /// FLT-20: never panics on any input (xorshift-driven random bytes and mutations).
    #[test]
    fn random_inputs_never_panic() {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let base = [new_hdr(1, 20), new_hdr(18, 300)].concat();
        for round in 0..20_000 {
            let data: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut d = base.clone();
                for _ in 0..(next() % 4 + 1) {
                    let i = (next() as usize) % d.len();
                    d[i] = next() as u8;
                }
                d.truncate((next() as usize) % (d.len() + 1));
                d
            };
            let _ = walk(&data);
        }
    }
}
