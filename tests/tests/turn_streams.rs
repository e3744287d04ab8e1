//! TURN over TCP and TLS on the simulated network (`turn:…?transport=tcp`, `turns:`): players
//! whose network lets no UDP out reach the TURN server over a stream the adapter opens, and
//! everyone else reaches them through the relay. The streams are reliable, ordered pipes to the
//! simulated server, which frames them itself; the world plays the TLS handshake and checks
//! the name the certificate is for.

use std::net::SocketAddr;
use std::time::Duration;

use rtcmesh::{
    CandidateKind, Event, IceServer, IceServerError, IceTransportPolicy, Mesh, MeshConfig, PeerId,
    Target, TlsFailure, TransferMode,
};
use rtcmesh_tests::{NodeId, World};

const USER: &str = "player";
const PASSWORD: &str = "s3cret";

fn world_with_server() -> World {
    let mut world = World::new();
    world.add_turn_server(&[(USER, PASSWORD)]);
    world
}

fn listen(world: &World) -> SocketAddr {
    world.servers[0].listen
}

fn turn_tcp(world: &World) -> IceServer {
    IceServer::turn(
        format!("turn:{}?transport=tcp", listen(world)),
        USER,
        PASSWORD,
    )
}

fn turn_udp(world: &World) -> IceServer {
    IceServer::turn(format!("turn:{}", listen(world)), USER, PASSWORD)
}

fn mesh(id: PeerId, servers: Vec<IceServer>) -> Mesh {
    Mesh::create_mesh(id, MeshConfig::default().with_ice_servers(servers)).expect("valid mesh")
}

/// (url, address) of the relayed candidates node `n` gathered.
fn relayed(world: &World, n: NodeId) -> Vec<(String, SocketAddr)> {
    world.nodes[n]
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::CandidateGathered(c) if c.kind == CandidateKind::Relayed => {
                Some((c.url.clone(), c.address))
            }
            _ => None,
        })
        .collect()
}

