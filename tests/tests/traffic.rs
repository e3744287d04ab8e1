//! Packets: every transfer mode, extra channels, and every kind of target.

use std::time::Duration;

use rtcmesh::{MeshConfig, Packet, SendError, Target, TransferMode};
use rtcmesh_tests::World;

fn packets(w: &World, n: usize) -> Vec<Packet> {
    w.nodes[n].packets().into_iter().cloned().collect()
}

#[test]
fn every_mode_and_extra_channel_arrives_with_its_sender_channel_and_mode() {
    let extra = [
        TransferMode::Unreliable,
        TransferMode::UnreliableOrdered,
        TransferMode::Reliable,
    ];
    let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default().with_channels(extra));
    let sends = [
        (TransferMode::Reliable, 0u16, TransferMode::Reliable),
        (
            TransferMode::UnreliableOrdered,
            0,
            TransferMode::UnreliableOrdered,
        ),
        (TransferMode::Unreliable, 0, TransferMode::Unreliable),
        // On an extra channel its configured mode applies, whatever mode is passed (Godot).
        (TransferMode::Reliable, 1, TransferMode::Unreliable),
        (TransferMode::Reliable, 2, TransferMode::UnreliableOrdered),
        (TransferMode::Unreliable, 3, TransferMode::Reliable),
    ];
    for (i, (mode, channel, _)) in sends.iter().enumerate() {
        let payload = vec![i as u8; 10 + i];
        w.nodes[1]
            .mesh_mut()
            .send(Target::Peer(1), *mode, *channel, &payload)
            .unwrap();
    }
    w.drain(1);
    assert!(
        w.run_until(Duration::from_secs(2), |w| w.nodes[0].packets().len()
            == sends.len())
    );
    let mut got = packets(&w, 0);
    got.sort_by_key(|p| p.data[0]);
    for (i, (_, channel, mode)) in sends.iter().enumerate() {
        assert_eq!(
            got[i],
            Packet {
                from: 2,
                channel: *channel,
                mode: *mode,
                data: vec![i as u8; 10 + i]
            }
        );
    }
}

#[test]
fn reliable_packets_arrive_in_order_and_intact_including_the_largest() {
    let mut w = World::connected_mesh(&[3, 7], &MeshConfig::default());
    let max = w.nodes[0].mesh().max_packet_size();
    let sizes = [1usize, 1200, 5000, max]; // empty packets: see bad_input.rs
    for (i, &size) in sizes.iter().enumerate() {
        let data: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(7), TransferMode::Reliable, 0, &data)
            .unwrap();
    }
    w.drain(0);
    assert!(
        w.run_until(Duration::from_secs(5), |w| w.nodes[1].packets().len()
            == sizes.len())
    );
    for (i, (p, &size)) in packets(&w, 1).iter().zip(&sizes).enumerate() {
        let expected: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
        assert_eq!(p.data, expected, "packet {i}");
        assert_eq!(p.from, 3);
    }
}

#[test]
fn burst_beyond_the_sctp_buffer_is_queued_not_lost() {
    let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default());
    let chunk = vec![7u8; 16 * 1024];
    // 63 × 16 KiB: far beyond the SCTP send window (32 KiB on this short link), within the
    // queue limit (1 MiB).
    for _ in 0..63 {
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), TransferMode::Reliable, 0, &chunk)
            .unwrap();
    }
    assert!(
        w.nodes[0].mesh().peer(2).unwrap().queued_bytes > 0,
        "the queue was used"
    );
    w.drain(0);
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.nodes[1].packets().len()
            == 63)
    );
    assert_eq!(w.nodes[0].mesh().peer(2).unwrap().queued_bytes, 0);
}

#[test]
fn queue_full_is_reported_and_the_mesh_recovers() {
    let config = MeshConfig::default().with_max_queued_bytes(64 * 1024);
    let mut w = World::connected_mesh(&[1, 2], &config);
    let chunk = vec![1u8; 16 * 1024];
    let mut accepted = 0;
    let err = loop {
        match w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), TransferMode::Reliable, 0, &chunk)
        {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000);
    };
    assert_eq!(err, SendError::QueueFull(vec![2]));
    w.drain(0);
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.nodes[1].packets().len()
            == accepted)
    );
    w.nodes[0]
        .mesh_mut()
        .send(Target::Peer(2), TransferMode::Reliable, 0, b"after")
        .unwrap();
    w.drain(0);
    assert!(
        w.run_until(Duration::from_secs(5), |w| w.nodes[1].packets().len()
            == accepted + 1)
    );
}

