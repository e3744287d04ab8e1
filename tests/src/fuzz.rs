//! The bodies of the cargo-fuzz targets in `fuzz/`, as plain functions: libFuzzer drives them
//! from `fuzz/fuzz_targets/*.rs`, and `tests/tests/fuzz_bodies.rs` drives them with seeded
//! random inputs in every `cargo test`. Each takes arbitrary bytes and must never panic; each
//! also checks that the machines it attacks keep working.
//!
//! Set-up that costs milliseconds (connecting peers: one `Rtc` takes about 1 ms to build) is
//! done once per thread and reused across inputs, so the fuzzer runs at thousands of inputs per
//! second; every input must leave that state working, which the bodies assert.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use rtcmesh::lobby::{
    ConnectOptions, LobbyClient, LobbyMessage, LobbyServer, LobbyServerConfig, Migration,
};
use rtcmesh::{Event, Mesh, MeshConfig, MultiplayerConfig, PeerId, Signal, Target, TransferMode};

use crate::World;

thread_local! {
    static MESH_WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
    static AWAITING: RefCell<Option<(Mesh, Mesh)>> = const { RefCell::new(None) };
    static MP_WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
    static COMMANDS: RefCell<Vec<Option<Mesh>>> = const { RefCell::new(Vec::new()) };
    static RELAY_WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// A connected 3-peer mesh reused across inputs (ids 1, 2, 3).
fn with_mesh_world<R>(f: impl FnOnce(&mut World) -> R) -> R {
    MESH_WORLD.with(|cell| {
        let mut slot = cell.borrow_mut();
        let world =
            slot.get_or_insert_with(|| World::connected_mesh(&[1, 2, 3], &MeshConfig::default()));
        f(world)
    })
}

/// Every node still reaches every other on the reliable channel.
fn assert_mesh_works(world: &mut World) {
    let probe = b"probe";
    for n in 0..world.nodes.len() {
        world.nodes[n].clear_events();
    }
    world.nodes[0]
        .mesh_mut()
        .send(Target::All, TransferMode::Reliable, 0, probe)
        .expect("probe send");
    world.drain(0);
    let arrived = world.run_until(Duration::from_secs(2), |w| {
        w.nodes[1..]
            .iter()
            .all(|n| n.packets().iter().any(|p| p.data == probe))
    });
    assert!(
        arrived,
        "connected peers stopped delivering after fuzz input"
    );
    for node in &world.nodes {
        assert!(
            node.disconnected().is_empty(),
            "a peer was lost: {:?}",
            node.disconnected()
        );
    }
}

fn address(u: &mut Unstructured<'_>) -> arbitrary::Result<SocketAddr> {
    let ip = if bool::arbitrary(u)? {
        IpAddr::from(<[u8; 4]>::arbitrary(u)?)
    } else {
        IpAddr::from(<[u8; 16]>::arbitrary(u)?)
    };
    Ok(SocketAddr::new(ip, u16::arbitrary(u)?))
}

/// Datagrams from arbitrary (or spoofed peer) sources into a connected mesh.
pub fn datagram(data: &[u8]) {
    with_mesh_world(|world| {
        let mut u = Unstructured::new(data);
        let count = u.int_in_range(1..=8u8).unwrap_or(1);
        for _ in 0..count {
            let Ok(to) = u.int_in_range(0..=2usize) else {
                break;
            };
            let source = match u.int_in_range(0..=3u8) {
                Ok(k @ 0..=2) => world.nodes[usize::from(k)].addr,
                _ => address(&mut u).unwrap_or(world.nodes[0].addr),
            };
            let len = u.arbitrary_len::<u8>().unwrap_or(0).min(2048);
            let bytes = u.bytes(len).unwrap_or(&[]);
            let node = &mut world.nodes[to];
            let addr = node.addr;
            node.mesh_mut()
                .handle_datagram(world.now, source, addr, bytes);
            world.drain(to);
        }
        assert_mesh_works(world);
    });
}

/// A mesh awaiting an offer from peer 1 and one awaiting an answer from peer 3.
fn fresh_negotiators() -> (Mesh, Mesh) {
    let now = Instant::now();
    let mut answerer = Mesh::create_mesh(2, MeshConfig::default()).expect("mesh");
    answerer
        .add_host_candidate("127.0.0.1:5000".parse().expect("addr"))
        .expect("candidate");
    answerer.add_peer(now, 3, 1).expect("peer"); // 3 > 2: waits for 3's offer
    let mut offerer = Mesh::create_mesh(2, MeshConfig::default()).expect("mesh");
    offerer
        .add_host_candidate("127.0.0.1:5001".parse().expect("addr"))
        .expect("candidate");
    offerer.add_peer(now, 1, 1).expect("peer"); // 2 > 1: offers, waits for 1's answer
    (answerer, offerer)
}

/// Arbitrary text as signals: through the decoder, as an offer to a peer awaiting one, as an
/// answer to a peer that offered, as a candidate / any signal to a connected peer, and each of
/// its lines as a trickled candidate (a flood against `max_remote_candidates`).
pub fn signal(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let _ = Signal::decode(&text);
    match selector % 5 {
        0 | 1 => AWAITING.with(|cell| {
            let mut slot = cell.borrow_mut();
            let (answerer, offerer) = slot.get_or_insert_with(fresh_negotiators);
            let now = Instant::now();
            let consumed = if selector % 5 == 0 {
                let _ = answerer.handle_signal(now, 3, Signal::Offer(text));
                // A garbage offer leaves the peer waiting; an accepted one ends the wait.
                answerer.has_peer(3)
                    && std::iter::from_fn(|| answerer.poll_event())
                        .any(|e| matches!(e, Event::Signal(_)))
            } else {
                let _ = offerer.handle_signal(now, 1, Signal::Answer(text));
                !offerer.has_peer(1) || offerer.poll_timeout().is_none()
            };
            if consumed || !answerer.has_peer(3) || !offerer.has_peer(1) {
                *slot = None;
            }
        }),
        2 => with_mesh_world(|world| {
            let _ = world.nodes[0]
                .mesh_mut()
                .handle_signal(world.now, 2, Signal::Candidate(text));
            world.drain(0);
            assert_mesh_works(world);
        }),
        3 => with_mesh_world(|world| {
            for line in text.lines().take(64) {
                let candidate = Signal::Candidate(line.to_owned());
                let _ = world.nodes[0]
                    .mesh_mut()
                    .handle_signal(world.now, 2, candidate);
            }
            world.drain(0);
            assert_mesh_works(world);
        }),
        _ => with_mesh_world(|world| {
            if let Ok(signal) = Signal::decode(&text) {
                let _ = world.nodes[1]
                    .mesh_mut()
                    .handle_signal(world.now, 3, signal);
                world.drain(1);
                assert_mesh_works(world);
            }
        }),
    }
}

/// The lobby protocol: frames into the decoder and a client, and a sequence of connection
/// events and frames into a server.
pub fn lobby(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = LobbyMessage::decode(&text);
    let _ = LobbyMessage::parse_candidate(&text);
    let mut client = LobbyClient::new("", true);
    let _ = client.handle_text(&text);
    let _ = client.handle_text(&text);
    // A client that opted in to host migration, fed the same frame after an id.
    let mut client = LobbyClient::new("", false).with_migration(Migration::Eligible);
    let _ = client.handle_text(r#"{"type":8,"id":0,"data":"migrate/1"}"#);
    let _ = client.handle_text(r#"{"type":1,"id":5,"data":""}"#);
    for _ in 0..2 {
        if client.handle_text(&text).is_ok() {
            let _ = client.hand_over_message(None);
            let _ = client.host_lost_message();
        }
    }

    #[derive(Arbitrary, Debug)]
    enum Op {
        Connect(u8),
        /// With `?migrate=…`: off, follow or eligible.
        ConnectMigrating(u8, u8),
        /// HOST_CHANGE (9) or HOST_LOST (10) with a small epoch.
        Migrate(u8, bool, i64, u8),
        Pong(u8),
        Text(u8, String),
        Join(u8, bool, String),
        Signal(u8, u8, i64, String),
        Binary(u8),
        Oversized(u8),
        Disconnect(u8),
        Advance(u16),
    }
    let mut u = Unstructured::new(data);
    let config = LobbyServerConfig::default()
        .with_max_peers(8)
        .with_max_lobbies(3)
        .with_max_lobby_size(3)
        .with_max_lobbies_per_address(2)
        .with_member_idle_timeout(Some(Duration::from_millis(500)))
        .with_handoff_unknown_lobbies(data.first().is_some_and(|b| b & 1 == 1));
    let mut server = LobbyServer::new(config, 1);
    let mut epochs = std::collections::HashMap::new();
    let start = Instant::now();
    let mut now = start;
    for _ in 0..32 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        let conn = |c: u8| u64::from(c % 10);
        match op {
            Op::Connect(c) => server.connect(now, conn(c), [127, 0, 0, c % 3].into()),
            Op::ConnectMigrating(c, m) => {
                let target = ["/", "/?migrate=follow", "/?migrate=1"][usize::from(m % 3)];
                let options = ConnectOptions::from_request_target(target);
                server.connect_with(now, conn(c), [127, 0, 0, c % 3].into(), options);
            }
            Op::Migrate(c, lost, to, epoch) => {
                let kind = if lost { 10 } else { 9 };
                let json = format!(r#"{{"type":{kind},"id":{to},"data":"{}"}}"#, epoch % 4);
                server.handle_text(now, conn(c), &json);
            }
            Op::Pong(c) => server.handle_pong(conn(c)),
            Op::Text(c, t) => server.handle_text(now, conn(c), &t),
            Op::Join(c, mesh, name) => {
                let m =
                    LobbyMessage::new(rtcmesh::lobby::MessageKind::Join, i64::from(!mesh), name);
                server.handle_text(now, conn(c), &m.encode());
            }
            Op::Signal(c, kind, to, body) => {
                let json = format!(r#"{{"type":{},"id":{to},"data":{:?}}}"#, kind % 13, body);
                server.handle_text(now, conn(c), &json);
            }
            Op::Binary(c) => server.handle_binary(conn(c)),
            Op::Oversized(c) => server.handle_oversized(conn(c)),
            Op::Disconnect(c) => server.disconnect(conn(c)),
            Op::Advance(ms) => now += Duration::from_millis(u64::from(ms)),
        }
        server.handle_timeout(now);
        while let Some(out) = server.poll_output() {
            match out {
                // Whatever is sent must be a well-formed protocol frame.
                rtcmesh::lobby::ServerOutput::Send { text, .. } => {
                    LobbyMessage::decode(&text).expect("the server sends valid frames");
                }
                // Never two hosts in one epoch: each host change starts a newer epoch.
                rtcmesh::lobby::ServerOutput::HostChanged { name, epoch, .. } => {
                    let last = epochs.insert(name, epoch);
                    assert!(last.is_none_or(|last| last < epoch), "epoch went back");
                }
                _ => {}
            }
        }
        assert!(server.connection_count() <= 8 && server.lobby_count() <= 3);
    }
}

/// Hand-made SceneMultiplayer bytes (SYS, RAW, RELAY, anything) from any *client* of a server
/// with three clients, sent beneath the layer; afterwards a relayed packet still gets through
/// and nobody was dropped. (The server is trusted by its clients: a DEL_PEER from it is an
/// order, not an attack, so the server does not send fuzz.)
pub fn multiplayer(data: &[u8]) {
    MP_WORLD.with(|cell| {
        let mut slot = cell.borrow_mut();
        let world =
            slot.get_or_insert_with(|| World::star(&[2, 3, 4], &MultiplayerConfig::default()));
        let mut u = Unstructured::new(data);
        for _ in 0..u.int_in_range(1..=6u8).unwrap_or(1) {
            let Ok(from) = u.int_in_range(1..=3usize) else {
                break;
            };
            let target = match u.int_in_range(0..=4u8) {
                Ok(0) => Target::All,
                Ok(k @ 1..=3) => Target::Peer(PeerId::from(k) + 1),
                _ => Target::from(i32::arbitrary(&mut u).unwrap_or(0)),
            };
            let mode = match u.int_in_range(0..=2u8) {
                Ok(0) => TransferMode::Unreliable,
                Ok(1) => TransferMode::UnreliableOrdered,
                _ => TransferMode::Reliable,
            };
            let len = u.arbitrary_len::<u8>().unwrap_or(1).clamp(1, 512);
            let mut bytes = u.bytes(len).unwrap_or(&[7]).to_vec();
            if bytes.is_empty() {
                bytes.push(7);
            }
            // Steer half the inputs to the SYS and RAW commands.
            if bool::arbitrary(&mut u).unwrap_or(false) {
                bytes[0] = if bool::arbitrary(&mut u).unwrap_or(false) {
                    7
                } else {
                    3
                };
            }
            let _ = world.nodes[from].mesh_mut().send(target, mode, 0, &bytes);
            world.drain(from);
        }
        world.run_for(Duration::from_millis(20));
        for node in &mut world.nodes {
            node.clear_events();
        }
        // Client 2 still reaches client 4 through the server, with its true id.
        world.nodes[1]
            .mp_mut()
            .send_bytes(Target::Peer(4), TransferMode::Reliable, 0, b"probe")
            .expect("probe");
        world.drain(1);
        let ok = world.run_until(Duration::from_secs(2), |w| {
            w.nodes[3]
                .packets()
                .iter()
                .any(|p| p.from == 2 && p.data == b"probe")
        });
        assert!(ok, "relay stopped working after fuzz input");
        assert!(
            world.everyone_admitted(),
            "a peer was lost after fuzz input"
        );
    });
}

/// A duration as a configuration may hold one: zero, small, large, or `Duration::MAX`.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Span {
    Zero,
    Millis(u16),
    Secs(u32),
    Max,
}

impl Span {
    fn get(self) -> Duration {
        match self {
            Span::Zero => Duration::ZERO,
            Span::Millis(ms) => Duration::from_millis(u64::from(ms)),
            Span::Secs(s) => Duration::from_secs(u64::from(s)),
            Span::Max => Duration::MAX,
        }
    }
}

/// Every duration and limit of `MeshConfig`, arbitrary (most combinations are refused with
/// a typed error; none may panic, at creation or later).
#[derive(Arbitrary, Debug)]
struct Settings {
    connect_timeout: Span,
    connect_retry_interval: Span,
    disconnect_grace: Span,
    peer_timeout: Span,
    stun_max_rto: Span,
    max_remote_candidates: u8,
    max_refused_channels: u8,
    max_sdp_len: u16,
    max_candidate_len: u16,
    renegotiation_burst: u8,
    renegotiation_interval: Span,
    ice_restart_after: Option<Span>,
    ice_restart_interval: Span,
    max_ice_restarts: u8,
    peer_move_after: Span,
    stats_interval: Option<Span>,
    max_mdns_names: u8,
    max_mdns_queries: u8,
    mdns_timeout: Span,
}

impl Settings {
    fn config(&self) -> MeshConfig {
        MeshConfig::default()
            .with_channels([TransferMode::Unreliable])
            .with_connect_timeout(self.connect_timeout.get())
            .with_connect_retry_interval(self.connect_retry_interval.get())
            .with_disconnect_grace(self.disconnect_grace.get())
            .with_peer_timeout(self.peer_timeout.get())
            .with_stun_max_rto(self.stun_max_rto.get())
            .with_limits(
                rtcmesh::Limits::default()
                    .with_max_remote_candidates(usize::from(self.max_remote_candidates))
                    .with_max_refused_channels(u32::from(self.max_refused_channels))
                    .with_max_sdp_len(usize::from(self.max_sdp_len))
                    .with_max_candidate_len(usize::from(self.max_candidate_len))
                    .with_renegotiation_burst(u32::from(self.renegotiation_burst))
                    .with_renegotiation_interval(self.renegotiation_interval.get())
                    .with_max_mdns_names(usize::from(self.max_mdns_names))
                    .with_max_mdns_queries(usize::from(self.max_mdns_queries))
                    .with_mdns_timeout(self.mdns_timeout.get()),
            )
            .with_ice_restart_after(self.ice_restart_after.map(Span::get))
            .with_ice_restart_interval(self.ice_restart_interval.get())
            .with_max_ice_restarts(u32::from(self.max_ice_restarts))
            .with_peer_move_after(self.peer_move_after.get())
            .with_stats_interval(self.stats_interval.map(Span::get))
    }
}

/// A fresh machine of this mode (0 server, 1 client, 2 mesh) with `config`.
fn machine(mode: usize, config: MeshConfig) -> Result<Mesh, rtcmesh::CreateError> {
    let mut m = match mode {
        0 => Mesh::create_server(config),
        1 => Mesh::create_client(5, config),
        _ => Mesh::create_mesh(5, config),
    }?;
    m.add_host_candidate("127.0.0.1:5000".parse().expect("addr"))
        .expect("candidate");
    Ok(m)
}

/// Messages of rtcmesh's own retransmission (a length byte, then the message), as if they
/// arrived on a peer's hidden channel: frames decoded, acknowledgements applied to what it sent,
/// fragments reordered and reassembled, time passing. The receiver's bounds must hold.
pub fn reliable(data: &[u8]) {
    rtcmesh::_internal_test_exports::reliable_messages(data);
}

/// Arbitrary API calls against one machine per mode (kept across inputs, replaced once closed
/// or crowded).
pub fn commands(data: &[u8]) {
    #[derive(Arbitrary, Debug)]
    enum Command {
        AddPeer(i8, i32),
        AddPeerAnyId(i32),
        RemovePeer(i8),
        DisconnectPeer(i8, bool),
        Send(i32, u8, u16, u16),
        Signal(i8, u8, String),
        Datagram(Vec<u8>),
        Advance(u16),
        Refuse(bool),
        Close,
        /// The socket moves from one host address to another (`move_host_candidate`).
        MoveHost(u8, u8, u16),
        /// Replace the machine with one built from arbitrary durations and limits.
        Recreate(Settings),
        /// Jump the clock by 2^k seconds (towards the end of `Instant`'s range).
        Jump(u8),
        /// A peer trickles a candidate behind one of a few `.local` names.
        MdnsCandidate(i8, u8, u16),
        /// The adapter answers: the next query (or an arbitrary peer and name), with an
        /// address or "not resolved".
        MdnsAnswer(Option<(i8, u8)>, Option<[u8; 4]>),
    }
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.int_in_range(0..=2usize) else {
        return;
    };
    COMMANDS.with(|cell| {
        let mut machines = cell.borrow_mut();
        if machines.is_empty() {
            machines.resize_with(3, || None);
        }
        let slot = &mut machines[mode];
        let default = || {
            machine(
                mode,
                MeshConfig::default().with_channels([TransferMode::Unreliable]),
            )
            .expect("valid")
        };
        let mut now = Instant::now();
        for _ in 0..24 {
            let Ok(command) = Command::arbitrary(&mut u) else {
                break;
            };
            let mesh = slot.get_or_insert_with(default);
            match command {
                Command::AddPeer(id, lifetime) => {
                    if mesh.peers().count() < 4 {
                        let _ = mesh.add_peer(now, PeerId::from(id), lifetime);
                    }
                }
                Command::AddPeerAnyId(id) => {
                    // Ids outside the valid range must be refused before any work is done.
                    if !rtcmesh::is_valid_peer_id(id) {
                        assert!(mesh.add_peer(now, id, 1).is_err());
                    }
                }
                Command::RemovePeer(id) => {
                    mesh.remove_peer(PeerId::from(id));
                }
                Command::DisconnectPeer(id, force) => {
                    mesh.disconnect_peer(PeerId::from(id), force);
                }
                Command::Send(target, mode, channel, len) => {
                    let mode = TransferMode::try_from(i64::from(mode % 4))
                        .unwrap_or(TransferMode::Reliable);
                    let payload =
                        vec![0xA5; usize::from(len) + 65_000 * usize::from(len == u16::MAX)];
                    let _ = mesh.send(Target::from(target), mode, channel % 4, &payload);
                }
                Command::Signal(from, kind, text) => {
                    let signal = match kind % 3 {
                        0 => Signal::Offer(text),
                        1 => Signal::Answer(text),
                        _ => Signal::Candidate(text),
                    };
                    let _ = mesh.handle_signal(now, PeerId::from(from), signal);
                }
                Command::Datagram(bytes) => {
                    mesh.handle_datagram(
                        now,
                        "127.0.0.9:9".parse().expect("addr"),
                        "127.0.0.1:5000".parse().expect("addr"),
                        &bytes,
                    );
                }
                Command::Advance(ms) => {
                    let by = Duration::from_millis(u64::from(ms));
                    now = now.checked_add(by).unwrap_or(now);
                    mesh.handle_timeout(now);
                }
                Command::Refuse(refuse) => mesh.set_refuse_new_connections(refuse),
                Command::Close => mesh.close(),
                Command::MoveHost(from, to, port) => {
                    let old = std::net::SocketAddr::from(([127, 0, 0, from], 5000));
                    let new = std::net::SocketAddr::from(([127, 0, 0, to], port));
                    let _ = mesh.move_host_candidate(now, old, new);
                }
                Command::Recreate(settings) => match machine(mode, settings.config()) {
                    Ok(fresh) => *mesh = fresh,
                    Err(rtcmesh::CreateError::InvalidConfig(_)) => {}
                    Err(e) => panic!("a configuration may only be refused as invalid: {e}"),
                },
                Command::Jump(k) => {
                    let by = Duration::from_secs(1u64 << (k % 64));
                    now = now.checked_add(by).unwrap_or(now);
                    mesh.handle_timeout(now);
                }
                Command::MdnsCandidate(from, name, port) => {
                    let name = name % 16;
                    let c = format!("candidate:{name} 1 udp 1 n{name}.local {port} typ host");
                    let _ = mesh.handle_signal(now, PeerId::from(from), Signal::Candidate(c));
                }
                Command::MdnsAnswer(which, ip) => {
                    let (peer, name) = match which {
                        Some((peer, name)) => (PeerId::from(peer), format!("n{}.local", name % 16)),
                        // Nothing asked: an answer nobody waits for (ignored).
                        None => mesh
                            .poll_mdns_query()
                            .map_or((0, String::new()), |q| (q.peer, q.name)),
                    };
                    let ip = ip.map(std::net::IpAddr::from);
                    let _ = mesh.resolved_mdns(now, peer, &name, ip);
                }
            }
            while mesh.poll_transmit().is_some() {}
            while let Some(event) = mesh.poll_event() {
                if let Event::Packet(p) = event {
                    panic!("no peer can be connected here, yet a packet arrived: {p:?}");
                }
            }
            // Invariants any sequence keeps.
            assert!(mesh.connected_peers().count() <= mesh.peers().count());
            assert!(mesh.peers().all(rtcmesh::is_valid_peer_id));
        }
        let finished = slot.as_ref().is_some_and(|mesh| {
            mesh.status() == rtcmesh::ConnectionStatus::Disconnected && mesh.peers().count() == 0
        });
        if finished {
            *slot = None;
        }
    });
}

/// A symmetric-NAT peer (node 0) connected to a public one (node 1) only through its TURN
/// allocation on the world's server, reused across inputs.
fn with_relay_world<R>(f: impl FnOnce(&mut World) -> R) -> R {
    RELAY_WORLD.with(|cell| {
        let mut slot = cell.borrow_mut();
        let world = slot.get_or_insert_with(|| {
            let mut world = World::new();
            world.add_turn_server(&[("fuzz", "fuzz")]);
            let listen = world.servers[0].listen;
            let config = MeshConfig::default()
                .with_ice_servers(vec![rtcmesh::IceServer::turn(
                    format!("turn:{listen}"),
                    "fuzz",
                    "fuzz",
                )])
                .with_ice_transport_policy(rtcmesh::IceTransportPolicy::Relay);
            world.add_behind_nat(
                Mesh::create_mesh(1, config.clone()).expect("mesh"),
                crate::NatBehavior::SYMMETRIC,
            );
            world.add(Mesh::create_mesh(2, MeshConfig::default()).expect("mesh"));
            world.introduce_all();
            assert!(
                world.run_until(Duration::from_secs(10), World::fully_connected),
                "relayed pair did not connect"
            );
            world
        });
        f(world)
    })
}

/// Datagrams that claim to come from the configured TURN server (spoofed, or a broken
/// server): raw bytes, ChannelData for any channel, STUN messages of any type. The relayed
/// connection must keep working.
pub fn ice_server(data: &[u8]) {
    with_relay_world(|world| {
        let mut u = Unstructured::new(data);
        let server = world.servers[0].listen;
        let count = u.int_in_range(1..=8u8).unwrap_or(1);
        for _ in 0..count {
            let len = u.arbitrary_len::<u8>().unwrap_or(0).min(1500);
            let body = u.bytes(len).unwrap_or(&[]).to_vec();
            let bytes = match u.int_in_range(0..=2u8).unwrap_or(0) {
                0 => body,
                1 => {
                    // ChannelData: channel 0x4000..=0x7FFF, a length that may lie.
                    let channel = u.int_in_range(0x4000..=0x7FFFu16).unwrap_or(0x4000);
                    let claimed = u16::arbitrary(&mut u).unwrap_or(body.len() as u16);
                    let mut b = channel.to_be_bytes().to_vec();
                    b.extend_from_slice(&claimed.to_be_bytes());
                    b.extend_from_slice(&body);
                    b
                }
                _ => {
                    // A STUN header (any method and class, the magic cookie, any transaction)
                    // around arbitrary attributes.
                    let kind = u16::arbitrary(&mut u).unwrap_or(0x0111) & 0x3FFF;
                    let mut b = kind.to_be_bytes().to_vec();
                    b.extend_from_slice(&(body.len() as u16).to_be_bytes());
                    b.extend_from_slice(&0x2112_A442u32.to_be_bytes());
                    b.extend_from_slice(&<[u8; 12]>::arbitrary(&mut u).unwrap_or([0; 12]));
                    b.extend_from_slice(&body);
                    b
                }
            };
            let node = &mut world.nodes[0];
            let addr = node.addr;
            node.mesh_mut()
                .handle_datagram(world.now, server, addr, &bytes);
            world.drain(0);
        }
        // The relayed pair still delivers, both ways.
        for (from, to) in [(0, 1), (1, 0)] {
            for n in 0..world.nodes.len() {
                world.nodes[n].clear_events();
            }
            let peer = world.id(to);
            world.tick();
            world.nodes[from]
                .mesh_mut()
                .send(Target::Peer(peer), TransferMode::Reliable, 0, b"probe")
                .expect("probe send");
            world.drain(from);
            let arrived = world.run_until(Duration::from_secs(5), |w| {
                w.nodes[to].packets().iter().any(|p| p.data == b"probe")
            });
            assert!(
                arrived,
                "the relayed pair stopped delivering after fuzz input"
            );
        }
        for node in &world.nodes {
            assert!(
                node.disconnected().is_empty(),
                "a peer was lost: {:?}",
                node.disconnected()
            );
        }
    });
}

/// What a TURN server may write on the TCP/TLS stream of a mesh that reaches it over one
/// (`turn:…?transport=tcp`): arbitrary bytes in arbitrary chunks, over arbitrary time. The
/// mesh must never panic, hold at most one frame's worth of them, and either keep the stream
/// or close it (and, later, open a new one).
pub fn turn_stream(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = MeshConfig::default().with_ice_servers(vec![rtcmesh::IceServer::turn(
        "turn:203.0.113.1:3478?transport=tcp",
        "fuzz",
        "fuzz",
    )]);
    let mut mesh = Mesh::create_mesh(1, config).expect("mesh");
    let start = Instant::now();
    mesh.add_host_candidate("192.0.2.1:5000".parse().expect("address"))
        .expect("host");
    mesh.handle_timeout(start);
    let Some(rtcmesh::StreamCommand::Open { id, .. }) = mesh.poll_stream_command() else {
        panic!("a TCP TURN server is reached over a stream");
    };
    mesh.handle_stream(start, id, rtcmesh::StreamInput::Opened);
    let mut now = start;
    let mut closed = false;
    let mut rest = data;
    while !rest.is_empty() && !closed {
        let take = usize::from(u.arbitrary::<u8>().unwrap_or(255)).max(1) * 16;
        let (chunk, after) = rest.split_at(take.min(rest.len()));
        rest = after;
        now += Duration::from_millis(u64::from(u.arbitrary::<u8>().unwrap_or(0)) * 20);
        mesh.handle_timeout(now);
        mesh.handle_stream(now, id, rtcmesh::StreamInput::Data(chunk));
        while let Some(command) = mesh.poll_stream_command() {
            if command == (rtcmesh::StreamCommand::Close { id }) {
                closed = true;
            }
        }
        while mesh.poll_transmit().is_some() {}
    }
    // However it ended, the mesh carries on: a closed stream is followed by a new one.
    let stats = mesh.stats();
    assert_eq!(
        closed,
        stats.turn_streams_broken > 0 || closed_by_answer(&mut mesh)
    );
    let later = now + Duration::from_secs(3600);
    mesh.handle_timeout(later);
    assert!(
        mesh.poll_timeout().is_some(),
        "the server is still being tried"
    );
    while mesh.poll_event().is_some() {}
}

/// Whether the mesh reported a failure that closes the stream (a refusal it read in a frame).
fn closed_by_answer(mesh: &mut Mesh) -> bool {
    let mut failed = false;
    while let Some(event) = mesh.poll_event() {
        failed |= matches!(event, Event::IceServerFailed { .. });
    }
    failed
}
