//! The one in-test authoritative DNS server on loopback (UDP and TCP), shared by the delivery tests
//! (MX, A, AAAA, TXT of test domains, so relays find each other with
//! `delivery.resolver = "127.0.0.1:<port>"`) and `chatrelay dns` (any record type through `set`).
//! Names not in the zone get NXDOMAIN; names listed in `servfail` get SERVFAIL. It serves until
//! the test's runtime ends.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Default)]
struct Zone {
    records: HashMap<(String, RecordType), Vec<RData>>,
    names: HashSet<String>,
    servfail: HashSet<String>,
    /// Every name asked, in order (for counting lookups, e.g. DKIM keys per message).
    asked: Vec<String>,
    /// DNSSEC-signed zones (DANE tests, `dane_zone`): answers inside get an RRSIG.
    signed: Vec<Arc<crate::dane_zone::SignedZone>>,
}

#[derive(Clone)]
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
}

fn key(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

impl TestDns {
    /// Serve on 127.0.0.1 on a free port (UDP and TCP share the number).
    pub async fn start() -> Self {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("udp bind");
            let port = udp.local_addr().expect("addr").port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("addr");
        let zone = Arc::new(Mutex::new(Zone::default()));
        let z = zone.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else { return };
                if let Some(resp) = answer(&z, &buf[..n], true) {
                    let _ = udp.send_to(&resp, peer).await;
                }
            }
        });
        let z = zone.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else { return };
                let z = z.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = s.read_u16().await else { return };
                        let mut q = vec![0u8; len as usize];
                        if s.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        let Some(resp) = answer(&z, &q, false) else { return };
                        if s.write_u16(resp.len() as u16).await.is_err() || s.write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, zone }
    }

    pub fn resolver(&self) -> String {
        self.addr.to_string()
    }

    fn add(&self, name: &str, rt: RecordType, data: RData) {
        let mut z = self.zone.lock().expect("zone");
        z.names.insert(key(name));
        z.records.entry((key(name), rt)).or_default().push(data);
    }

    /// Replace the records of type `rt` at `name` (any record type, e.g. CNAME, SRV, CAA).
    pub fn set(&self, name: &str, rt: RecordType, data: Vec<RData>) {
        let mut z = self.zone.lock().expect("zone");
        z.names.insert(key(name));
        z.records.insert((key(name), rt), data);
    }

    pub fn mx(&self, domain: &str, pref: u16, host: &str) {
        let exchange = Name::from_ascii(key(host)).expect("mx host name");
        self.add(domain, RecordType::MX, RData::MX(MX::new(pref, exchange)));
    }

    pub fn null_mx(&self, domain: &str) {
        self.add(domain, RecordType::MX, RData::MX(MX::new(0, Name::root())));
    }

    pub fn a(&self, host: &str, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.add(host, RecordType::A, RData::A(A(v4))),
            IpAddr::V6(v6) => self.add(host, RecordType::AAAA, RData::AAAA(AAAA(v6))),
        }
    }

    /// A TXT record; long values are split into 255-byte strings.
    pub fn txt(&self, name: &str, value: &str) {
        let parts: Vec<String> =
            value.as_bytes().chunks(255).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
        self.add(name, RecordType::TXT, RData::TXT(TXT::new(parts)));
    }

    /// Replace every TXT record of `name`.
    pub fn set_txt(&self, name: &str, value: &str) {
        self.zone.lock().expect("zone").records.remove(&(key(name), RecordType::TXT));
        self.txt(name, value);
    }

    /// The DKIM record of `selector` at `domain` for a public key (base64 SPKI).
    pub fn dkim(&self, selector: &str, domain: &str, p: &str) {
        self.set_txt(&format!("{selector}._domainkey.{domain}"), &format!("v=DKIM1; k=rsa; p={p}"));
    }

    /// A name that exists (no records of any asked type) — for implicit MX.
    pub fn exists(&self, name: &str) {
        self.zone.lock().expect("zone").names.insert(key(name));
    }

    /// How many queries asked for a name ending in `suffix` so far.
    pub fn queries_for(&self, suffix: &str) -> usize {
        let suffix = key(suffix);
        self.zone.lock().expect("zone").asked.iter().filter(|n| n.ends_with(&suffix)).count()
    }

    /// Sign every answer under `zone.apex` and serve its DNSKEY (issue 29, DANE).
    pub fn sign_zone(&self, zone: Arc<crate::dane_zone::SignedZone>) {
        self.set(&zone.apex, RecordType::DNSKEY, vec![zone.dnskey()]);
        self.zone.lock().expect("zone").signed.push(zone);
    }

    pub fn servfail(&self, name: &str) {
        self.zone.lock().expect("zone").servfail.insert(key(name));
    }
}

