//! The multiplayer layer: Godot's `SceneMultiplayer` (server relay, peer exchange,
//! authentication and `send_bytes`) on top of a [`Mesh`], byte-compatible with Godot 4.
//!
//! A [`Multiplayer`] owns its mesh and is driven exactly like it: the same `handle_*` /
//! `poll_*` methods with the same signatures, so an I/O adapter can run either. What changes is
//! what comes out of [`poll_event`](Multiplayer::poll_event): [`MultiplayerEvent`]s, where
//! packets are `send_bytes` payloads with their true sender, and peers include those a client
//! only reaches through the server.
//!
//! ```no_run
//! # use rtcmesh::*;
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send_udp(_: &Transmit) {}
//! # fn deliver(_: PeerId, _: Signal) {}
//! # fn clock() -> std::time::Instant { unimplemented!() } // your loop's clock
//! # let local: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
//! let mut mesh = Mesh::create_client(7, MeshConfig::default())?;
//! mesh.add_host_candidate(local)?;
//! let mut mp = Multiplayer::new(mesh, MultiplayerConfig::default());
//! mp.add_peer(clock(), 1, 1)?;                            // a client only adds the server
//! loop {
//!     if let Some((from, bytes)) = recv() { mp.handle_datagram(clock(), from, local, &bytes); }
//!     mp.handle_timeout(clock());                         // every turn: keeps the clock current
//!     while let Some(t) = mp.poll_transmit() { send_udp(&t); }
//!     while let Some(e) = mp.poll_event() {
//!         match e {
//!             MultiplayerEvent::Mesh(Event::Signal(s)) => deliver(s.to, s.signal),
//!             // Any other client, relayed by the server, arrives with its own id.
//!             MultiplayerEvent::PeerConnected(id) => {
//!                 mp.send_bytes(Target::Peer(id), TransferMode::Reliable, 0, b"hello")?
//!             }
//!             MultiplayerEvent::Packet(p) => println!("{} sent {:?}", p.from, p.data),
//!             other => println!("{other:?}"),
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auth;
mod config;
mod event;
mod exchange;
mod migration;
#[cfg(test)]
mod migration_tests;
mod relay;
mod send;
mod stats;
pub mod wire;

pub use auth::AuthError;
pub use config::{MigrationConfig, MultiplayerConfig};
pub use event::MultiplayerEvent;
pub use migration::{LobbyRequest, MigrationError, MigrationReason};
pub use stats::MultiplayerStats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use smallvec::SmallVec;

use crate::error::{AddPeerError, SendError, SignalError};
use crate::event::{Event, EventQueue, Packet, PendingEvents, Transmit};
use crate::limits::deadline;
use crate::lobby::{ApplyError, LobbyClient, LobbyEvent};
use crate::machine::Machine;
use crate::mesh::Mesh;
use crate::signal::{OutgoingSignal, Signal};
use crate::transfer::{ConnectionStatus, Mode, PeerId, Target, TransferMode, SERVER_ID};
use auth::PendingPeers;
use exchange::Exchange;
use migration::MigrationState;
use wire::Message;

/// How an admitted peer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Over its own connection (the server's clients, a client's server, mesh peers).
    Direct,
    /// Through the server (another client, announced with ADD_PEER).
    Relayed,
}

