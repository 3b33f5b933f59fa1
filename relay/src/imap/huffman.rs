//! Huffman-only raw DEFLATE blocks (RFC 1951 3.2.7) for the message bodies a FETCH streams under
//! COMPRESS (issue 30). What a chatmail client fetches is ASCII-armored ciphertext: LZ77 finds
//! next to nothing in it (level 1 packs a 5 MiB armored body to 0.760 of its size, Huffman
//! coding of the bytes alone to 0.759), yet the match search is most of a large FETCH's server
//! CPU (miniz_oxide level 1: ≈ 140 ms per 5 MiB). One dynamic block with the bytes as literals
//! costs a histogram and a table lookup per byte.
//!
//! Each call writes one complete, non-final block followed by an empty stored block (what a sync
//! flush writes), starting and ending on a byte boundary, so it can sit between the output of a
//! general-purpose compressor's sync flushes. The block refers to no earlier data; the caller
//! resets that compressor afterwards, because the block's bytes are not in its window.

/// Output smaller than this keeps the general compressor: its history helps short replies, and
/// the block's code table (≈ 100 bytes) would weigh on them.
pub const MIN: usize = 16 * 1024;
/// Literal/length alphabet: the 256 byte values and end-of-block (no lengths are used).
const LITS: usize = 257;
const EOB: usize = 256;
/// RFC 1951 3.2.7: the order in which code-length-code lengths are sent.
const CL_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits<'_> {
    /// Append the `len` low bits of `v` (LSB first); `len` ≤ 16.
    #[inline]
    fn put(&mut self, v: u32, len: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += len;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Pad to a byte boundary and write out what is left.
    fn align(&mut self) {
        while self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        self.acc = 0;
    }
}

/// Huffman code lengths for `freq`, none longer than `limit`: every symbol with a non-zero
/// frequency gets a length ≥ 1, and the code is complete (at least two symbols are coded; a
/// lone symbol is paired with a neighbour, as zlib does). Over-long codes are avoided by
/// flattening the frequencies and building again.
fn lengths(freq: &[u32], limit: u8) -> Vec<u8> {
    let mut f: Vec<u64> = freq.iter().map(|&x| u64::from(x)).collect();
    let used = f.iter().filter(|&&x| x > 0).count();
    if used < 2 {
        // Pair the lone symbol (or none) with the first other symbols.
        for x in f.iter_mut().filter(|x| **x == 0).take(2 - used) {
            *x = 1;
        }
    }
    loop {
        let lens = huffman_lengths(&f);
        if lens.iter().all(|&l| l <= limit) {
            return lens;
        }
        for x in f.iter_mut().filter(|x| **x > 0) {
            *x = (*x >> 1).max(1);
        }
    }
}

/// Plain Huffman code lengths (unbounded) for the non-zero entries of `f` (at least two).
fn huffman_lengths(f: &[u64]) -> Vec<u8> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let n = f.len();
    // Nodes 0..n are the symbols, then the inner nodes; `parent` links each to its parent.
    let mut parent = vec![usize::MAX; 2 * n];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
        f.iter().enumerate().filter(|&(_, &w)| w > 0).map(|(i, &w)| Reverse((w, i))).collect();
    let mut next = n;
    while heap.len() > 1 {
        let (Some(Reverse((wa, a))), Some(Reverse((wb, b)))) = (heap.pop(), heap.pop()) else { break };
        parent[a] = next;
        parent[b] = next;
        heap.push(Reverse((wa + wb, next)));
        next += 1;
    }
    (0..n)
        .map(|i| {
            if f[i] == 0 {
                return 0;
            }
            let (mut d, mut p) = (0u32, i);
            while parent[p] != usize::MAX {
                p = parent[p];
                d += 1;
            }
            d.min(255) as u8
        })
        .collect()
}

/// Canonical codes (RFC 1951 3.2.2) for `lens`, bit-reversed for LSB-first output.
fn codes(lens: &[u8]) -> Vec<u16> {
    let mut count = [0u16; 16];
    for &l in lens {
        count[usize::from(l.min(15))] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; 16];
    let mut code = 0u16;
    for bits in 1..16 {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    lens.iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let l = usize::from(l.min(15));
            let c = next[l];
            next[l] += 1;
            c.reverse_bits() >> (16 - l)
        })
        .collect()
}

