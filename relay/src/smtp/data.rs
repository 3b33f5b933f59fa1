//! DATA: stream the message off the wire with dot-unstuffing, bare LF stored as CRLF, the end
//! recognised only at CRLF "." CRLF (SMTP-25), and the size limit enforced while reading
//! (SMTP-20, SMTP-21): past the limit the rest is read and discarded, never buffered. The bytes
//! kept also count against the global in-flight budget (`inflight`, issue 31); past it the rest
//! is read and discarded too, and the message is refused with a transient reply.

use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::io::{Conn, LineError};
use crate::inflight::Reservation;

/// No bytes at all for this long ends the session (SMTP-23).
pub const IDLE: Duration = Duration::from_secs(300);
/// The whole transfer (SMTP-23).
pub const TOTAL: Duration = Duration::from_secs(600);
/// A line without LF longer than this is passed on in pieces.
const PIECE: usize = 64 * 1024;

/// What DATA produced.
#[derive(Debug)]
pub enum Body {
    Complete(Vec<u8>),
    TooLarge,
    /// The global in-flight budget was spent while receiving.
    OverBudget,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("timeout")]
    Timeout,
    #[error(transparent)]
    Conn(#[from] LineError),
}

/// The pure decoder, fed with whatever bytes have arrived.
pub struct Decoder {
    /// At the start of a line whose predecessor ended with a real CRLF (or start of data).
    after_crlf: bool,
    /// At the start of a line (after any LF).
    at_start: bool,
    out: Vec<u8>,
    size: u64,
    limit: u64,
    /// Reserved from the in-flight budget ahead of `out` (`None`: unbounded, unit tests).
    held: Option<(u64, bool)>,
}

/// The in-flight budget is reserved in steps of this much.
const RESERVE_STEP: u64 = 256 * 1024;

impl Decoder {
    pub fn new(limit: u64) -> Self {
        Self { after_crlf: true, at_start: true, out: Vec::new(), size: 0, limit, held: None }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        let over_budget = self.held.is_some_and(|(_, over)| over);
        if self.size <= self.limit && !over_budget {
            self.out.extend_from_slice(bytes);
        } else if !self.out.is_empty() {
            self.out = Vec::new();
        }
    }

    /// Make sure the bytes kept are covered by `budget`; false once it is spent.
    fn covered(&mut self, budget: &mut Reservation) -> bool {
        let (held, over) = self.held.get_or_insert((0, false));
        if *over {
            return false;
        }
        let kept = self.out.len() as u64;
        if kept > *held {
            let want = (kept - *held).max(RESERVE_STEP);
            if budget.grow(want) {
                *held += want;
            } else {
                *over = true;
                self.out = Vec::new();
                return false;
            }
        }
        true
    }

    /// Consume from `input`; returns (bytes consumed, end of data seen).
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let mut pos = 0;
        // `input[run..pos]`: common lines (CRLF-ended, no line-start dot) not yet passed on. They
        // are passed on together, one copy per run rather than per line (issue 30: a 5 MiB
        // armored message is ≈ 90,000 lines).
        let mut run = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                self.emit(&input[run..pos]);
                // No full line yet: pass long pieces on, keeping a trailing CR and a possible
                // line-start dot for the next round.
                if rest.len() >= PIECE {
                    let keep = usize::from(rest.last() == Some(&b'\r'));
                    let mut piece = &rest[..rest.len() - keep];
                    if self.at_start && piece.first() == Some(&b'.') {
                        piece = &piece[1..];
                    }
                    self.emit(piece);
                    self.at_start = false;
                    self.after_crlf = false;
                    pos += rest.len() - keep;
                }
                return (pos, false);
            };
            let line = &rest[..=lf];
            let crlf = lf > 0 && rest[lf - 1] == b'\r';
            if self.at_start && self.after_crlf && line == b".\r\n" {
                self.emit(&input[run..pos]);
                return (pos + lf + 1, true);
            }
            let dot = self.at_start && line.first() == Some(&b'.');
            if !crlf || dot {
                self.emit(&input[run..pos]);
                let content = &line[usize::from(dot)..line.len() - if crlf { 2 } else { 1 }];
                self.emit(content);
                self.emit(b"\r\n");
                run = pos + lf + 1;
            }
            pos += lf + 1;
            self.at_start = true;
            self.after_crlf = crlf;
        }
        self.emit(&input[run..pos]);
        (pos, false)
    }

    pub fn finish(self) -> Body {
        if self.size > self.limit {
            Body::TooLarge
        } else if self.held.is_some_and(|(_, over)| over) {
            Body::OverBudget
        } else {
            Body::Complete(self.out)
        }
    }
}

