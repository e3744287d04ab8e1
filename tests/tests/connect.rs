//! Connection set-up, status and teardown, as a story per test.

use std::time::{Duration, Instant};

use rtcmesh::{ConnectionStatus, Event, LossReason, Mesh, MeshConfig, Signal, TransferMode};
use rtcmesh_tests::hostile::Attacker;
use rtcmesh_tests::World;

const CONNECT_LIMIT: Duration = Duration::from_secs(10);

fn count<T: PartialEq>(items: &[T], x: T) -> usize {
    items.iter().filter(|&i| *i == x).count()
}

#[test]
fn four_peer_mesh_connects_fully_each_peer_once() {
    let mut w = World::mesh(&[1, 2, 3, 4], &MeshConfig::default());
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    // Let any stray duplicate surface before checking "exactly once".
    w.run_for(Duration::from_secs(2));
    for n in 0..4 {
        let me = w.id(n);
        let mut seen = w.nodes[n].connected();
        seen.sort();
        let others: Vec<_> = [1, 2, 3, 4].into_iter().filter(|&id| id != me).collect();
        assert_eq!(seen, others, "node {me} connected events");
        assert!(w.nodes[n].disconnected().is_empty());
        assert!(
            w.nodes[n].signal_errors.is_empty(),
            "{:?}",
            w.nodes[n].signal_errors
        );
        assert_eq!(w.nodes[n].mesh().status(), ConnectionStatus::Connected);
        assert!(!w.nodes[n].mesh().is_server_relay_supported());
    }
}

#[test]
fn server_with_three_clients() {
    let mut w = World::server_and_clients(&[2, 3, 4], &MeshConfig::default());
    for n in 1..4 {
        assert_eq!(w.nodes[n].mesh().status(), ConnectionStatus::Connecting);
    }
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    w.run_for(Duration::from_secs(1));
    let mut clients = w.nodes[0].connected();
    clients.sort();
    assert_eq!(clients, vec![2, 3, 4]);
    assert!(w.nodes[0].mesh().is_server_relay_supported());
    for n in 1..4 {
        let node = &w.nodes[n];
        assert_eq!(node.connected(), vec![1], "clients see only the server");
        let statuses: Vec<_> = node
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::StatusChanged(s) => Some(*s),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, vec![ConnectionStatus::Connected]);
        assert_eq!(node.mesh().status(), ConnectionStatus::Connected);
        assert!(node.mesh().is_server_relay_supported());
        // Status changes only after the server is announced.
        let connected_at = node
            .events()
            .iter()
            .position(|e| *e == Event::PeerConnected(1));
        let status_at = node
            .events()
            .iter()
            .position(|e| *e == Event::StatusChanged(ConnectionStatus::Connected));
        assert!(connected_at < status_at);
    }
}

#[test]
fn extra_channels_are_all_opened_before_connect() {
    let config =
        MeshConfig::default().with_channels([TransferMode::Unreliable, TransferMode::Reliable]);
    let mut w = World::mesh(&[5, 9], &config);
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    let info = w.nodes[0].mesh().peer(9).expect("peer 9");
    assert!(info.connected);
    assert_eq!((info.open_channels, info.channels), (5, 5));
}

