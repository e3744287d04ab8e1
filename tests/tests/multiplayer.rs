//! The multiplayer layer (Godot's SceneMultiplayer) end to end: relay, peer exchange,
//! authentication, the relay switch, every security rule, and the bytes on the wire.
//!
//! Clients use scattered ids so that an id is never confused with a node index.

use std::time::Duration;

use rtcmesh::{
    AuthError, ConnectionStatus, MeshConfig, Multiplayer, MultiplayerConfig, Packet, PeerId,
    SendError, Target, TransferMode,
};
use rtcmesh_tests::{Feed, LinkConditions, World};
use str0m_netem::{NetemConfig, Probability, RandomLoss};

const A: PeerId = 17;
const B: PeerId = 42;
const C: PeerId = 99;
const D: PeerId = 1234;
const SETTLE: Duration = Duration::from_millis(200);
const LIMIT: Duration = Duration::from_secs(10);

fn node(w: &World, id: PeerId) -> usize {
    w.node_of(id).expect("node with this id")
}

/// `send_bytes`, reliable on channel 0, then the datagrams leave.
fn send(w: &mut World, from: PeerId, target: Target, data: &[u8]) {
    let n = node(w, from);
    w.nodes[n]
        .mp_mut()
        .send_bytes(target, TransferMode::Reliable, 0, data)
        .expect("send_bytes");
    w.drain(n);
}

/// Hand-made bytes straight onto the data channel, below the multiplayer layer.
fn raw(w: &mut World, from: PeerId, to: PeerId, bytes: &[u8]) {
    let n = node(w, from);
    w.nodes[n]
        .mesh_mut()
        .send(Target::Peer(to), TransferMode::Reliable, 0, bytes)
        .expect("mesh send");
    w.drain(n);
}

/// `[7][3][peer i32 LE][inner…]`, written out by hand from Godot's layout.
fn relay(peer: PeerId, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x07, 0x03];
    v.extend_from_slice(&peer.to_le_bytes());
    v.extend_from_slice(inner);
    v
}

fn reliable(from: PeerId, data: &[u8]) -> Packet {
    Packet {
        from,
        channel: 0,
        mode: TransferMode::Reliable,
        data: data.to_vec(),
    }
}

fn packets_of(w: &World, id: PeerId) -> Vec<Packet> {
    w.nodes[node(w, id)]
        .packets()
        .into_iter()
        .cloned()
        .collect()
}

fn mp(w: &World, id: PeerId) -> &Multiplayer {
    w.nodes[node(w, id)].mp()
}

/// Both ends' meshes see each other connected (needed before writing hand-made bytes).
fn meshes_connected(w: &World, a: usize, b: usize) -> bool {
    let connected =
        |x: usize, y: usize| w.nodes[x].mesh().peer(w.id(y)).is_some_and(|p| p.connected);
    connected(a, b) && connected(b, a)
}

fn sorted(mut v: Vec<PeerId>) -> Vec<PeerId> {
    v.sort();
    v
}

// ---------------------------------------------------------------- relay

#[test]
fn client_a_reaches_client_b_through_the_server() {
    let mut w = World::star(&[A, B, C, D], &MultiplayerConfig::default());
    for id in [A, B, C, D] {
        assert_eq!(
            w.nodes[node(&w, id)].mesh().peers().collect::<Vec<_>>(),
            vec![1],
            "client {id} has no direct connection but to the server"
        );
        assert!(mp(&w, id).is_relayed(if id == A { B } else { A }));
    }
    send(&mut w, A, Target::Peer(B), &[1, 2, 3]);
    w.run_for(SETTLE);
    assert_eq!(packets_of(&w, B), vec![reliable(A, &[1, 2, 3])]);
    for id in [1, A, C, D] {
        assert!(packets_of(&w, id).is_empty(), "{id} got a packet for B");
    }
    assert_eq!(mp(&w, 1).stats().relayed, 1);
    assert_eq!(mp(&w, B).stats().packets_received, 1);
}

#[test]
fn broadcast_from_a_client_reaches_every_other_client_and_the_server_exactly_once() {
    let mut w = World::star(&[A, B, C, D], &MultiplayerConfig::default());
    send(&mut w, A, Target::All, b"hello all");
    w.run_for(SETTLE);
    for id in [1, B, C, D] {
        assert_eq!(
            packets_of(&w, id),
            vec![reliable(A, b"hello all")],
            "at {id}"
        );
    }
    assert!(packets_of(&w, A).is_empty(), "not echoed to the sender");
    assert_eq!(mp(&w, 1).stats().relayed, 3);
}

#[test]
fn exclusion_through_the_relay_skips_exactly_the_excluded_peer() {
    let mut w = World::star(&[A, B, C, D], &MultiplayerConfig::default());
    // -C: everyone but A (the sender) and C, the server included.
    send(&mut w, A, Target::AllExcept(C), b"not C");
    w.run_for(SETTLE);
    for id in [1, B, D] {
        assert_eq!(packets_of(&w, id), vec![reliable(A, b"not C")], "at {id}");
    }
    assert!(packets_of(&w, C).is_empty());
    assert!(packets_of(&w, A).is_empty());

    // -1: every client but the sender, and not the server.
    for n in 0..w.nodes.len() {
        w.nodes[n].clear_events();
    }
    send(&mut w, B, Target::from(-1), b"not the server");
    w.run_for(SETTLE);
    assert!(packets_of(&w, 1).is_empty(), "the server is excluded");
    for id in [A, C, D] {
        assert_eq!(packets_of(&w, id), vec![reliable(B, b"not the server")]);
    }
    assert!(packets_of(&w, B).is_empty());
}

