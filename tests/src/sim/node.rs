//! A node of the world: what runs there (any [`rtcmesh::Machine`], a hostile peer, or a member
//! still waiting for its lobby to assign an id) and what it did.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use rtcmesh::lobby::{LobbyClient, LobbyEvent};
use rtcmesh::{
    AddPeerError, Event, LobbyRequest, Machine, Mesh, Multiplayer, MultiplayerEvent,
    OutgoingSignal, Packet, PeerId, SendError, Signal, SignalError, StreamCommand, StreamId,
    StreamInput, Target, TransferMode, Transmit,
};

use crate::hostile::Attacker;
use crate::sim::lobby::Member;

/// Index of a node in its world.
pub type NodeId = usize;

/// What an event means to the world's summaries, whatever kind of machine emitted it.
#[derive(Debug)]
pub enum Seen<'a> {
    /// A peer connected (the mesh's `PeerConnected`, or the layer's admission).
    Connected(PeerId),
    /// A peer is gone.
    Disconnected(PeerId),
    /// An application packet.
    Packet(&'a Packet),
    /// Anything else.
    Other,
}

/// An event type the world records and summarises.
pub trait Recorded: std::fmt::Debug + 'static {
    /// What it means for [`Node::connected`], [`Node::packets`] and the like.
    fn seen(&self) -> Seen<'_>;
    /// What it asks of the lobby server, if anything (host migration).
    fn lobby_request(&self) -> Option<LobbyRequest> {
        None
    }
}

impl Recorded for Event {
    fn seen(&self) -> Seen<'_> {
        match self {
            Event::PeerConnected(id) => Seen::Connected(*id),
            Event::PeerDisconnected(id) => Seen::Disconnected(*id),
            Event::Packet(p) => Seen::Packet(p),
            _ => Seen::Other,
        }
    }
}

impl Recorded for MultiplayerEvent {
    fn seen(&self) -> Seen<'_> {
        match self {
            MultiplayerEvent::PeerConnected(id) => Seen::Connected(*id),
            MultiplayerEvent::PeerDisconnected(id) => Seen::Disconnected(*id),
            MultiplayerEvent::Packet(p) => Seen::Packet(p),
            _ => Seen::Other,
        }
    }
    fn lobby_request(&self) -> Option<LobbyRequest> {
        match self {
            MultiplayerEvent::ToLobby(request) => Some(*request),
            _ => None,
        }
    }
}

/// The commands of an [`rtcmesh::Machine`], in a form the world can hold for any machine.
pub trait Commands {
    /// [`Machine::add_peer`].
    fn add_peer(&mut self, now: Instant, peer: PeerId, lifetime: i32) -> Result<(), AddPeerError>;
    /// [`Machine::remove_peer`].
    fn remove_peer(&mut self, peer: PeerId) -> bool;
    /// [`Machine::disconnect_peer`].
    fn disconnect_peer(&mut self, peer: PeerId, force: bool) -> bool;
    /// [`Machine::send`].
    fn send(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: &[u8],
    ) -> Result<(), SendError>;
    /// [`Machine::close`].
    fn close(&mut self);
    /// [`Machine::mesh`].
    fn mesh(&self) -> &Mesh;
    /// [`Machine::mesh_mut`].
    fn mesh_mut(&mut self) -> &mut Mesh;
    /// [`Machine::apply_lobby`]: what the tokio adapter's `join` does with each lobby event
    /// `lobby` decoded. Returns whether the machine took it.
    fn apply(
        &mut self,
        lobby: &LobbyClient,
        event: &LobbyEvent,
        now: Instant,
        lifetime: i32,
    ) -> bool;
}

