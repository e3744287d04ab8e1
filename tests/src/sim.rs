//! The fake clock, the in-memory network and the world that drives the meshes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::{Event, Mesh, MeshConfig, PeerId, Signal, SignalError};
use str0m_netem::{Input as NetInput, Netem, NetemConfig, Output as NetOutput};

use crate::nat::{NatBehavior, SimNat};
use crate::turn_server::SimTurnServer;

/// Index of a node in its world.
pub type NodeId = usize;

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

/// One simulated host: a mesh, its socket address and what it has emitted.
pub struct Node {
    /// The state machine under test.
    pub mesh: Mesh,
    /// The UDP address its "socket" is bound to (never a real socket).
    pub addr: SocketAddr,
    /// The address others see its datagrams come from: `addr`, unless a simulated NAT maps it
    /// elsewhere ([`World::rebind`]).
    pub public: SocketAddr,
    /// Every event the mesh emitted except signals, in order.
    pub events: Vec<Event>,
    /// Errors returned when the world passed a signal to this node.
    pub signal_errors: Vec<SignalError>,
    /// `false` once the node vanished: it no longer sends, receives or ticks.
    pub alive: bool,
    /// The NAT in front of it (an index into [`World::nats`]), if any.
    pub nat: Option<usize>,
}

impl Node {
    /// `PeerConnected` ids in the order they fired.
    pub fn connected(&self) -> Vec<PeerId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::PeerConnected(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// `PeerDisconnected` ids in the order they fired.
    pub fn disconnected(&self) -> Vec<PeerId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::PeerDisconnected(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Received packets in order.
    pub fn packets(&self) -> Vec<&rtcmesh::Packet> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Packet(p) => Some(p),
                _ => None,
            })
            .collect()
    }

    /// Removes and returns the recorded events.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// A signal in flight on the (perfect, delayed) signaling channel.
struct SignalDelivery {
    from: PeerId,
    to: PeerId,
    signal: Signal,
}

/// A deterministic world: N meshes, a fake clock, a network and a signaling channel.
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
    signals: HashMap<u64, SignalDelivery>,
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
}

