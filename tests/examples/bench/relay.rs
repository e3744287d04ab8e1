//! The relay-cost section of the benchmark (`cargo run --release --example bench relay`): the
//! same transfer direct and through a TURN allocation (turn-server-proto in memory), timing only
//! the sending mesh's own calls.

use super::*;

/// The sender writes until SCTP refuses (no rtcmesh queue in front), so both runs send the
/// same way whatever the queue does.
fn mesh_config_no_queue() -> MeshConfig {
    mesh_config().with_max_queued_bytes(0)
}

/// A mesh whose calls are timed, with what it handled.
struct Timed {
    /// The mesh, and what it delivered and signalled (drained as the other benchmarks do).
    side: MeshSide,
    /// CPU in every call, and in the two that see each datagram: `handle_datagram` (a relayed
    /// one is unwrapped there) and `poll_transmit` (a relayed one is wrapped there).
    spent: Duration,
    receiving: Duration,
    sending: Duration,
    received: u64,
    sent: u64,
}

impl Timed {
    fn new(id: PeerId, peer: PeerId, n: u32, config: MeshConfig, now: Instant) -> Timed {
        let mut mesh = Mesh::create_mesh(id, config).expect("mesh");
        mesh.add_host_candidate(addr(n)).expect("candidate");
        mesh.handle_timeout(now);
        Timed {
            side: MeshSide {
                mesh,
                peer,
                address: addr(n),
                delivered: 0,
                connected: false,
                signals: Vec::new(),
            },
            spent: Duration::ZERO,
            receiving: Duration::ZERO,
            sending: Duration::ZERO,
            received: 0,
            sent: 0,
        }
    }
    fn drain(&mut self) {
        self.side.drain();
    }
    fn receive(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        let t = Instant::now();
        self.side
            .mesh
            .handle_datagram(now, source, self.side.address, contents);
        let took = t.elapsed();
        self.spent += took;
        self.receiving += took;
        self.received += 1;
        self.drain();
    }
    fn tick(&mut self, now: Instant) {
        let t = Instant::now();
        self.side.mesh.handle_timeout(now);
        self.spent += t.elapsed();
        self.drain();
    }
    fn transmit(&mut self) -> Option<rtcmesh::Transmit> {
        let t = Instant::now();
        let out = self.side.mesh.poll_transmit();
        let took = t.elapsed();
        self.spent += took;
        self.sending += took;
        self.sent += u64::from(out.is_some());
        out
    }
    fn write(&mut self, data: &[u8]) -> bool {
        let t = Instant::now();
        let ok = self
            .side
            .mesh
            .send(
                Target::Peer(self.side.peer),
                TransferMode::Reliable,
                0,
                data,
            )
            .is_ok();
        self.spent += t.elapsed();
        ok
    }
}

/// Two timed meshes, with or without a TURN server between them.
struct RelayNet {
    a: Timed,
    b: Timed,
    server: Option<rtcmesh_tests::SimTurnServer>,
    now: Instant,
    /// The last datagram that reached `a` from its peer (through the server if relayed), and
    /// where from.
    last_to_a: Option<(SocketAddr, Vec<u8>)>,
}

impl RelayNet {
    /// `a` (id 2, the sender) reaches `b` directly, or only through its allocation.
    fn new(relayed: bool) -> RelayNet {
        let now = Instant::now();
        let listen = addr(100);
        let mut config = mesh_config_no_queue();
        let server = relayed.then(|| {
            config.ice_servers = vec![rtcmesh::IceServer::turn(
                format!("turn:{listen}"),
                "bench",
                "bench",
            )];
            config.ice_transport_policy = rtcmesh::IceTransportPolicy::Relay;
            rtcmesh_tests::SimTurnServer::new(listen, &[("bench", "bench")], now)
        });
        let mut net = RelayNet {
            a: Timed::new(2, 1, 1, config, now),
            b: Timed::new(1, 2, 2, mesh_config_no_queue(), now),
            server,
            now,
            last_to_a: None,
        };
        while !net.a.side.mesh.ice_gathering_complete() {
            assert!(net.step(), "allocation stalled");
        }
        net.a.side.mesh.add_peer(net.now, 1, 1).expect("peer");
        net.b.side.mesh.add_peer(net.now, 2, 1).expect("peer");
        net.a.drain();
        net.b.drain();
        while !(net.a.side.connected && net.b.side.connected) {
            for s in std::mem::take(&mut net.a.side.signals) {
                net.b
                    .side
                    .mesh
                    .handle_signal(net.now, 2, s.signal)
                    .expect("signal");
            }
            net.b.drain();
            for s in std::mem::take(&mut net.b.side.signals) {
                net.a
                    .side
                    .mesh
                    .handle_signal(net.now, 1, s.signal)
                    .expect("signal");
            }
            net.a.drain();
            assert!(net.step(), "pair stalled while connecting");
        }
        net
    }

