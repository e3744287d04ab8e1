//! TURN over TCP and TLS on real loopback sockets: both adapters open the streams themselves
//! (the tokio one in a task per stream, the mio one under its own token), run TLS with rustls
//! and check the certificate, and a peer that may only use the relay reaches another through
//! it on every channel. The server is the simulated one (`turn-server-proto`) on real TCP, TLS
//! and UDP sockets, in threads.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtcmesh::{
    Event, IceServer, IceServerError, IceTransportPolicy, Mesh, MeshConfig, Target, TlsFailure,
    TransferMode,
};
use rtcmesh_tests::SimTurnServer;
use rtcmesh_tokio::rustls;
use rtcmesh_tokio::{Endpoint, EndpointConfig, Events, Handle};

const USER: &str = "player";
const PASSWORD: &str = "s3cret";

/// What the server threads share.
struct Shared {
    server: SimTurnServer,
    /// Each client stream's writer queue.
    writers: HashMap<SocketAddr, Sender<Vec<u8>>>,
    /// The relay sockets by address.
    relays: HashMap<SocketAddr, UdpSocket>,
}

impl Shared {
    /// Sends what the server produced: datagrams from relay sockets, bytes on client streams.
    fn dispatch(&mut self, out: Vec<(SocketAddr, SocketAddr, Vec<u8>)>) {
        for (from, to, bytes) in out {
            if let Some(socket) = self.relays.get(&from) {
                let _ = socket.send_to(&bytes, to);
            }
        }
        for (client, bytes) in std::mem::take(&mut self.server.stream_out) {
            if let Some(writer) = self.writers.get(&client) {
                let _ = writer.send(bytes);
            }
        }
    }
}

/// A TURN server listening on loopback TCP (and TLS, with this certificate and key), relaying
/// on loopback UDP sockets, until dropped.
struct LoopbackTurn {
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Mutex<Shared>>,
}

impl LoopbackTurn {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> LoopbackTurn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let listen = listener.local_addr().expect("address");
        let start = Instant::now();
        let mut server = SimTurnServer::new(listen, &[(USER, PASSWORD)], start);
        let mut relays = HashMap::new();
        for _ in 0..4 {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("relay socket");
            socket
                .set_read_timeout(Some(Duration::from_millis(5)))
                .expect("timeout");
            let addr = socket.local_addr().expect("address");
            server.relay_addresses.push_back(addr);
            relays.insert(addr, socket);
        }
        let relay_sockets: Vec<(SocketAddr, UdpSocket)> = relays
            .iter()
            .map(|(a, s)| (*a, s.try_clone().expect("clone")))
            .collect();
        let shared = Arc::new(Mutex::new(Shared {
            server,
            writers: HashMap::new(),
            relays,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        // Timers.
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                    let mut s = shared.lock().expect("lock");
                    let mut out = Vec::new();
                    s.server.poll(Instant::now(), &mut out);
                    s.dispatch(out);
                }
            }));
        }
        // Peers' datagrams to the relays.
        for (relay, socket) in relay_sockets {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let mut s = shared.lock().expect("lock");
                    let mut out = Vec::new();
                    s.server
                        .receive(Instant::now(), from, relay, &buf[..n], &mut out);
                    s.dispatch(out);
                }
            }));
        }
        // Clients.
        {
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut clients = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((tcp, client)) => {
                            let (tx, rx) = mpsc::channel();
                            shared.lock().expect("lock").writers.insert(client, tx);
                            let (shared, stop, tls) = (shared.clone(), stop.clone(), tls.clone());
                            clients.push(std::thread::spawn(move || {
                                serve(tcp, client, tls, rx, &shared, &stop);
                                let mut s = shared.lock().expect("lock");
                                s.writers.remove(&client);
                                let mut out = Vec::new();
                                s.server.stream_closed(Instant::now(), client, &mut out);
                                s.dispatch(out);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for client in clients {
                    let _ = client.join();
                }
            }));
        }
        LoopbackTurn {
            listen,
            stop,
            threads,
            shared,
        }
    }

    fn allocations(&self) -> u64 {
        self.shared.lock().expect("lock").server.allocations
    }
}

