//! rtcmesh's own retransmission of the reliable channels between two rtcmesh peers
//! (`MeshConfig::own_retransmission`): what it guarantees (every message once, in order, per
//! channel, through loss and reordering, across an ICE restart), when it is used (both ends
//! rtcmesh with it on; never with a Godot or browser peer, which sees exactly the old channels
//! and bytes), and what a peer that abuses it can do (nothing but be counted).

use std::time::Duration;

use rtcmesh::{Event, MeshConfig, PeerId, Signal, Target, TransferMode};
use rtcmesh_tests::{LinkConditions, Stream, World};
use str0m_netem::{NetemConfig, Probability, RandomLoss};

const RELIABLE: TransferMode = TransferMode::Reliable;

fn tagged(tag: u32, len: usize) -> Vec<u8> {
    let mut p = tag.to_le_bytes().to_vec();
    p.resize(len.max(4), (tag % 251) as u8);
    p
}

/// Tags of the packets node `n` received from `from` on transfer channel `channel`.
fn received(w: &World, n: usize, from: PeerId, channel: u16) -> Vec<u32> {
    w.nodes[n]
        .packets()
        .into_iter()
        .filter(|p| p.from == from && p.mode == RELIABLE && p.channel == channel)
        .map(|p| u32::from_le_bytes(p.data[..4].try_into().unwrap()))
        .collect()
}

fn lossy(one_way_ms: u64, loss: f32) -> LinkConditions {
    LinkConditions::new(
        NetemConfig::new()
            .latency(Duration::from_millis(one_way_ms))
            .jitter(Duration::from_millis(5))
            .loss(RandomLoss::new(Probability::new(loss))),
    )
}

/// Two meshes (ids 1 and 2) with these configurations, connected; node 1 (id 2) offers.
fn pair(a: &MeshConfig, b: &MeshConfig) -> World {
    let mut w = World::new();
    w.add(rtcmesh::Mesh::create_mesh(1, a.clone()).expect("mesh"));
    w.add(rtcmesh::Mesh::create_mesh(2, b.clone()).expect("mesh"));
    w.introduce(0, 1);
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    for node in &mut w.nodes {
        node.clear_events();
    }
    w
}

fn own(w: &World, n: usize, peer: PeerId) -> Option<rtcmesh::RetransmissionStats> {
    w.nodes[n]
        .mesh()
        .peer_stats(peer)
        .expect("peer")
        .retransmission
}

#[test]
fn two_rtcmesh_peers_agree_on_it_and_every_message_arrives_once_in_order_through_loss_and_reordering(
) {
    let config = MeshConfig::default().with_channels([RELIABLE]);
    let mut w = pair(&config, &config);
    assert!(own(&w, 0, 2).is_some() && own(&w, 1, 1).is_some(), "agreed");
    // 5 % loss each way, and every 7th datagram overtaken by the next ones.
    let mut conditions = lossy(20, 0.05);
    conditions.netem = conditions.netem.reorder_gap(7);
    w.set_all_links(conditions);
    // Both ways, on the default reliable channel and on an extra one, small messages and
    // large ones (several fragments each).
    let sizes = [60, 200, 2_000, 5_000];
    for tag in 0..300u32 {
        for (n, to) in [(0, 2), (1, 1)] {
            for channel in [0, 1] {
                let size = sizes[(tag as usize + channel as usize) % sizes.len()];
                w.nodes[n]
                    .mesh_mut()
                    .send(Target::Peer(to), RELIABLE, channel, &tagged(tag, size))
                    .expect("send");
            }
            w.drain(n);
        }
        w.run_for(Duration::from_millis(10));
    }
    let all = (0..300).collect::<Vec<u32>>();
    assert!(
        w.run_until(Duration::from_secs(30), |w| {
            [(0, 2), (1, 1)].iter().all(|&(n, from)| {
                received(w, n, from, 0).len() == 300 && received(w, n, from, 1).len() == 300
            })
        }),
        "not everything arrived"
    );
    w.run_for(Duration::from_secs(2));
    for (n, from) in [(0, 2), (1, 1)] {
        for channel in [0, 1] {
            assert_eq!(
                received(&w, n, from, channel),
                all,
                "node {n}, channel {channel}"
            );
        }
        // The channel counters count each message once, sent and received.
        let stats = w.nodes[n].mesh().peer_stats(from).unwrap();
        let reliable: Vec<_> = stats
            .channels
            .iter()
            .filter(|c| c.mode == RELIABLE)
            .collect();
        for c in reliable {
            assert_eq!((c.packets_sent, c.packets_received), (300, 300), "{c:?}");
        }
        let own = stats.retransmission.expect("agreed");
        println!("node {n}: {own:?}");
        assert_eq!(own.messages_sent, 600);
        assert!(own.retransmissions > 20, "5 % loss costs retransmissions");
        assert_eq!((own.malformed, own.out_of_window), (0, 0));
    }
    assert!(w.nodes.iter().all(|n| n.disconnected().is_empty()));
}

