//! The game-loop section of the benchmark (`cargo run --release --example bench gameloop`):
//! what one 60 Hz frame of a game that is not async costs on its own thread, with today's
//! `block_on` calls against the calls that never wait, and with a `MioEndpoint` driven by the
//! frame itself; then what publishing the snapshot costs the tokio loop per turn.

use std::time::{Duration, Instant};

use mio::{Events as MioEvents, Poll, Token};
use rtcmesh::{Event, Mesh, MeshConfig, Target, TransferMode};
use rtcmesh_mio::MioEndpoint;
use rtcmesh_tokio::{Endpoint, EndpointConfig, Events, Handle, OutgoingPacket};
use tokio::runtime::Runtime;

use super::{cpu_clock, median_spread, mesh_config, shared_cert, Star};

/// One frame at 60 Hz.
const FRAME: Duration = Duration::from_nanos(16_666_667);

/// A game tick: six unreliable position updates and two reliable inputs, 100 bytes each.
fn tick(frame: u32) -> Vec<OutgoingPacket> {
    (0..8u8)
        .map(|n| OutgoingPacket {
            target: Target::Peer(1),
            mode: if n < 6 {
                TransferMode::Unreliable
            } else {
                TransferMode::Reliable
            },
            channel: 0,
            data: [frame.to_be_bytes().as_slice(), &[n; 96]].concat(),
        })
        .collect()
}

/// How a frame talks to the network.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// Today's: `block_on(handle.send_many(tick))`, `Events::try_recv` until empty,
    /// `block_on(handle.call(..))` for the peers and stats.
    BlockOn,
    /// `handle.try_send_many(tick)`, `events.drain()`, `handle.snapshot()`.
    NeverWait,
    /// A `MioEndpoint` on the game thread: the frame polls the socket with a zero timeout and
    /// does the mesh's work itself (`handle_ready`, `handle_timeout`, `send`, `flush`,
    /// `poll_event`, `connected_peers`, `stats`).
    Mio,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::BlockOn => "`block_on(handle.send_many)` + `block_on(handle.call)` (today)",
            Path::NeverWait => "`try_send_many` + `drain` + `snapshot()` (never waits)",
            Path::Mio => "`MioEndpoint` polled by the frame (does the I/O itself)",
        }
    }
}

/// The game's side of a connection to the echoing peer.
enum Game {
    Tokio(Handle<Mesh>, Events<Event>),
    Mio {
        poll: Poll,
        events: MioEvents,
        endpoint: Box<MioEndpoint<Mesh>>,
    },
}

/// Spawns peer 1 on the runtime: it sends back every packet it gets, as it got it.
fn echo(runtime: &Runtime, b: Handle<Mesh>, mut events: Events<Event>) {
    runtime.spawn(async move {
        while let Some(event) = events.recv().await {
            let mut back = Vec::new();
            let mut next = Some(event);
            while let Some(event) = next {
                if let Event::Packet(p) = event {
                    back.push(OutgoingPacket {
                        target: Target::Peer(p.from),
                        mode: p.mode,
                        channel: p.channel,
                        data: p.data,
                    });
                }
                next = events.try_recv();
            }
            let _ = b.send_many(back).await;
        }
    });
}

fn config() -> MeshConfig {
    mesh_config().with_dtls_cert(Some(shared_cert()))
}

/// The game (peer 2) on a tokio endpoint, connected to an echoing peer 1.
fn tokio_game(runtime: &Runtime) -> Game {
    runtime.block_on(async {
        let spawn = |id| Endpoint::spawn(EndpointConfig::default(), Mesh::create_mesh(id, config()).expect("mesh"));
        let (a, mut a_events) = spawn(2).await.expect("a");
        let (b, mut b_events) = spawn(1).await.expect("b");
        b.add_peer(2, 1).await.expect("peer");
        a.add_peer(1, 1).await.expect("peer");
        let (mut a_up, mut b_up) = (false, false);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !(a_up && b_up) {
            tokio::select! {
                Some(e) = a_events.recv() => match e {
                    Event::Signal(s) => b.handle_signal(2, s.signal).await.expect("signal"),
                    Event::PeerConnected(_) => a_up = true,
                    _ => {}
                },
                Some(e) = b_events.recv() => match e {
                    Event::Signal(s) => a.handle_signal(1, s.signal).await.expect("signal"),
                    Event::PeerConnected(_) => b_up = true,
                    _ => {}
                },
                () = tokio::time::sleep_until(deadline) => panic!("the game's pair did not connect"),
            }
        }
        echo(runtime, b, b_events);
        Game::Tokio(a, a_events)
    })
}