fn server_failures(world: &World, n: NodeId) -> Vec<IceServerError> {
    world.nodes[n]
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::IceServerFailed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// Sends a reliable packet from `a` to `b` and runs until it arrives (ICE may first have to
/// find a new path: up to `limit`).
fn reliable_arrives_within(
    world: &mut World,
    a: NodeId,
    b: NodeId,
    payload: &[u8],
    limit: Duration,
) -> bool {
    let to = world.id(b);
    world.tick();
    if world.nodes[a]
        .mesh_mut()
        .send(Target::Peer(to), TransferMode::Reliable, 0, payload)
        .is_err()
    {
        return false;
    }
    world.drain(a);
    world.run_until(limit, |w| {
        w.nodes[b].packets().iter().any(|p| p.data == payload)
    })
}

/// Sends one packet of each transfer mode from `a` to `b` and runs until all arrive.
fn every_channel_delivers(world: &mut World, a: NodeId, b: NodeId, tag: &str) -> bool {
    let to = world.id(b);
    world.tick();
    let modes = [
        TransferMode::Reliable,
        TransferMode::UnreliableOrdered,
        TransferMode::Unreliable,
    ];
    let payloads: Vec<Vec<u8>> = modes
        .iter()
        .map(|m| format!("{tag} {m:?}").into_bytes())
        .collect();
    for (mode, payload) in modes.iter().zip(&payloads) {
        if world.nodes[a]
            .mesh_mut()
            .send(Target::Peer(to), *mode, 0, payload)
            .is_err()
        {
            return false;
        }
    }
    world.drain(a);
    world.run_until(Duration::from_secs(5), |w| {
        payloads
            .iter()
            .all(|p| w.nodes[b].packets().iter().any(|got| &got.data == p))
    })
}

#[test]
fn a_player_whose_network_blocks_udp_connects_through_turn_over_tcp() {
    let mut world = world_with_server();
    // The firewalled player tries UDP and TCP; only TCP gets through.
    let firewalled = world.add(mesh(1, vec![turn_udp(&world), turn_tcp(&world)]));
    let open = world.add(mesh(2, vec![]));
    world.block_udp(firewalled, true);
    world.introduce_all();
    assert!(
        world.run_until(Duration::from_secs(20), World::fully_connected),
        "the firewalled player connects"
    );
    // Its relayed candidate came over TCP; the UDP server is unreachable from there (which
    // takes 5 s of retransmissions to tell).
    let candidates = relayed(&world, firewalled);
    assert_eq!(candidates.len(), 1, "{candidates:?}");
    assert!(
        candidates[0].0.ends_with("?transport=tcp"),
        "{candidates:?}"
    );
    world.run_for(Duration::from_secs(6));
    assert_eq!(
        server_failures(&world, firewalled),
        [IceServerError::Unreachable]
    );
    let path = world.nodes[firewalled]
        .mesh()
        .peer(2)
        .and_then(|p| p.path)
        .expect("a path");
    assert_eq!(path.local, CandidateKind::Relayed, "{path}");
    assert_eq!(path.local_address, candidates[0].1);
    assert!(every_channel_delivers(&mut world, firewalled, open, "out"));
    assert!(every_channel_delivers(&mut world, open, firewalled, "in"));
    let stats = world.nodes[firewalled].mesh().stats();
    assert!(stats.datagrams_relayed_sent > 0 && stats.datagrams_relayed_received > 0);
    assert_eq!(
        (stats.turn_streams_broken, stats.turn_stream_frames_oversize),
        (0, 0)
    );
    assert_eq!(
        world.streams_of(firewalled).len(),
        1,
        "one stream for the whole mesh"
    );
    assert!(world.stream_bytes_to_nodes > 0);
}

#[test]
fn one_stream_and_one_allocation_serve_every_peer() {
    let mut world = world_with_server();
    let firewalled = world.add(mesh(1, vec![turn_tcp(&world)]));
    for id in 2..=4 {
        world.add(mesh(id, vec![]));
    }
    world.block_udp(firewalled, true);
    world.introduce_all();
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    assert_eq!(world.streams_of(firewalled).len(), 1);
    assert_eq!(world.servers[0].allocations, 1);
    for peer in 1..4 {
        assert!(every_channel_delivers(
            &mut world, firewalled, peer, "to each"
        ));
    }
}

#[test]
fn with_udp_and_tcp_relays_both_working_ice_prefers_the_udp_relay() {
    let mut world = world_with_server();
    let servers = vec![turn_udp(&world), turn_tcp(&world)];
    let config = MeshConfig::default()
        .with_ice_servers(servers)
        .with_ice_transport_policy(IceTransportPolicy::Relay);
    let a = world.add(Mesh::create_mesh(1, config).expect("mesh"));
    let b = world.add(mesh(2, vec![]));
    // The TCP allocation comes first (UDP is held back a second, within its retransmissions),
    // so being first gives it no edge: only its priority decides.
    world.block_udp(a, true);
    assert!(world.run_until(Duration::from_secs(1), |w| relayed(w, a).len() == 1));
    world.run_for(Duration::from_secs(1));
    world.block_udp(a, false);
    assert!(world.run_until(Duration::from_secs(5), |w| relayed(w, a).len() == 2));
    let candidates = relayed(&world, a);
    assert!(candidates[0].0.contains("transport=tcp"), "{candidates:?}");
    let udp = candidates[1].1;
    world.introduce_all();
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    let path = world.nodes[a]
        .mesh()
        .peer(2)
        .and_then(|p| p.path)
        .expect("path");
    assert_eq!(path.local_address, udp, "{path}");
    assert!(every_channel_delivers(&mut world, a, b, "via udp"));
}

#[test]
fn turns_checks_the_certificate_against_the_url_host() {
    let mut world = world_with_server();
    world.servers[0].tls_name = Some("turn.rtcmesh.test".into());
    let port = listen(&world).port();
    // By address: the certificate is for a name, not for that address.
    let by_address = IceServer::turn(format!("turns:{}", listen(&world)), USER, PASSWORD);
    let wrong = world.add(mesh(1, vec![by_address]));
    // By the certificate's name, resolved by the adapter (here, by hand).
    let by_name = IceServer::turn(format!("turns:turn.rtcmesh.test:{port}"), USER, PASSWORD);
    let right = world.add(mesh(2, vec![by_name]));
    let ip = listen(&world).ip();
    world.nodes[right]
        .mesh_mut()
        .set_ice_server_addresses("turn.rtcmesh.test", &[ip]);
    world.block_udp(wrong, true);
    world.block_udp(right, true);
    world.run_for(Duration::from_secs(2));
    assert_eq!(
        server_failures(&world, wrong),
        [IceServerError::Tls(TlsFailure::NameMismatch)]
    );
    assert!(relayed(&world, wrong).is_empty());
    assert_eq!(
        relayed(&world, right).len(),
        1,
        "{:?}",
        server_failures(&world, right)
    );
    let failure = world.nodes[wrong].events().iter().find_map(|e| match e {
        Event::IceServerFailed { reason, .. } => Some(reason.to_string()),
        _ => None,
    });
    assert!(failure.is_some_and(|f| f.contains("host name")));
}

#[test]
fn a_server_that_refuses_tcp_is_reported_unreachable_at_once() {
    let mut world = world_with_server();
    world.servers[0].accepts_streams = false;
    let a = world.add(mesh(1, vec![turn_tcp(&world)]));
    let start = world.now;
    assert!(
        world.run_until(Duration::from_secs(30), |w| !server_failures(w, a)
            .is_empty())
    );
    assert!(
        world.now - start < Duration::from_secs(1),
        "{:?}",
        world.now - start
    );
    assert_eq!(server_failures(&world, a), [IceServerError::Unreachable]);
}

#[test]
fn a_server_behind_a_black_hole_is_given_up_after_ten_seconds() {
    let mut world = world_with_server();
    // Cut before the node exists: its first connection attempt already goes nowhere.
    world.partition_server(world.nodes.len(), 0, true);
    let a = world.add(mesh(1, vec![turn_tcp(&world)]));
    let start = world.now;
    assert!(
        world.run_until(Duration::from_secs(30), |w| !server_failures(w, a)
            .is_empty())
    );
    let took = world.now - start;
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(11),
        "{took:?}"
    );
    assert_eq!(server_failures(&world, a), [IceServerError::Unreachable]);
    assert!(world.streams_of(a).is_empty(), "the attempt was closed");
}

