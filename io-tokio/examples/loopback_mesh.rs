//! The main demo: a signaling server and 4 peers on loopback, each peer on its own UDP socket.
//! They form a full mesh through the server, then:
//!
//! 1. **play**: ticks at a game's pace (every 20 ms, each peer sends a few packets to every other
//!    peer on every channel), and the program reports what each channel delivered;
//! 2. **overload**: a burst far above what the link carries (each peer sends 500 × 1,000 B per
//!    channel to every other peer at once), which shows what each channel kind does when the link
//!    is saturated: reliable channels deliver everything, late; the partially reliable ones (Godot's
//!    1 ms lifetime) drop what waited too long;
//! 3. **network change**: play again, and a second in, one peer replaces its UDP socket with one
//!    on a new port (what a NAT rebinding or a new network looks like to the others). Nobody is
//!    disconnected and every reliable packet arrives once, in order: the peer's links restart
//!    ICE (where it offers) or are recognised at the new address (where it answers). The
//!    program prints the longest pause in reliable delivery and the moved peer's per-peer stats.
//!
//! Exit code 0 when every reliable packet arrived and every channel delivered; non-zero with a
//! message otherwise.
//!
//! `cargo run --release --example loopback_mesh`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rtcmesh::lobby::LobbyServerConfig;
use rtcmesh::{Event, MeshConfig, PeerId, SendError, Target, TransferMode};
use rtcmesh_tokio::{join, Handle, JoinOptions, OutgoingPacket, SignalServer};

const PEERS: usize = 4;
/// (transfer mode, transfer channel): the three default channels and two extra channels.
const KINDS: [(TransferMode, u16); 5] = [
    (TransferMode::Reliable, 0),
    (TransferMode::UnreliableOrdered, 0),
    (TransferMode::Unreliable, 0),
    (TransferMode::Reliable, 1),
    (TransferMode::Unreliable, 2),
];
/// The game's pace: a tick every 20 ms (50 Hz), 3 packets of 200 B per peer per channel.
const TICK: Duration = Duration::from_millis(20);
const TICKS: usize = 100;
const PER_TICK: usize = 3;
const TICK_PAYLOAD: usize = 200;
/// The overload burst: 500 packets of 1,000 B per peer per channel, all at once (7.5 MB per
/// peer, far more than the link carries within the unreliable channels' 1 ms lifetime).
const BURST: usize = 500;
const BURST_PAYLOAD: usize = 1_000;

/// The first payload byte says which phase sent a packet.
const PLAY: u8 = 1;
const OVERLOAD: u8 = 2;
const CHANGE: u8 = 3;
/// In the network-change phase, the socket is replaced this long after play starts.
const REBIND_AFTER: Duration = Duration::from_secs(1);
/// How long a phase may take to deliver every reliable packet. Across a network change SCTP
/// resends what the old path lost when its retransmission timer fires, and the timer backs off
/// during the outage (1, 3, 7, 15 s after it began; str0m does not expose it), so that phase
/// gets longer.
const WAIT: Duration = Duration::from_secs(10);
const WAIT_AFTER_CHANGE: Duration = Duration::from_secs(40);

/// When the program started, for the times printed with events.
static START: OnceLock<Instant> = OnceLock::new();

fn since_start() -> Duration {
    START.get_or_init(Instant::now).elapsed()
}

