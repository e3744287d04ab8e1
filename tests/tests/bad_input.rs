//! Every bad input gets its typed error (or is dropped and counted) and the mesh keeps working.

use std::net::SocketAddr;
use std::time::Duration;

use rtcmesh::{
    AddPeerError, CreateError, Mesh, MeshConfig, SendError, Signal, SignalError, Target,
    TransferMode,
};
use rtcmesh_tests::World;

/// Node 0 → node 1 still delivers.
fn still_works(w: &mut World) {
    let before = w.nodes[1].packets().len();
    w.nodes[0]
        .mesh_mut()
        .send(Target::Peer(2), TransferMode::Reliable, 0, b"alive")
        .unwrap();
    w.drain(0);
    assert!(
        w.run_until(Duration::from_secs(2), |w| w.nodes[1].packets().len()
            == before + 1)
    );
    assert!(w.fully_connected());
}

#[test]
fn create_rejects_bad_ids_and_config() {
    assert_eq!(
        Mesh::create_mesh(0, MeshConfig::default()).unwrap_err(),
        CreateError::InvalidId(0)
    );
    assert_eq!(
        Mesh::create_mesh(-4, MeshConfig::default()).unwrap_err(),
        CreateError::InvalidId(-4)
    );
    assert_eq!(
        Mesh::create_client(1, MeshConfig::default()).unwrap_err(),
        CreateError::InvalidId(1)
    );
    assert!(Mesh::create_mesh(i32::MAX, MeshConfig::default()).is_ok());
    let too_many = MeshConfig::default().with_channels(vec![
        TransferMode::Reliable;
        rtcmesh::MAX_EXTRA_CHANNELS + 1
    ]);
    assert!(matches!(
        Mesh::create_server(too_many),
        Err(CreateError::TooManyChannels(_))
    ));
    for bad in [
        MeshConfig::default().with_mtu(100),
        MeshConfig::default().with_max_packet_size(0),
        MeshConfig::default().with_max_packet_size(1 << 20),
        MeshConfig::default().with_sctp_send_buffer(10),
        MeshConfig::default().with_peer_timeout(Duration::from_secs(1)),
    ] {
        assert!(matches!(
            Mesh::create_server(bad),
            Err(CreateError::InvalidConfig(_))
        ));
    }
    assert_eq!(
        rtcmesh::TransferMode::try_from(3),
        Err(rtcmesh::InvalidTransferMode(3))
    );
}

#[test]
fn add_peer_errors_follow_godot() {
    let t = std::time::Instant::now();
    let mut client = Mesh::create_client(5, MeshConfig::default()).unwrap();
    assert_eq!(
        client.add_peer(t, 2, 1),
        Err(AddPeerError::ClientOnlyServer(2))
    );
    let mut server = Mesh::create_server(MeshConfig::default()).unwrap();
    assert_eq!(
        server.add_peer(t, 1, 1),
        Err(AddPeerError::ServerCannotAddServer)
    );
    let mut mesh = Mesh::create_mesh(3, MeshConfig::default()).unwrap();
    assert_eq!(mesh.add_peer(t, 0, 1), Err(AddPeerError::InvalidId(0)));
    assert_eq!(mesh.add_peer(t, -7, 1), Err(AddPeerError::InvalidId(-7)));
    assert_eq!(mesh.add_peer(t, 3, 1), Err(AddPeerError::SelfPeer(3)));
    assert_eq!(
        mesh.add_peer(t, 4, -1),
        Err(AddPeerError::InvalidLifetime(-1))
    );
    assert_eq!(
        mesh.add_peer(t, 4, 65536),
        Err(AddPeerError::InvalidLifetime(65536))
    );
    mesh.set_refuse_new_connections(true);
    assert!(mesh.is_refusing_new_connections());
    assert_eq!(mesh.add_peer(t, 4, 1), Err(AddPeerError::Refused));
    mesh.set_refuse_new_connections(false);
    mesh.add_peer(t, 4, 1).unwrap();
    assert_eq!(mesh.add_peer(t, 4, 1), Err(AddPeerError::AlreadyExists(4)));
    assert_eq!(mesh.peers().collect::<Vec<_>>(), vec![4]);
    mesh.close();
    assert_eq!(mesh.add_peer(t, 9, 1), Err(AddPeerError::Closed));
    assert!(matches!(
        mesh.add_host_candidate("0.0.0.0:5000".parse().unwrap()),
        Err(rtcmesh::CandidateError::Rejected(_))
    ));
}

#[test]
fn send_errors_leave_the_mesh_working() {
    let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default());
    let m = w.nodes[0].mesh_mut();
    let max = m.max_packet_size();
    assert_eq!(
        m.send(Target::Peer(2), TransferMode::Reliable, 1, b"x"),
        Err(SendError::UnknownChannel(1))
    );
    assert_eq!(
        m.send(Target::Peer(9), TransferMode::Reliable, 0, b"x"),
        Err(SendError::UnknownPeer(9))
    );
    assert_eq!(
        m.send(Target::Peer(1), TransferMode::Reliable, 0, b"x"),
        Err(SendError::UnknownPeer(1))
    );
    assert_eq!(
        m.send(Target::Peer(0), TransferMode::Reliable, 0, b"x"),
        Err(SendError::InvalidTarget(0))
    );
    assert_eq!(
        m.send(Target::from(i32::MIN), TransferMode::Reliable, 0, b"x"),
        Err(SendError::InvalidTarget(i32::MIN))
    );
    assert_eq!(
        m.send(Target::Peer(2), TransferMode::Reliable, 0, b""),
        Err(SendError::EmptyPacket)
    );
    let big = vec![0u8; max + 1];
    assert_eq!(
        m.send(Target::All, TransferMode::Reliable, 0, &big),
        Err(SendError::PacketTooLarge { size: max + 1, max })
    );
    assert!(w.nodes[1].packets().is_empty());
    still_works(&mut w);
}

