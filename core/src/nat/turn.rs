//! One TURN allocation on one server, shared by every peer of the mesh: `turn-client-proto`'s
//! sans-IO client, plus what it leaves to its user — failures told apart within one round trip
//! (a wrong password, a full quota, a lost allocation), datagrams parked while a permission is
//! on its way, channels for the peers we talk to, permissions and channels let go once no
//! peer uses them, and a new allocation when one is lost.
//!
//! The server is reached by datagrams on the mesh's socket (`turn:`), or over a stream of its
//! own (`turn:…?transport=tcp`, `turns:`): the mesh asks its adapter to open a TCP (or TLS)
//! connection, and TURN's messages travel framed on it (see [`framing`](super::framing)). The
//! allocation is the same either way: a UDP relay that peers reach, one per server for the
//! whole mesh. A stream that closes takes its allocation with it (RFC 6062 ties it to the
//! connection), and a new connection makes a new one.
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
use turn_client_proto::client::TurnClient;
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
use turn_client_proto::tcp::TurnClientTcp;
use turn_client_proto::types::attribute::{Lifetime, XorPeerAddress};
use turn_client_proto::types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH};
use turn_client_proto::types::TurnCredentials;
use turn_client_proto::udp::TurnClientUdp;

use super::binding::{FINAL_WAIT, INITIAL_RTO, TRANSMISSIONS};
use super::framing::{self, FrameError, Framer};
use super::{Clock, IceServerError, Out};
use crate::event::Transmit;
use crate::stream::{StreamCommand, StreamEnd, StreamId};

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
/// coturn keeps the username of a refused Allocate bound to the client's address until its
/// `max-allocate-timeout` (60 s) has passed, and answers 437 to an Allocate with any other
/// meanwhile: a refused credential replaced by a fresh one over UDP is tried again once that
/// has passed (RFC 8656 servers that forget a refused request take it at once), then every
/// [`HOLD_RETRY`] while the answer is still 437, for as long again.
const REFUSED_HOLD: Duration = Duration::from_secs(61);
const HOLD_RETRY: Duration = Duration::from_secs(5);
/// New credentials make a waiting allocation try again at once, but no sooner than this after
/// its last attempt: however often they come (a hostile signaling server), the TURN server
/// gets at most one Allocate a second.
const CREDENTIALS_RETRY: Duration = Duration::from_secs(1);
/// How long a stream to the server may take to open (TCP connect plus a TLS handshake) before
/// the server is reported unreachable.
pub(super) const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// A stream to the server is being opened (stream carriers only).
    Connecting,
    /// An Allocate is under way.
    Allocating,
    /// The allocation exists at this relayed address.
    Allocated(SocketAddr),
    /// No client; a new allocation starts at this time.
    Waiting(Instant),
    /// Deleted on close: nothing more happens.
    Closed,
}

/// How the server is reached.
#[derive(Debug)]
pub(super) enum Carrier {
    /// Datagrams on the mesh's socket (`turn:`).
    Datagram,
    /// A stream the adapter opens (`?transport=tcp`, `turns:`).
    Stream(Box<StreamLink>),
}

impl Carrier {
    /// A stream carrier, over TLS checked against `tls` when it names the server.
    pub fn stream(tls: Option<String>) -> Carrier {
        Carrier::Stream(Box::new(StreamLink {
            tls,
            state: StreamState::Closed,
            framer: Framer::default(),
        }))
    }
}

/// A stream to the server and what arrived on it.
#[derive(Debug)]
pub(super) struct StreamLink {
    tls: Option<String>,
    state: StreamState,
    framer: Framer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Closed,
    /// Asked for; given up at this time.
    Opening(StreamId, Instant),
    Open(StreamId),
}

/// What [`Relay::wrap`] did with a datagram.
#[derive(Debug)]
pub(super) enum Wrapped {
    /// Wrapped, for the mesh's socket.
    Datagram(Transmit),
    /// Wrapped and queued on the server's stream.
    Streamed,
    /// Waiting for a permission, or dropped (counted in `dropped`).
    Held,
}