#[derive(Default)]
struct Seen {
    connected: Vec<PeerId>,
    /// (phase, mode, channel) → packets received.
    packets: BTreeMap<(u8, u8, u16), usize>,
    /// Peers lost, ICE restarts ended, peers found at a new address (all phases).
    disconnected: usize,
    restarts_ended: usize,
    moves: usize,
    /// Network-change phase, reliable channel 0: the sender's last sequence number and arrival,
    /// and the longest wait between two arrivals from it.
    stream: BTreeMap<PeerId, (u32, Instant, Duration)>,
    out_of_order: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let wall = *START.get_or_init(Instant::now);
    let server = SignalServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        LobbyServerConfig::default(),
    )
    .await
    .map_err(|e| format!("signaling server: {e}"))?;
    println!("signaling server on {}", server.url());
    let options = JoinOptions::default().with_config(
        MeshConfig::default().with_channels([TransferMode::Reliable, TransferMode::Unreliable]),
    );

    let mut sessions = Vec::new();
    let host = join(&server.url(), "", options.clone())
        .await
        .map_err(|e| format!("host: {e}"))?;
    let lobby = host.lobby.clone();
    println!(
        "peer {} created lobby {lobby} on {}",
        host.id(),
        host.handle.local_addr()
    );
    sessions.push(host);
    for _ in 1..PEERS {
        let s = join(&server.url(), &lobby, options.clone())
            .await
            .map_err(|e| format!("join: {e}"))?;
        println!(
            "peer {} joined lobby {lobby} on {}",
            s.id(),
            s.handle.local_addr()
        );
        sessions.push(s);
    }

    // One task per peer records what its mesh reports.
    let mut seen = Vec::new();
    let mut handles: Vec<(PeerId, Handle<rtcmesh::Mesh>)> = Vec::new();
    for mut session in sessions.drain(..) {
        let record = Arc::new(Mutex::new(Seen::default()));
        seen.push((session.id(), record.clone()));
        handles.push((session.id(), session.handle.clone()));
        let me = session.id();
        tokio::spawn(async move {
            while let Some(event) = session.events.recv().await {
                let mut r = record.lock().expect("lock");
                match event {
                    Event::PeerConnected(id) => {
                        println!("peer {me}: peer_connected({id})");
                        r.connected.push(id);
                    }
                    Event::PeerDisconnected(id) => {
                        r.connected.retain(|p| *p != id);
                        r.disconnected += 1;
                    }
                    Event::IceRestartEnded { peer, path } => {
                        println!(
                            "   {:.2?} peer {me}: ICE restart with {peer} ended, now on {path}",
                            since_start()
                        );
                        r.restarts_ended += 1;
                    }
                    Event::PeerMoved { peer, path } => {
                        println!(
                            "   {:.2?} peer {me}: {peer} moved, now on {path}",
                            since_start()
                        );
                        r.moves += 1;
                    }
                    Event::Packet(p) => {
                        let phase = p.data.first().copied().unwrap_or(0);
                        if phase == CHANGE && p.mode == TransferMode::Reliable && p.channel == 0 {
                            let seq = u32::from_le_bytes(p.data[1..5].try_into().expect("4"));
                            let now = Instant::now();
                            let Seen {
                                stream,
                                out_of_order,
                                ..
                            } = &mut *r;
                            let (last, at, gap) =
                                stream
                                    .entry(p.from)
                                    .or_insert((u32::MAX, now, Duration::ZERO));
                            if seq != last.wrapping_add(1) {
                                *out_of_order += 1;
                            }
                            *gap = (*gap).max(now - *at);
                            (*last, *at) = (seq, now);
                        }
                        *r.packets
                            .entry((phase, p.mode as u8, p.channel))
                            .or_default() += 1;
                    }
                    _ => {}
                }
            }
        });
    }

    let connected = |seen: &[(PeerId, Arc<Mutex<Seen>>)]| {
        seen.iter()
            .all(|(_, r)| r.lock().expect("lock").connected.len() == PEERS - 1)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connected(&seen) {
        if Instant::now() > deadline {
            return Err("the mesh did not connect within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let connect_time = wall.elapsed();
    println!("full mesh of {PEERS} peers connected {connect_time:.1?} after start");

    for (id, handle) in &handles {
        if let Some(warning) = handle.socket_buffers().shortfall() {
            println!("peer {id}: {warning}");
        }
    }
    let buffers = handles[0].1.socket_buffers();
    println!(
        "socket buffers: receive {} KiB, send {} KiB",
        buffers.receive / 1024,
        buffers.send / 1024
    );

    let mut failures = Vec::new();
    let expected = TICKS * PER_TICK * (PEERS - 1);
    println!(
        "\n1. play: {TICKS} ticks of {} ms, {PER_TICK} packets of {TICK_PAYLOAD} B per peer per channel each tick",
        TICK.as_millis()
    );
    let start = Instant::now();
    run_phase(&handles, PLAY, TICK_PAYLOAD, |sent| {
        (sent < TICKS * PER_TICK).then_some(PER_TICK)
    })
    .await?;
    let elapsed = wait_reliable(&seen, PLAY, expected, start, WAIT).await;
    report(&seen, PLAY, expected, elapsed, TICK_PAYLOAD, &mut failures);

    let expected = BURST * (PEERS - 1);
    println!(
        "\n2. overload: every peer sends {BURST} packets of {BURST_PAYLOAD} B per channel to every other peer at once"
    );
    let start = Instant::now();
    run_phase(&handles, OVERLOAD, BURST_PAYLOAD, |sent| {
        (sent < BURST).then_some(BURST - sent)
    })
    .await?;
    let elapsed = wait_reliable(&seen, OVERLOAD, expected, start, WAIT).await;
    report(
        &seen,
        OVERLOAD,
        expected,
        elapsed,
        BURST_PAYLOAD,
        &mut failures,
    );
    let total = |mode: TransferMode| {
        seen.iter()
            .map(|(_, r)| {
                let r = r.lock().expect("lock");
                KINDS
                    .iter()
                    .filter(|(m, _)| *m == mode)
                    .map(|&(m, c)| r.packets.get(&(OVERLOAD, m as u8, c)).copied().unwrap_or(0))
                    .sum::<usize>()
            })
            .sum::<usize>() as f64
    };
    let (ordered, unreliable) = (
        total(TransferMode::UnreliableOrdered),
        total(TransferMode::Unreliable) / 2.0, // two unreliable channels
    );
    let fairness = ordered.max(unreliable) / ordered.min(unreliable).max(1.0);
    println!(
        "   fairness under overload: ordered {ordered:.0} vs unreliable {unreliable:.0} (per channel) = {fairness:.2}× apart"
    );

    let expected = TICKS * PER_TICK * (PEERS - 1);
    let (mover, mover_handle) = handles[1].clone();
    let before = mover_handle.local_addr();
    println!(
        "\n3. network change: play again; after {REBIND_AFTER:.0?} peer {mover} replaces its socket ({before}) with one on a new port"
    );
    let rebind = tokio::spawn(async move {
        tokio::time::sleep(REBIND_AFTER).await;
        println!("   {:.2?} peer {mover} replaces its socket", since_start());
        mover_handle
            .rebind("127.0.0.1:0".parse().expect("addr"))
            .await
    });
    let start = Instant::now();
    run_phase(&handles, CHANGE, TICK_PAYLOAD, |sent| {
        (sent < TICKS * PER_TICK).then_some(PER_TICK)
    })
    .await?;
    let after = rebind
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("rebind: {e}"))?;
    let elapsed = wait_reliable(&seen, CHANGE, expected, start, WAIT_AFTER_CHANGE).await;
    report(
        &seen,
        CHANGE,
        expected,
        elapsed,
        TICK_PAYLOAD,
        &mut failures,
    );
    let (mut lost, mut restarts, mut moves, mut unordered) = (0, 0, 0, 0);
    let mut pause = Duration::ZERO;
    for (id, record) in &seen {
        let r = record.lock().expect("lock");
        lost += r.disconnected;
        restarts += r.restarts_ended;
        moves += r.moves;
        unordered += r.out_of_order;
        for (&from, &(_, _, gap)) in &r.stream {
            if from == mover || *id == mover {
                pause = pause.max(gap);
            }
        }
    }
    println!(
        "   peer {mover} now on {after}: {restarts} ICE restarts ended, {moves} moves seen, {lost} peers lost, \
         {unordered} reliable packets out of order; longest pause in reliable delivery to or from it {pause:.2?}"
    );
    if lost > 0 || unordered > 0 {
        failures.push(format!(
            "network change: {lost} peers lost, {unordered} reliable packets out of order"
        ));
    }
    if restarts + moves == 0 {
        failures.push("network change: nobody restarted ICE or saw the peer move".into());
    }
    let stats = handles[1]
        .1
        .call(|mesh, _| {
            let peers: Vec<PeerId> = mesh.peers().collect();
            peers
                .into_iter()
                .filter_map(|id| mesh.peer_stats(id))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| e.to_string())?;
    println!("   peer {mover}'s per-peer stats:");
    for s in stats {
        let rtt = s
            .round_trip_time
            .map_or("-".to_owned(), |t| format!("{t:.2?}"));
        let path = s.path.map_or("-".to_owned(), |p| p.to_string());
        println!(
            "   to {:>10}: rtt {rtt}, path {path}, {} datagrams / {} KB sent, {} / {} KB received, {} ICE restarts, {} moves",
            s.peer,
            s.datagrams_sent,
            s.bytes_sent / 1000,
            s.datagrams_received,
            s.bytes_received / 1000,
            s.ice_restarts,
            s.moves
        );
    }

    let mut drops = 0;
    for (_, handle) in &handles {
        if let Ok(stats) = handle.stats().await {
            drops += stats.receive_buffer_drops.unwrap_or(0);
        }
    }
    println!("\nUDP datagrams the kernel dropped (full receive buffers), all peers: {drops}");
    for (_, handle) in &handles {
        handle.close();
    }
    if failures.is_empty() {
        println!("OK in {:.1?}", wall.elapsed());
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Every peer sends to every other peer on every channel: `batch(sent)` says how many packets
/// per channel and target to send next (`None`: done); with a batch of a few packets a tick is
/// [`TICK`] long, otherwise the peer sends as fast as its queues take it. Packets refused with
/// `QueueFull` are sent again after a short wait (backpressure, not loss).
async fn run_phase(
    handles: &[(PeerId, Handle<rtcmesh::Mesh>)],
    phase: u8,
    size: usize,
    batch: impl Fn(usize) -> Option<usize> + Clone + Send + 'static,
) -> Result<(), String> {
    let mut senders = Vec::new();
    for (me, handle) in handles.iter().cloned() {
        let targets: Vec<PeerId> = handles
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect();
        let batch = batch.clone();
        senders.push(tokio::spawn(async move {
            let mut data = vec![0x5A; size];
            data[0] = phase;
            let mut sent = 0;
            let mut tick = tokio::time::interval(TICK);
            while let Some(n) = batch(sent) {
                let paced = n <= PER_TICK;
                if paced {
                    tick.tick().await;
                }
                // Bytes 1..5: the packet's sequence number per target and channel.
                let mut todo: Vec<OutgoingPacket> = (sent..sent + n)
                    .flat_map(|seq| {
                        targets.iter().flat_map(move |&to| {
                            KINDS
                                .iter()
                                .map(move |&(mode, channel)| (seq, to, mode, channel))
                        })
                    })
                    .map(|(seq, to, mode, channel)| {
                        data[1..5].copy_from_slice(&(seq as u32).to_le_bytes());
                        OutgoingPacket {
                            target: Target::Peer(to),
                            mode,
                            channel,
                            data: data.clone(),
                        }
                    })
                    .collect();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !todo.is_empty() {
                    if Instant::now() > deadline {
                        return Err("send queues stayed full for 30 s".to_owned());
                    }
                    // Send what fits in one turn of the loop, keep the rest for the next.
                    let chunk: Vec<OutgoingPacket> = todo.drain(..todo.len().min(256)).collect();
                    let results = handle.send_many(chunk.clone()).await;
                    let mut refused = Vec::new();
                    for (packet, result) in chunk.into_iter().zip(results) {
                        match result {
                            Ok(()) => {}
                            Err(SendError::QueueFull(_)) => refused.push(packet),
                            Err(e) => return Err(format!("send: {e}")),
                        }
                    }
                    if !refused.is_empty() {
                        refused.append(&mut todo);
                        todo = refused;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                sent += n;
            }
            Ok::<(), String>(())
        }));
    }
    for sender in senders {
        sender.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Waits (at most `limit`) until every peer has all `expected` reliable packets of `phase`,
/// then a moment for the partially reliable stragglers; returns the time since `start`.
async fn wait_reliable(
    seen: &[(PeerId, Arc<Mutex<Seen>>)],
    phase: u8,
    expected: usize,
    start: Instant,
    limit: Duration,
) -> Duration {
    let complete = || {
        seen.iter().all(|(_, r)| {
            let r = r.lock().expect("lock");
            KINDS
                .iter()
                .filter(|(mode, _)| *mode == TransferMode::Reliable)
                .all(|&(m, c)| {
                    r.packets.get(&(phase, m as u8, c)).copied().unwrap_or(0) >= expected
                })
        })
    };
    let deadline = Instant::now() + limit;
    while !complete() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    elapsed
}

/// Prints what every peer received per channel in `phase`, with the totals, and records
/// failures: a reliable channel short of `expected`, or a channel with nothing at a game's pace. Partially
/// reliable channels are reported, not judged: with Godot's 1 ms lifetime, what they deliver
/// depends on how promptly this machine schedules the peers' threads.
fn report(
    seen: &[(PeerId, Arc<Mutex<Seen>>)],
    phase: u8,
    expected: usize,
    elapsed: Duration,
    size: usize,
    failures: &mut Vec<String>,
) {
    println!("   per peer, of {expected} sent to it per channel:");
    let mut totals = [0usize; KINDS.len()];
    for (id, record) in seen {
        let r = record.lock().expect("lock");
        let mut line = format!("   peer {id:>10}:");
        for (k, &(mode, channel)) in KINDS.iter().enumerate() {
            let got = r
                .packets
                .get(&(phase, mode as u8, channel))
                .copied()
                .unwrap_or(0);
            totals[k] += got;
            line += &format!(" {mode:?}/ch{channel}={got}");
            // In the overload burst a partially reliable channel may rightly deliver nothing:
            // its packets expire 1 ms after `send` (W3C's maxPacketLifeTime, counted as a
            // browser counts it) while thousands wait ahead of them.
            if got == 0 && (phase == PLAY || mode == TransferMode::Reliable) {
                failures.push(format!(
                    "peer {id} got nothing on {mode:?} channel {channel}"
                ));
            } else if mode == TransferMode::Reliable && got != expected {
                failures.push(format!(
                    "peer {id} got {got}/{expected} reliable on channel {channel}"
                ));
            }
        }
        println!("{line}");
    }
    let all = expected * seen.len();
    let mut line = "   delivered:".to_owned();
    for (k, &(mode, channel)) in KINDS.iter().enumerate() {
        let percent = totals[k] as f64 * 100.0 / all as f64;
        line += &format!(" {mode:?}/ch{channel} {percent:.1} %");
    }
    println!("{line}");
    let packets: usize = totals.iter().sum();
    let secs = elapsed.as_secs_f64();
    println!(
        "   {packets} packets, {:.1} MB in {elapsed:.2?} = {:.0} packets/s, {:.1} MB/s",
        (packets * size) as f64 / 1e6,
        packets as f64 / secs,
        (packets * size) as f64 / 1e6 / secs
    );
}