/// A test's hook on the signaling channel: (sender id, receiver id, signal).
type SignalRewrite = Box<dyn FnMut(PeerId, PeerId, &mut Signal)>;

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
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
            signals: HashMap::new(),
            next_seq: 0,
            by_addr: HashMap::new(),
            signals_undeliverable: 0,
            signaling: true,
            datagrams_dropped: 0,
            datagrams_delivered: 0,
            rewrite: None,
        }
    }

    /// Simulated time since the world was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a node running `mesh`, bound to `127.0.0.<n+1>:5000` (registered as its host
    /// candidate). Returns its index.
    pub fn add(&mut self, mesh: Mesh) -> NodeId {
        let octet = u8::try_from(self.nodes.len() + 1).expect("at most 254 nodes");
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)), 5000);
        self.place(mesh, addr, None)
    }

    /// Adds a node behind a NAT of its own with this behaviour: the node is at a private
    /// address (`127.100.<k>.2:5000`, unreachable from outside), the NAT's public address is
    /// `127.200.0.<k>`. Returns the node's index; its NAT is [`Node::nat`].
    pub fn add_behind_nat(&mut self, mesh: Mesh, behavior: NatBehavior) -> NodeId {
        let k = u8::try_from(self.nats.len() + 1).expect("at most 254 NATs");
        self.nats.push(SimNat::new(
            IpAddr::V4(Ipv4Addr::new(127, 200, 0, k)),
            behavior,
        ));
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 100, k, 2)), 5000);
        self.place(mesh, addr, Some(self.nats.len() - 1))
    }

    fn place(&mut self, mut mesh: Mesh, addr: SocketAddr, nat: Option<usize>) -> NodeId {
        let n = self.nodes.len();
        mesh.add_host_candidate(addr)
            .expect("loopback host candidate");
        // The application loop's first turn: gathering starts before any peer exists.
        mesh.handle_timeout(self.now);
        if nat.is_none() {
            self.by_addr.insert(addr, n);
        }
        self.nodes.push(Node {
            mesh,
            addr,
            public: addr,
            events: Vec::new(),
            signal_errors: Vec::new(),
            alive: true,
            nat,
        });
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
            node.take_events();
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

    /// The node whose mesh has this unique id.
    pub fn node_of(&self, id: PeerId) -> Option<NodeId> {
        self.nodes
            .iter()
            .position(|n| n.alive && n.mesh.unique_id() == id)
    }

    /// The unique id of node `n`.
    pub fn id(&self, n: NodeId) -> PeerId {
        self.nodes[n].mesh.unique_id()
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
            .mesh
            .add_peer(now, idb, lifetime_ms)
            .expect("add_peer a→b");
        self.nodes[b]
            .mesh
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

    /// Introduces every pair of nodes (a full mesh) or, with a server at node 0, each client to it.
    pub fn introduce_all(&mut self) {
        let n = self.nodes.len();
        let server_mode = n > 0 && self.nodes[0].mesh.mode() == rtcmesh::Mode::Server;
        for a in 0..n {
            for b in (a + 1)..n {
                if !server_mode || a == 0 {
                    self.introduce(a, b);
                }
            }
        }
    }

    /// Drops node `n` off the network: no more datagrams to or from it, no more ticks (a process
    /// that vanished without closing).
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
            .mesh
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
        for (x, y) in [(a, b), (b, a)] {
            self.wire(Host::Node(x), Host::Node(y)).conditions.up = !cut;
        }
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

    /// Drains node `n`'s outputs into the network and the event log. Call after driving a mesh
    /// directly (e.g. `send`) so its datagrams leave.
    pub fn drain(&mut self, n: NodeId) {
        let from_id = self.nodes[n].mesh.unique_id();
        while let Some(t) = self.nodes[n].mesh.poll_transmit() {
            if !self.nodes[n].alive {
                continue;
            }
            // A socket sends from its own address, whatever str0m thinks it is; what leaves a
            // NAT carries the NAT's public address (or the one `rebind` gave the node).
            let source = match self.nodes[n].nat {
                Some(k) => self.nats[k].outbound(self.nodes[n].addr, t.destination),
                None => self.nodes[n].public,
            };
            let datagram = Datagram {
                source,
                destination: t.destination,
                contents: t.contents,
            };
            self.send(Host::Node(n), datagram);
        }
        while let Some(event) = self.nodes[n].mesh.poll_event() {
            match event {
                Event::Signal(s) => {
                    let at = self.now + self.signal_latency;
                    self.schedule(
                        at,
                        SignalDelivery {
                            from: from_id,
                            to: s.to,
                            signal: s.signal,
                        },
                    );
                }
                other => self.nodes[n].events.push(other),
            }
        }
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

    fn schedule(&mut self, at: Instant, delivery: SignalDelivery) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.signals.insert(seq, delivery);
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
            .filter_map(|n| n.mesh.poll_timeout());
        let servers = self.servers.iter().filter_map(|s| s.deadline());
        delivery.into_iter().chain(timers).chain(servers).min()
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
            if let Some(delivery) = self.signals.remove(&seq) {
                self.deliver_signal(delivery);
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
        for n in 0..self.nodes.len() {
            if !self.nodes[n].alive {
                continue;
            }
            if self.nodes[n].mesh.poll_timeout().is_some_and(|t| t <= now) {
                self.nodes[n].mesh.handle_timeout(now);
            }
            self.drain(n);
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
            Some(Host::Node(n)) if self.nodes[n].alive => {
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
                self.nodes[n]
                    .mesh
                    .handle_datagram(now, d.source, destination, &d.contents);
            }
            _ => self.datagrams_dropped += 1,
        }
    }

    /// Puts what server `s` sends on the wire.
    fn server_sends(&mut self, s: usize, out: Vec<crate::turn_server::ServerDatagram>) {
        for (source, destination, contents) in out {
            let datagram = Datagram {
                source,
                destination,
                contents,
            };
            self.send(Host::Server(s), datagram);
        }
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
                if let Err(e) = self.nodes[n].mesh.handle_signal(self.now, d.from, signal) {
                    self.nodes[n].signal_errors.push(e);
                }
            }
            None => self.signals_undeliverable += 1,
        }
    }

    /// Runs until `done` holds or `limit` of simulated time passes; returns whether `done` held.
    /// Bounded in simulated time and in steps.
    pub fn run_until(&mut self, limit: Duration, done: impl FnMut(&World) -> bool) -> bool {
        run_until(self, limit, done)
    }

    /// Tells every alive node the current time, as an application loop does on each iteration
    /// (`handle_timeout(now)` whether or not a deadline is due), so that what the test does
    /// next (e.g. `send`) happens at `now`, not at the node's last event.
    pub fn tick(&mut self) {
        let now = self.now;
        for n in 0..self.nodes.len() {
            if self.nodes[n].alive {
                self.nodes[n].mesh.handle_timeout(now);
                self.drain(n);
            }
        }
    }

    /// Runs for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }

    /// Whether every alive node reports exactly these peers connected (mesh: all others;
    /// server: all clients; client: the server).
    pub fn fully_connected(&self) -> bool {
        let server_mode = self
            .nodes
            .first()
            .is_some_and(|n| n.mesh.mode() == rtcmesh::Mode::Server);
        let alive: Vec<NodeId> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].alive)
            .collect();
        alive.iter().all(|&n| {
            let expected: Vec<PeerId> = if server_mode && n != 0 {
                vec![1]
            } else {
                let mut ids: Vec<PeerId> = alive
                    .iter()
                    .filter(|&&m| m != n)
                    .map(|&m| self.id(m))
                    .collect();
                ids.sort();
                ids
            };
            self.nodes[n].mesh.connected_peers().collect::<Vec<_>>() == expected
        })
    }
}

