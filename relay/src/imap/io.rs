//! The connection: buffered reads with line and literal limits, batched writes, and the
//! optional raw DEFLATE layer of COMPRESS (RFC 4978). Buffers shrink back when idle so an idle
//! session holds only a few KiB (IMAP-33).

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tls::MaybeTls;

const READ_CHUNK: usize = 4096;
/// Buffers above this are released when the connection goes quiet.
const KEEP: usize = 8192;
/// Output is written out once this much is pending (large FETCH responses).
pub const SOFT_FLUSH: usize = 64 * 1024;

/// Inflated octets produced per `fill` at most: compressed input waits in `zin` until the
/// framing asks for more, so a 1000:1 stream never balloons the read buffer (issue 26).
const INFLATE_STEP: usize = 16 * 1024;
/// How long and how much input a closing session still reads and drops (see `close`).
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;

struct Zlib {
    inflate: Decompress,
    /// Compressed bytes read but not yet inflated, from `zpos`.
    zin: Vec<u8>,
    zpos: usize,
    /// The last step filled its output: the inflater may hold more without new input.
    more: bool,
    deflate: Compress,
    zout: Vec<u8>,
}

pub struct Conn {
    pub stream: MaybeTls,
    rbuf: Vec<u8>,
    rpos: usize,
    out: Vec<u8>,
    z: Option<Box<Zlib>>,
}

/// What `read_line` found.
pub enum Line {
    /// One line including its CRLF.
    Ok(Vec<u8>),
    /// Longer than allowed; the rest of it was discarded.
    TooLong,
    Eof,
}

impl Conn {
    pub fn new(stream: MaybeTls) -> Self {
        Self { stream, rbuf: Vec::new(), rpos: 0, out: Vec::new(), z: None }
    }

    pub fn compressed(&self) -> bool {
        self.z.is_some()
    }

    /// Bytes already read but not consumed (must be empty before STARTTLS/COMPRESS switch).
    pub fn buffered(&self) -> usize {
        self.rbuf.len() - self.rpos
    }

    pub fn has_line(&self) -> bool {
        self.rbuf[self.rpos..].contains(&b'\n')
    }