impl Drop for LoopbackTurn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One client connection: bytes in to the server, its answers out, over TLS if configured.
fn serve(
    tcp: TcpStream,
    client: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    outgoing: Receiver<Vec<u8>>,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) {
    tcp.set_nonblocking(false).expect("blocking");
    tcp.set_read_timeout(Some(Duration::from_millis(5)))
        .expect("timeout");
    let mut stream: Box<dyn ReadWrite> = match tls {
        Some(config) => {
            let connection = rustls::ServerConnection::new(config).expect("tls");
            Box::new(rustls::StreamOwned::new(connection, tcp))
        }
        None => Box::new(tcp),
    };
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut s = shared.lock().expect("lock");
                let mut out = Vec::new();
                s.server
                    .stream_data(Instant::now(), client, &buf[..n], &mut out);
                s.dispatch(out);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        while let Ok(bytes) = outgoing.try_recv() {
            if stream
                .write_all(&bytes)
                .and_then(|()| stream.flush())
                .is_err()
            {
                return;
            }
        }
    }
}

static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// A self-signed certificate for `names`, and a server configuration presenting it.
fn certificate(
    names: &[&str],
) -> (
    rustls::pki_types::CertificateDer<'static>,
    Arc<rustls::ServerConfig>,
) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    // A subject of its own: another certificate for the same names is another issuer.
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("rtcmesh test CA {serial}"),
    );
    let signing_key = rcgen::KeyPair::generate().expect("key");
    let certified = params.self_signed(&signing_key).expect("certificate");
    let cert = certified.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).expect("key");
    let config = rtcmesh_tokio::signal::server_tls(vec![cert.clone()], key).expect("server tls");
    (cert, config)
}

/// A client TLS configuration trusting exactly `cert`.
fn trusting(cert: rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    rtcmesh_tokio::signal::client_tls(roots).expect("client tls")
}

/// A mesh that may only use the relay of `url`.
fn relay_only(id: i32, url: String) -> Mesh {
    let config = MeshConfig::default()
        .with_ice_servers(vec![IceServer::turn(url, USER, PASSWORD)])
        .with_ice_transport_policy(IceTransportPolicy::Relay);
    Mesh::create_mesh(id, config).expect("mesh")
}

/// The next event that is not a signal, with signals carried to `other` meanwhile (2 → 1 or
/// 1 → 2), for up to `limit`.
async fn until_event(
    events: &mut Events<Event>,
    other: &Handle<Mesh>,
    from: i32,
    limit: Duration,
    mut wanted: impl FnMut(&Event) -> bool,
) -> Option<Event> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .ok()??;
        match event {
            Event::Signal(s) => {
                let _ = other.handle_signal(from, s.signal).await;
            }
            e if wanted(&e) => return Some(e),
            _ => {}
        }
    }
}