#[test]
fn wrong_credentials_over_tcp_are_reported_within_a_round_trip() {
    let mut world = world_with_server();
    let wrong = IceServer::turn(
        format!("turn:{}?transport=tcp", listen(&world)),
        USER,
        "wrong",
    );
    let a = world.add(mesh(1, vec![wrong]));
    let start = world.now;
    assert!(
        world.run_until(Duration::from_secs(30), |w| !server_failures(w, a)
            .is_empty())
    );
    assert!(world.now - start < Duration::from_secs(1));
    assert_eq!(server_failures(&world, a), [IceServerError::Unauthorized]);
    // The failed attempt's stream is closed; the next attempt opens a new one later.
    world.run_for(Duration::from_millis(100));
    assert!(world.streams_of(a).is_empty());
}

/// A firewalled player connected to an open one through TURN over TCP, events cleared.
fn connected_over_tcp() -> (World, NodeId, NodeId) {
    let mut world = world_with_server();
    let firewalled = world.add(mesh(1, vec![turn_tcp(&world)]));
    let open = world.add(mesh(2, vec![]));
    world.block_udp(firewalled, true);
    world.introduce_all();
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    for node in &mut world.nodes {
        node.clear_events();
    }
    (world, firewalled, open)
}

#[test]
fn a_server_stream_of_garbage_is_closed_counted_and_replaced() {
    let (mut world, firewalled, open) = connected_over_tcp();
    let first = world.streams_of(firewalled);
    world.inject_on_streams(firewalled, &[0xFF; 64]);
    world.run_for(Duration::from_millis(50));
    assert_eq!(
        server_failures(&world, firewalled),
        [
            IceServerError::InvalidStream,
            IceServerError::AllocationLost
        ]
    );
    assert_eq!(
        world.nodes[firewalled].mesh().stats().turn_streams_broken,
        1
    );
    let second = world.streams_of(firewalled);
    assert_eq!(second.len(), 1, "a new stream");
    assert_ne!(first, second);
    // A new allocation, and the peer is reached again: ICE moves to the new relayed candidate
    // once the checks on the lost one fail (as over UDP: the peer cannot be told it is gone).
    assert!(
        world.run_until(Duration::from_secs(30), |w| relayed(w, firewalled).len()
            == 1)
    );
    let limit = Duration::from_secs(30);
    assert!(reliable_arrives_within(
        &mut world, firewalled, open, b"back", limit
    ));
    assert!(every_channel_delivers(
        &mut world, firewalled, open, "again"
    ));
    assert!(world.nodes[open].disconnected().is_empty(), "never dropped");
}

