//! NAT traversal through the mesh's one socket: STUN Binding requests find the public
//! (server-reflexive) address and keep the NAT mapping open ([`binding`]), one TURN allocation
//! per TURN server relays for peers that cannot be reached directly ([`turn`]). Both serve every
//! peer of the mesh, and start as soon as a host candidate and a time exist, before any peer.
//! A TURN server configured over TCP or TLS is reached on a stream the adapter opens
//! ([`crate::stream`]); its allocation relays UDP all the same.
//!
//! The mesh hands this module every datagram from a configured server before peer
//! demultiplexing, every byte of its streams, and every datagram str0m sends from a relayed
//! address to be wrapped for the server; the candidates gathered go to every link.

mod binding;
mod framing;
mod turn;
mod url;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::Candidate;
use turn_client_proto::stun::types::message::Message;

pub use url::{IceServer, IceTransportPolicy, MAX_ICE_SERVER_URLS};

use crate::error::{CredentialsError, IceServerError, InvalidIceServer};
use crate::event::{Event, Transmit};
use crate::path::{CandidateKind, LocalCandidate};
use crate::stream::{StreamCommand, StreamId, StreamInput};
use binding::{Binding, BindingOutcome};
use turn::{Carrier, PeerBytes, Relay, RelayEvent, RelayInput, Wrapped};
use url::{ConfiguredServer, ServerHost, ServerKind, Transport};

/// What the ICE servers' clients send: datagrams for the mesh's socket, and commands for the
/// adapter's streams (with the ids of the streams asked for so far).
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub datagrams: VecDeque<Transmit>,
    pub streams: VecDeque<StreamCommand>,
    next_stream: u64,
}

impl Out {
    /// A stream id never used before.
    fn new_stream(&mut self) -> StreamId {
        self.next_stream += 1;
        StreamId(self.next_stream)
    }
}

/// Data a peer sent to one of our relayed addresses, unwrapped from a server's stream:
/// (peer, relayed address, bytes).
pub(crate) type StreamRelayed = Vec<(SocketAddr, SocketAddr, Vec<u8>)>;

/// How long a server named by host may wait for its address
/// ([`Mesh::set_ice_server_addresses`](crate::Mesh::set_ice_server_addresses)) before it is
/// reported as [`IceServerError::Unresolved`].
const RESOLVE_WAIT: Duration = Duration::from_secs(10);

/// Maps the mesh's `Instant`s onto the `sans_io_time::Instant` the STUN/TURN crates use,
/// counting from the first time the mesh was given (never from the real clock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
}