#[test]
fn the_server_sends_directly_to_clients_and_clients_directly_to_it() {
    let mut w = World::star(&[A, B, C], &MultiplayerConfig::default());
    send(&mut w, 1, Target::AllExcept(B), b"from server");
    send(&mut w, C, Target::Peer(1), b"to server");
    w.run_for(SETTLE);
    assert_eq!(packets_of(&w, A), vec![reliable(1, b"from server")]);
    assert_eq!(packets_of(&w, C), vec![reliable(1, b"from server")]);
    assert!(packets_of(&w, B).is_empty());
    assert_eq!(packets_of(&w, 1), vec![reliable(C, b"to server")]);
    assert_eq!(
        mp(&w, 1).stats().relayed,
        0,
        "nothing went through the relay"
    );
}

#[test]
fn relayed_packets_keep_their_transfer_mode_and_channel() {
    let config = MeshConfig::default().with_channels([TransferMode::UnreliableOrdered]);
    let mut w = World::game(&[A, B], &config, &MultiplayerConfig::default());
    w.introduce_to_server(1);
    w.introduce_to_server(2);
    assert!(w.run_until(LIMIT, World::everyone_admitted));
    let a = node(&w, A);
    let sends = [
        (TransferMode::Unreliable, 0u16, TransferMode::Unreliable),
        (
            TransferMode::UnreliableOrdered,
            0,
            TransferMode::UnreliableOrdered,
        ),
        (TransferMode::Reliable, 0, TransferMode::Reliable),
        // Extra channel 1's configured mode applies, whatever mode is passed (Godot).
        (TransferMode::Reliable, 1, TransferMode::UnreliableOrdered),
    ];
    for (i, (mode, channel, _)) in sends.iter().enumerate() {
        w.nodes[a]
            .mp_mut()
            .send_bytes(Target::Peer(B), *mode, *channel, &[i as u8])
            .unwrap();
    }
    w.drain(a);
    w.run_for(SETTLE);
    let mut got = packets_of(&w, B);
    got.sort_by_key(|p| p.data[0]);
    let expected: Vec<Packet> = sends
        .iter()
        .enumerate()
        .map(|(i, &(_, channel, mode))| Packet {
            from: A,
            channel,
            mode,
            data: vec![i as u8],
        })
        .collect();
    assert_eq!(got, expected);
}

// ---------------------------------------------------------------- peer exchange

#[test]
fn peer_exchange_announces_joins_and_leaves() {
    let mut w = World::game(
        &[A, B, C, D],
        &MeshConfig::default(),
        &MultiplayerConfig::default(),
    );
    let (a, b, c, d) = (1, 2, 3, 4);
    w.introduce_to_server(a);
    w.introduce_to_server(b);
    assert!(w.run_until(LIMIT, |w| mp(w, A).has_peer(B) && mp(w, B).has_peer(A)));
    assert_eq!(w.nodes[a].connected(), vec![1, B]);
    assert_eq!(w.nodes[b].connected(), vec![1, A]);
    assert_eq!(w.nodes[0].connected(), vec![A, B]);

    // C joins: announced to A and B, and A and B to it.
    w.introduce_to_server(c);
    assert!(w.run_until(LIMIT, |w| {
        mp(w, C).peers().count() == 3 && mp(w, A).has_peer(C) && mp(w, B).has_peer(C)
    }));
    assert_eq!(w.nodes[c].connected()[0], 1);
    assert_eq!(sorted(w.nodes[c].connected()), vec![1, A, B]);
    assert_eq!(w.nodes[a].connected(), vec![1, B, C]);
    assert_eq!(w.nodes[b].connected(), vec![1, A, C]);
    assert!(mp(&w, C).is_relayed(A) && !mp(&w, C).is_relayed(1));

    // C leaves by closing: everyone else hears of it once; C loses everyone.
    w.nodes[c].mp_mut().close();
    w.drain(c);
    assert!(w.run_until(LIMIT, |w| !mp(w, A).has_peer(C) && !mp(w, B).has_peer(C)));
    w.run_for(SETTLE);
    assert_eq!(w.nodes[a].disconnected(), vec![C]);
    assert_eq!(w.nodes[b].disconnected(), vec![C]);
    assert_eq!(w.nodes[0].disconnected(), vec![C]);
    assert_eq!(w.nodes[c].disconnected(), vec![1, A, B]);
    assert_eq!(mp(&w, 1).peers().collect::<Vec<_>>(), vec![A, B]);

    // D joins, then vanishes without a word: the server notices (peer timeout) and tells the rest.
    w.introduce_to_server(d);
    assert!(w.run_until(LIMIT, |w| mp(w, A).has_peer(D) && mp(w, B).has_peer(D)));
    w.vanish(d);
    assert!(
        w.run_until(Duration::from_secs(30), |w| !mp(w, A).has_peer(D)
            && !mp(w, B).has_peer(D))
    );
    assert_eq!(w.nodes[a].disconnected(), vec![C, D]);
    assert_eq!(w.nodes[b].disconnected(), vec![C, D]);
}

#[test]
fn a_client_that_loses_the_server_loses_every_relayed_peer() {
    let mut w = World::star(&[A, B, C], &MultiplayerConfig::default());
    w.nodes[0].mp_mut().close();
    w.drain(0);
    let a = node(&w, A);
    assert!(w.run_until(LIMIT, |w| w.nodes[a].mp().status()
        == ConnectionStatus::Disconnected));
    w.run_for(SETTLE);
    assert_eq!(w.nodes[a].disconnected(), vec![1, B, C]);
    assert_eq!(mp(&w, A).peers().count(), 0);
    assert_eq!(
        w.nodes[a]
            .mp_mut()
            .send_bytes(Target::Peer(B), TransferMode::Reliable, 0, b"x"),
        Err(SendError::Disconnected)
    );
}

#[test]
fn the_server_removing_a_client_tells_the_others() {
    let mut w = World::star(&[A, B, C], &MultiplayerConfig::default());
    // Forced: no PeerDisconnected at the server (as Mesh::disconnect_peer), but DEL_PEER goes out.
    assert!(w.nodes[0].mp_mut().disconnect_peer(B, true));
    w.drain(0);
    assert!(w.run_until(LIMIT, |w| !mp(w, A).has_peer(B) && !mp(w, C).has_peer(B)));
    w.run_for(SETTLE);
    assert!(w.nodes[0].disconnected().is_empty());
    assert_eq!(node_disconnected(&w, A), vec![B]);
    assert_eq!(node_disconnected(&w, C), vec![B]);
    assert_eq!(mp(&w, 1).peers().collect::<Vec<_>>(), vec![A, C]);
}

