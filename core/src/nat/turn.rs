//! One TURN allocation on one server, shared by every peer of the mesh: `turn-client-proto`'s
//! sans-IO client, plus what it leaves to its user — failures told apart within one round trip
//! (a wrong password, a full quota, a lost allocation), datagrams parked while a permission is
//! on its way, channels for the peers we talk to, permissions and channels let go once no
//! peer uses them, and a new allocation when one is lost.
//!
//! TURN has no request to delete a permission or a channel: they expire unless refreshed
//! (5 and 10 minutes), and the client refreshes every one it ever made for as long as the
//! allocation lives. So when the client is about to refresh one that no datagram used for
//! [`IN_USE`], the request is not sent; the client is given a refusal of it instead (a 403
//! answer made here, signed with our own credential as the server signs its answers), on which
//! it forgets the permission or channel, and the server lets it expire.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use turn_client_proto::api::{TurnClientApi, TurnConfig, TurnEvent, TurnPollRet, TurnRecvRet};
use turn_client_proto::prelude::DelayedTransmitBuild;
use turn_client_proto::stun::agent::Transmit as StunTransmit;
use turn_client_proto::stun::auth::Feature;
use turn_client_proto::stun::types::attribute::{
    AttributeStaticType, ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce, Realm,
    Username,
};
use turn_client_proto::stun::types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageWriteVec, Method,
    TransactionId,
};
use turn_client_proto::stun::types::prelude::{MessageWrite, MessageWriteExt};
use turn_client_proto::stun::types::TransportType;
use turn_client_proto::types::attribute::{Lifetime, XorPeerAddress};
use turn_client_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
use turn_client_proto::types::TurnCredentials;
use turn_client_proto::udp::TurnClientUdp;

use super::binding::{FINAL_WAIT, INITIAL_RTO, TRANSMISSIONS};
use super::{Clock, IceServerError};
use crate::event::Transmit;

/// Datagrams waiting for permissions, in total and per peer address (ICE retransmits anyway).
const MAX_PARKED: usize = 64;
const MAX_PARKED_PER_PEER: usize = 8;
/// Channels in use per allocation (ChannelData costs 4 bytes, a Send indication 36+); peers
/// beyond it still work, over Send indications.
const MAX_CHANNELS: usize = 64;
/// Permissions in use per allocation: each is refreshed every 4 minutes while it is used, and
/// a hostile peer could otherwise make us ask for any number of them (a peer's candidates are
/// bounded, peers are not). A peer address beyond it is not reached through this relay.
const MAX_PERMISSIONS: usize = 256;
/// A permission or channel no datagram went through for this long is not in use: it no longer
/// counts against the limits above, and is let go at its next refresh. ICE checks every pair it
/// still considers at least every few seconds, and gives up a pair silent for 30 s (RFC 7675).
pub(super) const IN_USE: Duration = Duration::from_secs(30);
/// Permissions and channels held at all, in use or waiting for their refresh to be let go
/// (up to 4 minutes; 9 for a channel): what bounds the memory of many peers coming and going
/// fast. Beyond it, new peer addresses wait until some are let go.
const MAX_HELD_PERMISSIONS: usize = 4 * MAX_PERMISSIONS;
const MAX_HELD_CHANNELS: usize = 4 * MAX_CHANNELS;
/// How long an entry may stay in our tables after its last use: past this, the server has let
/// it expire whatever the client did (a channel's 10 minutes, with margin).
const FORGET_AFTER: Duration = Duration::from_secs(11 * 60);
/// Our recent requests, to recognise the server's answers to them.
const REQUEST_LOG: usize = 32;
/// Waits before allocating again after a failure: doubling from the first, capped.
const RETRY_FIRST: Duration = Duration::from_secs(15);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// "Allocation mismatch" answers to Allocate handled by deleting the unknown allocation, and the
/// wait before allocating again after such a delete.
const MAX_MISMATCHES: u32 = 3;
const MISMATCH_WAIT: Duration = Duration::from_millis(500);
/// An allocation lost again this soon after the last loss waits out the backoff.
const FLAPPING: Duration = Duration::from_secs(60);