/// Append `data` to `out` as one Huffman-only dynamic block plus an empty stored block.
pub fn sync_block(data: &[u8], out: &mut Vec<u8>) {
    let mut freq = [0u32; LITS];
    // Four histograms side by side: the counter of a repeated byte is not a serial dependency.
    let mut h = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        h[0][usize::from(q[0])] += 1;
        h[1][usize::from(q[1])] += 1;
        h[2][usize::from(q[2])] += 1;
        h[3][usize::from(q[3])] += 1;
    }
    for &b in quads.remainder() {
        h[0][usize::from(b)] += 1;
    }
    for (i, f) in freq.iter_mut().take(256).enumerate() {
        // A block holds at most a few MiB (the caller's flush size), far below u32::MAX.
        *f = h[0][i].saturating_add(h[1][i]).saturating_add(h[2][i]).saturating_add(h[3][i]);
    }
    freq[EOB] = 1;
    let lit_lens = lengths(&freq, 15);
    let lit_codes = codes(&lit_lens);
    // No distances are used, but a complete distance code of two 1-bit codes is sent, as zlib
    // does: some inflaters refuse an empty one.
    let dist_lens = [1u8, 1];
    let all: Vec<u8> = lit_lens.iter().chain(dist_lens.iter()).copied().collect();
    let mut cl_freq = [0u32; 19];
    for &l in &all {
        cl_freq[usize::from(l)] += 1;
    }
    let cl_lens = lengths(&cl_freq, 7);
    let cl_codes = codes(&cl_lens);
    let hclen = CL_ORDER.iter().rposition(|&s| cl_lens[s] != 0).map_or(4, |i| (i + 1).max(4));

    out.reserve(data.len() + data.len() / 8 + 512);
    let mut w = Bits { out, acc: 0, n: 0 };
    w.put(0, 1); // BFINAL = 0
    w.put(2, 2); // BTYPE = 10, dynamic Huffman
    w.put((LITS - 257) as u32, 5);
    w.put((dist_lens.len() - 1) as u32, 5);
    w.put((hclen - 4) as u32, 4);
    for &s in &CL_ORDER[..hclen] {
        w.put(u32::from(cl_lens[s]), 3);
    }
    for &l in &all {
        let s = usize::from(l);
        w.put(u32::from(cl_codes[s]), u32::from(cl_lens[s]));
    }
    // Code and length of each byte in one table entry: one lookup per byte.
    let table: Vec<(u32, u32)> = (0..256).map(|i| (u32::from(lit_codes[i]), u32::from(lit_lens[i]))).collect();
    for &b in data {
        let (c, l) = table[usize::from(b)];
        w.put(c, l);
    }
    w.put(u32::from(lit_codes[EOB]), u32::from(lit_lens[EOB]));
    // Sync flush: an empty stored block, byte-aligned, LEN 0 and NLEN 0xffff.
    w.put(0, 3);
    w.align();
    out.extend_from_slice(&[0, 0, 0xff, 0xff]);
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

    use super::*;

    fn inflate(stream: &[u8]) -> Vec<u8> {
        let mut d = Decompress::new(false);
        let mut out = Vec::with_capacity(stream.len() * 2 + 1024);
        loop {
            let before = d.total_in() as usize;
            d.decompress_vec(&stream[before..], &mut out, FlushDecompress::Sync).expect("valid deflate");
            if d.total_in() as usize == stream.len() {
                return out;
            }
            if d.total_in() as usize == before {
                out.reserve(out.capacity());
            }
        }
    }

    fn xorshift(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    /// Every kind of input inflates back exactly: empty, one byte value, all 256 values, skewed
    /// data that needs the length limit, random bytes and armor-like base64 lines.
    #[test]
    fn blocks_round_trip() {
        use base64::prelude::{BASE64_STANDARD, Engine as _};
        let b64 = BASE64_STANDARD.encode(xorshift(300_000, 7));
        let armored: Vec<u8> = b64.as_bytes().chunks(76).flat_map(|l| [l, b"\r\n"].concat()).collect();
        // Fibonacci-like frequencies make a plain Huffman code deeper than 15 bits.
        let mut skewed = Vec::new();
        let (mut a, mut b) = (1usize, 1usize);
        for sym in 0..30u8 {
            skewed.extend(std::iter::repeat_n(sym, a));
            (a, b) = (b, a + b);
        }
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("one byte", vec![b'x']),
            ("one value", vec![0; 5000]),
            ("all values", (0..=255u8).collect()),
            ("random", xorshift(100_000, 1)),
            ("armor", armored.clone()),
            ("skewed", skewed),
        ];
        for (name, data) in cases {
            let mut out = Vec::new();
            sync_block(&data, &mut out);
            assert_eq!(inflate(&out), data, "{name}");
            if name == "armor" {
                let ratio = out.len() as f64 / data.len() as f64;
                assert!(ratio < 0.77, "armor packs like level 1 does: {ratio}");
            }
        }
    }

    #[test]
    fn lengths_respect_the_limit() {
        let mut freq = vec![0u32; 40];
        let (mut a, mut b) = (1u32, 1u32);
        for f in freq.iter_mut().take(35) {
            *f = a;
            (a, b) = (b, a.saturating_add(b));
        }
        let lens = lengths(&freq, 15);
        assert!(lens.iter().all(|&l| l <= 15));
        // Complete code (Kraft sum exactly 1).
        let kraft: f64 = lens.iter().filter(|&&l| l > 0).map(|&l| 2f64.powi(-i32::from(l))).sum();
        assert!((kraft - 1.0).abs() < 1e-9, "{kraft}");
        assert_eq!(lengths(&[0, 5, 0], 7), vec![1, 1, 0], "a lone symbol is paired");
    }

    /// Between a general compressor's sync flushes (reset after the block) the stream stays one
    /// valid raw DEFLATE stream, as the COMPRESS layer uses it.
    #[test]
    fn interleaves_with_a_compressor() {
        let mut c = Compress::new(Compression::fast(), false);
        let mut stream = Vec::new();
        let mut want = Vec::new();
        let small = b"* 1 FETCH (UID 7 FLAGS (\\Seen))\r\n".repeat(20);
        let big = xorshift(70_000, 3);
        for _ in 0..3 {
            let mut z = Vec::with_capacity(small.len() * 2 + 256);
            c.compress_vec(&small, &mut z, FlushCompress::Sync).expect("deflate");
            stream.extend_from_slice(&z);
            want.extend_from_slice(&small);
            sync_block(&big, &mut stream);
            want.extend_from_slice(&big);
            c.reset();
            let mut z = Vec::with_capacity(small.len() * 2 + 256);
            c.compress_vec(&small, &mut z, FlushCompress::Sync).expect("deflate");
            stream.extend_from_slice(&z);
            want.extend_from_slice(&small);
            c.reset();
        }
        assert_eq!(inflate(&stream), want);
    }
}
