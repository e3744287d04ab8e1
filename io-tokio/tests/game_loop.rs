//! A loop that is not async (a game's frame) drives a tokio endpoint with the calls that never
//! wait: `try_send`, `try_send_many`, `try_call`, `Events::drain` and `snapshot`. Every wait is
//! bounded; a test fails rather than hangs.

use std::time::{Duration, Instant};

use rtcmesh::{ConnectionStatus, Event, Mesh, MeshConfig, SendError, Target, TransferMode};
use rtcmesh_tokio::{Endpoint, EndpointConfig, Events, Handle, OutgoingPacket, TrySendError};

const LIMIT: Duration = Duration::from_secs(10);

fn packet(target: Target, data: &[u8]) -> OutgoingPacket {
    OutgoingPacket {
        target,
        mode: TransferMode::Reliable,
        channel: 0,
        data: data.to_vec(),
    }
}

/// Two endpoints on loopback (a = 2, b = 1) with `config`, connected by carrying their signals.
async fn pair(config: MeshConfig) -> (Handle<Mesh>, Events<Event>, Handle<Mesh>, Events<Event>) {
    let spawn = |id| {
        let mesh = Mesh::create_mesh(id, config.clone()).expect("mesh");
        Endpoint::spawn(EndpointConfig::default(), mesh)
    };
    let (a, mut a_events) = spawn(2).await.expect("a");
    let (b, mut b_events) = spawn(1).await.expect("b");
    b.add_peer(2, 1).await.expect("add 2");
    a.add_peer(1, 1).await.expect("add 1");
    let (mut a_up, mut b_up) = (false, false);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !(a_up && b_up) {
        tokio::select! {
            Some(e) = a_events.recv() => match e {
                Event::Signal(s) => b.handle_signal(2, s.signal).await.expect("signal"),
                Event::PeerConnected(_) => a_up = true,
                _ => {}
            },
            Some(e) = b_events.recv() => match e {
                Event::Signal(s) => a.handle_signal(1, s.signal).await.expect("signal"),
                Event::PeerConnected(_) => b_up = true,
                _ => {}
            },
            () = tokio::time::sleep_until(deadline) => panic!("the loopback pair did not connect"),
        }
    }
    (a, a_events, b, b_events)
}