/// What happened to the allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RelayEvent {
    /// The allocation exists: peers can reach us at this relayed address.
    Allocated(SocketAddr),
    /// No allocation could be made; another attempt follows later.
    Failed(IceServerError),
    /// The allocation at this address is gone; a new one is being made.
    Lost(SocketAddr),
}

/// What a datagram from the server was.
#[derive(Debug)]
pub(super) enum RelayInput {
    /// TURN's own traffic, handled.
    Handled,
    /// Data from `peer`, relayed; it sits at `range` in the datagram (or was copied out).
    PeerData {
        peer: SocketAddr,
        relay: SocketAddr,
        data: PeerBytes,
    },
    /// Not for the TURN client (e.g. a Binding response).
    NotTurn,
}

/// Where relayed bytes are: inside the received datagram (the usual case), or copied.
#[derive(Debug)]
pub(super) enum PeerBytes {
    Range(std::ops::Range<usize>),
    Owned(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
struct SentRequest {
    transaction: TransactionId,
    method: Method,
    /// Carried USERNAME / MESSAGE-INTEGRITY: a 401 to it means the credential is wrong.
    authenticated: bool,
    /// The XOR-PEER-ADDRESS (CreatePermission, ChannelBind).
    peer: Option<SocketAddr>,
}

#[derive(Debug)]
enum State {
    /// An Allocate is under way.
    Allocating,
    /// The allocation exists at this relayed address.
    Allocated(SocketAddr),
    /// No client; a new allocation starts at this time.
    Waiting(Instant),
    /// Deleted on close: nothing more happens.
    Closed,
}

/// The allocation on one TURN server. (`Debug` by hand: without the credential.)
pub(super) struct Relay {
    server: SocketAddr,
    local: SocketAddr,
    username: String,
    credential: String,
    client: Option<TurnClientUdp>,
    state: State,
    requests: VecDeque<SentRequest>,
    parked: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Peer addresses a channel was asked for, and when a datagram to each last went out.
    channels: HashMap<SocketAddr, Instant>,
    /// Peer IPs a permission was asked for (with or without a channel), and when a datagram
    /// to each last went out.
    permissions: HashMap<IpAddr, Instant>,
    /// When the tables above are next swept of entries the server forgot.
    next_sweep: Instant,
    backoff: Duration,
    last_lost: Option<Instant>,
    /// The server's latest REALM and NONCE (from its 401 / 438 answers), to sign a request of
    /// our own: deleting an allocation the client does not know about.
    challenge: Option<(String, String)>,
    /// Allocate answered "allocation mismatch" this many times in a row.
    mismatches: u32,
    /// The last error code an Allocate of this attempt got (to say why, if the client gives up).
    allocate_error: Option<u16>,
    deadline: Option<Instant>,
    events: VecDeque<RelayEvent>,
    /// Datagrams dropped for want of a permission (parking full, permission refused).
    pub dropped: u64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("server", &self.server)
            .field("local", &self.local)
            .field("username", &self.username)
            .field("credential", &super::url::Redacted(&self.credential))
            .field("state", &self.state)
            .field("parked", &self.parked.len())
            .field("channels", &self.channels.len())
            .field("permissions", &self.permissions.len())
            .field("backoff", &self.backoff)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Starts allocating on `server` from the socket at `local`.
    pub fn new(
        now: Instant,
        clock: Clock,
        server: SocketAddr,
        local: SocketAddr,
        username: &str,
        credential: &str,
        out: &mut VecDeque<Transmit>,
    ) -> Relay {
        let mut relay = Relay {
            server,
            local,
            username: username.to_owned(),
            credential: credential.to_owned(),
            client: None,
            state: State::Waiting(now),
            requests: VecDeque::new(),
            parked: VecDeque::new(),
            channels: HashMap::new(),
            permissions: HashMap::new(),
            next_sweep: now + FORGET_AFTER,
            backoff: RETRY_FIRST,
            last_lost: None,
            challenge: None,
            mismatches: 0,
            allocate_error: None,
            deadline: Some(now),
            events: VecDeque::new(),
            dropped: 0,
        };
        relay.drive(now, clock, out);
        relay
    }

    /// The relayed address, while the allocation exists.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated(addr) => Some(addr),
            _ => None,
        }
    }

