//! Shared helpers for the criterion benches: the PGP/MIME messages of the side-by-side yardstick.
#![allow(dead_code)]

use std::path::PathBuf;

/// `templates/` of the shared yardstick (`BENCH_DIR`, default `../shared/bench` next to the repo).
fn templates() -> PathBuf {
    match std::env::var_os("BENCH_DIR") {
        Some(d) => PathBuf::from(d).join("templates"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/templates"),
    }
}

/// The same RFC 3156 message mailbench.py builds around an armored body.
pub fn pgp_mime(armored: &str, from: &str, to: &str) -> Vec<u8> {
    let armored = armored.trim().replace("\r\n", "\n").replace('\n', "\r\n");
    let b = "0123456789abcdef0123456789abcdef";
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: [...]\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n\
         Message-ID: <bench@relay.test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{b}\"\r\n\r\n\
         --{b}\r\nContent-Type: application/pgp-encrypted\r\n\
         Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n\
         --{b}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
         Content-Description: OpenPGP encrypted message\r\n\
         Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n{armored}\r\n\r\n--{b}--\r\n"
    )
    .into_bytes()
}

/// A PGP/MIME message of the yardstick's size class (`4k`, `1m`); `None` if the template is
/// absent. `4k` falls back to the committed filter fixture.
pub fn message(size: &str) -> Option<Vec<u8>> {
    match std::fs::read_to_string(templates().join(format!("pgp-{size}.asc"))) {
        Ok(a) => Some(pgp_mime(&a, "bench0001@relay.test", "bench0002@relay.test")),
        Err(_) if size == "4k" => {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/filter/encrypted.eml");
            std::fs::read(p).ok()
        }
        Err(_) => {
            eprintln!("templates/pgp-{size}.asc not found (set BENCH_DIR): skipping the {size} case");
            None
        }
    }
}
