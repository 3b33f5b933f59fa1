//! Issue 28: strict ALPN on the implicit-TLS ports (ALPACA) and the defaults that match the
//! reference (appversions served on a default config).

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::harness::*;
use crate::imap_helpers::{assert_ok, last};

/// A TLS handshake to `addr` offering `alpn`: Ok(negotiated protocol) or Err(the error text).
async fn handshake(addr: &str, alpn: &[&[u8]]) -> Result<Option<Vec<u8>>, String> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(client_config(alpn));
    let name = rustls::pki_types::ServerName::try_from("chat.test").expect("name");
    match tokio::time::timeout(T, connector.connect(name, tcp)).await.expect("handshake hangs") {
        Ok(tls) => Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)),
        Err(e) => Err(e.to_string()),
    }
}

fn refused_for_alpn(r: Result<Option<Vec<u8>>, String>, what: &str) {
    match r {
        Err(e) => assert!(e.contains("NoApplicationProtocol"), "{what}: {e}"),
        Ok(p) => panic!("{what}: handshake completed with ALPN {p:?}"),
    }
}

/// 993 and 465 refuse an ALPN offer without `imap` resp. `smtp` with `no_application_protocol`;
/// the right protocol or no ALPN at all works, and sessions run. STARTTLS (587) and 443 keep
/// accepting any offer (SMTP-10, HTTP-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_alpn_on_implicit_tls_ports() {
    let relay = Relay::start("");
    let imaps = relay.addr(relay.ports.imaps);
    let smtps = relay.addr(relay.ports.submissions);

    refused_for_alpn(handshake(&imaps, &[b"http/1.1"]).await, "993 with http/1.1");
    refused_for_alpn(handshake(&imaps, &[b"h2", b"http/1.1"]).await, "993 with a browser's offer");
    refused_for_alpn(handshake(&imaps, &[b"smtp"]).await, "993 with smtp");
    refused_for_alpn(handshake(&smtps, &[b"http/1.1"]).await, "465 with http/1.1");
    refused_for_alpn(handshake(&smtps, &[b"imap"]).await, "465 with imap");
    assert_eq!(handshake(&imaps, &[]).await, Ok(None), "993 without ALPN");
    assert_eq!(handshake(&imaps, &[b"h2", b"imap"]).await, Ok(Some(b"imap".to_vec())));
    assert_eq!(handshake(&smtps, &[]).await, Ok(None), "465 without ALPN");
    assert_eq!(handshake(&smtps, &[b"smtp"]).await, Ok(Some(b"smtp".to_vec())));

    // Sessions after each accepted handshake: as Delta Chat connects (no ALPN on 993/465, ALPN
    // imap/smtp elsewhere).
    for alpn in [&[][..], &[&b"imap"[..]][..]] {
        let mut c = Lines::tls_alpn(&imaps, alpn).await;
        assert!(c.line().await.expect("greeting").starts_with("* OK [CAPABILITY"));
        let email = relay.new_address();
        assert_ok(&c.imap("l", &format!("LOGIN {email} {PASSWORD}")).await);
    }
    for alpn in [&[][..], &[&b"smtp"[..]][..]] {
        let mut c = Lines::tls_alpn(&smtps, alpn).await;
        assert!(c.reply().await.starts_with("220 "));
        assert!(c.cmd("EHLO x.test").await.contains("AUTH PLAIN"));
    }

    // STARTTLS on 587 still takes any offer (SMTP-10): only implicit TLS is ALPACA-exposed.
    let mut c = Lines::plain(&relay.addr(relay.ports.submission)).await;
    assert!(c.reply().await.starts_with("220 "));
    c.cmd("EHLO x.test").await;
    assert!(c.cmd("STARTTLS").await.starts_with("220"));
    let inner = c.io.into_inner();
    let tls = tls_wrap(inner, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let mut c = Lines { io: tokio::io::BufReader::new(Box::new(tls)) };
    assert!(c.cmd("EHLO x.test").await.contains("AUTH PLAIN"));

    // 443 keeps routing by ALPN (HTTP-2): imap, smtp, and HTTPS for anything else.
    let https = relay.addr(relay.ports.https);
    assert_eq!(handshake(&https, &[b"imap"]).await, Ok(Some(b"imap".to_vec())));
    assert_eq!(handshake(&https, &[b"smtp"]).await, Ok(Some(b"smtp".to_vec())));
    assert_eq!(handshake(&https, &[b"xmpp-client"]).await, Ok(None));
    assert_eq!(handshake(&https, &[b"h2", b"http/1.1"]).await, Ok(Some(b"h2".to_vec())));
}

/// `tls.strict_alpn = false` restores the lenient handshake on 993/465.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_alpn_can_be_turned_off() {
    let mut relay = Relay::prepare("chat.test", "127.0.0.1", Ports::new(), "");
    let toml = std::fs::read_to_string(&relay.config_path).expect("config");
    let toml = toml.replace("mode = \"self-signed\"\n", "mode = \"self-signed\"\nstrict_alpn = false\n");
    std::fs::write(&relay.config_path, toml).expect("config");
    relay.spawn();
    assert_eq!(handshake(&relay.addr(relay.ports.imaps), &[b"http/1.1"]).await, Ok(None));
    assert_eq!(handshake(&relay.addr(relay.ports.submissions), &[b"http/1.1"]).await, Ok(None));
}

/// A relay on its default configuration answers GETMETADATA appversions with the project's own
/// list, compact on one line, in the shape the reference relay's online test checks;
/// `appversions = ""` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appversions_served_by_default() {
    let relay = Relay::start("");
    let email = relay.new_address();
    let mut c = Lines::tls(&relay.addr(relay.ports.imaps)).await;
    c.line().await.expect("greeting");
    assert_ok(&c.imap("l", &format!("LOGIN {email} {PASSWORD}")).await);
    c.send("a01 GETMETADATA \"\" /shared/vendor/deltachat/appversions").await;
    let head = c.line().await.expect("line");
    assert!(head.starts_with("* METADATA \"\" (/shared/vendor/deltachat/appversions {"), "{head}");
    let value = c.line().await.expect("value");
    let json = value.strip_suffix(')').expect("closing paren");
    let n: usize = head.rsplit_once('{').and_then(|(_, r)| r.trim_end_matches('}').parse().ok()).expect("length");
    assert_eq!(json.len(), n);
    let v: serde_json::Value = serde_json::from_str(json).expect("JSON");
    let clients = v["clients"].as_array().expect("clients");
    assert!(!clients.is_empty());
    let src = &clients[0]["sources"][0];
    assert!(src["versionInteger"].as_u64().is_some_and(|n| n > 0 && n < 1 << 32));
    assert!(src["downloadUrl"].as_str().is_some_and(|u| u.starts_with("https://")));
    assert_eq!(last(&c.until_tag("a01").await), "a01 OK Getmetadata completed.");
    let mut w = c.io.into_inner();
    let _ = w.shutdown().await;

    let off = Relay::start("[server_metadata]\nappversions = \"\"\n");
    let mut c = Lines::tls(&off.addr(off.ports.imaps)).await;
    c.line().await.expect("greeting");
    assert_ok(&c.imap("l", &format!("LOGIN {} {PASSWORD}", off.new_address())).await);
    let r = c.imap("a02", "GETMETADATA \"\" /shared/vendor/deltachat/appversions").await;
    assert!(!r.iter().any(|l| l.contains("clients")), "{r:?}");
    assert_ok(&r);
}
