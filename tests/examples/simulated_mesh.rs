//! A 4-peer rtcmesh mesh on the simulated network: connect, exchange packets on every channel
//! kind, print the events and per-channel counts. Exits non-zero if a reliable packet is
//! missing or a channel delivered nothing. Unreliable channels have a real packet lifetime
//! (1 ms by default, as in Godot), so under load some of their packets may expire unsent.
//!
//! `cargo run --release --example simulated_mesh`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rtcmesh::{Event, MeshConfig, Target, TransferMode};
use rtcmesh_tests::World;

const ROUNDS: usize = 200;

fn main() -> ExitCode {
    let wall = Instant::now();
    let config =
        MeshConfig::default().with_channels([TransferMode::Reliable, TransferMode::Unreliable]);
    let ids = [1, 2, 3, 4];
    let mut world = World::mesh(&ids, &config);
    world.introduce_all();
    if !world.run_until(Duration::from_secs(10), World::fully_connected) {
        eprintln!("FAILED: the mesh did not connect within 10 s of simulated time");
        return ExitCode::FAILURE;
    }
    let connect_sim = world.elapsed();
    for node in &world.nodes {
        for event in node.events() {
            if let Event::PeerConnected(id) = event {
                println!("peer {} : peer_connected({id})", node.mesh().unique_id());
            }
        }
    }
    println!(
        "mesh of {} connected after {:?} simulated ({:?} wall)",
        ids.len(),
        connect_sim,
        wall.elapsed()
    );

    // (mode, transfer channel) pairs: the three defaults and the two extra channels.
    let kinds = [
        (TransferMode::Reliable, 0u16),
        (TransferMode::UnreliableOrdered, 0),
        (TransferMode::Unreliable, 0),
        (TransferMode::Reliable, 1),
        (TransferMode::Unreliable, 2),
    ];
    let start = Instant::now();
    let payload = vec![0xAB; 600]; // a typical game packet
    let mut sent = 0usize;
    for _ in 0..ROUNDS {
        for n in 0..world.nodes.len() {
            for (mode, channel) in kinds {
                world.nodes[n]
                    .mesh_mut()
                    .send(Target::All, mode, channel, &payload)
                    .expect("send");
                sent += ids.len() - 1;
            }
            world.drain(n);
        }
        world.run_for(Duration::from_millis(16)); // one game frame
    }
    world.run_for(Duration::from_secs(1));
    let wall_exchange = start.elapsed();

    let mut total = 0usize;
    let mut failures = Vec::new();
    let per_kind = ROUNDS * (ids.len() - 1);
    for node in &world.nodes {
        let mut counts: BTreeMap<(u16, String), usize> = BTreeMap::new();
        for p in node.packets() {
            *counts
                .entry((p.channel, format!("{:?}", p.mode)))
                .or_default() += 1;
        }
        total += counts.values().sum::<usize>();
        for (mode, channel) in kinds {
            let got = counts
                .get(&(channel, format!("{mode:?}")))
                .copied()
                .unwrap_or(0);
            // Reliable channels deliver everything; unreliable ones must at least deliver.
            if (mode == TransferMode::Reliable && got != per_kind) || got == 0 {
                failures.push(format!(
                    "peer {} ch{channel}/{mode:?}: {got}/{per_kind}",
                    node.mesh().unique_id()
                ));
            }
        }
        let line: Vec<String> = counts
            .iter()
            .map(|((ch, mode), n)| format!("ch{ch}/{mode}={n}"))
            .collect();
        println!(
            "peer {} received: {}",
            node.mesh().unique_id(),
            line.join(" ")
        );
    }
    let mb = (total * payload.len()) as f64 / 1e6;
    println!(
        "{total}/{sent} packets delivered ({mb:.1} MB) in {:.0} ms of CPU: {:.0} packets/s, {:.1} MB/s",
        wall_exchange.as_secs_f64() * 1e3,
        total as f64 / wall_exchange.as_secs_f64(),
        mb / wall_exchange.as_secs_f64()
    );
    if !failures.is_empty() {
        eprintln!("FAILED: {}", failures.join("; "));
        return ExitCode::FAILURE;
    }
    println!("ok");
    ExitCode::SUCCESS
}
