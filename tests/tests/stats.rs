//! Per-peer stats against known traffic on the simulated network: exact packet and byte counts
//! per channel, the ICE round-trip time within the configured latency, the selected pair.

use std::time::Duration;

use rtcmesh::{CandidateKind, MeshConfig, Target, TransferMode};
use rtcmesh_tests::{LinkConditions, World};
use str0m_netem::NetemConfig;

/// Peers 1 (node 0) and 2 (node 1), 25 ms apart each way, one extra reliable channel.
fn pair(config: &MeshConfig) -> World {
    let mut w = World::mesh(&[1, 2], config);
    w.set_all_links(LinkConditions::new(
        NetemConfig::new().latency(Duration::from_millis(25)),
    ));
    w.introduce_all();
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    w
}

#[test]
fn channel_counters_match_the_traffic_sent_and_the_round_trip_matches_the_latency() {
    let config = MeshConfig::default().with_channels([TransferMode::Reliable]);
    let mut w = pair(&config);
    let before = w.nodes[1].mesh().peer_stats(1).unwrap();
    assert!(before
        .channels
        .iter()
        .all(|c| c.packets_sent == 0 && c.packets_received == 0));
    // Known traffic from node 1 (id 2) to node 0 (id 1): 10 × 100 B reliable, 5 × 50 B
    // unreliable, 3 × 1,000 B on extra channel 1.
    let sends = [
        (TransferMode::Reliable, 0u16, 100usize, 10u64),
        (TransferMode::Unreliable, 0, 50, 5),
        (TransferMode::Reliable, 1, 1000, 3),
    ];
    for &(mode, channel, size, count) in &sends {
        for _ in 0..count {
            w.tick();
            w.nodes[1]
                .mesh_mut()
                .send(Target::Peer(1), mode, channel, &vec![7; size])
                .unwrap();
            w.drain(1);
            w.run_for(Duration::from_millis(5));
        }
    }
    w.run_for(Duration::from_secs(3));
    let sent = w.nodes[1].mesh().peer_stats(1).unwrap();
    let got = w.nodes[0].mesh().peer_stats(2).unwrap();
    // Layout: reliable, ordered, unreliable, extra 1.
    let expect = [(10, 1000), (0, 0), (5, 250), (3, 3000)];
    for (i, &(packets, bytes)) in expect.iter().enumerate() {
        let (s, r) = (&sent.channels[i], &got.channels[i]);
        assert_eq!(
            (s.packets_sent, s.bytes_sent),
            (packets, bytes),
            "channel {i} sent"
        );
        assert_eq!(
            (r.packets_received, r.bytes_received),
            (packets, bytes),
            "channel {i} received"
        );
        assert_eq!(
            (s.packets_received, r.packets_sent),
            (0, 0),
            "channel {i} the other way"
        );
    }
    assert_eq!(sent.channels[3].channel, 1);
    assert_eq!(sent.channels[2].mode, TransferMode::Unreliable);
    // ICE consent checks measure the round trip: 2 × 25 ms on this network.
    for s in [&sent, &got] {
        let rtt = s
            .round_trip_time
            .expect("an RTT after 3 s with stats every second");
        assert!(
            rtt >= Duration::from_millis(50) && rtt <= Duration::from_millis(55),
            "rtt {rtt:?}"
        );
    }
    // Datagrams: what one side sent the other received, less what is still in flight.
    for (a, b) in [(&sent, &got), (&got, &sent)] {
        assert!(a.datagrams_sent >= b.datagrams_received);
        assert!(a.datagrams_sent - b.datagrams_received <= 2);
        assert!(a.bytes_sent >= b.bytes_received);
    }
    assert!(got.bytes_received > 4250, "payload plus headers");
    // The selected pair: both sockets' own addresses, host to host, not relayed.
    let path = sent.path.expect("a path");
    assert_eq!(
        (path.local_address, path.remote_address),
        (w.nodes[1].addr, w.nodes[0].addr)
    );
    assert_eq!(
        (path.local, path.remote),
        (CandidateKind::Host, CandidateKind::Host)
    );
    assert!(!path.is_relayed());
    assert_eq!(
        w.nodes[1].mesh().peer(1).and_then(|p| p.path),
        Some(path),
        "PeerInfo::path is the same pair"
    );
    assert_eq!(
        (sent.ice_restarts, sent.moves, sent.queued_bytes),
        (0, 0, 0)
    );
    // Nothing waited in the queue or expired there.
    assert!(sent
        .channels
        .iter()
        .all(|c| c.packets_expired == 0 && c.queued_bytes == 0));
    assert_eq!((sent.peer, got.peer), (1, 2));
    // What SCTP holds is an upper bound, refreshed when the sender writes again.
    assert!(sent.sctp_buffered <= 4250, "{}", sent.sctp_buffered);
    assert!(sent.sctp_window >= MeshConfig::default().sctp_send_buffer_min);
    assert_eq!(sent.max_packet_size, config.max_packet_size);
    // The aggregate of a one-peer mesh is that peer, without a path or an id.
    let total = w.nodes[1].mesh().aggregate_peer_stats();
    assert_eq!(total.channels, sent.channels);
    assert_eq!(total.round_trip_time, sent.round_trip_time);
    assert_eq!(total.path, None);
    assert_eq!(total.peer, 0);
    assert_eq!(total.sctp_window, sent.sctp_window);
    assert_eq!(w.nodes[1].mesh().peer_stats(9), None);
}

