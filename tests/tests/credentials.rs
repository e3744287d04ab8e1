//! Short-lived TURN credentials on the simulated network: a game whose minted credential
//! expires while it plays. The TURN server here refuses an expired username for new
//! allocations and lets allocations made with it live on, as coturn does with
//! `use-auth-secret`.

use std::net::SocketAddr;
use std::time::Duration;

use rtcmesh::{
    CandidateKind, CredentialsError, Event, IceServer, IceServerError, InvalidIceServer, Mesh,
    MeshConfig, PeerId, Target, TransferMode,
};
use rtcmesh_tests::{NatBehavior, NodeId, World};

/// What the signaling server minted at join, and an hour later.
const FIRST: (&str, &str) = ("1767225600:ann", "Zmlyc3Q=");
const RENEWED: (&str, &str) = ("1767229200:ann", "cmVuZXdlZA==");

/// A world whose TURN server accepts both of ann's credentials (until the first expires).
fn world() -> World {
    let mut world = World::new();
    world.add_turn_server(&[FIRST, RENEWED]);
    world
}

fn turn(world: &World, (username, credential): (&str, &str)) -> IceServer {
    IceServer::turn(
        format!("turn:{}", world.servers[0].listen),
        username,
        credential,
    )
}

fn mesh(id: PeerId, servers: Vec<IceServer>) -> Mesh {
    Mesh::create_mesh(id, MeshConfig::default().with_ice_servers(servers)).expect("valid mesh")
}

/// Ann, behind a symmetric NAT, can only be reached through her relay; Bob, behind a cone NAT,
/// has no TURN server of his own. They play.
fn a_game(world: &mut World) -> (NodeId, NodeId) {
    let stun = IceServer::stun(format!("stun:{}", world.servers[0].listen));
    let ann = world.add_behind_nat(mesh(1, vec![turn(world, FIRST)]), NatBehavior::SYMMETRIC);
    let bob = world.add_behind_nat(mesh(2, vec![stun]), NatBehavior::CONE);
    world.introduce(ann, bob);
    assert!(world.run_until(Duration::from_secs(20), World::fully_connected));
    assert!(packet_arrives(world, bob, ann, b"through ann's relay"));
    (ann, bob)
}

fn relayed(world: &World, n: NodeId) -> Vec<SocketAddr> {
    world.nodes[n]
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::CandidateGathered(c) if c.kind == CandidateKind::Relayed => Some(c.address),
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

/// Sends one reliable packet from `a` to `b` and runs until it arrives (`limit` at most).
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

fn packet_arrives(world: &mut World, a: NodeId, b: NodeId, payload: &[u8]) -> bool {
    packet_arrives_within(world, a, b, payload, Duration::from_secs(5))
}

/// An hour into the game ann's first credential expires; her router then reboots, and her
/// allocation (made through the old mapping) is gone.
fn expire_and_lose_the_allocation(world: &mut World, ann: NodeId) {
    world.servers[0].expired.push(FIRST.0.to_owned());
    let k = world.nodes[ann].nat.expect("behind a NAT");
    world.nats[k].rebind();
}

fn renew(world: &mut World, ann: NodeId) {
    let renewed = turn(world, RENEWED);
    let now = world.now;
    world.nodes[ann]
        .mesh_mut()
        .set_ice_server_credentials(now, &renewed)
        .expect("the mesh's own server");
    world.drain(ann);
}

#[test]
fn renewed_credentials_keep_the_game_going_after_the_first_ones_expire() {
    let mut world = world();
    let (ann, bob) = a_game(&mut world);
    let allocations = world.servers[0].allocations;
    // Fresh credentials arrive before the first expire: nothing changes on the wire, the
    // allocation keeps its username and keeps relaying.
    renew(&mut world, ann);
    world.run_for(Duration::from_secs(60));
    assert_eq!(world.servers[0].allocations, allocations);
    assert!(packet_arrives(&mut world, bob, ann, b"same allocation"));
    // The first credential expires: the allocation made with it lives on (refreshes and new
    // permissions on it are not checked again).
    world.servers[0].expired.push(FIRST.0.to_owned());
    world.run_for(Duration::from_secs(10 * 60));
    assert!(world.fully_connected());
    assert_eq!(world.servers[0].allocations, allocations);
    // Ann's router reboots: the new allocation is made with the renewed credential.
    let k = world.nodes[ann].nat.expect("behind a NAT");
    world.nats[k].rebind();
    assert!(world.run_until(Duration::from_secs(60), |w| { relayed(w, ann).len() == 2 }));
    assert_eq!(
        world.servers[0].refused_expired, 0,
        "never tried the old one"
    );
    assert_eq!(
        server_failures(&world, ann),
        [IceServerError::AllocationLost]
    );
    let limit = Duration::from_secs(30);
    assert!(packet_arrives_within(
        &mut world,
        bob,
        ann,
        b"the game goes on",
        limit
    ));
    assert!(packet_arrives(&mut world, ann, bob, b"and back"));
    assert!(world.nodes[ann].disconnected().is_empty());
    assert!(world.nodes[bob].disconnected().is_empty());
}

#[test]
fn without_renewal_the_player_sees_unauthorized_and_fresh_credentials_bring_the_relay_back() {
    let mut world = world();
    let (ann, bob) = a_game(&mut world);
    expire_and_lose_the_allocation(&mut world, ann);
    // The new allocation is refused: what the game sees.
    assert!(world.run_until(Duration::from_secs(60), |w| {
        server_failures(w, ann).contains(&IceServerError::Unauthorized)
    }));
    assert_eq!(
        server_failures(&world, ann),
        [IceServerError::AllocationLost, IceServerError::Unauthorized]
    );
    let url = world.nodes[ann]
        .events()
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::IceServerFailed { url, .. } => Some(url.clone()),
            _ => None,
        });
    assert_eq!(url, Some(format!("turn:{}", world.servers[0].listen)));
    assert_eq!(relayed(&world, ann).len(), 1, "no new relay");
    // Fresh credentials (`join` asks the signaling server for them on this event): the relay
    // is made again at once, not after the 15 s wait before the next attempt.
    let asked = world.now;
    renew(&mut world, ann);
    assert!(world.run_until(Duration::from_secs(60), |w| { relayed(w, ann).len() == 2 }));
    assert!(
        world.now - asked < Duration::from_secs(2),
        "took {:?}",
        world.now - asked
    );
    let limit = Duration::from_secs(30);
    assert!(packet_arrives_within(
        &mut world,
        bob,
        ann,
        b"back in the game",
        limit
    ));
    assert_eq!(world.servers[0].refused_expired, 1);
}