    /// When [`drive`](Relay::drive) must next be called.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing that happened to the allocation.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    fn allocate(&mut self) {
        let mut config = TurnConfig::new(TurnCredentials::new(&self.username, &self.credential));
        // RFC 8489's default gives up after 39.5 s; this reports an unreachable server in 5 s.
        config.set_request_retransmits(INITIAL_RTO, Duration::MAX, TRANSMISSIONS, FINAL_WAIT);
        // A plain USERNAME (coturn has no USERHASH anyway), so an allocation we have to delete
        // ourselves (see `delete_unknown_allocation`) is one we can name.
        config.set_anonymous_username(Feature::Disabled);
        self.client = Some(TurnClientUdp::allocate(self.local, self.server, config));
        self.state = State::Allocating;
        self.allocate_error = None;
        self.requests.clear();
        self.channels.clear();
        self.permissions.clear();
    }

    /// Drops the client (the allocation is gone or never came) and decides what follows.
    fn end(&mut self, now: Instant, reason: IceServerError) {
        self.client = None;
        self.channels.clear();
        self.permissions.clear();
        self.dropped += self.parked.len() as u64;
        self.parked.clear();
        match std::mem::replace(&mut self.state, State::Waiting(now)) {
            State::Allocated(addr) => {
                self.events.push_back(RelayEvent::Lost(addr));
                let flapping = self.last_lost.is_some_and(|at| now < at + FLAPPING);
                self.last_lost = Some(now);
                if flapping {
                    self.state = State::Waiting(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(RETRY_MAX);
                }
            }
            State::Closed => self.state = State::Closed,
            State::Allocating | State::Waiting(_) => {
                self.events.push_back(RelayEvent::Failed(reason));
                self.state = State::Waiting(now + self.backoff);
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    /// The allocation is known to be unusable (e.g. the NAT mapping it was made from changed):
    /// replace it.
    pub fn lost(&mut self, now: Instant, clock: Clock, out: &mut VecDeque<Transmit>) {
        if matches!(self.state, State::Allocated(_)) {
            self.end(now, IceServerError::AllocationLost);
            self.drive(now, clock, out);
        }
    }

    /// The socket moved to `local` ([`Mesh::move_host_candidate`](crate::Mesh::move_host_candidate)):
    /// the server knows this allocation by the old socket's address, which is gone, so it is
    /// replaced by one made from `local`, at once (a move is not a flapping allocation). The
    /// old one expires on the server (nothing can reach it to delete it).
    pub fn rebase(
        &mut self,
        now: Instant,
        clock: Clock,
        local: SocketAddr,
        out: &mut VecDeque<Transmit>,
    ) {
        if self.local == local {
            return;
        }
        self.local = local;
        match self.state {
            State::Allocated(_) => {
                self.end(now, IceServerError::AllocationLost);
                self.state = State::Waiting(now);
            }
            State::Allocating => {
                self.client = None;
                self.requests.clear();
                self.state = State::Waiting(now);
            }
            State::Waiting(_) | State::Closed => {}
        }
        self.drive(now, clock, out);
    }

    /// Advances the client to `now`: its requests go to `out`, its news to the event queue.
    pub fn drive(&mut self, now: Instant, clock: Clock, out: &mut VecDeque<Transmit>) {
        if let State::Waiting(at) = self.state {
            if at > now {
                self.deadline = Some(at);
                return;
            }
            self.allocate();
        }
        let t = clock.at(now);
        // Bounded: each turn either makes progress or stops.
        for _ in 0..64 {
            let Some(client) = self.client.as_mut() else {
                self.deadline = match self.state {
                    State::Waiting(at) => Some(at),
                    _ => None,
                };
                return;
            };
            let ret = client.poll(t);
            let mut progress = false;
            let mut refusals: SmallVec<[Vec<u8>; 2]> = SmallVec::new();
            while let Some(transmit) = client.poll_transmit(t) {
                progress = true;
                let contents = transmit.data.as_ref().to_vec();
                if let Some(request) = sent_request(&contents) {
                    if !in_use(&request, &self.permissions, &self.channels, now) {
                        let refusal = self.challenge.as_ref().and_then(|(realm, _)| {
                            refusal(&request, &self.username, &self.credential, realm)
                        });
                        if let Some(refusal) = refusal {
                            refusals.push(refusal);
                            continue;
                        }
                    }
                    if self.requests.len() == REQUEST_LOG {
                        self.requests.pop_front();
                    }
                    self.requests.push_back(request);
                }
                out.push_back(Transmit {
                    destination: transmit.to,
                    source: transmit.from,
                    contents,
                });
            }
            for refusal in refusals {
                let answer = StunTransmit::new(
                    refusal.as_slice(),
                    TransportType::Udp,
                    self.server,
                    self.local,
                );
                let _ = client.recv(answer, t);
            }
            let mut events: SmallVec<[TurnEvent; 4]> = SmallVec::new();
            while let Some(event) = client.poll_event() {
                events.push(event);
            }
            for event in events {
                progress = true;
                self.on_client_event(t, event, out);
            }
            match ret {
                TurnPollRet::Closed => {
                    // Refusals that decide were read from the answers already (`read_error`);
                    // otherwise the client gave up on an error it read, or on silence.
                    let reason = match self.allocate_error {
                        Some(ErrorCode::UNAUTHORIZED) => IceServerError::Unauthorized,
                        Some(ErrorCode::ALLOCATION_QUOTA_REACHED) => IceServerError::QuotaReached,
                        Some(code) => IceServerError::Refused(code),
                        None => IceServerError::Unreachable,
                    };
                    self.end(now, reason);
                    if let State::Waiting(at) = self.state {
                        if at <= now {
                            self.allocate();
                            continue;
                        }
                    }
                }
                TurnPollRet::WaitUntil(at) if !progress => {
                    self.deadline = Some(clock.back(at).max(now));
                    return;
                }
                _ => {}
            }
        }
        // Still busy after many turns: come back at once rather than spin here.
        self.deadline = Some(now);
    }

    fn on_client_event(
        &mut self,
        t: turn_client_proto::stun::Instant,
        event: TurnEvent,
        out: &mut VecDeque<Transmit>,
    ) {
        match event {
            TurnEvent::AllocationCreated(TransportType::Udp, relayed)
                if matches!(self.state, State::Allocating) =>
            {
                self.state = State::Allocated(relayed);
                self.backoff = RETRY_FIRST;
                self.mismatches = 0;
                self.events.push_back(RelayEvent::Allocated(relayed));
            }
            TurnEvent::PermissionCreated(_, ip) => {
                let Some(client) = self.client.as_mut() else {
                    return;
                };
                let mut i = 0;
                while i < self.parked.len() {
                    if self.parked[i].0.ip() != ip {
                        i += 1;
                        continue;
                    }
                    let Some((peer, data)) = self.parked.remove(i) else {
                        break;
                    };
                    match client.send_to(TransportType::Udp, peer, data.as_slice(), t) {
                        Ok(Some(wrapped)) => out.push_back(Transmit {
                            destination: wrapped.to,
                            source: wrapped.from,
                            contents: wrapped.data.build(),
                        }),
                        _ => self.dropped += 1,
                    }
                }
            }
            TurnEvent::PermissionCreateFailed(_, ip) => {
                let before = self.parked.len();
                self.parked.retain(|(peer, _)| peer.ip() != ip);
                self.dropped += (before - self.parked.len()) as u64;
                // Asked again on the next datagram to that peer.
                self.permissions.remove(&ip);
                self.channels.retain(|c, _| c.ip() != ip);
            }
            TurnEvent::ChannelCreateFailed(_, peer) => {
                self.channels.remove(&peer);
            }
            _ => {}
        }
    }

    /// Offers a datagram that came from the server. Error answers to our own requests are read
    /// first, so a wrong password or a lost allocation is known at once.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        clock: Clock,
        contents: &[u8],
        out: &mut VecDeque<Transmit>,
    ) -> RelayInput {
        if self.client.is_none() {
            return RelayInput::NotTurn;
        }
        if let Some(verdict) = self.read_error(contents) {
            match verdict {
                Verdict::Failed(reason) => self.end(now, reason),
                Verdict::Lost => self.end(now, IceServerError::AllocationLost),
                Verdict::Mismatch if self.mismatches < MAX_MISMATCHES => {
                    // The server holds an allocation for our address that we do not know
                    // (the answer to our Allocate was lost and the server does not replay it
                    // for the retransmission, or an earlier run used this port): delete it,
                    // then allocate again.
                    self.mismatches += 1;
                    if let Some(delete) = self.delete_unknown_allocation() {
                        out.push_back(delete);
                    }
                    self.client = None;
                    self.state = State::Waiting(now + MISMATCH_WAIT);
                }
                Verdict::Mismatch => {
                    self.end(now, IceServerError::Refused(ErrorCode::ALLOCATION_MISMATCH))
                }
            }
            self.drive(now, clock, out);
            return RelayInput::Handled;
        }
        let t = clock.at(now);
        let Some(client) = self.client.as_mut() else {
            return RelayInput::NotTurn;
        };
        let transmit = StunTransmit::new(contents, TransportType::Udp, self.server, self.local);
        let input = match client.recv(transmit, t) {
            TurnRecvRet::Handled => RelayInput::Handled,
            TurnRecvRet::Ignored(_) => return RelayInput::NotTurn,
            TurnRecvRet::PeerIcmp { .. } => RelayInput::Handled,
            TurnRecvRet::PeerData(data) => {
                let Some(relay) = self.relayed() else {
                    return RelayInput::Handled;
                };
                let peer = data.peer;
                let bytes = data.data();
                // The relayed bytes sit inside `contents` (UDP): find where, without copying.
                let start = (bytes.as_ptr() as usize).wrapping_sub(contents.as_ptr() as usize);
                let data = if start <= contents.len() && bytes.len() <= contents.len() - start {
                    PeerBytes::Range(start..start + bytes.len())
                } else {
                    PeerBytes::Owned(bytes.to_vec())
                };
                // Plain data changes nothing in the client: no driving needed.
                return RelayInput::PeerData { peer, relay, data };
            }
        };
        self.drive(now, clock, out);
        input
    }

    /// Wraps a datagram str0m sent from our relayed address for the server (ChannelData when a
    /// channel is bound, a Send indication otherwise). Without a permission for the peer yet,
    /// one is asked for and the datagram waits (bounded); `None` then, or when it was dropped.
    pub fn wrap(
        &mut self,
        now: Instant,
        clock: Clock,
        peer: SocketAddr,
        contents: &[u8],
        out: &mut VecDeque<Transmit>,
    ) -> Option<Transmit> {
        if !matches!(self.state, State::Allocated(_)) {
            self.dropped += 1;
            return None;
        }
        let t = clock.at(now);
        self.sweep(now);
        let client = self.client.as_mut()?;
        let ip = peer.ip();
        if client.have_permission(TransportType::Udp, ip) {
            let wrapped = client.send_to(TransportType::Udp, peer, contents, t);
            let wrapped = match wrapped {
                Ok(Some(w)) => Some(Transmit {
                    destination: w.to,
                    source: w.from,
                    contents: w.data.build(),
                }),
                _ => {
                    self.dropped += 1;
                    None
                }
            };
            self.permissions.insert(ip, now);
            if let Some(used) = self.channels.get_mut(&peer) {
                *used = now;
            } else if room(&self.channels, now, MAX_CHANNELS, MAX_HELD_CHANNELS)
                && client.bind_channel(TransportType::Udp, peer, t).is_ok()
            {
                self.channels.insert(peer, now);
                self.drive(now, clock, out);
            }
            return wrapped;
        }
        if let Some(used) = self.permissions.get_mut(&ip) {
            // Asked already: the answer is on its way.
            *used = now;
        } else {
            if !room(
                &self.permissions,
                now,
                MAX_PERMISSIONS,
                MAX_HELD_PERMISSIONS,
            ) {
                self.dropped += 1;
                return None;
            }
            self.permissions.insert(ip, now);
            // A channel binding installs the permission too, in the same round trip.
            let bound = room(&self.channels, now, MAX_CHANNELS, MAX_HELD_CHANNELS)
                && client.bind_channel(TransportType::Udp, peer, t).is_ok();
            if bound {
                self.channels.insert(peer, now);
            } else {
                let _ = client.create_permission(TransportType::Udp, ip, t);
            }
        }
        let for_peer = self.parked.iter().filter(|(p, _)| *p == peer).count();
        if self.parked.len() < MAX_PARKED && for_peer < MAX_PARKED_PER_PEER {
            self.parked.push_back((peer, contents.to_vec()));
        } else {
            self.dropped += 1;
        }
        self.drive(now, clock, out);
        None
    }

    /// Forgets entries the server let expire long ago (the client forgot them without telling,
    /// or never made them): at most once per [`FORGET_AFTER`].
    fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + FORGET_AFTER;
        self.permissions
            .retain(|_, used| now < *used + FORGET_AFTER);
        self.channels.retain(|_, used| now < *used + FORGET_AFTER);
    }

    /// Deletes the allocation (a REFRESH with lifetime 0); nothing happens after this.
    pub fn close(&mut self, now: Instant, clock: Clock, out: &mut VecDeque<Transmit>) {
        let t = clock.at(now);
        if let Some(client) = self.client.as_mut() {
            if client.delete(t).is_ok() {
                // The client spaces requests 50 ms apart; this is its last, so let it go now
                // (the client is dropped right after).
                let t = t + Duration::from_millis(100);
                while let Some(transmit) = client.poll_transmit(t) {
                    out.push_back(Transmit {
                        destination: transmit.to,
                        source: transmit.from,
                        contents: transmit.data.as_ref().to_vec(),
                    });
                }
            }
        }
        self.client = None;
        self.parked.clear();
        self.state = State::Closed;
        self.deadline = None;
    }

    /// A REFRESH with lifetime 0 for whatever allocation the server holds for our address,
    /// signed with the server's latest realm and nonce.
    fn delete_unknown_allocation(&self) -> Option<Transmit> {
        let (realm, nonce) = self.challenge.as_ref()?;
        let mut msg = Message::builder_request(REFRESH, MessageWriteVec::new());
        msg.add_attribute(&Lifetime::new(0)).ok()?;
        msg.add_attribute(&Username::new(&self.username).ok()?)
            .ok()?;
        msg.add_attribute(&Realm::new(realm).ok()?).ok()?;
        msg.add_attribute(&Nonce::new(nonce).ok()?).ok()?;
        let key = LongTermKeyCredentials::new(
            self.username.clone(),
            self.credential.clone(),
            realm.clone(),
        );
        msg.add_message_integrity(&key.into(), IntegrityAlgorithm::Sha1)
            .ok()?;
        msg.add_fingerprint().ok()?;
        Some(Transmit {
            destination: self.server,
            source: self.local,
            contents: msg.finish(),
        })
    }

    /// An error answer to one of our requests that decides the allocation's fate. Remembers
    /// the realm and nonce any error answer carries.
    fn read_error(&mut self, contents: &[u8]) -> Option<Verdict> {
        // STUN messages start with two zero bits; ChannelData (0x40..) never is one.
        if contents.first().is_none_or(|b| b & 0xC0 != 0) {
            return None;
        }
        let msg = Message::from_bytes(contents).ok()?;
        if !msg.has_class(MessageClass::Error) {
            return None;
        }
        if let (Ok(realm), Ok(nonce)) = (msg.attribute::<Realm>(), msg.attribute::<Nonce>()) {
            self.challenge = Some((realm.realm().to_owned(), nonce.nonce().to_owned()));
        }
        let request = *self
            .requests
            .iter()
            .find(|r| r.transaction == msg.transaction_id())?;
        let code = msg.attribute::<ErrorCode>().map_or(0, |e| e.code());
        let allocating = matches!(self.state, State::Allocating);
        if allocating && request.method == ALLOCATE {
            self.allocate_error = Some(code);
        }
        match (request.method, code) {
            // A challenge to the first, unauthenticated Allocate, or a stale nonce: the client
            // answers those itself.
            (_, ErrorCode::STALE_NONCE) => None,
            (ALLOCATE, ErrorCode::UNAUTHORIZED) if !request.authenticated => None,
            (ALLOCATE, ErrorCode::UNAUTHORIZED) if allocating => {
                Some(Verdict::Failed(IceServerError::Unauthorized))
            }
            (ALLOCATE, ErrorCode::ALLOCATION_QUOTA_REACHED) if allocating => {
                Some(Verdict::Failed(IceServerError::QuotaReached))
            }
            (ALLOCATE, ErrorCode::ALLOCATION_MISMATCH) if allocating => Some(Verdict::Mismatch),
            (ALLOCATE, code) if allocating => Some(Verdict::Failed(IceServerError::Refused(code))),
            // The server no longer knows our allocation (it restarted, or our NAT mapping
            // changed under it): "allocation mismatch", or an error it could not sign because
            // it no longer knows us (a server that does signs its answers, and the client
            // handles those itself).
            (REFRESH | CREATE_PERMISSION | CHANNEL_BIND, ErrorCode::ALLOCATION_MISMATCH) => {
                Some(Verdict::Lost)
            }
            (REFRESH | CREATE_PERMISSION | CHANNEL_BIND, _)
                if !msg.has_attribute(MessageIntegrity::TYPE)
                    && !msg.has_attribute(MessageIntegritySha256::TYPE) =>
            {
                Some(Verdict::Lost)
            }
            _ => None,
        }
    }
}

/// An error answer's meaning for the allocation.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// The attempt failed for this reason.
    Failed(IceServerError),
    /// The allocation is gone.
    Lost,
    /// Allocate met an allocation for our address that the client does not know.
    Mismatch,
}