/// The game (peer 2) on a `MioEndpoint` of its own, connected to an echoing tokio peer 1.
fn mio_game(runtime: &Runtime) -> Game {
    let poll = Poll::new().expect("poll");
    let mesh = Mesh::create_mesh(2, config()).expect("mesh");
    let mut endpoint = MioEndpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        None,
        mesh,
        poll.registry(),
        Token(0),
    )
    .expect("bind");
    let (b, mut b_events) = runtime
        .block_on(Endpoint::spawn(
            EndpointConfig::default(),
            Mesh::create_mesh(1, config()).expect("mesh"),
        ))
        .expect("b");
    runtime.block_on(b.add_peer(2, 1)).expect("peer");
    endpoint
        .machine_mut()
        .add_peer(Instant::now(), 1, 1)
        .expect("peer");
    let (mut poll, mut events) = (poll, MioEvents::with_capacity(64));
    let (mut a_up, mut b_up) = (false, false);
    let give_up = Instant::now() + Duration::from_secs(10);
    while !(a_up && b_up) {
        assert!(
            Instant::now() < give_up,
            "the mio game's pair did not connect"
        );
        poll.poll(&mut events, Some(Duration::from_millis(1)))
            .expect("poll");
        let now = Instant::now();
        if !events.is_empty() {
            endpoint.handle_ready(now).expect("ready");
        }
        endpoint.handle_timeout(now).expect("timeout");
        while let Some(event) = endpoint.machine_mut().poll_event() {
            match event {
                Event::Signal(s) => runtime
                    .block_on(b.handle_signal(2, s.signal))
                    .expect("signal"),
                Event::PeerConnected(_) => a_up = true,
                _ => {}
            }
        }
        while let Some(event) = b_events.try_recv() {
            match event {
                Event::Signal(s) => endpoint
                    .machine_mut()
                    .handle_signal(Instant::now(), 1, s.signal)
                    .expect("signal"),
                Event::PeerConnected(_) => b_up = true,
                _ => {}
            }
        }
        let _ = endpoint.flush();
    }
    echo(runtime, b, b_events);
    Game::Mio {
        poll,
        events,
        endpoint: Box::new(endpoint),
    }
}

/// One frame's work on `path`; returns the packets it received (to keep the work honest).
fn frame(runtime: &Runtime, game: &mut Game, path: Path, n: u32) -> usize {
    let mut received = 0;
    match (game, path) {
        (Game::Tokio(handle, events), Path::BlockOn) => {
            for result in runtime.block_on(handle.send_many(tick(n))) {
                // QueueFull refuses only that packet: a game drops stale positions.
                let _ = result;
            }
            while let Some(event) = events.try_recv() {
                received += usize::from(matches!(event, Event::Packet(_)));
            }
            let (peers, stats) = runtime
                .block_on(handle.call(|m, _| (m.connected_peers().count(), m.stats())))
                .expect("running");
            std::hint::black_box((peers, stats));
        }
        (Game::Tokio(handle, events), Path::NeverWait) => {
            // Full hands the tick back: a game drops it (the next one is newer).
            let _ = handle.try_send_many(tick(n));
            for event in events.drain() {
                received += usize::from(matches!(event, Event::Packet(_)));
            }
            let snapshot = handle.snapshot();
            std::hint::black_box((snapshot.connected_peers.len(), snapshot.mesh));
        }
        (
            Game::Mio {
                poll,
                events,
                endpoint,
            },
            Path::Mio,
        ) => {
            poll.poll(events, Some(Duration::ZERO)).expect("poll");
            let now = Instant::now();
            if !events.is_empty() {
                endpoint.handle_ready(now).expect("ready");
            }
            endpoint.handle_timeout(now).expect("timeout");
            for p in tick(n) {
                let _ = endpoint
                    .machine_mut()
                    .send(p.target, p.mode, p.channel, &p.data);
            }
            let _ = endpoint.flush();
            while let Some(event) = endpoint.machine_mut().poll_event() {
                received += usize::from(matches!(event, Event::Packet(_)));
            }
            let mesh = endpoint.machine();
            std::hint::black_box((mesh.connected_peers().count(), mesh.stats()));
        }
        _ => unreachable!("each path has its game"),
    }
    received
}

