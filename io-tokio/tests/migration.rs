//! Host migration over real sockets on loopback: an in-process `SignalServer` and four
//! `join_with` sessions running the multiplayer layer with migration on. The host's session
//! goes away at once (its endpoint, UDP socket and WebSocket dropped, as when its process
//! dies); the lobby makes the first member to have joined peer 1, the others follow, and the
//! game goes on. Every wait is bounded. Prints the wall time from the host's death to the
//! last survivor's `HostMigrated`, and to reliable data flowing through the new host.

use std::time::{Duration, Instant};

use rtcmesh::lobby::{LobbyEvent, Migration};
use rtcmesh::{
    MigrationConfig, Multiplayer, MultiplayerConfig, MultiplayerEvent, PeerId, Target, TransferMode,
};
use rtcmesh_tokio::{join_with, JoinOptions, Session, SignalServer};

const LIMIT: Duration = Duration::from_secs(15);

fn migrating(mesh: rtcmesh::Mesh) -> Multiplayer {
    let config = MultiplayerConfig::default().with_migration(MigrationConfig::enabled());
    Multiplayer::new(mesh, config)
}

/// Reads `session`'s events until `pick` says so (bounded).
async fn until<T>(
    session: &mut Session<Multiplayer>,
    limit: Duration,
    mut pick: impl FnMut(MultiplayerEvent) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, session.events.recv())
            .await
            .ok()??;
        if let Some(found) = pick(event) {
            return Some(found);
        }
    }
}

/// Waits until `session` admitted every peer in `peers`.
async fn admitted(session: &mut Session<Multiplayer>, peers: &[PeerId]) -> bool {
    let mut missing: Vec<PeerId> = peers.to_vec();
    let done = until(session, LIMIT, |e| {
        if let MultiplayerEvent::PeerConnected(p) = e {
            missing.retain(|m| *m != p);
        }
        missing.is_empty().then_some(())
    })
    .await;
    done.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_game_goes_on_when_the_hosts_process_dies() {
    let server = SignalServer::bind("127.0.0.1:0".parse().expect("addr"), Default::default())
        .await
        .expect("server");
    let options = JoinOptions::default()
        .with_mesh(false)
        .with_migration(Migration::Eligible);
    let mut host = join_with(&server.url(), "", options.clone(), migrating)
        .await
        .expect("host");
    assert_eq!(host.id(), 1);
    let mut players = Vec::new();
    for _ in 0..3 {
        let session = join_with(&server.url(), &host.lobby, options.clone(), migrating)
            .await
            .expect("join");
        players.push(session);
    }
    let ids: Vec<PeerId> = players.iter().map(|p| p.id()).collect();
    assert!(
        admitted(&mut host, &ids).await,
        "the host admitted everyone"
    );
    for i in 0..players.len() {
        let others: Vec<PeerId> = std::iter::once(1)
            .chain(ids.iter().copied().filter(|&id| id != ids[i]))
            .collect();
        assert!(
            admitted(&mut players[i], &others).await,
            "player {i} met everyone"
        );
    }

    // The host's process dies: its sockets close with it.
    let died = Instant::now();
    drop(host);
    let (successor, survivors) = players.split_at_mut(1);
    let successor = &mut successor[0];
    let was = ids[0];
    let became = until(successor, LIMIT, |e| match e {
        MultiplayerEvent::BecameHost { was, .. } => Some(was),
        _ => None,
    })
    .await;
    assert_eq!(became, Some(was), "the first to join became the host");
    assert_eq!(successor.id(), 1, "its session's id is 1 now");
    let mut lobby_said = Vec::new();
    while let Ok(event) = successor.lobby_events.try_recv() {
        lobby_said.push(event);
    }
    assert!(lobby_said.contains(&LobbyEvent::BecameHost { was, epoch: 1 }));
    let mut migrated = Vec::new();
    for survivor in survivors.iter_mut() {
        let mut log = Vec::new();
        let seen = until(survivor, LIMIT, |e| match e {
            MultiplayerEvent::HostMigrated { was, .. } => Some(was),
            other => {
                log.push(format!("{other:?}"));
                None
            }
        })
        .await;
        let mut lobby_log = Vec::new();
        while let Ok(event) = survivor.lobby_events.try_recv() {
            lobby_log.push(event);
        }
        assert_eq!(
            seen,
            Some(was),
            "player {} follows the new host; it saw {log:?}, lobby {lobby_log:?}, rejected {}",
            survivor.id(),
            survivor.rejected_signals()
        );
        migrated.push(died.elapsed());
    }
    let to_migrated = migrated.iter().max().copied().unwrap_or_default();

    // The game goes on: survivors exchange reliable data through the new host, and with it.
    let (a, b) = (survivors[0].id(), survivors[1].id());
    survivors[0]
        .handle
        .send_bytes(
            Target::Peer(b),
            TransferMode::Reliable,
            0,
            b"relayed".to_vec(),
        )
        .await
        .expect("send");
    successor
        .handle
        .send_bytes(
            Target::Peer(a),
            TransferMode::Reliable,
            0,
            b"from the host".to_vec(),
        )
        .await
        .expect("send");
    let packet = |from: PeerId, data: &'static [u8]| {
        move |e: MultiplayerEvent| match e {
            MultiplayerEvent::Packet(p) if p.from == from && p.data == data => Some(()),
            _ => None,
        }
    };
    let (first, second) = survivors.split_at_mut(1);
    assert!(until(&mut second[0], LIMIT, packet(a, b"relayed"))
        .await
        .is_some());
    assert!(until(&mut first[0], LIMIT, packet(1, b"from the host"))
        .await
        .is_some());
    let goes_on = died.elapsed();
    println!(
        "host process died: last survivor HostMigrated after {to_migrated:?}, reliable data \
         through the new host after {goes_on:?} (loopback, in-process server)"
    );
    assert!(server.metrics().host_migrations >= 1);
}
