//! The tokio `Endpoint` on loopback sockets: its clock, its send path, its socket buffers and
//! its backpressure. Every wait is bounded; a test fails rather than hangs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcmesh::{
    AddPeerError, Event, Machine, Mesh, MeshConfig, OutgoingSignal, PeerId, SendError, Signal,
    SignalError, Target, TransferMode, Transmit,
};
use rtcmesh_tokio::{Endpoint, EndpointConfig, Events, Handle, OutgoingPacket};

const LIMIT: Duration = Duration::from_secs(10);

/// A mesh that counts the DTLS datagrams it sends (SCTP data and acknowledgements; STUN
/// keepalives are not counted), so a test can see a retransmission.
struct CountDtls {
    mesh: Mesh,
    dtls_sent: Arc<AtomicUsize>,
}

impl Machine for CountDtls {
    type Event = Event;
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        self.mesh.handle_datagram(now, from, to, bytes)
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.mesh.handle_timeout(now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        let transmit = self.mesh.poll_transmit()?;
        // RFC 7983: DTLS records start with a byte in 20..=63, STUN with 0..=3.
        if (20..=63).contains(&transmit.contents[0]) {
            self.dtls_sent.fetch_add(1, Ordering::Relaxed);
        }
        Some(transmit)
    }
    fn poll_event(&mut self) -> Option<Event> {
        self.mesh.poll_event()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.mesh.poll_timeout()
    }
    fn add_peer(&mut self, now: Instant, peer: PeerId, lifetime: i32) -> Result<(), AddPeerError> {
        self.mesh.add_peer(now, peer, lifetime)
    }
    fn remove_peer(&mut self, peer: PeerId) -> bool {
        self.mesh.remove_peer(peer)
    }
    fn disconnect_peer(&mut self, peer: PeerId, force: bool) -> bool {
        self.mesh.disconnect_peer(peer, force)
    }
    fn handle_signal(&mut self, now: Instant, from: PeerId, s: Signal) -> Result<(), SignalError> {
        self.mesh.handle_signal(now, from, s)
    }
    fn send(&mut self, to: Target, mode: TransferMode, ch: u16, d: &[u8]) -> Result<(), SendError> {
        self.mesh.send(to, mode, ch, d)
    }
    fn close(&mut self) {
        self.mesh.close()
    }
    fn mesh(&self) -> &Mesh {
        &self.mesh
    }
    fn mesh_mut(&mut self) -> &mut Mesh {
        &mut self.mesh
    }
    fn into_signal(event: Event) -> Result<OutgoingSignal, Event> {
        <Mesh as Machine>::into_signal(event)
    }
}

/// Two endpoints on loopback, connected by forwarding their signals: (a, a's events, b, b's
/// events). Ids: a = 2, b = 1.
async fn pair<M, N>(
    make_a: impl FnOnce(Mesh) -> M,
    make_b: impl FnOnce(Mesh) -> N,
    config: EndpointConfig,
) -> (Handle<M>, Events<Event>, Handle<N>, Events<Event>)
where
    M: Machine<Event = Event> + Send + 'static,
    N: Machine<Event = Event> + Send + 'static,
{
    let mesh = |id| Mesh::create_mesh(id, MeshConfig::default()).expect("mesh");
    let (a, mut a_events) = Endpoint::spawn(config.clone(), make_a(mesh(2)))
        .await
        .expect("a");
    let (b, mut b_events) = Endpoint::spawn(config, make_b(mesh(1))).await.expect("b");
    b.call(|m, now| m.add_peer(now, 2, 1))
        .await
        .expect("b running")
        .expect("add peer");
    a.call(|m, now| m.add_peer(now, 1, 1))
        .await
        .expect("a running")
        .expect("add peer");
    let (mut a_up, mut b_up) = (false, false);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !(a_up && b_up) {
        tokio::select! {
            Some(e) = a_events.recv() => match e {
                Event::Signal(s) => b.call(move |m, now| m.handle_signal(now, 2, s.signal)).await.expect("b").expect("signal"),
                Event::PeerConnected(_) => a_up = true,
                _ => {}
            },
            Some(e) = b_events.recv() => match e {
                Event::Signal(s) => a.call(move |m, now| m.handle_signal(now, 1, s.signal)).await.expect("a").expect("signal"),
                Event::PeerConnected(_) => b_up = true,
                _ => {}
            },
            () = tokio::time::sleep_until(deadline) => panic!("the loopback pair did not connect"),
        }
    }
    (a, a_events, b, b_events)
}