/// What one run of frames measured: each frame's work in wall time on the game thread (what
/// it delays the frame, scheduling included) and in the thread's CPU time (what it costs the
/// game's core, whatever else runs on the machine).
struct FrameRun {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
    received: usize,
}

/// The `p` quantile (0..=1) of some durations.
fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The unmeasured part of a frame for the game another path is measuring: a mio endpoint
/// that nobody drives for a run would miss its peer's consent checks and be dropped.
fn keep_alive(game: &mut Game) {
    match game {
        Game::Tokio(_, events) => events.drain().for_each(drop),
        Game::Mio {
            poll,
            events,
            endpoint,
        } => {
            poll.poll(events, Some(Duration::ZERO)).expect("poll");
            let now = Instant::now();
            if !events.is_empty() {
                endpoint.handle_ready(now).expect("ready");
            }
            endpoint.handle_timeout(now).expect("timeout");
            while endpoint.machine_mut().poll_event().is_some() {}
            let _ = endpoint.flush();
        }
    }
}

/// `frames` frames at 60 Hz on absolute deadlines: the work, then (unmeasured) the other
/// game's keep-alive, then a sleep to the next frame.
fn run_frames(
    runtime: &Runtime,
    game: &mut Game,
    other: &mut Game,
    path: Path,
    frames: u32,
) -> FrameRun {
    let mut wall = Vec::with_capacity(frames as usize);
    let mut cpu = Vec::with_capacity(frames as usize);
    let mut received = 0;
    let start = Instant::now();
    for n in 0..frames {
        let (begin, begin_cpu) = (Instant::now(), cpu_clock());
        received += frame(runtime, game, path, n);
        wall.push(begin.elapsed());
        cpu.push(cpu_clock() - begin_cpu);
        keep_alive(other);
        let next = start + FRAME * (n + 1);
        if let Some(rest) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(rest);
        }
    }
    FrameRun {
        wall,
        cpu,
        received,
    }
}

/// Formats the median of some durations (µs) with their spread.
fn cell(values: &mut [f64]) -> String {
    let (median, spread) = median_spread(values);
    format!("{median:.1} µs ± {:.0} %", spread * 100.0)
}

