//! The mesh: Godot's `WebRTCMultiplayerPeer` as a sans-IO state machine.
//!
//! This file holds the modes, the connection status and what the mesh does with what its links
//! report; the peers and the mesh's bookkeeping for each are in [`peers`], datagrams in
//! ([`inbound`]), signals ([`signaling`]) and packets out ([`send`]) have their own files.

/// What a new link (or a handshake retry) is built from: the mesh's shared parts, borrowed
/// field by field so that a link of the peer table can be borrowed beside them.
macro_rules! link_setup {
    ($mesh:expr) => {
        $crate::link::LinkSetup {
            layout: &$mesh.layout,
            config: &$mesh.config,
            rtc_config: &$mesh.rtc_config,
            host_addresses: link_hosts(&$mesh.nat, &$mesh.host_addresses),
            gathered: $mesh.nat.link_candidates(),
            span: &$mesh.span,
        }
    };
}

mod demux;
mod inbound;
mod migrate;
mod peers;
mod send;
mod signaling;
mod streams;
mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::{Rtc, RtcConfig};

use crate::channels::{self, ChannelSpec};
use crate::config::MeshConfig;
use crate::error::{AddPeerError, CreateError};
use crate::event::{Event, EventQueue, LossReason, PendingEvents, Transmit};
use crate::limits;
use crate::link::{Link, LinkEvent, Loss, PeerStats, Role};
use crate::nat::{CandidateChange, IceTransportPolicy, Nat};
use crate::path::PeerPath;
use crate::stats::MeshStats;
use crate::transfer::{is_valid_peer_id, ConnectionStatus, Mode, PeerId, TransferMode, SERVER_ID};
use peers::PeerTable;

/// What [`Mesh::peer`] reports about one peer (Godot's `get_peer`).
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{Mesh, MeshConfig};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
/// mesh.add_peer(Instant::now(), 7, 1)?;
/// let info = mesh.peer(7).expect("added");
/// assert!(!info.connected); // not until its channels open
/// assert_eq!((info.open_channels, info.channels), (0, 3)); // Godot's three channels
/// assert_eq!(info.path, None); // no candidate pair chosen yet
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's id.
    pub id: PeerId,
    /// Whether `PeerConnected` was emitted (all channels open).
    pub connected: bool,
    /// Channels open so far.
    pub open_channels: usize,
    /// Channels in the layout (3 + extra channels).
    pub channels: usize,
    /// Bytes waiting in rtcmesh's queue for room in the SCTP send window.
    pub queued_bytes: usize,
    /// The path ICE chose, once DTLS or SCTP traffic went out on it: direct or relayed, and
    /// the kinds of both ends. `None` before; while an ICE restart or a move finds the next
    /// pair, the last one (as in [`PeerStats::path`]).
    pub path: Option<PeerPath>,
}

