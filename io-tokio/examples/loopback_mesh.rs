//! The main demo: a signaling server and 4 peers on loopback, each peer on its own UDP socket.
//! They form a full mesh through the server, exchange packets on every channel kind, and the
//! program prints the connections, per-peer counts and a throughput line. Exit code 0 when every
//! reliable packet arrived and every channel delivered; non-zero with a message otherwise.
//!
//! `cargo run --release --example loopback_mesh`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtcmesh::lobby::LobbyServerConfig;
use rtcmesh::{Event, MeshConfig, PeerId, SendError, Target, TransferMode};
use rtcmesh_tokio::{join, Handle, JoinOptions, SignalServer};

const PEERS: usize = 4;
const PACKETS_PER_KIND: usize = 500;
const PAYLOAD: usize = 1_000;
/// (transfer mode, transfer channel): the three default channels and two extra channels.
const KINDS: [(TransferMode, u16); 5] = [
    (TransferMode::Reliable, 0),
    (TransferMode::UnreliableOrdered, 0),
    (TransferMode::Unreliable, 0),
    (TransferMode::Reliable, 1),
    (TransferMode::Unreliable, 2),
];

#[derive(Default)]
struct Seen {
    connected: Vec<PeerId>,
    /// (mode, channel) → packets received.
    packets: BTreeMap<(u8, u16), usize>,
    bytes: usize,
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
    let wall = Instant::now();
    let server = SignalServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        LobbyServerConfig::default(),
    )
    .await
    .map_err(|e| format!("signaling server: {e}"))?;
    println!("signaling server on {}", server.url());
    let options = JoinOptions {
        config: MeshConfig::with_channels([TransferMode::Reliable, TransferMode::Unreliable]),
        ..JoinOptions::default()
    };

    let mut sessions = Vec::new();
    let host = join(&server.url(), "", options.clone())
        .await
        .map_err(|e| format!("host: {e}"))?;
    let lobby = host.lobby.clone();
    println!(
        "peer {} created lobby {lobby} on {}",
        host.id,
        host.handle.local_addr()
    );
    sessions.push(host);
    for _ in 1..PEERS {
        let s = join(&server.url(), &lobby, options.clone())
            .await
            .map_err(|e| format!("join: {e}"))?;
        println!(
            "peer {} joined lobby {lobby} on {}",
            s.id,
            s.handle.local_addr()
        );
        sessions.push(s);
    }

    // One task per peer records what its mesh reports.
    let mut seen = Vec::new();
    let mut handles: Vec<(PeerId, Handle<rtcmesh::Mesh>)> = Vec::new();
    for mut session in sessions.drain(..) {
        let record = Arc::new(Mutex::new(Seen::default()));
        seen.push((session.id, record.clone()));
        handles.push((session.id, session.handle.clone()));
        let me = session.id;
        tokio::spawn(async move {
            while let Some(event) = session.events.recv().await {
                let mut r = record.lock().expect("lock");
                match event {
                    Event::PeerConnected(id) => {
                        println!("peer {me}: peer_connected({id})");
                        r.connected.push(id);
                    }
                    Event::PeerDisconnected(id) => r.connected.retain(|p| *p != id),
                    Event::Packet(p) => {
                        *r.packets.entry((p.mode as u8, p.channel)).or_default() += 1;
                        r.bytes += p.data.len();
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

    // Every peer sends PACKETS_PER_KIND packets of each kind to every other peer.
    let start = Instant::now();
    let payload = vec![0x5A; PAYLOAD];
    let mut senders = Vec::new();
    for (me, handle) in handles.clone() {
        let targets: Vec<PeerId> = handles
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != me)
            .collect();
        let payload = payload.clone();
        senders.push(tokio::spawn(async move {
            for _ in 0..PACKETS_PER_KIND {
                send_round(&handle, &targets, &payload).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for sender in senders {
        sender.await.map_err(|e| e.to_string())??;
    }
    let reliable_expected = PACKETS_PER_KIND * (PEERS - 1);
    let all_reliable = |seen: &[(PeerId, Arc<Mutex<Seen>>)]| {
        seen.iter().all(|(_, r)| {
            let r = r.lock().expect("lock");
            [(2u8, 0u16), (2, 1)]
                .iter()
                .all(|k| r.packets.get(k).copied().unwrap_or(0) >= reliable_expected)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all_reliable(&seen) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();

    let mut total_packets = 0;
    let mut total_bytes = 0;
    let mut failures = Vec::new();
    println!("per-peer packets received (sent to each peer: {reliable_expected} per kind; the unreliable kinds");
    println!(
        "have Godot's 1 ms packet lifetime, so under a burst some expire in the sender's queue):"
    );
    for (id, record) in &seen {
        let r = record.lock().expect("lock");
        let mut line = format!("  peer {id:>10}:");
        for (mode, channel) in KINDS {
            let got = r.packets.get(&(mode as u8, channel)).copied().unwrap_or(0);
            line += &format!(" {mode:?}/ch{channel}={got}");
            if got == 0 {
                failures.push(format!(
                    "peer {id} got nothing on {mode:?} channel {channel}"
                ));
            }
            if mode == TransferMode::Reliable && got != reliable_expected {
                failures.push(format!(
                    "peer {id} got {got}/{reliable_expected} reliable on channel {channel}"
                ));
            }
        }
        println!("{line}");
        total_packets += r.packets.values().sum::<usize>();
        total_bytes += r.bytes;
    }
    let secs = elapsed.as_secs_f64();
    println!(
        "throughput: {total_packets} packets, {:.1} MB in {elapsed:.1?} = {:.0} packets/s, {:.1} MB/s over loopback UDP",
        total_bytes as f64 / 1e6,
        total_packets as f64 / secs,
        total_bytes as f64 / 1e6 / secs
    );
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

/// Sends one packet of every kind to every target in one call into the loop, then retries
/// whatever met a full send queue after a short wait (backpressure, not loss).
async fn send_round(
    handle: &Handle<rtcmesh::Mesh>,
    targets: &[PeerId],
    payload: &[u8],
) -> Result<(), String> {
    let mut todo: Vec<(PeerId, TransferMode, u16)> = targets
        .iter()
        .flat_map(|&to| {
            KINDS
                .iter()
                .map(move |&(mode, channel)| (to, mode, channel))
        })
        .collect();
    for _ in 0..10_000 {
        let payload = payload.to_vec();
        todo = handle
            .call(move |mesh, _| {
                let mut full = Vec::new();
                for (to, mode, channel) in todo {
                    match mesh.send(Target::Peer(to), mode, channel, &payload) {
                        Ok(()) => {}
                        Err(SendError::QueueFull(_)) => full.push((to, mode, channel)),
                        Err(e) => return Err(format!("send to {to}: {e}")),
                    }
                }
                Ok(full)
            })
            .await
            .map_err(|e| e.to_string())??;
        if todo.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err("send queues stayed full for 10 s".into())
}