fn node_disconnected(w: &World, id: PeerId) -> Vec<PeerId> {
    w.nodes[node(w, id)].disconnected()
}

// ---------------------------------------------------------------- authentication

/// Waits until both ends of client `id` are authenticating with each other.
fn until_authenticating(w: &mut World, id: PeerId) {
    assert!(w.run_until(LIMIT, |w| {
        mp(w, 1).authenticating_peers().any(|p| p == id)
            && mp(w, id).authenticating_peers().any(|p| p == 1)
    }));
}

/// Both sides complete authentication for client `id`; returns once both admitted.
fn authenticate(w: &mut World, id: PeerId) {
    until_authenticating(w, id);
    let n = node(w, id);
    w.nodes[n].mp_mut().complete_auth(1).unwrap();
    w.nodes[0].mp_mut().complete_auth(id).unwrap();
    w.drain(n);
    w.drain(0);
    assert!(w.run_until(LIMIT, |w| mp(w, 1).has_peer(id) && mp(w, id).has_peer(1)));
}

#[test]
fn authentication_exchanges_data_and_admits_when_both_sides_complete() {
    let mut w = World::game(
        &[A, B],
        &MeshConfig::default(),
        &MultiplayerConfig::default().with_auth(true),
    );
    w.introduce_to_server(1);
    until_authenticating(&mut w, A);
    assert_eq!(w.nodes[0].authenticating(), vec![A]);
    assert_eq!(w.nodes[1].authenticating(), vec![1]);
    assert!(w.nodes[0].connected().is_empty() && w.nodes[1].connected().is_empty());
    assert_eq!(
        w.nodes[1]
            .mp_mut()
            .send_bytes(Target::Peer(1), TransferMode::Reliable, 0, b"x"),
        Err(SendError::PeerNotConnected(1)),
        "no game traffic before admission"
    );
    assert_eq!(
        w.nodes[0]
            .mp_mut()
            .send_bytes(Target::Peer(A), TransferMode::Reliable, 0, b"x"),
        Err(SendError::PeerNotConnected(A))
    );

    // The client presents credentials; the server answers and accepts.
    w.nodes[1].mp_mut().send_auth(1, b"secret").unwrap();
    w.drain(1);
    assert!(w.run_until(LIMIT, |w| !w.nodes[0].auth_data().is_empty()));
    assert_eq!(w.nodes[0].auth_data(), vec![(A, b"secret".to_vec())]);
    w.nodes[0].mp_mut().send_auth(A, b"welcome").unwrap();
    w.nodes[0].mp_mut().complete_auth(A).unwrap();
    assert_eq!(
        w.nodes[0].mp_mut().complete_auth(A),
        Err(AuthError::AlreadyCompleted(A))
    );
    assert_eq!(
        w.nodes[0].mp_mut().send_auth(A, b"more"),
        Err(AuthError::AlreadyCompleted(A))
    );
    w.drain(0);
    assert!(w.run_until(LIMIT, |w| !w.nodes[1].auth_data().is_empty()));
    assert_eq!(w.nodes[1].auth_data(), vec![(1, b"welcome".to_vec())]);
    w.run_for(SETTLE);
    assert!(!mp(&w, 1).has_peer(A), "the client has not completed yet");
    assert_eq!(
        w.nodes[1].mp_mut().send_auth(1, b""),
        Err(AuthError::EmptyData)
    );
    assert_eq!(
        w.nodes[1].mp_mut().send_auth(1, b"late"),
        Err(AuthError::RemoteCompleted(1))
    );
    w.nodes[1].mp_mut().complete_auth(1).unwrap();
    w.drain(1);
    assert!(w.run_until(LIMIT, |w| mp(w, 1).has_peer(A) && mp(w, A).has_peer(1)));
    assert_eq!(w.nodes[0].connected(), vec![A]);
    assert_eq!(w.nodes[1].connected(), vec![1]);
    assert_eq!(mp(&w, 1).authenticating_peers().count(), 0);
    assert_eq!(
        w.nodes[0].mp_mut().send_auth(A, b"x"),
        Err(AuthError::NotAuthenticating(A))
    );

    // B is announced to A only once B is admitted.
    w.introduce_to_server(2);
    until_authenticating(&mut w, B);
    w.run_for(SETTLE);
    assert_eq!(
        w.nodes[1].connected(),
        vec![1],
        "A does not see B while it authenticates"
    );
    authenticate(&mut w, B);
    assert!(w.run_until(LIMIT, |w| mp(w, A).has_peer(B) && mp(w, B).has_peer(A)));
    send(&mut w, B, Target::Peer(A), b"hi A");
    w.run_for(SETTLE);
    assert_eq!(packets_of(&w, A), vec![reliable(B, b"hi A")]);
    assert!(w.nodes[0].auth_failed().is_empty() && w.nodes[1].auth_failed().is_empty());
}

#[test]
fn authentication_fails_after_the_timeout_and_the_peer_is_dropped() {
    let mut w = World::game(
        &[A, B],
        &MeshConfig::default(),
        &MultiplayerConfig::default().with_auth(true),
    );
    w.introduce_to_server(1);
    authenticate(&mut w, A);
    w.introduce_to_server(2);
    until_authenticating(&mut w, B);
    let since = w.now;
    // B never completes. Nothing happens before the 3 s timeout…
    w.run_for(Duration::from_millis(2900));
    assert!(w.now - since >= Duration::from_millis(2900));
    assert!(w.nodes[0].auth_failed().is_empty());
    assert!(w.nodes[2].auth_failed().is_empty());
    // …and then both sides give up.
    assert!(
        w.run_until(Duration::from_secs(1), |w| w.nodes[0].auth_failed()
            == vec![B])
    );
    assert!(w.run_until(LIMIT, |w| w.nodes[2].mp().status()
        == ConnectionStatus::Disconnected));
    w.run_for(SETTLE);
    assert_eq!(w.nodes[2].auth_failed(), vec![1]);
    assert!(!w.nodes[0].mesh().has_peer(B), "the server disconnected B");
    assert_eq!(mp(&w, 1).peers().collect::<Vec<_>>(), vec![A]);
    assert!(w.nodes[0].connected() == vec![A] && w.nodes[0].disconnected().is_empty());
    assert_eq!(w.nodes[1].connected(), vec![1], "A never heard of B");
    assert!(w.nodes[2].connected().is_empty() && w.nodes[2].disconnected().is_empty());
}