/// Godot's `SceneMultiplayer` as a sans-IO machine owning a [`Mesh`]: `send_bytes`, server relay,
/// peer exchange and authentication, with SceneMultiplayer's wire bytes (see [`wire`]).
///
/// ```
/// use std::time::{Duration, Instant};
/// use rtcmesh::{Event, Mesh, MeshConfig, Multiplayer, MultiplayerConfig, MultiplayerEvent, Target, TransferMode};
///
/// /// An in-memory network: `from`'s datagrams and signals go straight to `to`.
/// fn exchange(from: &mut Multiplayer, to: &mut Multiplayer) -> Vec<MultiplayerEvent> {
///     let now = Instant::now();
///     from.handle_timeout(now);
///     while let Some(t) = from.poll_transmit() {
///         to.handle_datagram(now, t.source, t.destination, &t.contents);
///     }
///     let mut events = Vec::new();
///     while let Some(event) = from.poll_event() {
///         match event {
///             MultiplayerEvent::Mesh(Event::Signal(s)) => {
///                 to.handle_signal(now, from.unique_id(), s.signal).expect("signal")
///             }
///             other => events.push(other),
///         }
///     }
///     events
/// }
///
/// // Godot: multiplayer.multiplayer_peer = peer, on a server and on a client.
/// let mut server = Multiplayer::new(Mesh::create_server(MeshConfig::default())?, MultiplayerConfig::default());
/// let mut client = Multiplayer::new(Mesh::create_client(2, MeshConfig::default())?, MultiplayerConfig::default());
/// server.mesh_mut().add_host_candidate("127.0.0.1:5001".parse()?)?;
/// client.mesh_mut().add_host_candidate("127.0.0.1:5002".parse()?)?;
/// server.add_peer(Instant::now(), 2, 1)?;
/// client.add_peer(Instant::now(), 1, 1)?;
///
/// let give_up = Instant::now() + Duration::from_secs(10);
/// loop {
///     assert!(Instant::now() < give_up, "a packet within 10 s");
///     for event in exchange(&mut client, &mut server) {
///         if event == MultiplayerEvent::PeerConnected(1) {
///             client.send_bytes(Target::Peer(1), TransferMode::Reliable, 0, b"ready")?; // send_bytes
///         }
///     }
///     let events = exchange(&mut server, &mut client);
///     if let Some(MultiplayerEvent::Packet(p)) = events.iter().find(|e| matches!(e, MultiplayerEvent::Packet(_))) {
///         assert_eq!((p.from, &p.data[..]), (2, &b"ready"[..])); // peer_packet(2, "ready")
///         break;
///     }
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Multiplayer {
    mesh: Mesh,
    config: MultiplayerConfig,
    /// Admitted peers (Godot's `connected_peers`).
    peers: BTreeMap<PeerId, Route>,
    /// Direct peers still authenticating (Godot's `pending_peers`).
    pending: PendingPeers,
    buffered: Vec<Exchange>,
    events: EventQueue<MultiplayerEvent>,
    stats: MultiplayerStats,
    last_now: Option<Instant>,
    /// Reused for framing outgoing packets.
    scratch: Vec<u8>,
    /// Host migration (idle unless configured).
    migration: MigrationState,
}

impl Multiplayer {
    /// Puts the multiplayer layer on `mesh` (Godot's `multiplayer.multiplayer_peer = peer`).
    /// Drive the mesh through this value from now on; [`mesh_mut`](Multiplayer::mesh_mut) is
    /// for configuration and queries.
    pub fn new(mesh: Mesh, config: MultiplayerConfig) -> Multiplayer {
        Multiplayer {
            mesh,
            config,
            peers: BTreeMap::new(),
            pending: PendingPeers::default(),
            buffered: Vec::new(),
            events: EventQueue::default(),
            stats: MultiplayerStats::default(),
            last_now: None,
            scratch: Vec::new(),
            migration: MigrationState::default(),
        }
    }

