//! Real UDP and WebSocket sockets on loopback: meshes formed through `SignalServer`.
//! Every wait is bounded; a test fails rather than hangs.

use std::time::{Duration, Instant};

use rtcmesh::lobby::{LobbyEvent, LobbyServerConfig};
use rtcmesh::{Event, Mesh, MeshConfig, PeerId, Target, TransferMode};
use rtcmesh_tokio::{join, JoinOptions, Session, SignalServer};

const LIMIT: Duration = Duration::from_secs(10);

async fn server() -> SignalServer {
    SignalServer::bind(
        "127.0.0.1:0".parse().expect("addr"),
        LobbyServerConfig::default(),
    )
    .await
    .expect("signaling server")
}

/// Waits (bounded) for an event matching `pick`, returning what it extracted.
async fn next_matching<T>(
    session: &mut Session<Mesh>,
    limit: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, session.events.recv())
            .await
            .ok()??;
        if let Some(found) = pick(&event) {
            return Some(found);
        }
    }
}

async fn connected_to(session: &mut Session<Mesh>, count: usize) -> Vec<PeerId> {
    let mut peers = Vec::new();
    while peers.len() < count {
        let id = next_matching(session, LIMIT, |e| match e {
            Event::PeerConnected(id) => Some(*id),
            _ => None,
        })
        .await
        .unwrap_or_else(|| panic!("peer {} saw only {peers:?} connect", session.id()));
        peers.push(id);
    }
    peers.sort();
    peers
}

async fn packet_from(session: &mut Session<Mesh>, limit: Duration) -> Option<(PeerId, Vec<u8>)> {
    next_matching(session, limit, |e| match e {
        Event::Packet(p) => Some((p.from, p.data.clone())),
        _ => None,
    })
    .await
}

