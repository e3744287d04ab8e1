//! `MioEndpoint` on loopback sockets: its clock, its socket buffers and its backpressure. Two
//! endpoints share one `Poll` on the test's thread, driven in the order the crate documents.
//! Every loop is bounded in turns and time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use rtcmesh::{
    AddPeerError, Event, Machine, Mesh, MeshConfig, OutgoingSignal, PeerId, SendError, Signal,
    SignalError, Target, TransferMode, Transmit,
};
use rtcmesh_mio::{MioConfig, MioEndpoint};

const LIMIT: Duration = Duration::from_secs(10);

/// A mesh that counts the DTLS datagrams it sends (STUN keepalives are not counted), so a test
/// can see a retransmission.
struct CountDtls {
    mesh: Mesh,
    dtls_sent: usize,
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
            self.dtls_sent += 1;
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

/// Two endpoints in one poll: `[a (id 2), b (id 1)]`, and what each reported that the test
/// did not consume itself.
struct Pair {
    poll: Poll,
    events: Events,
    ends: [MioEndpoint<CountDtls>; 2],
    /// Packets received by each end, when `read` is on for it.
    packets: [Vec<rtcmesh::Packet>; 2],
    /// Whether the application reads each end's events.
    read: [bool; 2],
}

impl Pair {
    fn new() -> Pair {
        Pair::with(MioConfig::default())
    }

    fn with(config: MioConfig) -> Pair {
        let poll = Poll::new().expect("poll");
        let end = |id, token| {
            let mesh = Mesh::create_mesh(id, MeshConfig::default()).expect("mesh");
            MioEndpoint::bind_with(
                config.clone(),
                CountDtls { mesh, dtls_sent: 0 },
                poll.registry(),
                Token(token),
            )
            .expect("bind")
        };
        let ends = [end(2, 0), end(1, 1)];
        let mut pair = Pair {
            poll,
            events: Events::with_capacity(64),
            ends,
            packets: [Vec::new(), Vec::new()],
            read: [true, true],
        };
        let now = Instant::now();
        for (i, peer) in [(0, 1), (1, 2)] {
            pair.ends[i]
                .machine_mut()
                .mesh
                .add_peer(now, peer, 1)
                .expect("peer");
        }
        let mut connected = 0;
        pair.run_until(LIMIT, |_, event| {
            if matches!(event, Event::PeerConnected(_)) {
                connected += 1;
            }
            connected == 2
        });
        pair
    }

    /// One turn of the documented loop for both ends: poll, `handle_ready`, `handle_timeout`,
    /// signals (the commands), `flush`, events. Returns the events read.
    fn turn(&mut self, max_wait: Duration) -> Vec<(usize, Event)> {
        let now = Instant::now();
        let wait = self
            .ends
            .iter()
            .filter_map(|e| e.timeout(now))
            .min()
            .unwrap_or(max_wait)
            .min(max_wait);
        self.poll.poll(&mut self.events, Some(wait)).expect("poll");
        for event in self.events.iter() {
            self.ends[event.token().0]
                .handle_ready(Instant::now())
                .expect("ready");
        }
        let mut seen = Vec::new();
        for i in 0..2 {
            self.ends[i]
                .handle_timeout(Instant::now())
                .expect("timeout");
            if !self.read[i] {
                continue;
            }
            while let Some(event) = self.ends[i].machine_mut().poll_event() {
                seen.push((i, event));
            }
        }
        let mut out = Vec::new();
        for (i, event) in seen {
            match event {
                Event::Signal(s) => {
                    let from = self.ends[i].machine().mesh.unique_id();
                    self.ends[1 - i]
                        .machine_mut()
                        .mesh
                        .handle_signal(Instant::now(), from, s.signal)
                        .expect("signal");
                }
                Event::Packet(p) => self.packets[i].push(p),
                other => out.push((i, other)),
            }
        }
        for end in &mut self.ends {
            let _ = end.flush();
        }
        out
    }

