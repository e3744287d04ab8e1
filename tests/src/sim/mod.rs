//! The one simulator: a fake clock, an in-memory network (a `str0m-netem` emulator per directed
//! link, NAT boxes, STUN/TURN servers), a signaling channel, an optional lobby server, and the
//! nodes it drives: any [`rtcmesh::Machine`] (a [`Mesh`], a [`Multiplayer`]), or a hostile
//! [`Attacker`](crate::hostile::Attacker), side by side in one world.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::lobby::ConnectionId;
use rtcmesh::{
    Machine, Mesh, MeshConfig, Mode, Multiplayer, MultiplayerConfig, PeerId, Signal, StreamCommand,
    StreamEnd, StreamId, StreamInput, TlsFailure, Transmit,
};
use str0m_netem::{Input as NetInput, Netem, NetemConfig, Output as NetOutput};

use crate::nat::{NatBehavior, SimNat};
use crate::turn_server::SimTurnServer;

pub mod lobby;
pub mod node;

use lobby::{bind, Frame, SimLobby};
pub use node::{Driven, Node, NodeId, Recorded, Running};

/// One end of a wire: a node, or a STUN/TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Host {
    Node(NodeId),
    Server(usize),
}

impl Host {
    /// A number for the wire's seed.
    fn index(self) -> usize {
        match self {
            Host::Node(n) => n,
            Host::Server(s) => 10_000 + s,
        }
    }
}

/// How one directed link treats datagrams: a `str0m-netem` emulator (latency, jitter,
/// reordering with `reorder_gap` — jitter alone keeps send order —, random or bursty loss,
/// duplication, a rate-limited bottleneck with a buffer) and a partition switch. Every link's
/// emulator is seeded from the world's seed, so the network's faults replay from the seed
/// (str0m's own randomness is not seedable). The default is a perfect link with 1 ms latency.
#[derive(Debug, Clone, Copy)]
pub struct LinkConditions {
    /// The emulator's settings (its seed is overridden per link from the world's seed).
    pub netem: NetemConfig,
    /// `false` drops everything entering the link (a partition).
    pub up: bool,
}

impl Default for LinkConditions {
    fn default() -> Self {
        LinkConditions {
            netem: NetemConfig::new().latency(Duration::from_millis(1)),
            up: true,
        }
    }
}

impl LinkConditions {
    /// A link with these settings, up.
    pub fn new(netem: NetemConfig) -> Self {
        LinkConditions { netem, up: true }
    }
}

/// A datagram on the simulated wire.
#[derive(Debug, Clone)]
struct Datagram {
    source: SocketAddr,
    destination: SocketAddr,
    contents: Vec<u8>,
}

impl AsRef<[u8]> for Datagram {
    fn as_ref(&self) -> &[u8] {
        &self.contents
    }
}

/// One directed link: its conditions and its emulator (with the packets in flight).
struct Wire {
    conditions: LinkConditions,
    netem: Netem<Datagram>,
}

/// A signal in flight on the (perfect, delayed) signaling channel.
pub(crate) struct SignalDelivery {
    from: PeerId,
    to: PeerId,
    signal: Signal,
}

/// Something due at a time: a signal, a frame on a lobby WebSocket, or bytes on a stream to a
/// TURN server.
pub(crate) enum Scheduled {
    Signal(SignalDelivery),
    Frame {
        conn: ConnectionId,
        to_server: bool,
        frame: Frame,
    },
    /// Bytes from a node's stream reach server `server` (empty: the node closed it).
    ToServer {
        server: usize,
        client: SocketAddr,
        bytes: Vec<u8>,
    },
    /// News of stream `id` reach node `node`.
    ToNode {
        node: NodeId,
        id: StreamId,
        news: StreamNews,
    },
}

/// What a node's stream to a TURN server tells the node.
pub(crate) enum StreamNews {
    Opened,
    Data(Vec<u8>),
    Closed(StreamEnd),
}

/// A node's TCP (or TLS) connection to a server: a reliable, ordered pipe with
/// [`World::stream_latency`] each way.
#[derive(Debug, Clone, Copy)]
struct SimStream {
    server: usize,
    /// The address the server sees the connection come from.
    client: SocketAddr,
}

/// Wall-clock time spent in nodes' `handle_datagram` and `handle_signal` (for the benchmark).
#[derive(Debug, Default)]
pub struct CpuLog {
    /// The time of each `handle_datagram` call, per (node, source IP).
    pub datagrams: HashMap<(NodeId, IpAddr), Vec<Duration>>,
    /// Time spent in `handle_signal`, and calls, per (node, sender id).
    pub signals: HashMap<(NodeId, PeerId), (Duration, u64)>,
}

