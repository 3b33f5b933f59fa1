//! Embedded iroh relay (issue 28): real `iroh-relay` 0.35 clients (the version Delta Chat core
//! speaks) handshake through chatrelay's HTTPS listener, over the relay protocol and over
//! WebSocket, and exchange a packet; the probe paths answer; METADATA advertises the relay.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use iroh_base::{NodeId, RelayUrl, SecretKey};
use iroh_relay::client::{Client, ClientBuilder, ReceivedMessage, SendMessage};
use iroh_relay::dns::DnsResolver;
use iroh_relay::http::Protocol;

use crate::harness::Relay;
use crate::imap_helpers::*;

async fn irohrelay_metadata(relay: &Relay) -> Option<String> {
    let addr = relay.new_address();
    let mut c = login(relay, &addr).await;
    let r = c.imap("m", "GETMETADATA \"\" (/shared/vendor/deltachat/irohrelay)").await;
    assert_eq!(last(&r), "m OK Getmetadata completed.", "{r:?}");
    (r.len() > 1).then(|| r[1].trim_end_matches(')').to_string())
}

async fn connect(relay: &Relay, proto: Protocol) -> (Client, NodeId) {
    let url: RelayUrl = format!("https://{}:{}", relay.ip, relay.ports.https).parse().expect("url");
    let key = SecretKey::generate(rand08::rngs::OsRng);
    let id = key.public();
    let builder = ClientBuilder::new(url, key, DnsResolver::new()).protocol(proto).insecure_skip_cert_verify(true);
    let client = tokio::time::timeout(Duration::from_secs(10), builder.connect())
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("iroh relay handshake ({proto:?}) failed: {e:#}\n{}", relay.log()));
    (client, id)
}

/// Send from `a` to `b` until `b` receives it (the server learns of `b` asynchronously).
async fn exchange(a: &mut Client, a_id: NodeId, b: &mut Client, b_id: NodeId, payload: &'static [u8]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "packet never arrived");
        a.send(SendMessage::SendPacket(b_id, bytes::Bytes::from_static(payload))).await.expect("send");
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(msg)) = tokio::time::timeout_at(until, b.next()).await {
            if let Ok(ReceivedMessage::ReceivedPacket { remote_node_id, data }) = msg {
                assert_eq!(remote_node_id, a_id);
                assert_eq!(&data[..], payload);
                return;
            }
        }
    }
}

#[tokio::test]
async fn iroh_relay_clients_meet_through_https() {
    let relay = Relay::start("iroh_relay.enabled = true\n");
    assert_eq!(irohrelay_metadata(&relay).await.as_deref(), Some("https://chat.test"));
    // The probes Delta Chat / iroh use.
    let r = relay.https("GET", "/generate_204").await;
    assert_eq!(r.status, 204, "{:?}", String::from_utf8_lossy(&r.body));
    let r = relay.https("GET", "/ping").await;
    assert_eq!(r.status, 200);
    // A plain GET of /relay without an upgrade is refused by the relay, not by our 404.
    let r = relay.https("GET", "/relay").await;
    assert_ne!(r.status, 404);
    for proto in [Protocol::Relay, Protocol::Websocket] {
        let (mut a, a_id) = connect(&relay, proto).await;
        let (mut b, b_id) = connect(&relay, proto).await;
        exchange(&mut a, a_id, &mut b, b_id, b"hello over the embedded relay").await;
        exchange(&mut b, b_id, &mut a, a_id, b"and back").await;
    }
}

#[tokio::test]
async fn iroh_relay_off_or_external() {
    let relay = Relay::start("iroh_relay.enabled = false\n");
    assert_eq!(irohrelay_metadata(&relay).await, None);
    assert_eq!(relay.https("GET", "/relay").await.status, 404);
    assert_eq!(relay.https("GET", "/generate_204").await.status, 404);
    // An external relay URL wins over the embedded one.
    let relay =
        Relay::start("iroh_relay.enabled = true\n[server_metadata]\niroh_relay = \"https://iroh.example.org\"\n");
    assert_eq!(irohrelay_metadata(&relay).await.as_deref(), Some("https://iroh.example.org"));
}