impl Clock {
    /// `now` on the crates' time scale.
    fn at(self, now: Instant) -> turn_client_proto::stun::Instant {
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        turn_client_proto::stun::Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// A time on the crates' scale, back on ours.
    fn back(self, t: turn_client_proto::stun::Instant) -> Instant {
        let nanos = u64::try_from(t.as_nanos()).unwrap_or(0);
        self.base + Duration::from_nanos(nanos)
    }
}

/// A change the links must apply.
#[derive(Debug, Clone)]
pub(crate) enum CandidateChange {
    /// Add this local candidate to every link (trickling it where negotiation started).
    Added(Candidate),
    /// This local candidate is gone: invalidate it on every link.
    Removed(Candidate),
}

/// One configured URL and its state.
#[derive(Debug)]
struct Server {
    config: ConfiguredServer,
    address: Option<SocketAddr>,
    /// An `Unresolved` failure was reported.
    unresolved_reported: bool,
    binding: Option<Binding>,
    relay: Option<Relay>,
    /// The address a server-reflexive candidate was gathered at through this server.
    srflx: Option<SocketAddr>,
    /// The mapping the allocation was made from: if the server later sees us elsewhere, the
    /// allocation belongs to the old mapping and is lost.
    relay_mapping: Option<SocketAddr>,
    /// An allocation was lost since the binding last answered: its mapping may be out of date
    /// (the loss may be a mapping that changed), so a new allocation takes its mapping from the
    /// next answer, not from the binding's last one.
    mapping_stale: bool,
    /// A failure was reported and nothing succeeded since (one event per streak).
    failing: bool,
}

/// The relayed candidate of an allocation on server `index`. Reached over TCP or TLS it gets
/// a lower priority than over UDP (libwebrtc's relay type preferences, 2 / 1 / 0), as a
/// browser gives it: when both work, ICE prefers the UDP relay. str0m offers no way to set a
/// local candidate's priority but a candidate with one already, which is what `from_parts`
/// builds (its base is its own address, as for any relayed candidate).
fn relayed_candidate(
    relayed: SocketAddr,
    base: SocketAddr,
    transport: Transport,
    index: usize,
) -> Result<Candidate, str0m::error::IceError> {
    let type_preference: u32 = match transport {
        Transport::Udp => return Candidate::relayed(relayed, base, "udp"),
        Transport::Tcp => 1,
        Transport::Tls => 0,
    };
    // str0m's range for relayed candidates (0..16384), odd for IPv6; one value per server.
    let index = u32::try_from(index).unwrap_or(0).min(1000);
    let local_preference = 16_382 + u32::from(relayed.is_ipv6()) - 2 * index;
    let priority = type_preference << 24 | local_preference << 8 | 255;
    Ok(Candidate::from_parts(
        format!("{}{}", 30 + type_preference, index),
        1,
        str0m::net::Protocol::Udp,
        priority,
        relayed,
        str0m::CandidateKind::Relayed,
        Some(SocketAddr::new(
            match relayed {
                SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            },
            0,
        )),
        None,
        None,
    ))
}

/// A local candidate gathered from a server.
#[derive(Debug, Clone)]
struct Gathered {
    info: LocalCandidate,
    candidate: Candidate,
}

/// What a datagram from a configured server turned out to be.
#[derive(Debug)]
pub(crate) enum ServerInput {
    /// STUN/TURN traffic for this module, handled.
    Handled,
    /// Data a peer sent to our relayed address: it continues as a datagram from `peer` to
    /// `relay`.
    Relayed {
        peer: SocketAddr,
        relay: SocketAddr,
        data: RelayedBytes,
    },
    /// Not ours: treat it like any other datagram.
    NotServer,
}

/// Where relayed bytes are.
#[derive(Debug)]
pub(crate) enum RelayedBytes {
    /// This range of the received datagram.
    Range(std::ops::Range<usize>),
    /// A copy.
    Owned(Vec<u8>),
}

/// The mesh's NAT traversal state: its ICE servers, what they gave, and their outputs.
#[derive(Debug)]
pub(crate) struct Nat {
    policy: IceTransportPolicy,
    servers: Vec<Server>,
    hosts: SmallVec<[SocketAddr; 2]>,
    clock: Option<Clock>,
    closed: bool,
    gathered: Vec<Gathered>,
    /// The candidates links get (what `gathered` holds that the policy allows).
    for_links: Vec<Candidate>,
    /// Our relayed addresses and the server each belongs to.
    relays: SmallVec<[(SocketAddr, usize); 2]>,
    out: Out,
    events: VecDeque<Event>,
    changes: VecDeque<CandidateChange>,
    deadline: Option<Instant>,
    /// Datagrams relayed to and from peers through our allocations, and dropped for want of a
    /// permission or an allocation.
    pub relayed_out: u64,
    pub relayed_in: u64,
    /// Datagrams str0m sent from a relayed address that no longer exists (dropped).
    stale_relay_drops: u64,
}

impl Nat {
    /// The mesh's servers, checked. The error names the URL and what is wrong with it.
    pub fn new(
        servers: &[IceServer],
        policy: IceTransportPolicy,
    ) -> Result<Nat, (String, InvalidIceServer)> {
        let servers = url::configure(servers, policy)?
            .into_iter()
            .map(|config| Server {
                address: config.parsed.address(),
                config,
                unresolved_reported: false,
                binding: None,
                relay: None,
                srflx: None,
                relay_mapping: None,
                mapping_stale: false,
                failing: false,
            })
            .collect();
        Ok(Nat {
            policy,
            servers,
            hosts: SmallVec::new(),
            clock: None,
            closed: false,
            gathered: Vec::new(),
            for_links: Vec::new(),
            relays: SmallVec::new(),
            out: Out::default(),
            events: VecDeque::new(),
            changes: VecDeque::new(),
            deadline: None,
            relayed_out: 0,
            relayed_in: 0,
            stale_relay_drops: 0,
        })
    }

