//! Host migration driven by hand: a few multiplayer peers on an in-memory network (no loss,
//! 1 ms per hop), and the test playing the lobby (`host_changed`). The stories with the real
//! lobby server in the loop, loss and crashes are in `tests/tests/migration.rs`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::config::MeshConfig;

const LAN: Duration = Duration::from_millis(1);

/// A game: players by index, each with its address; the test is the lobby.
struct Game {
    players: Vec<Player>,
    now: Instant,
}

struct Player {
    mp: Multiplayer,
    addr: SocketAddr,
    /// Crashed: sends, receives and runs nothing.
    dead: bool,
    /// Everything it emitted but signals, with when.
    log: Vec<(Instant, MultiplayerEvent)>,
}

fn config() -> MultiplayerConfig {
    MultiplayerConfig::default().with_migration(MigrationConfig::enabled())
}

impl Game {
    /// A server and clients `ids`, all opted in, connected through their server.
    fn new(ids: &[PeerId], config: MultiplayerConfig) -> Game {
        let now = Instant::now();
        let mut players = Vec::new();
        for (i, &id) in std::iter::once(&SERVER_ID).chain(ids).enumerate() {
            let mesh = if id == SERVER_ID {
                Mesh::create_server(MeshConfig::default())
            } else {
                Mesh::create_client(id, MeshConfig::default())
            };
            let mut mp = Multiplayer::new(mesh.expect("mesh"), config.clone());
            let addr: SocketAddr = format!("127.0.0.1:{}", 7000 + i).parse().expect("addr");
            mp.mesh_mut().add_host_candidate(addr).expect("candidate");
            mp.set_lobby_migrates(true);
            for &other in std::iter::once(&SERVER_ID).chain(ids) {
                if other != id {
                    mp.set_peer_migrates(other, true);
                }
            }
            players.push(Player {
                mp,
                addr,
                dead: false,
                log: Vec::new(),
            });
        }
        let mut game = Game { players, now };
        for &id in ids {
            let c = game.index(id);
            game.players[0]
                .mp
                .add_peer(now, id, 1)
                .expect("server adds");
            game.players[c]
                .mp
                .add_peer(now, SERVER_ID, 1)
                .expect("client adds");
        }
        let n = ids.len();
        game.run_until("everyone connected", |g| {
            g.players[1..].iter().all(|p| p.mp.peers().count() == n)
        });
        game.run_for(Duration::from_millis(50));
        for p in &mut game.players {
            p.log.clear();
        }
        game
    }

    /// The player that goes by `id` now (alive or not).
    fn index(&self, id: PeerId) -> usize {
        self.players
            .iter()
            .position(|p| !p.dead && p.mp.unique_id() == id)
            .or_else(|| self.players.iter().position(|p| p.mp.unique_id() == id))
            .expect("no such player")
    }

    fn mp(&mut self, id: PeerId) -> &mut Multiplayer {
        let i = self.index(id);
        &mut self.players[i].mp
    }

