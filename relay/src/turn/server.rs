//! The TURN allocation server (RFC 8656 over UDP): Binding, Allocate, Refresh, CreatePermission,
//! ChannelBind, Send/Data indications and ChannelData, with long-term credentials (RFC 8489
//! §9.2) checked against TURN REST usernames.
//!
//! State is in memory only: a restart drops allocations, and clients allocate again. Every table
//! is bounded: allocations by `turn.max_allocations` (and per username), permissions and channels
//! per allocation by constants below.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use md5::Digest as _;
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::stun::{self, Builder, Message};
use crate::config::Config;
use crate::context::Ctx;
use crate::server::ServeError;

const DEFAULT_LIFETIME: u32 = 600;
const MAX_LIFETIME: u32 = 3600;
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
const NONCE_LIFETIME: u64 = 3600;
const MAX_PERMISSIONS: usize = 64;
const MAX_CHANNELS: usize = 64;
const SWEEP_EVERY: Duration = Duration::from_secs(5);
const SOFTWARE: &[u8] = b"chatrelay";

/// An allocation's 5-tuple on this server: (listener index, client address).
type Key = (usize, SocketAddr);

struct Alloc {
    username: String,
    relay: Arc<UdpSocket>,
    expires: Instant,
    perms: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    /// The Allocate transaction and its answer, resent on a retransmission (RFC 8656 §7.2).
    txid: [u8; 12],
    answer: Vec<u8>,
    task: AbortHandle,
}

impl Alloc {
    fn permitted(&self, peer: IpAddr, now: Instant) -> bool {
        self.perms.get(&peer.to_canonical()).is_some_and(|t| *t > now)
    }
    fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels.iter().find(|(_, (p, t))| *p == peer && *t > now).map(|(c, _)| *c)
    }
}

#[derive(Default)]
struct State {
    allocs: HashMap<Key, Alloc>,
    per_user: HashMap<String, usize>,
}

impl State {
    fn remove(&mut self, k: &Key) {
        if let Some(a) = self.allocs.remove(k) {
            a.task.abort();
            if let Some(n) = self.per_user.get_mut(&a.username) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_user.remove(&a.username);
                }
            }
        }
    }
}

struct Shared {
    realm: String,
    rest_key: [u8; 32],
    /// Signs nonces; random per process, so a restart makes old nonces stale (438, re-auth).
    nonce_key: [u8; 32],
    relay_ip: IpAddr,
    ports: (u16, u16),
    allow_private: bool,
    max_per_user: usize,
    max_total: usize,
    sockets: Vec<Arc<UdpSocket>>,
    state: Mutex<State>,
}

pub struct Server {
    shared: Arc<Shared>,
}

/// A request's answer: bytes to send back, or nothing (indications, dropped junk).
type Answer = Option<Vec<u8>>;

impl Server {
    pub async fn bind(ctx: &Ctx, cfg: &Config, relay_ip: IpAddr) -> Result<Self, ServeError> {
        let mut sockets = Vec::new();
        for addr in &cfg.turn.listen {
            let s = UdpSocket::bind(addr).await.map_err(|source| ServeError::Bind {
                addr: *addr,
                service: "turn",
                source,
            })?;
            sockets.push(Arc::new(s));
        }
        let t = &cfg.turn;
        let shared = Shared {
            realm: cfg.mail_domain.clone(),
            rest_key: super::rest_key(ctx),
            nonce_key: rand::random(),
            relay_ip,
            ports: t.port_range().unwrap_or((49152, 65535)),
            allow_private: t.allow_private_peers,
            max_per_user: t.max_allocations_per_user,
            max_total: t.max_allocations,
            sockets,
            state: Mutex::new(State::default()),
        };
        Ok(Self { shared: Arc::new(shared) })
    }

    pub fn spawn(self, ctx: &Ctx) {
        for idx in 0..self.shared.sockets.len() {
            ctx.tasks.spawn(listen(ctx.clone(), self.shared.clone(), idx));
        }
        ctx.tasks.spawn(sweep(ctx.clone(), self.shared.clone()));
        tracing::info!(listeners = self.shared.sockets.len(), "turn server ready");
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peer_allowed(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        ip.is_ipv4() == self.relay_ip.is_ipv4() && peer.port() != 0 && (self.allow_private || super::is_public(ip))
    }

    fn nonce(&self, src: SocketAddr, ts: u64) -> String {
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.nonce_key).expect("HMAC takes any key length");
        mac.update(&ts.to_be_bytes());
        mac.update(src.ip().to_canonical().to_string().as_bytes());
        let tag = mac.finalize().into_bytes();
        let hex: String = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{ts:016x}{hex}")
    }

