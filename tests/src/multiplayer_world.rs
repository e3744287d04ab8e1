//! A simulated world for the multiplayer layer: a server and clients, each a [`Multiplayer`]
//! (or a bare [`Mesh`] standing in for a foreign server, to check the bytes on the wire), on a
//! perfect network with a fixed latency and a fake clock.
//!
//! Loss and reordering belong to the mesh tests ([`crate::World`]); here the network only has to
//! carry packets so that stories about relay, peer exchange and authentication read plainly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::{
    AddPeerError, Event, Mesh, MeshConfig, Multiplayer, MultiplayerConfig, MultiplayerEvent,
    Packet, PeerId, Signal, SignalError, Transmit,
};

/// What runs on a node: the multiplayer layer, or a bare mesh whose packets the test reads and
/// writes byte for byte.
#[derive(Debug)]
pub enum Machine {
    /// The layer under test.
    Multiplayer(Box<Multiplayer>),
    /// A mesh without the layer (e.g. a hand-driven server speaking raw SceneMultiplayer bytes).
    Mesh(Box<Mesh>),
}

impl Machine {
    fn mesh(&self) -> &Mesh {
        match self {
            Machine::Multiplayer(mp) => mp.mesh(),
            Machine::Mesh(mesh) => mesh,
        }
    }

    fn mesh_mut(&mut self) -> &mut Mesh {
        match self {
            Machine::Multiplayer(mp) => mp.mesh_mut(),
            Machine::Mesh(mesh) => mesh,
        }
    }

    fn add_peer(&mut self, now: Instant, peer: PeerId) -> Result<(), AddPeerError> {
        match self {
            Machine::Multiplayer(mp) => mp.add_peer(now, peer, 1),
            Machine::Mesh(mesh) => mesh.add_peer(now, peer, 1),
        }
    }

    fn handle_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError> {
        match self {
            Machine::Multiplayer(mp) => mp.handle_signal(now, from, signal),
            Machine::Mesh(mesh) => mesh.handle_signal(now, from, signal),
        }
    }

    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, dest: SocketAddr, d: &[u8]) {
        match self {
            Machine::Multiplayer(mp) => mp.handle_datagram(now, source, dest, d),
            Machine::Mesh(mesh) => mesh.handle_datagram(now, source, dest, d),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Machine::Multiplayer(mp) => mp.handle_timeout(now),
            Machine::Mesh(mesh) => mesh.handle_timeout(now),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Machine::Multiplayer(mp) => mp.poll_timeout(),
            Machine::Mesh(mesh) => mesh.poll_timeout(),
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Machine::Multiplayer(mp) => mp.poll_transmit(),
            Machine::Mesh(mesh) => mesh.poll_transmit(),
        }
    }
}

/// One simulated host and everything it emitted (signals excepted).
#[derive(Debug)]
pub struct MpNode {
    /// What runs here.
    pub machine: Machine,
    /// Its socket address.
    pub addr: SocketAddr,
    /// Events of a multiplayer node, in order.
    pub events: Vec<MultiplayerEvent>,
    /// Events of a bare-mesh node, in order.
    pub mesh_events: Vec<Event>,
    /// Errors returned when the world passed a signal to this node.
    pub signal_errors: Vec<SignalError>,
    /// `false` once the node vanished.
    pub alive: bool,
}

impl MpNode {
    /// The multiplayer layer (panics on a bare-mesh node).
    pub fn mp(&self) -> &Multiplayer {
        match &self.machine {
            Machine::Multiplayer(mp) => mp,
            Machine::Mesh(_) => panic!("node runs a bare mesh"),
        }
    }

    /// The multiplayer layer, mutably (panics on a bare-mesh node).
    pub fn mp_mut(&mut self) -> &mut Multiplayer {
        match &mut self.machine {
            Machine::Multiplayer(mp) => mp,
            Machine::Mesh(_) => panic!("node runs a bare mesh"),
        }
    }

    /// The mesh (underneath the layer, or the bare one).
    pub fn mesh(&self) -> &Mesh {
        self.machine.mesh()
    }

    /// The mesh, mutably: sending with it bypasses the layer, for hand-made bytes.
    pub fn mesh_mut(&mut self) -> &mut Mesh {
        self.machine.mesh_mut()
    }

