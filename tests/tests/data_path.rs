//! The data path under load: a burst of sends costs one poll, channels share a saturated link
//! fairly, a partially reliable packet's lifetime counts from `send`, reliable channels stay
//! exactly-once and in order through rtcmesh's queue, a long round trip is not capped by a small
//! SCTP buffer, and a packet above what a peer advertises is refused instead of blocking it.

use std::time::Duration;

use rtcmesh::{MeshConfig, MultiplayerConfig, PeerId, SendError, Signal, Target, TransferMode};
use rtcmesh_tests::{LinkConditions, World};
use str0m_netem::{Bitrate, DataSize, NetemConfig, Probability, RandomLoss};

const ORDERED: TransferMode = TransferMode::UnreliableOrdered;
const UNRELIABLE: TransferMode = TransferMode::Unreliable;
const RELIABLE: TransferMode = TransferMode::Reliable;

/// The tags of the packets node `n` received from `from` in `mode`, in arrival order. Each
/// test's payload starts with a little-endian u32 tag.
fn received(w: &World, n: usize, from: PeerId, mode: TransferMode) -> Vec<u32> {
    w.nodes[n]
        .packets()
        .into_iter()
        .filter(|p| p.from == from && p.mode == mode)
        .map(|p| u32::from_le_bytes(p.data[..4].try_into().unwrap()))
        .collect()
}

fn tagged(tag: u32, len: usize) -> Vec<u8> {
    let mut p = tag.to_le_bytes().to_vec();
    p.resize(len.max(4), (tag % 251) as u8);
    p
}

/// Two peers (ids 1, 2) that added each other with this `unreliable_lifetime`, connected.
fn pair(config: &MeshConfig, lifetime_ms: i32) -> World {
    let mut w = World::mesh(&[1, 2], config);
    w.introduce_with_lifetime(0, 1, lifetime_ms);
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    for node in &mut w.nodes {
        node.clear_events();
    }
    w
}

#[test]
fn a_burst_of_sends_is_handed_to_str0m_once_and_bundled_into_few_datagrams() {
    let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default());
    w.tick();
    let sent_before = w.nodes[0].mesh().stats().datagrams_sent;
    for tag in 0..100 {
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), RELIABLE, 0, &tagged(tag, 100))
            .unwrap();
    }
    // Nothing was polled out of str0m yet, and the loop is told to come back at once.
    assert_eq!(w.nodes[0].mesh().stats().datagrams_sent, sent_before);
    assert_eq!(w.nodes[0].mesh().poll_timeout(), Some(w.now));
    w.drain(0);
    let datagrams = w.nodes[0].mesh().stats().datagrams_sent - sent_before;
    // 100 × 100 B is about nine 1,200-byte datagrams; one per send was the old cost.
    assert!(datagrams <= 20, "100 sends took {datagrams} datagrams");
    assert!(
        w.run_until(Duration::from_secs(2), |w| w.nodes[1].packets().len()
            == 100)
    );
    assert_eq!(received(&w, 1, 1, RELIABLE), (0..100).collect::<Vec<_>>());
}

/// The multiplayer layer reads the mesh's events between its own sends; that must not drain
/// the links, or every `send_bytes` would cost a poll again.
#[test]
fn a_burst_of_send_bytes_is_handed_to_str0m_once_too() {
    let mut w = World::star(&[2], &MultiplayerConfig::default());
    let now = w.now;
    w.nodes[1].mp_mut().handle_timeout(now);
    while w.nodes[1].mp_mut().poll_transmit().is_some() {}
    let sent_before = w.nodes[1].mesh().stats().datagrams_sent;
    for tag in 0..100 {
        w.nodes[1]
            .mp_mut()
            .send_bytes(Target::Peer(1), RELIABLE, 0, &tagged(tag, 100))
            .unwrap();
    }
    assert_eq!(w.nodes[1].mesh().stats().datagrams_sent, sent_before);
    assert_eq!(w.nodes[1].mp().poll_timeout(), Some(now));
    w.drain(1);
    let datagrams = w.nodes[1].mesh().stats().datagrams_sent - sent_before;
    assert!(datagrams <= 20, "100 sends took {datagrams} datagrams");
    assert!(
        w.run_until(Duration::from_secs(2), |w| w.nodes[0].packets().len()
            == 100)
    );
    let tags: Vec<u32> = w.nodes[0]
        .packets()
        .iter()
        .map(|p| u32::from_le_bytes(p.data[..4].try_into().unwrap()))
        .collect();
    assert_eq!(tags, (0..100).collect::<Vec<_>>());
}

