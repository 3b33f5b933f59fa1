//! IMAP session input: command bytes through the same imap-codec decoder the session uses, and
//! message bytes through the MIME walker that answers BODYSTRUCTURE, ENVELOPE and section FETCHes
//! (the two places where untrusted bytes meet IMAP code).
#![no_main]

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use libfuzzer_sys::fuzz_target;
use relay::imap::mime;

fuzz_target!(|input: &[u8]| {
    let _ = CommandCodec::default().decode(input);
    let part = mime::parse(input);
    let _ = part.structure(input, true);
    let _ = part.structure(input, false);
    let _ = part.find(&[1]);
    let _ = part.find(&[2, 1, 3]);
    let split = mime::split(input).min(input.len());
    let header = &input[..split];
    let _ = mime::envelope(header);
    let _ = mime::fields(header);
    let _ = mime::field_value(header, "content-type");
});
