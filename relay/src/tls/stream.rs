//! A connection that may be upgraded to TLS in place (STARTTLS) and is read and written the same
//! way either side of the upgrade, or a byte stream already protected by an outer TLS connection
//! (IMAP and submission tunnelled through a `wss` WebSocket, issue 28).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Any byte stream a session can run on (the WebSocket tunnel implements it). Sessions are
/// shared by reference across awaits, so it must be `Sync`: `MaybeTls::tunnel` makes it so.
pub trait Tunnel: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Tunnel for T {}

/// Makes a `Send` stream `Sync` without locking: it is only ever used through `&mut` (the poll
/// methods), where `Mutex::get_mut` is free.
struct Exclusive<T>(std::sync::Mutex<T>);

impl<T: Unpin> Exclusive<T> {
    fn inner(self: Pin<&mut Self>) -> &mut T {
        match self.get_mut().0.get_mut() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Exclusive<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner()).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Exclusive<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.inner()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.inner()).poll_shutdown(cx)
    }
}

pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Carried inside an HTTPS connection's TLS (TLS 1.2 or 1.3, as the HTTPS listener allows):
    /// treated as TLS-protected, so LOGIN and AUTH work and STARTTLS is refused.
    Tunnel(Box<dyn Tunnel>),
    /// Only while an upgrade is in progress; never read or written.
    Upgrading,
}

impl MaybeTls {
    /// A stream already protected by an outer TLS connection (a `wss` WebSocket).
    pub fn tunnel(s: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) -> Self {
        Self::Tunnel(Box::new(Exclusive(std::sync::Mutex::new(s))))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_) | Self::Tunnel(_))
    }

    /// The negotiated protocol version, for the TLS 1.3-only rule on 443 (HTTP-3).
    pub fn tls_version(&self) -> Option<rustls::ProtocolVersion> {
        match self {
            Self::Tls(s) => s.get_ref().1.protocol_version(),
            _ => None,
        }
    }

    /// Run the server side of a TLS handshake on a plain connection (STARTTLS, implicit TLS).
    pub async fn upgrade(self, acceptor: &TlsAcceptor) -> io::Result<Self> {
        match self {
            Self::Plain(tcp) => Ok(Self::Tls(Box::new(acceptor.accept(tcp).await?))),
            other => Ok(other),
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Upgrading => Poll::Ready(Err(io::Error::other("connection is being upgraded"))),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Upgrading => Poll::Ready(Err(io::Error::other("connection is being upgraded"))),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Upgrading => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Tunnel(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Upgrading => Poll::Ready(Ok(())),
        }
    }
}