#[test]
fn targets_reach_exactly_the_right_peers() {
    let mut w = World::connected_mesh(&[1, 2, 3, 4], &MeshConfig::default());
    let cases: [(Target, &[usize]); 4] = [
        (Target::All, &[1, 2, 3]),
        (Target::AllExcept(3), &[1, 3]),
        (Target::Peer(4), &[3]),
        (Target::from(-2), &[2, 3]),
    ];
    for (round, (target, receivers)) in cases.iter().enumerate() {
        for n in 0..4 {
            w.nodes[n].clear_events();
        }
        let tag = [round as u8];
        w.nodes[0]
            .mesh_mut()
            .send(*target, TransferMode::Reliable, 0, &tag)
            .unwrap();
        w.drain(0);
        w.run_for(Duration::from_millis(200));
        for n in 0..4 {
            let got = packets(&w, n);
            if receivers.contains(&n) {
                assert_eq!(got.len(), 1, "{target:?}: node {n} gets it once");
                assert_eq!((got[0].from, got[0].data.as_slice()), (1, &tag[..]));
            } else {
                assert!(got.is_empty(), "{target:?}: node {n} must not get it");
            }
        }
    }
}

#[test]
fn godot_target_integers_map_to_targets() {
    assert_eq!(Target::from(0), Target::All);
    assert_eq!(Target::from(1), Target::Peer(1));
    assert_eq!(Target::from(5), Target::Peer(5));
    assert_eq!(Target::from(-5), Target::AllExcept(5));
    for t in [0, 1, 9, -9] {
        assert_eq!(Target::from(t).to_godot(), t);
    }
}

#[test]
fn broadcast_skips_peers_that_are_not_connected_yet() {
    let mut w = World::mesh(&[1, 2, 3], &MeshConfig::default());
    w.introduce(0, 1);
    assert!(w.run_until(Duration::from_secs(10), |w| w.nodes[0]
        .mesh()
        .connected_peers()
        .count()
        == 1));
    // Peer 3 is added but has no connection yet: the broadcast must skip it, not fail.
    let now = w.now;
    w.nodes[0].mesh_mut().add_peer(now, 3, 1).unwrap();
    w.nodes[0]
        .mesh_mut()
        .send(Target::All, TransferMode::Reliable, 0, b"hello")
        .unwrap();
    assert_eq!(
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(3), TransferMode::Reliable, 0, b"x"),
        Err(SendError::PeerNotConnected(3))
    );
    w.drain(0);
    assert!(w.run_until(Duration::from_secs(1), |w| w.nodes[1].packets().len() == 1));
}

/// A 2 Mbit/s bottleneck with a 32 KiB buffer (tail drop) between two peers: a burst far bigger
/// than the buffer still arrives complete and in order on the reliable channel (SCTP backs off
/// and retransmits; rtcmesh's send queue holds what SCTP cannot take yet), and the peers stay
/// connected.
#[test]
fn a_bandwidth_capped_link_delivers_every_reliable_packet_in_order() {
    use rtcmesh_tests::LinkConditions;
    use str0m_netem::{Bitrate, DataSize, NetemConfig};
    let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default());
    let capped = NetemConfig::new()
        .latency(Duration::from_millis(10))
        .link(Bitrate::mbps(2), DataSize::kbytes(32));
    w.set_all_links(LinkConditions::new(capped));
    let count = 400u32;
    for i in 0..count {
        let packet = [i.to_le_bytes().as_slice(), &[0x5A; 996]].concat();
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), TransferMode::Reliable, 0, &packet)
            .expect("the send queue takes a 400 KB burst");
    }
    w.drain(0);
    let started = w.elapsed();
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.nodes[1].packets().len()
            == count as usize),
        "only {} of {count} arrived",
        w.nodes[1].packets().len()
    );
    let took = w.elapsed() - started;
    let got = packets(&w, 1);
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.data[..4], (i as u32).to_le_bytes(), "packet {i} in order");
    }
    // 400 KB over 2 Mbit/s takes at least 1.6 s: the cap was really in force.
    assert!(took >= Duration::from_millis(1600), "took only {took:?}");
    assert!(w.nodes[0].disconnected().is_empty() && w.nodes[1].disconnected().is_empty());
}

#[test]
fn a_packet_lost_after_a_quiet_spell_is_retransmitted_within_the_minimum_timeout() {
    // SCTP measures round trips and times retransmissions with the clock the mesh gives its
    // connections. A send after seconds of quiet must not be stamped with the time of the last
    // datagram: that inflated round-trip samples (to ~0.9 s on a 10 ms link) and so the
    // retransmission timeout (to ~2.7 s), slowing recovery from every loss.
    let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default());
    let mut delays = Vec::new();
    for round in 0..4u8 {
        w.run_for(Duration::from_millis(1700)); // quiet: only ICE consent checks
        w.partition(0, 1, round % 2 == 1); // every other packet is lost once
        w.nodes[1]
            .mesh_mut()
            .send(Target::Peer(1), TransferMode::Reliable, 0, &[round; 10])
            .unwrap();
        w.drain(1);
        let sent = w.now;
        w.run_for(Duration::from_millis(20));
        w.partition(0, 1, false);
        let count = usize::from(round) + 1;
        assert!(w.run_until(Duration::from_secs(30), |w| packets(w, 0).len() == count));
        delays.push(w.now - sent);
    }
    println!("delivery delays: {delays:?}");
    // SCTP's minimum retransmission timeout is 1 s; the round trip here is 2 ms.
    assert!(delays[1] < Duration::from_millis(1100), "{delays:?}");
    assert!(delays[3] < Duration::from_millis(1100), "{delays:?}");
}