#[test]
fn a_packet_that_overtakes_a_lost_auth_completion_admits_the_peer_and_is_delivered() {
    // The server completes first; then the client completes, but the datagram carrying its
    // `[7][0]` is lost. The client has admitted the server by then and sends a game packet on
    // another reliable channel (another SCTP stream), which arrives before the retransmitted
    // `[7][0]`. Godot admits the peer on that packet and processes it; dropping it as
    // unauthenticated would lose a packet of a reliable channel for good.
    let mesh = MeshConfig::default().with_channels([TransferMode::Reliable]);
    let mut w = World::game(&[A], &mesh, &MultiplayerConfig::default().with_auth(true));
    w.introduce_to_server(1);
    until_authenticating(&mut w, A);
    w.nodes[0].mp_mut().complete_auth(A).unwrap();
    w.drain(0);
    assert!(w.run_until(LIMIT, |w| w.nodes[1].mp().peers().count() == 0
        && w.nodes[1].mesh().stats().packets_received >= 1));
    w.cut(1, 0, true);
    w.nodes[1].mp_mut().complete_auth(1).unwrap();
    w.drain(1);
    assert!(mp(&w, A).has_peer(1), "the client admitted the server");
    w.cut(1, 0, false);
    w.nodes[1]
        .mp_mut()
        .send_bytes(Target::Peer(1), TransferMode::Reliable, 1, b"first move")
        .expect("send_bytes on the extra reliable channel");
    w.drain(1);
    assert!(w.run_until(LIMIT, |w| mp(w, 1).has_peer(A)));
    w.run_for(Duration::from_secs(4)); // the lost `[7][0]` is retransmitted meanwhile
    let moves: Vec<Packet> = packets_of(&w, 1);
    assert_eq!(
        moves,
        vec![Packet {
            from: A,
            channel: 1,
            mode: TransferMode::Reliable,
            data: b"first move".to_vec(),
        }]
    );
    assert_eq!(w.nodes[0].connected(), vec![A], "admitted once");
    assert_eq!(mp(&w, 1).stats().unauthenticated, 0);
}

#[test]
fn without_a_timeout_authentication_waits() {
    let config = MultiplayerConfig::default()
        .with_auth(true)
        .with_auth_timeout(None);
    let mut w = World::game(&[A], &MeshConfig::default(), &config);
    w.introduce_to_server(1);
    until_authenticating(&mut w, A);
    w.run_for(Duration::from_secs(8));
    assert!(w.nodes[0].auth_failed().is_empty());
    assert_eq!(
        mp(&w, 1).authenticating_peers().collect::<Vec<_>>(),
        vec![A]
    );
}

#[test]
fn peer_exchange_arriving_while_the_client_authenticates_is_held_not_lost() {
    // A server without auth admits clients at once and announces them; the clients still
    // authenticate. Godot drops the ADD_PEER a client gets meanwhile; we apply it on admission.
    let mut w = World::game(&[], &MeshConfig::default(), &MultiplayerConfig::default());
    w.add_game_client(
        A,
        &MeshConfig::default(),
        &MultiplayerConfig::default().with_auth(true),
    );
    w.add_game_client(
        B,
        &MeshConfig::default(),
        &MultiplayerConfig::default().with_auth(true),
    );
    w.introduce_to_server(1);
    w.introduce_to_server(2);
    assert!(w.run_until(LIMIT, |w| mp(w, 1).peers().count() == 2
        && mp(w, A).stats().peer_exchange_buffered == 1
        && mp(w, B).stats().peer_exchange_buffered == 1));
    assert!(w.nodes[1].connected().is_empty());
    for (n, id) in [(1, A), (2, B)] {
        w.nodes[n].mp_mut().complete_auth(1).unwrap();
        w.drain(n);
        // This server has no auth of its own: play its completion by hand.
        raw(&mut w, 1, id, &[0x07, 0x00]);
    }
    assert!(w.run_until(LIMIT, |w| mp(w, A).has_peer(B) && mp(w, B).has_peer(A)));
    assert_eq!(w.nodes[1].connected(), vec![1, B]);
    assert_eq!(w.nodes[2].connected(), vec![1, A]);
}

#[test]
fn an_unauthenticated_peer_is_never_relayed_or_delivered() {
    let mut w = World::game(
        &[A, B],
        &MeshConfig::default(),
        &MultiplayerConfig::default().with_auth(true),
    );
    w.introduce_to_server(1);
    authenticate(&mut w, A);
    w.introduce_to_server(2);
    until_authenticating(&mut w, B);
    // B skips authentication and writes game traffic below the layer.
    raw(&mut w, B, 1, &[0x03, 9, 9]);
    raw(&mut w, B, 1, &relay(A, &[0x03, 9]));
    raw(&mut w, B, 1, &relay(0, &[0x03, 9]));
    raw(&mut w, B, 1, &[0x07, 0x01, 5, 0, 0, 0]);
    // The server's own broadcast skips B, so B sees nothing either.
    send(&mut w, 1, Target::All, b"admitted only");
    w.run_for(SETTLE);
    assert!(packets_of(&w, 1).is_empty());
    assert_eq!(packets_of(&w, A), vec![reliable(1, b"admitted only")]);
    assert!(packets_of(&w, B).is_empty());
    let stats = mp(&w, 1).stats();
    assert_eq!(stats.unauthenticated, 4);
    assert_eq!(stats.relayed, 0);
    assert_eq!(
        mp(&w, B).stats().unauthenticated,
        0,
        "nothing was sent to B"
    );
}