    /// `send_bytes` payloads received, in order.
    pub fn packets(&self) -> Vec<Packet> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MultiplayerEvent::Packet(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Packets a bare-mesh node received, bytes as they were on the data channel.
    pub fn mesh_packets(&self) -> Vec<Packet> {
        self.mesh_events
            .iter()
            .filter_map(|e| match e {
                Event::Packet(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Ids of `PeerConnected`, in order.
    pub fn connected(&self) -> Vec<PeerId> {
        self.ids(|e| match e {
            MultiplayerEvent::PeerConnected(id) => Some(*id),
            _ => None,
        })
    }

    /// Ids of `PeerDisconnected`, in order.
    pub fn disconnected(&self) -> Vec<PeerId> {
        self.ids(|e| match e {
            MultiplayerEvent::PeerDisconnected(id) => Some(*id),
            _ => None,
        })
    }

    /// Ids of `PeerAuthenticating`, in order.
    pub fn authenticating(&self) -> Vec<PeerId> {
        self.ids(|e| match e {
            MultiplayerEvent::PeerAuthenticating(id) => Some(*id),
            _ => None,
        })
    }

    /// Ids of `PeerAuthenticationFailed`, in order.
    pub fn auth_failed(&self) -> Vec<PeerId> {
        self.ids(|e| match e {
            MultiplayerEvent::PeerAuthenticationFailed(id) => Some(*id),
            _ => None,
        })
    }

    /// `AuthData` received, in order.
    pub fn auth_data(&self) -> Vec<(PeerId, Vec<u8>)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                MultiplayerEvent::AuthData { from, data } => Some((*from, data.clone())),
                _ => None,
            })
            .collect()
    }

    /// Removes and returns the recorded events.
    pub fn take_events(&mut self) -> Vec<MultiplayerEvent> {
        self.mesh_events.clear();
        std::mem::take(&mut self.events)
    }

    fn ids(&self, f: impl Fn(&MultiplayerEvent) -> Option<PeerId>) -> Vec<PeerId> {
        self.events.iter().filter_map(f).collect()
    }
}

/// Something on its way: a datagram on the wire or a signal on the signaling channel.
#[derive(Debug)]
enum InFlight {
    Datagram {
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Signal {
        from: PeerId,
        to: PeerId,
        signal: Signal,
    },
}

/// Nodes, a fake clock, a perfect network (fixed latency, in order) and a signaling channel.
#[derive(Debug)]
pub struct MpWorld {
    /// The fake clock.
    pub now: Instant,
    start: Instant,
    /// The hosts; node 0 is the server in the constructors below.
    pub nodes: Vec<MpNode>,
    /// One-way datagram latency.
    pub latency: Duration,
    /// Signaling latency.
    pub signal_latency: Duration,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, InFlight>,
    next_seq: u64,
    by_addr: HashMap<SocketAddr, usize>,
    /// Directed (from, to) node pairs whose datagrams are dropped.
    cut: HashSet<(usize, usize)>,
}

impl Default for MpWorld {
    fn default() -> Self {
        MpWorld::new()
    }
}

impl MpWorld {
    /// An empty world whose clock starts now (its only clock read).
    pub fn new() -> MpWorld {
        let start = Instant::now();
        MpWorld {
            now: start,
            start,
            nodes: Vec::new(),
            latency: Duration::from_millis(1),
            signal_latency: Duration::from_millis(5),
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            next_seq: 0,
            by_addr: HashMap::new(),
            cut: HashSet::new(),
        }
    }

    /// Node 0 a server, nodes 1.. clients with these ids; each a [`Multiplayer`] with `config`.
    /// Nobody is connected yet: see [`join`](MpWorld::join).
    pub fn server_and_clients(
        client_ids: &[PeerId],
        mesh: &MeshConfig,
        config: &MultiplayerConfig,
    ) -> MpWorld {
        let mut w = MpWorld::new();
        let server = Mesh::create_server(mesh.clone()).expect("server");
        w.add(Machine::Multiplayer(Box::new(Multiplayer::new(
            server,
            config.clone(),
        ))));
        for &id in client_ids {
            w.add_client(id, mesh, config);
        }
        w
    }

    /// Like [`server_and_clients`](MpWorld::server_and_clients) but node 0 is a bare mesh
    /// server: the test plays SceneMultiplayer's server by hand, byte by byte.
    pub fn bare_server_and_clients(
        client_ids: &[PeerId],
        mesh: &MeshConfig,
        config: &MultiplayerConfig,
    ) -> MpWorld {
        let mut w = MpWorld::new();
        let server = Mesh::create_server(mesh.clone()).expect("server");
        w.add(Machine::Mesh(Box::new(server)));
        for &id in client_ids {
            w.add_client(id, mesh, config);
        }
        w
    }

    /// A server and clients, all joined, peer exchange done, events cleared (relay and auth
    /// off or on as `config` says; with auth on, use [`join`](MpWorld::join) instead).
    pub fn star(client_ids: &[PeerId], config: &MultiplayerConfig) -> MpWorld {
        let mut w = MpWorld::server_and_clients(client_ids, &MeshConfig::default(), config);
        for n in 1..w.nodes.len() {
            w.join(n);
        }
        assert!(
            w.run_until(Duration::from_secs(10), MpWorld::everyone_admitted),
            "star {client_ids:?} did not settle"
        );
        for node in &mut w.nodes {
            node.take_events();
        }
        w
    }

    /// Adds a client running the multiplayer layer; returns its node index.
    pub fn add_client(
        &mut self,
        id: PeerId,
        mesh: &MeshConfig,
        config: &MultiplayerConfig,
    ) -> usize {
        let client = Mesh::create_client(id, mesh.clone()).expect("valid client id");
        self.add(Machine::Multiplayer(Box::new(Multiplayer::new(
            client,
            config.clone(),
        ))))
    }

    /// Adds a client that is a bare mesh (the test reads and writes its bytes); returns its
    /// node index.
    pub fn add_bare_client(&mut self, id: PeerId, mesh: &MeshConfig) -> usize {
        let client = Mesh::create_client(id, mesh.clone()).expect("valid client id");
        self.add(Machine::Mesh(Box::new(client)))
    }

    /// Adds a node bound to `127.0.0.<n+1>:5000`; returns its index.
    pub fn add(&mut self, mut machine: Machine) -> usize {
        let n = self.nodes.len();
        let octet = u8::try_from(n + 1).expect("at most 254 nodes");
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)), 5000);
        machine
            .mesh_mut()
            .add_host_candidate(addr)
            .expect("loopback host candidate");
        self.by_addr.insert(addr, n);
        self.nodes.push(MpNode {
            machine,
            addr,
            events: Vec::new(),
            mesh_events: Vec::new(),
            signal_errors: Vec::new(),
            alive: true,
        });
        n
    }