    /// The mesh underneath.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The mesh underneath, mutably, for its configuration (host candidates, ICE server
    /// addresses, refusing new connections). Peers, signals and packets go through this
    /// layer's own methods: packets sent with `mesh_mut().send` are not framed, and a peer
    /// added there is not seen by the layer until its events surface here.
    pub fn mesh_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }

    /// Godot's `add_peer`, passed to the mesh.
    pub fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        unreliable_lifetime_ms: i32,
    ) -> Result<(), AddPeerError> {
        self.observe(now);
        let result = self.mesh.add_peer(now, peer, unreliable_lifetime_ms);
        if result.is_ok() {
            self.added(peer, unreliable_lifetime_ms);
        }
        self.pump();
        result
    }

    /// Passes a signal received from `from` to the mesh.
    pub fn handle_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError> {
        self.observe(now);
        self.welcome(now, from, &signal);
        let result = self.mesh.handle_signal(now, from, signal);
        self.pump();
        result
    }

    /// Passes one UDP datagram to the mesh and processes the packets it carried.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        self.observe(now);
        self.mesh
            .handle_datagram(now, source, destination, contents);
        self.pump();
    }

    /// Advances the mesh, drops peers whose authentication timed out, and runs host
    /// migration's timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        self.mesh.handle_timeout(now);
        self.pump();
        for peer in self.pending.expire(now) {
            self.fail_auth(peer);
        }
        self.pump();
        self.migration_timeout(now);
        self.pump();
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pump();
        self.mesh.poll_transmit()
    }

    /// Passes what happened on a stream to a TURN server (see [`Mesh::handle_stream`]).
    pub fn handle_stream(
        &mut self,
        now: Instant,
        id: crate::StreamId,
        input: crate::StreamInput<'_>,
    ) {
        self.observe(now);
        self.mesh.handle_stream(now, id, input);
        self.pump();
    }

    /// The next command for a stream to a TURN server (see [`Mesh::poll_stream_command`]).
    pub fn poll_stream_command(&mut self) -> Option<crate::StreamCommand> {
        self.pump();
        self.mesh.poll_stream_command()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<MultiplayerEvent> {
        self.mesh.flush_dirty();
        self.pump();
        self.events.pop_front()
    }

    /// How many events (and payload bytes) wait for [`poll_event`](Multiplayer::poll_event):
    /// this layer's queue plus what the mesh holds for it (see [`Mesh::pending_events`]).
    pub fn pending_events(&self) -> PendingEvents {
        let (own, mesh) = (self.events.pending(), self.mesh.pending_events());
        PendingEvents {
            events: own.events + mesh.events,
            bytes: own.bytes + mesh.bytes,
        }
    }

    /// When [`handle_timeout`](Multiplayer::handle_timeout) must next be called: the mesh's
    /// deadline, the earliest authentication deadline, or host migration's next timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mesh = self.mesh.poll_timeout();
        let auth = self.pending.next_deadline();
        let migration = self.migration_deadline();
        mesh.into_iter().chain(auth).chain(migration).min()
    }

    /// Disconnects a direct peer, as [`Mesh::disconnect_peer`]: without `force` a
    /// `PeerDisconnected` follows if it was admitted (`PeerAuthenticationFailed` if it was
    /// authenticating); with `force` nothing is reported. On a server, the other clients get
    /// DEL_PEER either way. Returns whether the mesh had the peer
    /// (a client cannot disconnect a peer it only reaches through the server).
    pub fn disconnect_peer(&mut self, peer: PeerId, force: bool) -> bool {
        if force {
            if self.pending.remove(peer).is_some() {
                self.forget_pending(peer);
            } else if self.peers.get(&peer) == Some(&Route::Direct) {
                self.drop_direct(peer, false);
            }
        }
        let existed = self.mesh.disconnect_peer(peer, force);
        self.pump();
        existed
    }

    /// Godot's `remove_peer`: [`disconnect_peer`](Multiplayer::disconnect_peer) without force.
    pub fn remove_peer(&mut self, peer: PeerId) -> bool {
        self.disconnect_peer(peer, false)
    }

    /// Closes the mesh: every admitted peer is reported disconnected, every authenticating one
    /// failed. (To hand a server over to another player instead, see
    /// [`leave`](Multiplayer::leave).)
    pub fn close(&mut self) {
        if self.migration_closing() {
            // The mesh no longer has the server these peers were reached through.
            for (peer, _) in std::mem::take(&mut self.peers) {
                self.events
                    .push_back(MultiplayerEvent::PeerDisconnected(peer));
            }
            self.buffered.clear();
            if self.mesh.status() == ConnectionStatus::Disconnected {
                self.events
                    .push_back(MultiplayerEvent::Mesh(Event::StatusChanged(
                        ConnectionStatus::Disconnected,
                    )));
            }
        }
        self.mesh.close();
        self.pump();
    }

    /// This side's unique id.
    pub fn unique_id(&self) -> PeerId {
        self.mesh.unique_id()
    }

    /// The connection status: the mesh's, except `Connecting` while the server changes
    /// (host migration).
    pub fn status(&self) -> ConnectionStatus {
        if self.migration.is_switching() {
            ConnectionStatus::Connecting
        } else {
            self.mesh.status()
        }
    }

    /// Godot's `get_peers`: admitted peers, direct and relayed, in ascending id order.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// Whether the peer is admitted (direct or relayed).
    pub fn has_peer(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// Whether the peer is admitted and reached through the server.
    pub fn is_relayed(&self, peer: PeerId) -> bool {
        self.peers.get(&peer) == Some(&Route::Relayed)
    }

    /// Godot's `get_authenticating_peers`, in ascending id order.
    pub fn authenticating_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.pending.ids()
    }

    /// Godot's `is_server_relay_enabled`.
    pub fn is_server_relay_enabled(&self) -> bool {
        self.config.server_relay
    }

    /// The configuration.
    pub fn config(&self) -> &MultiplayerConfig {
        &self.config
    }

    /// Counters of what was delivered, relayed and dropped.
    pub fn stats(&self) -> MultiplayerStats {
        self.stats
    }

    /// Relay and peer exchange are on: configured, and the mesh is a server or a client.
    fn relay_active(&self) -> bool {
        self.config.server_relay && self.mesh.is_server_relay_supported()
    }

    fn direct_peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers
            .iter()
            .filter(|&(_, &r)| r == Route::Direct)
            .map(|(&id, _)| id)
    }

    fn observe(&mut self, now: Instant) {
        let now = self.last_now.map_or(now, |t| t.max(now));
        self.last_now = Some(now);
        if let Some(timeout) = self.config.auth_timeout {
            self.pending.start_clocks(deadline(now, timeout));
        }
    }

    /// Turns everything the mesh emitted into this layer's events and actions.
    /// (Without draining the mesh's dirty links: `send_bytes` and the handlers call this, and a
    /// burst of sends must cost one str0m poll, at the next `poll_transmit`.)
    fn pump(&mut self) {
        while let Some(event) = self.mesh.next_event() {
            match event {
                Event::PeerConnected(peer) => self.on_direct_connected(peer),
                Event::PeerDisconnected(peer) => self.on_direct_lost(peer),
                Event::Packet(packet) => self.on_packet(packet),
                Event::StatusChanged(ConnectionStatus::Disconnected)
                    if self.migration.new_server_gone(&self.mesh) =>
                {
                    // The link to a new server ended before it connected (no PeerDisconnected
                    // for a peer never connected): migration takes it as the server lost.
                    self.on_server_link_lost(self.last_now);
                }
                other if self.hides(&other) => {}
                other => self.events.push_back(MultiplayerEvent::Mesh(other)),
            }
        }
    }

    /// Godot's `_add_peer`: a direct peer's channels opened.
    fn on_direct_connected(&mut self, peer: PeerId) {
        // A client's new server (host migration) takes the place of the old one, which stays
        // listed meanwhile.
        let new_server = peer == SERVER_ID && self.migration.awaits_new_server();
        if (self.peers.get(&peer) == Some(&Route::Direct) && !new_server)
            || self.pending.contains(peer)
            || self.migration.retiring() == Some(peer)
        {
            return;
        }
        if self.config.auth {
            let deadline = self
                .config
                .auth_timeout
                .and_then(|t| self.last_now.and_then(|now| deadline(now, t)));
            self.pending.insert(peer, deadline);
            self.events
                .push_back(MultiplayerEvent::PeerAuthenticating(peer));
        } else {
            self.admit(peer);
        }
    }

    /// Godot's `_admit_peer` for a direct peer: the server announces it to the others and the
    /// others to it; a client applies the peer exchange held while it authenticated.
    fn admit(&mut self, peer: PeerId) {
        if self.mesh.mode() == Mode::Server && self.config.server_relay {
            let others: SmallVec<[PeerId; 16]> = self.direct_peers().collect();
            for other in others {
                self.send_sys(other, &wire::add_peer(peer));
                self.send_sys(peer, &wire::add_peer(other));
            }
        }
        self.peers.insert(peer, Route::Direct);
        if !self.on_admitted(peer) {
            self.events.push_back(MultiplayerEvent::PeerConnected(peer));
        }
        if self.mesh.mode() == Mode::Client && peer == SERVER_ID {
            for exchange in std::mem::take(&mut self.buffered) {
                self.on_peer_exchange(SERVER_ID, exchange);
            }
        }
    }

    /// Godot's `_del_peer` for a direct peer the mesh removed.
    fn on_direct_lost(&mut self, peer: PeerId) {
        if self.migration.retiring() == Some(peer) {
            self.on_retiring_lost();
            return;
        }
        let server_lost = peer == SERVER_ID && self.mesh.mode() == Mode::Client;
        if server_lost && self.on_server_link_lost(self.last_now) {
            // Host migration keeps the game: peer 1 is a role, its player may change.
            if self.pending.remove(peer).is_some() {
                self.forget_pending(peer);
            }
            return;
        }
        if self.pending.remove(peer).is_some() {
            self.forget_pending(peer);
            self.events
                .push_back(MultiplayerEvent::PeerAuthenticationFailed(peer));
        } else if self.peers.get(&peer) == Some(&Route::Direct) {
            self.drop_direct(peer, true);
        }
    }

    fn forget_pending(&mut self, peer: PeerId) {
        if peer == SERVER_ID {
            self.buffered.clear();
        }
    }

    /// Removes an admitted direct peer: the server tells the others (DEL_PEER); a client that
    /// lost the server loses every relayed peer with it.
    fn drop_direct(&mut self, peer: PeerId, announce: bool) {
        self.peers.remove(&peer);
        let mode = self.mesh.mode();
        if mode == Mode::Server
            && self.config.server_relay
            && self.mesh.status() != ConnectionStatus::Disconnected
        {
            let others: SmallVec<[PeerId; 16]> = self.direct_peers().collect();
            for other in others {
                self.send_sys(other, &wire::del_peer(peer));
            }
        }
        if announce {
            self.events
                .push_back(MultiplayerEvent::PeerDisconnected(peer));
        }
        if mode == Mode::Client && peer == SERVER_ID {
            self.buffered.clear();
            for (relayed, _) in std::mem::take(&mut self.peers) {
                if announce {
                    self.events
                        .push_back(MultiplayerEvent::PeerDisconnected(relayed));
                }
            }
        }
    }

    fn on_packet(&mut self, packet: Packet) {
        let from = packet.from;
        if self.migration.retiring() == Some(from) {
            self.on_retiring_packet(packet);
            return;
        }
        if !self.pending.contains(from)
            && self.peers.get(&from) != Some(&Route::Direct)
            && self.mesh.peer(from).is_some_and(|p| p.connected)
        {
            // The mesh reports the packets of a datagram before the PeerConnected that the same
            // datagram caused; Godot's poll order never shows a packet first.
            self.on_direct_connected(from);
        }
        if let Some(pending) = self.pending.get(from) {
            // Godot's `poll`: once this side completed, the first packet that is not auth admits
            // the peer and is then processed as usual. The remote only sends such a packet after
            // admitting us, so its `[7][0]` is merely late (lost and being retransmitted on
            // another SCTP stream); dropping the packet would lose reliable data.
            let is_auth = matches!(wire::decode(&packet.data), Ok(Message::Auth(_)));
            if !pending.local || is_auth {
                self.on_pending_packet(packet);
                return;
            }
            self.pending.remove(from);
            self.admit(from);
        }
        if self.peers.get(&from) != Some(&Route::Direct) {
            self.stats.unauthenticated += 1;
            return;
        }
        let Packet {
            from,
            channel,
            mode,
            mut data,
        } = packet;
        match wire::decode(&data) {
            Err(_) => self.stats.malformed += 1,
            Ok(Message::Raw(_)) => {
                data.remove(0);
                self.deliver(Packet {
                    from,
                    channel,
                    mode,
                    data,
                });
            }
            // A late `[7][0]` is harmless (Godot skips it); auth data after admission is not.
            Ok(Message::Auth(rest)) => {
                if !rest.is_empty() {
                    self.stats.malformed += 1;
                }
            }
            Ok(Message::AddPeer(peer)) => self.on_peer_exchange(from, Exchange::Add(peer)),
            Ok(Message::DelPeer(peer)) => self.on_peer_exchange(from, Exchange::Del(peer)),
            Ok(Message::Relay { peer, inner }) => self.on_relay(from, peer, inner, mode, channel),
            Ok(Message::Unsupported(_)) => self.stats.unsupported += 1,
            Ok(Message::Migration {
                command,
                peer,
                epoch,
            }) => self.on_migration(from, command, peer, epoch, channel, mode),
        }
    }

    /// A payload for the application; while the server changes, what comes from the new side
    /// waits until the change is announced.
    fn deliver(&mut self, packet: Packet) {
        if let Some(packet) = self.defer(packet) {
            self.stats.packets_received += 1;
            self.events.push_back(MultiplayerEvent::Packet(packet));
        }
    }
}

