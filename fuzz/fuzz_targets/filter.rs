//! The encryption filter on arbitrary messages (MIME shape, armor, packet walker), both variants,
//! plus the armor decoder and packet walker on the raw input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::filter::{self, Envelope, Variant};

fuzz_target!(|data: &[u8]| {
    let rcpts = vec!["bob@chat.test".to_string(), "carol@remote.example".to_string()];
    let env = Envelope { mail_from: "alice@chat.test", rcpts: &rcpts };
    for v in [Variant::Outgoing, Variant::Incoming] {
        let _ = filter::check_bytes(data, v, &env);
        if let Ok(bin) = filter::armor::dearmor(data, v) {
            let _ = filter::packets::walk(&bin);
        }
    }
    let _ = filter::packets::walk(data);
    let mut pos = 0;
    for _ in 0..64 {
        match filter::packets::next_packet(data, pos) {
            Ok(p) if p.end > pos && p.end <= data.len() => pos = p.end,
            _ => break,
        }
    }
});
