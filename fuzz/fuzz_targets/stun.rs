//! The embedded TURN server's STUN codec (issue 28) on arbitrary datagrams: parsing and every
//! accessor must not panic, and a message rebuilt from what was read (attributes up to
//! MESSAGE-INTEGRITY, re-signed) must parse to the same reading and pass its integrity check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::turn::stun::*;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::parse(data) else { return };
    // Every attribute the server understands, plus the two optional ones it reads.
    let types: Vec<u16> = KNOWN_REQUIRED.iter().copied().chain([A_SOFTWARE, A_FINGERPRINT]).collect();
    for &t in &types {
        let _ = (m.get(t), m.string(t), m.u32(t), m.xor_addr(t), m.all(t).count());
    }
    let _ = m.unknown_required();
    let _ = m.integrity_ok(b"fuzz-key");

    // Rebuilt messages must fit the 16-bit length with room for MESSAGE-INTEGRITY + FINGERPRINT.
    if data.len() > 60_000 {
        return;
    }
    let mut b = Builder::new(m.method, m.class, m.txid);
    for (t, v) in m.attributes().take_while(|(t, _)| *t != A_MESSAGE_INTEGRITY) {
        if t != A_FINGERPRINT {
            b = b.attr(t, v);
        }
    }
    let out = b.finish(Some(b"fuzz-key"));
    let m2 = Message::parse(&out).expect("a message the codec built parses");
    assert_eq!((m2.method, m2.class, m2.txid), (m.method, m.class, m.txid));
    assert!(m2.integrity_ok(b"fuzz-key"), "re-signed message passes its integrity check");
    for &t in &types {
        if t != A_MESSAGE_INTEGRITY && t != A_FINGERPRINT {
            assert_eq!(m.get(t), m2.get(t), "attribute {t:#06x} reads the same after a rebuild");
        }
    }
});