/// The multiplayer layer runs in an I/O loop as a mesh does.
impl Machine for Multiplayer {
    type Event = MultiplayerEvent;

    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        Self::handle_datagram(self, now, source, destination, contents)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Self::poll_transmit(self)
    }
    fn handle_stream(&mut self, now: Instant, id: crate::StreamId, input: crate::StreamInput<'_>) {
        Self::handle_stream(self, now, id, input)
    }
    fn poll_stream_command(&mut self) -> Option<crate::StreamCommand> {
        Self::poll_stream_command(self)
    }
    fn poll_event(&mut self) -> Option<Self::Event> {
        Self::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }
    fn pending_events(&self) -> PendingEvents {
        Self::pending_events(self)
    }
    fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        unreliable_lifetime_ms: i32,
    ) -> Result<(), AddPeerError> {
        Self::add_peer(self, now, peer, unreliable_lifetime_ms)
    }
    fn remove_peer(&mut self, peer: PeerId) -> bool {
        Self::remove_peer(self, peer)
    }
    fn disconnect_peer(&mut self, peer: PeerId, force: bool) -> bool {
        Self::disconnect_peer(self, peer, force)
    }
    fn handle_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError> {
        Self::handle_signal(self, now, from, signal)
    }
    fn send(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: &[u8],
    ) -> Result<(), SendError> {
        self.send_bytes(target, mode, channel, data)
    }
    fn close(&mut self) {
        Self::close(self)
    }
    fn mesh(&self) -> &Mesh {
        Self::mesh(self)
    }
    fn mesh_mut(&mut self) -> &mut Mesh {
        Self::mesh_mut(self)
    }
    fn into_signal(event: Self::Event) -> Result<OutgoingSignal, Self::Event> {
        match event {
            MultiplayerEvent::Mesh(Event::Signal(signal)) => Ok(signal),
            other => Err(other),
        }
    }
    fn apply_lobby(
        &mut self,
        lobby: &LobbyClient,
        event: &LobbyEvent,
        now: Instant,
        unreliable_lifetime: i32,
    ) -> Result<(), ApplyError> {
        self.apply_lobby_event(lobby, event, now, unreliable_lifetime)
    }
    fn into_lobby_request(event: Self::Event) -> Result<LobbyRequest, Self::Event> {
        match event {
            MultiplayerEvent::ToLobby(request) => Ok(request),
            other => Err(other),
        }
    }
    fn as_mesh_event(event: &MultiplayerEvent) -> Option<&Event> {
        match event {
            MultiplayerEvent::Mesh(event) => Some(event),
            _ => None,
        }
    }
}
