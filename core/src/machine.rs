//! The one interface an I/O loop needs: feed datagrams, time and commands in, drain datagrams,
//! events and the next deadline out. [`Mesh`] implements it, and so does anything layered on a
//! mesh ([`Multiplayer`](crate::Multiplayer)), so the adapters (`rtcmesh-tokio`, `rtcmesh-mio`)
//! and the lobby glue drive either without knowing which, and no command skips a layer.

use std::net::SocketAddr;
use std::time::Instant;

use crate::error::{AddPeerError, SendError, SignalError};
use crate::event::{Event, PendingEvents, Transmit};
use crate::lobby::{ApplyError, LobbyClient, LobbyEvent};
use crate::mesh::Mesh;
use crate::multiplayer::LobbyRequest;
use crate::signal::{OutgoingSignal, Signal};
use crate::stream::{StreamCommand, StreamId, StreamInput};
use crate::transfer::{PeerId, Target, TransferMode};

/// A sans-IO machine an event loop can drive over one UDP socket: I/O in and out, and the
/// commands an application or signaling glue gives it. Every command goes to the outermost
/// layer, which passes it down: a [`Multiplayer`](crate::Multiplayer) sees the peers it adds and
/// the signals it applies, and frames what it sends.
///
/// ```
/// # use rtcmesh::*;
/// # use std::time::Instant;
/// /// Glue that works for a bare mesh and for the multiplayer layer alike.
/// fn meet<M: Machine>(machine: &mut M, now: Instant, peer: PeerId) -> Result<(), AddPeerError> {
///     if !machine.mesh().has_peer(peer) {
///         machine.add_peer(now, peer, 1)?;
///     }
///     Ok(())
/// }
/// let mut mesh = Mesh::create_mesh(2, MeshConfig::default())?;
/// meet(&mut mesh, Instant::now(), 1)?;
/// let mut mp = Multiplayer::new(Mesh::create_server(MeshConfig::default())?, Default::default());
/// meet(&mut mp, Instant::now(), 3)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Machine {
    /// What the machine reports to the application.
    type Event;

    /// Passes one received UDP datagram (`source` remote, `destination` local).
    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    );
    /// Advances timers that are due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram to send, if any.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// Passes what happened on a stream to a TURN server the machine asked for with
    /// [`poll_stream_command`](Machine::poll_stream_command) (see [`crate::stream`]). The
    /// default hands it to the mesh; a layer that reacts to the mesh's input overrides it.
    fn handle_stream(&mut self, now: Instant, id: StreamId, input: StreamInput<'_>) {
        self.mesh_mut().handle_stream(now, id, input)
    }
    /// The next thing to do with a stream to a TURN server (`turn:…?transport=tcp`,
    /// `turns:`): open, write, close. Drain it after [`poll_transmit`](Machine::poll_transmit).
    fn poll_stream_command(&mut self) -> Option<StreamCommand> {
        self.mesh_mut().poll_stream_command()
    }
    /// The next event, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When [`handle_timeout`](Machine::handle_timeout) should next be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Events (and payload bytes) waiting for [`poll_event`](Machine::poll_event). An I/O loop
    /// stops reading the socket while this is above its limit, so a slow application bounds
    /// the backlog instead of growing it. The default counts the mesh's queue: a machine that
    /// keeps a queue of its own adds it.
    fn pending_events(&self) -> PendingEvents {
        self.mesh().pending_events()
    }
    /// Godot's `add_peer(peer, unreliable_lifetime)` (see [`Mesh::add_peer`]).
    fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        unreliable_lifetime_ms: i32,
    ) -> Result<(), AddPeerError>;
    /// Godot's `remove_peer` (see [`Mesh::remove_peer`]). Returns whether the peer existed.
    fn remove_peer(&mut self, peer: PeerId) -> bool;
    /// Godot's `disconnect_peer(peer, force)` (see [`Mesh::disconnect_peer`]).
    fn disconnect_peer(&mut self, peer: PeerId, force: bool) -> bool;
    /// Passes a signal received from `from` (see [`Mesh::handle_signal`]).
    fn handle_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError>;
    /// Sends `data` as this machine sends application packets: [`Mesh::send`] on a mesh,
    /// [`Multiplayer::send_bytes`](crate::Multiplayer::send_bytes) (framed, relayed in client
    /// mode) on the multiplayer layer.
    fn send(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: &[u8],
    ) -> Result<(), SendError>;
    /// Godot's `close` (see [`Mesh::close`]).
    fn close(&mut self);
    /// The mesh underneath, for queries (peers, stats, status).
    fn mesh(&self) -> &Mesh;
    /// The mesh underneath, mutably, for its configuration of the socket and the network (host
    /// candidates, ICE server addresses). Commands go through this trait's own methods, so that
    /// a layer on the mesh sees them.
    fn mesh_mut(&mut self) -> &mut Mesh;
    /// Takes an event apart into the signal it carries, or gives it back unchanged. Signaling
    /// glue uses this to deliver signals itself and pass every other event on.
    fn into_signal(event: Self::Event) -> Result<OutgoingSignal, Self::Event>;
    /// Applies what the lobby server said: `event`, as decoded by `lobby` (which also knows
    /// who opted in to host migration and the line of succession). The default is
    /// [`LobbyClient::apply`]; the multiplayer layer with host migration on takes the
    /// migration events itself ([`Multiplayer::host_changed`](crate::Multiplayer::host_changed)).
    /// Lobby glue calls this for every event once the machine exists.
    fn apply_lobby(
        &mut self,
        lobby: &LobbyClient,
        event: &LobbyEvent,
        now: Instant,
        unreliable_lifetime: i32,
    ) -> Result<(), ApplyError>
    where
        Self: Sized,
    {
        let _ = lobby;
        LobbyClient::apply(event, self, now, unreliable_lifetime)
    }
    /// Takes an event apart into what it asks of the lobby server (host migration: HOST_LOST,
    /// a hand-over), or gives it back unchanged. Lobby glue sends it with
    /// [`LobbyClient::request_message`]. The default asks nothing.
    fn into_lobby_request(event: Self::Event) -> Result<LobbyRequest, Self::Event>
    where
        Self: Sized,
    {
        Err(event)
    }
    /// The mesh's own event inside one of this machine's events, if it is one: lobby glue
    /// reads ICE server failures from it (an expired minted TURN credential makes it ask the
    /// signaling server for a fresh one). The default sees none.
    fn as_mesh_event(event: &Self::Event) -> Option<&Event>
    where
        Self: Sized,
    {
        let _ = event;
        None
    }
}