/// One multiplayer peer (Godot's `WebRTCMultiplayerPeer`): one str0m `Rtc` per remote peer, all
/// behind one UDP socket. Feed it datagrams, signals, commands and timeouts; drain
/// [`poll_transmit`](Mesh::poll_transmit), [`poll_event`](Mesh::poll_event) and
/// [`poll_timeout`](Mesh::poll_timeout) after each.
///
/// ```
/// use std::time::{Duration, Instant};
/// use rtcmesh::{Event, Mesh, MeshConfig, Target, TransferMode};
///
/// /// An in-memory network: `from`'s datagrams and signals go straight to `to`.
/// /// Returns `from`'s other events.
/// fn exchange(from: &mut Mesh, to: &mut Mesh) -> Vec<Event> {
///     let now = Instant::now();
///     from.handle_timeout(now);
///     while let Some(t) = from.poll_transmit() {
///         to.handle_datagram(now, t.source, t.destination, &t.contents);
///     }
///     let mut events = Vec::new();
///     while let Some(event) = from.poll_event() {
///         match event {
///             Event::Signal(s) => to.handle_signal(now, from.unique_id(), s.signal).expect("a signal"),
///             other => events.push(other),
///         }
///     }
///     events
/// }
///
/// let mut a = Mesh::create_mesh(1, MeshConfig::default())?;
/// let mut b = Mesh::create_mesh(2, MeshConfig::default())?;
/// a.add_host_candidate("127.0.0.1:5001".parse()?)?; // addresses only: nothing is bound here
/// b.add_host_candidate("127.0.0.1:5002".parse()?)?;
/// a.add_peer(Instant::now(), 2, 1)?; // Godot's add_peer(2, 1)
/// b.add_peer(Instant::now(), 1, 1)?;
///
/// let give_up = Instant::now() + Duration::from_secs(10);
/// loop {
///     assert!(Instant::now() < give_up, "hello within 10 s");
///     for event in exchange(&mut a, &mut b) {
///         if event == Event::PeerConnected(2) {
///             a.send(Target::Peer(2), TransferMode::Reliable, 0, b"hello")?;
///         }
///     }
///     let events = exchange(&mut b, &mut a);
///     if let Some(Event::Packet(p)) = events.iter().find(|e| matches!(e, Event::Packet(_))) {
///         assert_eq!((p.from, &p.data[..]), (1, &b"hello"[..]));
///         break;
///     }
///     std::thread::sleep(Duration::from_millis(1)); // a real loop sleeps until poll_timeout
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Mesh {
    mode: Mode,
    unique_id: PeerId,
    status: ConnectionStatus,
    closed: bool,
    refuse_new_connections: bool,
    config: MeshConfig,
    layout: Vec<ChannelSpec>,
    rtc_config: RtcConfig,
    host_addresses: Vec<SocketAddr>,
    peers: PeerTable,
    /// STUN/TURN: gathered candidates, allocations, and their timers.
    nat: Nat,
    /// `.local` names the adapter is asked to resolve (see `mdns.rs`).
    mdns: crate::mdns::Queries,
    last_now: Option<Instant>,
    /// Where the clock stops, once a time near the end of `Instant`'s range was seen.
    clock_horizon: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: EventQueue,
    /// The mesh's own counters, plus those of the links it removed (a live link keeps its own:
    /// see [`Mesh::stats`]).
    stats: MeshStats,
    /// The mesh's `tracing` span (see `trace.rs`).
    span: tracing::Span,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("mode", &self.mode)
            .field("unique_id", &self.unique_id)
            .field("status", &self.status)
            .field("peers", &self.peers.ids().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Godot's `create_server(channels_config)`: unique id 1, status `Connected`.
    pub fn create_server(config: MeshConfig) -> Result<Mesh, CreateError> {
        Mesh::new(Mode::Server, SERVER_ID, config)
    }

    /// Godot's `create_client(id, channels_config)`: id in `2..=2147483647`, status `Connecting`
    /// until the server (peer 1, the only peer it may add) is connected.
    pub fn create_client(unique_id: PeerId, config: MeshConfig) -> Result<Mesh, CreateError> {
        if unique_id == SERVER_ID {
            return Err(CreateError::InvalidId(unique_id));
        }
        Mesh::new(Mode::Client, unique_id, config)
    }

    /// Godot's `create_mesh(id, channels_config)`: id in `1..=2147483647`, status `Connected`.
    pub fn create_mesh(unique_id: PeerId, config: MeshConfig) -> Result<Mesh, CreateError> {
        Mesh::new(Mode::Mesh, unique_id, config)
    }

    fn new(mode: Mode, unique_id: PeerId, config: MeshConfig) -> Result<Mesh, CreateError> {
        if !is_valid_peer_id(unique_id) {
            return Err(CreateError::InvalidId(unique_id));
        }
        config.validate()?;
        let nat = Nat::new(&config.ice_servers, config.ice_transport_policy)
            .map_err(|(url, reason)| CreateError::IceServer { url, reason })?;
        let cert = match &config.dtls_cert {
            Some(cert) => cert.clone(),
            None => str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate()
                .ok_or(CreateError::Certificate)?,
        };
        let mut rtc_config = Rtc::builder()
            .set_dtls_cert(cert)
            .set_sctp_max_buffered_amount(config.sctp_send_buffer)
            // Advertised as `a=max-message-size` and enforced by SCTP on receipt: senders
            // refuse larger packets instead of having them acknowledged and then dropped.
            .set_sctp_max_message_size(u32::try_from(config.max_packet_size).unwrap_or(u32::MAX))
            .set_mtu(config.mtu..=config.mtu.max(str0m::DATAGRAM_MTU_WARN))
            // str0m's stats event carries the ICE round-trip time and the selected pair.
            .set_stats_interval(config.measurement_interval())
            // SNAP carries SCTP's INIT in the SDP, so the association is up as soon as DTLS is:
            // no INIT / COOKIE exchange on the wire. That exchange retransmits from a 3 s RTO
            // doubling each time (RFC 4960, not configurable in str0m), so three lost packets
            // pushed it past `connect_timeout`. Remotes without SNAP fall back to the exchange.
            .set_snap_enabled(true);
        rtc_config.set_max_stun_rto(config.stun_max_rto);
        rtc_config.set_max_stun_retransmits(config.stun_max_retransmits);
        let status = match mode {
            Mode::Client => ConnectionStatus::Connecting,
            Mode::Server | Mode::Mesh => ConnectionStatus::Connected,
        };
        Ok(Mesh {
            mode,
            unique_id,
            status,
            closed: false,
            refuse_new_connections: false,
            layout: channels::layout(&config.channels),
            config,
            rtc_config,
            host_addresses: Vec::new(),
            peers: PeerTable::default(),
            nat,
            mdns: Default::default(),
            last_now: None,
            clock_horizon: None,
            transmits: VecDeque::new(),
            events: EventQueue::default(),
            stats: MeshStats::default(),
            span: crate::trace::mesh_span(unique_id, mode),
        })
    }

    /// Godot's `add_peer(peer_id, unreliable_lifetime)`: creates the connection and its channels.
    /// `unreliable_lifetime_ms` is the packet lifetime of the `ordered` and `unreliable`
    /// channels, counted from `send` (a browser's `maxPacketLifeTime`): a packet still waiting
    /// in rtcmesh's queue after it is dropped, and SCTP abandons one it holds that long.
    /// If this mesh's id is the larger, an [`Event::Signal`] with the offer follows.
    pub fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        unreliable_lifetime_ms: i32,
    ) -> Result<(), AddPeerError> {
        if self.closed {
            return Err(AddPeerError::Closed);
        }
        match self.mode {
            Mode::Client if peer != SERVER_ID => return Err(AddPeerError::ClientOnlyServer(peer)),
            Mode::Server if peer == SERVER_ID => return Err(AddPeerError::ServerCannotAddServer),
            _ => {}
        }
        if !is_valid_peer_id(peer) {
            return Err(AddPeerError::InvalidId(peer));
        }
        if peer == self.unique_id {
            return Err(AddPeerError::SelfPeer(peer));
        }
        let lifetime = u16::try_from(unreliable_lifetime_ms)
            .map_err(|_| AddPeerError::InvalidLifetime(unreliable_lifetime_ms))?;
        if self.refuse_new_connections {
            return Err(AddPeerError::Refused);
        }
        if self.peers.contains_id(peer) {
            return Err(AddPeerError::AlreadyExists(peer));
        }
        let now = self.observe(now);
        self.absorb_nat();
        let link = Link::new(
            now,
            peer,
            Role::of(self.unique_id, peer),
            lifetime,
            link_setup!(self),
        )?;
        let key = self.peers.insert(link);
        // The offer (offering side) comes first.
        self.settle(key);
        if self.mode == Mode::Client && self.status == ConnectionStatus::Disconnected {
            self.set_status(ConnectionStatus::Connecting);
        }
        self.peers.link_mut(key).handle_timeout(now);
        self.settle(key);
        self.absorb_nat();
        Ok(())
    }

    /// Advances every peer whose deadline is at or before `now`, and sends what was written
    /// since the last poll.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.observe(now);
        self.flush_dirty();
        for key in self.peers.due(now) {
            if let Some(link) = self.peers.get_mut(key) {
                link.handle_timeout(now);
                self.settle(key);
            }
        }
        if self.nat.poll_timeout().is_some_and(|at| at <= now) {
            self.nat.handle_timeout(now);
        }
        self.absorb_nat();
        self.expire_mdns(now);
    }

    /// Godot's `remove_peer`: closes the connection (the remote notices at once) and emits
    /// `PeerDisconnected` if the peer had connected. Returns whether the peer existed.
    pub fn remove_peer(&mut self, peer: PeerId) -> bool {
        match self.peers.key(peer) {
            Some(key) => {
                self.remove_link(key, true, Loss::Removed);
                true
            }
            None => false,
        }
    }

    /// Godot's `disconnect_peer(peer, force)`: without `force` the same as
    /// [`remove_peer`](Mesh::remove_peer); with `force` the peer is dropped without a
    /// `PeerDisconnected` event (Godot's documented behaviour). Returns whether the peer existed.
    pub fn disconnect_peer(&mut self, peer: PeerId, force: bool) -> bool {
        match self.peers.key(peer) {
            Some(key) => {
                self.remove_link(key, !force, Loss::Removed);
                true
            }
            None => false,
        }
    }

    /// Godot's `close`: closes every connection, emitting `PeerDisconnected` for each connected
    /// peer, and sets the status to `Disconnected`. A closed mesh refuses new peers.
    pub fn close(&mut self) {
        let keys: Vec<usize> = self.peers.entries().map(|(_, key)| key).collect();
        for key in keys {
            self.remove_link(key, true, Loss::Removed);
        }
        // The links' goodbyes from a relayed address are wrapped while the allocation exists;
        // then it is deleted.
        if let (Some(now), false) = (self.last_now, self.nat.is_empty()) {
            let pending = std::mem::take(&mut self.transmits);
            for t in pending {
                if !self.nat.is_relay(t.source) {
                    self.transmits.push_back(t);
                } else if let Some(wrapped) = self.nat.wrap(now, t) {
                    self.transmits.push_back(wrapped);
                }
            }
        }
        self.nat.close(self.last_now);
        self.absorb_nat();
        self.closed = true;
        self.set_status(ConnectionStatus::Disconnected);
    }

    /// The next datagram to send. The first call after `send`s hands what they wrote to str0m
    /// (once for the whole burst). Datagrams for a TURN server come out already wrapped, so
    /// every datagram leaves from the one socket.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.next_transmit();
        if t.is_some() {
            self.stats.datagrams_sent += 1;
        }
        t
    }

    /// The next datagram for the socket: the links' (relayed ones wrapped for their TURN
    /// server) and the ICE servers' own requests.
    fn next_transmit(&mut self) -> Option<Transmit> {
        self.flush_dirty();
        loop {
            let Some(t) = self.transmits.pop_front() else {
                return self.nat.poll_transmit();
            };
            if self.nat.is_empty() || self.host_addresses.contains(&t.source) {
                return Some(t);
            }
            // str0m sent it from our relayed address: it travels inside TURN. (From a relayed
            // address that is gone it goes nowhere: ICE moves to another pair.)
            let Some(now) = self.last_now else {
                continue;
            };
            let wrapped = self.nat.wrap(now, t);
            self.absorb_nat();
            if wrapped.is_some() {
                return wrapped;
            }
        }
    }

    /// The next event. The first call after `send`s hands what they wrote to str0m, as
    /// [`poll_transmit`](Mesh::poll_transmit) does.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.flush_dirty();
        self.events.pop_front()
    }

    /// The next event, without draining links first (for layers on the mesh that read events
    /// between their own sends).
    pub(crate) fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// How many events (and packet bytes) wait for [`poll_event`](Mesh::poll_event). The mesh
    /// never drops an event to bound this: an I/O loop keeps it bounded by not feeding
    /// datagrams while the application is behind (both adapters do).
    pub fn pending_events(&self) -> PendingEvents {
        self.events.pending()
    }

    /// When [`handle_timeout`](Mesh::handle_timeout) must next be called: the earliest deadline
    /// of all peers and of the ICE servers (which run before any peer exists; a time in the
    /// past means at once). `None` while there is nothing to wait for. While packets written
    /// by `send` wait to be drained (until the next `poll_transmit`, `poll_event` or
    /// `handle_timeout`), this is the mesh's latest time: now.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let (true, Some(now)) = (self.peers.any_dirty(), self.last_now) {
            return Some(now);
        }
        [
            self.peers.next_deadline(),
            self.nat.poll_timeout(),
            self.mdns.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// This mesh's unique id.
    pub fn unique_id(&self) -> PeerId {
        self.unique_id
    }

    /// The topology this mesh was created with.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The connection status (Godot's `get_connection_status`).
    pub fn status(&self) -> ConnectionStatus {
        self.status
    }

    /// Godot's `is_server_relay_supported`: true in server and client modes.
    pub fn is_server_relay_supported(&self) -> bool {
        matches!(self.mode, Mode::Server | Mode::Client)
    }

    /// The largest packet [`send`](Mesh::send) accepts (enforced, unlike Godot's 1200).
    pub fn max_packet_size(&self) -> usize {
        self.config.max_packet_size
    }

    /// The extra channels (Godot's `channels_config`).
    pub fn channels_config(&self) -> &[TransferMode] {
        &self.config.channels
    }

    /// Godot's `set_refuse_new_connections`: while on, `add_peer` fails with `Refused`.
    pub fn set_refuse_new_connections(&mut self, refuse: bool) {
        self.refuse_new_connections = refuse;
    }

    /// Godot's `is_refusing_new_connections`.
    pub fn is_refusing_new_connections(&self) -> bool {
        self.refuse_new_connections
    }

    /// Godot's `has_peer`.
    pub fn has_peer(&self, peer: PeerId) -> bool {
        self.peers.contains_id(peer)
    }

    /// Godot's `get_peer`: the peer's connection state.
    pub fn peer(&self, peer: PeerId) -> Option<PeerInfo> {
        let link = self.peers.by_id(peer)?;
        Some(PeerInfo {
            id: peer,
            connected: link.is_connected(),
            open_channels: link.open_channels(),
            channels: link.total_channels(),
            queued_bytes: link.queued_bytes(),
            path: link.path(),
        })
    }

    /// Godot's `get_peers`: every added peer, connected or not, in ascending id order.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.ids()
    }

    /// The peers that are connected (`PeerConnected` emitted), in ascending id order.
    pub fn connected_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .entries()
            .filter(|&(_, key)| self.peers.link(key).is_connected())
            .map(|(id, _)| id)
    }

    /// Counters of traffic and of what was dropped.
    pub fn stats(&self) -> MeshStats {
        let (violations, oversize) = self.nat.stream_faults();
        let mut total = MeshStats {
            datagrams_relayed_sent: self.nat.relayed_out,
            datagrams_relayed_received: self.nat.relayed_in,
            datagrams_relay_dropped: self.nat.relay_dropped(),
            turn_streams_broken: violations,
            turn_stream_frames_oversize: oversize,
            ..self.stats
        };
        for link in self.peers.links() {
            link.counts().add_to(&mut total);
        }
        total
    }

    /// One peer's traffic and path (see [`PeerStats`]): datagrams and bytes both ways, per
    /// channel packets and bytes sent and received, packets expired in rtcmesh's queue and
    /// bytes queued, the round-trip time, the selected candidate pair, the SCTP send window, the
    /// peer's largest accepted packet, ICE restarts and moves.
    pub fn peer_stats(&self, peer: PeerId) -> Option<PeerStats> {
        let link = self.peers.by_id(peer)?;
        Some(link.stats(self.config.max_packet_size))
    }

    /// Every current peer's [`PeerStats`] summed: counters, windows and channels added up
    /// (channel by channel, in layout order), `round_trip_time` the largest (the slowest peer),
    /// `max_packet_size` the smallest (what every peer accepts; the mesh's limit with no
    /// peers), `peer` 0 and `path` `None`.
    pub fn aggregate_peer_stats(&self) -> PeerStats {
        let mut total = PeerStats::empty(self.config.max_packet_size);
        for link in self.peers.links() {
            total.add(&link.stats(self.config.max_packet_size));
        }
        total
    }

    /// Address pairs currently routed without a scan.
    pub fn known_routes(&self) -> usize {
        self.peers.known_routes()
    }

    /// Records the caller's time and returns the time to use: `now`, unless it is so close to
    /// the end of `Instant`'s range that str0m would overflow on it; the clock then stops at
    /// the last safe instant (see [`limits::saturate_clock`]).
    fn observe(&mut self, now: Instant) -> Instant {
        let now = match self.clock_horizon {
            Some(horizon) if now >= horizon => horizon,
            _ => match limits::saturate_clock(now) {
                Ok(now) => now,
                Err(horizon) => {
                    self.clock_horizon = Some(horizon);
                    horizon
                }
            },
        };
        self.last_now = Some(self.last_now.map_or(now, |t| t.max(now)));
        self.nat.observe(now);
        now
    }

    /// Moves what the ICE servers produced into the mesh: datagrams, events, and candidates
    /// for every link (trickled to peers already negotiating).
    fn absorb_nat(&mut self) {
        if self.nat.is_empty() {
            return;
        }
        while let Some(t) = self.nat.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(event) = self.nat.poll_event() {
            self.events.push_back(event);
        }
        while let Some(change) = self.nat.poll_change() {
            for key in self.peers.keys() {
                let Some(link) = self.peers.get_mut(key) else {
                    continue;
                };
                match &change {
                    CandidateChange::Added(candidate) => {
                        if candidate.kind() == str0m::CandidateKind::ServerReflexive {
                            link.on_public_address_changed();
                        }
                        link.add_local_candidate(candidate.clone());
                    }
                    CandidateChange::Removed(candidate) => {
                        link.invalidate_local_candidate(candidate)
                    }
                }
                // Let ICE act on the change now rather than at its next timer.
                if let Some(now) = self.last_now {
                    link.handle_timeout(now);
                }
                self.settle(key);
            }
            while let Some(t) = self.nat.poll_transmit() {
                self.transmits.push_back(t);
            }
            while let Some(event) = self.nat.poll_event() {
                self.events.push_back(event);
            }
        }
    }

    /// Ends a link that failed by itself, saying why.
    fn lose(&mut self, key: usize, loss: Loss) {
        let link = self.peers.link(key);
        let reason = match loss {
            Loss::ConnectTimeout => Some(LossReason::ConnectTimeout {
                local_relay: self.nat.has_relay(),
                remote_relay: link.remote_has_relay(),
            }),
            Loss::Silent => Some(LossReason::Silent),
            Loss::IceLost => Some(LossReason::IceLost),
            Loss::Closed => Some(LossReason::Closed),
            Loss::Abuse => Some(LossReason::Abuse),
            Loss::LayoutMismatch { local, remote } => {
                Some(LossReason::ChannelLayoutMismatch { local, remote })
            }
            // Not a loss of its own: the application removed it, and knows.
            Loss::Removed => None,
        };
        if let Some(reason) = reason {
            self.events.push_back(Event::PeerLost {
                id: link.peer(),
                reason,
            });
        }
        self.remove_link(key, true, loss);
    }

    /// Drains every link written to since its last drain, at the mesh's latest time.
    pub(crate) fn flush_dirty(&mut self) {
        let keys = self.peers.take_dirty();
        if let Some(now) = self.last_now {
            for &key in &keys {
                match self.peers.get_mut(key) {
                    Some(link) if link.is_due() => {
                        link.flush(now);
                        self.settle(key);
                    }
                    _ => {}
                }
            }
        }
        self.peers.give_back(keys);
    }

    /// Moves what link `key` produced into the mesh's queues and acts on what it reported:
    /// announce, remove, start over, forget routes, re-check the NAT; then re-registers its
    /// deadline and, if it waits to be drained, lists it.
    fn settle(&mut self, key: usize) {
        let mut report = Report::default();
        let link = self.peers.link_mut(key);
        while let Some(t) = link.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(event) = link.poll_event() {
            match event {
                LinkEvent::App(event) => self.events.push_back(event),
                LinkEvent::Connected => report.connected = true,
                LinkEvent::Lost(loss) => report.lost = report.lost.or(Some(loss)),
                LinkEvent::RetryHandshake => report.retry = true,
                LinkEvent::RecheckNat => report.recheck_nat = true,
                LinkEvent::RouteStale(old) => {
                    report.stale_remote = report.stale_remote.or(Some(old))
                }
                LinkEvent::RestartEnded { since } => report.restarted_since = Some(since),
            }
        }
        if report.recheck_nat {
            // A NAT mapping that changed breaks every path through it: look again now.
            if let Some(now) = self.last_now {
                self.nat.recheck(now);
            }
        }
        if let Some(loss) = report.lost {
            self.lose(key, loss);
            return;
        }
        if let Some(old) = report.stale_remote {
            self.peers
                .forget_routes(key, |_, (remote, _)| remote != old);
        }
        if let Some(since) = report.restarted_since {
            self.peers
                .forget_routes(key, |link, (remote, _)| link.heard_since(remote, since));
        }
        if report.retry {
            if let Some(now) = self.last_now {
                self.retry_link(key, now);
            }
            return;
        }
        if report.connected {
            let peer = self.peers.link(key).peer();
            self.events.push_back(Event::PeerConnected(peer));
            if self.mode == Mode::Client && peer == SERVER_ID {
                self.set_status(ConnectionStatus::Connected);
            }
        }
        if self.peers.link(key).is_due() {
            self.peers.mark_dirty(key);
        }
        self.refresh(key);
    }

    /// Re-registers a link's deadline after it changed.
    fn refresh(&mut self, key: usize) {
        let link = self.peers.link(key);
        let now = self.last_now.unwrap_or_else(|| link.last_heard());
        let next = link.deadline(now);
        self.peers.schedule(key, next);
    }

    /// Starts a link's handshake over with a fresh `Rtc` (see `connect_retry_interval`). A peer
    /// that was announced is reported disconnected first: what it was sent may be lost.
    fn retry_link(&mut self, key: usize, now: Instant) {
        let link = self.peers.link(key);
        if link.is_connected() {
            let peer = link.peer();
            self.events.push_back(Event::PeerDisconnected(peer));
            if self.mode == Mode::Client && peer == SERVER_ID {
                self.set_status(ConnectionStatus::Connecting);
            }
        }
        match self.peers.link_mut(key).retry(now, link_setup!(self)) {
            Ok(()) => {
                self.stats.connect_retries += 1;
                self.settle(key);
            }
            Err(_) => self.lose(key, Loss::Closed),
        }
    }

    fn remove_link(&mut self, key: usize, announce: bool, reason: Loss) {
        let mut link = self.peers.remove(key);
        self.mdns.forget_peer(link.peer());
        link.trace_end(reason);
        link.close();
        while let Some(t) = link.poll_transmit() {
            self.transmits.push_back(t);
        }
        link.counts().add_to(&mut self.stats);
        let peer = link.peer();
        if announce && link.is_connected() {
            self.events.push_back(Event::PeerDisconnected(peer));
        }
        if self.mode == Mode::Client && peer == SERVER_ID {
            self.set_status(ConnectionStatus::Disconnected);
        }
    }

    fn set_status(&mut self, status: ConnectionStatus) {
        if self.status != status {
            self.status = status;
            self.events.push_back(Event::StatusChanged(status));
        }
    }
}

/// What a link reported during one input, applied by [`Mesh::settle`] in a fixed order (the
/// application's events pass straight through, in order).
#[derive(Debug, Default)]
struct Report {
    connected: bool,
    lost: Option<Loss>,
    retry: bool,
    recheck_nat: bool,
    stale_remote: Option<SocketAddr>,
    restarted_since: Option<Instant>,
}

/// The host addresses links may use: none when only relayed candidates are allowed.
fn link_hosts<'a>(nat: &Nat, hosts: &'a [SocketAddr]) -> &'a [SocketAddr] {
    match nat.policy() {
        IceTransportPolicy::All => hosts,
        IceTransportPolicy::Relay => &[],
    }
}
