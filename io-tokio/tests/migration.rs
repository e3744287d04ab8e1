//! Host migration over real sockets on loopback: an in-process `SignalServer` and four
//! `join_with` sessions running the multiplayer layer with migration on. The host runs on a
//! runtime of its own, as another process would, and dies with it: its tasks stop mid-flight,
//! so it sends no close notification; its UDP socket and WebSocket close with it. The lobby
//! makes the first member to have joined peer 1, the others follow, and the game goes on.
//! Every wait is bounded. Each test prints the wall time from the host's death to the last
//! survivor's `HostMigrated`, and to reliable data flowing through the new host.
//!
//! - crash: the host's WebSocket closes with its process, the lobby elects at once;
//! - power loss: the host's WebSocket goes through a relay that goes silent and keeps the
//!   lobby's side open (a half-open connection), so the clients must report the host lost
//!   and the lobby decides (its probe goes unanswered).

use std::time::{Duration, Instant};

use rtcmesh::lobby::{LobbyEvent, Migration};
use rtcmesh::{
    MigrationConfig, Multiplayer, MultiplayerConfig, MultiplayerEvent, PeerId, Target, TransferMode,
};
use rtcmesh_tokio::{join_with, JoinOptions, Session, SignalServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const LIMIT: Duration = Duration::from_secs(15);

fn migrating(mesh: rtcmesh::Mesh) -> Multiplayer {
    let config = MultiplayerConfig::default().with_migration(MigrationConfig::enabled());
    Multiplayer::new(mesh, config)
}

fn options() -> JoinOptions {
    JoinOptions::default()
        .with_mesh(false)
        .with_migration(Migration::Eligible)
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

/// The host, on a runtime of its own (another process, as far as sockets go).
struct Host {
    lobby: String,
    /// The peers it admitted, as it admits them.
    admitted: mpsc::UnboundedReceiver<PeerId>,
    die: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    /// Creates a lobby at `url` (the host's own way to the signaling server).
    fn start(url: String) -> Host {
        let (lobby_tx, lobby_rx) = std::sync::mpsc::channel();
        let (admitted_tx, admitted) = mpsc::unbounded_channel();
        let (die, die_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let mut session = runtime
                .block_on(join_with(&url, "", options(), migrating))
                .expect("host joins");
            assert_eq!(session.id(), 1, "whoever creates the lobby hosts it");
            lobby_tx.send(session.lobby.clone()).expect("report");
            // The game reads its events (a loop that stops reading stops the mesh).
            runtime.spawn(async move {
                while let Some(event) = session.events.recv().await {
                    if let MultiplayerEvent::PeerConnected(p) = event {
                        let _ = admitted_tx.send(p);
                    }
                }
            });
            let _ = die_rx.recv_timeout(LIMIT * 4);
            // Dropping the runtime drops its tasks without running them again: no close
            // notification goes out, exactly as when the process is killed; the kernel
            // closes its sockets.
            drop(runtime);
        });
        let lobby = lobby_rx
            .recv_timeout(LIMIT)
            .expect("the host created a lobby");
        Host {
            lobby,
            admitted,
            die,
            thread: Some(thread),
        }
    }

    /// Waits until the host admitted every peer in `peers`.
    async fn admits(&mut self, peers: &[PeerId]) -> bool {
        let mut missing: Vec<PeerId> = peers.to_vec();
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !missing.is_empty() {
            match tokio::time::timeout_at(deadline, self.admitted.recv()).await {
                Ok(Some(p)) => missing.retain(|m| *m != p),
                _ => return false,
            }
        }
        true
    }

    /// The host's process dies; returns when it is gone.
    fn kill(mut self) {
        let _ = self.die.send(());
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the host's thread");
        }
    }
}

/// A TCP relay between one client and the signaling server that can go silent: once cut, it
/// forwards nothing either way and keeps both connections open until the test ends, as a
/// host that lost power leaves its WebSocket half-open on the server.
struct Cable {
    url: String,
    cut: watch::Sender<bool>,
    /// The relay went silent.
    silent: mpsc::UnboundedReceiver<()>,
}