/// 400 packets of 1,000 B on `ordered` and as many on `unreliable`, interleaved, into a
/// 2 Mbit/s link (20 ms each way): over three times what the link carries in the packets'
/// 300 ms lifetime. sctp-proto serves every unordered message before any ordered one, so with a
/// large SCTP buffer (128 KiB, the old default) the ordered packets waited there behind the
/// unordered ones until they expired. rtcmesh keeps SCTP's share small and feeds it round robin.
#[test]
fn a_saturating_burst_is_shared_fairly_between_ordered_and_unreliable() {
    let mut w = pair(&MeshConfig::default(), 300);
    let capped = NetemConfig::new()
        .latency(Duration::from_millis(20))
        .link(Bitrate::mbps(2), DataSize::kbytes(64));
    w.set_all_links(LinkConditions::new(capped));
    w.run_for(Duration::from_millis(1500)); // an RTT measurement on the capped link
    w.tick();
    for tag in 0..400 {
        for mode in [ORDERED, UNRELIABLE] {
            w.nodes[0]
                .mesh_mut()
                .send(Target::Peer(2), mode, 0, &tagged(tag, 1000))
                .unwrap();
        }
    }
    w.drain(0);
    w.run_for(Duration::from_secs(6));
    let ordered = received(&w, 1, 1, ORDERED).len();
    let unreliable = received(&w, 1, 1, UNRELIABLE).len();
    println!("delivered: ordered {ordered}, unreliable {unreliable}");
    assert!(
        ordered >= 20 && unreliable >= 20,
        "{ordered} / {unreliable}"
    );
    let ratio = ordered.max(unreliable) as f64 / ordered.min(unreliable) as f64;
    assert!(ratio <= 1.5, "ordered {ordered} vs unreliable {unreliable}");
    // Most of the burst outlived its lifetime in rtcmesh's queue, on both channels alike.
    let stats = w.nodes[0].mesh().peer_stats(2).unwrap();
    let expired: Vec<u64> = stats.channels.iter().map(|c| c.packets_expired).collect();
    println!("expired per channel: {expired:?}");
    assert_eq!(expired[0], 0, "nothing reliable expires");
    assert!(expired[1] >= 200 && expired[2] >= 200, "{expired:?}");
    assert_eq!(
        w.nodes[0].mesh().stats().packets_expired,
        expired.iter().sum::<u64>()
    );
    assert_eq!(
        stats.channels.iter().map(|c| c.queued_bytes).sum::<usize>(),
        0
    );
}

/// While the link is cut, packets pile up in rtcmesh's queue. A partially reliable packet that
/// waited longer than its lifetime (counted from `send`, as a browser's `maxPacketLifeTime`)
/// never reaches SCTP: it is dropped and counted on its channel. Reliable packets wait.
#[test]
fn a_lifetime_counts_from_send_and_expired_packets_are_counted_per_channel() {
    let mut w = pair(&MeshConfig::default(), 100);
    w.partition(0, 1, true);
    w.tick();
    for tag in 0..60 {
        for mode in [RELIABLE, ORDERED, UNRELIABLE] {
            w.nodes[0]
                .mesh_mut()
                .send(Target::Peer(2), mode, 0, &tagged(tag, 1000))
                .unwrap();
        }
    }
    w.drain(0);
    let queued = w.nodes[0].mesh().peer(2).unwrap().queued_bytes;
    assert!(
        queued > 60_000,
        "most of the burst waits in rtcmesh's queue"
    );
    w.run_for(Duration::from_millis(500));
    w.partition(0, 1, false);
    assert!(
        w.run_until(Duration::from_secs(30), |w| received(w, 1, 1, RELIABLE)
            .len()
            == 60),
        "reliable packets wait out the cut"
    );
    w.run_for(Duration::from_secs(2));
    assert_eq!(received(&w, 1, 1, RELIABLE), (0..60).collect::<Vec<_>>());
    let stats = w.nodes[0].mesh().peer_stats(2).unwrap();
    for (index, mode) in [(1, ORDERED), (2, UNRELIABLE)] {
        let channel = stats.channels[index];
        assert_eq!(channel.mode, mode);
        let delivered = received(&w, 1, 1, mode).len() as u64;
        // Only what SCTP held when the link was cut (about a third of its 32 KiB window per
        // channel) could still be sent; everything queued behind it expired in the queue.
        assert!(channel.packets_expired >= 40, "{mode:?}: {channel:?}");
        assert!(
            delivered + channel.packets_expired <= 60,
            "{mode:?}: {delivered} delivered, {channel:?}"
        );
    }
    assert_eq!(stats.channels[0].packets_expired, 0);
    assert_eq!(w.nodes[0].mesh().peer(2).unwrap().queued_bytes, 0);
}

