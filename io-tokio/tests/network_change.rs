//! Real sockets on loopback: a peer whose socket is replaced by one on a new port mid-stream
//! (what a NAT rebinding or a network change looks like to the other side) keeps its peer id
//! and its reliable stream, exactly once and in order, through the lobby. Every wait is bounded.

use std::time::{Duration, Instant};

use rtcmesh::lobby::LobbyServerConfig;
use rtcmesh::{Event, Mesh, Target, TransferMode};
use rtcmesh_tokio::{join, JoinOptions, Session, SignalServer};

const PACKETS: u32 = 300;
const EVERY: Duration = Duration::from_millis(10);
const MOVE_AT: u32 = 100;

/// What one side received from the other: (sequence number, arrival time), and every event
/// that is not a packet.
#[derive(Default)]
struct Log {
    arrived: Vec<(u32, Instant)>,
    other: Vec<(Instant, Event)>,
}

fn record(session: &mut Session<Mesh>, log: &mut Log) {
    while let Some(event) = session.events.try_recv() {
        match event {
            Event::Packet(p) if p.mode == TransferMode::Reliable => {
                let seq = u32::from_le_bytes(p.data[..4].try_into().expect("4 bytes"));
                log.arrived.push((seq, Instant::now()));
            }
            other => log.other.push((Instant::now(), other)),
        }
    }
}

async fn wait_connected(session: &mut Session<Mesh>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, session.events.recv())
            .await
            .expect("connected within 10 s")
            .expect("events");
        if matches!(event, Event::PeerConnected(_)) {
            return;
        }
    }
}

/// Host (id 1, answers) and a joiner (offers) stream to each other; at `MOVE_AT` node `mover`
/// replaces its socket. Returns how long delivery stalled (the first packet sent after the
/// move, in either direction) and the events seen.
async fn stream_across_a_rebind(mover: usize) -> (Duration, Vec<(Duration, usize, Event)>) {
    let server = SignalServer::bind("127.0.0.1:0".parse().unwrap(), LobbyServerConfig::default())
        .await
        .expect("signaling server");
    let host = join(&server.url(), "", JoinOptions::default())
        .await
        .expect("host");
    let guest = join(&server.url(), &host.lobby, JoinOptions::default())
        .await
        .expect("guest");
    let mut s = [host, guest];
    for session in &mut s {
        wait_connected(session).await;
    }
    let ids = [s[0].id(), s[1].id()];
    let old = s[mover].handle.local_addr();
    let mut logs = [Log::default(), Log::default()];
    let mut sent_at = Vec::new();
    let mut moved_at = None;
    for seq in 0..PACKETS {
        if seq == MOVE_AT {
            moved_at = Some(Instant::now());
            let new = s[mover]
                .handle
                .rebind("127.0.0.1:0".parse().unwrap())
                .await
                .expect("rebind");
            assert_ne!(new, old);
        }
        sent_at.push(Instant::now());
        for n in 0..2 {
            let mut data = seq.to_le_bytes().to_vec();
            data.resize(200, 7);
            s[n].handle
                .send(Target::Peer(ids[1 - n]), TransferMode::Reliable, 0, data)
                .await
                .unwrap_or_else(|e| panic!("send {seq} from {}: {e}", ids[n]));
        }
        tokio::time::sleep(EVERY).await;
        for n in 0..2 {
            record(&mut s[n], &mut logs[n]);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while logs.iter().any(|l| l.arrived.len() < PACKETS as usize) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for n in 0..2 {
            record(&mut s[n], &mut logs[n]);
        }
    }
    let moved_at = moved_at.unwrap();
    let mut stall = Duration::ZERO;
    for (n, log) in logs.iter().enumerate() {
        let seqs: Vec<u32> = log.arrived.iter().map(|&(q, _)| q).collect();
        assert_eq!(
            seqs,
            (0..PACKETS).collect::<Vec<_>>(),
            "peer {} received every packet once, in order",
            ids[n]
        );
        let &(_, at) = &log.arrived[MOVE_AT as usize];
        stall = stall.max(at - sent_at[MOVE_AT as usize]);
        let lost: Vec<_> = log
            .other
            .iter()
            .filter(|(_, e)| matches!(e, Event::PeerDisconnected(_)))
            .collect();
        assert!(lost.is_empty(), "peer {} lost its peer: {lost:?}", ids[n]);
    }
    for session in &s {
        assert_eq!(session.rejected_signals(), 0);
    }
    // Same ids, still connected, on the new socket.
    let connected = s[1 - mover]
        .handle
        .call(|m, _| m.connected_peers().collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(connected, vec![ids[mover]]);
    let events = logs
        .into_iter()
        .enumerate()
        .flat_map(|(n, l)| {
            l.other
                .into_iter()
                .map(move |(t, e)| (t.saturating_duration_since(moved_at), n, e))
        })
        .collect();
    (stall, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answering_side_replacing_its_socket_keeps_its_id_and_reliable_stream() {
    let (stall, events) = stream_across_a_rebind(0).await;
    println!("answering side rebound: first packet after the move arrived {stall:?} after it was sent; events {events:?}");
    assert!(
        events
            .iter()
            .any(|(_, n, e)| *n == 1 && matches!(e, Event::PeerMoved { .. })),
        "{events:?}"
    );
    assert!(stall < Duration::from_secs(8), "stalled {stall:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offering_side_replacing_its_socket_restarts_ice_and_keeps_its_id_and_stream() {
    let (stall, events) = stream_across_a_rebind(1).await;
    println!("offering side rebound: first packet after the move arrived {stall:?} after it was sent; events {events:?}");
    for n in 0..2 {
        assert!(
            events
                .iter()
                .any(|(_, m, e)| *m == n && matches!(e, Event::IceRestartEnded { .. })),
            "{events:?}"
        );
    }
    assert!(stall < Duration::from_secs(8), "stalled {stall:?}");
}