/// The request an outgoing TURN message is, if it is one.
fn sent_request(contents: &[u8]) -> Option<SentRequest> {
    let msg = Message::from_bytes(contents).ok()?;
    if !msg.has_class(MessageClass::Request) {
        return None;
    }
    let transaction = msg.transaction_id();
    Some(SentRequest {
        transaction,
        method: msg.method(),
        authenticated: msg.has_attribute(Username::TYPE)
            || msg.has_attribute(MessageIntegrity::TYPE)
            || msg.has_attribute(MessageIntegritySha256::TYPE),
        peer: msg
            .attribute::<XorPeerAddress>()
            .ok()
            .map(|a| a.addr(transaction)),
    })
}

/// Whether a request may go out: anything but a CreatePermission or ChannelBind for a peer no
/// datagram went to for [`IN_USE`] (or that we no longer hold).
fn in_use(
    request: &SentRequest,
    permissions: &HashMap<IpAddr, Instant>,
    channels: &HashMap<SocketAddr, Instant>,
    now: Instant,
) -> bool {
    let used = match (request.method, request.peer) {
        (CREATE_PERMISSION, Some(peer)) => permissions.get(&peer.ip()),
        (CHANNEL_BIND, Some(peer)) => channels.get(&peer),
        _ => return true,
    };
    used.is_some_and(|&at| now < at + IN_USE)
}