    /// Delivers `contents` sent from `from` to whoever owns `to` (through the server if it is
    /// the server's).
    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, contents: &[u8]) {
        if let Some(server) = self.server.as_mut().filter(|s| s.owns(to)) {
            let mut out = Vec::new();
            server.receive(self.now, from, to, contents, &mut out);
            for (f, t, data) in out {
                self.deliver(f, t, &data);
            }
        } else if to == self.a.side.address {
            // A relayed data datagram: ChannelData (0x40..) around a DTLS record.
            if contents.len() > 100 && contents[0] & 0xC0 == 0x40 {
                self.last_to_a = Some((from, contents.to_vec()));
            }
            self.a.receive(self.now, from, contents);
        } else if to == self.b.side.address {
            self.b.receive(self.now, from, contents);
        }
    }

    fn step(&mut self) -> bool {
        let mut moved = false;
        while let Some(t) = self.a.transmit() {
            self.deliver(self.a.side.address, t.destination, &t.contents);
            moved = true;
        }
        while let Some(t) = self.b.transmit() {
            self.deliver(self.b.side.address, t.destination, &t.contents);
            moved = true;
        }
        if moved {
            return true;
        }
        let server_at = self.server.as_ref().and_then(|s| s.deadline());
        let Some(next) = [
            self.a.side.mesh.poll_timeout(),
            self.b.side.mesh.poll_timeout(),
            server_at,
        ]
        .into_iter()
        .flatten()
        .min() else {
            return false;
        };
        self.now = next.max(self.now);
        let now = self.now;
        if let Some(server) = self.server.as_mut().filter(|s| s.deadline() <= Some(now)) {
            let mut out = Vec::new();
            server.poll(now, &mut out);
            for (f, t, data) in out {
                self.deliver(f, t, &data);
            }
        }
        self.a.tick(now);
        self.b.tick(now);
        true
    }

    /// Sends `count` reliable messages of `size` bytes from `a` to `b`; returns what `a`
    /// spent.
    fn transfer(&mut self, size: usize, count: usize) -> Spent {
        let payload = vec![0x42u8; size];
        let before = Spent::of(&self.a);
        let delivered = self.b.side.delivered;
        let mut sent = 0;
        while self.b.side.delivered - delivered < count {
            while sent < count && self.a.write(&payload) {
                sent += 1;
            }
            if !self.step() {
                break;
            }
        }
        let after = Spent::of(&self.a);
        Spent {
            total: after.total - before.total,
            receiving: after.receiving - before.receiving,
            sending: after.sending - before.sending,
            received: after.received - before.received,
            sent: after.sent - before.sent,
        }
    }
}

/// CPU one mesh spent over a transfer, and the datagrams it handled.
#[derive(Debug, Clone, Copy)]
struct Spent {
    total: Duration,
    receiving: Duration,
    sending: Duration,
    received: u64,
    sent: u64,
}

impl Spent {
    fn of(t: &Timed) -> Spent {
        Spent {
            total: t.spent,
            receiving: t.receiving,
            sending: t.sending,
            received: t.received,
            sent: t.sent,
        }
    }
    fn per_datagram(&self) -> f64 {
        self.total.as_secs_f64() * 1e9 / (self.received + self.sent).max(1) as f64
    }
    fn per_sent(&self) -> f64 {
        self.sending.as_secs_f64() * 1e9 / self.sent.max(1) as f64
    }
}

