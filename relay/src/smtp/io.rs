//! The connection: a read buffer over `MaybeTls`, bounded line reads (SMTP-19), reply writes and
//! the STARTTLS upgrade, which drops anything the client pipelined before the handshake.
//!
//! Replies are held while the client's next pipelined command is already buffered and go out
//! together before the next read (RFC 2920 §3.2): one TLS record and one wake-up for the
//! client instead of one per command.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::reply::Reply;
use crate::tls::MaybeTls;

/// Command lines, CRLF included (SMTP-19).
pub const COMMAND_LINE_MAX: usize = 512;
/// AUTH continuation lines (SMTP-19).
pub const AUTH_LINE_MAX: usize = 12288;
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line too long")]
    TooLong,
    #[error("connection closed")]
    Eof,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

pub struct Conn {
    stream: MaybeTls,
    buf: Vec<u8>,
    pos: usize,
    /// Replies not yet written.
    out: Vec<u8>,
}

impl Conn {
    pub fn new(stream: MaybeTls) -> Self {
        Self { stream, buf: Vec::with_capacity(READ_CHUNK), pos: 0, out: Vec::new() }
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Unread bytes already in the buffer.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Read more bytes into the buffer; Eof when the peer closed.
    pub async fn fill(&mut self) -> Result<(), LineError> {
        self.flush_out().await?;
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let n = self.stream.read(&mut self.buf[old..]).await;
        self.buf.truncate(old + *n.as_ref().unwrap_or(&0));
        match n? {
            0 => Err(LineError::Eof),
            _ => Ok(()),
        }
    }

    /// One line including its LF, at most `limit` octets. A longer line is read to its end,
    /// discarded and reported as `TooLong`.
    pub async fn read_line(&mut self, limit: usize) -> Result<Vec<u8>, LineError> {
        let mut discarding = false;
        loop {
            let avail = self.buffered();
            if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                let line = avail[..=i].to_vec();
                self.consume(i + 1);
                if discarding || line.len() > limit {
                    return Err(LineError::TooLong);
                }
                return Ok(line);
            }
            if avail.len() > limit {
                discarding = true;
                let n = avail.len();
                self.consume(n);
            }
            self.fill().await?;
        }
    }

    pub async fn send(&mut self, reply: &Reply) -> io::Result<()> {
        self.send_raw(reply.wire().as_bytes()).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(bytes);
        if self.pos < self.buf.len() {
            return Ok(());
        }
        self.flush_out().await
    }

    /// Write the held replies. Cancel-safe: what was written is removed from `out` as it goes.
    async fn flush_out(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        while !self.out.is_empty() {
            let n = self.stream.write(&self.out).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.out.drain(..n);
        }
        // Keep the small buffer for the next replies; give back one a large reply grew.
        if self.out.capacity() > 4096 {
            self.out = Vec::new();
        }
        self.stream.flush().await
    }

    /// STARTTLS: discard pipelined plaintext (command injection), then handshake.
    pub async fn upgrade(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        self.flush_out().await?;
        self.buf.clear();
        self.pos = 0;
        let plain = std::mem::replace(&mut self.stream, MaybeTls::Upgrading);
        self.stream = plain.upgrade(acceptor).await?;
        Ok(())
    }

    pub async fn close(&mut self) {
        let _ = self.flush_out().await;
        let _ = self.stream.shutdown().await;
    }
}