/// Game traffic at 20 ± 5 ms and 3 % loss for 40 simulated seconds: with SCTP's own recovery
/// some reliable messages wait a second or more (its retransmission timer); with rtcmesh's, a
/// lost message is sent again after about a round trip, and a lost retransmission too.
fn worst_latency(own_retransmission: bool) -> Duration {
    let config = MeshConfig::default().with_own_retransmission(own_retransmission);
    let mut w = pair(&config, &config);
    w.set_all_links(lossy(20, 0.03));
    let mut stream = Stream::new(0, 1, 100);
    stream.run(&mut w, 2_000, Duration::from_millis(20), |_, _| {});
    assert!(stream.finish(&mut w, Duration::from_secs(30)));
    stream.check().unwrap();
    assert_eq!(own(&w, 0, 2).is_some(), own_retransmission);
    stream.worst_latency()
}

#[test]
fn a_lost_message_waits_round_trips_not_seconds() {
    let with = worst_latency(true);
    let without = worst_latency(false);
    println!("worst reliable latency: own retransmission {with:?}, SCTP's {without:?}");
    assert!(with < Duration::from_millis(600), "{with:?}");
    assert!(without > Duration::from_millis(900), "{without:?}");
}

#[test]
fn it_is_off_unless_both_ends_have_it_on() {
    let on = MeshConfig::default();
    let off = MeshConfig::default().with_own_retransmission(false);
    // The answering side (id 1) off, then the offering side (id 2) off.
    for (a, b) in [(&off, &on), (&on, &off)] {
        let mut w = pair(a, b);
        assert_eq!(own(&w, 0, 2), None);
        assert_eq!(own(&w, 1, 1), None);
        for tag in 0..20 {
            w.nodes[1]
                .mesh_mut()
                .send(Target::Peer(1), RELIABLE, 0, &tagged(tag, 100))
                .unwrap();
        }
        w.drain(1);
        w.run_for(Duration::from_millis(100));
        assert_eq!(received(&w, 0, 2, 0), (0..20).collect::<Vec<_>>());
    }
}

#[test]
fn an_answer_that_claims_it_without_an_offer_that_asked_changes_nothing() {
    let off = MeshConfig::default().with_own_retransmission(false);
    let mut w = World::new();
    w.add(rtcmesh::Mesh::create_mesh(1, MeshConfig::default()).expect("mesh"));
    w.add(rtcmesh::Mesh::create_mesh(2, off).expect("mesh"));
    // The answer to the offerer (id 2, off) claims the capability anyway.
    w.rewrite_signals(|from, _, signal| {
        if let (1, Signal::Answer(sdp)) = (from, signal) {
            let at = sdp.find("\r\nm=").unwrap() + 2;
            sdp.insert_str(at, "a=x-rtcmesh-reliable:1\r\n");
        }
    });
    w.introduce(0, 1);
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    assert_eq!(own(&w, 0, 2), None);
    assert_eq!(own(&w, 1, 1), None);
}

#[test]
fn a_godot_or_browser_peer_gets_exactly_the_old_channels_and_bytes() {
    // The raw str0m peer (a Godot-native or browser stack as far as the SDP goes) offers
    // (larger id), then answers a mesh's offer (smaller id): neither way is it agreed.
    for (mesh_id, raw_id) in [(1, 9), (9, 1)] {
        let mut w = World::new();
        w.add(rtcmesh::Mesh::create_mesh(mesh_id, MeshConfig::default()).expect("mesh"));
        let raw = w.add_attacker(raw_id);
        if raw_id > mesh_id {
            w.connect_attacker(0, raw);
        } else {
            let now = w.now;
            w.nodes[0].mesh_mut().add_peer(now, raw_id, 1).unwrap();
            w.drain(0);
            assert!(w.run_until(Duration::from_secs(5), |w| {
                w.nodes[raw].attacker().connected()
                    && w.nodes[0].mesh().peer(raw_id).is_some_and(|p| p.connected)
            }));
        }
        assert_eq!(own(&w, 0, raw_id), None, "mesh {mesh_id}");
        let data = tagged(7, 300);
        w.nodes[0]
            .mesh_mut()
            .send(Target::Peer(raw_id), RELIABLE, 0, &data)
            .unwrap();
        w.drain(0);
        w.run_for(Duration::from_millis(100));
        let attacker = w.nodes[raw].attacker();
        // Only Godot's three channels opened, and the reliable one carried the bytes as sent.
        assert_eq!(
            attacker.opened.len(),
            3,
            "mesh {mesh_id}: {:?}",
            attacker.opened
        );
        assert_eq!(attacker.received, vec![(attacker.layout[0], data.clone())]);
    }
}

