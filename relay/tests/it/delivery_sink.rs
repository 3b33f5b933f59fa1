//! A tiny SMTP server on loopback standing in for a remote MX (an external thing): STARTTLS with
//! a self-signed certificate, per-recipient replies chosen by the local part
//! (`bounce*` → 550, `later*` → 451, else 250), and a record of every message it accepted.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
    pub ehlo: String,
}

#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Sessions open now, and the most ever open at once.
    pub active: Arc<AtomicUsize>,
    pub max_active: Arc<AtomicUsize>,
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["sink.test".to_string()]).expect("cert");
    acceptor_for(vec![CertificateDer::from(ck.cert.der().to_vec())], ck.signing_key.serialize_der())
}

pub fn acceptor_for(chain: Vec<CertificateDer<'static>>, key_pkcs8: Vec<u8>) -> tokio_rustls::TlsAcceptor {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

impl Sink {
    /// Listen on `addr` (port 0 for any). `starttls` false: a server that never offers it.
    pub async fn start(addr: &str, starttls: bool) -> Self {
        Self::start_with_tls(addr, starttls, tls_acceptor(), None).await
    }

    /// Every DATA reply comes after `delay`, so sessions overlap (concurrency tests).
    pub async fn start_slow(addr: &str, delay: Duration) -> Self {
        Self::start_with_tls(addr, true, tls_acceptor(), Some(delay)).await
    }

    /// With a given certificate chain and PKCS#8 key (e.g. one signed by a test CA).
    pub async fn start_with_cert(addr: &str, chain: Vec<CertificateDer<'static>>, key_pkcs8: Vec<u8>) -> Self {
        Self::start_with_tls(addr, true, acceptor_for(chain, key_pkcs8), None).await
    }

    async fn start_with_tls(
        addr: &str,
        starttls: bool,
        acceptor: tokio_rustls::TlsAcceptor,
        delay: Option<Duration>,
    ) -> Self {
        let listener = TcpListener::bind(addr).await.expect("sink bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let (active, max_active) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (act, max) = (active.clone(), max_active.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (rec, acceptor, act, max) = (rec.clone(), acceptor.clone(), act.clone(), max.clone());
                tokio::spawn(async move {
                    let now = act.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    // Counted until QUIT arrives (dropped there, before the 221): the relay frees
                    // its per-domain slot on the 221, so a count held past it would overlap the
                    // next connection.
                    let mut guard = Some(Leave(act));
                    let mut io = BufReader::new(tcp);
                    let _ = io.get_mut().write_all(b"220 sink.test ESMTP\r\n").await;
                    let mut ehlo = String::new();
                    if session(&mut io, starttls, false, &rec, &mut ehlo, delay, &mut guard).await == Some(true) {
                        let Ok(tls) = acceptor.accept(io.into_inner()).await else { return };
                        let mut io = BufReader::new(tls);
                        let _ = session(&mut io, starttls, true, &rec, &mut ehlo, delay, &mut guard).await;
                    }
                });
            }
        });
        Self { addr, received, active, max_active }
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

struct Leave(Arc<AtomicUsize>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Run commands until QUIT/EOF (None) or STARTTLS accepted (Some(true)).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    offer_tls: bool,
    secure: bool,
    rec: &Arc<Mutex<Vec<Received>>>,
    ehlo: &mut String,
    delay: Option<Duration>,
    guard: &mut Option<Leave>,
) -> Option<bool> {
    let mut mail_from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_string();
        let upper = line.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO ") {
            *ehlo = line[5..].to_string();
            if offer_tls && !secure {
                "250-sink.test\r\n250-PIPELINING\r\n250 STARTTLS".into()
            } else {
                "250-sink.test\r\n250 8BITMIME".into()
            }
        } else if upper == "STARTTLS" && offer_tls && !secure {
            io.get_mut().write_all(b"220 2.0.0 Ready to start TLS\r\n").await.ok()?;
            return Some(true);
        } else if upper.starts_with("MAIL FROM:") {
            mail_from = line[10..].trim().trim_matches(['<', '>']).to_string();
            rcpts.clear();
            "250 2.1.0 Ok".into()
        } else if upper.starts_with("RCPT TO:") {
            let r = line[8..].trim().trim_matches(['<', '>']).to_string();
            if r.starts_with("bounce") {
                format!("550 5.1.1 <{r}>: Recipient address rejected: User unknown")
            } else if r.starts_with("later") {
                "451 4.7.1 Try again later".into()
            } else {
                rcpts.push(r);
                "250 2.1.5 Ok".into()
            }
        } else if upper == "DATA" {
            io.get_mut().write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await.ok()?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if io.read_until(b'\n', &mut l).await.ok()? == 0 {
                    return None;
                }
                if l == b".\r\n" {
                    break;
                }
                let l = if l.starts_with(b"..") { l[1..].to_vec() } else { l };
                data.extend_from_slice(&l);
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            rec.lock().ok()?.push(Received {
                mail_from: mail_from.clone(),
                rcpts: rcpts.clone(),
                data,
                ehlo: ehlo.clone(),
            });
            "250 2.0.0 Ok: queued".into()
        } else if upper == "QUIT" {
            guard.take();
            let _ = io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await;
            return None;
        } else if upper == "RSET" || upper == "NOOP" {
            "250 2.0.0 Ok".into()
        } else {
            "502 5.5.2 Error: command not recognized".into()
        };
        io.get_mut().write_all(format!("{reply}\r\n").as_bytes()).await.ok()?;
    }
}
