//! SMTP session input: command lines through the session's parser and reply mapping, addresses
//! through `Address::parse`, and the rest through the DATA decoder (random chunking) and the
//! end-of-DATA pure steps (parse, From check, header cleanup, both filter variants).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::address::Address;
use relay::filter::{Envelope, Variant};
use relay::smtp::data::{Body, Decoder};
use relay::smtp::{headers, message, session};

fuzz_target!(|input: &[u8]| {
    // Up to the first blank line: command lines; after it: a DATA stream.
    let split = input.windows(4).position(|w| w == b"\r\n\r\n").map_or(input.len(), |i| i + 4);
    let (cmds, data) = input.split_at(split);
    let mut mail_from = String::new();
    for line in cmds.split_inclusive(|&b| b == b'\n') {
        let verb = session::parse_command(line);
        if let Ok(smtp_proto::Request::Mail { from }) = smtp_proto::Request::parse(&mut line.iter()) {
            if let Ok(a) = Address::parse(&from.address) {
                assert!(a.as_str().contains('@'));
                mail_from = a.as_str().to_string();
            }
        }
        if let Ok(smtp_proto::Request::Rcpt { to }) = smtp_proto::Request::parse(&mut line.iter()) {
            let _ = Address::parse(&to.address).map(|a| a.is_local("chat.test"));
        }
        if let Err(r) = verb {
            assert!(r.is_error());
            let _ = r.wire();
        }
    }
    // DATA in chunks whose sizes come from the data itself; unconsumed bytes stay buffered and
    // are fed again with the next chunk, as `data::read` does.
    let mut dec = Decoder::new(64 * 1024);
    let mut buf: Vec<u8> = Vec::new();
    let mut rest = data;
    let mut step = 1 + data.first().copied().unwrap_or(7) as usize;
    while !rest.is_empty() {
        let n = step.min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        let (used, end) = dec.feed(&buf);
        assert!(used <= buf.len());
        buf.drain(..used);
        if end {
            break;
        }
        step = step % 61 + 1;
    }
    let Body::Complete(msg) = dec.finish() else { return };
    if let Ok(parsed) = message::parse(&msg) {
        let _ = message::from_address(&parsed);
        let _ = message::check_from(&parsed, &mail_from);
        let rcpts = vec!["bob@chat.test".to_string()];
        let env = Envelope { mail_from: &mail_from, rcpts: &rcpts };
        let _ = relay::filter::check(&parsed, Variant::Outgoing, &env);
        let _ = relay::filter::check(&parsed, Variant::Incoming, &env);
    }
    let cleaned = headers::clean(&msg, &["Received", "User-Agent"], true);
    let _ = message::parse(&cleaned);
});