    fn nonce_fresh(&self, src: SocketAddr, nonce: &str, now: u64) -> bool {
        let Some(ts) = nonce.get(..16).and_then(|h| u64::from_str_radix(h, 16).ok()) else { return false };
        nonce == self.nonce(src, ts) && ts <= now && now - ts < NONCE_LIFETIME
    }

    /// A 401/438 challenge with REALM and a fresh NONCE.
    fn challenge(&self, m: &Message, src: SocketAddr, code: u16, reason: &str) -> Vec<u8> {
        Builder::new(m.method, stun::ERROR, m.txid)
            .error(code, reason)
            .attr(stun::A_REALM, self.realm.as_bytes())
            .attr(stun::A_NONCE, self.nonce(src, super::now_secs()).as_bytes())
            .attr(stun::A_SOFTWARE, SOFTWARE)
            .finish(None)
    }

    /// Long-term credential check (RFC 8489 §9.2.4). Ok: (username, key); Err: the answer.
    fn authenticate(&self, m: &Message, src: SocketAddr) -> Result<(String, Vec<u8>), Vec<u8>> {
        if m.get(stun::A_MESSAGE_INTEGRITY).is_none() {
            return Err(self.challenge(m, src, 401, "Unauthorized"));
        }
        let (Some(user), Some(realm), Some(nonce)) =
            (m.string(stun::A_USERNAME), m.string(stun::A_REALM), m.string(stun::A_NONCE))
        else {
            return Err(error(m, 400, "Bad Request", None));
        };
        let now = super::now_secs();
        if !self.nonce_fresh(src, nonce, now) {
            return Err(self.challenge(m, src, 438, "Stale Nonce"));
        }
        if realm != self.realm {
            return Err(self.challenge(m, src, 401, "Unauthorized"));
        }
        // An expired or malformed username is refused like a wrong password.
        if super::username_expiry(user).is_none_or(|exp| exp < now) {
            tracing::debug!("turn: expired or malformed username");
            return Err(self.challenge(m, src, 401, "Unauthorized"));
        }
        let password = super::password_for(&self.rest_key, user);
        let key = md5::Md5::digest(format!("{user}:{realm}:{password}").as_bytes()).to_vec();
        if !m.integrity_ok(&key) {
            tracing::debug!("turn: wrong credentials");
            return Err(self.challenge(m, src, 401, "Unauthorized"));
        }
        Ok((user.to_string(), key))
    }

    fn handle(self: &Arc<Self>, idx: usize, src: SocketAddr, m: &Message) -> Answer {
        if m.class == stun::INDICATION {
            if m.method == stun::SEND {
                self.send_indication(idx, src, m);
            }
            return None;
        }
        if m.class != stun::REQUEST {
            return None;
        }
        let unknown = m.unknown_required();
        if !unknown.is_empty() {
            let list: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            return Some(
                Builder::new(m.method, stun::ERROR, m.txid)
                    .error(420, "Unknown Attribute")
                    .attr(stun::A_UNKNOWN_ATTRIBUTES, &list)
                    .finish(None),
            );
        }
        if m.method == stun::BINDING {
            return Some(
                Builder::new(stun::BINDING, stun::SUCCESS, m.txid)
                    .xor_addr(stun::A_XOR_MAPPED_ADDRESS, src)
                    .attr(stun::A_SOFTWARE, SOFTWARE)
                    .finish(None),
            );
        }
        if ![stun::ALLOCATE, stun::REFRESH, stun::CREATE_PERMISSION, stun::CHANNEL_BIND].contains(&m.method) {
            return Some(error(m, 400, "Bad Request", None));
        }
        // A retransmitted Allocate gets the same answer, before the nonce could have gone stale.
        if m.method == stun::ALLOCATE
            && let Some(a) = self.state().allocs.get(&(idx, src))
            && a.txid == m.txid
        {
            return Some(a.answer.clone());
        }
        let (user, key) = match self.authenticate(m, src) {
            Ok(x) => x,
            Err(answer) => return Some(answer),
        };
        Some(match m.method {
            stun::ALLOCATE => self.allocate(idx, src, m, user, key),
            stun::REFRESH => self.refresh(idx, src, m, &user, &key),
            stun::CREATE_PERMISSION => self.create_permission(idx, src, m, &user, &key),
            _ => self.channel_bind(idx, src, m, &user, &key),
        })
    }