#[test]
fn signal_errors_leave_the_mesh_working() {
    let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default());
    let now = w.now;
    let m = w.nodes[1].mesh_mut();
    assert_eq!(
        m.handle_signal(now, 9, Signal::Offer("v=0".into())),
        Err(SignalError::UnknownPeer(9))
    );
    // Node 1 (id 2) made the offer to peer 1: an offer back, or a second answer, is out of turn.
    assert_eq!(
        m.handle_signal(now, 1, Signal::Offer("v=0".into())),
        Err(SignalError::UnexpectedOffer(1))
    );
    assert_eq!(
        m.handle_signal(now, 1, Signal::Answer("v=0".into())),
        Err(SignalError::UnexpectedAnswer(1))
    );
    assert!(matches!(
        m.handle_signal(now, 1, Signal::Candidate("candidate:garbage".into())),
        Err(SignalError::Invalid(_))
    ));
    assert!(m.stats().candidates_rejected >= 1);
    // A valid extra candidate is accepted.
    m.handle_signal(
        now,
        1,
        Signal::Candidate("candidate:1 1 udp 2130706431 127.0.0.9 5000 typ host".into()),
    )
    .unwrap();
    w.drain(1);
    still_works(&mut w);
}

#[test]
fn a_bad_offer_is_refused_and_the_real_one_still_connects() {
    let mut w = World::mesh(&[1, 2], &MeshConfig::default());
    let now = w.now;
    w.nodes[0].mesh_mut().add_peer(now, 2, 1).unwrap(); // id 1 waits for the offer
    for junk in [
        "",
        "v=0",
        "not sdp at all\r\n",
        "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    ] {
        let r = w.nodes[0]
            .mesh_mut()
            .handle_signal(now, 2, Signal::Offer(junk.into()));
        assert!(matches!(r, Err(SignalError::Invalid(_))), "{junk:?}: {r:?}");
    }
    w.nodes[1].mesh_mut().add_peer(now, 1, 1).unwrap(); // id 2 offers
    w.drain(0);
    w.drain(1);
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
}

#[test]
fn signal_text_decoding_rejects_garbage() {
    assert!(Signal::decode("").is_err());
    assert!(Signal::decode("offer").is_err());
    assert!(Signal::decode("bogus\nbody").is_err());
    assert_eq!(
        Signal::decode("answer\nv=0"),
        Ok(Signal::Answer("v=0".into()))
    );
}

#[test]
fn garbage_datagrams_are_dropped_and_counted() {
    let mut w = World::connected_mesh(&[1, 2], &MeshConfig::default());
    let now = w.now;
    let me = w.nodes[0].addr;
    let peer = w.nodes[1].addr;
    let stranger: SocketAddr = "127.0.0.200:4444".parse().unwrap();
    let before = w.nodes[0].mesh().stats();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 5],
        vec![0; 19],
        vec![0; 20],   // STUN-shaped, wrong
        vec![22; 100], // DTLS-shaped
        vec![23, 254, 253, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4, 5], // DTLS app-data record
        vec![0x80, 0x60, 0, 1], // RTP-shaped
        (0..1500u32).map(|i| (i * 7) as u8).collect(),
    ];
    for g in &garbage {
        w.nodes[0].mesh_mut().handle_datagram(now, stranger, me, g);
        w.nodes[0].mesh_mut().handle_datagram(now, peer, me, g); // from the connected peer's address
    }
    let after = w.nodes[0].mesh().stats();
    let dropped = (after.datagrams_malformed - before.datagrams_malformed)
        + (after.datagrams_unroutable - before.datagrams_unroutable)
        + (after.datagrams_rejected - before.datagrams_rejected);
    assert_eq!(
        after.datagrams_received - before.datagrams_received,
        2 * garbage.len() as u64
    );
    assert!(after.datagrams_malformed > before.datagrams_malformed);
    assert!(
        after.datagrams_unroutable > before.datagrams_unroutable,
        "strangers are not routed"
    );
    assert!(
        dropped >= garbage.len() as u64,
        "at least the stranger's are all dropped: {after:?}"
    );
    assert_eq!(
        after.packets_received, before.packets_received,
        "no garbage became a packet"
    );
    w.drain(0);
    assert!(w.nodes[0]
        .events()
        .iter()
        .all(|e| !matches!(e, rtcmesh::Event::PeerDisconnected(_))));
    still_works(&mut w);
}

#[test]
fn known_peers_are_routed_by_address_without_a_scan() {
    let mut w = World::mesh(&[1, 2, 3, 4], &MeshConfig::default());
    w.introduce_all();
    assert!(w.run_until(Duration::from_secs(10), World::fully_connected));
    let before = w.nodes[0].mesh().stats();
    for _ in 0..20 {
        w.nodes[1]
            .mesh_mut()
            .send(Target::Peer(1), TransferMode::Reliable, 0, b"x")
            .unwrap();
    }
    w.drain(1);
    w.run_for(Duration::from_millis(500));
    let after = w.nodes[0].mesh().stats();
    let received = after.datagrams_received - before.datagrams_received;
    assert!(received > 0);
    assert_eq!(
        after.datagrams_routed - before.datagrams_routed,
        received,
        "every datagram routed by the map"
    );
    assert_eq!(w.nodes[0].mesh().known_routes(), 3);
}