    /// Turns until `done` says so (fed every event other than signals and packets, and
    /// checked after each turn with a placeholder), or panics after `limit`.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair, &Event) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            assert!(Instant::now() < deadline, "not done within {limit:?}");
            let events = self.turn(Duration::from_millis(10));
            let placeholder = Event::StatusChanged(rtcmesh::ConnectionStatus::Connected);
            let mut finished = false;
            for (_, event) in events.iter().chain(std::iter::once(&(0, placeholder))) {
                finished |= done(self, event);
            }
            if finished {
                return;
            }
        }
    }

    /// Turns for `spell`, whatever happens.
    fn run_for(&mut self, spell: Duration) {
        let until = Instant::now() + spell;
        while Instant::now() < until {
            self.turn(until.saturating_duration_since(Instant::now()));
        }
    }
}

/// Issue 18.3: SCTP stamps a chunk with the mesh's latest time; a `handle_timeout` that tells
/// the mesh the time only when a deadline is due leaves a send after a quiet spell with a time
/// seconds old, so the retransmission timer (≥ 1 s) has already expired and it goes out twice.
#[test]
fn after_a_quiet_spell_a_small_send_is_one_datagram_not_two() {
    let mut pair = Pair::new();
    let send = |pair: &mut Pair, data: &[u8]| {
        pair.ends[0]
            .machine_mut()
            .mesh
            .send(Target::Peer(1), TransferMode::Reliable, 0, data)
            .expect("send");
        let _ = pair.ends[0].flush();
        let expected = data.to_vec();
        pair.run_until(LIMIT, |p, _| {
            p.packets[1].last().map(|p| &p.data) == Some(&expected)
        });
    };
    // A first exchange gives SCTP a round-trip sample: its retransmission timeout drops from
    // the initial 3 s to the 1 s minimum.
    send(&mut pair, b"warm-up");
    for round in 0..2u8 {
        pair.run_for(Duration::from_millis(1_500));
        let before = pair.ends[0].machine().dtls_sent;
        send(&mut pair, &[round; 8]);
        // The acknowledgement comes back at once on loopback; a spurious retransmission would
        // go out at once too. Leave both time to happen.
        pair.run_for(Duration::from_millis(150));
        let datagrams = pair.ends[0].machine().dtls_sent - before;
        assert_eq!(
            datagrams, 1,
            "round {round}: one small send after 1.5 s of quiet took {datagrams} datagrams"
        );
    }
}