    fn allocate(self: &Arc<Self>, idx: usize, src: SocketAddr, m: &Message, user: String, key: Vec<u8>) -> Vec<u8> {
        let k = Some(key.as_slice());
        match m.get(stun::A_REQUESTED_TRANSPORT) {
            Some(v) if v.first() == Some(&17) => {}
            Some(_) => return error(m, 442, "Unsupported Transport Protocol", k),
            None => return error(m, 400, "Bad Request", k),
        }
        if m.get(stun::A_RESERVATION_TOKEN).is_some() {
            return error(m, 508, "Insufficient Capacity", k);
        }
        if let Some(fam) = m.get(stun::A_REQUESTED_ADDRESS_FAMILY).and_then(|v| v.first()) {
            let want_v4 = *fam == 1;
            if (*fam != 1 && *fam != 2) || want_v4 != self.relay_ip.is_ipv4() {
                return error(m, 440, "Address Family not Supported", k);
            }
        }
        {
            let st = self.state();
            if st.allocs.contains_key(&(idx, src)) {
                return error(m, 437, "Allocation Mismatch", k);
            }
            if st.per_user.get(&user).copied().unwrap_or(0) >= self.max_per_user {
                tracing::info!("turn: allocation quota of a username reached");
                return error(m, 486, "Allocation Quota Reached", k);
            }
            if st.allocs.len() >= self.max_total {
                tracing::warn!("turn: turn.max_allocations reached");
                return error(m, 508, "Insufficient Capacity", k);
            }
        }
        let even = m.get(stun::A_EVEN_PORT).is_some();
        let Some(relay) = self.bind_relay(even) else {
            return error(m, 508, "Insufficient Capacity", k);
        };
        let relayed = match relay.local_addr() {
            Ok(a) => a,
            Err(_) => return error(m, 508, "Insufficient Capacity", k),
        };
        let lifetime = m.u32(stun::A_LIFETIME).unwrap_or(DEFAULT_LIFETIME).clamp(DEFAULT_LIFETIME, MAX_LIFETIME);
        let answer = Builder::new(stun::ALLOCATE, stun::SUCCESS, m.txid)
            .xor_addr(stun::A_XOR_RELAYED_ADDRESS, relayed)
            .u32(stun::A_LIFETIME, lifetime)
            .xor_addr(stun::A_XOR_MAPPED_ADDRESS, src)
            .attr(stun::A_SOFTWARE, SOFTWARE)
            .finish(k);
        let relay = Arc::new(relay);
        let task = tokio::spawn(relay_loop(self.clone(), (idx, src), relay.clone())).abort_handle();
        let mut st = self.state();
        // Checked again under the lock: two Allocates of one username may race.
        if st.allocs.contains_key(&(idx, src))
            || st.per_user.get(&user).copied().unwrap_or(0) >= self.max_per_user
            || st.allocs.len() >= self.max_total
        {
            task.abort();
            return error(m, 486, "Allocation Quota Reached", k);
        }
        *st.per_user.entry(user.clone()).or_insert(0) += 1;
        st.allocs.insert(
            (idx, src),
            Alloc {
                username: user,
                relay,
                expires: Instant::now() + Duration::from_secs(u64::from(lifetime)),
                perms: HashMap::new(),
                channels: HashMap::new(),
                txid: m.txid,
                answer: answer.clone(),
                task,
            },
        );
        tracing::debug!(allocations = st.allocs.len(), "turn: allocation created");
        answer
    }

    fn bind_relay(&self, even: bool) -> Option<UdpSocket> {
        let (lo, hi) = self.ports;
        let span = u32::from(hi - lo) + 1;
        for _ in 0..40 {
            let mut port = lo + (rand::random::<u32>() % span) as u16;
            if even && port % 2 == 1 {
                port = if port > lo { port - 1 } else { port + 1 };
                if port > hi {
                    continue;
                }
            }
            if let Ok(s) = std::net::UdpSocket::bind(SocketAddr::new(self.relay_ip, port))
                && s.set_nonblocking(true).is_ok()
                && let Ok(s) = UdpSocket::from_std(s)
            {
                return Some(s);
            }
        }
        None
    }