/// The next packet on `events`, within LIMIT.
async fn packet(events: &mut Events<Event>) -> rtcmesh::Packet {
    packet_within(events, LIMIT).await
}

/// The next packet on `events`, within `limit`.
async fn packet_within(events: &mut Events<Event>, limit: Duration) -> rtcmesh::Packet {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Packet(p))) => return p,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("endpoint stopped"),
            Err(_) => panic!("no packet within {limit:?}"),
        }
    }
}

/// Issue 18.3: SCTP stamps a chunk with the mesh's latest time. A loop that tells the mesh the
/// time only when a deadline fires sends after a quiet spell with a time seconds old, so the
/// retransmission timer (≥ 1 s) has already expired and every send goes out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_quiet_spell_a_small_send_is_one_datagram_not_two() {
    let dtls_sent = Arc::new(AtomicUsize::new(0));
    let counter = dtls_sent.clone();
    let (a, _a_events, _b, mut b_events) = pair(
        move |mesh| CountDtls {
            mesh,
            dtls_sent: counter,
        },
        |mesh| mesh,
        EndpointConfig::default(),
    )
    .await;
    // A first exchange gives SCTP a round-trip sample: its retransmission timeout drops from
    // the initial 3 s to the 1 s minimum.
    a.call(|m, _| {
        m.mesh
            .send(Target::Peer(1), TransferMode::Reliable, 0, b"warm-up")
    })
    .await
    .expect("a running")
    .expect("send");
    assert_eq!(packet(&mut b_events).await.data, b"warm-up");
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let before = dtls_sent.load(Ordering::Relaxed);
        a.call(move |m, _| {
            m.mesh
                .send(Target::Peer(1), TransferMode::Reliable, 0, &[round; 8])
        })
        .await
        .expect("a running")
        .expect("send");
        assert_eq!(packet(&mut b_events).await.data, vec![round; 8]);
        // The acknowledgement comes back at once on loopback; a spurious retransmission would
        // go out at once too. Leave both time to happen.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let datagrams = dtls_sent.load(Ordering::Relaxed) - before;
        assert_eq!(
            datagrams, 1,
            "round {round}: one small send after 1.5 s of quiet took {datagrams} datagrams"
        );
    }
}