    /// One millisecond of the world: timers, datagrams, signals.
    fn step(&mut self) {
        self.now += LAN;
        let now = self.now;
        let by_addr: BTreeMap<SocketAddr, usize> = self
            .players
            .iter()
            .enumerate()
            .map(|(i, p)| (p.addr, i))
            .collect();
        let mut datagrams = Vec::new();
        let mut signals = Vec::new();
        for (i, p) in self.players.iter_mut().enumerate() {
            if p.dead {
                continue;
            }
            p.mp.handle_timeout(now);
            while let Some(t) = p.mp.poll_transmit() {
                datagrams.push(t);
            }
            while let Some(e) = p.mp.poll_event() {
                match e {
                    MultiplayerEvent::Mesh(Event::Signal(s)) => {
                        signals.push((i, p.mp.unique_id(), s))
                    }
                    other => p.log.push((now, other)),
                }
            }
        }
        for t in datagrams {
            if let Some(&to) = by_addr.get(&t.destination) {
                let p = &mut self.players[to];
                if !p.dead {
                    p.mp.handle_datagram(now, t.source, t.destination, &t.contents);
                }
            }
        }
        for (_, from, s) in signals {
            // The lobby routes by id: whoever goes by `s.to` now (a server that handed over
            // is no longer 1 at the lobby).
            if let Some(to) = self.players.iter().position(|p| {
                !p.dead
                    && !p.mp.mesh().is_closed()
                    && !p.mp.is_leaving()
                    && p.mp.unique_id() == s.to
            }) {
                if let Err(e) = self.players[to].mp.handle_signal(now, from, s.signal) {
                    eprintln!("signal {from} -> {}: {e}", s.to);
                }
            }
        }
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Game) -> bool) {
        for _ in 0..30_000 {
            if done(self) {
                return;
            }
            self.step();
        }
        for (i, p) in self.players.iter().enumerate() {
            eprintln!(
                "player {i} ({}): {:?}",
                p.mp.unique_id(),
                story(&p.log.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>())
            );
            eprintln!(
                "  status {:?} mesh {:?} peers {:?}",
                p.mp.status(),
                p.mp.mesh(),
                p.mp.peers().collect::<Vec<_>>()
            );
        }
        panic!("{what}: not within 30 s");
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// The lobby names `was` the server from `epoch` on, telling the players in `to`.
    fn host_change(&mut self, to: &[usize], epoch: u32, was: PeerId) {
        let now = self.now;
        for &i in to {
            self.players[i]
                .mp
                .host_changed(now, epoch, was)
                .expect("host change");
        }
    }

    fn events(&self, i: usize) -> Vec<MultiplayerEvent> {
        self.players[i].log.iter().map(|(_, e)| e.clone()).collect()
    }

    fn packets(&self, i: usize) -> Vec<(PeerId, Vec<u8>)> {
        self.players[i]
            .log
            .iter()
            .filter_map(|(_, e)| match e {
                MultiplayerEvent::Packet(p) => Some((p.from, p.data.clone())),
                _ => None,
            })
            .collect()
    }

    fn has(&self, i: usize, event: &MultiplayerEvent) -> bool {
        self.players[i].log.iter().any(|(_, e)| e == event)
    }

    fn lobby_requests(&self, i: usize) -> Vec<LobbyRequest> {
        self.players[i]
            .log
            .iter()
            .filter_map(|(_, e)| match e {
                MultiplayerEvent::ToLobby(r) => Some(*r),
                _ => None,
            })
            .collect()
    }
}

/// The events a story cares about: peers, status, migration (not packets or mesh detail).
fn story(events: &[MultiplayerEvent]) -> Vec<MultiplayerEvent> {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                MultiplayerEvent::PeerConnected(_)
                    | MultiplayerEvent::PeerDisconnected(_)
                    | MultiplayerEvent::HostMigrating { .. }
                    | MultiplayerEvent::HostMigrated { .. }
                    | MultiplayerEvent::BecameHost { .. }
                    | MultiplayerEvent::MigrationFailed { .. }
                    | MultiplayerEvent::Mesh(Event::StatusChanged(_))
            )
        })
        .cloned()
        .collect()
}

use ConnectionStatus::{Connected, Connecting, Disconnected};
use MultiplayerEvent::{BecameHost, HostMigrated, HostMigrating, PeerDisconnected};

fn status(s: ConnectionStatus) -> MultiplayerEvent {
    MultiplayerEvent::Mesh(Event::StatusChanged(s))
}

