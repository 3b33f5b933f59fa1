//! Port 443 demultiplexing (HTTP-2, HTTP-3): read the ClientHello, choose a rustls config by the
//! ALPN offer, finish the handshake, then run IMAP, SMTP submission or HTTPS on the stream.
//! An unknown or missing ALPN offer is HTTPS without ALPN, never a failed handshake.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::context::{ConnInfo, Ctx};
use crate::tls::{Alpn443, MaybeTls};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Pick the route from the offered protocols. Mail protocols win over HTTP when both are offered.
pub(crate) fn choose<'a>(offer: Option<impl Iterator<Item = &'a [u8]>>) -> Alpn443 {
    let Some(offer) = offer else { return Alpn443::HttpsNoAlpn };
    let (mut imap, mut smtp, mut http) = (false, false, false);
    for p in offer {
        match p {
            b"imap" => imap = true,
            b"smtp" => smtp = true,
            b"h2" | b"http/1.1" => http = true,
            _ => {}
        }
    }
    if imap {
        Alpn443::Imap
    } else if smtp {
        Alpn443::Smtp
    } else if http {
        Alpn443::Https
    } else {
        Alpn443::HttpsNoAlpn
    }
}

pub(crate) async fn route(ctx: Ctx, tcp: TcpStream, conn: ConnInfo) {
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let route = choose(start.client_hello().alpn());
        // HTTP-3: mail protocols get the TLS 1.3-only config, so an older client fails here.
        let stream = start.into_stream(ctx.tls.port443_config(route)).await?;
        Ok::<_, std::io::Error>((route, stream))
    };
    let res = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => r,
    };
    let (route, stream) = match res {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::debug!(conn = conn.id, error = %e, "tls handshake on 443 failed");
            return;
        }
        Err(_) => return,
    };
    match route {
        Alpn443::Imap => crate::imap::serve(ctx, MaybeTls::Tls(Box::new(stream)), conn).await,
        Alpn443::Smtp => {
            crate::smtp::serve(ctx, MaybeTls::Tls(Box::new(stream)), crate::smtp::Kind::Submissions, conn).await
        }
        Alpn443::Https | Alpn443::HttpsNoAlpn => {
            // The WebSocket tunnels hold IMAP and submission to TLS 1.3 like ALPN does (HTTP-3).
            let tls13 = stream.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
            let router = super::routes::https(ctx.clone()).layer(axum::Extension(super::ws::OverTls { tls13 }));
            super::serve_conn(&ctx, stream, conn, router).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(offer: &[&[u8]]) -> Alpn443 {
        choose(Some(offer.iter().copied()))
    }

    #[test]
    fn alpn_choice() {
        assert_eq!(choose(None::<std::iter::Empty<&[u8]>>), Alpn443::HttpsNoAlpn);
        assert_eq!(pick(&[b"imap"]), Alpn443::Imap);
        assert_eq!(pick(&[b"h2", b"smtp"]), Alpn443::Smtp);
        assert_eq!(pick(&[b"h2", b"http/1.1"]), Alpn443::Https);
        assert_eq!(pick(&[b"xmpp-client", b"acme-tls/1"]), Alpn443::HttpsNoAlpn);
        assert_eq!(pick(&[]), Alpn443::HttpsNoAlpn);
    }
}
