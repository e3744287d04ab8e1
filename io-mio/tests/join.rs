//! The blocking `join` of rtcmesh-mio against the real signaling server (`SignalServer`, run by
//! tokio on its own threads, on loopback): sessions live in one `Poll` on the test's thread,
//! driven frame by frame as a game would. Every wait is bounded.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use rtcmesh::lobby::{close, LobbyEvent, LobbyServerConfig};
use rtcmesh::{Event, Mesh, Target, TransferMode};
use rtcmesh_mio::{join, rustls, JoinError, JoinOptions, Session};
use rtcmesh_tokio::SignalServer;

const LIMIT: Duration = Duration::from_secs(10);

/// A signaling server on loopback, run by a tokio runtime of its own.
struct Server {
    url: String,
    _server: SignalServer,
    _runtime: tokio::runtime::Runtime,
}

fn server_with(config: LobbyServerConfig) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = runtime
        .block_on(SignalServer::bind(
            "127.0.0.1:0".parse().expect("addr"),
            config,
        ))
        .expect("server");
    Server {
        url: server.url(),
        _server: server,
        _runtime: runtime,
    }
}

fn server() -> Server {
    server_with(LobbyServerConfig::default())
}

/// One turn of a game's frame for every session in `poll`: readiness, timers, then each
/// session's events go to `on_event`.
fn turn(
    poll: &mut Poll,
    events: &mut Events,
    sessions: &mut [&mut Session<Mesh>],
    mut on_event: impl FnMut(usize, &mut Session<Mesh>, Event),
) {
    let now = Instant::now();
    let wait = sessions
        .iter()
        .filter_map(|s| s.timeout(now))
        .fold(Duration::from_millis(10), Duration::min);
    poll.poll(events, Some(wait)).expect("poll");
    let now = Instant::now();
    for event in events.iter() {
        for session in sessions.iter_mut() {
            session.handle_ready(event.token(), now).expect("ready");
        }
    }
    for (i, session) in sessions.iter_mut().enumerate() {
        session.handle_timeout(now).expect("timeout");
        let _ = session.flush();
        while let Some(event) = session.poll_event() {
            on_event(i, session, event);
        }
    }
}

/// A host creates a lobby and a guest joins it, both blocking only in `join`; in one poll
/// they connect (the session carries the signals), the guest says hello, the host seals the
/// lobby, the server closes it, and the mesh carries on without it.
#[test]
fn a_host_and_a_guest_join_connect_and_outlive_the_sealed_lobby() {
    let server =
        server_with(LobbyServerConfig::default().with_seal_close_after(Duration::from_millis(200)));
    let mut poll = Poll::new().expect("poll");
    let mut host =
        join(&server.url, "", JoinOptions::default(), poll.registry()).expect("host joins");
    assert_eq!(host.id, 1, "whoever creates the lobby hosts it");
    let options = JoinOptions::default().with_tokens(Token(2), Token(3));
    let mut guest = join(&server.url, &host.lobby, options, poll.registry()).expect("guest joins");
    assert!(guest.id > 1);
    assert_eq!(guest.lobby, host.lobby);
    assert_eq!(
        guest.poll_lobby_event(),
        Some(LobbyEvent::PeerJoined(1)),
        "the member already there"
    );

    let mut events = Events::with_capacity(64);
    let (mut connected, mut heard) = (0, Vec::new());
    let give_up = Instant::now() + LIMIT;
    while heard.is_empty() {
        assert!(
            Instant::now() < give_up,
            "connected {connected} of 2 within {LIMIT:?}"
        );
        turn(
            &mut poll,
            &mut events,
            &mut [&mut host, &mut guest],
            |i, session, event| match event {
                Event::PeerConnected(peer) => {
                    connected += 1;
                    if i == 1 {
                        let hello = session.machine_mut().send(
                            Target::Peer(peer),
                            TransferMode::Reliable,
                            0,
                            b"hello",
                        );
                        hello.expect("send");
                        let _ = session.flush();
                    }
                }
                Event::Signal(_) => panic!("signals never reach the application"),
                Event::Packet(p) => heard.push((i, p.from, p.data)),
                _ => {}
            },
        );
    }
    assert_eq!(heard, [(0, guest.id, b"hello".to_vec())]);
    assert_eq!(
        host.poll_lobby_event(),
        Some(LobbyEvent::PeerJoined(guest.id))
    );
    assert_eq!((host.rejected_signals(), guest.rejected_signals()), (0, 0));

    host.seal();
    let give_up = Instant::now() + LIMIT;
    while host.is_signaling() || guest.is_signaling() {
        assert!(
            Instant::now() < give_up,
            "the sealed lobby closes within {LIMIT:?}"
        );
        turn(
            &mut poll,
            &mut events,
            &mut [&mut host, &mut guest],
            |_, _, _| {},
        );
    }
    assert_eq!(guest.poll_lobby_event(), Some(LobbyEvent::Sealed));
    // The lobby is gone; the mesh is not.
    assert_eq!(
        host.machine().connected_peers().collect::<Vec<_>>(),
        [guest.id]
    );
    host.machine_mut()
        .send(Target::All, TransferMode::Reliable, 0, b"still here")
        .expect("send");
    let mut reply = None;
    let give_up = Instant::now() + LIMIT;
    while reply.is_none() {
        assert!(Instant::now() < give_up, "a packet after the lobby closed");
        turn(
            &mut poll,
            &mut events,
            &mut [&mut host, &mut guest],
            |i, _, event| {
                if let Event::Packet(p) = event {
                    reply = Some((i, p.data));
                }
            },
        );
    }
    assert_eq!(reply, Some((1, b"still here".to_vec())));
    let endpoint = guest.into_endpoint(poll.registry()).expect("lobby let go");
    assert_eq!(endpoint.machine().connected_peers().count(), 1);
}