/// Waits (bounded) until the snapshot satisfies `done`.
async fn until_snapshot(handle: &Handle<Mesh>, done: impl Fn(&rtcmesh_tokio::Snapshot) -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done(&handle.snapshot()) {
        assert!(Instant::now() < deadline, "{:?}", handle.snapshot());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// On a current-thread runtime the loop runs only when the test awaits: three `try_send`s in a
/// row meet a command queue of two, and the third packet comes back whole.
#[tokio::test]
async fn try_send_on_a_full_command_queue_hands_the_packet_back() {
    let mesh = Mesh::create_mesh(2, MeshConfig::default()).expect("mesh");
    let config = EndpointConfig::default().with_command_capacity(2);
    let (handle, _events) = Endpoint::spawn(config, mesh).await.expect("spawn");
    let send = |n: u8| handle.try_send(Target::Peer(9), TransferMode::Reliable, 0, vec![n; 10]);
    assert_eq!(send(1), Ok(()));
    assert_eq!(send(2), Ok(()));
    match send(3) {
        Err(TrySendError::Full(p)) => assert_eq!(p, packet(Target::Peer(9), &[3; 10])),
        other => panic!("expected Full, got {other:?}"),
    }
    let batch = vec![packet(Target::All, b"a"), packet(Target::All, b"b")];
    match handle.try_send_many(batch.clone()) {
        Err(TrySendError::Full(back)) => assert_eq!(back, batch),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(matches!(
        handle.try_call(|m, _| m.unique_id()),
        Err(TrySendError::Full(()))
    ));
    assert_eq!(handle.snapshot().sends.command_queue_full, 3);
    // Once the loop has run, the two queued packets were refused (nobody is peer 9), counted.
    until_snapshot(&handle, |s| s.sends.not_connected == 2).await;
    assert_eq!(handle.snapshot().sends.accepted, 0);
    assert_eq!(send(4), Ok(()), "room again");
}

/// After the close, every call that never waits says so and hands back what it was given;
/// the events end, and the last snapshot says the loop stopped.
#[tokio::test]
async fn after_close_try_send_is_closed_and_the_last_snapshot_says_stopped() {
    let mesh = Mesh::create_mesh(2, MeshConfig::default()).expect("mesh");
    let (handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("spawn");
    assert!(!handle.is_closed() && !events.is_stopped());
    handle.close();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while tokio::time::timeout_at(deadline, events.recv())
        .await
        .expect("the endpoint stops in time")
        .is_some()
    {}
    assert!(handle.is_closed());
    assert!(events.is_stopped());
    assert_eq!(events.try_recv(), None);
    match handle.try_send(Target::All, TransferMode::Unreliable, 0, b"late".to_vec()) {
        Err(TrySendError::Closed(p)) => assert_eq!(p.data, b"late"),
        other => panic!("expected Closed, got {other:?}"),
    }
    let batch = vec![packet(Target::All, b"late")];
    assert_eq!(
        handle.try_send_many(batch.clone()).err(),
        Some(TrySendError::Closed(batch))
    );
    assert!(matches!(
        handle.try_call(|_, _| ()),
        Err(TrySendError::Closed(()))
    ));
    let last = handle.snapshot();
    assert!(last.stopped);
    assert_eq!(last.status, ConnectionStatus::Disconnected);
    assert_eq!(
        handle
            .send(Target::All, TransferMode::Reliable, 0, b"x".to_vec())
            .await,
        Err(SendError::Disconnected)
    );
}

/// What can never be sent is refused at once, before the loop sees it, and counted.
#[tokio::test]
async fn try_send_refuses_at_once_what_can_never_be_sent() {
    let config = MeshConfig::default()
        .with_max_packet_size(1000)
        .with_channels(vec![TransferMode::Reliable]);
    let mesh = Mesh::create_mesh(2, config).expect("mesh");
    let (handle, _events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("spawn");
    let invalid = |target, channel, size: usize| match handle.try_send(
        target,
        TransferMode::Reliable,
        channel,
        vec![7; size],
    ) {
        Err(TrySendError::Invalid { error, packet }) => {
            assert_eq!(packet.data.len(), size, "the packet comes back");
            error
        }
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(invalid(Target::All, 0, 0), SendError::EmptyPacket);
    assert_eq!(
        invalid(Target::All, 0, 1001),
        SendError::PacketTooLarge {
            size: 1001,
            max: 1000
        }
    );
    assert_eq!(invalid(Target::All, 2, 10), SendError::UnknownChannel(2));
    assert_eq!(invalid(Target::Peer(0), 0, 10), SendError::InvalidTarget(0));
    assert_eq!(
        invalid(Target::AllExcept(-3), 0, 10),
        SendError::InvalidTarget(3)
    );
    // The largest packet and the one extra channel pass (a broadcast to nobody is fine).
    assert_eq!(
        handle.try_send(Target::All, TransferMode::Reliable, 1, vec![7; 1000]),
        Ok(())
    );
    let sends = handle.snapshot().sends;
    assert_eq!((sends.invalid, sends.too_large), (4, 1));
    until_snapshot(&handle, |s| s.sends.accepted == 1).await;
}

/// What the loop refuses later (a full queue, a peer that is not there) reaches the reply, in
/// order, and the counters, for a game that kept the reply and for one that did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_from_the_loop_reach_the_reply_and_the_counters() {
    let (a, _a_events, _b, _b_events) =
        pair(MeshConfig::default().with_max_queued_bytes(4_000)).await;
    // One turn: far more than the SCTP window and the 4 kB queue take.
    let burst: Vec<_> = (0..2_000u32)
        .map(|_| packet(Target::Peer(1), &[1; 1_000]))
        .collect();
    let mut batch = burst;
    batch.push(packet(Target::Peer(5), b"nobody"));
    let mut reply = a.try_send_many(batch).expect("queued");
    let deadline = Instant::now() + LIMIT;
    let results = loop {
        if let Some(results) = reply.try_take() {
            break results.expect("the loop ran it");
        }
        assert!(Instant::now() < deadline, "the loop answers in time");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(reply.try_take(), None, "an answer is taken once");
    assert_eq!(results.len(), 2_001);
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(SendError::QueueFull(p)) if p == &[1]))
        .count();
    assert!(
        accepted > 0 && full > 0,
        "{accepted} accepted, {full} refused as full"
    );
    assert_eq!(accepted + full, 2_000);
    assert_eq!(results[2_000], Err(SendError::UnknownPeer(5)));
    // Fire and forget: the same refusals are counted.
    assert_eq!(
        a.try_send(
            Target::Peer(5),
            TransferMode::Reliable,
            0,
            b"again".to_vec()
        ),
        Ok(())
    );
    until_snapshot(&a, |s| s.sends.not_connected == 2).await;
    let sends = a.snapshot().sends;
    assert_eq!(
        (sends.accepted, sends.queue_full),
        (accepted as u64, full as u64)
    );
    assert_eq!(sends.refused(), full as u64 + 2);
}

/// A game thread that never awaits: each 60 Hz frame it queues a tick of packets with
/// `try_send_many`, drains what arrived, and reads the snapshot; the runtime's threads do the
/// networking. Reliable packets arrive in order, and a peer whose `PeerConnected` was read is
/// in the snapshot.
#[test]
fn a_game_thread_sends_and_receives_without_awaiting() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (a, mut a_events, b, mut b_events) = runtime.block_on(pair(MeshConfig::default()));
    let game = std::thread::spawn(move || {
        // `pair` already read both PeerConnected events: the snapshots agree.
        assert_eq!(a.snapshot().connected_peers, [1]);
        assert_eq!(b.snapshot().connected_peers, [2]);
        let mut received = Vec::new();
        let mut tick = 0u32;
        let give_up = Instant::now() + LIMIT;
        while received.len() < 60 {
            assert!(
                Instant::now() < give_up,
                "60 packets within {LIMIT:?}: {received:?}"
            );
            if tick < 20 {
                let batch = (0..3)
                    .map(|n| packet(Target::Peer(1), &(tick * 3 + n).to_be_bytes()))
                    .collect();
                a.try_send_many(batch).expect("room for a tick");
                tick += 1;
            }
            for event in b_events.drain() {
                if let Event::Packet(p) = event {
                    received.push(u32::from_be_bytes(p.data[..4].try_into().expect("4 bytes")));
                }
            }
            a_events.drain().for_each(drop);
            std::thread::sleep(Duration::from_millis(16));
        }
        assert_eq!(received, (0..60).collect::<Vec<_>>());
        let snapshot = b.snapshot();
        assert!(snapshot.mesh.packets_received >= 60, "{snapshot:?}");
        assert_eq!(a.snapshot().sends.accepted, 60);
        (a, b)
    });
    let (a, b) = game.join().expect("the game thread");
    a.close();
    b.close();
}

/// `try_call` adds peers without waiting; `drain` then takes the events that are there (an
/// offer to each), and leaves none behind that were.
#[tokio::test]
async fn try_call_adds_peers_and_drain_takes_their_offers() {
    let mesh = Mesh::create_mesh(5, MeshConfig::default()).expect("mesh");
    let (handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("spawn");
    // Three peers with a smaller id: we offer to each.
    let mut replies: Vec<_> = [1, 2, 3]
        .map(|peer| {
            handle
                .try_call(move |m, now| m.add_peer(now, peer, 1))
                .expect("queued")
        })
        .into();
    until_snapshot(&handle, |s| s.peers == [1, 2, 3] && s.pending.events == 0).await;
    for reply in &mut replies {
        assert_eq!(reply.try_take(), Some(Ok(Ok(()))));
        assert_eq!(reply.try_take(), None);
    }
    let waiting = events.len();
    let drained: Vec<_> = events.drain().collect();
    assert_eq!(drained.len(), waiting);
    assert!(events.is_empty());
    let mut offered: Vec<_> = drained
        .iter()
        .filter_map(|e| match e {
            Event::Signal(s) if matches!(s.signal, rtcmesh::Signal::Offer(_)) => Some(s.to),
            _ => None,
        })
        .collect();
    offered.sort();
    assert_eq!(offered, [1, 2, 3]);
}

/// However the loop ends, the last snapshot says so: here the runtime that ran it is dropped
/// (a game shutting its network thread down), with no close.
#[test]
fn when_the_runtime_goes_away_the_snapshot_says_stopped() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mesh = Mesh::create_mesh(2, MeshConfig::default()).expect("mesh");
    let (handle, _events) = runtime
        .block_on(Endpoint::spawn(EndpointConfig::default(), mesh))
        .expect("spawn");
    assert!(!handle.snapshot().stopped);
    drop(runtime);
    assert!(handle.snapshot().stopped);
    assert!(handle.is_closed());
    let refused = handle.try_send(Target::All, TransferMode::Reliable, 0, b"x".to_vec());
    assert!(
        matches!(refused, Err(TrySendError::Closed(_))),
        "{refused:?}"
    );
}