#[test]
fn the_aggregate_sums_every_peer_and_keeps_the_slowest_round_trip() {
    let mut w = World::mesh(&[1, 2, 3], &MeshConfig::default());
    // Peer 3 is far from both others.
    for (a, b, ms) in [(0, 1, 5), (0, 2, 60), (1, 2, 60)] {
        for (x, y) in [(a, b), (b, a)] {
            w.set_link(
                x,
                y,
                LinkConditions::new(NetemConfig::new().latency(Duration::from_millis(ms))),
            );
        }
    }
    w.introduce_all();
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    for to in [2, 3] {
        w.tick();
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(to), TransferMode::Reliable, 0, b"hello")
            .unwrap();
        w.drain(0);
    }
    w.run_for(Duration::from_secs(3));
    let m = w.nodes[0].mesh();
    let (s2, s3, total) = (
        m.peer_stats(2).unwrap(),
        m.peer_stats(3).unwrap(),
        m.aggregate_peer_stats(),
    );
    assert_eq!(total.channels[0].packets_sent, 2);
    assert_eq!(total.channels[0].bytes_sent, 10);
    assert_eq!(total.datagrams_sent, s2.datagrams_sent + s3.datagrams_sent);
    assert_eq!(total.bytes_received, s2.bytes_received + s3.bytes_received);
    assert_eq!(total.round_trip_time, s3.round_trip_time);
    assert!(
        s3.round_trip_time.unwrap() >= Duration::from_millis(120)
            && s2.round_trip_time.unwrap() <= Duration::from_millis(15)
    );
    assert_eq!(total.sctp_window, s2.sctp_window + s3.sctp_window);
}

#[test]
fn without_the_stats_interval_there_is_no_round_trip_time_but_still_a_path() {
    let config = MeshConfig::default().with_stats_interval(None);
    let mut w = pair(&config);
    w.tick();
    w.nodes[1]
        .mesh_mut()
        .send(Target::Peer(1), TransferMode::Reliable, 0, b"x")
        .unwrap();
    w.drain(1);
    w.run_for(Duration::from_secs(3));
    let s = w.nodes[1].mesh().peer_stats(1).unwrap();
    assert_eq!(s.round_trip_time, None);
    assert_eq!(s.path.map(|p| p.remote_address), Some(w.nodes[0].addr));
}

#[test]
fn a_moved_peer_leaves_no_stale_route_behind() {
    let mut w = pair(&MeshConfig::default());
    assert_eq!(w.nodes[1].mesh().known_routes(), 1);
    // The NAT in front of node 0 rebinds while node 1 sends: node 1 finds it at its new
    // address and forgets the old route.
    w.rebind(0, "127.0.0.99:6000".parse().unwrap());
    for _ in 0..200 {
        w.tick();
        w.nodes[1]
            .mesh_mut()
            .send(Target::Peer(1), TransferMode::Reliable, 0, b"tick")
            .unwrap();
        w.drain(1);
        w.run_for(Duration::from_millis(20));
    }
    let s = w.nodes[1].mesh().peer_stats(1).unwrap();
    assert_eq!(s.moves, 1);
    assert_eq!(
        s.path.map(|p| (p.remote_address, p.remote)),
        Some((
            "127.0.0.99:6000".parse().unwrap(),
            CandidateKind::PeerReflexive
        ))
    );
    assert_eq!(
        w.nodes[1].mesh().known_routes(),
        1,
        "only the new route is left"
    );
    assert_eq!(w.nodes[1].mesh().stats().peer_moves, 1);
}