// ---------------------------------------------------------------- relay switch

#[test]
fn with_the_relay_disabled_clients_only_talk_to_the_server() {
    let mut w = World::star(
        &[A, B, C],
        &MultiplayerConfig::default().with_server_relay(false),
    );
    for id in [A, B, C] {
        assert_eq!(
            mp(&w, id).peers().collect::<Vec<_>>(),
            vec![1],
            "no peer exchange"
        );
    }
    assert!(!mp(&w, 1).is_server_relay_enabled());
    let a = node(&w, A);
    assert_eq!(
        w.nodes[a]
            .mp_mut()
            .send_bytes(Target::Peer(B), TransferMode::Reliable, 0, b"x"),
        Err(SendError::UnknownPeer(B))
    );
    // A broadcast from a client reaches its only peer, the server.
    send(&mut w, A, Target::All, b"to all I know");
    // A hand-made RELAY is refused by the server.
    raw(&mut w, A, 1, &relay(B, &[0x03, 7]));
    w.run_for(SETTLE);
    assert_eq!(packets_of(&w, 1), vec![reliable(A, b"to all I know")]);
    assert!(packets_of(&w, B).is_empty() && packets_of(&w, C).is_empty());
    assert_eq!(mp(&w, 1).stats().relay_refused, 1);
    assert_eq!(mp(&w, 1).stats().relayed, 0);
}

// ---------------------------------------------------------------- security

#[test]
fn the_server_writes_the_true_source_and_refuses_nested_sys() {
    let mut w = World::star(&[A, B, C], &MultiplayerConfig::default());
    // A relays to B a RELAY claiming to come from C, then a hidden ADD_PEER and DEL_PEER.
    raw(&mut w, A, 1, &relay(B, &relay(C, &[0x03, 6, 6, 6])));
    raw(&mut w, A, 1, &relay(B, &[0x07, 0x01, 77, 0, 0, 0]));
    raw(&mut w, A, 0x1, &relay(0, &[0x07, 0x02, C as u8, 0, 0, 0]));
    // An honest relay carries A's id whatever A would like.
    raw(&mut w, A, 1, &relay(B, &[0x03, 1]));
    w.run_for(SETTLE);
    assert_eq!(packets_of(&w, B), vec![reliable(A, &[1])]);
    assert!(mp(&w, B).has_peer(C) && !mp(&w, B).has_peer(77));
    assert_eq!(mp(&w, 1).stats().spoof_attempts, 3);
    assert_eq!(mp(&w, 1).stats().relayed, 1);
}

#[test]
fn relay_to_an_unknown_id_is_dropped_and_counted() {
    let mut w = World::star(&[A, B], &MultiplayerConfig::default());
    raw(&mut w, A, 1, &relay(999, &[0x03, 1]));
    raw(&mut w, A, 1, &relay(1, &[0x03, 2])); // the server is not a relay destination
    w.run_for(SETTLE);
    assert_eq!(mp(&w, 1).stats().relay_unknown_target, 2);
    assert_eq!(mp(&w, 1).stats().relayed, 0);
    assert!(packets_of(&w, 1).is_empty() && packets_of(&w, B).is_empty());
    // Through the API, an unknown peer is refused before anything is sent.
    let a = node(&w, A);
    assert_eq!(
        w.nodes[a]
            .mp_mut()
            .send_bytes(Target::Peer(999), TransferMode::Reliable, 0, b"x"),
        Err(SendError::UnknownPeer(999))
    );
}

#[test]
fn sys_commands_only_the_server_may_send_are_ignored_from_anyone_else() {
    let mut w = World::star(&[A, B], &MultiplayerConfig::default());
    // A client tries peer exchange on the server itself.
    raw(&mut w, A, 1, &[0x07, 0x01, 55, 0, 0, 0]);
    raw(&mut w, A, 1, &[0x07, 0x02, B as u8, 0, 0, 0]);
    w.run_for(SETTLE);
    assert_eq!(mp(&w, 1).stats().sys_not_from_server, 2);
    assert_eq!(mp(&w, 1).peers().collect::<Vec<_>>(), vec![A, B]);
    assert!(w.nodes[0].connected().is_empty() && w.nodes[0].disconnected().is_empty());
}

#[test]
fn clients_ignore_peer_exchange_and_relay_a_foreign_server_forwards_from_another_client() {
    // A bare server forwards whatever a client relays, as Godot's does, SYS included.
    let mut w = World::bare_server_and_game_clients(
        &[A, B],
        &MeshConfig::default(),
        &MultiplayerConfig::default(),
    );
    w.introduce_to_server(1);
    w.introduce_to_server(2);
    assert!(w.run_until(LIMIT, |w| meshes_connected(w, 0, 1)
        && meshes_connected(w, 0, 2)));
    raw(&mut w, 1, A, &[0x07, 0x01, B as u8, 0, 0, 0]);
    raw(&mut w, 1, B, &[0x07, 0x01, A as u8, 0, 0, 0]);
    assert!(w.run_until(LIMIT, |w| mp(w, A).has_peer(B) && mp(w, B).has_peer(A)));
    // "From A": ADD_PEER 77, DEL_PEER of A itself, and a RELAY posing as peer 1.
    raw(&mut w, 1, B, &relay(A, &[0x07, 0x01, 77, 0, 0, 0]));
    raw(&mut w, 1, B, &relay(A, &[0x07, 0x02, A as u8, 0, 0, 0]));
    raw(&mut w, 1, B, &relay(A, &relay(1, &[0x03, 5])));
    w.run_for(SETTLE);
    assert!(mp(&w, B).has_peer(A) && !mp(&w, B).has_peer(77));
    assert!(packets_of(&w, B).is_empty());
    assert_eq!(mp(&w, B).stats().spoof_attempts, 3);
    assert_eq!(w.nodes[2].connected(), vec![1, A]);
}