    /// Read more bytes from the socket into the buffer. Cancel-safe: nothing is lost if the
    /// future is dropped before it completes. Returns 0 on EOF.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.rpos > 0 && self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
        let mut tmp = [0u8; READ_CHUNK];
        let Some(z) = &mut self.z else {
            let n = self.stream.read(&mut tmp).await?;
            self.rbuf.extend_from_slice(&tmp[..n]);
            return Ok(n);
        };
        loop {
            if z.more || z.zpos < z.zin.len() {
                let produced = inflate_step(z, &mut self.rbuf)?;
                if produced > 0 {
                    return Ok(produced);
                }
            }
            let n = self.stream.read(&mut tmp).await?;
            if n == 0 {
                return Ok(0);
            }
            z.zin.extend_from_slice(&tmp[..n]);
        }
    }

    /// Read one line of at most `max` octets.
    pub async fn read_line(&mut self, max: usize) -> io::Result<Line> {
        let mut discarding = false;
        loop {
            if let Some(i) = self.rbuf[self.rpos..].iter().position(|b| *b == b'\n') {
                let end = self.rpos + i + 1;
                if discarding || end - self.rpos > max {
                    self.rpos = end;
                    return Ok(Line::TooLong);
                }
                let line = self.rbuf[self.rpos..end].to_vec();
                self.rpos = end;
                return Ok(Line::Ok(line));
            }
            if self.rbuf.len() - self.rpos > max {
                discarding = true;
                self.rpos = self.rbuf.len();
            }
            if self.fill().await? == 0 {
                return Ok(Line::Eof);
            }
        }
    }

    /// Append exactly `n` octets (a literal) to `dst`.
    pub async fn read_exact_into(&mut self, mut n: usize, dst: &mut Vec<u8>) -> io::Result<()> {
        while n > 0 {
            if self.rpos == self.rbuf.len() && self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = n.min(self.rbuf.len() - self.rpos);
            dst.extend_from_slice(&self.rbuf[self.rpos..self.rpos + take]);
            self.rpos += take;
            n -= take;
        }
        Ok(())
    }

    /// Queue output; it is sent by `flush`.
    pub fn push(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Send everything queued (a sync flush when compressed, so the client sees it now).
    pub async fn flush(&mut self) -> io::Result<()> {
        self.flush_as(false).await
    }

    /// `flush` for output that is mostly a message's bytes (a streamed FETCH body): under
    /// COMPRESS it is Huffman-coded without a match search (`huffman`), and the buffers are
    /// kept for the next piece (issue 30).
    pub async fn flush_bulk(&mut self) -> io::Result<()> {
        self.flush_as(true).await
    }

    async fn flush_as(&mut self, bulk: bool) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        match &mut self.z {
            None => self.stream.write_all(&self.out).await?,
            Some(z) => {
                z.zout.clear();
                if bulk && self.out.len() >= super::huffman::MIN {
                    super::huffman::sync_block(&self.out, &mut z.zout);
                    // The block's bytes are not in the compressor's window: start it afresh
                    // (a raw stream has no header, so this only forgets the history).
                    z.deflate.reset();
                } else {
                    deflate(&mut z.deflate, &self.out, &mut z.zout)?;
                }
                self.stream.write_all(&z.zout).await?;
                if !bulk && z.zout.capacity() > KEEP {
                    z.zout = Vec::new();
                }
            }
        }
        self.stream.flush().await?;
        self.out.clear();
        // A body is streamed in SOFT_FLUSH pieces: its buffers are kept from one to the next
        // (each freshly allocated 64 KiB buffer was new zeroed pages from the kernel, a page
        // fault per 4 KiB) and released by the next ordinary flush or `shrink`.
        if !bulk && self.out.capacity() > KEEP {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Drop large buffers while nothing is pending (before IDLE and between commands).
    pub fn shrink(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
            if self.rbuf.capacity() > KEEP {
                self.rbuf = Vec::new();
            }
        }
    }

    /// Switch both directions to raw DEFLATE. Call after the tagged OK was flushed.
    /// Bytes the client pipelined after the COMPRESS command are already compressed.
    pub fn start_compression(&mut self) -> io::Result<()> {
        let mut z = Box::new(Zlib {
            inflate: Decompress::new(false),
            zin: Vec::new(),
            zpos: 0,
            more: false,
            // Level 1: what a chatmail client fetches is ASCII-armored ciphertext, which level 1
            // packs as well as level 6 (5 MiB message: 0.759 against 0.764 of its size) at a
            // quarter of the CPU (miniz_oxide here: 133 against 519 ms), issue 30.
            deflate: Compress::new(Compression::fast(), false),
            zout: Vec::new(),
        });
        let rest = self.rbuf.split_off(self.rpos);
        self.rbuf.clear();
        self.rpos = 0;
        z.zin = rest;
        self.z = Some(z);
        Ok(())
    }

    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        // Lingering close: closing with unread input makes the kernel send a reset, which can
        // discard our last reply (the BYE) before a still-sending client reads it. Read and
        // drop what it sends for a short, bounded while.
        let mut sink = [0u8; READ_CHUNK];
        let mut left = LINGER_BYTES;
        let _ = tokio::time::timeout(LINGER, async {
            while left > 0 {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

/// Inflate at most INFLATE_STEP octets of pending input onto `out`; returns how many.
fn inflate_step(z: &mut Zlib, out: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = Vec::with_capacity(INFLATE_STEP);
    let before = z.inflate.total_in();
    let st = z
        .inflate
        .decompress_vec(&z.zin[z.zpos..], &mut chunk, FlushDecompress::None)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad deflate stream"))?;
    let consumed = (z.inflate.total_in() - before) as usize;
    z.zpos += consumed;
    z.more = chunk.len() == chunk.capacity() && st != Status::StreamEnd;
    if z.zpos == z.zin.len() || (consumed == 0 && chunk.is_empty()) {
        // All used, or stuck (after the stream's end): drop the pending input.
        z.zin.clear();
        z.zpos = 0;
        if z.zin.capacity() > KEEP {
            z.zin = Vec::new();
        }
    }
    out.extend_from_slice(&chunk);
    Ok(chunk.len())
}

fn deflate(c: &mut Compress, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut pos = 0;
    loop {
        out.reserve(input.len() - pos + 256);
        let bi = c.total_in();
        c.compress_vec(&input[pos..], out, FlushCompress::Sync).map_err(|_| io::Error::other("deflate"))?;
        pos += (c.total_in() - bi) as usize;
        if pos >= input.len() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}
