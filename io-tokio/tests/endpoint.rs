//! The tokio `Endpoint` on loopback sockets: its clock, its send path, its socket buffers and
//! its backpressure. Every wait is bounded; a test fails rather than hangs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcmesh::{Event, Machine, Mesh, MeshConfig, OutgoingSignal, Target, Transmit, TransferMode};
use rtcmesh_tokio::{Endpoint, EndpointConfig, Events, Handle};

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
    let (b, mut b_events) = Endpoint::spawn(config, make_b(mesh(1)))
        .await
        .expect("b");
    b.call(|m, now| m.mesh_mut().add_peer(now, 2, 1))
        .await
        .expect("b running")
        .expect("add peer");
    a.call(|m, now| m.mesh_mut().add_peer(now, 1, 1))
        .await
        .expect("a running")
        .expect("add peer");
    let (mut a_up, mut b_up) = (false, false);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !(a_up && b_up) {
        tokio::select! {
            Some(e) = a_events.recv() => match e {
                Event::Signal(s) => b.call(move |m, now| m.mesh_mut().handle_signal(now, 2, s.signal)).await.expect("b").expect("signal"),
                Event::PeerConnected(_) => a_up = true,
                _ => {}
            },
            Some(e) = b_events.recv() => match e {
                Event::Signal(s) => a.call(move |m, now| m.mesh_mut().handle_signal(now, 1, s.signal)).await.expect("a").expect("signal"),
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
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Packet(p))) => return p,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("endpoint stopped"),
            Err(_) => panic!("no packet within {LIMIT:?}"),
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
    a.call(|m, _| m.mesh.send(Target::Peer(1), TransferMode::Reliable, 0, b"warm-up"))
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
