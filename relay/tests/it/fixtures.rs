//! Filter fixtures (filter.md section 7): the generator that makes every fixture with fresh keys
//! through the `pgp` crate, the committed copies under `tests/fixtures/filter/`, and helpers other
//! tests use (`encrypted_eml`).
//!
//! Regenerate with `RELAYTEST_REGEN_FIXTURES=1 cargo test -p relay --test it filter_fixtures::regenerate -- --ignored`.

#![allow(dead_code)]

use std::path::PathBuf;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use pgp::composed::{
    ArmorOptions, EncryptionCaps, KeyType, MessageBuilder, SecretKeyParamsBuilder, SignedPublicKey, SubkeyParamsBuilder,
};
use pgp::crypto::aead::{AeadAlgorithm, ChunkSize};
use pgp::crypto::ecc_curve::ECCCurve;
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{CompressionAlgorithm, Password, StringToKey};
use rand08::{Rng, thread_rng};

/// Placeholder addresses in the committed fixtures.
pub const FROM: &str = "alice@fixture.test";
pub const TO: &str = "bob@fixture.test";

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/filter")
}

pub fn load(name: &str) -> String {
    std::fs::read_to_string(dir().join(format!("{name}.eml"))).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A real PGP/MIME encrypted message from `from` to `to` (the committed `encrypted` fixture with
/// its addresses substituted).
pub fn encrypted_eml(from: &str, to: &str) -> String {
    load("encrypted").replace(FROM, from).replace(TO, to)
}

/// Expected verdicts: (fixture, outgoing accepted, incoming accepted). `asm` is accepted outgoing
/// only when sent to self (tested separately).
pub const TABLE: &[(&str, bool, bool)] = &[
    ("encrypted", true, true),
    ("encrypted-seipd2", true, true),
    ("encrypted-armor-version", false, true),
    ("encrypted-old-format", true, true),
    ("encrypted-partial", true, true),
    ("fake-encrypted", false, false),
    ("literal", false, false),
    ("compressed", false, false),
    ("trailing-bytes", false, false),
    ("three-parts", false, false),
    ("bad-version", false, false),
    ("plain", false, false),
    ("mdn", false, false),
    ("asm", true, false),
    ("mailer-daemon", false, true),
    ("securejoin-vc", true, true),
    ("securejoin-vg", true, true),
    ("securejoin-fake", false, false),
    ("securejoin-fake-text", false, false),
    ("securejoin-v3", true, true),
    ("truncated", false, false),
];

// ------------------------------------------------------------------ generator

fn key() -> SignedPublicKey {
    let mut sub = SubkeyParamsBuilder::default();
    sub.key_type(KeyType::ECDH(ECCCurve::Curve25519Legacy))
        .can_sign(false)
        .can_encrypt(EncryptionCaps::All)
        .can_authenticate(false);
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .primary_user_id("fixture <fixture@fixture.test>".into())
        .subkeys(vec![sub.build().expect("subkey params")]);
    let sk = params.build().expect("key params").generate(thread_rng()).expect("generate key");
    SignedPublicKey::from(sk)
}

const SECRET: &[u8] = b"Content-Type: text/plain\r\n\r\nhello, this is the encrypted chat message\r\n";

/// PKESK to two keys + SEIPD v1, binary.
fn seipd1(keys: &[SignedPublicKey], data: &[u8], chunk: Option<u32>) -> Vec<u8> {
    let mut b = MessageBuilder::from_bytes("", data.to_vec()).seipd_v1(thread_rng(), SymmetricKeyAlgorithm::AES128);
    if let Some(c) = chunk {
        b.partial_chunk_size(c).expect("chunk");
    }
    for k in keys {
        b.encrypt_to_key(thread_rng(), &k.public_subkeys[0]).expect("encrypt");
    }
    b.to_vec(thread_rng()).expect("encrypt")
}

fn seipd2(keys: &[SignedPublicKey]) -> Vec<u8> {
    let mut b = MessageBuilder::from_bytes("", SECRET.to_vec()).seipd_v2(
        thread_rng(),
        SymmetricKeyAlgorithm::AES128,
        AeadAlgorithm::Ocb,
        ChunkSize::default(),
    );
    for k in keys {
        b.encrypt_to_key(thread_rng(), &k.public_subkeys[0]).expect("encrypt");
    }
    b.to_vec(thread_rng()).expect("encrypt")
}

fn password_encrypted() -> Vec<u8> {
    let mut b = MessageBuilder::from_bytes("", SECRET.to_vec()).seipd_v1(thread_rng(), SymmetricKeyAlgorithm::AES128);
    b.encrypt_with_password(StringToKey::new_default(thread_rng()), &Password::from("securejoin-auth-token"))
        .expect("password");
    b.to_vec(thread_rng()).expect("encrypt")
}

/// Armor like rPGP/Delta Chat: no headers, 76-column base64, no checksum line unless `crc`.
pub fn armor(bin: &[u8], headers: &[&str]) -> String {
    let b64 = BASE64_STANDARD.encode(bin);
    let mut out = String::from("-----BEGIN PGP MESSAGE-----\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("ascii"));
        out.push_str("\r\n");
    }
    out.push_str("-----END PGP MESSAGE-----\r\n");
    out
}

/// Rewrite every leading PKESK/SKESK packet with an old-format header (SEIPD, tag 18, cannot be
/// expressed in the old format and stays new-format).
fn to_old_format(bin: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bin.len() {
        let tag = bin[pos] & 0x3f;
        if tag > 15 {
            out.extend_from_slice(&bin[pos..]);
            break;
        }
        let (len, hdr) = match bin[pos + 1] {
            l @ 0..=191 => (l as usize, 2),
            l @ 192..=223 => ((((l as usize) - 192) << 8) + bin[pos + 2] as usize + 192, 3),
            _ => panic!("unexpected length form in a session key packet"),
        };
        let body = &bin[pos + hdr..pos + hdr + len];
        if len < 256 {
            out.extend_from_slice(&[0x80 | (tag << 2), len as u8]);
        } else {
            out.push(0x80 | (tag << 2) | 1);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(body);
        pos += hdr + len;
    }
    out
}

fn headers(extra: &str, ctype: &str) -> String {
    format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: [...]\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\nMessage-ID: <fixture@fixture.test>\r\nMIME-Version: 1.0\r\n{extra}Content-Type: {ctype}\r\n\r\n"
    )
}

/// PGP/MIME around an armored payload; `version` is the control part body, `extra_part` adds a
/// third part.
pub fn pgp_mime(armored: &str, version: &str, extra_part: bool, extra_headers: &str) -> String {
    let b = "b0undary4fixture";
    let mut m = headers(
        extra_headers,
        &format!("multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n boundary=\"{b}\""),
    );
    m.push_str(&format!(
        "--{b}\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\n{version}\r\n\r\n--{b}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n{armored}\r\n"
    ));
    if extra_part {
        m.push_str(&format!("--{b}\r\nContent-Type: text/plain\r\n\r\nhello in cleartext\r\n\r\n"));
    }
    m.push_str(&format!("--{b}--\r\n"));
    m
}

fn mixed(extra_headers: &str, parts: &[(&str, &str)], subtype: &str) -> String {
    let b = "mixed4fixture";
    let mut m = headers(extra_headers, &format!("multipart/{subtype}; boundary=\"{b}\""));
    for (ct, body) in parts {
        m.push_str(&format!("--{b}\r\nContent-Type: {ct}\r\n\r\n{body}\r\n"));
    }
    m.push_str(&format!("--{b}--\r\n"));
    m
}

/// Every fixture of the filter.md table, freshly generated.
pub fn generate() -> Vec<(&'static str, String)> {
    let keys = [key(), key()];
    let enc = seipd1(&keys, SECRET, None);
    let big: Vec<u8> = SECRET.iter().copied().cycle().take(5000).collect();
    let partial = seipd1(&keys[..1], &big, Some(512));
    let mut random = vec![0u8; 300];
    thread_rng().fill(&mut random[..]);
    random[0] &= 0x7f;
    let literal = MessageBuilder::from_bytes("", SECRET.to_vec()).to_vec(thread_rng()).expect("literal");
    let mut cb = MessageBuilder::from_bytes("", SECRET.to_vec());
    cb.compression(CompressionAlgorithm::ZLIB);
    let compressed = cb.to_vec(thread_rng()).expect("compressed");
    let pgp_armored = |bin: Vec<u8>| armor(&bin, &[]);
    let enc_pgp_armor = {
        let mut b =
            MessageBuilder::from_bytes("", SECRET.to_vec()).seipd_v1(thread_rng(), SymmetricKeyAlgorithm::AES128);
        for k in &keys {
            b.encrypt_to_key(thread_rng(), &k.public_subkeys[0]).expect("encrypt");
        }
        b.to_armored_string(thread_rng(), ArmorOptions::default()).expect("armor")
    };
    let sj = |v: &str, body: &str, extra: bool| {
        let mut parts = vec![("text/plain; charset=utf-8", body.to_string())];
        if extra {
            parts.push(("text/plain", "and more".to_string()));
        }
        let parts: Vec<(&str, &str)> = parts.iter().map(|(a, b)| (*a, b.as_str())).collect();
        mixed(&format!("Secure-Join: {v}\r\n"), &parts, "mixed")
    };
    let mut trailing = enc.clone();
    trailing.extend_from_slice(&[0xc1, 0x00, 0x00]);
    let truncated = enc[..enc.len() - 20].to_vec();
    vec![
        ("encrypted", pgp_mime(&enc_pgp_armor, "Version: 1", false, "")),
        ("encrypted-seipd2", pgp_mime(&pgp_armored(seipd2(&keys)), "Version: 1", false, "")),
        ("encrypted-armor-version", pgp_mime(&armor(&enc, &["Version: Fixture 1.0", "Comment: test"]), "Version: 1", false, "")),
        ("encrypted-old-format", pgp_mime(&pgp_armored(to_old_format(&enc)), "Version: 1", false, "")),
        ("encrypted-partial", pgp_mime(&pgp_armored(partial), "Version: 1", false, "")),
        ("fake-encrypted", pgp_mime(&pgp_armored(random), "Version: 1", false, "")),
        ("literal", pgp_mime(&pgp_armored(literal), "Version: 1", false, "")),
        ("compressed", pgp_mime(&pgp_armored(compressed), "Version: 1", false, "")),
        ("trailing-bytes", pgp_mime(&pgp_armored(trailing), "Version: 1", false, "")),
        ("three-parts", pgp_mime(&pgp_armored(enc.clone()), "Version: 1", true, "")),
        ("bad-version", pgp_mime(&pgp_armored(enc.clone()), "Version: 2", false, "")),
        ("plain", headers("", "text/plain; charset=utf-8") + "hello in cleartext\r\n"),
        (
            "mdn",
            mixed(
                "",
                &[
                    ("text/plain", "The message was displayed."),
                    ("message/disposition-notification", "Reporting-UA: chat\r\nOriginal-Recipient: rfc822;bob@fixture.test\r\nDisposition: manual-action/MDN-sent-automatically; displayed\r\n"),
                ],
                "report; report-type=disposition-notification",
            ),
        ),
        (
            "asm",
            mixed(
                "",
                &[
                    ("text/plain", "This is the Autocrypt Setup Message."),
                    ("application/autocrypt-setup", &armor(&enc, &["Passphrase-Format: numeric9x4"])),
                ],
                "mixed",
            )
            .replace("Subject: [...]", "Subject: Autocrypt Setup Message")
            .replace(&format!("To: <{TO}>"), &format!("To: <{FROM}>")),
        ),
        (
            "mailer-daemon",
            mixed(
                "Auto-Submitted: auto-replied\r\n",
                &[
                    ("text/plain", "Delivery failed."),
                    ("message/delivery-status", "Reporting-MTA: dns; mx.remote.test\r\n\r\nFinal-Recipient: rfc822; bob@fixture.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"),
                ],
                "report; report-type=delivery-status",
            )
            .replace(&format!("From: <{FROM}>"), "From: Mail Delivery System <MAILER-DAEMON@remote.test>"),
        ),
        ("securejoin-vc", sj("vc-request", "Secure-Join: vc-request", false)),
        ("securejoin-vg", sj("vg-request", "Secure-Join: vg-request", false)),
        ("securejoin-fake", sj("vc-request", "Secure-Join: vc-request", true)),
        ("securejoin-fake-text", sj("vc-request", "Secure-Join: vc-request\r\nhello there", false)),
        (
            "securejoin-v3",
            pgp_mime(&pgp_armored(password_encrypted()), "Version: 1", false, "Secure-Join: vc-request-pubkey\r\n"),
        ),
        ("truncated", pgp_mime(&pgp_armored(truncated), "Version: 1", false, "")),
    ]
}