/// A flood of one-byte packets into a cut link: SCTP holds at most 2,048 chunks (not 32 KiB of
/// them: sctp-proto walks every chunk it holds on each poll) and the queue charges each packet
/// at least 64 bytes, so what a peer can pile up stays bounded in count as well as bytes.
#[test]
fn a_flood_of_tiny_packets_stays_bounded_in_count() {
    let config = MeshConfig::default().with_max_queued_bytes(64 * 1024);
    let mut w = pair(&config, 1);
    w.partition(0, 1, true);
    w.tick();
    let mut accepted = 0;
    let err = loop {
        match w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), RELIABLE, 0, &[7])
        {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1_000_000);
    };
    assert_eq!(err, SendError::QueueFull(vec![2]));
    let queued = w.nodes[0].mesh().peer(2).unwrap().queued_bytes;
    assert_eq!(queued, 1024, "64 KiB of queue at 64 bytes a packet");
    assert!(accepted <= 2048 + 1024 + 64, "{accepted} packets accepted");
    w.partition(0, 1, false);
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.nodes[1].packets().len()
            == accepted)
    );
}

/// 5 % loss with reordering, 1,500 packets of 1 KB split over the reliable channel and a
/// reliable extra channel, with unreliable traffic competing for the same queue: every reliable
/// packet arrives exactly once, in order, per channel; the sender backs off on `QueueFull`.
#[test]
fn reliable_channels_stay_exactly_once_and_in_order_through_the_queue_under_loss() {
    let config = MeshConfig::default().with_channels([RELIABLE]);
    let mut w = pair(&config, 1);
    let lossy = NetemConfig::new()
        .latency(Duration::from_millis(15))
        .loss(RandomLoss::new(Probability::new(0.05)))
        .reorder_gap(7)
        .link(Bitrate::mbps(8), DataSize::kbytes(64));
    w.set_all_links(LinkConditions::new(lossy));
    let total = 1500u32;
    let (mut next, mut full) = (0u32, 0);
    for _ in 0..10_000 {
        if next == total {
            break;
        }
        let channel = (next % 2) as u16; // 0: reliable, 1: the extra reliable channel
        match w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), RELIABLE, channel, &tagged(next, 1000))
        {
            Ok(()) => {
                next += 1;
                // Competing unreliable traffic takes turns in the same queue.
                let _ =
                    w.nodes[0]
                        .mesh_mut()
                        .send(Target::Peer(2), UNRELIABLE, 0, &tagged(next, 300));
            }
            Err(SendError::QueueFull(peers)) => {
                assert_eq!(peers, vec![2]);
                full += 1;
                w.drain(0);
                w.run_for(Duration::from_millis(50));
                w.tick();
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(next, total, "everything was eventually accepted");
    w.drain(0);
    assert!(
        w.run_until(Duration::from_secs(120), |w| {
            w.nodes[1]
                .packets()
                .iter()
                .filter(|p| p.mode == RELIABLE)
                .count()
                == total as usize
        }),
        "only {} of {total} reliable packets arrived",
        received(&w, 1, 1, RELIABLE).len()
    );
    for channel in [0u16, 1] {
        let tags: Vec<u32> = w.nodes[1]
            .packets()
            .into_iter()
            .filter(|p| p.mode == RELIABLE && p.channel == channel)
            .map(|p| u32::from_le_bytes(p.data[..4].try_into().unwrap()))
            .collect();
        let expected: Vec<u32> = (0..total).filter(|t| t % 2 == u32::from(channel)).collect();
        assert_eq!(tags, expected, "channel {channel}: exactly once, in order");
    }
    println!("QueueFull {full} times");
}

/// A 50 ms round trip with a 40 Mbit/s bottleneck: a transfer limited to the smallest SCTP
/// window would move `sctp_send_buffer_min` per round trip (32 KiB / 50 ms ≈ 0.66 MB/s); the
/// window grows with the measured round trip and drain rate, so the link's bandwidth is used.
#[test]
fn a_long_round_trip_bulk_transfer_is_not_capped_at_the_minimum_window_per_round_trip() {
    let config = MeshConfig::default();
    let mut w = pair(&config, 1);
    let long = NetemConfig::new()
        .latency(Duration::from_millis(25))
        .link(Bitrate::mbps(40), DataSize::kbytes(1024));
    w.set_all_links(LinkConditions::new(long));
    w.run_for(Duration::from_millis(1500)); // ICE measures the round trip meanwhile
    let rtt = w.nodes[0].mesh().peer_stats(2).unwrap().round_trip_time;
    let rtt = rtt.expect("ICE measured the round trip");
    assert!(rtt >= Duration::from_millis(50), "{rtt:?}");
    let chunk = 16 * 1024;
    let window_cap = config.sctp_send_buffer_min as f64 / rtt.as_secs_f64(); // bytes/s
    let duration = Duration::from_secs(3);
    let start = w.now;
    let mut tag = 0;
    while w.now - start < duration {
        w.tick();
        while w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), RELIABLE, 0, &tagged(tag, chunk))
            .is_ok()
        {
            tag += 1;
        }
        w.drain(0);
        w.run_for(Duration::from_millis(20));
    }
    let delivered = (received(&w, 1, 1, RELIABLE).len() * chunk) as f64;
    let rate = delivered / duration.as_secs_f64();
    let window = w.nodes[0].mesh().peer_stats(2).unwrap().sctp_window;
    println!(
        "{:.2} MB/s over {rtt:?} (minimum window alone: {:.2} MB/s); window {} KiB",
        rate / 1e6,
        window_cap / 1e6,
        window / 1024
    );
    assert!(
        rate >= 3.0 * window_cap,
        "{rate:.0} B/s is not above 3 × {window_cap:.0} B/s"
    );
    assert!(window > config.sctp_send_buffer_min);
}