    /// Whether no ICE server is configured (everything here is then a no-op).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The policy.
    pub fn policy(&self) -> IceTransportPolicy {
        self.policy
    }

    /// A host candidate exists: servers of its address family can start.
    pub fn add_host(&mut self, address: SocketAddr) {
        if !self.hosts.contains(&address) {
            self.hosts.push(address);
        }
        self.due(None);
    }

    /// The socket moved from `old` to `new`
    /// ([`Mesh::move_host_candidate`](crate::Mesh::move_host_candidate)): what servers gave
    /// through `old` is gone (its server-reflexive candidates, its allocations: servers knew us
    /// by the old socket's mapping), and the servers start over from `new` at once. Peers lose
    /// the old candidates and get the new ones as they are gathered.
    pub fn move_host(&mut self, now: Instant, old: SocketAddr, new: SocketAddr) {
        let affected: SmallVec<[usize; 4]> = (0..self.servers.len())
            .filter(|&i| self.host_for(i) == Some(old))
            .collect();
        self.hosts.retain(|h| *h != old);
        self.add_host(new);
        let Some(clock) = self.clock else {
            return;
        };
        for i in affected {
            let server = &mut self.servers[i];
            server.relay_mapping = None;
            server.failing = false;
            if server.binding.is_some() {
                server.binding = Some(Binding::new(now));
            }
            if let Some(relay) = server.relay.as_mut() {
                relay.rebase(now, clock, new, &mut self.out);
            }
            if let Some(srflx) = self.servers[i].srflx.take() {
                if !self.servers.iter().any(|s| s.srflx == Some(srflx)) {
                    self.forget(CandidateKind::ServerReflexive, srflx);
                }
            }
            self.relay_events(i, now);
        }
        self.handle_timeout(now);
    }

    /// The mesh was given a time: the first one starts the clock (and gathering).
    pub fn observe(&mut self, now: Instant) {
        if self.clock.is_none() && !self.servers.is_empty() {
            self.clock = Some(Clock { base: now });
            self.handle_timeout(now);
        }
    }