fn answer(zone: &Mutex<Zone>, q: &[u8], udp: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(q).ok()?;
    let query = req.queries.first()?.clone();
    let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_query(query.clone());
    if let Some(e) = &req.edns {
        resp.set_edns(e.clone());
    }
    let name = key(&query.name.to_ascii());
    {
        let mut z = zone.lock().ok()?;
        z.asked.push(name.clone());
        if z.servfail.contains(&name) {
            resp.metadata.response_code = ResponseCode::ServFail;
        } else if !z.names.contains(&name) {
            resp.metadata.response_code = ResponseCode::NXDomain;
        } else if let Some(list) = z.records.get(&(name.clone(), query.query_type)) {
            let owner = Name::from_ascii(&name).ok()?;
            for d in list {
                resp.add_answer(Record::from_rdata(owner.clone(), 60, d.clone()));
            }
            if let Some(sz) = z.signed.iter().find(|sz| sz.covers(&name))
                && let Some(sig) = sz.sign(&owner, query.query_type, list)
            {
                resp.add_answer(sig);
            }
        }
    }
    let bytes = resp.to_vec().ok()?;
    if udp && bytes.len() > req.max_payload() as usize {
        let mut t = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
        t.metadata.truncation = true;
        t.add_query(query);
        return t.to_vec().ok();
    }
    Some(bytes)
}

/// A remote mail domain that DKIM-signs its messages, with its key published in its own
/// `TestDns`; a relay started with `resolver_toml()` verifies those signatures.
pub struct SigningDomain {
    pub dns: TestDns,
    pub domain: String,
    signer: relay::dkim::Signer,
    _dir: tempfile::TempDir,
}

impl SigningDomain {
    pub async fn start(domain: &str) -> Self {
        let dns = TestDns::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("dkim.pem");
        relay::outbound::dkim_key::ensure(&key).expect("dkim key");
        let signer = relay::dkim::Signer::load(&key, domain, "dkim").expect("signer");
        dns.dkim("dkim", domain, &signer.public_key_b64());
        Self { dns, domain: domain.to_string(), signer, _dir: dir }
    }

    /// The private key (PEM) and the public key (`p=` value) of selector `dkim`.
    pub fn key_pem(&self) -> Vec<u8> {
        std::fs::read(self._dir.path().join("dkim.pem")).expect("dkim key")
    }

    pub fn public_key_b64(&self) -> String {
        self.signer.public_key_b64()
    }

    /// `[delivery]` table pointing the relay at this domain's DNS.
    pub fn resolver_toml(&self) -> String {
        format!("[delivery]\nresolver = \"{}\"\n", self.dns.resolver())
    }

    /// The `DKIM-Signature` header (CRLF-terminated) for the CRLF form of `eml`.
    pub fn header(&self, eml: &str) -> String {
        let crlf = eml.replace("\r\n", "\n").replace('\n', "\r\n");
        self.signer.header(crlf.as_bytes()).expect("sign")
    }

    /// The message with CRLF line ends and a DKIM signature of this domain prepended.
    pub fn sign(&self, eml: &str) -> String {
        let crlf = eml.replace("\r\n", "\n").replace('\n', "\r\n");
        String::from_utf8(self.signer.sign(crlf.as_bytes()).expect("sign")).expect("utf-8")
    }
}