#[test]
fn a_frame_that_never_ends_closes_the_stream_after_fifteen_seconds() {
    let (mut world, firewalled, _) = connected_over_tcp();
    // ChannelData promising 4,000 bytes, and nothing more: the stream can frame nothing after.
    world.inject_on_streams(firewalled, &[0x40, 0x00, 0x0F, 0xA0, 1, 2, 3]);
    let start = world.now;
    assert!(world.run_until(Duration::from_secs(30), |w| {
        w.nodes[firewalled].mesh().stats().turn_streams_broken == 1
    }));
    let took = world.now - start;
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(16),
        "{took:?}"
    );
    assert_eq!(
        server_failures(&world, firewalled)[0],
        IceServerError::InvalidStream
    );
}

#[test]
fn an_oversize_frame_is_skipped_and_the_stream_goes_on() {
    let (mut world, firewalled, open) = connected_over_tcp();
    // ChannelData of 20,000 bytes on a channel nobody bound (a peer's oversize datagram).
    let mut big = vec![0x40, 0x00];
    big.extend_from_slice(&20_000u16.to_be_bytes());
    big.extend(std::iter::repeat_n(0xEE, 20_000));
    world.inject_on_streams(firewalled, &big);
    world.run_for(Duration::from_millis(50));
    let stats = world.nodes[firewalled].mesh().stats();
    assert_eq!(
        (stats.turn_stream_frames_oversize, stats.turn_streams_broken),
        (1, 0)
    );
    assert!(server_failures(&world, firewalled).is_empty());
    assert!(every_channel_delivers(
        &mut world, open, firewalled, "still"
    ));
}

#[test]
fn a_reset_stream_loses_the_allocation_and_a_new_one_carries_the_peer() {
    let (mut world, firewalled, open) = connected_over_tcp();
    world.reset_streams(firewalled);
    world.run_for(Duration::from_millis(50));
    assert_eq!(
        server_failures(&world, firewalled),
        [IceServerError::AllocationLost]
    );
    assert!(
        world.run_until(Duration::from_secs(30), |w| relayed(w, firewalled).len()
            == 1)
    );
    let limit = Duration::from_secs(30);
    assert!(reliable_arrives_within(
        &mut world, open, firewalled, b"back", limit
    ));
    assert!(every_channel_delivers(
        &mut world,
        open,
        firewalled,
        "after reset"
    ));
    assert!(world.nodes[firewalled].mesh().connected_peers().eq([2]));
    assert!(
        world.nodes[firewalled].disconnected().is_empty(),
        "never dropped"
    );
}

#[test]
fn close_deletes_the_allocation_and_closes_the_stream() {
    let (mut world, firewalled, _) = connected_over_tcp();
    assert_eq!(world.servers[0].relays.len(), 1);
    world.nodes[firewalled].mesh_mut().close();
    world.drain(firewalled);
    world.run_for(Duration::from_millis(100));
    assert!(world.streams_of(firewalled).is_empty());
    assert!(world.servers[0].relays.is_empty(), "deleted");
}
