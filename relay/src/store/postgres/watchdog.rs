//! Connections to PostgreSQL that cannot hang a session (issue 27, failure modes). A database
//! that stops answering without closing its connections (a frozen host, a partition where no
//! reset arrives, a proxy that holds the socket) would otherwise park every store call on it
//! forever: tokio-postgres has no per-query timeout, and the pool hands out such a connection as
//! healthy. Each connection's socket is wrapped so that once a request was written, the server
//! must send something within `timeout`, and keep sending until its `ReadyForQuery`; otherwise
//! the socket read fails, the connection closes, its callers get an error (451/NO) and the pool
//! replaces it. Requests (writes) arm the timer; reads re-arm it; a read that ends with a
//! `ReadyForQuery` message disarms it, so idle connections and the LISTEN connection (between
//! its pings) live on. The kernel's keepalives and `tcp_user_timeout` cover dead peers as well.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_postgres::config::Host;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Connection, NoTls};

/// The socket of one connection, with its answer deadline.
pub(crate) struct Watched<S> {
    inner: S,
    timeout: Duration,
    armed: bool,
    sleep: Pin<Box<Sleep>>,
}

impl<S> Watched<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, armed: false, sleep: Box::pin(tokio::time::sleep(timeout)) }
    }

    fn arm(&mut self) {
        self.armed = true;
        let at = Instant::now() + self.timeout;
        self.sleep.as_mut().reset(at);
    }
}

/// `ReadyForQuery`: 'Z', length 5, transaction status 'I', 'T' or 'E'.
fn ends_ready(buf: &[u8]) -> bool {
    buf.len() >= 6
        && buf[buf.len() - 6..buf.len() - 1] == [b'Z', 0, 0, 0, 5]
        && matches!(buf[buf.len() - 1], b'I' | b'T' | b'E')
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if got.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                if ends_ready(got) {
                    self.armed = false;
                } else if self.armed {
                    self.arm();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.armed && self.sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "database did not answer in time",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = out
            && n > 0
            && !self.armed
        {
            self.arm();
            // Register the deadline with this task now: the connection may not poll its read
            // half again before the answer (or the deadline) wakes it.
            let _ = self.sleep.as_mut().poll(cx);
        }
        out
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

pub(crate) type WatchedConnection = Connection<Watched<TcpStream>, NoTlsStream>;

/// Connect to the first reachable TCP host of `config`, within `timeout`, with keepalives and a
/// `tcp_user_timeout` on the socket, and the answer deadline around it.
pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<(Client, WatchedConnection), tokio_postgres::Error> {
    let ports = config.get_ports();
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, "store.url names no TCP host");
    for (i, host) in config.get_hosts().iter().enumerate() {
        let Host::Tcp(name) = host else {
            last = io::Error::new(io::ErrorKind::Unsupported, "Unix-socket hosts are not supported in store.url");
            continue;
        };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect((name.as_str(), port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = e;
                continue;
            }
            Err(_) => {
                last = io::Error::new(io::ErrorKind::TimedOut, "connecting to the database timed out");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tune_socket(&stream, timeout);
        let watched = Watched::new(stream, timeout);
        return match tokio::time::timeout(timeout, config.connect_raw(watched, NoTls)).await {
            Ok(out) => out,
            Err(_) => {
                Err(io_err(io::Error::new(io::ErrorKind::TimedOut, "database handshake timed out"), config).await)
            }
        };
    }
    Err(io_err(last, config).await)
}

/// Keepalives find a peer that vanished while the connection idles; `tcp_user_timeout` one that
/// stopped acknowledging what was sent.
fn tune_socket(stream: &TcpStream, timeout: Duration) {
    let sock = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new().with_time(timeout).with_interval(timeout / 3);
    let _ = sock.set_tcp_keepalive(&ka);
    #[cfg(target_os = "linux")]
    let _ = sock.set_tcp_user_timeout(Some(timeout));
}

/// A tokio-postgres error carrying `e` (the crate has no public constructor; a handshake on a
/// stream that fails at once yields exactly that).
async fn io_err(e: io::Error, config: &tokio_postgres::Config) -> tokio_postgres::Error {
    match config.connect_raw(Failed(Some(e)), NoTls).await {
        Err(err) => err,
        Ok(_) => unreachable!("a handshake cannot succeed on a stream that fails every call"),
    }
}

/// A stream whose every call fails with the one error it holds.
struct Failed(Option<io::Error>);

impl Failed {
    fn take(&mut self) -> io::Error {
        self.0.take().unwrap_or_else(|| io::Error::other("connection failed"))
    }
}

impl AsyncRead for Failed {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.take()))
    }
}

impl AsyncWrite for Failed {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(self.take()))
    }
    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.take()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The pool's way to open a connection: `connect` above, driven on its own task.
pub(crate) struct WatchedConnect {
    pub timeout: Duration,
}

impl deadpool_postgres::Connect for WatchedConnect {
    fn connect(
        &self,
        pg_config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>> {
        let cfg = pg_config.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let (client, conn) = connect(&cfg, timeout).await?;
            let task = tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "store: database connection ended");
                }
            });
            Ok((client, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_for_query_at_the_end() {
        assert!(ends_ready(b"C\0\0\0\x0dSELECT 1\0Z\0\0\0\x05I"));
        assert!(ends_ready(b"Z\0\0\0\x05T"));
        assert!(!ends_ready(b"Z\0\0\0\x05X"));
        assert!(!ends_ready(b"D\0\0\0\x0b\0\x01\0\0\0\x01Z"));
        assert!(!ends_ready(b"Z\0\0"));
    }
}