/// A deterministic world: nodes, a fake clock, a network, a signaling channel and, if added, a
/// lobby server.
pub struct World {
    /// The fake clock's current time.
    pub now: Instant,
    start: Instant,
    /// The hosts, indexed by [`NodeId`].
    pub nodes: Vec<Node>,
    /// The seed every link's emulator derives its own from.
    pub seed: u64,
    /// Conditions for links not set one by one.
    pub default_link: LinkConditions,
    wires: BTreeMap<(Host, Host), Wire>,
    /// NAT boxes; nodes behind one have private addresses no one else can reach.
    pub nats: Vec<SimNat>,
    /// STUN/TURN servers on the "public" network.
    pub servers: Vec<SimTurnServer>,
    /// Delay of the signaling channel.
    pub signal_latency: Duration,
    in_flight: BinaryHeap<Reverse<(Instant, u64)>>,
    scheduled: HashMap<u64, Scheduled>,
    next_seq: u64,
    by_addr: HashMap<SocketAddr, NodeId>,
    /// Signals addressed to a peer id no node has, or sent while `signaling` is off (dropped),
    /// counted.
    pub signals_undeliverable: u64,
    /// `false` drops every signal (a lobby that was sealed or went away).
    pub signaling: bool,
    /// Datagrams dropped by link conditions or a vanished node.
    pub datagrams_dropped: u64,
    /// Datagrams delivered.
    pub datagrams_delivered: u64,
    /// Tampers with signals in flight (see [`World::rewrite_signals`]).
    rewrite: Option<SignalRewrite>,
    /// Drops chosen datagrams as they are sent (see [`World::drop_datagrams`]).
    dropper: Option<DatagramDropper>,
    /// The lobby server, if the nodes signal through one ([`World::add_lobby`]).
    pub lobby: Option<SimLobby>,
    /// With `Some`, the wall-clock time of the nodes' `handle_datagram` and `handle_signal`
    /// calls is recorded (the benchmark; off by default).
    pub cpu: Option<CpuLog>,
    /// One-way delay of the TCP/TLS streams to TURN servers (handshakes take two of them).
    pub stream_latency: Duration,
    /// Open streams to TURN servers, by node and id.
    streams: BTreeMap<(NodeId, StreamId), SimStream>,
    next_stream_port: u16,
    /// Nodes behind a firewall that lets no UDP through, either way (TCP still works).
    udp_blocked: BTreeSet<NodeId>,
    /// Bytes servers wrote on streams to nodes, counted.
    pub stream_bytes_to_nodes: u64,
}

/// A test's hook on the signaling channel: (sender id, receiver id, signal).
type SignalRewrite = Box<dyn FnMut(PeerId, PeerId, &mut Signal)>;