    /// Simulated time since the world was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The unique id of node `n`.
    pub fn id(&self, n: usize) -> PeerId {
        self.nodes[n].mesh().unique_id()
    }

    /// The alive node with this unique id.
    pub fn node_of(&self, id: PeerId) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.alive && n.mesh().unique_id() == id)
    }

    /// Client node `n` and the server (node 0) add each other.
    pub fn join(&mut self, n: usize) {
        self.introduce(0, n);
    }

    /// Nodes `a` and `b` add each other (Godot's `add_peer` on both sides, lifetime 1 ms).
    pub fn introduce(&mut self, a: usize, b: usize) {
        let now = self.now;
        let (ida, idb) = (self.id(a), self.id(b));
        self.nodes[a]
            .machine
            .add_peer(now, idb)
            .expect("add_peer a→b");
        self.nodes[b]
            .machine
            .add_peer(now, ida)
            .expect("add_peer b→a");
        self.drain(a);
        self.drain(b);
    }

    /// Cuts (or restores) the wire from node `from` to node `to`: datagrams sent while it is cut
    /// are lost, as on a link that drops them; SCTP retransmits what was reliable.
    pub fn cut(&mut self, from: usize, to: usize, cut: bool) {
        if cut {
            self.cut.insert((from, to));
        } else {
            self.cut.remove(&(from, to));
        }
    }

    /// Node `n` drops off the network without a word.
    pub fn vanish(&mut self, n: usize) {
        self.nodes[n].alive = false;
    }

    /// Whether every alive multiplayer node has admitted exactly what it should: the server
    /// every alive client, a client the server plus (relay on) every other alive client.
    pub fn everyone_admitted(&self) -> bool {
        let alive: Vec<usize> = (0..self.nodes.len())
            .filter(|&n| self.nodes[n].alive)
            .collect();
        alive.iter().all(|&n| {
            let Machine::Multiplayer(mp) = &self.nodes[n].machine else {
                return true;
            };
            let mut expected: Vec<PeerId> = if n == 0 || mp.is_server_relay_enabled() {
                alive
                    .iter()
                    .filter(|&&m| m != n)
                    .map(|&m| self.id(m))
                    .collect()
            } else {
                vec![self.id(0)]
            };
            expected.sort();
            mp.peers().collect::<Vec<_>>() == expected
        })
    }

    /// Drains node `n`'s datagrams onto the wire and its events into its log. Call after
    /// driving a node directly (e.g. `send_bytes`).
    pub fn drain(&mut self, n: usize) {
        let from = self.id(n);
        while let Some(t) = self.nodes[n].machine.poll_transmit() {
            let to = self.by_addr.get(&t.destination).copied();
            let cut = to.is_some_and(|to| self.cut.contains(&(n, to)));
            if self.nodes[n].alive && !cut {
                let at = self.now + self.latency;
                self.schedule(
                    at,
                    InFlight::Datagram {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents,
                    },
                );
            }
        }
        let mut signals = Vec::new();
        let node = &mut self.nodes[n];
        match &mut node.machine {
            Machine::Multiplayer(mp) => {
                while let Some(e) = mp.poll_event() {
                    match e {
                        MultiplayerEvent::Mesh(Event::Signal(s)) => signals.push(s),
                        other => node.events.push(other),
                    }
                }
            }
            Machine::Mesh(mesh) => {
                while let Some(e) = mesh.poll_event() {
                    match e {
                        Event::Signal(s) => signals.push(s),
                        other => node.mesh_events.push(other),
                    }
                }
            }
        }
        for s in signals {
            let at = self.now + self.signal_latency;
            self.schedule(
                at,
                InFlight::Signal {
                    from,
                    to: s.to,
                    signal: s.signal,
                },
            );
        }
    }

    fn schedule(&mut self, at: Instant, what: InFlight) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert(seq, what);
        self.queue.push(Reverse((at, seq)));
    }

    fn next_time(&self) -> Option<Instant> {
        let arrival = self.queue.peek().map(|Reverse((at, _))| *at);
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.machine.poll_timeout());
        arrival.into_iter().chain(timers).min()
    }

    /// Advances to the next thing that happens and processes everything due then. Returns
    /// `false` when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > now {
                break;
            }
            self.queue.pop();
            match self.in_flight.remove(&seq) {
                Some(InFlight::Datagram {
                    source,
                    destination,
                    contents,
                }) => {
                    if let Some(&n) = self.by_addr.get(&destination) {
                        if self.nodes[n].alive {
                            self.nodes[n].machine.handle_datagram(
                                now,
                                source,
                                destination,
                                &contents,
                            );
                        }
                    }
                }
                Some(InFlight::Signal { from, to, signal }) => {
                    if let Some(n) = self.node_of(to) {
                        if let Err(e) = self.nodes[n].machine.handle_signal(now, from, signal) {
                            self.nodes[n].signal_errors.push(e);
                        }
                    }
                }
                None => {}
            }
        }
        for n in 0..self.nodes.len() {
            if !self.nodes[n].alive {
                continue;
            }
            if self.nodes[n]
                .machine
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.nodes[n].machine.handle_timeout(now);
            }
            self.drain(n);
        }
        true
    }

    /// Runs until `done` holds or `limit` of simulated time passes; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, done: impl FnMut(&MpWorld) -> bool) -> bool {
        crate::sim::run_until(self, limit, done)
    }

    /// Runs for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }
}

impl crate::sim::Simulated for MpWorld {
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn next_time(&self) -> Option<Instant> {
        MpWorld::next_time(self)
    }
    fn step(&mut self) -> bool {
        MpWorld::step(self)
    }
}
