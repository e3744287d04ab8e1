//! Two native `matchbox_socket` peers (webrtc-rs) in one process, connected through an
//! in-process `matchbox_signaling` full-mesh server, doing the transfers rtcmesh's benchmark
//! does over loopback: A → B, 100 B / 1,200 B / 16 KiB, reliable and unreliable, each
//! `MATCHBOX_RUNS` times (default 5) with the message counts the benchmark gives in
//! `MATCHBOX_COUNTS` (`<100 B>,<1,200 B>,<16 KiB>`, default `20000,20000,2000`). Prints one
//! `MATCHBOX case=… size=… run=… messages=… sent=… seconds=… drops=…` line per run (and
//! `case=connect`). `drops` are the UDP datagrams the kernel dropped for want of socket buffer
//! space during the run (`RcvbufErrors` + `SndbufErrors` of `/proc/net/snmp`: the process runs
//! alone in its network namespace, so they are its own sockets').
//! Run it through `run.sh`, which provides the network namespace webrtc-rs needs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use matchbox_signaling::SignalingServer;
use matchbox_socket::{ChannelConfig, PeerState, WebRtcSocket};

const RELIABLE: usize = 0;
const UNRELIABLE: usize = 1;

/// UDP datagrams dropped by the kernel for want of buffer space, in this network namespace.
fn kernel_drops() -> u64 {
    let Ok(snmp) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| *name == "RcvbufErrors" || *name == "SndbufErrors")
        .filter_map(|(_, value)| value.parse::<u64>().ok())
        .sum()
}

#[tokio::main]
async fn main() {
    let ip = std::env::var("MATCHBOX_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let runs: usize = std::env::var("MATCHBOX_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let counts: Vec<usize> = std::env::var("MATCHBOX_COUNTS")
        .unwrap_or_else(|_| "20000,20000,2000".into())
        .split(',')
        .map(|c| c.parse().expect("MATCHBOX_COUNTS: three numbers"))
        .collect();
    assert_eq!(counts.len(), 3, "MATCHBOX_COUNTS: three numbers");
    let addr: SocketAddr = format!("{ip}:39117").parse().expect("address");
    let server = SignalingServer::full_mesh_builder(addr).build();
    tokio::spawn(server.serve());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let url = format!("ws://{addr}/bench");
    let socket = || {
        let (socket, run) = WebRtcSocket::builder(url.clone())
            .add_channel(ChannelConfig::reliable())
            .add_channel(ChannelConfig::unreliable())
            .build();
        tokio::spawn(run);
        socket
    };
    let start = Instant::now();
    let (mut a, mut b) = (socket(), socket());
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut a_peer, mut b_peer) = (None, None);
    while a_peer.is_none() || b_peer.is_none() {
        assert!(Instant::now() < deadline, "matchbox peers did not connect within 30 s");
        for (id, state) in a.update_peers() {
            if state == PeerState::Connected {
                a_peer = Some(id);
            }
        }
        for (id, state) in b.update_peers() {
            if state == PeerState::Connected {
                b_peer = Some(id);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("MATCHBOX case=connect seconds={}", start.elapsed().as_secs_f64());
    let to_b = a_peer.expect("peer");
    // Let the data channels open before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (case, channel) in [("reliable", RELIABLE), ("unreliable", UNRELIABLE)] {
        for (size, count) in [100usize, 1_200, 16 * 1024].into_iter().zip(counts.clone()) {
            for run in 0..runs {
                let payload: matchbox_socket::Packet = vec![0x42u8; size].into();
                let drops_before = kernel_drops();
                let started = Instant::now();
                let mut sent = 0;
                let mut got = 0;
                let mut last = started;
                let mut quiet_since = Instant::now();
                let quiet = Duration::from_millis(if channel == RELIABLE { 10_000 } else { 500 });
                while got < count {
                    // Send in bursts of 64, then let the runtime move data (matchbox queues
                    // unboundedly, so the burst size is the only pacing there is).
                    if sent < count {
                        for _ in 0..64.min(count - sent) {
                            a.channel_mut(channel).send(payload.clone(), to_b);
                            sent += 1;
                        }
                    }
                    tokio::task::yield_now().await;
                    let n = b.channel_mut(channel).receive().len();
                    if n > 0 {
                        got += n;
                        last = Instant::now();
                        quiet_since = last;
                    } else {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                        if sent == count && quiet_since.elapsed() > quiet {
                            break;
                        }
                    }
                }
                // What a previous unreliable run left behind must not count for the next.
                if channel == UNRELIABLE {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    b.channel_mut(channel).receive();
                }
                println!(
                    "MATCHBOX case={case} size={size} run={run} messages={got} sent={sent} seconds={} drops={}",
                    (last - started).as_secs_f64(),
                    kernel_drops() - drops_before
                );
            }
        }
    }
}
