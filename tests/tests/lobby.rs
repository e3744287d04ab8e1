//! Games that meet through the lobby server: the sans-IO `LobbyServer` runs in the simulated
//! world, members reach it over WebSockets with their own latency and join as the tokio
//! adapter's `join` does. The stories: meeting and playing, a host whose process crashes (its
//! WebSocket closes at once) or who loses power (the WebSocket stays half-open until the
//! server's keepalive gives up), a player who crashes mid-game, and a sealed lobby.

use std::time::Duration;

use rtcmesh::lobby::{close, LobbyServerConfig};
use rtcmesh::{
    IceServer, Mesh, MeshConfig, Mode, Multiplayer, MultiplayerConfig, PeerId, Target, TransferMode,
};
use rtcmesh_tests::sim::lobby::NO_PONG;
use rtcmesh_tests::{JoinOptions, NatBehavior, NodeId, World};

const LIMIT: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_millis(300);

/// What every player runs: the multiplayer layer on the mesh the lobby asks for.
fn game(mesh: Mesh) -> Multiplayer {
    Multiplayer::new(mesh, MultiplayerConfig::default())
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A world with a lobby server, a host that opened a client/server lobby (20 ms from the
/// server) and clients joined with these WebSocket latencies, everyone admitted, events
/// cleared.
fn game_through_the_lobby(latencies: &[u64]) -> (World, NodeId, Vec<NodeId>) {
    let mut w = World::new();
    w.add_lobby(LobbyServerConfig::default());
    let (host, name) = w.open_lobby(JoinOptions::create(false).with_latency(ms(20)), game);
    let clients: Vec<NodeId> = latencies
        .iter()
        .map(|&l| w.join_lobby(JoinOptions::join(&name, false).with_latency(ms(l)), game))
        .collect();
    assert!(
        w.run_until(LIMIT, World::everyone_admitted),
        "the players did not meet"
    );
    for node in &mut w.nodes {
        node.clear_events();
    }
    (w, host, clients)
}

/// Node `from` sends to node `to` (`send_bytes`, reliable, channel 0); the datagrams leave.
fn send(w: &mut World, from: NodeId, to: NodeId, data: &[u8]) {
    let to = w.id(to);
    w.nodes[from]
        .mp_mut()
        .send_bytes(Target::Peer(to), TransferMode::Reliable, 0, data)
        .expect("send_bytes");
    w.drain(from);
}

fn got(w: &World, n: NodeId, from: PeerId, data: &[u8]) -> bool {
    w.nodes[n]
        .packets()
        .iter()
        .any(|p| p.from == from && p.data == data)
}

#[test]
fn players_meet_in_a_client_server_lobby_and_play_through_the_host() {
    let (mut w, host, clients) = game_through_the_lobby(&[5, 40, 150]);
    assert_eq!(w.id(host), 1, "the lobby's creator is its host");
    assert_eq!(w.nodes[host].mesh().mode(), Mode::Server);
    let name = w.member(host).lobby().expect("named").to_owned();
    for &c in &clients {
        assert_eq!(w.nodes[c].mesh().mode(), Mode::Client);
        assert_eq!(w.member(c).lobby(), Some(name.as_str()));
        assert_eq!(
            w.nodes[c].mesh().peers().collect::<Vec<_>>(),
            vec![1],
            "a client's only connection is to the host"
        );
    }
    // The first client reaches the last one through the host, with its true id.
    let (a, b) = (clients[0], clients[2]);
    let a_id = w.id(a);
    send(&mut w, a, b, b"through the host");
    assert!(w.run_until(LIMIT, |w| got(w, b, a_id, b"through the host")));
    let stats = w.lobby().server.stats();
    assert_eq!(stats.joins, 4);
    assert!(
        stats.signals_relayed >= 6,
        "offers and answers went through the lobby"
    );
    assert!(w.nodes.iter().all(|n| n.signal_errors.is_empty()));
    assert!(clients
        .iter()
        .chain([&host])
        .all(|&n| w.member(n).rejected == 0));
    // A quiet minute: the members answer the server's pings, so it keeps them.
    w.run_for(Duration::from_secs(60));
    assert!(clients.iter().chain([&host]).all(|&n| w.member(n).open));
    assert_eq!(w.lobby().server.lobby_count(), 1);
}

#[test]
fn a_mesh_lobby_connects_everyone_to_everyone() {
    let mut w = World::new();
    w.add_lobby(LobbyServerConfig::default());
    let (first, name) = w.open_lobby(JoinOptions::create(true), |mesh| mesh);
    for latency in [10, 60, 120] {
        w.join_lobby(
            JoinOptions::join(&name, true).with_latency(ms(latency)),
            |mesh| mesh,
        );
    }
    assert!(w.run_until(LIMIT, World::fully_connected));
    assert_eq!(w.id(first), 1);
    for n in 0..w.nodes.len() {
        assert_eq!(w.nodes[n].mesh().mode(), Mode::Mesh);
        assert_eq!(w.nodes[n].connected().len(), 3);
    }
}

#[test]
fn players_behind_nats_meet_through_the_lobby_and_a_turn_server() {
    // The members wait for their ICE servers before answering the lobby's announcements (as
    // `join` does), so the first offer already carries their relayed candidates.
    let mut w = World::new();
    w.add_lobby(LobbyServerConfig::default());
    w.add_turn_server(&[("player", "s3cret")]);
    let listen = w.servers[0].listen;
    let config = MeshConfig::default().with_ice_servers(vec![
        IceServer::stun(format!("stun:{listen}")),
        IceServer::turn(format!("turn:{listen}"), "player", "s3cret"),
    ]);
    let options = |o: JoinOptions| o.with_config(config.clone());
    let (host, name) = w.open_lobby(
        options(JoinOptions::create(false)).behind_nat(NatBehavior::SYMMETRIC),
        game,
    );
    let client = w.join_lobby(
        options(JoinOptions::join(&name, false)).behind_nat(NatBehavior::SYMMETRIC),
        game,
    );
    assert!(w.run_until(Duration::from_secs(20), World::everyone_admitted));
    send(&mut w, host, client, b"relayed");
    assert!(w.run_until(LIMIT, |w| got(w, client, 1, b"relayed")));
    assert!(
        w.servers[0].relayed > 0,
        "two symmetric NATs meet through the relay"
    );
}

#[test]
fn when_the_host_process_crashes_the_lobby_closes_at_once_and_the_clients_lose_the_host() {
    let (mut w, host, clients) = game_through_the_lobby(&[10, 30]);
    let name = w.member(host).lobby().expect("named").to_owned();
    let start = w.now;
    w.crash(host);
    // The server hears the host's connection end 20 ms later and closes the lobby: every
    // member gets the reference server's close, one WebSocket latency after that.
    let reason = (close::PROTOCOL_ERROR, close::HOST_DISCONNECTED.to_owned());
    assert!(w.run_until(ms(100), |w| clients
        .iter()
        .all(|&c| w.member(c).closed == Some(reason.clone()))));
    assert!(w.now - start <= ms(20 + 30));
    assert_eq!(w.lobby().closed, vec![name]);
    assert_eq!(w.lobby().server.connection_count(), 0);
    // The game itself notices that the host went silent: the mesh's peer timeout.
    let peer_timeout = MeshConfig::default().peer_timeout;
    assert!(
        w.run_until(peer_timeout + Duration::from_secs(2), |w| clients
            .iter()
            .all(|&c| w.nodes[c].lost(1)))
    );
    assert!(w.now - start >= peer_timeout, "not before the timeout");
}

#[test]
fn when_the_host_loses_power_the_lobby_notices_only_by_its_keepalive() {
    let (mut w, host, clients) = game_through_the_lobby(&[10, 30]);
    let start = w.now;
    w.vanish(host);
    // Nothing reaches the server: the clients' game loses the host first, by its peer
    // timeout, while the lobby still believes the host is there.
    let peer_timeout = MeshConfig::default().peer_timeout;
    assert!(
        w.run_until(peer_timeout + Duration::from_secs(2), |w| clients
            .iter()
            .all(|&c| w.nodes[c].lost(1)))
    );
    assert_eq!(w.lobby().server.lobby_count(), 1, "the lobby is still open");
    assert!(clients.iter().all(|&c| w.member(c).open));
    // Then the keepalive: no answer to the ping for ping interval + pong timeout since the
    // server last heard from the host.
    let grace = w.lobby().ping_interval + w.lobby().pong_timeout;
    assert!(w.run_until(grace, |w| clients.iter().all(|&c| !w.member(c).open)));
    let closes = &w.lobby().closes;
    assert_eq!(closes[0].0, host);
    assert_eq!(closes[0].1, NO_PONG);
    for &c in &clients {
        assert_eq!(
            w.member(c).closed,
            Some((close::PROTOCOL_ERROR, close::HOST_DISCONNECTED.to_owned()))
        );
    }
    assert!(w.now - start <= grace + ms(30));
    assert!(w.now - start > peer_timeout);
}

#[test]
fn a_player_who_crashes_mid_game_is_announced_by_the_lobby_long_before_any_timeout() {
    let (mut w, host, clients) = game_through_the_lobby(&[10, 10, 10]);
    let gone = clients[1];
    let gone_id = w.id(gone);
    let start = w.now;
    w.crash(gone);
    // The lobby tells the host; the host removes the player, and its game tells the others.
    assert!(w.run_until(LIMIT, |w| [host, clients[0], clients[2]]
        .iter()
        .all(|&n| w.nodes[n].lost(gone_id))));
    assert!(
        w.now - start < Duration::from_secs(1),
        "announced by the lobby, not by a timeout: {:?}",
        w.now - start
    );
    assert!(w.member(host).departed().contains(&gone_id));
    // The others keep playing.
    let (a, b) = (clients[0], clients[2]);
    let a_id = w.id(a);
    send(&mut w, a, b, b"still here");
    assert!(w.run_until(LIMIT, |w| got(w, b, a_id, b"still here")));
}

#[test]
fn a_sealed_lobby_refuses_newcomers_and_the_game_outlives_it() {
    let (mut w, host, clients) = game_through_the_lobby(&[10, 10]);
    let name = w.member(host).lobby().expect("named").to_owned();
    w.seal(host);
    w.run_for(SETTLE);
    assert!(clients.iter().all(|&c| w.member(c).sealed));
    let late = w.join_lobby(JoinOptions::join(&name, false), game);
    assert!(w.run_until(LIMIT, |w| w.member(late).failed.is_some()));
    assert_eq!(
        w.member(late).closed,
        Some((close::PROTOCOL_ERROR, close::LOBBY_IS_SEALED.to_owned()))
    );
    // Ten seconds after the seal the server closes everyone with 1000; the members do not
    // remove each other for leaving a sealed lobby, so the game goes on.
    let seal_close = w.lobby().server.config().seal_close_after;
    assert!(w.run_until(seal_close, |w| clients
        .iter()
        .chain([&host])
        .all(|&n| w.member(n).closed.is_some())));
    for &n in clients.iter().chain([&host]) {
        assert_eq!(
            w.member(n).closed,
            Some((close::NORMAL, close::SEAL_COMPLETE.to_owned()))
        );
    }
    w.run_for(SETTLE);
    assert!(w.everyone_admitted(), "the game outlived its lobby");
    let (a, b) = (clients[0], clients[1]);
    let a_id = w.id(a);
    send(&mut w, a, b, b"after the lobby");
    assert!(w.run_until(LIMIT, |w| got(w, b, a_id, b"after the lobby")));
}

/// Host migration, the lobby's side (the machines' side is the multiplayer layer's): members
/// that opted in hear typed host changes, a plain member hears the demo protocol's frames,
/// and a host that loses power is replaced once a client reports it and the lobby's probe
/// goes unanswered.
#[test]
fn a_migratable_lobby_elects_a_successor_when_the_host_crashes_or_loses_power() {
    use rtcmesh::lobby::{LobbyEvent, Migration};
    let mut w = World::new();
    w.add_lobby(LobbyServerConfig::default());
    let opted = |o: JoinOptions| o.with_migration(Migration::Eligible);
    let (host, name) = w.open_lobby(opted(JoinOptions::create(false)), |mesh| mesh);
    let successor = w.join_lobby(opted(JoinOptions::join(&name, false)), |mesh| mesh);
    let survivor = w.join_lobby(opted(JoinOptions::join(&name, false)), |mesh| mesh);
    let plain = w.join_lobby(JoinOptions::join(&name, false), |mesh| mesh);
    assert!(
        w.run_until(LIMIT, World::everyone_admitted),
        "the players did not meet"
    );
    let (x, y) = (w.id(successor), w.id(survivor));
    assert!(w.member(survivor).client.migration_available());
    assert_eq!(w.member(host).client.successor(), Some(x));

    // The host's process dies: its WebSocket closes and the lobby elects at once.
    w.crash(host);
    let became = LobbyEvent::BecameHost { was: x, epoch: 1 };
    assert!(w.run_until(ms(500), |w| w.member(successor).events.contains(&became)));
    w.run_for(ms(100));
    assert!(w
        .member(survivor)
        .events
        .contains(&LobbyEvent::HostChanged { was: x, epoch: 1 }));
    assert!(w
        .member(successor)
        .events
        .contains(&LobbyEvent::PeerJoined(y)));
    let plain_saw = w.member(plain).events.clone();
    let tail = &plain_saw[plain_saw.len() - 3..];
    assert_eq!(
        tail,
        [
            LobbyEvent::PeerLeft(1),
            LobbyEvent::PeerLeft(x),
            LobbyEvent::PeerJoined(1)
        ],
        "a plain member follows with the demo protocol's frames"
    );
    assert_eq!(w.lobby().host_changes.len(), 1);
    assert!(w.lobby().closed.is_empty(), "the lobby lives on");

    // The new host loses power; its WebSocket stays half-open. One report, no answer to the
    // probe within 500 ms: the survivor is the next host, the old one is fenced.
    w.vanish(successor);
    assert!(w.report_host_lost(survivor));
    let became = LobbyEvent::BecameHost { was: y, epoch: 2 };
    assert!(w.run_until(ms(800), |w| w.member(survivor).events.contains(&became)));
    assert!(w
        .lobby()
        .closes
        .iter()
        .any(|(n, code, _)| *n == successor && *code == close::HOST_REPLACED_CODE));
    assert_eq!(w.member(survivor).client.id(), Some(1));
}