/// Issue 18.1: str0m refuses a message above the remote's `a=max-message-size` for good. Such a
/// packet used to be queued as if SCTP's buffer were full: `send` said Ok and every later
/// packet to that peer, on any channel, waited behind it forever.
#[test]
fn a_packet_above_the_remotes_advertised_size_is_refused_and_the_peer_keeps_working() {
    let mut w = World::mesh(&[1, 2, 3], &MeshConfig::default().with_channels([RELIABLE]));
    // Peer 2 advertises 16 KiB, as some WebRTC stacks do.
    w.rewrite_signals(|from, _, signal| {
        if let (2, Signal::Offer(sdp) | Signal::Answer(sdp)) = (from, signal) {
            assert!(sdp.contains("a=max-message-size:65536"));
            *sdp = sdp.replace("a=max-message-size:65536", "a=max-message-size:16384");
        }
    });
    w.introduce_all();
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    let stats = w.nodes[0].mesh().peer_stats(2).unwrap();
    assert_eq!(stats.max_packet_size, 16 * 1024);
    assert_eq!(
        w.nodes[0].mesh().peer_stats(3).unwrap().max_packet_size,
        64 * 1024
    );

    let big = tagged(1, 20 * 1024);
    let refused = SendError::PacketTooLargeForPeers {
        size: big.len(),
        peers: vec![(2, 16 * 1024)],
        queue_full: vec![],
    };
    assert_eq!(
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), RELIABLE, 0, &big),
        Err(refused.clone())
    );
    assert!(refused.to_string().contains("peer 2 accepts (16384 bytes)"));
    // A broadcast reaches everyone else and names the peer it could not reach.
    assert_eq!(
        w.nodes[0].mesh_mut().send(Target::All, RELIABLE, 0, &big),
        Err(refused)
    );
    // Nothing is stuck: the peer's limit and smaller packets on any channel still go through.
    for (tag, channel, len) in [(2, 0, 16 * 1024), (3, 1, 100), (4, 0, 10)] {
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(2), RELIABLE, channel, &tagged(tag, len))
            .unwrap();
    }
    assert_eq!(w.nodes[0].mesh().peer(2).unwrap().queued_bytes, 0);
    w.drain(0);
    assert!(
        w.run_until(Duration::from_secs(2), |w| w.nodes[1].packets().len() == 3
            && w.nodes[2].packets().len() == 1)
    );
    let tags = |n: usize, channel: u16| -> Vec<u32> {
        w.nodes[n]
            .packets()
            .into_iter()
            .filter(|p| p.channel == channel)
            .map(|p| u32::from_le_bytes(p.data[..4].try_into().unwrap()))
            .collect()
    };
    assert_eq!(tags(1, 0), vec![2, 4]);
    assert_eq!(tags(1, 1), vec![3]);
    assert_eq!(received(&w, 2, 1, RELIABLE), vec![1]);
    assert_eq!(w.nodes[2].packets()[0].data, big);
}

