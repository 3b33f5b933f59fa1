//! FLT-34: every message the filter accepts (both variants; encrypted or Secure-Join) must read
//! the same in an independent, lenient MIME reader in all its personalities (first/last field
//! wins, exact/prefix/mid-line delimiters, CR as newline, whitespace-only header lines) and in
//! mail-parser: same top-level type, From address, parts, part types and decoded bodies.
//!
//! Input: first byte even = a whole message; odd = bytes spliced into a real encrypted
//! message at a line chosen by the next byte (keeps the armor valid, so mutations reach the
//! header and MIME reading that the filter judges).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../relay/tests/it/filter_oracle.rs"]
mod filter_oracle;

const BASE: &[u8] = include_bytes!("../../relay/tests/fixtures/filter/encrypted.eml");

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let msg = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let Some((&at, ins)) = rest.split_first() else { return };
        let starts: Vec<usize> = std::iter::once(0)
            .chain(BASE.iter().enumerate().filter(|(_, c)| **c == b'\n').map(|(i, _)| i + 1))
            .collect();
        let pos = starts[at as usize % starts.len()];
        [&BASE[..pos], ins, &BASE[pos..]].concat()
    };
    if let Err(e) = filter_oracle::differential(&msg) {
        panic!("{e}");
    }
});