impl Machine for Mesh {
    type Event = Event;

    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        Mesh::handle_datagram(self, now, source, destination, contents)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Mesh::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Mesh::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Mesh::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Mesh::poll_timeout(self)
    }
    fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        unreliable_lifetime_ms: i32,
    ) -> Result<(), AddPeerError> {
        Mesh::add_peer(self, now, peer, unreliable_lifetime_ms)
    }
    fn remove_peer(&mut self, peer: PeerId) -> bool {
        Mesh::remove_peer(self, peer)
    }
    fn disconnect_peer(&mut self, peer: PeerId, force: bool) -> bool {
        Mesh::disconnect_peer(self, peer, force)
    }
    fn handle_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError> {
        Mesh::handle_signal(self, now, from, signal)
    }
    fn send(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: &[u8],
    ) -> Result<(), SendError> {
        Mesh::send(self, target, mode, channel, data)
    }
    fn close(&mut self) {
        Mesh::close(self)
    }
    fn mesh(&self) -> &Mesh {
        self
    }
    fn mesh_mut(&mut self) -> &mut Mesh {
        self
    }
    fn into_signal(event: Event) -> Result<OutgoingSignal, Event> {
        match event {
            Event::Signal(signal) => Ok(signal),
            other => Err(other),
        }
    }
    fn as_mesh_event(event: &Event) -> Option<&Event> {
        Some(event)
    }
}