    /// Host names that still need an address.
    pub fn unresolved_hosts(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for server in &self.servers {
            if let (None, ServerHost::Name(name)) = (server.address, &server.config.parsed.host) {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }

    /// The adapter resolved `host` to `addrs` (empty: the lookup failed).
    pub fn set_addresses(&mut self, now: Option<Instant>, host: &str, addrs: &[IpAddr]) {
        let host = host.to_ascii_lowercase();
        // Prefer an address our sockets can reach: the family of a host candidate.
        let families: SmallVec<[bool; 2]> = self.hosts.iter().map(|h| h.is_ipv4()).collect();
        let ip = addrs
            .iter()
            .find(|ip| families.contains(&ip.is_ipv4()))
            .or_else(|| addrs.first())
            .copied();
        for i in 0..self.servers.len() {
            let server = &mut self.servers[i];
            let named = matches!(&server.config.parsed.host, ServerHost::Name(n) if *n == host);
            if !named || server.binding.is_some() || server.relay.is_some() {
                continue;
            }
            match ip {
                Some(ip) => server.address = Some(SocketAddr::new(ip, server.config.parsed.port)),
                None if !server.unresolved_reported => {
                    server.unresolved_reported = true;
                    let url = server.config.url.clone();
                    self.fail(i, url, IceServerError::Unresolved);
                }
                None => {}
            }
        }
        self.due(now);
    }

    /// New credentials for the configured TURN servers `entry` names
    /// ([`Mesh::set_ice_server_credentials`](crate::Mesh::set_ice_server_credentials)). Each
    /// server's next allocation uses them; an allocation that exists keeps the username it was
    /// made with (TURN refuses any other on it: RFC 8656 §5, 441 Wrong Credentials), so no
    /// peer loses its relay. A server waiting to try again after a failure tries at once.
    /// Checked first, applied all or nothing.
    pub fn set_credentials(
        &mut self,
        now: Option<Instant>,
        entry: &IceServer,
    ) -> Result<(), CredentialsError> {
        if self.closed {
            return Err(CredentialsError::Closed);
        }
        let mut targets: SmallVec<[usize; 4]> = SmallVec::new();
        for (url, parsed) in url::parse_credentials(entry)? {
            let before = targets.len();
            targets.extend(
                (0..self.servers.len()).filter(|&i| self.servers[i].config.parsed == parsed),
            );
            if targets.len() == before {
                return Err(CredentialsError::NotConfigured { url });
            }
        }
        for i in targets {
            let server = &mut self.servers[i];
            if server.config.username == entry.username
                && server.config.credential == entry.credential
            {
                continue;
            }
            server.config.username.clone_from(&entry.username);
            server.config.credential.clone_from(&entry.credential);
            // A failure with the old credentials is not one with these: report the next.
            server.failing = false;
            if let (Some(relay), Some(now), Some(clock)) = (server.relay.as_mut(), now, self.clock)
            {
                relay.set_credentials(
                    now,
                    clock,
                    &entry.username,
                    &entry.credential,
                    &mut self.out,
                );
                self.relay_events(i, now);
            }
        }
        self.due(now);
        Ok(())
    }

    /// Something changed outside `handle_timeout`: run it at `now`, or (no time given) make
    /// the deadline due so the next `handle_timeout` does.
    fn due(&mut self, now: Option<Instant>) {
        match (now, self.clock) {
            (Some(now), Some(_)) => self.handle_timeout(now),
            (None, Some(clock)) => self.deadline = Some(clock.base),
            _ => {}
        }
    }

    fn fail(&mut self, index: usize, url: String, reason: IceServerError) {
        let server = &mut self.servers[index];
        if server.failing {
            return;
        }
        server.failing = true;
        self.events
            .push_back(Event::IceServerFailed { url, reason });
    }

    /// Whether datagrams from `source` belong to a configured server (one reached by UDP:
    /// a server reached over TCP sends nothing to the socket).
    pub fn is_server(&self, source: SocketAddr) -> bool {
        self.servers
            .iter()
            .any(|s| s.address == Some(source) && s.config.parsed.transport == Transport::Udp)
    }

    /// Whether `address` is a relayed address of ours whose server is reached over a stream
    /// (what str0m sends from it goes on that stream).
    pub fn is_stream_relay(&self, address: SocketAddr) -> bool {
        self.relays.iter().any(|&(a, i)| {
            a == address
                && self.servers[i]
                    .relay
                    .as_ref()
                    .is_some_and(|r| r.is_streamed())
        })
    }

    /// Whether `address` is one of our relayed addresses (str0m sends from it).
    pub fn is_relay(&self, address: SocketAddr) -> bool {
        self.relays.iter().any(|&(a, _)| a == address)
    }

    /// Whether any relayed candidate exists now.
    pub fn has_relay(&self) -> bool {
        !self.relays.is_empty()
    }

    /// The gathered candidates links get.
    pub fn link_candidates(&self) -> &[Candidate] {
        &self.for_links
    }

    /// The gathered candidates.
    pub fn local_candidates(&self) -> impl Iterator<Item = &LocalCandidate> + '_ {
        self.gathered.iter().map(|g| &g.info)
    }

    /// W3C `iceGatheringState == "complete"`: every server has answered (a public address, an
    /// allocation) or failed. True with no servers; false until a host candidate and a time
    /// exist.
    pub fn gathering_complete(&self) -> bool {
        self.servers.iter().all(|s| {
            let stun_done = s.binding.as_ref().is_some_and(|b| b.mapped.is_some());
            let skipped = s.config.parsed.kind == ServerKind::Stun
                && self.policy == IceTransportPolicy::Relay;
            skipped
                || s.failing
                || match &s.relay {
                    Some(relay) => relay.relayed().is_some(),
                    None => stun_done,
                }
        })
    }

    /// The next deadline (STUN retransmissions, re-checks, TURN refreshes).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Outputs for the mesh.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.datagrams.pop_front()
    }
    pub fn poll_stream_command(&mut self) -> Option<StreamCommand> {
        self.out.streams.pop_front()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
    pub fn poll_change(&mut self) -> Option<CandidateChange> {
        self.changes.pop_front()
    }

    /// Something suggests the mappings changed (a peer's ICE disconnected, a restart began, a
    /// peer seemed to move): check them now.
    pub fn recheck(&mut self, now: Instant) {
        if self.clock.is_none() {
            return;
        }
        for server in &mut self.servers {
            if let Some(binding) = &mut server.binding {
                binding.recheck(now);
            }
        }
        self.handle_timeout(now);
    }

    /// Runs whatever is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(clock) = self.clock else {
            return;
        };
        if self.closed {
            self.deadline = None;
            return;
        }
        let mut deadline: Option<Instant> = None;
        let mut earliest = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
        for i in 0..self.servers.len() {
            self.start(i, now, clock);
            let url = self.servers[i].config.url.clone();
            if self.servers[i].address.is_none() {
                if !self.servers[i].unresolved_reported {
                    let at = clock.base + RESOLVE_WAIT;
                    if now >= at {
                        self.servers[i].unresolved_reported = true;
                        self.fail(i, url, IceServerError::Unresolved);
                    } else {
                        earliest(at);
                    }
                }
                continue;
            }
            let host = self.host_for(i);
            if host.is_none() && !self.hosts.is_empty() {
                // No socket of the server's address family (an IPv4 server, IPv6 sockets only).
                self.fail(i, url, IceServerError::Unreachable);
                continue;
            }
            let server = &mut self.servers[i];
            let stun_only = server.config.parsed.kind == ServerKind::Stun;
            let mut gave_up = false;
            if let (Some(binding), Some(to), Some(from)) =
                (server.binding.as_mut(), server.address, host)
            {
                let (request, timed_out) = binding.poll(now);
                gave_up = timed_out;
                earliest(binding.deadline());
                if let Some(contents) = request {
                    self.out.datagrams.push_back(Transmit {
                        destination: to,
                        source: from,
                        contents,
                    });
                }
            }
            if let Some(relay) = server.relay.as_mut() {
                if relay.deadline().is_some_and(|at| at <= now) {
                    relay.drive(now, clock, &mut self.out);
                }
                if let Some(at) = relay.deadline() {
                    earliest(at);
                }
            }
            if gave_up && stun_only {
                self.fail(i, url, IceServerError::Unreachable);
            }
            self.relay_events(i, now);
        }
        self.deadline = deadline;
    }