#[test]
fn an_ice_restart_mid_stream_keeps_it_and_the_stream() {
    let config = MeshConfig::default();
    let mut w = pair(&config, &config);
    w.set_all_links(lossy(20, 0.02));
    let mut stream = Stream::new(0, 1, 200);
    // Silence past `ice_restart_after` (4 s): the offerer restarts ICE on the same connection.
    stream.run(&mut w, 400, Duration::from_millis(20), |w, i| {
        if i == 100 {
            w.partition(0, 1, true);
        }
        if i == 350 {
            w.partition(0, 1, false);
        }
    });
    assert!(stream.finish(&mut w, Duration::from_secs(30)));
    stream.check().unwrap();
    assert!(
        stream
            .first_event(|e| matches!(e, Event::IceRestartStarted(_)))
            .is_some(),
        "a restart happened"
    );
    assert!(w.nodes.iter().all(|n| n.disconnected().is_empty()));
    let a = own(&w, 0, 2).expect("still agreed");
    assert_eq!(a.messages_sent, 400, "the same state carried on: {a:?}");
    assert!(a.probes > 0, "the silence was probed: {a:?}");
}

#[test]
fn hostile_frames_on_the_hidden_channel_are_counted_and_change_nothing_else() {
    let mut w = World::victim_and_friend(&MeshConfig::default());
    let k = w.add_attacker(9);
    let offer = w.nodes[k]
        .attacker_mut()
        .offer_claiming_own_retransmission();
    w.admit_attacker(0, k, offer);
    assert!(w.run_until(Duration::from_secs(5), |w| {
        w.nodes[k].attacker().connected() && w.nodes[0].mesh().peer(9).is_some_and(|p| p.connected)
    }));
    assert!(own(&w, 0, 9).is_some(), "the victim agreed");
    let hidden = w.nodes[k].attacker_mut().open_hidden_channel();
    w.run_for(Duration::from_millis(50));
    let frames: Vec<Vec<u8>> = vec![
        vec![],                                   // empty
        vec![0x7f, 1, 2, 3],                      // unknown frame type
        vec![0x10, 5],                            // truncated DATA
        vec![0x11, 0, 0, 1, 0, b'x'],             // DATA on channel 1: not reliable
        vec![0x11, 1, 0, 0, 0x80, 0, 0x40, 0, 7], // sequence far past the window
        vec![0x02, 0x3f, 0, 0, 0],                // ACK of a transmission never sent
        vec![0x02, 5, 0, 40, 0],                  // ACK with too many ranges
        vec![0x11, 2, 0, 0, 0, b'o', b'k'],       // a valid message: delivered
    ];
    for f in &frames {
        w.nodes[k].attacker_mut().write(hidden, f);
    }
    w.drain(k);
    w.run_for(Duration::from_millis(200));
    let victim = own(&w, 0, 9).unwrap();
    println!("{victim:?}");
    assert!(victim.malformed >= 5, "{victim:?}");
    assert_eq!(victim.out_of_window, 1, "{victim:?}");
    let delivered: Vec<_> = w.nodes[0]
        .packets()
        .into_iter()
        .filter(|p| p.from == 9)
        .map(|p| p.data.clone())
        .collect();
    assert_eq!(delivered, vec![b"ok".to_vec()]);
    assert!(w.nodes[0].mesh().peer(9).is_some_and(|p| p.connected));
    let (latencies, sent) =
        w.steady_traffic(1, 0, Duration::from_millis(10), Duration::from_millis(300));
    assert_eq!(latencies.len(), sent, "the friend's packets all arrived");
}