    /// The allocation of this 5-tuple if it belongs to `user` (RFC 8656 §5: 437 / 441).
    fn own<'s>(st: &'s mut State, k: &Key, user: &str) -> Result<&'s mut Alloc, (u16, &'static str)> {
        match st.allocs.get_mut(k) {
            None => Err((437, "Allocation Mismatch")),
            Some(a) if a.username != user => Err((441, "Wrong Credentials")),
            Some(a) => Ok(a),
        }
    }

    fn refresh(&self, idx: usize, src: SocketAddr, m: &Message, user: &str, key: &[u8]) -> Vec<u8> {
        let k = Some(key);
        let mut st = self.state();
        if let Err((code, reason)) = Self::own(&mut st, &(idx, src), user) {
            return error(m, code, reason, k);
        }
        let lifetime = m.u32(stun::A_LIFETIME).unwrap_or(DEFAULT_LIFETIME);
        let lifetime = if lifetime == 0 {
            st.remove(&(idx, src));
            tracing::debug!(allocations = st.allocs.len(), "turn: allocation deleted");
            0
        } else {
            let lifetime = lifetime.clamp(DEFAULT_LIFETIME, MAX_LIFETIME);
            if let Some(a) = st.allocs.get_mut(&(idx, src)) {
                a.expires = Instant::now() + Duration::from_secs(u64::from(lifetime));
            }
            lifetime
        };
        success(m).u32(stun::A_LIFETIME, lifetime).finish(k)
    }

    fn create_permission(&self, idx: usize, src: SocketAddr, m: &Message, user: &str, key: &[u8]) -> Vec<u8> {
        let k = Some(key);
        let peers: Vec<Option<SocketAddr>> = m.all(stun::A_XOR_PEER_ADDRESS).map(|v| xor_peer(v, m)).collect();
        if peers.is_empty() || peers.iter().any(Option::is_none) {
            return error(m, 400, "Bad Request", k);
        }
        let peers: Vec<SocketAddr> = peers.into_iter().flatten().collect();
        if let Some(bad) = peers.iter().find(|p| !self.peer_allowed(**p)) {
            return self.refused(m, *bad, k);
        }
        let mut st = self.state();
        let a = match Self::own(&mut st, &(idx, src), user) {
            Ok(a) => a,
            Err((code, reason)) => return error(m, code, reason, k),
        };
        let now = Instant::now();
        a.perms.retain(|_, t| *t > now);
        for p in &peers {
            let ip = p.ip().to_canonical();
            if !a.perms.contains_key(&ip) && a.perms.len() >= MAX_PERMISSIONS {
                return error(m, 508, "Insufficient Capacity", k);
            }
            a.perms.insert(ip, now + PERMISSION_LIFETIME);
        }
        success(m).finish(k)
    }

    fn channel_bind(&self, idx: usize, src: SocketAddr, m: &Message, user: &str, key: &[u8]) -> Vec<u8> {
        let k = Some(key);
        let ch = m.get(stun::A_CHANNEL_NUMBER).and_then(|v| v.get(..2)).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let peer = m.get(stun::A_XOR_PEER_ADDRESS).and_then(|v| xor_peer(v, m));
        let (Some(ch), Some(peer)) = (ch, peer) else { return error(m, 400, "Bad Request", k) };
        // RFC 5766's range: RFC 8656 narrowed it to 0x4FFF, but clients such as coturn's still
        // pick numbers up to 0x7FFF, and ChannelData framing covers the whole range.
        if !(0x4000..=0x7FFF).contains(&ch) {
            return error(m, 400, "Bad Request", k);
        }
        if !self.peer_allowed(peer) {
            return self.refused(m, peer, k);
        }
        let mut st = self.state();
        let a = match Self::own(&mut st, &(idx, src), user) {
            Ok(a) => a,
            Err((code, reason)) => return error(m, code, reason, k),
        };
        let now = Instant::now();
        a.channels.retain(|_, (_, t)| *t > now);
        // One channel per peer and one peer per channel (RFC 8656 §12).
        let clash = a.channels.get(&ch).is_some_and(|(p, _)| *p != peer)
            || a.channels.iter().any(|(c, (p, _))| *p == peer && *c != ch);
        if clash {
            return error(m, 400, "Bad Request", k);
        }
        if !a.channels.contains_key(&ch) && a.channels.len() >= MAX_CHANNELS {
            return error(m, 508, "Insufficient Capacity", k);
        }
        a.channels.insert(ch, (peer, now + CHANNEL_LIFETIME));
        let ip = peer.ip().to_canonical();
        if a.perms.contains_key(&ip) || a.perms.len() < MAX_PERMISSIONS {
            a.perms.insert(ip, now + PERMISSION_LIFETIME);
        }
        success(m).finish(k)
    }

    /// 403 for a peer outside the policy, 443 for one of the other address family.
    fn refused(&self, m: &Message, peer: SocketAddr, k: Option<&[u8]>) -> Vec<u8> {
        if peer.ip().to_canonical().is_ipv4() != self.relay_ip.is_ipv4() {
            error(m, 443, "Peer Address Family Mismatch", k)
        } else {
            tracing::debug!("turn: peer address refused by policy");
            error(m, 403, "Forbidden", k)
        }
    }

    fn send_indication(&self, idx: usize, src: SocketAddr, m: &Message) {
        let (Some(peer), Some(data)) =
            (m.get(stun::A_XOR_PEER_ADDRESS).and_then(|v| xor_peer(v, m)), m.get(stun::A_DATA))
        else {
            return;
        };
        let relay = {
            let st = self.state();
            match st.allocs.get(&(idx, src)) {
                Some(a) if a.permitted(peer.ip(), Instant::now()) => a.relay.clone(),
                _ => return,
            }
        };
        let _ = relay.try_send_to(data, peer);
    }

    fn channel_data(&self, idx: usize, src: SocketAddr, d: &[u8]) {
        if d.len() < 4 {
            return;
        }
        let ch = u16::from_be_bytes([d[0], d[1]]);
        let len = usize::from(u16::from_be_bytes([d[2], d[3]]));
        let Some(data) = d.get(4..4 + len) else { return };
        let (relay, peer) = {
            let st = self.state();
            let Some(a) = st.allocs.get(&(idx, src)) else { return };
            let now = Instant::now();
            match a.channels.get(&ch) {
                Some((peer, t)) if *t > now && a.permitted(peer.ip(), now) => (a.relay.clone(), *peer),
                _ => return,
            }
        };
        let _ = relay.try_send_to(data, peer);
    }
}