/// Read a DATA stream to its end, the kept bytes reserved in `budget` (which the caller holds
/// until the message is dealt with).
pub async fn read(conn: &mut Conn, limit: u64, budget: &mut Reservation) -> Result<Body, DataError> {
    let mut dec = Decoder::new(limit);
    let deadline = Instant::now() + TOTAL;
    loop {
        let (used, done) = dec.feed(conn.buffered());
        conn.consume(used);
        dec.covered(budget);
        if done {
            return Ok(dec.finish());
        }
        let idle = (Instant::now() + IDLE).min(deadline);
        timeout_at(idle, conn.fill()).await.map_err(|_| DataError::Timeout)??;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]], limit: u64) -> (Option<Vec<u8>>, bool, Vec<u8>) {
        let mut dec = Decoder::new(limit);
        let mut pending = Vec::new();
        for c in chunks {
            pending.extend_from_slice(c);
            let (used, done) = dec.feed(&pending);
            pending.drain(..used);
            if done {
                return match dec.finish() {
                    Body::Complete(b) => (Some(b), true, pending),
                    Body::TooLarge | Body::OverBudget => (None, true, pending),
                };
            }
        }
        (None, false, pending)
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (b, done, rest) = run(&[b"a\r\n..b\r\n.\r\nNOOP\r\n"], 100);
        assert!(done);
        assert_eq!(b.as_deref(), Some(&b"a\r\n.b\r\n"[..]));
        assert_eq!(rest, b"NOOP\r\n");
        // Smuggling shapes: bare LF around the dot never ends the data.
        for s in [&b"a\n.\nb\r\n"[..], b"a\r\n.\nb\r\n", b"a\n.\r\nb\r\n", b"a\r.\r\nb\r\n"] {
            let (_, done, _) = run(&[s], 100);
            assert!(!done, "{:?}", String::from_utf8_lossy(s));
        }
        let (b, done, _) = run(&[b"a\nb\n", b"\r\n.\r\n"], 100);
        assert!(done);
        assert_eq!(b.as_deref(), Some(&b"a\r\nb\r\n\r\n"[..]), "bare LF stored as CRLF");
    }

    #[test]
    fn split_everywhere_gives_the_same_result() {
        let msg: &[u8] = b"Subject: x\r\n\r\n.hidden\r\nline\nend\r\n.\r\n";
        for cut in 0..msg.len() {
            let (b, done, _) = run(&[&msg[..cut], &msg[cut..]], 1000);
            assert!(done, "cut {cut}");
            assert_eq!(b.as_deref(), Some(&b"Subject: x\r\n\r\nhidden\r\nline\r\nend\r\n"[..]), "cut {cut}");
        }
    }

    /// The decoder passes runs of lines on together (issue 30): on messages mixing common lines,
    /// dot-stuffed lines, bare LFs, lone dots and long lines, fed in every chunking, it gives
    /// what a line-at-a-time reading of the rules gives.
    #[test]
    fn runs_match_a_line_by_line_reading() {
        // The rules line by line, for inputs with no line longer than PIECE.
        fn reference(input: &[u8]) -> Option<Vec<u8>> {
            let (mut out, mut after_crlf, mut pos) = (Vec::new(), true, 0);
            while let Some(lf) = memchr::memchr(b'\n', &input[pos..]) {
                let line = &input[pos..=pos + lf];
                pos += lf + 1;
                let crlf = line.len() >= 2 && line[line.len() - 2] == b'\r';
                if after_crlf && line == b".\r\n" {
                    return Some(out);
                }
                let body = &line[..line.len() - if crlf { 2 } else { 1 }];
                out.extend_from_slice(body.strip_prefix(b".").unwrap_or(body));
                out.extend_from_slice(b"\r\n");
                after_crlf = crlf;
            }
            None
        }
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let shapes: [&[u8]; 8] = [
            b"wV4DAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n",
            b"..dot\r\n",
            b"bare\n",
            b".\n",
            b"x\r\n",
            b"\r\n",
            b".x\n",
            b"tail\r\r\n",
        ];
        for round in 0..300 {
            let mut msg = Vec::new();
            for _ in 0..(next() % 60) {
                msg.extend_from_slice(shapes[(next() % shapes.len() as u64) as usize]);
            }
            msg.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            let want = reference(&msg);
            let cut = (next() as usize) % msg.len();
            let step = 1 + (next() as usize) % 97;
            let mut chunks: Vec<&[u8]> = vec![&msg[..cut]];
            chunks.extend(msg[cut..].chunks(step));
            let (got, done, _) = run(&chunks, 1 << 20);
            assert!(done, "round {round}");
            assert_eq!(got, want, "round {round}: {:?}", String::from_utf8_lossy(&msg));
        }
    }

    #[test]
    fn over_limit_is_discarded_but_read_to_end() {
        let big = vec![b'x'; 300_000];
        let (b, done, rest) = run(&[&big, b"\r\n.\r\nQUIT\r\n"], 1000);
        assert!(done);
        assert!(b.is_none());
        assert_eq!(rest, b"QUIT\r\n");
    }
}