#[test]
fn malformed_packets_are_dropped_and_counted_and_traffic_goes_on() {
    let mut w = World::star(&[A, B], &MultiplayerConfig::default());
    let garbage: [&[u8]; 8] = [
        &[0x07],                               // SYS without a command
        &[0x07, 0x01],                         // ADD_PEER without an id
        &[0x07, 0x01, 2, 0, 0],                // ADD_PEER with 3 id bytes
        &[0x07, 0x09, 0, 0, 0, 0],             // unknown SYS command
        &[0x07, 0x03, B as u8, 0, 0, 0],       // RELAY without an inner packet
        &[0x03],                               // RAW without payload
        &[0x07, 0x00, 1],                      // auth data after admission
        &[0x07, 0x03, 0, 0, 0, 0x80, 0x03, 1], // RELAY to i32::MIN
    ];
    for g in garbage {
        raw(&mut w, A, 1, g);
        raw(&mut w, 1, B, g);
    }
    raw(&mut w, A, 1, &[0x00, 1, 2]); // an RPC: valid Godot, not handled here
    w.run_for(SETTLE);
    assert_eq!(mp(&w, 1).stats().malformed, 8);
    assert_eq!(mp(&w, 1).stats().unsupported, 1);
    // At a client, RELAY to i32::MIN reads as "from i32::MIN": malformed too.
    assert_eq!(mp(&w, B).stats().malformed, 8);
    assert!(packets_of(&w, 1).is_empty() && packets_of(&w, B).is_empty());
    send(&mut w, A, Target::Peer(B), b"still fine");
    w.run_for(SETTLE);
    assert_eq!(packets_of(&w, B), vec![reliable(A, b"still fine")]);
}

// ---------------------------------------------------------------- bytes on the wire

#[test]
fn the_bytes_a_client_sends_and_receives_are_godots() {
    let mut w = World::bare_server_and_game_clients(
        &[A, 7],
        &MeshConfig::default(),
        &MultiplayerConfig::default(),
    );
    w.introduce_to_server(1);
    w.introduce_to_server(2);
    assert!(w.run_until(LIMIT, |w| meshes_connected(w, 0, 1)
        && meshes_connected(w, 0, 2)));
    // The bare server announces 7 to A: exactly ADD_PEER's six bytes.
    raw(&mut w, 1, A, &[0x07, 0x01, 0x07, 0x00, 0x00, 0x00]);
    assert!(w.run_until(LIMIT, |w| mp(w, A).has_peer(7)));

    send(&mut w, A, Target::Peer(7), &[1, 2, 3]);
    send(&mut w, A, Target::All, &[4]);
    send(&mut w, A, Target::AllExcept(7), &[5]);
    send(&mut w, A, Target::Peer(1), &[6]);
    w.run_for(SETTLE);
    let got: Vec<Vec<u8>> = w.nodes[0]
        .packets()
        .into_iter()
        .map(|p| p.data.clone())
        .collect();
    assert_eq!(
        got,
        vec![
            vec![0x07, 0x03, 0x07, 0x00, 0x00, 0x00, 0x03, 1, 2, 3],
            vec![0x07, 0x03, 0x00, 0x00, 0x00, 0x00, 0x03, 4],
            vec![0x07, 0x03, 0xF9, 0xFF, 0xFF, 0xFF, 0x03, 5],
            vec![0x03, 6],
        ]
    );
    assert!(w.nodes[0].packets().iter().all(|p| p.from == A));

    // What peer 7 receives when the server forwards the first one: the source in the id field.
    raw(
        &mut w,
        1,
        7,
        &[0x07, 0x03, A as u8, 0x00, 0x00, 0x00, 0x03, 1, 2, 3],
    );
    raw(&mut w, 1, 7, &[0x03, 9]);
    raw(&mut w, 1, 7, &[0x07, 0x02, 0x07, 0, 0, 0]); // DEL_PEER of 7 itself: malformed
    raw(&mut w, 1, A, &[0x07, 0x02, 0x07, 0x00, 0x00, 0x00]);
    w.run_for(SETTLE);
    assert_eq!(
        packets_of(&w, 7),
        vec![reliable(A, &[1, 2, 3]), reliable(1, &[9])]
    );
    assert_eq!(mp(&w, 7).stats().malformed, 1);
    assert!(!mp(&w, A).has_peer(7), "DEL_PEER removed 7");
    assert_eq!(w.nodes[1].disconnected(), vec![7]);
}

#[test]
fn the_bytes_a_server_sends_are_godots() {
    // A Multiplayer server; clients are bare meshes so the test reads what the server wrote.
    let mut w = World::game(&[], &MeshConfig::default(), &MultiplayerConfig::default());
    w.add_bare_client(A, &MeshConfig::default());
    w.add_bare_client(B, &MeshConfig::default());
    w.introduce_to_server(1);
    assert!(w.run_until(LIMIT, |w| meshes_connected(w, 0, 1)));
    w.introduce_to_server(2);
    assert!(w.run_until(LIMIT, |w| meshes_connected(w, 0, 2)));
    w.run_for(SETTLE);
    let bytes = |w: &World, n: usize| -> Vec<Vec<u8>> {
        w.nodes[n]
            .packets()
            .into_iter()
            .map(|p| p.data.clone())
            .collect()
    };
    assert_eq!(
        bytes(&w, 1),
        vec![vec![0x07, 0x01, B as u8, 0, 0, 0]],
        "ADD_PEER(B) to A"
    );
    assert_eq!(
        bytes(&w, 2),
        vec![vec![0x07, 0x01, A as u8, 0, 0, 0]],
        "ADD_PEER(A) to B"
    );

    // A relays [1,2,3] to B: B gets the source in place of the destination, on the same mode.
    for n in [1, 2] {
        w.nodes[n].clear_events();
    }
    let a = node(&w, A);
    w.nodes[a]
        .mesh_mut()
        .send(
            Target::Peer(1),
            TransferMode::UnreliableOrdered,
            0,
            &[0x07, 0x03, B as u8, 0, 0, 0, 0x03, 1, 2, 3],
        )
        .unwrap();
    w.drain(a);
    w.run_for(SETTLE);
    let forwarded: Vec<Packet> = w.nodes[2].packets().into_iter().cloned().collect();
    assert_eq!(
        forwarded,
        vec![Packet {
            from: 1,
            channel: 0,
            mode: TransferMode::UnreliableOrdered,
            data: vec![0x07, 0x03, A as u8, 0, 0, 0, 0x03, 1, 2, 3],
        }]
    );

    // A leaves: DEL_PEER(A) to B.
    for n in [1, 2] {
        w.nodes[n].clear_events();
    }
    w.nodes[0].mp_mut().remove_peer(A);
    w.drain(0);
    w.run_for(SETTLE);
    assert_eq!(bytes(&w, 2), vec![vec![0x07, 0x02, A as u8, 0, 0, 0]]);
    assert_eq!(w.nodes[0].disconnected(), vec![A]);
}