pub fn run(quick: bool) {
    let runs = if quick { 3 } else { 5 };
    let frames: u32 = if quick { 180 } else { 600 };
    println!("\n## A game loop at 60 Hz that is not async: cost of one frame on the game thread");
    println!(
        "Each frame sends a tick (6 unreliable + 2 reliable packets of 100 B) to a peer on loopback \
         that echoes them, takes the events that arrived and reads the connected peers and the \
         mesh's stats; the peer runs on a 2-thread tokio runtime. The game thread's CPU time per \
         frame is what the frame costs its core; wall time is how long the frame waited, \
         scheduling on this machine included. {runs} runs of {frames} frames per path, taking \
         turns; each cell is the median of the runs' figure ± the spread ((max − min) ÷ median)."
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut tokio_game = tokio_game(&runtime);
    let mut mio_game = mio_game(&runtime);
    let paths = [Path::BlockOn, Path::NeverWait, Path::Mio];
    // Per path: CPU p50, CPU p99, wall p50, wall p99, wall max (µs), one value per run.
    let mut figures: Vec<[Vec<f64>; 5]> = paths.iter().map(|_| Default::default()).collect();
    for _ in 0..runs {
        for (i, &path) in paths.iter().enumerate() {
            let (game, other) = if path == Path::Mio {
                (&mut mio_game, &mut tokio_game)
            } else {
                (&mut tokio_game, &mut mio_game)
            };
            let run = run_frames(&runtime, game, other, path, frames);
            assert!(run.received > 0, "{}: the echoes came back", path.name());
            let us = |d: Duration| d.as_secs_f64() * 1e6;
            let quantiles = [
                (&run.cpu, 0.5),
                (&run.cpu, 0.99),
                (&run.wall, 0.5),
                (&run.wall, 0.99),
                (&run.wall, 1.0),
            ];
            for (column, (values, p)) in quantiles.into_iter().enumerate() {
                figures[i][column].push(us(percentile(values, p)));
            }
        }
    }
    println!(
        "\n| path | game-thread CPU, p50 | CPU, p99 | wall, p50 | wall, p99 | wall, max | wall p99 ÷ today's |"
    );
    println!("|---|---|---|---|---|---|---|");
    let today_p99 = median_spread(&mut figures[0][3].clone()).0;
    for (i, &path) in paths.iter().enumerate() {
        let p99 = median_spread(&mut figures[i][3].clone()).0;
        let cells: Vec<String> = figures[i].iter_mut().map(|v| cell(v)).collect();
        println!(
            "| {} | {} | {:.3}× |",
            path.name(),
            cells.join(" | "),
            p99 / today_p99
        );
    }
    // Reading the snapshot alone, on the game thread.
    if let Game::Tokio(handle, _) = &tokio_game {
        let reads = if quick { 10_000 } else { 100_000 };
        let start = cpu_clock();
        for _ in 0..reads {
            std::hint::black_box(handle.snapshot());
        }
        println!(
            "\n`handle.snapshot()` alone: {:.2} µs of CPU per read (one connected peer).",
            (cpu_clock() - start).as_secs_f64() * 1e6 / reads as f64
        );
    }
    if let Game::Tokio(handle, _) = &tokio_game {
        handle.close();
    }
    publish_cost(quick);
}

/// What the tokio loop spends per turn publishing its snapshot, for a server with N connected
/// clients (in memory: the same calls `Snapshot::update` makes on the machine), against what
/// that server spends handling one datagram. Up to 64 peers the loop rewrites everything at
/// every turn; above, what looks at every peer (the lists, `MeshStats`) at most once a
/// millisecond, the rest at every turn.
fn publish_cost(quick: bool) {
    println!("\n### Publishing the snapshot: the tokio loop's cost per turn (in memory, CPU time, best of 5)");
    println!("| N connected clients | what looks at every peer (lists, `MeshStats`) | the rest | what a turn pays | one datagram's `handle_datagram` at that N | a turn's publish ÷ datagram |");
    println!("|---|---|---|---|---|---|");
    let sizes: &[usize] = if quick { &[10, 100] } else { &[10, 100, 500] };
    for &n in sizes {
        let mut star = Star::new(n);
        let give_up = Instant::now() + Duration::from_secs(120);
        while star.connected < n || star.clients_connected < n {
            assert!(Instant::now() < give_up, "star of {n} did not connect");
            star.step();
        }
        // Traffic for the per-datagram figure: 100-byte messages from every client, a few
        // rounds.
        let (time_before, datagrams_before) = (star.server_time, star.server_datagrams);
        for _ in 0..5 {
            for c in &mut star.clients {
                c.send(Target::Peer(1), TransferMode::Reliable, 0, &[7; 100])
                    .expect("send");
            }
            for _ in 0..3 {
                star.step();
            }
        }
        let per_datagram = (star.server_time - time_before).as_secs_f64()
            / (star.server_datagrams - datagrams_before).max(1) as f64;
        let reps = if quick { 2_000 } else { 10_000 };
        let best = |work: &mut dyn FnMut()| {
            let mut best = Duration::MAX;
            for _ in 0..5 {
                let start = super::cpu_clock();
                for _ in 0..reps {
                    work();
                }
                best = best.min((super::cpu_clock() - start) / reps);
            }
            best.as_secs_f64()
        };
        let (mut peers, mut connected) = (Vec::new(), Vec::new());
        let mesh = &star.server;
        let every_peer = best(&mut || {
            peers.clear();
            peers.extend(mesh.peers());
            connected.clear();
            connected.extend(mesh.connected_peers());
            std::hint::black_box((&peers, &connected, mesh.stats()));
        });
        let rest = best(&mut || {
            std::hint::black_box((mesh.unique_id(), mesh.status(), mesh.pending_events()));
        });
        let per_turn = if n <= 64 { every_peer + rest } else { rest };
        println!(
            "| {n} | {:.3} µs | {:.3} µs | {:.3} µs{} | {:.2} µs | {:.3}× |",
            every_peer * 1e6,
            rest * 1e6,
            per_turn * 1e6,
            if n <= 64 {
                ""
            } else {
                " (+ the first column at most once a ms)"
            },
            per_datagram * 1e6,
            per_turn / per_datagram
        );
    }
}