/// Issue 15.4: an application that stops reading events must not make the endpoint buffer
/// without limit. The event channel fills, the loop stops reading the socket (the kernel's
/// buffer takes the rest, then drops, and SCTP slows the sender), and once the application
/// reads again every reliable packet arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_the_application_does_not_read_stays_bounded_and_every_reliable_packet_arrives() {
    const FLOOD: u32 = 3_000;
    let config = EndpointConfig::default()
        .with_event_capacity(64)
        .with_receive_buffer(256 * 1024);
    let (a, _a_events, b, mut b_events) = pair(|m| m, |m| m, config).await;
    assert_eq!(b_events.capacity(), 64);

    let a_stats = a.clone();
    let flood = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut next = 0u32;
        while next < FLOOD {
            assert!(Instant::now() < deadline, "sender stuck at {next}");
            let batch: Vec<OutgoingPacket> = (next..FLOOD.min(next + 64))
                .map(|n| OutgoingPacket {
                    target: Target::Peer(1),
                    mode: TransferMode::Reliable,
                    channel: 0,
                    data: [n.to_le_bytes().as_slice(), &[0xF1; 996]].concat(),
                })
                .collect();
            let results = a.send_many(batch).await;
            let accepted = results.iter().take_while(|r| r.is_ok()).count();
            next += accepted as u32;
            if let Some(Err(e)) = results.get(accepted) {
                assert!(matches!(e, SendError::QueueFull(_)), "send: {e}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    // The application is busy elsewhere: the channel fills up.
    let deadline = Instant::now() + LIMIT;
    while b_events.len() < b_events.capacity() {
        assert!(Instant::now() < deadline, "the event channel never filled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sample = || async {
        let pending = b.call(|m, _| m.pending_events()).await.expect("b running");
        (pending, b.stats().await.expect("b running").received)
    };
    let (pending, received) = sample().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (later, received_later) = sample().await;
    assert_eq!(
        b_events.len(),
        64,
        "the channel holds its capacity, no more"
    );
    assert_eq!(
        received, received_later,
        "the loop stopped reading the socket while the application was behind"
    );
    for p in [pending, later] {
        assert!(
            p.events <= rtcmesh::RECEIVE_BATCH && p.bytes <= rtcmesh::RECEIVE_BATCH * 1000,
            "the mesh holds at most one receive batch beyond the channel: {p:?}"
        );
    }

    // The application reads again: everything arrives, in order.
    // SCTP backed off while the socket was not read (its retransmission timeout doubles from
    // 1 s on each expiry), so allow for a few timeouts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for n in 0..FLOOD {
        let p = match tokio::time::timeout_at(
            deadline,
            packet_within(&mut b_events, Duration::from_secs(60)),
        )
        .await
        {
            Ok(p) => p,
            Err(_) => panic!(
                "packet {n} of {FLOOD} never came: b {:?}, a {:?}, b pending {:?}, b channel {}",
                b.stats().await,
                a_stats.stats().await,
                b.call(|m, _| m.pending_events()).await,
                b_events.len()
            ),
        };
        assert_eq!(p.data[..4], n.to_le_bytes(), "packet {n} in order");
    }
    flood.await.expect("sender");
}

/// `send_many` sends a batch in one turn of the loop and answers per packet: a bad packet is
/// refused with its own error, the others go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_many_answers_per_packet_and_sends_the_good_ones() {
    let (a, mut a_events, _b, mut b_events) = pair(|m| m, |m| m, EndpointConfig::default()).await;
    let packet = |target, data: &[u8]| OutgoingPacket {
        target,
        mode: TransferMode::Reliable,
        channel: 0,
        data: data.to_vec(),
    };
    let results = a
        .send_many(vec![
            packet(Target::Peer(1), b"one"),
            packet(Target::Peer(9), b"nobody"),
            packet(Target::Peer(1), b""),
            packet(Target::All, b"two"),
        ])
        .await;
    assert_eq!(
        results,
        vec![
            Ok(()),
            Err(SendError::UnknownPeer(9)),
            Err(SendError::EmptyPacket),
            Ok(())
        ]
    );
    assert_eq!(packet_data(&mut b_events).await, b"one");
    assert_eq!(packet_data(&mut b_events).await, b"two");
    a.close();
    while a_events.recv().await.is_some() {}
    a_events.finished().await.expect("closed cleanly");
    let results = a.send_many(vec![packet(Target::Peer(1), b"late")]).await;
    assert_eq!(results, vec![Err(SendError::Disconnected)]);
}

async fn packet_data(events: &mut Events<Event>) -> Vec<u8> {
    packet(events).await.data
}

/// 14.2: the endpoint asks for 4 MiB buffers and says what the kernel granted; a request
/// above the kernel's cap is reported with the setting to raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_reports_its_socket_buffers_and_kernel_drops() {
    let mesh = Mesh::create_mesh(1, MeshConfig::default()).expect("mesh");
    let (handle, _events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("endpoint");
    let buffers = handle.socket_buffers();
    assert_eq!(buffers.receive_requested, rtcmesh::SOCKET_BUFFER);
    assert_eq!(buffers.send_requested, rtcmesh::SOCKET_BUFFER);
    assert!(buffers.receive > 0 && buffers.send > 0, "{buffers:?}");
    if cfg!(target_os = "linux") {
        assert_eq!(
            handle.stats().await.expect("running").receive_buffer_drops,
            Some(0)
        );
    }
    // Far above any cap the kernel allows: granted less, and the report says which setting.
    let huge = EndpointConfig::default().with_receive_buffer(1 << 30);
    let mesh = Mesh::create_mesh(2, MeshConfig::default()).expect("mesh");
    let (handle, _events) = Endpoint::spawn(huge, mesh).await.expect("endpoint");
    let warning = handle.socket_buffers().shortfall().expect("shortfall");
    assert!(warning.contains("net.core.rmem_max"), "{warning}");
}