#[test]
fn credentials_for_servers_the_mesh_does_not_have_are_refused_and_change_nothing() {
    let world = world();
    let listen = world.servers[0].listen;
    let mut mesh = mesh(1, vec![turn(&world, FIRST)]);
    let now = world.now;
    // The same server written differently (the default port) is the same server.
    let same = IceServer::turn(format!("turn:{}", listen.ip()), RENEWED.0, RENEWED.1);
    assert_eq!(listen.port(), 3478);
    assert_eq!(mesh.set_ice_server_credentials(now, &same), Ok(()));
    let other = format!("turn:{}:3479", listen.ip());
    let both = IceServer {
        urls: vec![format!("turn:{listen}"), other.clone()],
        username: "x".into(),
        credential: "y".into(),
    };
    assert_eq!(
        mesh.set_ice_server_credentials(now, &both),
        Err(CredentialsError::NotConfigured { url: other })
    );
    let stun = format!("stun:{listen}");
    assert_eq!(
        mesh.set_ice_server_credentials(now, &IceServer::turn(stun.clone(), "x", "y")),
        Err(CredentialsError::NotTurn { url: stun })
    );
    let refused = mesh.set_ice_server_credentials(now, &IceServer::turn("turn:", "x", "y"));
    assert!(
        matches!(
            refused,
            Err(CredentialsError::Invalid {
                reason: InvalidIceServer::BadHost,
                ..
            })
        ),
        "{refused:?}"
    );
    let no_urls = IceServer {
        urls: vec![],
        username: "x".into(),
        credential: "y".into(),
    };
    assert_eq!(
        mesh.set_ice_server_credentials(now, &no_urls),
        Err(CredentialsError::Invalid {
            url: String::new(),
            reason: InvalidIceServer::NoUrls
        })
    );
    // Every message says what to do.
    let shown = CredentialsError::NotConfigured {
        url: "turn:x".into(),
    }
    .to_string();
    assert!(shown.contains("new mesh"), "{shown}");
    mesh.close();
    assert_eq!(
        mesh.set_ice_server_credentials(now, &same),
        Err(CredentialsError::Closed)
    );
}

#[test]
fn over_udp_a_server_holding_the_refused_username_for_a_minute_is_waited_out_without_a_false_alarm()
{
    let mut world = world();
    // coturn's way: after refusing ann's expired username, it answers 437 to an Allocate from
    // her address with any other for 60 s.
    world.servers[0].holds_refused_usernames = true;
    let (ann, _bob) = a_game(&mut world);
    expire_and_lose_the_allocation(&mut world, ann);
    assert!(world.run_until(Duration::from_secs(60), |w| {
        server_failures(w, ann).contains(&IceServerError::Unauthorized)
    }));
    let refused = world.now;
    renew(&mut world, ann);
    assert!(world.run_until(Duration::from_secs(180), |w| { relayed(w, ann).len() == 2 }));
    let waited = world.now - refused;
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(66),
        "relayed again {waited:?} after the refusal"
    );
    assert!(world.servers[0].held >= 1, "the server did hold it");
    // The game saw why (the expired credential), and no 437 for what was only a wait.
    assert_eq!(
        server_failures(&world, ann),
        [IceServerError::AllocationLost, IceServerError::Unauthorized]
    );
}

#[test]
fn a_flood_of_new_credentials_costs_the_turn_server_at_most_one_allocate_a_second() {
    let mut world = world();
    let (ann, _bob) = a_game(&mut world);
    expire_and_lose_the_allocation(&mut world, ann);
    assert!(world.run_until(Duration::from_secs(60), |w| {
        server_failures(w, ann).contains(&IceServerError::Unauthorized)
    }));
    // A hostile signaling server sends new (worthless) credentials every 10 ms for 3 s.
    let before = world.servers[0].signed_allocates;
    let url = format!("turn:{}", world.servers[0].listen);
    for i in 0..300 {
        let flood = IceServer::turn(url.clone(), format!("flood-{i}"), "x");
        let now = world.now;
        world.nodes[ann]
            .mesh_mut()
            .set_ice_server_credentials(now, &flood)
            .expect("its own server");
        world.drain(ann);
        world.run_for(Duration::from_millis(10));
    }
    let attempts = world.servers[0].signed_allocates - before;
    assert!((1..=4).contains(&attempts), "{attempts} Allocates in 3 s");
}
