//! `[turn]` and `[iroh_relay]` (issue 28): the embedded TURN server for calls and the embedded iroh
//! relay for webxdc realtime channels. Both are on by default, as in the reference relay.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::units::ConfDuration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Turn {
    /// UDP addresses of the STUN/TURN listener; an empty list disables TURN. The first address's
    /// port is the one advertised in METADATA.
    #[serde(deserialize_with = "super::addr_list")]
    pub listen: Vec<SocketAddr>,
    /// The address relay sockets bind to and that is advertised to clients. Empty: the address
    /// of the interface that routes to the internet (no packet is sent to find it).
    pub relay_ip: String,
    /// Relay ports, "MIN-MAX" (both included).
    pub relay_ports: String,
    /// Credentials handed out over METADATA stay valid this long (TURN REST API style).
    pub credential_ttl: ConfDuration,
    /// Allocations at once per TURN username (each METADATA answer is one username).
    pub max_allocations_per_user: usize,
    /// Allocations at once in all.
    pub max_allocations: usize,
    /// FOR TESTS ONLY: allow relay addresses and peers in loopback and private ranges. In
    /// production such peers would let a client reach the relay host's own network.
    pub allow_private_peers: bool,
}

impl Default for Turn {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 3478))],
            relay_ip: String::new(),
            relay_ports: "49152-65535".into(),
            credential_ttl: ConfDuration::from_secs(5 * 86_400),
            max_allocations_per_user: 10,
            max_allocations: 2000,
            allow_private_peers: false,
        }
    }
}

impl Turn {
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// `relay_ports` as (min, max); validated at load.
    pub fn port_range(&self) -> Option<(u16, u16)> {
        let (a, b) = self.relay_ports.split_once('-')?;
        let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
        (a > 0 && a <= b).then_some((a, b))
    }

    pub(super) fn validate(&self, errs: &mut Vec<String>) {
        if self.port_range().is_none() {
            errs.push(format!("turn.relay_ports {:?} must be \"MIN-MAX\" with 0 < MIN <= MAX", self.relay_ports));
        }
        if !self.relay_ip.trim().is_empty() && self.relay_ip.trim().parse::<IpAddr>().is_err() {
            errs.push(format!("turn.relay_ip {:?} is not an IP address", self.relay_ip));
        }
        if self.credential_ttl.get().as_secs() < 60 {
            errs.push("turn.credential_ttl must be at least 1m".into());
        }
        if self.max_allocations == 0 || self.max_allocations_per_user == 0 {
            errs.push("turn.max_allocations and turn.max_allocations_per_user must be at least 1".into());
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IrohRelay {
    /// Serve the embedded iroh relay at `/relay`, `/ping` and `/generate_204` of the HTTPS
    /// listener and advertise `https://<mail_domain>` (unless `server_metadata.iroh_relay` names
    /// an external relay, which then wins).
    pub enabled: bool,
}

impl Default for IrohRelay {
    fn default() -> Self {
        Self { enabled: true }
    }
}