fn ids_except(sessions: &[Session<Mesh>], me: usize) -> Vec<PeerId> {
    let mut ids: Vec<PeerId> = sessions
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != me)
        .map(|(_, s)| s.id())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_form_a_mesh_through_the_signaling_server() {
    let server = server().await;
    let host = join(&server.url(), "", JoinOptions::default())
        .await
        .expect("host joins");
    assert_eq!(host.id(), 1, "the lobby host is peer 1");
    let lobby = host.lobby.clone();
    let mut sessions = vec![host];
    for _ in 0..2 {
        sessions.push(
            join(&server.url(), &lobby, JoinOptions::default())
                .await
                .expect("join"),
        );
    }
    for i in 0..sessions.len() {
        let expected = ids_except(&sessions, i);
        assert_eq!(connected_to(&mut sessions[i], 2).await, expected);
    }
    for (i, s) in sessions.iter().enumerate() {
        let greeting = format!("hello from {i}").into_bytes();
        s.handle
            .send(Target::All, TransferMode::Reliable, 0, greeting)
            .await
            .expect("send");
    }
    for i in 0..sessions.len() {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (from, data) = packet_from(&mut sessions[i], LIMIT).await.expect("packet");
            got.push((from, String::from_utf8(data).expect("utf8")));
        }
        got.sort();
        let mut expected: Vec<(PeerId, String)> = sessions
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, s)| (s.id(), format!("hello from {j}")))
            .collect();
        expected.sort();
        assert_eq!(got, expected);
    }
    for s in &sessions {
        assert_eq!(s.rejected_signals(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_three_clients_one_leaves_and_the_others_are_told() {
    let server = server().await;
    let options = JoinOptions::default().with_mesh(false);
    let mut host = join(&server.url(), "", options.clone())
        .await
        .expect("server joins");
    assert_eq!(host.id(), 1);
    assert!(host
        .handle
        .call(|m, _| m.mode() == rtcmesh::Mode::Server)
        .await
        .expect("call"));
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(
            join(&server.url(), &host.lobby, options.clone())
                .await
                .expect("client joins"),
        );
    }
    let mut client_ids: Vec<PeerId> = clients.iter().map(|c| c.id()).collect();
    client_ids.sort();
    assert_eq!(connected_to(&mut host, 3).await, client_ids);
    for c in &mut clients {
        assert_eq!(
            connected_to(c, 1).await,
            vec![1],
            "a client connects to the server only"
        );
        c.handle
            .send(
                Target::Peer(1),
                TransferMode::Reliable,
                0,
                c.id().to_le_bytes().to_vec(),
            )
            .await
            .expect("send");
    }
    let mut from = Vec::new();
    for _ in 0..3 {
        let (id, data) = packet_from(&mut host, LIMIT).await.expect("packet");
        assert_eq!(data, id.to_le_bytes());
        from.push(id);
    }
    from.sort();
    assert_eq!(from, client_ids);

    // The last client leaves: the server's mesh reports it, the lobby tells the other clients.
    let leaving = clients.pop().expect("client");
    let gone = leaving.id();
    leaving.handle.close();
    drop(leaving);
    let started = Instant::now();
    let seen = next_matching(&mut host, LIMIT, |e| {
        (*e == Event::PeerDisconnected(gone)).then_some(())
    })
    .await;
    assert!(seen.is_some(), "server saw the client leave");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "close is noticed at once, not by timeout"
    );
    for c in &mut clients {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let event = tokio::time::timeout_at(deadline, c.lobby_events.recv())
                .await
                .expect("lobby event in time")
                .expect("lobby open");
            if event == LobbyEvent::PeerLeft(gone) {
                break;
            }
        }
    }
    // The rest keep working.
    host.handle
        .send(
            Target::All,
            TransferMode::Reliable,
            0,
            b"still here".to_vec(),
        )
        .await
        .expect("send");
    for c in &mut clients {
        let (from, data) = packet_from(c, LIMIT).await.expect("packet after the leave");
        assert_eq!((from, data.as_slice()), (1, &b"still here"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_peer_is_detected_within_peer_timeout_and_the_rest_keep_exchanging() {
    let peer_timeout = Duration::from_secs(2);
    let options = JoinOptions::default().with_config(
        MeshConfig::default()
            .with_peer_timeout(peer_timeout)
            .with_stun_max_rto(Duration::from_millis(500)),
    );
    let server = server().await;
    let mut a = join(&server.url(), "", options.clone())
        .await
        .expect("host");
    let lobby = a.lobby.clone();
    let mut b = join(&server.url(), &lobby, options.clone())
        .await
        .expect("b");

    // The peer that will vanish runs on its own runtime, like another process.
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    let (die_tx, die_rx) = std::sync::mpsc::channel::<()>();
    let (url, vanisher_options) = (server.url(), options.clone());
    let vanisher = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let session = runtime.block_on(async {
            let mut v = join(&url, &lobby, vanisher_options).await.expect("v joins");
            connected_to(&mut v, 2).await;
            v
        });
        joined_tx.send(session.id()).expect("report");
        let _ = die_rx.recv_timeout(LIMIT);
        // Dropping the runtime first cancels the loop mid-flight: no close notification is
        // sent, exactly as when a process is killed.
        drop(runtime);
        drop(session);
    });
    let v = joined_rx.recv_timeout(LIMIT).expect("vanisher joined");
    connected_to(&mut a, 2).await;
    connected_to(&mut b, 2).await;
    // Seal the lobby so the mesh stands on its own: the lobby's PEER_DISCONNECT (the vanished
    // peer's WebSocket closes too) must not be what removes the peer.
    a.seal();
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, b.lobby_events.recv())
            .await
            .expect("seal")
            .expect("open");
        if event == LobbyEvent::Sealed {
            break;
        }
    }

    die_tx.send(()).expect("kill");
    vanisher.join().expect("vanisher thread");
    let started = Instant::now();
    for s in [&mut a, &mut b] {
        let seen = next_matching(s, peer_timeout + Duration::from_secs(3), |e| {
            (*e == Event::PeerDisconnected(v)).then_some(())
        })
        .await;
        assert!(seen.is_some(), "peer {} noticed the vanished peer", s.id());
    }
    let detected = started.elapsed();
    assert!(
        detected >= peer_timeout - Duration::from_millis(600),
        "detected by silence, not by a close ({detected:?})"
    );
    assert!(
        detected <= peer_timeout + Duration::from_secs(2),
        "detected within the timeout ({detected:?})"
    );

    // a and b keep exchanging.
    for (from, to) in [(&a, b.id()), (&b, a.id())] {
        from.handle
            .send(
                Target::Peer(to),
                TransferMode::Reliable,
                0,
                b"after".to_vec(),
            )
            .await
            .expect("send");
    }
    assert_eq!(
        packet_from(&mut a, LIMIT).await,
        Some((b.id(), b"after".to_vec()))
    );
    assert_eq!(
        packet_from(&mut b, LIMIT).await,
        Some((a.id(), b"after".to_vec()))
    );
}