/// A test's hook on the network: (sending node, receiving node, contents) → drop it?
type DatagramDropper = Box<dyn FnMut(NodeId, NodeId, &[u8]) -> bool>;

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// When the world's clock started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// An empty world whose clock starts now (the harness's only clock read), seed 0.
    pub fn new() -> World {
        World::with_seed(0)
    }

    /// An empty world whose link emulators are seeded from `seed`.
    pub fn with_seed(seed: u64) -> World {
        let start = Instant::now();
        World {
            now: start,
            start,
            nodes: Vec::new(),
            seed,
            default_link: LinkConditions::default(),
            wires: BTreeMap::new(),
            nats: Vec::new(),
            servers: Vec::new(),
            signal_latency: Duration::from_millis(5),
            in_flight: BinaryHeap::new(),
            scheduled: HashMap::new(),
            next_seq: 0,
            by_addr: HashMap::new(),
            signals_undeliverable: 0,
            signaling: true,
            datagrams_dropped: 0,
            datagrams_delivered: 0,
            rewrite: None,
            dropper: None,
            lobby: None,
            cpu: None,
            stream_latency: Duration::from_millis(1),
            streams: BTreeMap::new(),
            next_stream_port: 40_000,
            udp_blocked: BTreeSet::new(),
            stream_bytes_to_nodes: 0,
        }
    }

    /// Simulated time since the world was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a node running `machine` (a [`Mesh`], a [`Multiplayer`], any [`rtcmesh::Machine`]),
    /// bound to `127.0.0.<n+1>:5000` (registered as its host candidate). Returns its index.
    pub fn add<M>(&mut self, machine: M) -> NodeId
    where
        M: Machine + 'static,
        M::Event: Recorded,
    {
        let mut driven = Box::new(Running::new(machine));
        bind(driven.as_mut(), self.next_public_addr(), self.now);
        self.place_public(driven)
    }

    /// Adds a node behind a NAT of its own with this behaviour: the node is at a private
    /// address (`127.100.<k>.2:5000`, unreachable from outside), the NAT's public address is
    /// `127.200.0.<k>`. Returns the node's index; its NAT is [`Node::nat`].
    pub fn add_behind_nat<M>(&mut self, machine: M, behavior: NatBehavior) -> NodeId
    where
        M: Machine + 'static,
        M::Event: Recorded,
    {
        let mut driven = Box::new(Running::new(machine));
        bind(driven.as_mut(), self.next_private_addr(), self.now);
        self.place_behind_nat(driven, behavior)
    }

    /// Adds a node running something that is not an rtcmesh machine (an attacker), already
    /// bound to [`next_public_addr`](World::next_public_addr).
    pub fn add_driven(&mut self, driven: Box<dyn Driven>) -> NodeId {
        self.place_public(driven)
    }

    /// The address the next node added with [`add`](World::add) gets.
    pub fn next_public_addr(&self) -> SocketAddr {
        let octet = u8::try_from(self.nodes.len() + 1).expect("at most 254 nodes");
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)), 5000)
    }

    fn next_private_addr(&self) -> SocketAddr {
        let k = u8::try_from(self.nats.len() + 1).expect("at most 254 NATs");
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 100, k, 2)), 5000)
    }

    pub(crate) fn place_public(&mut self, driven: Box<dyn Driven>) -> NodeId {
        let addr = self.next_public_addr();
        self.place(driven, addr, None)
    }

    pub(crate) fn place_behind_nat(
        &mut self,
        driven: Box<dyn Driven>,
        behavior: NatBehavior,
    ) -> NodeId {
        let addr = self.next_private_addr();
        let k = u8::try_from(self.nats.len() + 1).expect("at most 254 NATs");
        self.nats.push(SimNat::new(
            IpAddr::V4(Ipv4Addr::new(127, 200, 0, k)),
            behavior,
        ));
        self.place(driven, addr, Some(self.nats.len() - 1))
    }

    fn place(&mut self, driven: Box<dyn Driven>, addr: SocketAddr, nat: Option<usize>) -> NodeId {
        let n = self.nodes.len();
        if nat.is_none() {
            self.by_addr.insert(addr, n);
        }
        self.nodes.push(Node::new(driven, addr, nat));
        self.drain(n);
        n
    }

    /// Starts a STUN/TURN server at `127.250.0.<k>:3478` accepting these long-term
    /// credentials; its URL host is [`SimTurnServer::listen`]. Returns its index.
    pub fn add_turn_server(&mut self, users: &[(&str, &str)]) -> usize {
        let k = u8::try_from(self.servers.len() + 1).expect("at most 254 servers");
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 250, 0, k)), 3478);
        self.servers
            .push(SimTurnServer::new(listen, users, self.now));
        self.servers.len() - 1
    }

    /// Where a datagram for `destination` goes: a node with a public address, the node behind
    /// the NAT owning that address, or a server. `None`: nowhere (a private address, say).
    fn host_at(&self, destination: SocketAddr) -> Option<Host> {
        if let Some(&n) = self.by_addr.get(&destination) {
            return Some(Host::Node(n));
        }
        if let Some(s) = self.servers.iter().position(|s| s.owns(destination)) {
            return Some(Host::Server(s));
        }
        let k = self
            .nats
            .iter()
            .position(|nat| nat.public_ip == destination.ip())?;
        self.nodes
            .iter()
            .position(|node| node.nat == Some(k))
            .map(Host::Node)
    }

    /// A world of `ids.len()` mesh-mode nodes with these unique ids.
    pub fn mesh(ids: &[PeerId], config: &MeshConfig) -> World {
        World::mesh_with_seed(ids, config, 0)
    }

    /// [`World::mesh`] with link emulators seeded from `seed` (property tests).
    pub fn mesh_with_seed(ids: &[PeerId], config: &MeshConfig, seed: u64) -> World {
        let mut world = World::with_seed(seed);
        for &id in ids {
            world.add(Mesh::create_mesh(id, config.clone()).expect("valid mesh id"));
        }
        world
    }

    /// A mesh-mode world introduced and run until fully connected (panics if that takes more
    /// than 10 s of simulated time), with the connect events cleared.
    pub fn connected_mesh(ids: &[PeerId], config: &MeshConfig) -> World {
        let mut world = World::mesh(ids, config);
        world.introduce_all();
        assert!(
            world.run_until(Duration::from_secs(10), World::fully_connected),
            "mesh {ids:?} did not connect"
        );
        for node in &mut world.nodes {
            node.clear_events();
        }
        world
    }

    /// Node 0 is a server; nodes 1.. are clients with these ids.
    pub fn server_and_clients(client_ids: &[PeerId], config: &MeshConfig) -> World {
        let mut world = World::new();
        world.add(Mesh::create_server(config.clone()).expect("server"));
        for &id in client_ids {
            world.add(Mesh::create_client(id, config.clone()).expect("valid client id"));
        }
        world
    }

    /// The alive node with this unique id.
    pub fn node_of(&self, id: PeerId) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.alive && n.id() == id)
    }

    /// The unique id of node `n`.
    pub fn id(&self, n: NodeId) -> PeerId {
        self.nodes[n].id()
    }

    /// Has `a` and `b` add each other (Godot's `add_peer` on both sides, lifetime 1 ms).
    pub fn introduce(&mut self, a: NodeId, b: NodeId) {
        self.introduce_with_lifetime(a, b, 1);
    }

    /// Has `a` and `b` add each other with this `unreliable_lifetime` (ms) for the `ordered`
    /// and `unreliable` channels.
    pub fn introduce_with_lifetime(&mut self, a: NodeId, b: NodeId, lifetime_ms: i32) {
        let (ida, idb) = (self.id(a), self.id(b));
        let now = self.now;
        self.nodes[a]
            .commands()
            .add_peer(now, idb, lifetime_ms)
            .expect("add_peer a→b");
        self.nodes[b]
            .commands()
            .add_peer(now, ida, lifetime_ms)
            .expect("add_peer b→a");
        self.drain(a);
        self.drain(b);
    }

    /// Passes every signal through `rewrite` (sender id, receiver id, signal) before it is
    /// delivered: a remote that advertises something else in its SDP, a tampering relay.
    pub fn rewrite_signals(&mut self, rewrite: impl FnMut(PeerId, PeerId, &mut Signal) + 'static) {
        self.rewrite = Some(Box::new(rewrite));
    }

    /// Passes every datagram a node sends to another node through `drop` (sending node,
    /// receiving node, contents); those it returns `true` for are lost: one handshake flight,
    /// say, where random loss would need luck.
    pub fn drop_datagrams(&mut self, drop: impl FnMut(NodeId, NodeId, &[u8]) -> bool + 'static) {
        self.dropper = Some(Box::new(drop));
    }

    /// Introduces every pair of nodes (a full mesh) or, with a server at node 0, each client to it.
    pub fn introduce_all(&mut self) {
        let n = self.nodes.len();
        let server_mode = n > 0 && self.nodes[0].mesh().mode() == Mode::Server;
        for a in 0..n {
            for b in (a + 1)..n {
                if !server_mode || a == 0 {
                    self.introduce(a, b);
                }
            }
        }
    }

    /// Drops node `n` off the network: no more datagrams to or from it, no more ticks, and
    /// nothing more on its lobby WebSocket, which stays half-open until the server's keepalive
    /// gives up on it (power loss; see [`crash`](World::crash) for a process that dies).
    pub fn vanish(&mut self, n: NodeId) {
        self.nodes[n].alive = false;
    }

    /// A NAT in front of node `n` rebinds: from now on its datagrams come from `public`, and
    /// only datagrams to `public` reach it (those to the old mapping are dropped, including the
    /// ones in flight). The node's socket and host candidate do not change, and the node is not
    /// told: it must find out, as behind a real NAT.
    /// For a node behind a [`SimNat`], rebind that NAT instead (`nats[k].rebind()`).
    pub fn rebind(&mut self, n: NodeId, public: SocketAddr) {
        assert!(
            self.nodes[n].nat.is_none(),
            "node {n} is behind a SimNat: rebind the NAT"
        );
        assert!(!self.by_addr.contains_key(&public), "{public} is taken");
        self.by_addr.remove(&self.nodes[n].public);
        self.by_addr.insert(public, n);
        self.nodes[n].public = public;
    }

    /// Node `n`'s socket moves to `addr` (another network, another port): the old address is
    /// gone (datagrams to it are dropped, also those in flight) and the node's mesh is told,
    /// as an application does after rebinding its socket ([`Mesh::move_host_candidate`]).
    pub fn move_node(&mut self, n: NodeId, addr: SocketAddr) {
        assert!(!self.by_addr.contains_key(&addr), "{addr} is taken");
        let old = self.nodes[n].addr;
        if self.nodes[n].nat.is_none() {
            self.by_addr.remove(&self.nodes[n].public);
            self.by_addr.insert(addr, n);
        }
        self.nodes[n].addr = addr;
        self.nodes[n].public = addr;
        let now = self.now;
        self.nodes[n]
            .mesh_mut()
            .move_host_candidate(now, old, addr)
            .expect("new host candidate");
        self.drain(n);
    }

    /// Sets the conditions of the directed link `from → to` (packets in flight keep their times).
    pub fn set_link(&mut self, from: NodeId, to: NodeId, conditions: LinkConditions) {
        let seed = wire_seed(self.seed, from, to);
        let wire = self.wire(Host::Node(from), Host::Node(to));
        wire.conditions = conditions;
        wire.netem.set_config(conditions.netem.seed(seed));
    }

    /// Sets the conditions of every link, present and future, in both directions.
    pub fn set_all_links(&mut self, conditions: LinkConditions) {
        self.default_link = conditions;
        let n = self.nodes.len();
        for from in 0..n {
            for to in 0..n {
                if from != to {
                    self.set_link(from, to, conditions);
                }
            }
        }
    }

    /// Cuts (or heals) both directions between `a` and `b`.
    pub fn partition(&mut self, a: NodeId, b: NodeId, cut: bool) {
        self.cut(a, b, cut);
        self.cut(b, a, cut);
    }

    /// Cuts (or heals) the one direction `from → to`: datagrams sent while it is cut are lost
    /// (those in flight still arrive).
    pub fn cut(&mut self, from: NodeId, to: NodeId, cut: bool) {
        self.wire(Host::Node(from), Host::Node(to)).conditions.up = !cut;
    }

    /// Cuts (or heals) both directions between node `n` and server `server`.
    pub fn partition_server(&mut self, n: NodeId, server: usize, cut: bool) {
        for (x, y) in [
            (Host::Node(n), Host::Server(server)),
            (Host::Server(server), Host::Node(n)),
        ] {
            self.wire(x, y).conditions.up = !cut;
        }
    }

    fn wire(&mut self, from: Host, to: Host) -> &mut Wire {
        let seed = wire_seed(self.seed, from.index(), to.index());
        let default = self.default_link;
        self.wires.entry((from, to)).or_insert_with(|| Wire {
            conditions: default,
            netem: Netem::new(default.netem.seed(seed)),
        })
    }

    /// Drains node `n`'s outputs into the network, the signaling channel (or its lobby
    /// WebSocket) and its event log. Call after driving a node directly (e.g. `send`) so its
    /// datagrams leave.
    pub fn drain(&mut self, n: NodeId) {
        let now = self.now;
        self.nodes[n].driven.flush(now);
        while let Some(t) = self.nodes[n].driven.poll_transmit() {
            self.transmit(n, t);
        }
        // After the datagrams: relayed data for a server reached over TCP is written as they
        // are polled.
        while let Some(command) = self.nodes[n].driven.poll_stream_command() {
            self.stream_command(n, command);
        }
        let from = self.nodes[n].id();
        while let Some(s) = self.nodes[n].driven.poll_signal(now) {
            if self.nodes[n].lobby.is_some() {
                self.member_signal(n, s);
            } else {
                let at = self.now + self.signal_latency;
                let delivery = SignalDelivery {
                    from,
                    to: s.to,
                    signal: s.signal,
                };
                self.schedule(at, Scheduled::Signal(delivery));
            }
        }
        while let Some(request) = self.nodes[n].driven.poll_lobby_request() {
            if self.nodes[n].lobby.is_some() {
                self.member_request(n, request);
            }
        }
    }

    /// Node `n` sends a datagram (dropped if the node vanished, or UDP is blocked for it).
    fn transmit(&mut self, n: NodeId, t: Transmit) {
        if !self.nodes[n].alive {
            return;
        }
        if self.udp_blocked.contains(&n) {
            self.datagrams_dropped += 1;
            return;
        }
        *self.nodes[n].sent_to.entry(t.destination).or_default() += 1;
        // A socket sends from its own address, whatever str0m thinks it is; what leaves a
        // NAT carries the NAT's public address (or the one `rebind` gave the node).
        let source = match self.nodes[n].nat {
            Some(k) => self.nats[k].outbound(self.nodes[n].addr, t.destination),
            None => self.nodes[n].public,
        };
        if let (Some(drop), Some(&to)) = (&mut self.dropper, self.by_addr.get(&t.destination)) {
            if drop(n, to, &t.contents) {
                self.datagrams_dropped += 1;
                return;
            }
        }
        let datagram = Datagram {
            source,
            destination: t.destination,
            contents: t.contents,
        };
        self.send(Host::Node(n), datagram);
    }

    /// Puts a hand-made datagram on the wire from node `from`, with any source address (a
    /// spoofed port, say): it travels the link `from → ` the destination's owner.
    pub fn inject(
        &mut self,
        from: NodeId,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    ) {
        let datagram = Datagram {
            source,
            destination,
            contents,
        };
        self.send(Host::Node(from), datagram);
    }

    /// Sends a signal on the signaling channel as if peer `from` sent it to peer `to` (a
    /// hostile peer's hand-made offer, say).
    pub fn send_signal(&mut self, from: PeerId, to: PeerId, signal: Signal) {
        let at = self.now + self.signal_latency;
        self.schedule(at, Scheduled::Signal(SignalDelivery { from, to, signal }));
    }

    /// Puts a datagram on the wire from `from` to whoever owns its destination.
    fn send(&mut self, from: Host, datagram: Datagram) {
        let Some(to) = self.host_at(datagram.destination) else {
            self.datagrams_dropped += 1;
            return;
        };
        let now = self.now;
        let wire = self.wire(from, to);
        if !wire.conditions.up {
            self.datagrams_dropped += 1;
            return;
        }
        wire.netem.handle_input(NetInput::Packet(now, datagram));
    }

    pub(crate) fn schedule(&mut self, at: Instant, what: Scheduled) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.scheduled.insert(seq, what);
        self.in_flight.push(Reverse((at, seq)));
    }

    /// The next time anything happens: a datagram or signal arriving, or a mesh deadline.
    fn next_time(&self) -> Option<Instant> {
        let signal = self.in_flight.peek().map(|Reverse((at, _))| *at);
        let datagrams = self
            .wires
            .values()
            .filter(|w| !w.netem.is_empty())
            .map(|w| w.netem.poll_timeout());
        let delivery = signal.into_iter().chain(datagrams).min();
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.driven.poll_timeout());
        let servers = self.servers.iter().filter_map(|s| s.deadline());
        let lobby = self
            .lobby_deadline()
            .into_iter()
            .chain(self.members_deadline());
        delivery
            .into_iter()
            .chain(timers)
            .chain(servers)
            .chain(lobby)
            .min()
    }

    /// Advances to the next thing that happens and processes everything due then. Returns
    /// `false` when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(&Reverse((at, seq))) = self.in_flight.peek() {
            if at > now {
                break;
            }
            self.in_flight.pop();
            match self.scheduled.remove(&seq) {
                Some(Scheduled::Signal(delivery)) => self.deliver_signal(delivery),
                Some(Scheduled::Frame {
                    conn,
                    to_server,
                    frame,
                }) => self.deliver_frame(conn, to_server, frame),
                Some(Scheduled::ToServer {
                    server,
                    client,
                    bytes,
                }) => self.stream_to_server(server, client, bytes),
                Some(Scheduled::ToNode { node, id, news }) => self.stream_to_node(node, id, news),
                None => {}
            }
        }
        let mut arrived = Vec::new();
        for wire in self.wires.values_mut() {
            wire.netem.handle_input(NetInput::Timeout(now));
            while let Some(out) = wire.netem.poll_output() {
                if let NetOutput::Packet(datagram) = out {
                    arrived.push(datagram);
                }
            }
        }
        for datagram in arrived {
            self.deliver_datagram(datagram);
        }
        for s in 0..self.servers.len() {
            if self.servers[s].deadline().is_some_and(|t| t <= now) {
                let mut out = Vec::new();
                self.servers[s].poll(now, &mut out);
                self.server_sends(s, out);
            }
        }
        self.lobby_timeout();
        for n in 0..self.nodes.len() {
            if !self.nodes[n].alive {
                continue;
            }
            if self.nodes[n]
                .driven
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.nodes[n].driven.handle_timeout(now);
            }
            self.drain(n);
            self.member_progress(n);
        }
        true
    }

    fn deliver_datagram(&mut self, d: Datagram) {
        let now = self.now;
        match self.host_at(d.destination) {
            Some(Host::Server(s)) => {
                self.datagrams_delivered += 1;
                let mut out = Vec::new();
                self.servers[s].receive(now, d.source, d.destination, &d.contents, &mut out);
                self.server_sends(s, out);
            }
            Some(Host::Node(n)) if self.nodes[n].alive && !self.udp_blocked.contains(&n) => {
                // Through the node's NAT, if it has one: only what its filter lets in.
                let destination = match self.nodes[n].nat {
                    Some(k) => match self.nats[k].inbound(d.source, d.destination.port()) {
                        // A mapping of a socket the node left (`move_node`) leads nowhere.
                        Some(private) if private == self.nodes[n].addr => private,
                        _ => {
                            self.datagrams_dropped += 1;
                            return;
                        }
                    },
                    // Rebound (see `rebind`): the socket sees its own address.
                    None => self.nodes[n].addr,
                };
                self.datagrams_delivered += 1;
                let started = self.cpu.is_some().then(Instant::now);
                self.nodes[n]
                    .driven
                    .handle_datagram(now, d.source, destination, &d.contents);
                if let (Some(started), Some(cpu)) = (started, &mut self.cpu) {
                    let spent = started.elapsed();
                    cpu.datagrams
                        .entry((n, d.source.ip()))
                        .or_default()
                        .push(spent);
                }
            }
            _ => self.datagrams_dropped += 1,
        }
    }

    /// Puts what server `s` sends on the wire, and on its streams.
    fn server_sends(&mut self, s: usize, out: Vec<crate::turn_server::ServerDatagram>) {
        for (source, destination, contents) in out {
            let datagram = Datagram {
                source,
                destination,
                contents,
            };
            self.send(Host::Server(s), datagram);
        }
        let written = std::mem::take(&mut self.servers[s].stream_out);
        for (client, bytes) in written {
            let Some((&(node, id), _)) = self
                .streams
                .iter()
                .find(|(_, st)| st.server == s && st.client == client)
            else {
                continue;
            };
            self.stream_bytes_to_nodes += bytes.len() as u64;
            let at = self.now + self.stream_latency;
            let news = StreamNews::Data(bytes);
            self.schedule(at, Scheduled::ToNode { node, id, news });
        }
    }

    // ------------------------------------------------------------ streams to TURN servers

    /// Blocks (or unblocks) every UDP datagram from and to node `n`, as a firewall that allows
    /// only TCP does: it reaches TURN servers over `?transport=tcp` / `turns:` only.
    pub fn block_udp(&mut self, n: NodeId, blocked: bool) {
        match blocked {
            true => self.udp_blocked.insert(n),
            false => self.udp_blocked.remove(&n),
        };
    }

    /// The streams node `n` has open (or opening) to servers.
    pub fn streams_of(&self, n: NodeId) -> Vec<StreamId> {
        self.streams
            .keys()
            .filter(|(node, _)| *node == n)
            .map(|&(_, id)| id)
            .collect()
    }

    /// Server-side bytes on node `n`'s streams, as if the server wrote them (a hostile or
    /// broken server).
    pub fn inject_on_streams(&mut self, n: NodeId, bytes: &[u8]) {
        let at = self.now + self.stream_latency;
        for id in self.streams_of(n) {
            let news = StreamNews::Data(bytes.to_vec());
            self.schedule(at, Scheduled::ToNode { node: n, id, news });
        }
    }

    /// Ends node `n`'s streams from the server's side (a server restart, a middlebox reset).
    pub fn reset_streams(&mut self, n: NodeId) {
        let at = self.now + self.stream_latency;
        for id in self.streams_of(n) {
            let stream = self.streams[&(n, id)];
            let news = StreamNews::Closed(StreamEnd::Closed);
            self.schedule(at, Scheduled::ToNode { node: n, id, news });
            self.schedule(
                at,
                Scheduled::ToServer {
                    server: stream.server,
                    client: stream.client,
                    bytes: Vec::new(),
                },
            );
        }
    }

    /// What node `n` asked of its streams.
    fn stream_command(&mut self, n: NodeId, command: StreamCommand) {
        let latency = self.stream_latency;
        match command {
            StreamCommand::Open { id, server, tls } => {
                let Some(s) = self
                    .servers
                    .iter()
                    .position(|srv| srv.listen == server && srv.accepts_streams)
                else {
                    // Nobody listens: the connection is refused within a round trip.
                    let news = StreamNews::Closed(StreamEnd::Unreachable);
                    self.schedule(
                        self.now + 2 * latency,
                        Scheduled::ToNode { node: n, id, news },
                    );
                    return;
                };
                if !self.wire(Host::Node(n), Host::Server(s)).conditions.up {
                    return; // dropped SYNs: the mesh gives up on its own
                }
                let wanted = self.servers[s].tls_name.clone();
                if let (Some(name), Some(valid)) = (&tls, &wanted) {
                    if !name.eq_ignore_ascii_case(valid) {
                        let news = StreamNews::Closed(StreamEnd::Tls(TlsFailure::NameMismatch));
                        let at = self.now + 3 * latency;
                        self.schedule(at, Scheduled::ToNode { node: n, id, news });
                        return;
                    }
                }
                let ip = match self.nodes[n].nat {
                    Some(k) => self.nats[k].public_ip,
                    None => self.nodes[n].public.ip(),
                };
                let client = SocketAddr::new(ip, self.next_stream_port);
                self.next_stream_port = self.next_stream_port.wrapping_add(1).max(40_000);
                self.streams
                    .insert((n, id), SimStream { server: s, client });
                // TCP's handshake, and TLS's on top.
                let trips = if tls.is_some() { 4 } else { 2 };
                let news = StreamNews::Opened;
                self.schedule(
                    self.now + trips * latency,
                    Scheduled::ToNode { node: n, id, news },
                );
            }
            StreamCommand::Send { id, data, .. } => {
                if let Some(stream) = self.streams.get(&(n, id)).copied() {
                    let at = self.now + latency;
                    self.schedule(
                        at,
                        Scheduled::ToServer {
                            server: stream.server,
                            client: stream.client,
                            bytes: data,
                        },
                    );
                }
            }
            StreamCommand::Close { id } => {
                if let Some(stream) = self.streams.remove(&(n, id)) {
                    let at = self.now + latency;
                    self.schedule(
                        at,
                        Scheduled::ToServer {
                            server: stream.server,
                            client: stream.client,
                            bytes: Vec::new(),
                        },
                    );
                }
            }
            _ => {}
        }
    }

    fn stream_to_server(&mut self, s: usize, client: SocketAddr, bytes: Vec<u8>) {
        let now = self.now;
        let mut out = Vec::new();
        match bytes.is_empty() {
            true => self.servers[s].stream_closed(now, client, &mut out),
            false => self.servers[s].stream_data(now, client, &bytes, &mut out),
        }
        self.server_sends(s, out);
    }

    fn stream_to_node(&mut self, n: NodeId, id: StreamId, news: StreamNews) {
        let open = self.streams.contains_key(&(n, id));
        if !self.nodes[n].alive {
            return;
        }
        let now = self.now;
        match news {
            StreamNews::Opened if open => {
                self.nodes[n]
                    .driven
                    .handle_stream(now, id, StreamInput::Opened)
            }
            StreamNews::Data(bytes) if open => {
                self.nodes[n]
                    .driven
                    .handle_stream(now, id, StreamInput::Data(&bytes))
            }
            StreamNews::Closed(end) => {
                self.streams.remove(&(n, id));
                self.nodes[n]
                    .driven
                    .handle_stream(now, id, StreamInput::Closed(end));
            }
            _ => return,
        }
        self.drain(n);
    }

    fn deliver_signal(&mut self, d: SignalDelivery) {
        if !self.signaling {
            self.signals_undeliverable += 1;
            return;
        }
        match self.node_of(d.to) {
            Some(n) => {
                // Signals cross the wire as text: exercise the encoding every time.
                let mut signal = Signal::decode(&d.signal.encode()).expect("signal round trip");
                if let Some(rewrite) = &mut self.rewrite {
                    rewrite(d.from, d.to, &mut signal);
                }
                let started = self.cpu.is_some().then(Instant::now);
                let result = self.nodes[n].driven.handle_signal(self.now, d.from, signal);
                if let (Some(started), Some(cpu)) = (started, &mut self.cpu) {
                    let spent = cpu.signals.entry((n, d.from)).or_default();
                    spent.0 += started.elapsed();
                    spent.1 += 1;
                }
                if let Err(e) = result {
                    self.nodes[n].signal_errors.push(e);
                }
            }
            None => self.signals_undeliverable += 1,
        }
    }

    /// Runs until `done` holds or `limit` of simulated time passes; returns whether `done` held.
    /// Bounded in simulated time and in steps.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let deadline = self.now + limit;
        for _ in 0..10_000_000u32 {
            if done(self) {
                return true;
            }
            match self.next_time() {
                Some(next) if next <= deadline => {
                    self.step();
                }
                _ => {
                    // Stopped at the deadline: tell the nodes the time, as an application
                    // loop would.
                    self.now = self.now.max(deadline);
                    self.tick();
                    return done(self);
                }
            }
        }
        false
    }

    /// Tells every alive node the current time, as an application loop does on each iteration
    /// (`handle_timeout(now)` whether or not a deadline is due), so that what the test does
    /// next (e.g. `send`) happens at `now`, not at the node's last event.
    pub fn tick(&mut self) {
        let now = self.now;
        for n in 0..self.nodes.len() {
            if self.nodes[n].alive {
                self.nodes[n].driven.handle_timeout(now);
                self.drain(n);
            }
        }
    }

    /// Runs for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }

    /// The alive nodes that run an rtcmesh machine (not attackers), or `None` while a lobby
    /// member is still waiting for its id (one that failed to join is not counted).
    fn machines(&self) -> Option<Vec<NodeId>> {
        let mut machines = Vec::new();
        for (n, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.alive) {
            if node.is_machine() {
                machines.push(n);
            } else if node.lobby.as_ref().is_some_and(|m| m.open) {
                return None;
            }
        }
        Some(machines)
    }

    /// Whether every alive node's mesh reports exactly these peers connected (mesh: all
    /// others; server: all clients; client: the server). Attackers are not counted; a lobby
    /// member still joining is not connected.
    pub fn fully_connected(&self) -> bool {
        let Some(machines) = self.machines() else {
            return false;
        };
        let server_mode = machines
            .iter()
            .any(|&n| self.nodes[n].mesh().mode() == Mode::Server);
        machines.iter().all(|&n| {
            let mesh = self.nodes[n].mesh();
            let expected: Vec<PeerId> = if server_mode && mesh.mode() == Mode::Client {
                vec![1]
            } else {
                let mut ids: Vec<PeerId> = machines
                    .iter()
                    .filter(|&&m| m != n)
                    .map(|&m| self.id(m))
                    .collect();
                ids.sort();
                ids
            };
            mesh.connected_peers().collect::<Vec<_>>() == expected
        })
    }

    /// Whether every alive multiplayer node admitted exactly what it should: the server every
    /// alive machine, a client the server plus (relay on) every other alive machine, a mesh
    /// every other alive machine. Bare meshes and attackers are not checked.
    pub fn everyone_admitted(&self) -> bool {
        let Some(machines) = self.machines() else {
            return false;
        };
        machines.iter().all(|&n| {
            let Some(mp) = self.nodes[n]
                .driven
                .as_any()
                .downcast_ref::<Running<Multiplayer>>()
            else {
                return true;
            };
            let mp = &mp.machine;
            let mut expected: Vec<PeerId> =
                if mp.mesh().mode() != Mode::Client || mp.is_server_relay_enabled() {
                    machines
                        .iter()
                        .filter(|&&m| m != n)
                        .map(|&m| self.id(m))
                        .collect()
                } else {
                    vec![1]
                };
            expected.sort();
            mp.peers().collect::<Vec<_>>() == expected
        })
    }

    // ------------------------------------------------------------ the multiplayer layer

    /// Node 0 a [`Multiplayer`] server, nodes 1.. multiplayer clients with these ids, all with
    /// `config`. Nobody is connected yet: see [`introduce_to_server`](World::introduce_to_server).
    pub fn game(client_ids: &[PeerId], mesh: &MeshConfig, config: &MultiplayerConfig) -> World {
        World::game_with_seed(0, client_ids, mesh, config)
    }

    /// [`game`](World::game) with link emulators seeded from `seed` (lossy stories, property
    /// tests).
    pub fn game_with_seed(
        seed: u64,
        client_ids: &[PeerId],
        mesh: &MeshConfig,
        config: &MultiplayerConfig,
    ) -> World {
        let mut w = World::with_seed(seed);
        let server = Mesh::create_server(mesh.clone()).expect("server");
        w.add(Multiplayer::new(server, config.clone()));
        for &id in client_ids {
            w.add_game_client(id, mesh, config);
        }
        w
    }

    /// Like [`game`](World::game) but node 0 is a bare mesh server: the test plays
    /// SceneMultiplayer's server by hand, byte by byte.
    pub fn bare_server_and_game_clients(
        client_ids: &[PeerId],
        mesh: &MeshConfig,
        config: &MultiplayerConfig,
    ) -> World {
        let mut w = World::new();
        w.add(Mesh::create_server(mesh.clone()).expect("server"));
        for &id in client_ids {
            w.add_game_client(id, mesh, config);
        }
        w
    }

    /// A multiplayer server and clients, all introduced, peer exchange done, events cleared
    /// (relay and auth as `config` says; with auth on, introduce them one by one instead).
    pub fn star(client_ids: &[PeerId], config: &MultiplayerConfig) -> World {
        let mut w = World::game(client_ids, &MeshConfig::default(), config);
        for n in 1..w.nodes.len() {
            w.introduce_to_server(n);
        }
        assert!(
            w.run_until(Duration::from_secs(10), World::everyone_admitted),
            "star {client_ids:?} did not settle"
        );
        for node in &mut w.nodes {
            node.clear_events();
        }
        w
    }

    /// Adds a client running the multiplayer layer; returns its node.
    pub fn add_game_client(
        &mut self,
        id: PeerId,
        mesh: &MeshConfig,
        config: &MultiplayerConfig,
    ) -> NodeId {
        let client = Mesh::create_client(id, mesh.clone()).expect("valid client id");
        self.add(Multiplayer::new(client, config.clone()))
    }

    /// Adds a client that is a bare mesh (the test reads and writes its bytes); returns its
    /// node.
    pub fn add_bare_client(&mut self, id: PeerId, mesh: &MeshConfig) -> NodeId {
        self.add(Mesh::create_client(id, mesh.clone()).expect("valid client id"))
    }

    /// Client node `n` and the server (node 0) add each other.
    pub fn introduce_to_server(&mut self, n: NodeId) {
        self.introduce(0, n);
    }
}

/// A per-link seed: the world's seed mixed with the link's ends (splitmix64).
fn wire_seed(seed: u64, from: NodeId, to: NodeId) -> u64 {
    let mut z = seed ^ ((from as u64) << 32 | to as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