impl Cable {
    async fn to(server: &SignalServer) -> Cable {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let upstream = server.local_addr();
        let (cut, cut_rx) = watch::channel(false);
        let (silent_tx, silent) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            // One client: the host.
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut cut_rx = cut_rx;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                () = async { let _ = cut_rx.wait_for(|cut| *cut).await; } => {
                    // Silence: hold both ends open, read nothing, send nothing.
                    let _ = silent_tx.send(());
                    std::future::pending::<()>().await;
                }
            }
        });
        Cable { url, cut, silent }
    }

    /// Returns once the relay forwards nothing more.
    async fn cut(&mut self) {
        let _ = self.cut.send(true);
        let silent = tokio::time::timeout(LIMIT, self.silent.recv()).await;
        assert!(matches!(silent, Ok(Some(()))), "the cable went silent");
    }
}

/// A game: the host (on its own runtime, reaching the lobby at `host_url`) and three players
/// who all met.
async fn game(
    server: &SignalServer,
    host_url: String,
) -> (Host, Vec<Session<Multiplayer>>, Vec<PeerId>) {
    let mut host = Host::start(host_url);
    let mut players = Vec::new();
    for _ in 0..3 {
        let session = join_with(&server.url(), &host.lobby, options(), migrating)
            .await
            .expect("join");
        players.push(session);
    }
    let ids: Vec<PeerId> = players.iter().map(|p| p.id()).collect();
    assert!(host.admits(&ids).await, "the host admitted everyone");
    for i in 0..players.len() {
        let others: Vec<PeerId> = std::iter::once(1)
            .chain(ids.iter().copied().filter(|&id| id != ids[i]))
            .collect();
        assert!(
            admitted(&mut players[i], &others).await,
            "player {i} met everyone"
        );
    }
    (host, players, ids)
}

/// After the host died at `died`: the first player to have joined becomes the host, the others
/// follow it, and reliable data flows through it and from it. Returns the times from `died`
/// to the last survivor's `HostMigrated` and to that data's arrival.
async fn the_game_goes_on(
    players: &mut [Session<Multiplayer>],
    ids: &[PeerId],
    died: Instant,
) -> (Duration, Duration) {
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
    assert!(
        lobby_said.contains(&LobbyEvent::BecameHost { was, epoch: 1 }),
        "the lobby said so: {lobby_said:?}"
    );
    let mut to_migrated = Duration::ZERO;
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
        to_migrated = to_migrated.max(died.elapsed());
    }

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
    (to_migrated, died.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_game_goes_on_when_the_hosts_process_dies() {
    let server = SignalServer::bind("127.0.0.1:0".parse().expect("addr"), Default::default())
        .await
        .expect("server");
    let (host, mut players, ids) = game(&server, server.url()).await;

    // The host's process dies: its WebSocket closes with it, the lobby elects at once.
    let died = Instant::now();
    host.kill();
    let (to_migrated, goes_on) = the_game_goes_on(&mut players, &ids, died).await;
    println!(
        "host process died: last survivor HostMigrated after {to_migrated:?}, reliable data \
         through the new host after {goes_on:?} (loopback, in-process server)"
    );
    let metrics = server.metrics();
    assert_eq!(metrics.host_migrations, 1);
    assert_eq!(metrics.host_lost_reports, 0, "nobody had to report it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_game_goes_on_when_the_host_loses_power() {
    let server = SignalServer::bind("127.0.0.1:0".parse().expect("addr"), Default::default())
        .await
        .expect("server");
    let mut cable = Cable::to(&server).await;
    let (host, mut players, ids) = game(&server, cable.url.clone()).await;

    // The host loses power: its WebSocket stays open on the lobby's side and says nothing; its
    // UDP goes silent. The clients notice (host_timeout) and report it; the lobby's probe
    // goes unanswered.
    cable.cut().await;
    let died = Instant::now();
    host.kill();
    let (to_migrated, goes_on) = the_game_goes_on(&mut players, &ids, died).await;
    println!(
        "host lost power: last survivor HostMigrated after {to_migrated:?}, reliable data \
         through the new host after {goes_on:?} (loopback, in-process server, host_timeout 1 s)"
    );
    let metrics = server.metrics();
    assert_eq!(metrics.host_migrations, 1);
    assert!(
        metrics.host_lost_reports >= 1,
        "the clients reported the silent host"
    );
    assert!(
        to_migrated >= MigrationConfig::enabled().host_timeout,
        "nobody could know before host_timeout"
    );
}