    /// The host address a server is reached from: the first of its address family.
    fn host_for(&self, index: usize) -> Option<SocketAddr> {
        let address = self.servers[index].address?;
        self.hosts
            .iter()
            .copied()
            .find(|h| h.is_ipv4() == address.is_ipv4())
    }

    /// Starts a server's binding and allocation once its address, a host and a time exist.
    fn start(&mut self, index: usize, now: Instant, clock: Clock) {
        let Some(host) = self.host_for(index) else {
            return;
        };
        let policy = self.policy;
        let server = &mut self.servers[index];
        if server.binding.is_some() {
            return;
        }
        let (Some(address), true) = (server.address, server.relay.is_none()) else {
            return;
        };
        let kind = server.config.parsed.kind;
        if kind == ServerKind::Stun && policy == IceTransportPolicy::Relay {
            // Relay only: a public address would never be used.
            return;
        }
        let carrier = match server.config.parsed.transport {
            Transport::Udp => {
                // A TURN server answers Binding too: its answer gives the server-reflexive
                // candidate (the allocation does not report it) and tells whether the mapping
                // the allocation lives on changed. (Over TCP it would tell the TCP mapping,
                // which no UDP candidate can use.)
                server.binding = Some(Binding::new(now));
                Carrier::Datagram
            }
            Transport::Tcp | Transport::Tls => Carrier::stream(server.config.parsed.tls_name()),
        };
        if kind == ServerKind::Turn {
            let relay = Relay::new(
                now,
                clock,
                address,
                host,
                carrier,
                &server.config.username,
                &server.config.credential,
                &mut self.out,
            );
            server.relay = Some(relay);
        }
    }

