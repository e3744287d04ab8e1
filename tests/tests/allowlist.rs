//! `MeshConfig::remote_allowlist`: no packet ever goes to an address outside it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtcmesh::{Event, IpPrefix, Mesh, MeshConfig, Signal};
use rtcmesh_tests::World;

fn loopback_only() -> MeshConfig {
    MeshConfig::default().with_remote_allowlist(Some(IpPrefix::loopback()))
}

#[test]
fn candidates_and_datagrams_outside_the_allowlist_are_dropped_and_nothing_is_sent_there() {
    let now = Instant::now();
    let outside: SocketAddr = "192.168.77.7:5000".parse().unwrap();
    // The offerer announces a loopback and a LAN address.
    let mut offerer = Mesh::create_mesh(2, MeshConfig::default()).unwrap();
    offerer
        .add_host_candidate("127.0.0.2:5000".parse().unwrap())
        .unwrap();
    offerer.add_host_candidate(outside).unwrap();
    offerer.add_peer(now, 1, 1).unwrap();
    let offer = std::iter::from_fn(|| offerer.poll_event())
        .find_map(|e| match e {
            Event::Signal(s) => Some(s.signal),
            _ => None,
        })
        .expect("offer");
    assert!(
        offer.body().contains("192.168.77.7"),
        "the offer carries the LAN candidate"
    );

    let mut answerer = Mesh::create_mesh(1, loopback_only()).unwrap();
    answerer
        .add_host_candidate("127.0.0.1:5000".parse().unwrap())
        .unwrap();
    answerer.add_peer(now, 2, 1).unwrap();
    answerer.handle_signal(now, 2, offer).unwrap();
    assert_eq!(
        answerer.stats().candidates_not_allowed,
        1,
        "SDP candidate dropped"
    );
    answerer
        .handle_signal(
            now,
            2,
            Signal::Candidate("candidate:9 1 udp 2130706431 10.9.9.9 4000 typ host".into()),
        )
        .unwrap();
    assert_eq!(
        answerer.stats().candidates_not_allowed,
        2,
        "trickled candidate dropped"
    );
    answerer.handle_datagram(
        now,
        "10.0.0.1:4000".parse().unwrap(),
        "127.0.0.1:5000".parse().unwrap(),
        &[0, 1, 0, 0],
    );
    assert_eq!(answerer.stats().datagrams_not_allowed, 1);

    // Run ICE for a while: every datagram goes to loopback, some to the allowed candidate.
    let mut to_allowed = 0;
    let mut t = now;
    while t < now + Duration::from_secs(3) {
        answerer.handle_timeout(t);
        while let Some(transmit) = answerer.poll_transmit() {
            assert!(
                transmit.destination.ip().is_loopback(),
                "sent to {}",
                transmit.destination
            );
            to_allowed += usize::from(transmit.destination == "127.0.0.2:5000".parse().unwrap());
        }
        t = answerer
            .poll_timeout()
            .unwrap_or(t + Duration::from_millis(50))
            .max(t + Duration::from_millis(1));
    }
    assert!(to_allowed > 0, "ICE checks went to the allowed candidate");
}

#[test]
fn a_mesh_with_an_allowlist_that_covers_its_peers_connects() {
    let world = World::connected_mesh(&[1, 2, 3], &loopback_only());
    for node in &world.nodes {
        assert_eq!(node.mesh().connected_peers().count(), 2);
        assert_eq!(node.mesh().stats().candidates_not_allowed, 0);
    }
}