/// The allocation on one TURN server. (`Debug` by hand: without the credential.)
pub(super) struct Relay {
    server: SocketAddr,
    local: SocketAddr,
    /// The credential of the allocation that exists or is being made.
    username: String,
    credential: String,
    /// Credentials for the next allocation, given while one exists.
    next: Option<(String, String)>,
    /// When an Allocate from our address was last refused (401) over UDP, and the username
    /// it carried.
    refused: Option<(Instant, String)>,
    /// When the last Allocate began.
    attempted: Option<Instant>,
    carrier: Carrier,
    client: Option<TurnClient>,
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
    /// Streams closed for what the server sent (garbage, a frame that never ended).
    pub stream_violations: u64,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("server", &self.server)
            .field("local", &self.local)
            .field("username", &self.username)
            .field("credential", &super::url::Redacted(&self.credential))
            .field("carrier", &self.carrier)
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
    /// Starts allocating on `server`, reached through `carrier`, for the socket at `local`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        clock: Clock,
        server: SocketAddr,
        local: SocketAddr,
        carrier: Carrier,
        username: &str,
        credential: &str,
        out: &mut Out,
    ) -> Relay {
        let mut relay = Relay {
            server,
            local,
            username: username.to_owned(),
            credential: credential.to_owned(),
            next: None,
            refused: None,
            attempted: None,
            carrier,
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
            stream_violations: 0,
        };
        relay.drive(now, clock, out);
        relay
    }

    /// Whether the server is reached over a stream.
    pub fn is_streamed(&self) -> bool {
        matches!(self.carrier, Carrier::Stream(_))
    }

    /// The stream to the server, while one is asked for or open.
    pub fn stream(&self) -> Option<StreamId> {
        match &self.carrier {
            Carrier::Stream(link) => match link.state {
                StreamState::Opening(id, _) | StreamState::Open(id) => Some(id),
                StreamState::Closed => None,
            },
            Carrier::Datagram => None,
        }
    }

    /// Frames skipped on the stream for being too large.
    pub fn oversize_frames(&self) -> u64 {
        match &self.carrier {
            Carrier::Stream(link) => link.framer.oversize,
            Carrier::Datagram => 0,
        }
    }

    /// Sends a message to the server: a datagram from the socket, or a frame on the stream
    /// (`droppable` under congestion: relayed peer data). `false` if no stream is open.
    fn emit(&self, out: &mut Out, contents: Vec<u8>, droppable: bool) -> bool {
        match &self.carrier {
            Carrier::Datagram => {
                out.datagrams.push_back(Transmit {
                    destination: self.server,
                    source: self.local,
                    contents,
                });
                true
            }
            Carrier::Stream(link) => match link.state {
                StreamState::Open(id) => {
                    out.streams.push_back(StreamCommand::Send {
                        id,
                        data: framing::pad(contents),
                        droppable,
                    });
                    true
                }
                StreamState::Opening(..) | StreamState::Closed => false,
            },
        }
    }

    /// Asks for a stream to the server (stream carriers without one); `true` when the server
    /// can be talked to now.
    fn connect(&mut self, now: Instant, out: &mut Out) -> bool {
        let server = self.server;
        let Carrier::Stream(link) = &mut self.carrier else {
            return true;
        };
        match link.state {
            StreamState::Open(_) => true,
            StreamState::Opening(..) => false,
            StreamState::Closed => {
                let id = out.new_stream();
                out.streams.push_back(StreamCommand::Open {
                    id,
                    server,
                    tls: link.tls.clone(),
                });
                link.state = StreamState::Opening(id, now + OPEN_TIMEOUT);
                link.framer = Framer::default();
                self.state = State::Connecting;
                false
            }
        }
    }

    /// Closes the stream to the server, if one is open or asked for.
    fn disconnect(&mut self, out: &mut Out) {
        if let Carrier::Stream(link) = &mut self.carrier {
            if let StreamState::Opening(id, _) | StreamState::Open(id) = link.state {
                out.streams.push_back(StreamCommand::Close { id });
            }
            link.state = StreamState::Closed;
        }
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

    fn allocate(&mut self, now: Instant) {
        self.attempted = Some(now);
        if let Some((username, credential)) = self.next.take() {
            self.username = username;
            self.credential = credential;
        }
        let mut config = TurnConfig::new(TurnCredentials::new(&self.username, &self.credential));
        // RFC 8489's default gives up after 39.5 s; this reports an unreachable server in 5 s.
        config.set_request_retransmits(INITIAL_RTO, Duration::MAX, TRANSMISSIONS, FINAL_WAIT);
        // A plain USERNAME (coturn has no USERHASH anyway), so an allocation we have to delete
        // ourselves (see `delete_unknown_allocation`) is one we can name.
        config.set_anonymous_username(Feature::Disabled);
        // Over a stream the client sends each request once (TCP retransmits) and waits as long
        // as the datagram client's retransmissions take: 5 s.
        self.client = Some(match self.carrier {
            Carrier::Datagram => TurnClientUdp::allocate(self.local, self.server, config).into(),
            Carrier::Stream(_) => TurnClientTcp::allocate(self.local, self.server, config).into(),
        });
        self.state = State::Allocating;
        self.allocate_error = None;
        self.requests.clear();
        self.channels.clear();
        self.permissions.clear();
    }

    /// Drops the client (the allocation is gone or never came), and its stream, and decides
    /// what follows.
    fn end(&mut self, now: Instant, reason: IceServerError, out: &mut Out) {
        if reason == IceServerError::Unauthorized && !self.is_streamed() {
            self.refused = Some((now, self.username.clone()));
        }
        self.client = None;
        self.disconnect(out);
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
            State::Connecting | State::Allocating | State::Waiting(_) => {
                if reason == IceServerError::Unauthorized && self.next.is_some() {
                    // Refused with the old credentials while new ones came: not a failure
                    // of these; try them now.
                    self.state = State::Waiting(self.credentials_retry(now));
                    return;
                }
                self.events.push_back(RelayEvent::Failed(reason));
                self.state = State::Waiting(now + self.backoff);
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    /// New credentials: the next allocation uses them. The allocation that exists (or whose
    /// Allocate is under way) keeps its own, since TURN refuses any other username on it; one
    /// waiting to try again after a failure tries now.
    pub fn set_credentials(
        &mut self,
        now: Instant,
        clock: Clock,
        username: &str,
        credential: &str,
        out: &mut Out,
    ) {
        if matches!(self.state, State::Closed) {
            return;
        }
        self.next = Some((username.to_owned(), credential.to_owned()));
        if let State::Waiting(at) = self.state {
            self.state = State::Waiting(at.min(self.credentials_retry(now)));
            self.drive(now, clock, out);
        }
    }

    /// When an attempt with new credentials may start: now, or a second after the last one.
    fn credentials_retry(&self, now: Instant) -> Instant {
        self.attempted
            .map_or(now, |at| at + CREDENTIALS_RETRY)
            .max(now)
    }

    /// While the server may still tie our address to a username it refused, other than the
    /// one we allocate with now: when that hold ends.
    fn holds_refused(&self, now: Instant) -> Option<Instant> {
        let (at, username) = self.refused.as_ref()?;
        let holding =
            !self.is_streamed() && *username != self.username && now < *at + 2 * REFUSED_HOLD;
        holding.then_some(*at + REFUSED_HOLD)
    }

    /// The allocation is known to be unusable (e.g. the NAT mapping it was made from changed):
    /// replace it.
    pub fn lost(&mut self, now: Instant, clock: Clock, out: &mut Out) {
        if matches!(self.state, State::Allocated(_)) {
            self.end(now, IceServerError::AllocationLost, out);
            self.drive(now, clock, out);
        }
    }

    /// The socket moved to `local` ([`Mesh::move_host_candidate`](crate::Mesh::move_host_candidate)):
    /// the server knows this allocation by the old socket's address, which is gone, so it is
    /// replaced by one made from `local`, at once (a move is not a flapping allocation). The
    /// old one expires on the server (nothing can reach it to delete it). A stream to the
    /// server is replaced too: the network it went through may be gone.
    pub fn rebase(&mut self, now: Instant, clock: Clock, local: SocketAddr, out: &mut Out) {
        if self.local == local {
            return;
        }
        self.local = local;
        self.refused = None;
        match self.state {
            State::Allocated(_) => {
                self.end(now, IceServerError::AllocationLost, out);
                self.state = State::Waiting(now);
            }
            State::Connecting | State::Allocating => {
                self.client = None;
                self.requests.clear();
                self.disconnect(out);
                self.state = State::Waiting(now);
            }
            State::Waiting(_) | State::Closed => {}
        }
        self.drive(now, clock, out);
    }

    /// Advances the client to `now`: its requests go to `out`, its news to the event queue.
    pub fn drive(&mut self, now: Instant, clock: Clock, out: &mut Out) {
        self.check_stream(now, out);
        if let State::Waiting(at) = self.state {
            if at > now {
                self.deadline = Some(at);
                return;
            }
            if !self.connect(now, out) {
                self.deadline = self.opening_deadline();
                return;
            }
            self.allocate(now);
        }
        if let State::Connecting = self.state {
            self.deadline = self.opening_deadline();
            return;
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
            let mut messages: SmallVec<[Vec<u8>; 2]> = SmallVec::new();
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
                messages.push(contents);
            }
            let transport = client.transport();
            for refusal in refusals {
                let answer =
                    StunTransmit::new(refusal.as_slice(), transport, self.server, self.local);
                let _ = client.recv(answer, t);
            }
            for message in messages {
                self.emit(out, message, false);
            }
            let Some(client) = self.client.as_mut() else {
                continue;
            };
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
                    self.end(now, reason, out);
                    if let State::Waiting(at) = self.state {
                        if at <= now {
                            if !self.connect(now, out) {
                                self.deadline = self.opening_deadline();
                                return;
                            }
                            self.allocate(now);
                            continue;
                        }
                    }
                }
                TurnPollRet::WaitUntil(at) if !progress => {
                    let at = clock.back(at).max(now);
                    self.deadline = Some(self.stall_deadline().map_or(at, |s| s.min(at)));
                    return;
                }
                _ => {}
            }
        }
        // Still busy after many turns: come back at once rather than spin here.
        self.deadline = Some(now);
    }

    /// When the stream being opened is given up.
    fn opening_deadline(&self) -> Option<Instant> {
        match &self.carrier {
            Carrier::Stream(link) => match link.state {
                StreamState::Opening(_, at) => Some(at),
                _ => None,
            },
            Carrier::Datagram => None,
        }
    }

    /// When the frame arriving on the stream will have stalled.
    fn stall_deadline(&self) -> Option<Instant> {
        match &self.carrier {
            Carrier::Stream(link) => link.framer.deadline(),
            Carrier::Datagram => None,
        }
    }

    /// Gives up a stream that took too long to open, or whose frame stalled.
    fn check_stream(&mut self, now: Instant, out: &mut Out) {
        let Carrier::Stream(link) = &mut self.carrier else {
            return;
        };
        match link.state {
            StreamState::Opening(_, at) if now >= at => {
                self.end(now, IceServerError::Unreachable, out);
            }
            StreamState::Open(_) if link.framer.deadline().is_some_and(|at| now >= at) => {
                self.violation(now, out);
            }
            _ => {}
        }
    }

    /// The server broke the stream's framing: close it, count it, say so, and start over.
    fn violation(&mut self, now: Instant, out: &mut Out) {
        self.stream_violations += 1;
        if matches!(self.state, State::Allocated(_)) {
            self.events
                .push_back(RelayEvent::Failed(IceServerError::InvalidStream));
        }
        self.end(now, IceServerError::InvalidStream, out);
    }

    /// Something happened on the stream `id`. Data from peers is appended to `relayed`
    /// (peer, relayed address, bytes).
    pub fn stream_input(
        &mut self,
        now: Instant,
        clock: Clock,
        id: StreamId,
        input: crate::stream::StreamInput<'_>,
        out: &mut Out,
        relayed: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    ) {
        use crate::stream::StreamInput;
        let Carrier::Stream(link) = &mut self.carrier else {
            return;
        };
        match (input, link.state) {
            (StreamInput::Opened, StreamState::Opening(open, _)) if open == id => {
                link.state = StreamState::Open(id);
                if matches!(self.state, State::Connecting) {
                    self.allocate(now);
                }
                self.drive(now, clock, out);
            }
            (StreamInput::Data(bytes), StreamState::Open(open)) if open == id => {
                link.framer.push(now, bytes);
                self.read_frames(now, clock, id, out, relayed);
            }
            (StreamInput::Closed(end), StreamState::Opening(open, _) | StreamState::Open(open))
                if open == id =>
            {
                link.state = StreamState::Closed;
                let reason = match end {
                    StreamEnd::Tls(failure) => IceServerError::Tls(failure),
                    StreamEnd::Unreachable | StreamEnd::Closed => match self.state {
                        State::Allocated(_) => IceServerError::AllocationLost,
                        _ => IceServerError::Unreachable,
                    },
                };
                self.end(now, reason, out);
                self.drive(now, clock, out);
            }
            // Late news of a stream given up, or out of order: nothing to do.
            _ => {}
        }
    }

    /// Hands every complete frame on the stream to the client.
    fn read_frames(
        &mut self,
        now: Instant,
        clock: Clock,
        id: StreamId,
        out: &mut Out,
        relayed: &mut Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    ) {
        // The framer is taken out while its frames are read (they borrow it).
        let Carrier::Stream(link) = &mut self.carrier else {
            return;
        };
        let mut framer = std::mem::take(&mut link.framer);
        let mut broken = false;
        loop {
            // A frame may end the stream (a refusal): what follows it is not read.
            if self.stream() != Some(id) {
                break;
            }
            match framer.next(now) {
                Ok(Some((_kind, range))) => {
                    let frame = framer.frame(range);
                    if let RelayInput::PeerData { peer, relay, data } =
                        self.handle_message(now, clock, frame, out)
                    {
                        let bytes = match data {
                            PeerBytes::Range(r) => frame[r].to_vec(),
                            PeerBytes::Owned(v) => v,
                        };
                        relayed.push((peer, relay, bytes));
                    }
                }
                Ok(None) => break,
                Err(FrameError::Garbage | FrameError::Stalled) => {
                    broken = true;
                    break;
                }
            }
        }
        if let Carrier::Stream(link) = &mut self.carrier {
            if link.state == StreamState::Open(id) {
                link.framer = framer;
            }
        }
        if broken {
            self.violation(now, out);
            self.drive(now, clock, out);
        } else if let Some(stall) = self.stall_deadline() {
            self.deadline = Some(self.deadline.map_or(stall, |d| d.min(stall)));
        }
    }

    fn on_client_event(
        &mut self,
        t: turn_client_proto::stun::Instant,
        event: TurnEvent,
        out: &mut Out,
    ) {
        match event {
            TurnEvent::AllocationCreated(TransportType::Udp, relayed)
                if matches!(self.state, State::Allocating) =>
            {
                self.state = State::Allocated(relayed);
                self.refused = None;
                self.backoff = RETRY_FIRST;
                self.mismatches = 0;
                self.events.push_back(RelayEvent::Allocated(relayed));
            }
            TurnEvent::PermissionCreated(_, ip) => {
                let Some(client) = self.client.as_mut() else {
                    return;
                };
                let mut wrapped: SmallVec<[Option<Vec<u8>>; 4]> = SmallVec::new();
                let mut i = 0;
                while i < self.parked.len() {
                    if self.parked[i].0.ip() != ip {
                        i += 1;
                        continue;
                    }
                    let Some((peer, data)) = self.parked.remove(i) else {
                        break;
                    };
                    wrapped.push(
                        match client.send_to(TransportType::Udp, peer, data.as_slice(), t) {
                            Ok(Some(w)) => Some(w.data.build()),
                            _ => None,
                        },
                    );
                }
                for contents in wrapped {
                    if !contents.is_some_and(|c| self.emit(out, c, true)) {
                        self.dropped += 1;
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
        out: &mut Out,
    ) -> RelayInput {
        if self.is_streamed() {
            return RelayInput::NotTurn;
        }
        self.handle_message(now, clock, contents, out)
    }

    /// A message from the server: a datagram, or one frame of its stream.
    fn handle_message(
        &mut self,
        now: Instant,
        clock: Clock,
        contents: &[u8],
        out: &mut Out,
    ) -> RelayInput {
        if self.client.is_none() {
            return RelayInput::NotTurn;
        }
        if let Some(verdict) = self.read_error(contents) {
            match verdict {
                Verdict::Failed(reason) => self.end(now, reason, out),
                Verdict::Lost => self.end(now, IceServerError::AllocationLost, out),
                Verdict::Mismatch if self.holds_refused(now).is_some() => {
                    // Not an allocation of ours: the server still ties our address to the
                    // username it refused (coturn does, for up to a minute). Wait that out
                    // quietly; nothing to delete.
                    let until = self.holds_refused(now).unwrap_or(now);
                    self.client = None;
                    self.state = State::Waiting(until.max(now + HOLD_RETRY));
                }
                Verdict::Mismatch if self.mismatches < MAX_MISMATCHES => {
                    // The server holds an allocation for our address that we do not know
                    // (the answer to our Allocate was lost and the server does not replay it
                    // for the retransmission, or an earlier run used this port): delete it,
                    // then allocate again.
                    self.mismatches += 1;
                    if let Some(delete) = self.delete_unknown_allocation() {
                        self.emit(out, delete, false);
                    }
                    self.client = None;
                    self.state = State::Waiting(now + MISMATCH_WAIT);
                }
                Verdict::Mismatch => self.end(
                    now,
                    IceServerError::Refused(ErrorCode::ALLOCATION_MISMATCH),
                    out,
                ),
            }
            self.drive(now, clock, out);
            return RelayInput::Handled;
        }
        let t = clock.at(now);
        let Some(client) = self.client.as_mut() else {
            return RelayInput::NotTurn;
        };
        let transmit = StunTransmit::new(contents, client.transport(), self.server, self.local);
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
                // The relayed bytes sit inside `contents`: find where, without copying.
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
    /// channel is bound, a Send indication otherwise): a datagram for the socket, or a frame
    /// queued on the stream. Without a permission for the peer yet, one is asked for and the
    /// datagram waits (bounded).
    pub fn wrap(
        &mut self,
        now: Instant,
        clock: Clock,
        peer: SocketAddr,
        contents: &[u8],
        out: &mut Out,
    ) -> Wrapped {
        if !matches!(self.state, State::Allocated(_)) {
            self.dropped += 1;
            return Wrapped::Held;
        }
        let t = clock.at(now);
        self.sweep(now);
        let Some(client) = self.client.as_mut() else {
            return Wrapped::Held;
        };
        let ip = peer.ip();
        if client.have_permission(TransportType::Udp, ip) {
            let bytes = match client.send_to(TransportType::Udp, peer, contents, t) {
                Ok(Some(w)) => Some(w.data.build()),
                _ => None,
            };
            let wrapped = match (bytes, self.is_streamed()) {
                (Some(contents), false) => Wrapped::Datagram(Transmit {
                    destination: self.server,
                    source: self.local,
                    contents,
                }),
                (Some(contents), true) => match self.emit(out, contents, true) {
                    true => Wrapped::Streamed,
                    false => Wrapped::Held,
                },
                (None, _) => Wrapped::Held,
            };
            if matches!(wrapped, Wrapped::Held) {
                self.dropped += 1;
            }
            let Some(client) = self.client.as_mut() else {
                return wrapped;
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
                return Wrapped::Held;
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
        Wrapped::Held
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
    /// A stream to the server is closed after it.
    pub fn close(&mut self, now: Instant, clock: Clock, out: &mut Out) {
        let t = clock.at(now);
        let mut last: SmallVec<[Vec<u8>; 1]> = SmallVec::new();
        if let Some(client) = self.client.as_mut() {
            if client.delete(t).is_ok() {
                // The client spaces requests 50 ms apart; this is its last, so let it go now
                // (the client is dropped right after).
                let t = t + Duration::from_millis(100);
                while let Some(transmit) = client.poll_transmit(t) {
                    last.push(transmit.data.as_ref().to_vec());
                }
            }
        }
        for message in last {
            self.emit(out, message, false);
        }
        self.disconnect(out);
        self.client = None;
        self.parked.clear();
        self.state = State::Closed;
        self.deadline = None;
    }

    /// A REFRESH with lifetime 0 for whatever allocation the server holds for our address,
    /// signed with the server's latest realm and nonce.
    fn delete_unknown_allocation(&self) -> Option<Vec<u8>> {
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
        Some(msg.finish())
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