fn xor_peer(v: &[u8], m: &Message) -> Option<SocketAddr> {
    stun::decode_xor_addr(v, &m.txid)
}

fn success(m: &Message) -> Builder {
    Builder::new(m.method, stun::SUCCESS, m.txid).attr(stun::A_SOFTWARE, SOFTWARE)
}

fn error(m: &Message, code: u16, reason: &str, key: Option<&[u8]>) -> Vec<u8> {
    Builder::new(m.method, stun::ERROR, m.txid).error(code, reason).attr(stun::A_SOFTWARE, SOFTWARE).finish(key)
}

/// One listener socket: requests, indications and ChannelData from clients.
async fn listen(ctx: Ctx, sh: Arc<Shared>, idx: usize) {
    let sock = sh.sockets[idx].clone();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, src) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => {
                    // Never spin on a socket error (e.g. a transient ENOBUFS).
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let d = &buf[..n];
        // ChannelData starts with 0b01 (channel numbers 0x4000..=0x7FFF); STUN with 0b00.
        if d.first().is_some_and(|b| b & 0xC0 == 0x40) {
            sh.channel_data(idx, src, d);
            continue;
        }
        let Ok(m) = Message::parse(d) else { continue };
        if let Some(answer) = sh.handle(idx, src, &m) {
            let _ = sock.send_to(&answer, src).await;
        }
    }
    let mut st = sh.state();
    let keys: Vec<Key> = st.allocs.keys().copied().collect();
    for k in keys {
        st.remove(&k);
    }
}

/// One allocation's relay socket: datagrams from permitted peers go to the client as ChannelData
/// (when the peer has a channel) or Data indications; others are dropped (RFC 8656 §11.3).
async fn relay_loop(sh: Arc<Shared>, k: Key, relay: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, peer)) = relay.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let data = &buf[..n];
        let out = {
            let st = sh.state();
            let Some(a) = st.allocs.get(&k) else { return };
            let now = Instant::now();
            if !a.permitted(peer.ip(), now) {
                continue;
            }
            match a.channel_of(peer, now) {
                Some(ch) if n <= 65_531 => {
                    let mut v = Vec::with_capacity(4 + n);
                    v.extend_from_slice(&ch.to_be_bytes());
                    v.extend_from_slice(&(n as u16).to_be_bytes());
                    v.extend_from_slice(data);
                    v
                }
                _ => Builder::new(stun::DATA, stun::INDICATION, rand::random())
                    .xor_addr(stun::A_XOR_PEER_ADDRESS, peer)
                    .attr(stun::A_DATA, data)
                    .finish(None),
            }
        };
        let _ = sh.sockets[k.0].send_to(&out, k.1).await;
    }
}

/// Drop expired allocations (their relay sockets close with them).
async fn sweep(ctx: Ctx, sh: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let now = Instant::now();
        let mut st = sh.state();
        let expired: Vec<Key> = st.allocs.iter().filter(|(_, a)| a.expires <= now).map(|(k, _)| *k).collect();
        for k in &expired {
            st.remove(k);
        }
        if !expired.is_empty() {
            tracing::debug!(expired = expired.len(), allocations = st.allocs.len(), "turn: allocations expired");
        }
    }
}