impl<M: Machine> Commands for M {
    fn add_peer(&mut self, now: Instant, peer: PeerId, lifetime: i32) -> Result<(), AddPeerError> {
        Machine::add_peer(self, now, peer, lifetime)
    }
    fn remove_peer(&mut self, peer: PeerId) -> bool {
        Machine::remove_peer(self, peer)
    }
    fn disconnect_peer(&mut self, peer: PeerId, force: bool) -> bool {
        Machine::disconnect_peer(self, peer, force)
    }
    fn send(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: &[u8],
    ) -> Result<(), SendError> {
        Machine::send(self, target, mode, channel, data)
    }
    fn close(&mut self) {
        Machine::close(self)
    }
    fn mesh(&self) -> &Mesh {
        Machine::mesh(self)
    }
    fn mesh_mut(&mut self) -> &mut Mesh {
        Machine::mesh_mut(self)
    }
    fn apply(
        &mut self,
        lobby: &LobbyClient,
        event: &LobbyEvent,
        now: Instant,
        lifetime: i32,
    ) -> bool {
        Machine::apply_lobby(self, lobby, event, now, lifetime).is_ok()
    }
}

/// What the world drives on a node: datagrams, time and signals in; datagrams, signals and a
/// log of everything else out. Every [`rtcmesh::Machine`] runs as a [`Running`]; the
/// [`Attacker`] implements it itself.
pub trait Driven: Any {
    /// The peer id it goes by (0 while it has none).
    fn unique_id(&self) -> PeerId;
    /// A datagram arrived.
    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    );
    /// Time passed.
    fn handle_timeout(&mut self, now: Instant);
    /// When it next wants [`handle_timeout`](Driven::handle_timeout).
    fn poll_timeout(&self) -> Option<Instant>;
    /// Work it does when the world drains it (after a test drove it by hand). Nothing by
    /// default.
    fn flush(&mut self, _now: Instant) {}
    /// The next datagram to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next command for its streams to TURN servers (none, unless it runs a machine).
    fn poll_stream_command(&mut self) -> Option<StreamCommand> {
        None
    }
    /// Something happened on one of its streams (ignored unless it runs a machine).
    fn handle_stream(&mut self, _now: Instant, _id: StreamId, _input: StreamInput<'_>) {}
    /// The next signal to deliver; every other event goes into the log, stamped `now`.
    fn poll_signal(&mut self, now: Instant) -> Option<OutgoingSignal>;
    /// The next request for the lobby server (host migration), taken from the log's events
    /// by [`poll_signal`](Driven::poll_signal).
    fn poll_lobby_request(&mut self) -> Option<LobbyRequest> {
        None
    }
    /// A signal arrived from `from`.
    fn handle_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError>;
    /// Its commands, if it is an rtcmesh machine.
    fn commands(&self) -> Option<&dyn Commands>;
    /// Its commands, mutably.
    fn commands_mut(&mut self) -> Option<&mut dyn Commands>;
    /// How many events it logged.
    fn logged(&self) -> usize;
    /// Event `i` of its log and when it was emitted.
    fn seen(&self, i: usize) -> (Instant, Seen<'_>);
    /// Forgets the log.
    fn clear_log(&mut self);
    /// For typed access ([`Node::machine`]).
    fn as_any(&self) -> &dyn Any;
    /// For typed access ([`Node::machine_mut`]).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// An [`rtcmesh::Machine`] on a node, with every event it emitted except signals.
pub struct Running<M: Machine> {
    /// The machine under test.
    pub machine: M,
    /// Its events, in order (signals are delivered, not logged).
    pub events: Vec<M::Event>,
    /// When each event was emitted.
    pub times: Vec<Instant>,
    /// Requests for the lobby server not passed on yet.
    requests: std::collections::VecDeque<LobbyRequest>,
}

impl<M: Machine> Running<M> {
    /// The machine, with an empty log.
    pub fn new(machine: M) -> Running<M> {
        Running {
            machine,
            events: Vec::new(),
            times: Vec::new(),
            requests: std::collections::VecDeque::new(),
        }
    }
}

impl<M> Driven for Running<M>
where
    M: Machine + 'static,
    M::Event: Recorded,
{
    fn unique_id(&self) -> PeerId {
        self.machine.mesh().unique_id()
    }
    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        self.machine
            .handle_datagram(now, source, destination, contents)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.machine.handle_timeout(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.machine.poll_transmit()
    }
    fn poll_stream_command(&mut self) -> Option<StreamCommand> {
        self.machine.poll_stream_command()
    }
    fn handle_stream(&mut self, now: Instant, id: StreamId, input: StreamInput<'_>) {
        self.machine.handle_stream(now, id, input)
    }
    fn poll_signal(&mut self, now: Instant) -> Option<OutgoingSignal> {
        loop {
            match M::into_signal(self.machine.poll_event()?) {
                Ok(signal) => return Some(signal),
                Err(event) => {
                    if let Some(request) = event.lobby_request() {
                        self.requests.push_back(request);
                    }
                    self.events.push(event);
                    self.times.push(now);
                }
            }
        }
    }
    fn poll_lobby_request(&mut self) -> Option<LobbyRequest> {
        self.requests.pop_front()
    }
    fn handle_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError> {
        self.machine.handle_signal(now, from, signal)
    }
    fn commands(&self) -> Option<&dyn Commands> {
        Some(&self.machine)
    }
    fn commands_mut(&mut self) -> Option<&mut dyn Commands> {
        Some(&mut self.machine)
    }
    fn logged(&self) -> usize {
        self.events.len()
    }
    fn seen(&self, i: usize) -> (Instant, Seen<'_>) {
        (self.times[i], self.events[i].seen())
    }
    fn clear_log(&mut self) {
        self.events.clear();
        self.times.clear();
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// A lobby member whose id is not assigned yet: its machine does not exist until the lobby
/// says which one to create (`LobbyClient::create_mesh`), so nothing runs here.
pub(crate) struct Joining;

impl Driven for Joining {
    fn unique_id(&self) -> PeerId {
        0
    }
    fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: SocketAddr, _: &[u8]) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }
    fn poll_signal(&mut self, _: Instant) -> Option<OutgoingSignal> {
        None
    }
    fn handle_signal(&mut self, _: Instant, from: PeerId, _: Signal) -> Result<(), SignalError> {
        Err(SignalError::UnknownPeer(from))
    }
    fn commands(&self) -> Option<&dyn Commands> {
        None
    }
    fn commands_mut(&mut self) -> Option<&mut dyn Commands> {
        None
    }
    fn logged(&self) -> usize {
        0
    }
    fn seen(&self, _: usize) -> (Instant, Seen<'_>) {
        unreachable!("a joining node logs nothing")
    }
    fn clear_log(&mut self) {}
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// One simulated host: what runs there, its addresses and what it did.
pub struct Node {
    /// The UDP address its "socket" is bound to (never a real socket).
    pub addr: SocketAddr,
    /// The address others see its datagrams come from: `addr`, unless a simulated NAT maps it
    /// elsewhere ([`World::rebind`](crate::World::rebind)).
    pub public: SocketAddr,
    /// Errors returned when the world passed a signal to this node.
    pub signal_errors: Vec<SignalError>,
    /// `false` once the node vanished: it no longer sends, receives or ticks.
    pub alive: bool,
    /// The NAT in front of it (an index into [`World::nats`](crate::World::nats)), if any.
    pub nat: Option<usize>,
    /// Every address it sent a datagram to, with how many.
    pub sent_to: HashMap<SocketAddr, u64>,
    /// Its side of the lobby, if it signals through the simulated lobby server.
    pub lobby: Option<Member>,
    pub(crate) driven: Box<dyn Driven>,
}

impl Node {
    pub(crate) fn new(driven: Box<dyn Driven>, addr: SocketAddr, nat: Option<usize>) -> Node {
        Node {
            addr,
            public: addr,
            signal_errors: Vec::new(),
            alive: true,
            nat,
            sent_to: HashMap::new(),
            lobby: None,
            driven,
        }
    }

    /// Its peer id (0 for a lobby member still waiting for one).
    pub fn id(&self) -> PeerId {
        self.driven.unique_id()
    }

    /// Whether an rtcmesh machine runs here (not an attacker, not a member still joining).
    pub fn is_machine(&self) -> bool {
        self.driven.commands().is_some()
    }

    /// The machine of type `M` running here (panics if another kind runs here).
    pub fn machine<M: Machine + 'static>(&self) -> &M {
        match self.driven.as_any().downcast_ref::<Running<M>>() {
            Some(r) => &r.machine,
            None => panic!("this node does not run a {}", std::any::type_name::<M>()),
        }
    }

    /// The machine of type `M` running here, mutably. After driving it, call
    /// [`World::drain`](crate::World::drain) so its datagrams leave.
    pub fn machine_mut<M: Machine + 'static>(&mut self) -> &mut M {
        match self.driven.as_any_mut().downcast_mut::<Running<M>>() {
            Some(r) => &mut r.machine,
            None => panic!("this node does not run a {}", std::any::type_name::<M>()),
        }
    }

    /// The events of the machine of type `M` running here.
    pub fn events_of<M: Machine + 'static>(&self) -> &[M::Event] {
        match self.driven.as_any().downcast_ref::<Running<M>>() {
            Some(r) => &r.events,
            None => panic!("this node does not run a {}", std::any::type_name::<M>()),
        }
    }

    /// The commands of the machine here, whatever its kind (panics on an attacker or a
    /// member still joining).
    pub fn commands(&mut self) -> &mut dyn Commands {
        self.driven
            .commands_mut()
            .expect("this node runs no rtcmesh machine (an attacker, or not joined yet)")
    }

    /// The mesh: the node's own, or the one under its layer.
    pub fn mesh(&self) -> &Mesh {
        self.driven
            .commands()
            .expect("this node runs no rtcmesh machine (an attacker, or not joined yet)")
            .mesh()
    }

    /// The mesh, mutably: on a layered machine, sending with it bypasses the layer (for
    /// hand-made bytes).
    pub fn mesh_mut(&mut self) -> &mut Mesh {
        self.commands().mesh_mut()
    }

    /// The multiplayer layer (panics if the node runs another kind of machine).
    pub fn mp(&self) -> &Multiplayer {
        self.machine()
    }

    /// The multiplayer layer, mutably.
    pub fn mp_mut(&mut self) -> &mut Multiplayer {
        self.machine_mut()
    }

    /// The attacker (panics if the node runs something else).
    pub fn attacker(&self) -> &Attacker {
        self.driven
            .as_any()
            .downcast_ref()
            .expect("this node is not an attacker")
    }

    /// The attacker, mutably.
    pub fn attacker_mut(&mut self) -> &mut Attacker {
        self.driven
            .as_any_mut()
            .downcast_mut()
            .expect("this node is not an attacker")
    }

    /// Every event of a bare mesh, in order (signals excepted).
    pub fn events(&self) -> &[Event] {
        self.events_of::<Mesh>()
    }

    /// Every event of a multiplayer node, in order (signals excepted).
    pub fn mp_events(&self) -> &[MultiplayerEvent] {
        self.events_of::<Multiplayer>()
    }

    /// Every event of a multiplayer node with when it was emitted.
    pub fn mp_events_at(&self) -> Vec<(Instant, &MultiplayerEvent)> {
        let running = self
            .driven
            .as_any()
            .downcast_ref::<Running<Multiplayer>>()
            .expect("this node does not run a Multiplayer");
        running.times.iter().copied().zip(&running.events).collect()
    }

    /// The first event of a multiplayer node that `matches`, with when it was emitted.
    pub fn mp_event_at(
        &self,
        matches: impl Fn(&MultiplayerEvent) -> bool,
    ) -> Option<(Instant, &MultiplayerEvent)> {
        let running = self
            .driven
            .as_any()
            .downcast_ref::<Running<Multiplayer>>()
            .expect("this node does not run a Multiplayer");
        running
            .events
            .iter()
            .zip(&running.times)
            .find(|(e, _)| matches(e))
            .map(|(e, &t)| (t, e))
    }

    /// Forgets the recorded events.
    pub fn clear_events(&mut self) {
        self.driven.clear_log();
    }

    /// How many events are recorded.
    pub fn event_count(&self) -> usize {
        self.driven.logged()
    }

    fn seen(&self) -> impl Iterator<Item = (Instant, Seen<'_>)> {
        (0..self.driven.logged()).map(|i| self.driven.seen(i))
    }

    /// Ids of `PeerConnected` in the order they fired (for a multiplayer node: admissions).
    pub fn connected(&self) -> Vec<PeerId> {
        self.seen()
            .filter_map(|(_, s)| match s {
                Seen::Connected(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Ids of `PeerDisconnected` in the order they fired.
    pub fn disconnected(&self) -> Vec<PeerId> {
        self.disconnected_since(0)
    }

    /// Ids of `PeerDisconnected` from event `first` on.
    pub fn disconnected_since(&self, first: usize) -> Vec<PeerId> {
        let count = self.driven.logged();
        (first.min(count)..count)
            .filter_map(|i| match self.driven.seen(i) {
                (_, Seen::Disconnected(id)) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Whether it reported `peer` disconnected.
    pub fn lost(&self, peer: PeerId) -> bool {
        self.disconnected().contains(&peer)
    }

    /// Received application packets in order (a bare mesh: the bytes as they were on the data
    /// channel; the multiplayer layer: `send_bytes` payloads).
    pub fn packets(&self) -> Vec<&Packet> {
        self.packets_since(0)
    }

    /// Received packets from event `first` on, in order.
    pub fn packets_since(&self, first: usize) -> Vec<&Packet> {
        self.packets_at_since(first)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// Received packets with their arrival time.
    pub fn packets_at(&self) -> Vec<(Instant, &Packet)> {
        self.packets_at_since(0)
    }

    /// Received packets from event `first` on, with their arrival time.
    pub fn packets_at_since(&self, first: usize) -> Vec<(Instant, &Packet)> {
        let count = self.driven.logged();
        (first.min(count)..count)
            .filter_map(|i| match self.driven.seen(i) {
                (at, Seen::Packet(p)) => Some((at, p)),
                _ => None,
            })
            .collect()
    }

    /// How many distinct addresses it sent datagrams to, other than these.
    pub fn destinations_except(&self, known: &[SocketAddr]) -> usize {
        self.sent_to.keys().filter(|a| !known.contains(a)).count()
    }

    /// Ids of the layer's `PeerAuthenticating`, in order.
    pub fn authenticating(&self) -> Vec<PeerId> {
        self.mp_ids(|e| match e {
            MultiplayerEvent::PeerAuthenticating(id) => Some(*id),
            _ => None,
        })
    }

    /// Ids of the layer's `PeerAuthenticationFailed`, in order.
    pub fn auth_failed(&self) -> Vec<PeerId> {
        self.mp_ids(|e| match e {
            MultiplayerEvent::PeerAuthenticationFailed(id) => Some(*id),
            _ => None,
        })
    }

    /// The layer's `AuthData`, in order.
    pub fn auth_data(&self) -> Vec<(PeerId, Vec<u8>)> {
        self.mp_events()
            .iter()
            .filter_map(|e| match e {
                MultiplayerEvent::AuthData { from, data } => Some((*from, data.clone())),
                _ => None,
            })
            .collect()
    }

    fn mp_ids(&self, f: impl Fn(&MultiplayerEvent) -> Option<PeerId>) -> Vec<PeerId> {
        self.mp_events().iter().filter_map(f).collect()
    }
}