#[test]
fn the_auth_bytes_are_godots() {
    let mut w = World::game(
        &[],
        &MeshConfig::default(),
        &MultiplayerConfig::default().with_auth(true),
    );
    w.add_bare_client(A, &MeshConfig::default());
    w.introduce_to_server(1);
    assert!(w.run_until(LIMIT, |w| meshes_connected(w, 0, 1)));
    assert_eq!(w.nodes[0].authenticating(), vec![A]);
    w.nodes[0].mp_mut().send_auth(A, b"nonce").unwrap();
    w.nodes[0].mp_mut().complete_auth(A).unwrap();
    w.drain(0);
    raw(&mut w, A, 1, &[0x07, 0x00, b'o', b'k']);
    raw(&mut w, A, 1, &[0x07, 0x00]);
    assert!(w.run_until(LIMIT, |w| mp(w, 1).has_peer(A)));
    w.run_for(SETTLE);
    let got: Vec<Vec<u8>> = w.nodes[1]
        .packets()
        .into_iter()
        .map(|p| p.data.clone())
        .collect();
    assert_eq!(
        got,
        vec![
            vec![0x07, 0x00, b'n', b'o', b'n', b'c', b'e'],
            vec![0x07, 0x00]
        ]
    );
    assert_eq!(w.nodes[0].auth_data(), vec![(A, b"ok".to_vec())]);
    assert_eq!(w.nodes[0].connected(), vec![A]);
}

// ---------------------------------------------------------------- mesh mode

#[test]
fn in_mesh_mode_every_packet_is_direct_and_relay_commands_are_refused() {
    let mut w = World::new();
    for id in [A, B, C] {
        let mesh = rtcmesh::Mesh::create_mesh(id, MeshConfig::default()).unwrap();
        w.add(Multiplayer::new(mesh, MultiplayerConfig::default()));
    }
    w.introduce(0, 1);
    w.introduce(0, 2);
    w.introduce(1, 2);
    assert!(w.run_until(LIMIT, World::everyone_admitted));
    send(&mut w, A, Target::AllExcept(C), b"mesh");
    raw(&mut w, A, C, &relay(B, &[0x03, 1]));
    raw(&mut w, A, C, &[0x07, 0x01, 55, 0, 0, 0]);
    w.run_for(SETTLE);
    assert_eq!(packets_of(&w, B), vec![reliable(A, b"mesh")]);
    assert!(packets_of(&w, C).is_empty());
    assert_eq!(mp(&w, C).stats().relay_refused, 2);
    assert!(!mp(&w, C).has_peer(55));
}

// ---------------------------------------------------------------- every sender × every target

#[test]
fn every_sender_and_target_reaches_exactly_the_right_peers_once() {
    let mut w = World::star(&[A, B, C, D], &MultiplayerConfig::default());
    every_sender_and_target(&mut w, Duration::from_secs(1));
}

#[test]
fn every_sender_and_target_reaches_exactly_the_right_peers_once_under_loss() {
    // The same game on a network that loses 3 % of the datagrams, with 20–30 ms of latency:
    // reliable packets are retransmitted, and the relay still delivers each exactly once.
    let mut w = lossy_star(7, &[A, B, C, D], 0.03);
    every_sender_and_target(&mut w, Duration::from_secs(30));
}

/// Every node sends a tagged reliable packet to every target (each peer, all, all but each);
/// after `wait`, each receiver got exactly what was meant for it, with its true sender.
fn every_sender_and_target(w: &mut World, wait: Duration) {
    let clients = [A, B, C, D];
    let everyone: Vec<PeerId> = std::iter::once(1).chain(clients).collect();
    let mut expected: Vec<(PeerId, Vec<u8>)> = Vec::new(); // (receiver, payload)
    let mut tag = 0u16;
    for &sender in &everyone {
        let targets = std::iter::once(Target::All)
            .chain(
                everyone
                    .iter()
                    .filter(|&&p| p != sender)
                    .map(|&p| Target::Peer(p)),
            )
            .chain(everyone.iter().map(|&p| Target::AllExcept(p)));
        for target in targets {
            tag += 1;
            let payload = [&tag.to_le_bytes()[..], &sender.to_le_bytes()[..]].concat();
            send(w, sender, target, &payload);
            for &receiver in &everyone {
                let wanted = receiver != sender
                    && match target {
                        Target::All => true,
                        Target::Peer(p) => p == receiver,
                        Target::AllExcept(p) => p != receiver,
                    };
                if wanted {
                    expected.push((receiver, payload.clone()));
                }
            }
        }
    }
    w.run_for(wait);
    for &receiver in &everyone {
        let mut got: Vec<Vec<u8>> = packets_of(w, receiver)
            .into_iter()
            .map(|p| {
                assert_eq!(
                    p.from.to_le_bytes(),
                    p.data[2..6],
                    "true sender at {receiver}"
                );
                p.data
            })
            .collect();
        let mut want: Vec<Vec<u8>> = expected
            .iter()
            .filter(|(r, _)| *r == receiver)
            .map(|(_, d)| d.clone())
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "packets at {receiver}");
    }
}