/// CPU per `handle_datagram` of the relayed mesh for one datagram its peer sent through the
/// relay, given as it arrives (ChannelData from the server, unwrapped first) and given already
/// unwrapped (from the peer to the relayed address: the path after unwrapping), in alternating
/// batches, best of five each; the unwrapped one twice, for the noise floor. The same replayed
/// bytes every time, so str0m's own work is the same in all three.
fn unwrap_cost(net: &mut RelayNet, rounds: usize) -> (f64, f64, f64) {
    let (server, wrapped) = net.last_to_a.clone().expect("a relayed datagram reached a");
    let len = usize::from(u16::from_be_bytes([wrapped[2], wrapped[3]]));
    let inner = wrapped[4..4 + len].to_vec();
    let relay = net
        .a
        .side
        .mesh
        .local_candidates()
        .find(|c| c.kind == rtcmesh::CandidateKind::Relayed)
        .expect("relayed candidate")
        .address;
    let (now, me, peer) = (net.now, net.a.side.address, net.b.side.address);
    let mesh = &mut net.a.side.mesh;
    let mut batch = |from: SocketAddr, to: SocketAddr, bytes: &[u8]| {
        let t = Instant::now();
        for _ in 0..rounds {
            mesh.handle_datagram(now, from, to, bytes);
        }
        t.elapsed().as_secs_f64() * 1e9 / rounds as f64
    };
    let (mut w, mut u, mut u2) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..5 {
        w = w.min(batch(server, me, &wrapped));
        u = u.min(batch(peer, relay, &inner));
        u2 = u2.min(batch(peer, relay, &inner));
    }
    (u, w, u2)
}

pub fn relay_cost(quick: bool) {
    println!("\n## Relay cost (a mesh's CPU per datagram, direct vs through its TURN allocation)");
    // A second direct pair measured the same way gives the noise floor of each comparison.
    let mut direct = RelayNet::new(false);
    let mut control = RelayNet::new(false);
    let mut relayed = RelayNet::new(true);
    let count = if quick { 5_000 } else { 30_000 };
    let size = 1_200;
    for net in [&mut direct, &mut control, &mut relayed] {
        net.transfer(size, count / 10);
    }
    let (mut d, mut c, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        d.push(direct.transfer(size, count));
        c.push(control.transfer(size, count));
        r.push(relayed.transfer(size, count));
    }
    let best =
        |runs: &[Spent], f: fn(&Spent) -> f64| runs.iter().map(f).fold(f64::INFINITY, f64::min);
    let rounds = if quick { 50_000 } else { 300_000 };
    let (unwrapped, wrapped, again) = unwrap_cost(&mut relayed, rounds);
    println!("| per datagram | direct | relayed | extra | relayed ÷ direct | noise floor: the direct figure measured again, ÷ direct |");
    println!("|---|---|---|---|---|---|");
    let row = |what: &str, dv: f64, rv: f64, cv: f64| {
        println!(
            "| {what} | {dv:.0} ns | {rv:.0} ns | **{:.0} ns** | {:.2}× | {:.2}× |",
            rv - dv,
            rv / dv,
            cv / dv
        );
    };
    row(
        "sent, 1,200 B reliable (`poll_transmit`; relayed: wrapped in ChannelData)",
        best(&d, Spent::per_sent),
        best(&r, Spent::per_sent),
        best(&c, Spent::per_sent),
    );
    row(
        "received, one replayed 1,200 B datagram (`handle_datagram`; relayed: ChannelData unwrapped first)",
        unwrapped,
        wrapped,
        again,
    );
    row(
        "every call of a 1,200 B reliable transfer, per datagram (str0m's work included)",
        best(&d, Spent::per_datagram),
        best(&r, Spent::per_datagram),
        best(&c, Spent::per_datagram),
    );
    let stats = relayed.a.side.mesh.stats();
    assert!(
        stats.datagrams_relayed_sent > 0 && stats.datagrams_relayed_received > 0,
        "the relayed run went through the relay: {stats:?}"
    );
}