/// The server's refusal comes back with its code and reason.
#[test]
fn joining_a_lobby_that_does_not_exist_is_refused_with_the_server_s_reason() {
    let server = server();
    let poll = Poll::new().expect("poll");
    match join(
        &server.url,
        "NOSUCHLOBBY",
        JoinOptions::default(),
        poll.registry(),
    ) {
        Err(JoinError::Refused { code, reason }) => {
            assert_eq!(
                (code, reason.as_str()),
                (close::PROTOCOL_ERROR, close::LOBBY_DOES_NOT_EXIST)
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A server that takes the connection and never answers: `join` gives up at its timeout.
#[test]
fn a_server_that_never_answers_times_out() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("listener");
    let url = format!("ws://{}", silent.local_addr().expect("addr"));
    let poll = Poll::new().expect("poll");
    let start = Instant::now();
    let options = JoinOptions::default().with_timeout(Duration::from_millis(300));
    let result = join(&url, "", options, poll.registry());
    assert!(matches!(result, Err(JoinError::Timeout)), "{result:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < LIMIT,
        "{took:?}"
    );
}

/// `wss://` over the same non-blocking sockets, trusting a throwaway certificate.
#[test]
fn joining_over_wss_trusts_the_certificate_given() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("key");
    let tls = rtcmesh_tokio::signal::server_tls(vec![certified.cert.der().clone()], key)
        .expect("server tls");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let config = rtcmesh_tokio::SignalConfig::default().with_tls(Some(tls));
    let server = runtime
        .block_on(SignalServer::bind_with(
            "127.0.0.1:0".parse().expect("addr"),
            config,
        ))
        .expect("server");
    let url = server.url_for("localhost");
    assert!(url.starts_with("wss://"), "{url}");
    let poll = Poll::new().expect("poll");

    // The platform's roots do not know this certificate.
    match join(&url, "", JoinOptions::default(), poll.registry()) {
        // rustls refuses the certificate during the handshake...
        Err(JoinError::WebSocket(rtcmesh_mio::tungstenite::Error::Io(e))) => {
            assert!(e.to_string().contains("certificate"), "{e}");
        }
        // ...or the machine has no root certificates at all.
        Err(JoinError::Tls(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("expected the certificate to be refused, got {other:?}"),
    }

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let options =
        JoinOptions::default().with_tls(Some(rtcmesh_mio::client_tls(roots).expect("tls")));
    let session = join(&url, "", options, poll.registry()).expect("joins over wss");
    assert_eq!(session.id, 1);
    assert!(session.is_signaling());
}