// ---------------------------------------------------------------- on a faulty network

/// Latency 20 ms with 10 ms of jitter and `loss` (0..1) on every link, both ways.
fn faulty(loss: f32) -> LinkConditions {
    let mut netem = NetemConfig::new()
        .latency(Duration::from_millis(20))
        .jitter(Duration::from_millis(10));
    if loss > 0.0 {
        netem = netem.loss(RandomLoss::new(Probability::new(loss)));
    }
    LinkConditions::new(netem)
}

/// A multiplayer server and these clients on a faulty network (seeded), all admitted, events
/// cleared.
fn lossy_star(seed: u64, clients: &[PeerId], loss: f32) -> World {
    let config = MultiplayerConfig::default();
    let mut w = World::game_with_seed(seed, clients, &MeshConfig::default(), &config);
    w.set_all_links(faulty(loss));
    for n in 1..w.nodes.len() {
        w.introduce_to_server(n);
    }
    assert!(w.run_until(Duration::from_secs(30), World::everyone_admitted));
    for node in &mut w.nodes {
        node.clear_events();
    }
    w
}

#[test]
fn a_relayed_game_under_three_percent_loss_delivers_every_reliable_packet_once_in_order() {
    // Two clients play through the server for 10 s: 60 ticks a second, a packet per tick on
    // each channel kind, both ways. Reliable: every one, once, in order, though each crosses two
    // lossy links and the relay. Ordered: never twice, never out of order. Unreliable: never
    // twice.
    let mut w = lossy_star(3, &[A, B, C], 0.03);
    let (a, b) = (node(&w, A), node(&w, B));
    let reliable = (TransferMode::Reliable, 0);
    let kinds = [
        reliable,
        (TransferMode::UnreliableOrdered, 0),
        (TransferMode::Unreliable, 0),
    ];
    let mut feed = Feed::new(a, b, &kinds, 200);
    feed.run(&mut w, 600, Duration::from_micros(16_667), 1, |_, _| {});
    assert!(feed.finish(&mut w, reliable, Duration::from_secs(30)));
    feed.check_complete(reliable).unwrap();
    feed.check_no_duplicates(kinds[1], true).unwrap();
    feed.check_no_duplicates(kinds[2], false).unwrap();
    assert!(
        w.nodes.iter().all(|n| n.disconnected().is_empty()),
        "nobody was lost"
    );
    assert!(
        mp(&w, 1).stats().relayed >= 2 * 600,
        "it all went through the server"
    );
}

#[test]
fn a_client_cut_off_from_the_server_for_two_seconds_loses_nothing() {
    let mut w = lossy_star(11, &[A, B], 0.01);
    let (a, b) = (node(&w, A), node(&w, B));
    let reliable = (TransferMode::Reliable, 0);
    let mut feed = Feed::new(a, b, &[reliable], 100);
    // 20 packets a second each way for 6 s; A is cut off from the server from 2 s to 4 s.
    feed.run(&mut w, 120, Duration::from_millis(50), 1, |w, i| match i {
        40 => w.partition(0, a, true),
        80 => w.partition(0, a, false),
        _ => {}
    });
    assert!(feed.finish(&mut w, reliable, Duration::from_secs(60)));
    feed.check_complete(reliable).unwrap();
    w.run_for(Duration::from_secs(5));
    assert!(
        w.nodes.iter().all(|n| n.disconnected().is_empty()),
        "nobody was lost"
    );
    assert!(w.everyone_admitted());
}

#[test]
fn a_client_partitioned_from_the_server_for_good_is_dropped_by_everyone_and_the_rest_play_on() {
    let mut w = lossy_star(5, &[A, B, C], 0.01);
    let a = node(&w, A);
    w.partition(0, a, true);
    let peer_timeout = MeshConfig::default().peer_timeout;
    // The server times A out and tells B and C; A loses the server and, with it, everyone.
    assert!(w.run_until(peer_timeout + Duration::from_secs(5), |w| {
        node_disconnected(w, B) == vec![A]
            && node_disconnected(w, C) == vec![A]
            && w.nodes[0].disconnected() == vec![A]
            && w.nodes[a].mp().peers().count() == 0
    }));
    assert_eq!(sorted(w.nodes[a].disconnected()), vec![1, B, C]);
    send(&mut w, B, Target::Peer(C), b"still playing");
    assert!(w.run_until(Duration::from_secs(30), |w| packets_of(w, C)
        .iter()
        .any(|p| p.from == B && p.data == b"still playing")));
}

// ---------------------------------------------------------------- arbitrary bytes

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever a client writes to the server, and the server to a client, nothing panics and
    /// relayed traffic still flows afterwards.
    #[test]
    fn arbitrary_bytes_never_break_the_layer(
        packets in proptest::collection::vec(
            (proptest::sample::select(vec![0x03u8, 0x07, 0x17, 0x00, 0xFF]),
             proptest::sample::select(vec![0u8, 1, 2, 3, 4, 9]),
             proptest::collection::vec(0u8..=255, 0..12)),
            1..12,
        )
    ) {
        let mut w = World::star(&[A, B], &MultiplayerConfig::default());
        for (command, sys, rest) in &packets {
            let bytes = [&[*command, *sys][..], rest].concat();
            raw(&mut w, A, 1, &bytes);
            raw(&mut w, 1, B, &bytes);
        }
        w.run_for(SETTLE);
        for n in 0..w.nodes.len() {
            w.nodes[n].clear_events();
        }
        send(&mut w, A, Target::Peer(B), b"after");
        w.run_for(SETTLE);
        let after: Vec<Packet> = packets_of(&w, B);
        proptest::prop_assert_eq!(after, vec![reliable(A, b"after")]);
    }
}