    /// Applies what a server's allocation reported.
    fn relay_events(&mut self, index: usize, now: Instant) {
        loop {
            let Some(event) = self.servers[index]
                .relay
                .as_mut()
                .and_then(|r| r.poll_event())
            else {
                return;
            };
            let url = self.servers[index].config.url.clone();
            match event {
                RelayEvent::Allocated(relayed) => {
                    let server = &mut self.servers[index];
                    server.failing = false;
                    server.relay_mapping = match server.mapping_stale {
                        true => None,
                        false => server.binding.as_ref().and_then(|b| b.mapped),
                    };
                    let Some(base) = self.host_for(index) else {
                        continue;
                    };
                    self.relays.push((relayed, index));
                    let transport = self.servers[index].config.parsed.transport;
                    if let Ok(candidate) = relayed_candidate(relayed, base, transport, index) {
                        self.gather(
                            LocalCandidate {
                                kind: CandidateKind::Relayed,
                                address: relayed,
                                base,
                                url,
                            },
                            candidate,
                        );
                    }
                }
                RelayEvent::Lost(relayed) => {
                    self.relays.retain(|&mut (a, _)| a != relayed);
                    let server = &mut self.servers[index];
                    server.relay_mapping = None;
                    // A lost allocation often means our mapping changed: ask again now (the
                    // server-reflexive candidate follows), and do not take the binding's last
                    // answer for the next allocation's mapping.
                    server.mapping_stale = true;
                    if let Some(binding) = server.binding.as_mut() {
                        binding.recheck(now);
                    }
                    self.forget(CandidateKind::Relayed, relayed);
                    // Not a streak: a loss is reported each time it happens.
                    self.events.push_back(Event::IceServerFailed {
                        url,
                        reason: IceServerError::AllocationLost,
                    });
                }
                RelayEvent::Failed(reason) => self.fail(index, url, reason),
            }
        }
    }

    /// Records a gathered candidate and hands it to the links (if the policy allows).
    fn gather(&mut self, info: LocalCandidate, candidate: Candidate) {
        if self
            .gathered
            .iter()
            .any(|g| g.info.kind == info.kind && g.info.address == info.address)
        {
            return;
        }
        let for_links =
            info.kind == CandidateKind::Relayed || self.policy == IceTransportPolicy::All;
        if for_links {
            self.for_links.push(candidate.clone());
            self.changes
                .push_back(CandidateChange::Added(candidate.clone()));
        }
        self.events
            .push_back(Event::CandidateGathered(info.clone()));
        self.gathered.push(Gathered { info, candidate });
    }

    /// Removes a gathered candidate from the links.
    fn forget(&mut self, kind: CandidateKind, address: SocketAddr) {
        let Some(i) = self
            .gathered
            .iter()
            .position(|g| g.info.kind == kind && g.info.address == address)
        else {
            return;
        };
        let gone = self.gathered.remove(i);
        let before = self.for_links.len();
        self.for_links
            .retain(|c| !(c.addr() == address && c.kind() == gone.candidate.kind()));
        if self.for_links.len() != before {
            self.changes
                .push_back(CandidateChange::Removed(gone.candidate));
        }
    }