#[test]
fn host_crash_the_lobby_picks_2_and_everyone_keeps_their_id() {
    let mut game = Game::new(&[2, 3, 4], config());
    game.players[0].dead = true; // the server's process dies
    game.host_change(&[1, 2, 3], 1, 2);
    game.run_until("migrated", |g| {
        g.players[2..]
            .iter()
            .all(|p| p.log.iter().any(|(_, e)| matches!(e, HostMigrated { .. })))
    });
    let lost = HostMigrating {
        epoch: 0,
        reason: MigrationReason::Lost,
    };
    assert_eq!(
        story(&game.events(1)),
        vec![
            lost.clone(),
            status(Connecting),
            BecameHost { epoch: 1, was: 2 },
            status(Connected)
        ]
    );
    for i in [2, 3] {
        assert_eq!(
            story(&game.events(i)),
            vec![
                lost.clone(),
                status(Connecting),
                HostMigrated { epoch: 1, was: 2 },
                status(Connected)
            ],
            "player {i}"
        );
    }
    let new_host = &game.players[1].mp;
    assert_eq!(
        (new_host.unique_id(), new_host.mesh().mode()),
        (1, Mode::Server)
    );
    assert_eq!(new_host.peers().collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(new_host.epoch(), 1);
    assert_eq!(game.players[2].mp.peers().collect::<Vec<_>>(), vec![1, 4]);
    assert_eq!(game.players[2].mp.status(), Connected);
    // The game goes on through the new server, both ways.
    let now = game.now;
    game.mp(3)
        .send_bytes(
            Target::Peer(4),
            TransferMode::Reliable,
            0,
            b"via the new host",
        )
        .expect("relayed");
    game.mp(1)
        .send_bytes(Target::All, TransferMode::Reliable, 0, b"from the new host")
        .expect("sent");
    game.run_until("delivered", |g| g.packets(3).len() == 2);
    let mut got = game.packets(3);
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, b"from the new host".to_vec()),
            (3, b"via the new host".to_vec())
        ]
    );
    assert!(game.now - now < Duration::from_millis(100));
}

#[test]
fn sends_while_the_server_changes_are_held_for_the_new_one() {
    let mut game = Game::new(&[2, 3, 4], config());
    game.players[0].dead = true;
    game.host_change(&[2], 1, 2);
    // Player 3 was told first; it keeps playing meanwhile.
    let p3 = &mut game.players[2].mp;
    assert_eq!(p3.status(), Connecting);
    p3.send_bytes(Target::Peer(1), TransferMode::Reliable, 0, b"to the host")
        .expect("held");
    p3.send_bytes(Target::Peer(4), TransferMode::Reliable, 0, b"to 4")
        .expect("held");
    p3.send_bytes(Target::All, TransferMode::Unreliable, 0, b"position")
        .expect("dropped, counted");
    assert_eq!(p3.stats().migration_held, 2);
    assert_eq!(p3.stats().migration_dropped, 1);
    // Held up to 256 KiB.
    let big = vec![7; 60 * 1024];
    for _ in 0..4 {
        p3.send_bytes(Target::Peer(1), TransferMode::Reliable, 0, &big)
            .expect("held");
    }
    assert!(matches!(
        p3.send_bytes(Target::Peer(1), TransferMode::Reliable, 0, &big),
        Err(SendError::QueueFull(_))
    ));
    game.host_change(&[1, 3], 1, 2);
    game.run_until("delivered", |g| {
        !g.packets(1).is_empty() && !g.packets(3).is_empty()
    });
    game.run_until("all held arrived", |g| g.packets(1).len() == 5);
    let got = game.packets(1);
    assert_eq!(got[0], (3, b"to the host".to_vec()));
    assert!(got[1..].iter().all(|p| *p == (3, big.clone())));
    assert_eq!(game.packets(3), vec![(3, b"to 4".to_vec())]);
}

