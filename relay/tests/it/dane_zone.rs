//! A DNSSEC-signed test zone for the DANE tests (issue 29): one Ed25519 key (KSK = ZSK) that is
//! also the resolver's trust anchor (`delivery.dnssec_trust_anchor`), so a validating resolver
//! proves the zone's answers Secure without a chain to the root. `TestDns` adds an RRSIG to every
//! answer inside the zone and serves the apex DNSKEY.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};

use hickory_resolver::proto::dnssec::crypto::Ed25519SigningKey;
use hickory_resolver::proto::dnssec::rdata::{DNSKEY, DNSSECRData, RRSIG};
use hickory_resolver::proto::dnssec::{DnssecSigner, PublicKey, SigningKey};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};

pub struct SignedZone {
    pub apex: String,
    signer: DnssecSigner,
    dnskey: DNSKEY,
    /// Serve broken signatures (a Bogus zone).
    pub bogus: AtomicBool,
}

impl SignedZone {
    pub fn new(apex: &str) -> Self {
        let apex = format!("{}.", apex.trim_end_matches('.').to_ascii_lowercase());
        let pkcs8 = Ed25519SigningKey::generate_pkcs8().unwrap();
        let key = Ed25519SigningKey::from_pkcs8(&pkcs8).unwrap();
        let dnskey = DNSKEY::new(true, true, false, key.to_public_key().unwrap());
        let signer = DnssecSigner::new(
            dnskey.clone(),
            Box::new(key),
            Name::from_ascii(&apex).unwrap(),
            std::time::Duration::from_secs(86_400),
        );
        Self { apex, signer, dnskey, bogus: AtomicBool::new(false) }
    }

    /// The trust anchor file line (zone-file syntax) for this zone's key.
    pub fn trust_anchor(&self) -> String {
        use base64::Engine as _;
        let key = base64::prelude::BASE64_STANDARD.encode(self.dnskey.public_key().public_bytes());
        format!("{} 3600 IN DNSKEY 257 3 15 {key}\n", self.apex)
    }

    pub fn dnskey(&self) -> RData {
        RData::DNSSEC(DNSSECRData::DNSKEY(self.dnskey.clone()))
    }

    pub fn covers(&self, name: &str) -> bool {
        name == self.apex || name.ends_with(&format!(".{}", self.apex))
    }

    /// The RRSIG record over `data` (type `rt`) at `owner`.
    pub fn sign(&self, owner: &Name, rt: RecordType, data: &[RData]) -> Option<Record> {
        let mut set = RecordSet::with_ttl(owner.clone(), rt, 60);
        for d in data {
            set.add_rdata(d.clone());
        }
        let inception = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let rrsig = RRSIG::from_rrset(&set, DNSClass::IN, inception, &self.signer).ok()?;
        let rrsig = if self.bogus.load(Ordering::SeqCst) {
            let mut sig = rrsig.sig().to_vec();
            if let Some(b) = sig.first_mut() {
                *b ^= 0xff;
            }
            RRSIG::from_sig(rrsig.input().clone(), sig)
        } else {
            rrsig
        };
        Some(Record::from_rdata(owner.clone(), 60, RData::DNSSEC(DNSSECRData::RRSIG(rrsig))))
    }
}