/// Two tokio endpoints, `relayed` (id 2, relay only) and an open one (id 1), connected: every
/// channel delivers both ways.
async fn connect_and_exchange(relayed: Mesh, turn_tls: Option<Arc<rustls::ClientConfig>>) {
    let config = EndpointConfig::default().with_turn_tls(turn_tls);
    let (a, mut a_events) = Endpoint::spawn(config, relayed).await.expect("endpoint");
    let open = Mesh::create_mesh(1, MeshConfig::default()).expect("mesh");
    let (b, mut b_events) = Endpoint::spawn(EndpointConfig::default(), open)
        .await
        .expect("endpoint");
    // The relayed candidate first, so the offer carries it.
    let gathered = until_event(&mut a_events, &b, 2, Duration::from_secs(10), |e| {
        matches!(
            e,
            Event::CandidateGathered(_) | Event::IceServerFailed { .. }
        )
    })
    .await;
    assert!(
        matches!(gathered, Some(Event::CandidateGathered(_))),
        "{gathered:?}"
    );
    a.add_peer(1, 1).await.expect("add");
    b.add_peer(2, 1).await.expect("add");
    let (a2, b2) = (a.clone(), b.clone());
    let connected_a = tokio::spawn(async move {
        until_event(&mut a_events, &b2, 2, Duration::from_secs(20), |e| {
            matches!(e, Event::PeerConnected(1))
        })
        .await
        .map(|_| a_events)
    });
    let connected_b = until_event(&mut b_events, &a2, 1, Duration::from_secs(20), |e| {
        matches!(e, Event::PeerConnected(2))
    })
    .await;
    assert!(connected_b.is_some(), "the open peer connected");
    let mut a_events = connected_a
        .await
        .expect("task")
        .expect("relayed peer connected");
    let path = a
        .call(|m, _| m.peer(1).and_then(|p| p.path))
        .await
        .expect("call")
        .expect("path");
    assert!(path.is_relayed(), "{path}");
    for mode in [
        TransferMode::Reliable,
        TransferMode::UnreliableOrdered,
        TransferMode::Unreliable,
    ] {
        for (from, to, events, to_id, from_id) in
            [(&a, &b, &mut b_events, 1, 2), (&b, &a, &mut a_events, 2, 1)]
        {
            let payload = format!("{mode:?} from {from_id}").into_bytes();
            // Unreliable modes may lose one: send a few.
            for _ in 0..3 {
                from.send(Target::Peer(to_id), mode, 0, payload.clone())
                    .await
                    .expect("send");
            }
            let got = until_event(
                events,
                to,
                to_id,
                Duration::from_secs(5),
                |e| matches!(e, Event::Packet(p) if p.data == payload),
            )
            .await;
            assert!(got.is_some(), "{mode:?} from {from_id} arrived");
        }
    }
    a.close();
    b.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_adapter_relays_over_turn_on_tcp() {
    let turn = LoopbackTurn::start(None);
    let url = format!("turn:{}?transport=tcp", turn.listen);
    connect_and_exchange(relay_only(2, url), None).await;
    assert_eq!(turn.allocations(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_adapter_relays_over_turn_on_tls_with_the_name_checked() {
    let (cert, server) = certificate(&["localhost"]);
    let turn = LoopbackTurn::start(Some(server));
    let url = format!("turns:localhost:{}", turn.listen.port());
    connect_and_exchange(relay_only(2, url), Some(trusting(cert))).await;
    assert_eq!(turn.allocations(), 1);
}

/// What a relay-only tokio endpoint reports about its `turns:` server.
async fn tls_failure(url: String, turn_tls: Option<Arc<rustls::ClientConfig>>) -> IceServerError {
    let config = EndpointConfig::default().with_turn_tls(turn_tls);
    let (handle, mut events) = Endpoint::spawn(config, relay_only(2, url))
        .await
        .expect("endpoint");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::IceServerFailed { reason, .. })) => {
                handle.close();
                return reason;
            }
            Ok(Some(_)) => {}
            other => panic!("no failure reported: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_or_from_an_unknown_issuer_is_refused_and_said_why() {
    let (cert, server) = certificate(&["turn.localhost"]);
    let turn = LoopbackTurn::start(Some(server));
    let port = turn.listen.port();
    // The certificate names turn.localhost, the URL names the address.
    let reason = tls_failure(
        format!("turns:127.0.0.1:{port}"),
        Some(trusting(cert.clone())),
    )
    .await;
    assert_eq!(reason, IceServerError::Tls(TlsFailure::NameMismatch));
    // Trusted roots that did not sign it (another self-signed certificate).
    let (other, _) = certificate(&["turn.localhost"]);
    let reason = tls_failure(format!("turns:127.0.0.1:{port}"), Some(trusting(other))).await;
    assert_eq!(reason, IceServerError::Tls(TlsFailure::UnknownIssuer));
    assert!(reason.to_string().contains("trusted root"));
    assert_eq!(turn.allocations(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tcp_connection_is_reported_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let reason = tls_failure(format!("turn:127.0.0.1:{port}?transport=tcp"), None).await;
    assert_eq!(reason, IceServerError::Unreachable);
}

#[test]
fn the_mio_adapter_relays_over_turn_on_tls() {
    let (cert, server) = certificate(&["localhost"]);
    let turn = LoopbackTurn::start(Some(server));
    let url = format!("turns:localhost:{}", turn.listen.port());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // The open peer on tokio; the relayed one in a mio loop on this thread.
    let open = Mesh::create_mesh(1, MeshConfig::default()).expect("mesh");
    let (b, mut b_events) = runtime
        .block_on(Endpoint::spawn(EndpointConfig::default(), open))
        .expect("endpoint");
    let (to_mio, from_tokio) = mpsc::channel::<rtcmesh::Signal>();
    let (to_tokio, from_mio) = mpsc::channel::<rtcmesh::Signal>();
    let b2 = b.clone();
    runtime.spawn(async move {
        let forward = async {
            while let Some(event) = b_events.recv().await {
                match event {
                    Event::Signal(s) => {
                        let _ = to_mio.send(s.signal);
                    }
                    Event::Packet(p) if p.data == b"to tokio" => {
                        b2.send(
                            Target::Peer(2),
                            TransferMode::Reliable,
                            0,
                            b"to mio".to_vec(),
                        )
                        .await
                        .expect("send");
                    }
                    _ => {}
                }
            }
        };
        forward.await;
    });
    let mut poll = mio::Poll::new().expect("poll");
    let config = rtcmesh_mio::MioConfig::default().with_turn_tls(Some(trusting(cert)));
    let mut endpoint = rtcmesh_mio::MioEndpoint::bind_with(
        config,
        relay_only(2, url),
        poll.registry(),
        mio::Token(0),
    )
    .expect("endpoint");
    let mut mio_events = mio::Events::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut added = false;
    let mut sent = false;
    let mut done = false;
    while Instant::now() < deadline && !done {
        let timeout = endpoint
            .timeout(Instant::now())
            .map_or(Duration::from_millis(10), |t| {
                t.min(Duration::from_millis(10))
            });
        poll.poll(&mut mio_events, Some(timeout)).expect("poll");
        let now = Instant::now();
        if !mio_events.is_empty() {
            endpoint.handle_ready(now).expect("ready");
        }
        endpoint.handle_timeout(now).expect("timeout");
        while let Ok(signal) = from_tokio.try_recv() {
            let _ = endpoint.machine_mut().handle_signal(now, 1, signal);
        }
        if !added && endpoint.machine().ice_gathering_complete() {
            added = true;
            endpoint.machine_mut().add_peer(now, 1, 1).expect("add");
            let b3 = b.clone();
            runtime.block_on(async move { b3.add_peer(2, 1).await.expect("add") });
        }
        if !sent && endpoint.machine().connected_peers().any(|p| p == 1) {
            sent = true;
            endpoint
                .machine_mut()
                .send(Target::Peer(1), TransferMode::Reliable, 0, b"to tokio")
                .expect("send");
        }
        let _ = endpoint.flush();
        while let Some(event) = endpoint.machine_mut().poll_event() {
            match event {
                Event::Signal(s) => {
                    let _ = to_tokio.send(s.signal);
                }
                Event::Packet(p) if p.data == b"to mio" => done = true,
                Event::IceServerFailed { url, reason } => panic!("{url}: {reason}"),
                _ => {}
            }
        }
        while let Ok(signal) = from_mio.try_recv() {
            let b4 = b.clone();
            runtime.block_on(async move {
                let _ = b4.handle_signal(2, signal).await;
            });
        }
    }
    assert!(done, "a packet went each way through the relay");
    let path = endpoint
        .machine()
        .peer(1)
        .and_then(|p| p.path)
        .expect("path");
    assert!(path.is_relayed(), "{path}");
    assert_eq!(turn.allocations(), 1);
    b.close();
    let mut mesh = endpoint.into_machine(poll.registry()).expect("machine");
    mesh.close();
    while mesh.poll_stream_command().is_some() {}
}