/// Reads frames until the server closes, returning its close code and reason.
async fn close_reason(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<(u16, String)> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Close(Some(frame))) => {
                return Some((frame.code.into(), frame.reason.to_string()))
            }
            Ok(Message::Close(None)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signaling_server_closes_bad_connections_with_a_reason_and_keeps_the_rest() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = server().await;
    let mut host = join(&server.url(), "", JoinOptions::default())
        .await
        .expect("host");
    let mut guest = join(&server.url(), &host.lobby, JoinOptions::default())
        .await
        .expect("guest");
    connected_to(&mut host, 1).await;

    let cases: [(&str, Option<Message>, u16, &str); 4] = [
        (
            "malformed JSON",
            Some(Message::text("{oops")),
            4000,
            "Invalid message format",
        ),
        (
            "unknown type",
            Some(Message::text(r#"{"type":99,"id":0,"data":""}"#)),
            4000,
            "Invalid command",
        ),
        (
            "binary frame",
            Some(Message::binary(vec![1, 2, 3])),
            4000,
            "Invalid transfer mode, must be text",
        ),
        ("never joins", None, 4000, "Have not joined lobby yet"),
    ];
    for (what, frame, code, reason) in cases {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
            .await
            .expect("connect");
        if let Some(frame) = frame {
            ws.send(frame).await.expect("send");
        }
        assert_eq!(
            close_reason(&mut ws).await,
            Some((code, reason.to_owned())),
            "{what}"
        );
    }
    // A peer of another lobby cannot reach into this one.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("connect");
    ws.send(Message::text(r#"{"type":0,"id":0,"data":""}"#))
        .await
        .expect("join own lobby");
    let offer = format!(r#"{{"type":4,"id":{},"data":"v=0"}}"#, guest.id());
    ws.send(Message::text(offer)).await.expect("send");
    assert_eq!(
        close_reason(&mut ws).await,
        Some((4000, "Invalid destination".to_owned()))
    );
    // Oversized frame.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("connect");
    let big = format!(r#"{{"type":0,"id":0,"data":"{}"}}"#, "x".repeat(100_000));
    let _ = ws.send(Message::text(big)).await;
    let closed = close_reason(&mut ws).await;
    assert_eq!(
        closed,
        Some((1009, "Message too big".to_owned())),
        "oversized frame"
    );

    // The lobby in use never noticed.
    host.handle
        .send(Target::All, TransferMode::Reliable, 0, b"fine".to_vec())
        .await
        .expect("send");
    assert_eq!(
        packet_from(&mut guest, LIMIT).await,
        Some((1, b"fine".to_vec()))
    );
    assert_eq!(host.rejected_signals() + guest.rejected_signals(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_each_other_through_the_server_relay_over_real_sockets() {
    use rtcmesh::{Multiplayer, MultiplayerConfig, MultiplayerEvent};
    use rtcmesh_tokio::join_with;
    let layer = |mesh| Multiplayer::new(mesh, MultiplayerConfig::default());
    let server = server().await;
    let options = JoinOptions::default().with_mesh(false);
    let host = join_with(&server.url(), "", options.clone(), layer)
        .await
        .expect("server");
    let mut a = join_with(&server.url(), &host.lobby, options.clone(), layer)
        .await
        .expect("a");
    let mut b = join_with(&server.url(), &host.lobby, options.clone(), layer)
        .await
        .expect("b");
    // Each client learns of the other through the server's peer exchange.
    let (a_id, b_id) = (a.id(), b.id());
    for (me, other) in [(&mut a, b_id), (&mut b, a_id)] {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let event = tokio::time::timeout_at(deadline, me.events.recv())
                .await
                .expect("in time")
                .expect("open");
            if event == MultiplayerEvent::PeerConnected(other) {
                break;
            }
        }
    }
    a.handle
        .send_bytes(
            Target::Peer(b.id()),
            TransferMode::Reliable,
            0,
            b"via server".to_vec(),
        )
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, b.events.recv())
            .await
            .expect("in time")
            .expect("open");
        if let MultiplayerEvent::Packet(p) = event {
            assert_eq!(
                (p.from, p.data.as_slice()),
                (a.id(), &b"via server"[..]),
                "true sender, intact"
            );
            break;
        }
    }
    drop(host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_s_lobby_events_name_the_members_already_there() {
    // A lobby screen reads lobby_events: a newcomer must learn of the members who were there
    // before it, not only of those who come after.
    let server = server().await;
    let host = join(&server.url(), "", JoinOptions::default())
        .await
        .expect("host");
    let second = join(&server.url(), &host.lobby, JoinOptions::default())
        .await
        .expect("second");
    let mut third = join(&server.url(), &host.lobby, JoinOptions::default())
        .await
        .expect("third");
    let mut known = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while known.len() < 2 {
        let event = tokio::time::timeout_at(deadline, third.lobby_events.recv())
            .await
            .expect("the members in time")
            .expect("lobby open");
        if let LobbyEvent::PeerJoined(id) = event {
            known.push(id);
        }
    }
    known.sort();
    let mut members = vec![host.id(), second.id()];
    members.sort();
    assert_eq!(known, members);
}