#[test]
fn remove_peer_emits_once_and_the_other_side_notices() {
    let mut w = World::mesh(&[1, 2, 3], &MeshConfig::default());
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    assert!(w.nodes[0].mesh_mut().remove_peer(2));
    w.drain(0);
    assert_eq!(w.nodes[0].disconnected(), vec![2]);
    assert!(!w.nodes[0].mesh().has_peer(2));
    assert!(
        w.run_until(Duration::from_secs(30), |w| w.nodes[1].disconnected()
            == vec![1])
    );
    w.run_for(Duration::from_secs(5));
    assert_eq!(w.nodes[0].disconnected(), vec![2], "exactly once");
    assert_eq!(w.nodes[1].disconnected(), vec![1], "exactly once");
    assert!(!w.nodes[0].mesh_mut().remove_peer(2), "already gone");
    // Node 3 is untouched.
    assert_eq!(
        w.nodes[2].mesh().connected_peers().collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[test]
fn disconnect_peer_without_force_emits_and_with_force_does_not() {
    let mut w = World::mesh(&[1, 2, 3], &MeshConfig::default());
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    assert!(w.nodes[2].mesh_mut().disconnect_peer(1, false));
    assert!(w.nodes[2].mesh_mut().disconnect_peer(2, true));
    w.drain(2);
    assert_eq!(
        w.nodes[2].disconnected(),
        vec![1],
        "force emits nothing (Godot)"
    );
    assert_eq!(w.nodes[2].mesh().peers().count(), 0);
    // Both remote sides notice the loss, once each.
    assert!(w.run_until(Duration::from_secs(30), |w| {
        w.nodes[0].disconnected() == vec![3] && w.nodes[1].disconnected() == vec![3]
    }));
    w.run_for(Duration::from_secs(5));
    assert_eq!(count(&w.nodes[0].disconnected(), 3), 1);
    assert_eq!(count(&w.nodes[1].disconnected(), 3), 1);
}

#[test]
fn close_disconnects_everyone_once() {
    let mut w = World::mesh(&[1, 2, 3], &MeshConfig::default());
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    w.nodes[0].mesh_mut().close();
    w.drain(0);
    let mut gone = w.nodes[0].disconnected();
    gone.sort();
    assert_eq!(gone, vec![2, 3]);
    assert_eq!(w.nodes[0].mesh().status(), ConnectionStatus::Disconnected);
    assert_eq!(
        w.nodes[0].events().last(),
        Some(&Event::StatusChanged(ConnectionStatus::Disconnected))
    );
    assert!(w.run_until(Duration::from_secs(30), |w| {
        w.nodes[1].disconnected() == vec![1] && w.nodes[2].disconnected() == vec![1]
    }));
    // 2 and 3 stay connected to each other.
    assert_eq!(
        w.nodes[1].mesh().connected_peers().collect::<Vec<_>>(),
        vec![3]
    );
    w.nodes[0].mesh_mut().close();
    w.drain(0);
    assert_eq!(
        w.nodes[0].disconnected().len(),
        2,
        "a second close emits nothing"
    );
}

#[test]
fn client_losing_the_server_becomes_disconnected() {
    let mut w = World::server_and_clients(&[2, 3], &MeshConfig::default());
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    w.nodes[0].mesh_mut().remove_peer(2);
    w.drain(0);
    assert!(w.run_until(Duration::from_secs(30), |w| {
        w.nodes[1].mesh().status() == ConnectionStatus::Disconnected
    }));
    assert_eq!(w.nodes[1].disconnected(), vec![1]);
    assert!(matches!(
        w.nodes[1]
            .mesh_mut()
            .send(rtcmesh::Target::Peer(1), TransferMode::Reliable, 0, b"x"),
        Err(rtcmesh::SendError::Disconnected)
    ));
    assert_eq!(w.nodes[2].mesh().status(), ConnectionStatus::Connected);
}

#[test]
fn client_whose_server_never_answers_fails_after_the_connect_timeout() {
    let config = MeshConfig::default().with_connect_timeout(Duration::from_secs(3));
    let mut w = World::server_and_clients(&[2], &config);
    w.vanish(0);
    let now = w.now;
    w.nodes[1].mesh_mut().add_peer(now, 1, 1).unwrap();
    w.drain(1);
    assert!(w.run_until(Duration::from_secs(10), |w| {
        w.nodes[1].mesh().status() == ConnectionStatus::Disconnected
    }));
    let elapsed = w.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(4),
        "{elapsed:?}"
    );
    assert!(
        w.nodes[1].disconnected().is_empty(),
        "never connected, so no disconnect event"
    );
    assert!(!w.nodes[1].mesh().has_peer(1));
}

#[test]
fn vanished_peer_is_detected_and_the_rest_keep_going() {
    let config = MeshConfig::default()
        .with_peer_timeout(Duration::from_secs(2))
        .with_stun_max_rto(Duration::from_millis(500));
    let mut w = World::mesh(&[1, 2, 3], &config);
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    let t0 = w.elapsed();
    w.vanish(2);
    assert!(w.run_until(Duration::from_secs(60), |w| {
        w.nodes[0].disconnected() == vec![3] && w.nodes[1].disconnected() == vec![3]
    }));
    let detection = w.elapsed() - t0;
    println!("vanished peer detected after {detection:?}");
    // Silence for peer_timeout (2 s) counted from the last datagram before the vanish.
    assert!(detection >= Duration::from_millis(1500), "{detection:?}");
    assert!(detection <= Duration::from_secs(2), "{detection:?}");
    w.nodes[0]
        .mesh_mut()
        .send(
            rtcmesh::Target::Peer(2),
            TransferMode::Reliable,
            0,
            b"still here",
        )
        .unwrap();
    w.drain(0);
    assert!(w.run_until(Duration::from_secs(1), |w| !w.nodes[1].packets().is_empty()));
}

#[test]
fn healed_short_partition_within_grace_keeps_the_peer() {
    // The partition outlasts str0m's ICE loss detection (15 s) but not the grace period or
    // the silence limit.
    let config = MeshConfig::default()
        .with_disconnect_grace(Duration::from_secs(20))
        .with_peer_timeout(Duration::from_secs(40));
    let mut w = World::mesh(&[1, 2], &config);
    w.introduce_all();
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    w.partition(0, 1, true);
    w.run_for(Duration::from_secs(19));
    w.partition(0, 1, false);
    w.run_for(Duration::from_secs(10));
    assert!(w.nodes[0].disconnected().is_empty());
    assert!(w.fully_connected());
}

#[test]
fn same_inputs_give_the_same_event_sequence() {
    let run = || {
        let mut w = World::mesh(&[1, 2, 3], &MeshConfig::default());
        w.introduce_all();
        assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
        w.nodes[0]
            .mesh_mut()
            .send(rtcmesh::Target::All, TransferMode::Reliable, 0, b"x")
            .unwrap();
        w.drain(0);
        w.run_for(Duration::from_secs(1));
        let logs: Vec<Vec<Event>> = w.nodes.iter().map(|n| n.events().to_vec()).collect();
        (logs, w.elapsed())
    };
    assert_eq!(run(), run());
}

#[test]
fn a_peer_that_starts_over_is_followed_and_reported_reconnected() {
    // Peer 2 (the offering side) restarts its process and offers again, as it also does when
    // a handshake stalls (`connect_retry_interval`). Peer 1 follows the new offer, reports the
    // old connection lost and the new one connected; a repeat of the same offer is refused.
    let config = MeshConfig::default();
    let mut w = World::connected_mesh(&[1, 2], &config);
    let now = w.now;
    let mut fresh = rtcmesh::Mesh::create_mesh(2, config).unwrap();
    fresh.add_host_candidate(w.nodes[1].addr).unwrap();
    fresh.add_peer(now, 1, 1).unwrap();
    let offer = std::iter::from_fn(|| fresh.poll_event())
        .find_map(|e| match e {
            Event::Signal(s) => Some(s.signal),
            _ => None,
        })
        .expect("an offer");
    *w.nodes[1].machine_mut::<rtcmesh::Mesh>() = fresh;
    w.nodes[0]
        .mesh_mut()
        .handle_signal(now, 2, offer.clone())
        .unwrap();
    assert_eq!(
        w.nodes[0].mesh_mut().handle_signal(now, 2, offer),
        Err(rtcmesh::SignalError::UnexpectedOffer(2)),
        "the same offer twice is not a new attempt"
    );
    w.drain(0);
    assert!(w.run_until(CONNECT_LIMIT, World::fully_connected));
    assert_eq!(
        w.nodes[0].events(),
        vec![Event::PeerDisconnected(2), Event::PeerConnected(2)]
    );
    assert_eq!(w.nodes[0].mesh().stats().connect_retries, 1);
    w.nodes[0]
        .mesh_mut()
        .send(
            rtcmesh::Target::Peer(2),
            TransferMode::Reliable,
            0,
            b"again",
        )
        .unwrap();
    w.drain(0);
    assert!(w.run_until(Duration::from_secs(1), |w| !w.nodes[1].packets().is_empty()));
}

/// Issue 25.7: libdatachannel (Godot's native stack) offers without candidates and trickles
/// them; the answering mesh checked them at once, so the offerer's ICE could complete while it
/// was still applying our answer, and libdatachannel then failed our certificate (about 1
/// connect in 30 on loopback). The answering side now sends no check before the offerer's
/// first one, or before a second has passed (a NAT may need our packets first).
#[test]
fn the_answering_side_sends_no_check_before_the_offerer_can_have_its_answer() {
    let mut w = World::mesh(&[1, 2], &MeshConfig::default());
    // Peer 2 offers; its candidates travel trickled, after the offer, as libdatachannel's do.
    let trickled = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let kept = trickled.clone();
    w.rewrite_signals(move |from, _, signal| {
        if let (2, rtcmesh::Signal::Offer(sdp)) = (from, signal) {
            let (candidates, rest): (Vec<&str>, Vec<&str>) = sdp
                .split("\r\n")
                .partition(|l| l.starts_with("a=candidate:"));
            kept.borrow_mut()
                .extend(candidates.into_iter().map(str::to_owned));
            *sdp = rest.join("\r\n");
        }
    });
    w.introduce(0, 1);
    // The offer arrives; our answer is still on its way to peer 2 (and never gets there).
    w.run_for(Duration::from_millis(7));
    w.signaling = false;
    assert!(!trickled.borrow().is_empty());
    for candidate in trickled.borrow().iter() {
        let now = w.now;
        w.nodes[0]
            .mesh_mut()
            .handle_signal(now, 2, rtcmesh::Signal::Candidate(candidate.clone()))
            .expect("candidate");
    }
    w.drain(0);
    w.run_for(Duration::from_millis(900));
    assert_eq!(
        w.nodes[0].mesh().stats().datagrams_sent,
        0,
        "no check before the offerer has our answer"
    );
    // Still unheard from after a second: we check anyway.
    w.run_for(Duration::from_millis(300));
    assert!(w.nodes[0].mesh().stats().datagrams_sent > 0);
}

/// Two rtcmesh peers configured with different extra channels: every packet on the channel one
/// side lacks would vanish, counted nowhere. Each states its layout in the handshake, so both
/// end the connection with a reason instead, and neither ever reports the other connected.
#[test]
fn peers_with_different_channels_end_the_connection_with_a_reason_instead_of_losing_packets() {
    let mut w = World::new();
    let one = MeshConfig::default().with_channels([TransferMode::Reliable]);
    let two =
        MeshConfig::default().with_channels([TransferMode::Reliable, TransferMode::Unreliable]);
    w.add(Mesh::create_mesh(5, one).expect("mesh 5"));
    w.add(Mesh::create_mesh(9, two).expect("mesh 9"));
    w.introduce_all();
    let lost = |w: &World, n: usize| {
        w.nodes[n].events().iter().find_map(|e| match e {
            Event::PeerLost { reason, .. } => Some(*reason),
            _ => None,
        })
    };
    assert!(w.run_until(CONNECT_LIMIT, |w| lost(w, 0).is_some()
        && lost(w, 1).is_some()));
    let (five, nine) = (lost(&w, 0).unwrap(), lost(&w, 1).unwrap());
    assert_eq!(
        five,
        LossReason::ChannelLayoutMismatch {
            local: 1,
            remote: Some(2)
        }
    );
    assert_eq!(
        nine,
        LossReason::ChannelLayoutMismatch {
            local: 2,
            remote: Some(1)
        }
    );
    assert!(five.to_string().contains("MeshConfig::channels"), "{five}");
    w.run_for(Duration::from_secs(5));
    assert!(w.nodes[0].connected().is_empty() && w.nodes[1].connected().is_empty());
    assert!(!w.nodes[0].mesh().has_peer(9) && !w.nodes[1].mesh().has_peer(5));
}

/// A Godot or browser peer never sees rtcmesh's layout attribute: an answer to an offer without
/// it carries none, while an rtcmesh offer states the layout.
#[test]
fn a_peer_that_is_not_rtcmesh_gets_an_answer_without_the_layout_attribute() {
    let now = Instant::now();
    let mut godot = Attacker::new(now, 9, "127.0.0.1:6009".parse().unwrap());
    let offer = godot.make_offer();
    let mut mesh = Mesh::create_mesh(1, MeshConfig::default()).expect("mesh");
    mesh.add_host_candidate("127.0.0.1:6001".parse().unwrap())
        .expect("candidate");
    mesh.add_peer(now, 9, 1).expect("peer 9");
    mesh.handle_signal(now, 9, offer)
        .expect("Godot's offer applies");
    let answer = std::iter::from_fn(|| mesh.poll_event())
        .find_map(|e| match e {
            Event::Signal(s) => match s.signal {
                Signal::Answer(sdp) => Some(sdp),
                _ => None,
            },
            _ => None,
        })
        .expect("an answer");
    assert!(!answer.contains("x-rtcmesh"), "{answer}");

    let mut offerer = Mesh::create_mesh(2, MeshConfig::default()).expect("mesh");
    offerer
        .add_host_candidate("127.0.0.1:6002".parse().unwrap())
        .expect("candidate");
    offerer.add_peer(now, 1, 1).expect("peer 1");
    let offer = std::iter::from_fn(|| offerer.poll_event())
        .find_map(|e| match e {
            Event::Signal(s) => match s.signal {
                Signal::Offer(sdp) => Some(sdp),
                _ => None,
            },
            _ => None,
        })
        .expect("an offer");
    assert!(offer.contains("\r\na=x-rtcmesh-channels:0\r\n"), "{offer}");
}