/// Whether one more entry fits: fewer than `in_use` of them used lately, fewer than `held` in all.
fn room<K>(table: &HashMap<K, Instant>, now: Instant, in_use: usize, held: usize) -> bool {
    table.len() < held && table.values().filter(|&&u| now < u + IN_USE).count() < in_use
}

/// A 403 answer to `request` as the server would sign it (both integrity algorithms, so the
/// client accepts it whichever it negotiated), for the client to read instead of sending the
/// request: it then forgets the permission or channel the request would have refreshed.
fn refusal(
    request: &SentRequest,
    username: &str,
    credential: &str,
    realm: &str,
) -> Option<Vec<u8>> {
    let class = turn_client_proto::stun::types::message::MessageType::from_class_method(
        MessageClass::Error,
        request.method,
    );
    let mut msg = Message::builder(class, request.transaction, MessageWriteVec::new());
    let code = ErrorCode::builder(ErrorCode::FORBIDDEN).build().ok()?;
    msg.add_attribute(&code).ok()?;
    let key =
        LongTermKeyCredentials::new(username.to_owned(), credential.to_owned(), realm.to_owned());
    let key: turn_client_proto::stun::types::message::MessageIntegrityCredentials = key.into();
    msg.add_message_integrity(&key, IntegrityAlgorithm::Sha1)
        .ok()?;
    msg.add_message_integrity(&key, IntegrityAlgorithm::Sha256)
        .ok()?;
    Some(msg.finish())
}
