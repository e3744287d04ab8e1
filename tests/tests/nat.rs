//! NAT traversal on the simulated network: peers behind cone and symmetric NATs, a STUN/TURN
//! server on the "public" side, and what the mesh reports about it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rtcmesh::{
    CandidateKind, CreateError, Event, IceServer, IceServerError, IceTransportPolicy,
    InvalidIceServer, LossReason, Mesh, MeshConfig, PeerId, Signal, Target, TransferMode,
};
use rtcmesh_tests::{NatBehavior, NodeId, World};

const USER: &str = "player";
const PASSWORD: &str = "s3cret";

/// A world with one STUN/TURN server that knows `player` / `s3cret`.
fn world_with_server() -> World {
    let mut world = World::new();
    world.add_turn_server(&[(USER, PASSWORD)]);
    world
}

fn stun(world: &World) -> IceServer {
    IceServer::stun(format!("stun:{}", world.servers[0].listen))
}

fn turn(world: &World) -> IceServer {
    IceServer::turn(format!("turn:{}", world.servers[0].listen), USER, PASSWORD)
}

fn with_servers(servers: Vec<IceServer>) -> MeshConfig {
    MeshConfig::default().with_ice_servers(servers)
}

fn mesh(id: PeerId, config: &MeshConfig) -> Mesh {
    Mesh::create_mesh(id, config.clone()).expect("valid mesh")
}