/// A per-link seed: the world's seed mixed with the link's ends (splitmix64).
fn wire_seed(seed: u64, from: NodeId, to: NodeId) -> u64 {
    let mut z = seed ^ ((from as u64) << 32 | to as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A simulated world with a fake clock: what [`run_until`] needs to drive one.
pub(crate) trait Simulated {
    /// The fake clock.
    fn clock(&mut self) -> &mut Instant;
    /// When the next datagram, signal or timer is due.
    fn next_time(&self) -> Option<Instant>;
    /// Advances to the next due item and handles it.
    fn step(&mut self) -> bool;
    /// Called when a run stops at its deadline, after the clock moved there: tell the nodes the
    /// time, as an application loop would. Nothing by default.
    fn at_deadline(&mut self) {}
}

/// Runs `world` until `done` holds or `limit` of simulated time passes; returns whether `done`
/// held. Bounded in simulated time and in steps. Shared by [`World`] and
/// [`MpWorld`](crate::MpWorld).
pub(crate) fn run_until<W: Simulated>(
    world: &mut W,
    limit: Duration,
    mut done: impl FnMut(&W) -> bool,
) -> bool {
    let deadline = *world.clock() + limit;
    for _ in 0..10_000_000u32 {
        if done(world) {
            return true;
        }
        match world.next_time() {
            Some(next) if next <= deadline => {
                world.step();
            }
            _ => {
                let now = world.clock();
                *now = (*now).max(deadline);
                world.at_deadline();
                return done(world);
            }
        }
    }
    false
}

impl Simulated for World {
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn next_time(&self) -> Option<Instant> {
        World::next_time(self)
    }
    fn step(&mut self) -> bool {
        World::step(self)
    }
    fn at_deadline(&mut self) {
        self.tick();
    }
}