    /// Offers a datagram from a configured server (`is_server(source)` holds).
    pub fn handle_server_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        contents: &[u8],
    ) -> ServerInput {
        let Some(clock) = self.clock else {
            return ServerInput::NotServer;
        };
        let mut result = ServerInput::NotServer;
        for i in 0..self.servers.len() {
            if self.servers[i].address != Some(source) {
                continue;
            }
            // Our own Binding transaction first (cheap: one transaction id to compare).
            if contents.first().is_some_and(|b| b & 0xC0 == 0) {
                if let Ok(msg) = Message::from_bytes(contents) {
                    let outcome = self.servers[i]
                        .binding
                        .as_mut()
                        .and_then(|b| b.handle_response(now, &msg));
                    if let Some(outcome) = outcome {
                        self.on_binding(i, now, clock, outcome);
                        result = ServerInput::Handled;
                        break;
                    }
                }
            }
            let Some(relay) = self.servers[i].relay.as_mut() else {
                continue;
            };
            match relay.handle_datagram(now, clock, contents, &mut self.out) {
                RelayInput::Handled => {
                    result = ServerInput::Handled;
                    self.relay_events(i, now);
                    break;
                }
                RelayInput::PeerData { peer, relay, data } => {
                    self.relayed_in += 1;
                    let data = match data {
                        PeerBytes::Range(r) => RelayedBytes::Range(r),
                        PeerBytes::Owned(v) => RelayedBytes::Owned(v),
                    };
                    return ServerInput::Relayed { peer, relay, data };
                }
                RelayInput::NotTurn => {}
            }
        }
        self.handle_timeout(now);
        result
    }

    fn on_binding(&mut self, index: usize, now: Instant, clock: Clock, outcome: BindingOutcome) {
        let url = self.servers[index].config.url.clone();
        match outcome {
            BindingOutcome::Mapped(mapped) => {
                let server = &mut self.servers[index];
                if server.config.parsed.kind == ServerKind::Stun {
                    server.failing = false;
                }
                // The allocation lives on the mapping it was made from; a new mapping means
                // the server no longer knows us by it.
                server.mapping_stale = false;
                let moved = server.relay_mapping.is_some_and(|m| m != mapped);
                if server.relay_mapping.is_none()
                    && server.relay.as_ref().is_some_and(|r| r.relayed().is_some())
                {
                    server.relay_mapping = Some(mapped);
                }
                if moved {
                    if let Some(relay) = server.relay.as_mut() {
                        relay.lost(now, clock, &mut self.out);
                    }
                    self.relay_events(index, now);
                }
                self.reflexive(index, mapped, url);
            }
            BindingOutcome::Refused(code) => {
                if self.servers[index].config.parsed.kind == ServerKind::Stun {
                    self.fail(index, url, IceServerError::Refused(code));
                }
            }
        }
    }

    /// A server sees us at `mapped`: gather it as a server-reflexive candidate (unless it is a
    /// host address: no NAT), replacing what this server reported before.
    fn reflexive(&mut self, index: usize, mapped: SocketAddr, url: String) {
        let previous = self.servers[index].srflx;
        if previous == Some(mapped) {
            return;
        }
        self.servers[index].srflx = Some(mapped);
        if let Some(old) = previous {
            // Still the mapping another server sees? Then it stays.
            if !self.servers.iter().any(|s| s.srflx == Some(old)) {
                self.forget(CandidateKind::ServerReflexive, old);
            }
        }
        if self.policy == IceTransportPolicy::Relay || self.hosts.contains(&mapped) {
            return;
        }
        let Some(base) = self.host_for(index) else {
            return;
        };
        if let Ok(candidate) = Candidate::server_reflexive(mapped, base, "udp") {
            self.gather(
                LocalCandidate {
                    kind: CandidateKind::ServerReflexive,
                    address: mapped,
                    base,
                    url,
                },
                candidate,
            );
        }
    }

    /// Wraps a datagram str0m sent from our relayed address `t.source` for its TURN server:
    /// the datagram for the socket, or `None` when it went on the server's stream (see
    /// [`poll_stream_command`](Nat::poll_stream_command)), waits for a permission, or was
    /// dropped.
    pub fn wrap(&mut self, now: Instant, t: Transmit) -> Option<Transmit> {
        let clock = self.clock?;
        let Some(&(_, index)) = self.relays.iter().find(|&&(a, _)| a == t.source) else {
            self.stale_relay_drops += 1;
            return None;
        };
        let relay = self.servers[index].relay.as_mut()?;
        let wrapped = relay.wrap(now, clock, t.destination, &t.contents, &mut self.out);
        if let Some(at) = relay.deadline() {
            self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
        }
        self.relay_events(index, now);
        match wrapped {
            Wrapped::Datagram(t) => {
                self.relayed_out += 1;
                Some(t)
            }
            Wrapped::Streamed => {
                self.relayed_out += 1;
                None
            }
            Wrapped::Held => None,
        }
    }

    /// Whether any server is reached over a stream.
    pub fn has_streams(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.config.parsed.transport != Transport::Udp)
    }

    /// Something happened on stream `id`; what peers sent through it is appended to
    /// `relayed`, to go on as datagrams from them to our relayed address.
    pub fn handle_stream(
        &mut self,
        now: Instant,
        id: StreamId,
        input: StreamInput<'_>,
        relayed: &mut StreamRelayed,
    ) {
        let Some(clock) = self.clock else {
            return;
        };
        if self.closed {
            return;
        }
        let Some(index) = self
            .servers
            .iter()
            .position(|s| s.relay.as_ref().is_some_and(|r| r.stream() == Some(id)))
        else {
            // A stream given up (closed, timed out): whatever the adapter still says is late.
            return;
        };
        let before = relayed.len();
        if let Some(relay) = self.servers[index].relay.as_mut() {
            relay.stream_input(now, clock, id, input, &mut self.out, relayed);
        }
        self.relayed_in += (relayed.len() - before) as u64;
        self.relay_events(index, now);
        self.handle_timeout(now);
    }

    /// Streams to TURN servers closed for breaking TURN's framing, and frames skipped for
    /// being too large.
    pub fn stream_faults(&self) -> (u64, u64) {
        self.servers
            .iter()
            .filter_map(|s| s.relay.as_ref())
            .fold((0, 0), |(v, o), r| {
                (v + r.stream_violations, o + r.oversize_frames())
            })
    }

    /// Datagrams dropped on the way to a relay (no permission, parking full).
    pub fn relay_dropped(&self) -> u64 {
        self.stale_relay_drops
            + self
                .servers
                .iter()
                .filter_map(|s| s.relay.as_ref())
                .map(|r| r.dropped)
                .sum::<u64>()
    }

    /// Deletes every allocation; nothing more goes out.
    pub fn close(&mut self, now: Option<Instant>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if let (Some(now), Some(clock)) = (now, self.clock) {
            for server in &mut self.servers {
                if let Some(relay) = server.relay.as_mut() {
                    relay.close(now, clock, &mut self.out);
                }
            }
        }
        self.relays.clear();
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_credentials_are_checked_first_and_applied_all_or_nothing() {
        let server = IceServer::turn("turn:203.0.113.1:3478", "old", "c1");
        let mut nat = Nat::new(&[server], IceTransportPolicy::All).expect("valid");
        let both = IceServer {
            urls: vec!["turn:203.0.113.1".into(), "turn:203.0.113.2".into()],
            username: "new".into(),
            credential: "c2".into(),
        };
        assert_eq!(
            nat.set_credentials(None, &both),
            Err(CredentialsError::NotConfigured {
                url: "turn:203.0.113.2".into()
            })
        );
        assert_eq!(nat.servers[0].config.username, "old", "nothing changed");
        // The same server, written differently.
        let same = IceServer::turn("TURN:203.0.113.1?transport=udp", "new", "c2");
        assert_eq!(nat.set_credentials(None, &same), Ok(()));
        assert_eq!(nat.servers[0].config.username, "new");
        assert_eq!(nat.servers[0].config.credential, "c2");
        nat.close(None);
        assert_eq!(
            nat.set_credentials(None, &same),
            Err(CredentialsError::Closed)
        );
    }

    /// Issue 25: `{:?}` of a configuration printed the TURN password into logs.
    #[test]
    fn debug_output_never_shows_a_turn_credential() {
        let server = IceServer::turn("turn:203.0.113.1:3478", "player", "hunter2");
        let config = crate::MeshConfig {
            ice_servers: vec![server.clone()],
            ..crate::MeshConfig::default()
        };
        // The allocation under way holds the credential too.
        let mut nat =
            Nat::new(std::slice::from_ref(&server), IceTransportPolicy::All).expect("valid");
        nat.add_host("192.0.2.1:5000".parse().expect("addr"));
        nat.observe(Instant::now());
        assert!(nat.servers[0].relay.is_some());
        for shown in [
            format!("{server:?}"),
            format!("{config:?}"),
            format!("{nat:?}"),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
            assert!(
                shown.contains("player"),
                "the username is no secret: {shown}"
            );
        }
        let stun = format!("{:?}", IceServer::stun("stun:203.0.113.1"));
        assert!(stun.contains(r#"credential: """#), "none to hide: {stun}");
    }
}