/// The candidates node `n` gathered, by kind.
fn gathered(world: &World, n: NodeId, kind: CandidateKind) -> Vec<SocketAddr> {
    world.nodes[n]
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::CandidateGathered(c) if c.kind == kind => Some(c.address),
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

fn losses(world: &World, n: NodeId) -> Vec<LossReason> {
    world.nodes[n]
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::PeerLost { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// Sends one reliable packet from `a` to `b` and runs until it arrives (5 s at most).
fn packet_arrives(world: &mut World, a: NodeId, b: NodeId, payload: &[u8]) -> bool {
    packet_arrives_within(world, a, b, payload, Duration::from_secs(5))
}

fn packet_arrives_within(
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

#[test]
fn two_cone_nats_connect_directly_through_server_reflexive_candidates() {
    let mut world = world_with_server();
    let config = with_servers(vec![stun(&world)]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::CONE);
    let b = world.add_behind_nat(mesh(2, &config), NatBehavior::CONE);
    world.introduce(a, b);
    assert!(
        world.run_until(Duration::from_secs(10), World::fully_connected),
        "two cone NATs with STUN connect"
    );
    for (n, nat) in [(a, 0), (b, 1)] {
        let srflx = gathered(&world, n, CandidateKind::ServerReflexive);
        assert_eq!(srflx.len(), 1, "one public address per node");
        assert_eq!(srflx[0].ip(), world.nats[nat].public_ip);
        assert!(server_failures(&world, n).is_empty());
    }
    let path = world.nodes[a]
        .mesh()
        .peer(2)
        .and_then(|p| p.path)
        .expect("path");
    assert!(!path.is_relayed(), "direct: {path}");
    assert_eq!(path.local, CandidateKind::Host);
    assert_eq!(path.remote, CandidateKind::ServerReflexive);
    assert_eq!(
        path.remote_address,
        gathered(&world, b, CandidateKind::ServerReflexive)[0]
    );
    assert_eq!(world.servers[0].allocations, 0, "no relay involved");
    assert!(packet_arrives(&mut world, a, b, b"through two NATs"));
}

#[test]
fn without_any_ice_server_two_cone_nats_never_connect_and_say_why() {
    let mut world = World::new();
    let a = world.add_behind_nat(mesh(1, &MeshConfig::default()), NatBehavior::CONE);
    let b = world.add_behind_nat(mesh(2, &MeshConfig::default()), NatBehavior::CONE);
    world.introduce(a, b);
    assert!(!world.run_until(Duration::from_secs(40), World::fully_connected));
    // The offering side (the larger id) gives up after connect_timeout.
    let lost = losses(&world, b);
    let expected = LossReason::ConnectTimeout {
        local_relay: false,
        remote_relay: false,
    };
    assert_eq!(lost, [expected]);
    assert!(expected.to_string().contains("TURN"), "{expected}");
    assert!(
        world.nodes[b].disconnected().is_empty(),
        "never connected: no PeerDisconnected"
    );
}

#[test]
fn a_symmetric_nat_defeats_stun_alone() {
    let mut world = world_with_server();
    let config = with_servers(vec![stun(&world)]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::CONE);
    let b = world.add_behind_nat(mesh(2, &config), NatBehavior::SYMMETRIC);
    world.introduce(a, b);
    assert!(!world.run_until(Duration::from_secs(40), World::fully_connected));
    assert_eq!(
        losses(&world, b),
        [LossReason::ConnectTimeout {
            local_relay: false,
            remote_relay: false
        }]
    );
}

#[test]
fn a_symmetric_nat_connects_through_turn_and_reports_the_relayed_path() {
    let mut world = world_with_server();
    let config = with_servers(vec![stun(&world), turn(&world)]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::CONE);
    let b = world.add_behind_nat(mesh(2, &config), NatBehavior::SYMMETRIC);
    let c = world.add_behind_nat(mesh(3, &config), NatBehavior::CONE);
    world.introduce_all();
    assert!(
        world.run_until(Duration::from_secs(20), World::fully_connected),
        "everyone connects"
    );
    // The symmetric side always relays; the two cone NATs need no relay between them.
    for (from, to) in [(b, 1), (b, 3), (a, 2), (c, 2)] {
        let path = world.nodes[from]
            .mesh()
            .peer(to)
            .and_then(|p| p.path)
            .expect("path");
        assert!(path.is_relayed(), "node {from} to peer {to}: {path}");
    }
    let direct = world.nodes[a]
        .mesh()
        .peer(3)
        .and_then(|p| p.path)
        .expect("path");
    assert!(!direct.is_relayed(), "cone to cone stays direct: {direct}");
    assert!(!gathered(&world, b, CandidateKind::Relayed).is_empty());
    assert!(packet_arrives(&mut world, a, b, b"relayed to b"));
    assert!(packet_arrives(&mut world, b, c, b"relayed from b"));
    let stats = world.nodes[b].mesh().stats();
    assert!(
        stats.datagrams_relayed_sent > 0
            || world.nodes[a].mesh().stats().datagrams_relayed_sent > 0
    );
    assert!(world.servers[0].relayed > 0);
}

#[test]
fn a_symmetric_nat_reaches_a_public_peer_directly() {
    // The public side answers the address the symmetric NAT gave this flow (peer-reflexive).
    let mut world = world_with_server();
    let config = with_servers(vec![stun(&world), turn(&world)]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::SYMMETRIC);
    let p = world.add(mesh(2, &config));
    world.introduce(a, p);
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    assert!(packet_arrives(&mut world, a, p, b"direct"));
    let path = world.nodes[p]
        .mesh()
        .peer(1)
        .and_then(|p| p.path)
        .expect("path");
    assert!(!path.is_relayed(), "{path}");
    assert_eq!(path.remote, CandidateKind::PeerReflexive, "{path}");
}

#[test]
fn relay_policy_relays_every_pair_and_never_shows_a_host_address() {
    let mut world = world_with_server();
    let config = with_servers(vec![stun(&world), turn(&world)])
        .with_ice_transport_policy(IceTransportPolicy::Relay);
    let nodes = [
        world.add(mesh(1, &config)),
        world.add_behind_nat(mesh(2, &config), NatBehavior::CONE),
        world.add(mesh(3, &config)),
    ];
    world.introduce_all();
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    for &n in &nodes {
        for peer in world.nodes[n].mesh().connected_peers().collect::<Vec<_>>() {
            let path = world.nodes[n]
                .mesh()
                .peer(peer)
                .and_then(|p| p.path)
                .expect("path");
            assert_eq!(
                path.local,
                CandidateKind::Relayed,
                "node {n} to {peer}: {path}"
            );
            assert_eq!(
                path.remote,
                CandidateKind::Relayed,
                "node {n} to {peer}: {path}"
            );
        }
        assert!(
            gathered(&world, n, CandidateKind::ServerReflexive).is_empty(),
            "relay only: no public address gathered"
        );
    }
    assert!(packet_arrives(
        &mut world,
        nodes[0],
        nodes[2],
        b"all relayed"
    ));
}

#[test]
fn the_first_offer_already_carries_the_gathered_candidates() {
    let mut world = world_with_server();
    let config = with_servers(vec![stun(&world), turn(&world)]);
    let a = world.add_behind_nat(mesh(2, &config), NatBehavior::CONE);
    // Gathering runs before any peer exists: the mesh asks for its timer with no peer at all.
    assert!(world.nodes[a].mesh().poll_timeout().is_some());
    assert!(world.run_until(Duration::from_secs(1), |w| {
        !gathered(w, a, CandidateKind::Relayed).is_empty()
            && !gathered(w, a, CandidateKind::ServerReflexive).is_empty()
    }));
    let now = world.now;
    let node = &mut world.nodes[a];
    node.mesh_mut().add_peer(now, 1, 1).expect("add_peer");
    let offer = std::iter::from_fn(|| node.mesh_mut().poll_event())
        .find_map(|e| match e {
            Event::Signal(s) => match s.signal {
                Signal::Offer(sdp) => Some(sdp),
                _ => None,
            },
            _ => None,
        })
        .expect("an offer");
    assert!(offer.contains("typ srflx"), "{offer}");
    assert!(offer.contains("typ relay"), "{offer}");
    assert!(offer.contains("typ host"), "{offer}");
}

#[test]
fn candidates_gathered_later_are_trickled_to_peers_already_negotiating() {
    let mut world = world_with_server();
    let config = with_servers(vec![turn(&world)]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::SYMMETRIC);
    let b = world.add_behind_nat(mesh(2, &config), NatBehavior::CONE);
    // Introduced at once: the offer goes out before the relay exists.
    world.introduce(a, b);
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    let path = world.nodes[a]
        .mesh()
        .peer(2)
        .and_then(|p| p.path)
        .expect("path");
    assert!(path.is_relayed(), "{path}");
}

#[test]
fn wrong_credentials_are_reported_within_a_round_trip() {
    let mut world = world_with_server();
    let listen = world.servers[0].listen;
    let config = with_servers(vec![IceServer::turn(
        format!("turn:{listen}"),
        USER,
        "wrong",
    )]);
    let a = world.add(mesh(1, &config));
    let start = world.now;
    assert!(world.run_until(Duration::from_secs(30), |w| {
        !server_failures(w, a).is_empty()
    }));
    assert!(
        world.now - start < Duration::from_secs(1),
        "took {:?}",
        world.now - start
    );
    assert_eq!(server_failures(&world, a), [IceServerError::Unauthorized]);
    let url = world.nodes[a].events().iter().find_map(|e| match e {
        Event::IceServerFailed { url, .. } => Some(url.clone()),
        _ => None,
    });
    assert_eq!(url, Some(format!("turn:{listen}")));
    assert!(gathered(&world, a, CandidateKind::Relayed).is_empty());
}

#[test]
fn an_unreachable_server_is_reported_within_seconds() {
    let mut world = World::new();
    let nobody: SocketAddr = "127.251.0.1:3478".parse().expect("address");
    let config = with_servers(vec![
        IceServer::stun(format!("stun:{nobody}")),
        IceServer::turn(format!("turn:{nobody}"), USER, PASSWORD),
    ]);
    let a = world.add(mesh(1, &config));
    let start = world.now;
    assert!(world.run_until(Duration::from_secs(30), |w| {
        server_failures(w, a).len() == 2
    }));
    assert!(
        world.now - start <= Duration::from_secs(6),
        "took {:?}",
        world.now - start
    );
    assert_eq!(
        server_failures(&world, a),
        [IceServerError::Unreachable, IceServerError::Unreachable]
    );
    // The mesh keeps trying in the background without repeating the event.
    world.run_for(Duration::from_secs(120));
    assert_eq!(server_failures(&world, a).len(), 2);
}

#[test]
fn an_allocation_survives_an_hour() {
    let mut world = world_with_server();
    let config = with_servers(vec![turn(&world)]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::SYMMETRIC);
    let b = world.add_behind_nat(mesh(2, &config), NatBehavior::CONE);
    world.introduce(a, b);
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    let relay = gathered(&world, a, CandidateKind::Relayed);
    let allocations = world.servers[0].allocations;
    for minute in 0..60 {
        world.run_for(Duration::from_secs(60));
        assert!(
            world.fully_connected(),
            "still connected after {minute} min"
        );
    }
    assert_eq!(
        world.servers[0].allocations, allocations,
        "refreshed, never re-made"
    );
    assert_eq!(gathered(&world, a, CandidateKind::Relayed), relay);
    assert!(server_failures(&world, a).is_empty());
    assert!(world.nodes[a].disconnected().is_empty());
    assert!(packet_arrives(&mut world, b, a, b"an hour later"));
}

#[test]
fn a_lost_allocation_is_replaced_and_the_peer_reconnects() {
    let mut world = world_with_server();
    let config = with_servers(vec![turn(&world)]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::SYMMETRIC);
    let b = world.add_behind_nat(mesh(2, &config), NatBehavior::CONE);
    world.introduce(a, b);
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    let first = gathered(&world, a, CandidateKind::Relayed);
    assert_eq!(first.len(), 1);
    // a's router reboots: its mappings, and the allocation made through one, are gone.
    let k = world.nodes[a].nat.expect("behind a NAT");
    world.nats[k].rebind();
    assert!(world.run_until(Duration::from_secs(60), |w| {
        gathered(w, a, CandidateKind::Relayed).len() == 2
    }));
    assert!(server_failures(&world, a).contains(&IceServerError::AllocationLost));
    let second = gathered(&world, a, CandidateKind::Relayed)[1];
    assert_ne!(second, first[0]);
    // ICE moves to pairs that work once the peer's checks on the lost address fail (it cannot
    // be told the address is gone: Godot's signaling has no candidate removal); the peer is
    // never dropped.
    let limit = Duration::from_secs(30);
    assert!(packet_arrives_within(
        &mut world,
        b,
        a,
        b"after the new allocation",
        limit
    ));
    assert!(packet_arrives(&mut world, a, b, b"and back"));
    assert!(world.fully_connected());
    assert!(world.nodes[a].disconnected().is_empty());
    assert!(world.nodes[b].disconnected().is_empty());
    let path = world.nodes[a]
        .mesh()
        .peer(2)
        .and_then(|p| p.path)
        .expect("path");
    assert!(
        path.is_relayed(),
        "a symmetric NAT still needs the relay: {path}"
    );
    assert_ne!(
        path.local_address, first[0],
        "the lost allocation is not used: {path}"
    );
}

#[test]
fn a_restarted_server_is_noticed_and_a_new_allocation_made() {
    let mut world = world_with_server();
    let config = with_servers(vec![turn(&world)]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::SYMMETRIC);
    let b = world.add(mesh(2, &config));
    world.introduce(a, b);
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    world.run_for(Duration::from_secs(60));
    world.servers[0].restart();
    // The next refresh of a permission (every 4 minutes while a peer uses it) or of the
    // allocation itself (29 minutes into its 30) meets "allocation mismatch": the allocation
    // is made again. Here the peers talk directly, so no permission is in use (issue 25.4:
    // those are let go) and the allocation's own refresh finds out.
    assert!(world.run_until(Duration::from_secs(30 * 60), |w| {
        gathered(w, a, CandidateKind::Relayed).len() == 2
    }));
    assert_eq!(server_failures(&world, a), [IceServerError::AllocationLost]);
}

#[test]
fn close_deletes_the_allocation() {
    let mut world = world_with_server();
    let config = with_servers(vec![turn(&world)]);
    let a = world.add(mesh(1, &config));
    assert!(world.run_until(Duration::from_secs(1), |w| {
        !w.servers[0].relays.is_empty()
    }));
    // Wait until the client holds the allocation (the server made it a round trip earlier).
    assert!(world.run_until(Duration::from_secs(1), |w| {
        !gathered(w, a, CandidateKind::Relayed).is_empty()
    }));
    world.nodes[a].mesh_mut().close();
    world.drain(a);
    assert!(world.run_until(Duration::from_secs(1), |w| w.servers[0].relays.is_empty()));
    assert_eq!(
        world.nodes[a].mesh().poll_timeout(),
        None,
        "nothing left to do"
    );
}

#[test]
fn ice_servers_are_checked_when_the_mesh_is_created() {
    let bad = |servers: Vec<IceServer>, policy| {
        let config = MeshConfig::default()
            .with_ice_servers(servers)
            .with_ice_transport_policy(policy);
        match Mesh::create_mesh(1, config) {
            Err(CreateError::IceServer { url, reason }) => (url, reason),
            other => panic!("expected an ICE server error, got {other:?}"),
        }
    };
    let all = IceTransportPolicy::All;
    assert_eq!(
        bad(
            vec![IceServer::turn("turns:127.0.0.1?transport=udp", "u", "p")],
            all
        ),
        (
            "turns:127.0.0.1?transport=udp".into(),
            InvalidIceServer::TlsNotSupported
        )
    );
    assert_eq!(
        bad(vec![IceServer::stun("stuns:127.0.0.1")], all).1,
        InvalidIceServer::TlsNotSupported
    );
    assert_eq!(
        bad(vec![IceServer::turn("turns:127.0.0.1", "", "")], all).1,
        InvalidIceServer::MissingCredentials
    );
    assert_eq!(
        bad(vec![IceServer::stun("stun:127.0.0.1:99999")], all).1,
        InvalidIceServer::BadPort
    );
    assert_eq!(
        bad(vec![IceServer::stun("http://127.0.0.1")], all).1,
        InvalidIceServer::UnknownScheme
    );
    assert_eq!(
        bad(vec![IceServer::turn("turn:127.0.0.1", "", "")], all).1,
        InvalidIceServer::MissingCredentials
    );
    assert_eq!(
        bad(
            vec![IceServer::stun("stun:127.0.0.1")],
            IceTransportPolicy::Relay
        )
        .1,
        InvalidIceServer::RelayWithoutTurn
    );
    let error = Mesh::create_mesh(
        1,
        with_servers(vec![IceServer::turn("turn:127.0.0.1:0", "u", "p")]),
    )
    .expect_err("refused");
    assert!(error.to_string().contains("turn:127.0.0.1:0"), "{error}");
    // TURN over TCP and TLS are taken (they are reached over streams the adapter opens).
    for url in [
        "turn:127.0.0.1?transport=tcp",
        "turns:127.0.0.1",
        "turns:turn.example.org:443?transport=tcp",
    ] {
        assert!(
            Mesh::create_mesh(1, with_servers(vec![IceServer::turn(url, "u", "p")])).is_ok(),
            "{url}"
        );
    }
}

#[test]
fn host_names_wait_for_the_adapter_to_resolve_them() {
    let mut world = world_with_server();
    let listen = world.servers[0].listen;
    let config = with_servers(vec![
        IceServer::turn(
            format!("turn:turn.example.test:{}", listen.port()),
            USER,
            PASSWORD,
        ),
        IceServer::stun("stun:nowhere.example.test"),
    ]);
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::CONE);
    assert_eq!(
        world.nodes[a].mesh().ice_server_hosts(),
        ["turn.example.test", "nowhere.example.test"]
    );
    world.run_for(Duration::from_secs(1));
    assert!(
        gathered(&world, a, CandidateKind::Relayed).is_empty(),
        "no DNS in the core"
    );
    let ip: IpAddr = listen.ip();
    world.nodes[a]
        .mesh_mut()
        .set_ice_server_addresses("Turn.Example.Test", &[ip]);
    world.nodes[a]
        .mesh_mut()
        .set_ice_server_addresses("nowhere.example.test", &[]);
    world.drain(a);
    assert!(world.run_until(Duration::from_secs(1), |w| {
        !gathered(w, a, CandidateKind::Relayed).is_empty()
    }));
    assert_eq!(server_failures(&world, a), [IceServerError::Unresolved]);
    assert_eq!(
        world.nodes[a].mesh().ice_server_hosts(),
        ["nowhere.example.test"]
    );
}

#[test]
fn ice_servers_bypass_the_allowlist_and_relayed_peers_are_checked_by_their_address() {
    let mut world = world_with_server();
    // Peers are allowed at the NATs' public addresses only; the server (127.250.0.1) is not on
    // the list, and is used anyway, as configuration.
    let config = with_servers(vec![turn(&world)])
        .with_remote_allowlist(Some(vec!["127.200.0.0/16".parse().expect("prefix")]));
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::SYMMETRIC);
    let b = world.add_behind_nat(mesh(2, &config), NatBehavior::CONE);
    world.introduce(a, b);
    // a relays; b sees a only at the relayed address, which is the server's: not allowed, so
    // they cannot connect, and b says it saw candidates it refused.
    world.run_for(Duration::from_secs(10));
    assert!(
        !gathered(&world, a, CandidateKind::Relayed).is_empty(),
        "server bypassed the list"
    );
    assert!(!world.fully_connected());
    assert!(world.nodes[b].mesh().stats().candidates_not_allowed > 0);
    // Allowing the relay's address lets them connect; a checks b by b's own address.
    let mut world = world_with_server();
    let config = with_servers(vec![turn(&world)]).with_remote_allowlist(Some(vec![
        "127.200.0.0/16".parse().expect("prefix"),
        "127.250.0.0/16".parse().expect("prefix"),
    ]));
    let a = world.add_behind_nat(mesh(1, &config), NatBehavior::SYMMETRIC);
    let b = world.add_behind_nat(mesh(2, &config), NatBehavior::CONE);
    world.introduce(a, b);
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
}

/// Issue 25.4: a relay-only host (a game server hiding its address) counted the TURN
/// permissions it ever asked for, not those in use: once players with a few extra candidates
/// had come and gone, 256 peer addresses in all, nobody new could reach it.
#[test]
fn a_relay_only_host_keeps_accepting_players_long_after_many_have_come_and_gone() {
    let mut world = world_with_server();
    let config =
        with_servers(vec![turn(&world)]).with_ice_transport_policy(IceTransportPolicy::Relay);
    let host = world.add(Mesh::create_server(config).expect("server"));
    assert!(world.run_until(Duration::from_secs(5), |w| {
        !gathered(w, host, CandidateKind::Relayed).is_empty()
    }));
    // Eleven players in turn, each also naming 30 addresses of interfaces the host cannot reach
    // (as a player with many interfaces does): the host's relay asks a permission for each,
    // 341 peer addresses in two minutes.
    for (round, id) in (2..13).enumerate() {
        let player = world.add(Mesh::create_client(id, MeshConfig::default()).expect("client"));
        world.introduce(host, player);
        assert!(
            world.run_until(Duration::from_secs(20), |w| {
                w.nodes[host].connected().contains(&id) && w.nodes[player].connected().contains(&1)
            }),
            "player {id} connects ({} peer addresses seen before it)",
            round * 31
        );
        for i in 0..30 {
            let unreachable =
                format!("candidate:{i} 1 udp 2122260223 127.201.{round}.{i} 9 typ host");
            let now = world.now;
            world.nodes[host]
                .mesh_mut()
                .handle_signal(now, id, Signal::Candidate(unreachable))
                .expect("candidate");
        }
        world.drain(host);
        world.run_for(Duration::from_secs(10));
        let hello = format!("hello from player {id}");
        assert!(packet_arrives(&mut world, player, host, hello.as_bytes()));
        // The player leaves.
        assert!(world.nodes[host].mesh_mut().disconnect_peer(id, true));
        world.nodes[player].mesh_mut().close();
        world.drain(player);
        world.vanish(player);
    }
    // Players keep coming after the host has long forgotten the others' addresses.
    world.run_for(Duration::from_secs(10 * 60));
    let late = world.add(Mesh::create_client(50, MeshConfig::default()).expect("client"));
    world.introduce(host, late);
    assert!(world.run_until(Duration::from_secs(20), |w| {
        w.nodes[host].connected().contains(&50) && w.nodes[late].connected().contains(&1)
    }));
    assert!(packet_arrives(&mut world, late, host, b"still open"));
}

/// Issue 25: `datagrams_sent` counted only what links emitted, not the mesh's own STUN and
/// TURN requests, while `datagrams_received` counted everything: a mesh that only talks to
/// its ICE servers showed answers received and nothing sent.
#[test]
fn datagrams_sent_and_received_both_count_ice_server_traffic() {
    let mut world = world_with_server();
    let config = with_servers(vec![stun(&world), turn(&world)]);
    let a = world.add(mesh(1, &config));
    world.run_for(Duration::from_secs(30));
    assert!(!gathered(&world, a, CandidateKind::Relayed).is_empty());
    let stats = world.nodes[a].mesh().stats();
    assert!(stats.datagrams_received > 0);
    // Only a and the server on the wire, nothing lost: every datagram delivered is one a sent
    // or received (a's last requests may still be on their way).
    let counted = stats.datagrams_sent + stats.datagrams_received;
    let delivered = world.datagrams_delivered;
    assert!(
        (delivered..=delivered + 2).contains(&counted),
        "{counted} counted, {delivered} delivered: {stats:?}"
    );
}
