//! A server and two clients in one process, in one plain `loop { poll.poll(..) }`: each on its
//! own UDP socket registered in the same `mio::Poll`. Signals are handed across directly (they
//! are in the same process). The clients send to the server, the server answers everyone;
//! prints what arrived and exits 0, or non-zero with a message.
//!
//! `cargo run --release -p rtcmesh-mio --example mio_server_clients`

use std::process::ExitCode;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use rtcmesh::{Event, Mesh, MeshConfig, PeerId, Target, TransferMode};
use rtcmesh_mio::MioEndpoint;

const MESSAGES: usize = 100;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let start = Instant::now();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let loopback = "127.0.0.1:0".parse().expect("addr");
    let config = MeshConfig::default();
    let machines = [
        Mesh::create_server(config.clone()),
        Mesh::create_client(2, config.clone()),
        Mesh::create_client(3, config),
    ];
    let mut endpoints = Vec::new();
    for (i, mesh) in machines.into_iter().enumerate() {
        let mesh = mesh.map_err(|e| e.to_string())?;
        let endpoint = MioEndpoint::bind(loopback, None, mesh, poll.registry(), Token(i))
            .map_err(|e| e.to_string())?;
        println!(
            "peer {} on {}",
            endpoint.machine().unique_id(),
            endpoint.local_addr()
        );
        endpoints.push(endpoint);
    }
    for client in [2, 3] {
        endpoints[0]
            .machine_mut()
            .add_peer(Instant::now(), client, 1)
            .map_err(|e| e.to_string())?;
        endpoints[client as usize - 1]
            .machine_mut()
            .add_peer(Instant::now(), 1, 1)
            .map_err(|e| e.to_string())?;
    }

    let mut events = Events::with_capacity(256);
    let mut received = vec![Vec::<(PeerId, Vec<u8>)>::new(); 3];
    let mut connected = 0;
    let mut sent = false;
    let deadline = start + Duration::from_secs(10);
    // Each client expects MESSAGES replies from the server; the server 2 × MESSAGES requests.
    let done = |r: &[Vec<(PeerId, Vec<u8>)>]| {
        r[0].len() == 2 * MESSAGES && r[1].len() == MESSAGES && r[2].len() == MESSAGES
    };
    while !done(&received) {
        let now = Instant::now();
        if now > deadline {
            return Err(format!(
                "timed out; received {:?}",
                received.iter().map(Vec::len).collect::<Vec<_>>()
            ));
        }
        let timeout = endpoints
            .iter()
            .filter_map(|e| e.timeout(now))
            .min()
            .unwrap_or(Duration::from_millis(100));
        poll.poll(&mut events, Some(timeout))
            .map_err(|e| e.to_string())?;
        for event in events.iter() {
            endpoints[event.token().0]
                .handle_ready(Instant::now())
                .map_err(|e| e.to_string())?;
        }
        let mut signals = Vec::new();
        for (i, endpoint) in endpoints.iter_mut().enumerate() {
            endpoint
                .handle_timeout(Instant::now())
                .map_err(|e| format!("socket: {e}"))?;
            let me = endpoint.machine().unique_id();
            while let Some(event) = endpoint.machine_mut().poll_event() {
                match event {
                    Event::Signal(s) => signals.push((me, s)),
                    Event::PeerConnected(id) => {
                        println!("peer {me}: peer_connected({id})");
                        connected += 1;
                    }
                    Event::Packet(p) => {
                        if i == 0 {
                            // The server answers each request to its sender.
                            let reply = [b"echo:".as_slice(), &p.data].concat();
                            endpoint
                                .machine_mut()
                                .send(Target::Peer(p.from), TransferMode::Reliable, 0, &reply)
                                .map_err(|e| e.to_string())?;
                        }
                        received[i].push((p.from, p.data));
                    }
                    _ => {}
                }
            }
            let _ = endpoint.flush();
        }
        for (from, s) in signals {
            let index = if s.to == 1 { 0 } else { s.to as usize - 1 };
            endpoints[index]
                .machine_mut()
                .handle_signal(Instant::now(), from, s.signal)
                .map_err(|e| e.to_string())?;
            let _ = endpoints[index].flush();
        }
        if connected == 4 && !sent {
            println!(
                "server and 2 clients connected after {:.1?}",
                start.elapsed()
            );
            for client in [1, 2] {
                for n in 0..MESSAGES {
                    let msg = format!("request {n} from client {}", client + 1);
                    endpoints[client]
                        .machine_mut()
                        .send(Target::Peer(1), TransferMode::Reliable, 0, msg.as_bytes())
                        .map_err(|e| e.to_string())?;
                }
                let _ = endpoints[client].flush();
            }
            sent = true;
        }
    }
    for (i, r) in received.iter().enumerate() {
        let first = r
            .first()
            .map(|(from, d)| format!("{from}: {:?}", String::from_utf8_lossy(d)))
            .unwrap_or_default();
        println!(
            "peer {} received {} packets (first {first})",
            endpoints[i].machine().unique_id(),
            r.len()
        );
    }
    for (client, r) in received.iter().enumerate().skip(1) {
        for (n, (from, data)) in r.iter().enumerate() {
            let expected = format!("echo:request {n} from client {}", client + 1);
            if *from != 1 || data != expected.as_bytes() {
                return Err(format!(
                    "client {} got {:?} from {from} at {n}",
                    client + 1,
                    String::from_utf8_lossy(data)
                ));
            }
        }
    }
    let stats = endpoints.iter().map(|e| e.stats().sent).sum::<u64>();
    println!(
        "OK: {} requests and replies in order, {stats} datagrams sent, {:.1?} in all",
        4 * MESSAGES,
        start.elapsed()
    );
    Ok(())
}