/// Issue 25.5: every mesh advertised str0m's default `a=max-message-size:262144` but dropped
/// incoming packets above its own `max_packet_size` (64 KiB) after SCTP had acknowledged them:
/// a 100 KiB packet from a peer allowed to send it vanished, with no error on either side. Now
/// each side advertises what it accepts, and the sender refuses what the receiver would not take.
#[test]
fn a_peer_advertises_the_packet_size_it_accepts_and_larger_packets_are_refused_at_send() {
    let small = MeshConfig::default().with_channels([RELIABLE]);
    let big = small.clone().with_max_packet_size(200 * 1024);
    let mut w = World::new();
    w.add(rtcmesh::Mesh::create_mesh(1, small).expect("mesh"));
    w.add(rtcmesh::Mesh::create_mesh(2, big).expect("mesh"));
    let sizes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = sizes.clone();
    w.rewrite_signals(move |from, _, signal| {
        if let Signal::Offer(sdp) | Signal::Answer(sdp) = signal {
            let line = sdp.lines().find(|l| l.starts_with("a=max-message-size:"));
            seen.borrow_mut().push((from, line.map(str::to_owned)));
        }
    });
    w.introduce_all();
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    let mut sizes = sizes.borrow().clone();
    sizes.sort();
    assert_eq!(
        sizes,
        [
            (1, Some("a=max-message-size:65536".to_owned())),
            (2, Some("a=max-message-size:204800".to_owned())),
        ]
    );
    assert_eq!(
        w.nodes[1].mesh().peer_stats(1).unwrap().max_packet_size,
        64 * 1024
    );
    assert_eq!(
        w.nodes[0].mesh().peer_stats(2).unwrap().max_packet_size,
        64 * 1024
    );

    // Peer 2 may send 200 KiB, peer 1 takes 64 KiB: 100 KiB is refused at send, never lost.
    let packet = tagged(1, 100 * 1024);
    assert_eq!(
        w.nodes[1]
            .mesh_mut()
            .send(Target::Peer(1), RELIABLE, 0, &packet),
        Err(SendError::PacketTooLargeForPeers {
            size: packet.len(),
            peers: vec![(1, 64 * 1024)],
            queue_full: vec![],
        })
    );
    // What fits arrives whole, both ways, and nothing was dropped on receipt.
    let fits = tagged(2, 64 * 1024);
    w.nodes[1]
        .mesh_mut()
        .send(Target::Peer(1), RELIABLE, 0, &fits)
        .unwrap();
    w.nodes[0]
        .mesh_mut()
        .send(Target::Peer(2), RELIABLE, 0, &fits)
        .unwrap();
    w.drain(0);
    w.drain(1);
    assert!(w.run_until(Duration::from_secs(5), |w| {
        received(w, 0, 2, RELIABLE) == [2] && received(w, 1, 1, RELIABLE) == [2]
    }));
    assert_eq!(w.nodes[0].mesh().stats().packets_too_large, 0);
    assert_eq!(w.nodes[1].mesh().stats().packets_too_large, 0);
}

/// A peer that ignores our `a=max-message-size` and sends more anyway (a hostile or broken
/// stack) loses its own connection: SCTP refuses the message on receipt and ends the
/// association. Nothing is acknowledged and then dropped, and the other peers carry on.
#[test]
fn a_peer_that_sends_above_our_advertised_size_is_disconnected_and_the_others_carry_on() {
    let small = MeshConfig::default().with_channels([RELIABLE]);
    let big = small.clone().with_max_packet_size(200 * 1024);
    let mut w = World::new();
    w.add(rtcmesh::Mesh::create_mesh(1, small.clone()).expect("mesh"));
    w.add(rtcmesh::Mesh::create_mesh(2, big).expect("mesh"));
    w.add(rtcmesh::Mesh::create_mesh(3, small).expect("mesh"));
    // Peer 2 is told that peer 1 accepts 200 KiB.
    w.rewrite_signals(|from, to, signal| {
        if let (1, 2, Signal::Offer(sdp) | Signal::Answer(sdp)) = (from, to, signal) {
            *sdp = sdp.replace("a=max-message-size:65536", "a=max-message-size:204800");
        }
    });
    w.introduce_all();
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    let packet = tagged(1, 100 * 1024);
    w.nodes[1]
        .mesh_mut()
        .send(Target::Peer(1), RELIABLE, 0, &packet)
        .unwrap();
    w.drain(1);
    assert!(w.run_until(Duration::from_secs(15), |w| {
        w.nodes[0].disconnected().contains(&2)
    }));
    assert!(received(&w, 0, 2, RELIABLE).is_empty());
    w.nodes[2]
        .mesh_mut()
        .send(Target::Peer(1), RELIABLE, 0, &tagged(2, 64 * 1024))
        .unwrap();
    w.drain(2);
    assert!(
        w.run_until(Duration::from_secs(5), |w| received(w, 0, 3, RELIABLE)
            == [2])
    );
}