/// Issue 15.4: while the application does not read events, `handle_ready` leaves datagrams in
/// the socket once the machine holds `max_pending_events`; the backlog stays bounded, the sender
/// slows down, and once the application reads again every reliable packet arrives, in order.
#[test]
fn a_flood_the_application_does_not_read_stays_bounded_and_every_reliable_packet_arrives() {
    const FLOOD: u32 = 3_000;
    const MAX_EVENTS: usize = 32;
    let mut pair = Pair::with(
        MioConfig::default()
            .with_max_pending_events(MAX_EVENTS)
            .with_receive_buffer(256 * 1024),
    );
    let mut next = 0u32;
    let mut flood = |pair: &mut Pair| {
        while next < FLOOD {
            let data = [next.to_le_bytes().as_slice(), &[0xF1; 996]].concat();
            match pair.ends[0].machine_mut().mesh.send(
                Target::Peer(1),
                TransferMode::Reliable,
                0,
                &data,
            ) {
                Ok(()) => next += 1,
                Err(rtcmesh::SendError::QueueFull(_)) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        let _ = pair.ends[0].flush();
    };

    // The application is busy elsewhere: b's events are not read.
    pair.read[1] = false;
    let deadline = Instant::now() + LIMIT;
    while !pair.ends[1].is_behind() {
        assert!(Instant::now() < deadline, "b never fell behind");
        flood(&mut pair);
        pair.turn(Duration::from_millis(5));
    }
    let mut received = Vec::new();
    for _ in 0..20 {
        flood(&mut pair);
        pair.turn(Duration::from_millis(10));
        let pending = pair.ends[1].machine().mesh.pending_events();
        assert!(
            pending.events < MAX_EVENTS + rtcmesh::RECEIVE_BATCH,
            "the machine holds at most one receive batch past the limit: {pending:?}"
        );
        received.push(pair.ends[1].stats().received);
    }
    assert!(
        received.windows(2).all(|w| w[0] == w[1]),
        "b stopped reading the socket while behind: {received:?}"
    );

    // The application reads again: everything arrives, in order.
    pair.read[1] = true;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pair.packets[1].len() < FLOOD as usize {
        assert!(
            Instant::now() < deadline,
            "only {} of {FLOOD} arrived",
            pair.packets[1].len()
        );
        flood(&mut pair);
        pair.turn(Duration::from_millis(10));
    }
    for (n, p) in pair.packets[1].iter().enumerate() {
        assert_eq!(p.data[..4], (n as u32).to_le_bytes(), "packet {n} in order");
    }
}

/// 14.2: the endpoint asks for 4 MiB buffers, reports what the kernel granted and what it
/// dropped.
#[test]
fn the_endpoint_reports_its_socket_buffers_and_kernel_drops() {
    let pair = Pair::new();
    let buffers = pair.ends[0].socket_buffers();
    assert_eq!(buffers.receive_requested, rtcmesh::SOCKET_BUFFER);
    assert!(buffers.receive > 0 && buffers.send > 0, "{buffers:?}");
    if cfg!(target_os = "linux") {
        assert_eq!(pair.ends[0].stats().receive_buffer_drops, Some(0));
    }
}

/// Issue 16: `rebind` replaces an end's socket mid-stream (a new port, as after a network
/// change). Both ends keep streaming reliable packets to each other; every one arrives once and
/// in order, nobody is disconnected, and the other end ends up on the new address: as a moved
/// peer when the answering end (b) rebinds, through an ICE restart when the offering end (a)
/// does.
fn stream_across_a_rebind(mover: usize) -> Vec<(usize, Event)> {
    const PACKETS: u32 = 200;
    const MOVE_AT: u32 = 60;
    let mut pair = Pair::new();
    let ids = [2, 1];
    let old = pair.ends[mover].local_addr();
    let mut events = Vec::new();
    for seq in 0..PACKETS {
        if seq == MOVE_AT {
            let registry = pair.poll.registry().try_clone().expect("registry");
            let new = pair.ends[mover]
                .rebind(&registry, Instant::now(), "127.0.0.1:0".parse().unwrap())
                .expect("rebind");
            assert_ne!(new, old);
            assert_eq!(pair.ends[mover].local_addr(), new);
            let _ = pair.ends[mover].flush();
        }
        for n in 0..2 {
            let mut data = seq.to_le_bytes().to_vec();
            data.resize(200, 7);
            pair.ends[n]
                .machine_mut()
                .mesh
                .send(Target::Peer(ids[1 - n]), TransferMode::Reliable, 0, &data)
                .unwrap_or_else(|e| panic!("send {seq} from {}: {e}", ids[n]));
        }
        let until = Instant::now() + Duration::from_millis(10);
        while Instant::now() < until {
            events.extend(pair.turn(until.saturating_duration_since(Instant::now())));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while pair.packets.iter().any(|p| p.len() < PACKETS as usize) {
        assert!(
            Instant::now() < deadline,
            "delivered {} / {} of {PACKETS}",
            pair.packets[0].len(),
            pair.packets[1].len()
        );
        events.extend(pair.turn(Duration::from_millis(10)));
    }
    for (n, packets) in pair.packets.iter().enumerate() {
        let seqs: Vec<u32> = packets
            .iter()
            .map(|p| u32::from_le_bytes(p.data[..4].try_into().expect("4 bytes")))
            .collect();
        assert_eq!(
            seqs,
            (0..PACKETS).collect::<Vec<_>>(),
            "peer {} received every packet once, in order",
            ids[n]
        );
    }
    let lost: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e, Event::PeerDisconnected(_)))
        .collect();
    assert!(lost.is_empty(), "a peer was lost: {lost:?}");
    let other = 1 - mover;
    let path = pair.ends[other]
        .machine()
        .mesh
        .peer(ids[mover])
        .expect("still a peer")
        .path
        .expect("a path");
    assert_eq!(
        path.remote_address,
        pair.ends[mover].local_addr(),
        "the other end sends to the new socket"
    );
    events
}

#[test]
fn the_answering_end_rebinding_is_recognised_as_a_moved_peer() {
    let events = stream_across_a_rebind(1);
    assert!(
        events
            .iter()
            .any(|(n, e)| *n == 0 && matches!(e, Event::PeerMoved { .. })),
        "{events:?}"
    );
}

#[test]
fn the_offering_end_rebinding_restarts_ice_on_both_ends() {
    let events = stream_across_a_rebind(0);
    for n in 0..2 {
        assert!(
            events
                .iter()
                .any(|(m, e)| *m == n && matches!(e, Event::IceRestartEnded { .. })),
            "{events:?}"
        );
    }
}