#[test]
fn the_successor_dies_too_and_the_next_in_line_takes_over() {
    let mut game = Game::new(&[2, 3, 4], config());
    game.players[0].dead = true;
    game.host_change(&[1, 2, 3], 1, 2);
    game.step();
    game.players[1].dead = true; // 2 dies before anyone reached it
    game.host_change(&[2, 3], 2, 3);
    game.run_until("migrated", |g| {
        g.players[3]
            .log
            .iter()
            .any(|(_, e)| matches!(e, HostMigrated { .. }))
    });
    assert_eq!(
        story(&game.events(2)),
        vec![
            HostMigrating {
                epoch: 0,
                reason: MigrationReason::Lost
            },
            status(Connecting),
            PeerDisconnected(2),
            BecameHost { epoch: 2, was: 3 },
            status(Connected)
        ]
    );
    assert_eq!(
        story(&game.events(3)),
        vec![
            HostMigrating {
                epoch: 0,
                reason: MigrationReason::Lost
            },
            status(Connecting),
            PeerDisconnected(2),
            HostMigrated { epoch: 2, was: 3 },
            status(Connected)
        ]
    );
    assert_eq!(game.players[3].mp.peers().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn survivors_not_back_in_the_rejoin_window_are_removed() {
    let mut game = Game::new(&[2, 3, 4, 5], config());
    game.players[0].dead = true;
    game.players[4].dead = true; // 5 went down with the host
    game.host_change(&[1, 2, 3], 1, 2);
    game.run_until("migrated", |g| {
        g.players[2..4]
            .iter()
            .all(|p| p.log.iter().any(|(_, e)| matches!(e, HostMigrated { .. })))
    });
    assert!(game.players[1].mp.has_peer(5), "still expected");
    assert!(!game.has(1, &PeerDisconnected(5)));
    game.run_for(Duration::from_secs(3));
    for i in 1..4 {
        assert!(game.has(i, &PeerDisconnected(5)), "player {i}");
        assert!(!game.players[i].mp.has_peer(5));
    }
    assert_eq!(game.players[2].mp.peers().collect::<Vec<_>>(), vec![1, 4]);
}

#[test]
fn a_graceful_leave_loses_nothing_and_the_snapshot_comes_before_became_host() {
    let mut game = Game::new(&[2, 3, 4], config());
    let now = game.now;
    // Everyone has things in flight when the host leaves.
    let host = &mut game.players[0].mp;
    assert_eq!(host.successor(), Some(2));
    host.send_bytes(Target::Peer(2), TransferMode::Reliable, 0, b"snapshot")
        .expect("sent");
    for n in 0..20u8 {
        game.mp(3)
            .send_bytes(Target::Peer(4), TransferMode::Reliable, 0, &[n])
            .expect("sent");
        game.mp(4)
            .send_bytes(Target::Peer(1), TransferMode::Reliable, 0, &[n])
            .expect("sent");
    }
    game.players[0].mp.leave(now);
    game.run_until("hand-over asked", |g| !g.lobby_requests(0).is_empty());
    assert_eq!(
        game.lobby_requests(0),
        vec![LobbyRequest::HandOver {
            to: Some(2),
            epoch: 0
        }]
    );
    // The old host got everything sent to it before the fence.
    let to_host: Vec<_> = game
        .packets(0)
        .into_iter()
        .filter(|(from, _)| *from == 4)
        .collect();
    assert_eq!(to_host.len(), 20);
    // Sends made after the fence are held for the new host.
    for n in 20..30u8 {
        game.mp(3)
            .send_bytes(Target::Peer(4), TransferMode::Reliable, 0, &[n])
            .expect("held");
    }
    game.host_change(&[0, 1, 2, 3], 1, 2);
    game.run_until("migrated", |g| {
        g.players[2..]
            .iter()
            .all(|p| p.log.iter().any(|(_, e)| matches!(e, HostMigrated { .. })))
            && g.packets(3).len() == 30
    });
    let left = HostMigrating {
        epoch: 0,
        reason: MigrationReason::Left,
    };
    let events = game.events(1);
    let snapshot = events
        .iter()
        .position(|e| matches!(e, MultiplayerEvent::Packet(p) if p.data == b"snapshot"))
        .expect("snapshot arrived");
    let became = events
        .iter()
        .position(|e| matches!(e, BecameHost { .. }))
        .expect("became host");
    assert!(snapshot < became, "{events:?}");
    assert_eq!(story(&events)[..2], [left, status(Connecting)]);
    // Every reliable packet from 3 to 4 arrived, in order, none twice.
    let got: Vec<u8> = game.packets(3).into_iter().map(|(_, d)| d[0]).collect();
    assert_eq!(got, (0..30).collect::<Vec<u8>>());
    // The old host closed once its clients moved.
    game.run_until("old host closed", |g| {
        g.players[0].mp.status() == Disconnected
    });
    assert!(!game.has(0, &MultiplayerEvent::MigrationFailed { epoch: 0 }));
    for i in 1..4 {
        assert_eq!(game.players[i].mp.stats().migration_dropped, 0);
        assert!(!game
            .events(i)
            .iter()
            .any(|e| matches!(e, PeerDisconnected(_))));
    }
    // 0.2 s after leave() the game goes on with 1 ms hops.
    assert!(game.now - now < Duration::from_millis(200));
}

#[test]
fn a_silent_host_is_reported_to_the_lobby_after_host_timeout() {
    let mut game = Game::new(&[2, 3], config());
    // Idle for 3 s: keepalives keep the clients quiet.
    game.run_for(Duration::from_secs(3));
    assert!(game.lobby_requests(1).is_empty());
    assert!(game.players[1].mp.stats().migration_refused == 0);
    let silent_at = game.now;
    game.players[0].dead = true; // power loss: nothing more from it
    game.run_until("reported", |g| !g.lobby_requests(1).is_empty());
    assert_eq!(
        game.lobby_requests(1),
        vec![LobbyRequest::HostLost { epoch: 0 }]
    );
    let after = game.now - silent_at;
    assert!(
        after >= Duration::from_millis(1000) && after < Duration::from_millis(1300),
        "{after:?}"
    );
    // Reported once; the status does not change until the lobby decides.
    game.run_for(Duration::from_secs(1));
    assert_eq!(game.lobby_requests(1).len(), 1);
    assert_eq!(game.players[1].mp.status(), Connected);
}

#[test]
fn no_decision_in_time_fails_the_migration() {
    let quick = config()
        .with_migration(MigrationConfig::enabled().with_migration_timeout(Duration::from_secs(2)));
    let mut game = Game::new(&[2, 3], quick);
    game.players[0].dead = true;
    game.host_change(&[1], 1, 3); // 2 hears of 3, which never hears anything
    game.run_until("failed", |g| g.players[1].mp.status() == Disconnected);
    assert_eq!(
        story(&game.events(1)),
        vec![
            HostMigrating {
                epoch: 0,
                reason: MigrationReason::Lost
            },
            status(Connecting),
            MultiplayerEvent::MigrationFailed { epoch: 1 },
            PeerDisconnected(1),
            status(Disconnected)
        ]
    );
    assert_eq!(game.players[1].mp.peers().count(), 0);
}

#[test]
fn a_server_the_lobby_replaced_steps_down() {
    // Cut off from everyone, the host was replaced; the lobby tells it when it is back.
    let mut game = Game::new(&[2, 3], config());
    let now = game.now;
    assert_eq!(game.players[0].mp.host_changed(now, 1, 2), Ok(()));
    game.step();
    assert_eq!(
        story(&game.events(0)),
        vec![
            MultiplayerEvent::MigrationFailed { epoch: 0 },
            PeerDisconnected(2),
            PeerDisconnected(3),
            status(Disconnected)
        ]
    );
    assert_eq!(game.players[0].mp.status(), Disconnected);
}

#[test]
fn stale_and_malformed_host_changes_are_refused() {
    let mut game = Game::new(&[2, 3], config());
    let now = game.now;
    game.host_change(&[1, 2], 2, 2);
    let p = &mut game.players[2].mp;
    assert_eq!(
        p.host_changed(now, 2, 3),
        Err(MigrationError::StaleEpoch {
            epoch: 2,
            current: 2
        })
    );
    assert_eq!(
        p.host_changed(now, 3, 1),
        Err(MigrationError::InvalidHost(1))
    );
    let mut off = Multiplayer::new(
        Mesh::create_client(5, MeshConfig::default()).expect("mesh"),
        MultiplayerConfig::default(),
    );
    assert_eq!(off.host_changed(now, 1, 2), Err(MigrationError::Disabled));
    let mut mesh_mode = Multiplayer::new(
        Mesh::create_mesh(5, MeshConfig::default()).expect("mesh"),
        config(),
    );
    assert_eq!(
        mesh_mode.host_changed(now, 1, 2),
        Err(MigrationError::NotClientServer)
    );
}

#[test]
fn without_migration_nothing_new_goes_on_the_wire() {
    // Migration on at the clients only: a server without it sends no keepalive, so the
    // clients see no private SYS command (and report nothing).
    let mut game = Game::new(&[2, 3], config());
    game.players[0].mp.config.migration.enabled = false;
    game.run_for(Duration::from_secs(2));
    for i in 1..3 {
        let stats = game.players[i].mp.stats();
        assert_eq!((stats.migration_refused, stats.malformed), (0, 0));
    }
    // A plain client (not opted in) gets nothing private either, from a migrating server.
    let mut game = Game::new(&[2, 3], config());
    game.players[0].mp.set_peer_migrates(3, false);
    game.players[2].mp.config.migration.enabled = false;
    let now = game.now;
    game.players[0].mp.leave(now);
    game.run_for(Duration::from_secs(2));
    let plain = game.players[2].mp.stats();
    assert_eq!(
        (plain.migration_refused, plain.malformed, plain.unsupported),
        (0, 0, 0)
    );
    // The opted-in one took part in the hand-over.
    assert!(game.has(
        1,
        &HostMigrating {
            epoch: 0,
            reason: MigrationReason::Left
        }
    ));
}

#[test]
fn a_client_told_to_reconnect_keeps_the_game_and_forgets_who_left_meanwhile() {
    // Player 4 reported its server lost, but the lobby found the server alive: both are told
    // to connect again (PEER_DISCONNECT + PEER_CONNECT, what LobbyClient::apply does with it).
    let mut game = Game::new(&[2, 3, 4], config());
    let now = game.now;
    game.players[3].mp.remove_peer(SERVER_ID);
    game.players[0].mp.remove_peer(4);
    // Meanwhile 3 leaves the game; 4 is not there to hear of it.
    game.players[2].dead = true;
    game.players[0].mp.remove_peer(3);
    game.step();
    game.players[0]
        .mp
        .add_peer(now, 4, 1)
        .expect("host re-adds 4");
    game.players[3]
        .mp
        .add_peer(now, SERVER_ID, 1)
        .expect("4 reconnects");
    game.run_until("back", |g| {
        g.players[3]
            .log
            .iter()
            .any(|(_, e)| matches!(e, HostMigrated { .. }))
    });
    game.run_for(Duration::from_millis(50));
    assert_eq!(
        story(&game.events(3)),
        vec![
            HostMigrating {
                epoch: 0,
                reason: MigrationReason::Lost
            },
            status(Connecting),
            HostMigrated { epoch: 0, was: 1 },
            status(Connected),
            PeerDisconnected(3)
        ]
    );
    assert_eq!(game.players[3].mp.peers().collect::<Vec<_>>(), vec![1, 2]);
}

/// A successor promoted while its old host still drains (a graceful leave whose host died
/// before `HOST_DONE`) may outlast its rejoin window: the window closes once the switch ends,
/// and meanwhile its deadline is no reason to wake the loop (it used to be reported as due,
/// again and again: a busy loop until the switch ended).
#[test]
fn a_rejoin_window_over_during_the_switch_does_not_spin_the_loop() {
    let mut game = Game::new(&[2, 3], config());
    let now = game.now;
    game.players[0].mp.leave(now);
    game.step();
    // The old host dies before its clients' STOPPED came back: no HOST_DONE.
    game.players[0].dead = true;
    game.host_change(&[1, 2], 1, 2);
    game.run_for(Duration::from_millis(3_500));
    let successor = &game.players[1].mp;
    assert!(successor.is_migrating(), "still draining the old host");
    let next = successor.poll_timeout().expect("a timer");
    assert!(
        next > game.now,
        "due again at once: {next:?} <= {:?}",
        game.now
    );
}
