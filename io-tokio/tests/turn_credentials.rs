//! Short-lived TURN credentials minted by the signaling server (coturn's `use-auth-secret`
//! scheme) and used by `join`, against Debian's coturn on loopback.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::SinkExt;
use rtcmesh::{
    Event, IceServer, IceServerError, IceTransportPolicy, MeshConfig, Target, TransferMode,
};
use rtcmesh_tokio::{
    join, Endpoint, EndpointConfig, JoinOptions, SignalConfig, SignalServer, TurnSecret,
};

const SECRET: &str = "rtcmesh-test-static-auth-secret";

/// coturn with `use-auth-secret` on a free loopback port; killed when dropped.
struct Coturn {
    child: Child,
    url: String,
}

impl Coturn {
    fn start() -> Option<Coturn> {
        if !installed(
            "turnserver",
            "the minted-TURN-credential tests (io-tokio/tests/turn_credentials.rs)",
            "apt-get install coturn",
        ) {
            return None;
        }
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--listening-ip",
                "127.0.0.1",
            ])
            .args([
                "--relay-ip",
                "127.0.0.1",
                "--listening-port",
                &port.to_string(),
            ])
            .args(["--min-port", "40000", "--max-port", "40999"])
            .args([
                "--use-auth-secret",
                &format!("--static-auth-secret={SECRET}"),
            ])
            .args([
                "--realm",
                "rtcmesh.test",
                "--fingerprint",
                "--allow-loopback-peers",
            ])
            .args(["--no-stdout-log", "--log-file", "/dev/null"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        // coturn binds its listener at once; the first allocation retransmits anyway.
        std::thread::sleep(Duration::from_millis(300));
        Some(Coturn {
            child,
            url: format!("turn:127.0.0.1:{port}"),
        })
    }
}

/// coturn as the guide configures it: docs/internet.md's `/etc/turnserver.conf` block, with
/// loopback addresses, free ports, the test secret and a test certificate for `localhost` in
/// place of its placeholders. (url of `turn:`, url of `turns:`, the certificate to trust.)
fn coturn_from_the_guide() -> Option<(Coturn, String, rustls::pki_types::CertificateDer<'static>)> {
    if !installed(
        "turnserver",
        "the minted-TURN-credential tests (io-tokio/tests/turn_credentials.rs)",
        "apt-get install coturn",
    ) {
        return None;
    }
    let guide = include_str!("../../docs/internet.md");
    let start = guide
        .find("```text\n# /etc/turnserver.conf\n")
        .expect("the guide's turnserver.conf block");
    let block = &guide[start..];
    let block = &block[block.find('\n').expect("a line") + 1..];
    let block = &block[..block.find("```").expect("the block's end")];
    let free = |tcp: bool| {
        let port = if tcp {
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
        } else {
            std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
        };
        port.expect("free port").port()
    };
    let (port, tls_port) = (free(false), free(true));
    let (cert, key, der) = certificate();
    let mut config = String::new();
    for line in block.lines() {
        let line = match line.split_once('=') {
            Some(("listening-port", _)) => format!("listening-port={port}"),
            Some(("tls-listening-port", _)) => format!("tls-listening-port={tls_port}"),
            Some(("min-port", _)) => "min-port=41000".to_owned(),
            Some(("max-port", _)) => "max-port=41999".to_owned(),
            Some(("cert", _)) => format!("cert={}", cert.display()),
            Some(("pkey", _)) => format!("pkey={}", key.display()),
            _ => line
                .replace("<public-ip>", "127.0.0.1")
                .replace("<secret>", SECRET),
        };
        config.push_str(&line);
        config.push('\n');
    }
    assert!(
        !config.contains('<') && config.contains("use-auth-secret"),
        "the guide's block changed shape: {config}"
    );
    // For the test only: peers on loopback, no logs.
    config.push_str("allow-loopback-peers\nno-stdout-log\nlog-file=/dev/null\n");
    let file = cert.with_file_name("turnserver.conf");
    std::fs::write(&file, config).expect("write the configuration");
    let child = Command::new("turnserver")
        .arg("-c")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnserver");
    std::thread::sleep(Duration::from_millis(300));
    let coturn = Coturn {
        child,
        url: format!("turn:127.0.0.1:{port}"),
    };
    Some((coturn, format!("turns:localhost:{tls_port}"), der))
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A credential for the TURN server at `url`, minted as rtcmesh-signal does, that expires
/// `valid` seconds from now (in the past when negative).
fn minted(url: &str, valid: i64, member: &str) -> IceServer {
    use base64::Engine;
    use hmac::Mac;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expiry = now.saturating_add_signed(valid);
    let username = format!("{expiry}:{member}");
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    IceServer::turn(url.to_owned(), username, credential)
}

/// Waits (`LIMIT` at most) for an event `pick` accepts; panics on a TURN refusal unless
/// `refusals` is set.
async fn wait_for<T>(
    events: &mut rtcmesh_tokio::Events<Event>,
    refusals: bool,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the event in time")
            .expect("open");
        if let Some(found) = pick(&event) {
            return found;
        }
        match event {
            Event::IceServerFailed { url, reason }
                if !refusals && reason != IceServerError::AllocationLost =>
            {
                panic!("{url}: {reason}")
            }
            Event::PeerDisconnected(peer) => panic!("peer {peer} lost"),
            _ => {}
        }
    }
}

fn relayed(event: &Event) -> Option<std::net::SocketAddr> {
    match event {
        Event::CandidateGathered(c) if c.kind == rtcmesh::CandidateKind::Relayed => Some(c.address),
        _ => None,
    }
}

fn relay_only() -> JoinOptions {
    JoinOptions::default()
        .with_config(MeshConfig::default().with_ice_transport_policy(IceTransportPolicy::Relay))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_relay_through_coturn_with_credentials_the_server_minted() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let turn = TurnSecret::new(SECRET, vec![coturn.url.clone()]).with_ttl(Duration::from_secs(600));
    let server = SignalServer::bind_with(
        "127.0.0.1:0".parse().expect("addr"),
        SignalConfig::default().with_turn(Some(turn)),
    )
    .await
    .expect("server");
    // Relay only, and no TURN server configured by hand: only the minted credentials can work.
    let host = join(&server.url(), "", relay_only()).await.expect("host");
    let mut guest = join(&server.url(), &host.lobby, relay_only())
        .await
        .expect("guest");
    assert!(server.metrics().turn_credentials >= 2);
    let deadline = tokio::time::Instant::now() + LIMIT * 2;
    loop {
        let event = tokio::time::timeout_at(deadline, guest.events.recv())
            .await
            .expect("connected through the relay in time")
            .expect("open");
        match event {
            Event::PeerConnected(1) => break,
            Event::IceServerFailed { url, reason } => panic!("{url}: {reason}"),
            _ => {}
        }
    }
    guest
        .handle
        .send(
            Target::Peer(1),
            TransferMode::Reliable,
            0,
            b"relayed".to_vec(),
        )
        .await
        .expect("send");
    let mut host = host;
    loop {
        let event = tokio::time::timeout_at(deadline, host.events.recv())
            .await
            .expect("packet in time")
            .expect("open");
        if let Event::Packet(p) = event {
            assert_eq!(p.data, b"relayed");
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_credential_is_refused_by_coturn() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let config = MeshConfig::default()
        .with_ice_transport_policy(IceTransportPolicy::Relay)
        .with_ice_servers(vec![minted(&coturn.url, -60, "late")]);
    let mesh = rtcmesh::Mesh::create_mesh(1, config).expect("mesh");
    let (_handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("endpoint");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("a verdict in time")
            .expect("open");
        if let Event::IceServerFailed { reason, .. } = event {
            assert_eq!(reason, IceServerError::Unauthorized);
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_connections_that_ask_get_credentials_and_requests_are_rate_limited() {
    let turn =
        TurnSecret::new(SECRET, vec!["turn:127.0.0.1:3478".into()]).with_requests_per_minute(2);
    let server = SignalServer::bind_with(
        "127.0.0.1:0".parse().expect("addr"),
        SignalConfig::default().with_turn(Some(turn)),
    )
    .await
    .expect("server");
    // A plain client (Godot's, a browser's) never sees type 12.
    let mut plain = ws(&server.url()).await;
    let (id, _) = join_raw(&mut plain, "").await;
    assert_eq!(id, 1);
    assert_eq!(server.metrics().turn_credentials, 0);
    // One that asks gets them first, before its id.
    let mut asking = ws(&format!("{}/?turn=1", server.url())).await;
    let first = read_until(&mut asking, LIMIT, parse)
        .await
        .expect("a frame");
    assert_eq!(first.0, 12, "{first:?}");
    let data: serde_json::Value = serde_json::from_str(&first.2).expect("json");
    assert_eq!(data["urls"][0], "turn:127.0.0.1:3478");
    assert_eq!(data["ttl"], 3600);
    assert!(!first.2.contains(SECRET));
    // Two requests a minute are answered; the third is ignored, and the connection stays.
    for _ in 0..3 {
        asking.send(frame(12, 0, "")).await.expect("request");
    }
    let (id, _) = join_raw(&mut asking, "").await;
    assert_eq!(id, 1);
    assert_eq!(server.metrics().turn_credentials, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_credentials_arrive_before_the_old_ones_expire() {
    let turn = TurnSecret::new(SECRET, vec!["turn:127.0.0.1:3478".into()])
        .with_ttl(Duration::from_secs(2));
    let server = SignalServer::bind_with(
        "127.0.0.1:0".parse().expect("addr"),
        SignalConfig::default().with_turn(Some(turn)),
    )
    .await
    .expect("server");
    let mut client = ws(&format!("{}/?turn=1", server.url())).await;
    let start = std::time::Instant::now();
    let mut usernames = Vec::new();
    let next = async |client: &mut Ws| {
        let (kind, _, data) = read_until(client, LIMIT, |m| parse(m).filter(|p| p.0 == 12))
            .await
            .expect("credentials in time");
        assert_eq!(kind, 12);
        let data: serde_json::Value = serde_json::from_str(&data).expect("json");
        data["username"].as_str().expect("username").to_owned()
    };
    usernames.push(next(&mut client).await);
    // A member (one that never joins is closed after the join timeout).
    join_raw(&mut client, "").await;
    usernames.push(next(&mut client).await);
    // Renewed at three quarters of the TTL (1.5 s), not at once and not after it expired.
    let renewed = start.elapsed();
    assert!(
        renewed >= Duration::from_millis(1400) && renewed < Duration::from_secs(2),
        "{renewed:?}"
    );
    let expiry = |u: &str| {
        u.split(':')
            .next()
            .and_then(|e| e.parse::<u64>().ok())
            .expect("expiry")
    };
    assert!(
        expiry(&usernames[1]) > expiry(&usernames[0]),
        "{usernames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_takes_renewed_credentials_and_allocates_with_them_after_the_first_expired() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    // Renewed at 3 s; the first ones expire at 4 s, the renewed ones at 7 s.
    let turn = TurnSecret::new(SECRET, vec![coturn.url.clone()]).with_ttl(Duration::from_secs(4));
    let server = SignalServer::bind_with(
        "127.0.0.1:0".parse().expect("addr"),
        SignalConfig::default().with_turn(Some(turn)),
    )
    .await
    .expect("server");
    let started = std::time::Instant::now();
    let mut host = join(&server.url(), "", relay_only()).await.expect("host");
    let mut guest = join(&server.url(), &host.lobby, relay_only())
        .await
        .expect("guest");
    let first = wait_for(&mut guest.events, false, relayed).await;
    wait_for(&mut guest.events, false, |e| {
        matches!(e, Event::PeerConnected(1)).then_some(())
    })
    .await;
    let connected = started.elapsed();
    // The renewal reaches the running mesh (and the application sees it too).
    loop {
        let event = tokio::time::timeout(LIMIT, guest.lobby_events.recv())
            .await
            .expect("renewed in time")
            .expect("open");
        if matches!(event, rtcmesh::lobby::LobbyEvent::TurnCredentials { .. }) {
            break;
        }
    }
    // Past the first credential's expiry (coturn counts whole seconds), the guest's network
    // changes: its allocation was made from the old socket, so a new one is made, and coturn
    // would refuse it with the first credential.
    let expired = Duration::from_millis(5_500).saturating_sub(started.elapsed());
    tokio::time::sleep(expired).await;
    let moved = std::time::Instant::now();
    guest
        .handle
        .rebind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("rebind");
    let second = wait_for(&mut guest.events, false, relayed).await;
    let reallocated = moved.elapsed();
    assert_ne!(second, first);
    // The game goes on through the new allocation.
    guest
        .handle
        .send(
            Target::Peer(1),
            TransferMode::Reliable,
            0,
            b"renewed".to_vec(),
        )
        .await
        .expect("send");
    wait_for(&mut host.events, false, |e| match e {
        Event::Packet(p) if p.data == b"renewed" => Some(()),
        _ => None,
    })
    .await;
    println!(
        "minted credentials, loopback coturn: both joined and connected through the relay \
         {connected:?} after the first join; past the first credentials' expiry, the rebound \
         guest relayed again {reallocated:?} after the rebind (renewed credentials) and its \
         packet arrived {:?} after it",
        moved.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_mesh_refused_for_an_expired_credential_allocates_at_once_with_a_fresh_one() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    // Over TCP: each attempt is a new connection. (Over UDP coturn keeps the username it
    // refused bound to our address until max-allocate-timeout, 60 s, and answers 437 to any
    // other meanwhile.)
    let url = format!("{}?transport=tcp", coturn.url);
    let config = MeshConfig::default()
        .with_ice_transport_policy(IceTransportPolicy::Relay)
        .with_ice_servers(vec![minted(&url, 2, "ann")]);
    let mesh = rtcmesh::Mesh::create_mesh(1, config).expect("mesh");
    let (handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("endpoint");
    wait_for(&mut events, false, relayed).await;
    // Expired: the allocation lives on, but a new one (the network changed) is refused.
    tokio::time::sleep(Duration::from_secs(4)).await;
    handle
        .rebind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("rebind");
    wait_for(&mut events, true, |e| match e {
        Event::IceServerFailed {
            reason: IceServerError::Unauthorized,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    // Fresh credentials from elsewhere (a REST call): no waiting for the next attempt.
    let fresh = minted(&url, 600, "ann");
    let asked = std::time::Instant::now();
    handle
        .call(move |mesh, now| mesh.set_ice_server_credentials(now, &fresh))
        .await
        .expect("running")
        .expect("its own server");
    wait_for(&mut events, false, relayed).await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_asks_for_fresh_credentials_when_the_turn_server_refuses_them_but_not_in_a_loop() {
    let Some(coturn) = Coturn::start() else {
        return;
    };
    // A signaling server whose secret is not coturn's: every credential it mints is refused.
    let turn = TurnSecret::new("not the secret", vec![coturn.url.clone()]);
    let server = SignalServer::bind_with(
        "127.0.0.1:0".parse().expect("addr"),
        SignalConfig::default().with_turn(Some(turn)),
    )
    .await
    .expect("server");
    let mut host = join(&server.url(), "", relay_only()).await.expect("host");
    wait_for(&mut host.events, true, |e| match e {
        Event::IceServerFailed {
            reason: IceServerError::Unauthorized,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    // One request at once (the answer is refused too), then none for a while.
    let deadline = std::time::Instant::now() + LIMIT;
    while server.metrics().turn_credentials < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.metrics().turn_credentials, 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(server.metrics().turn_credentials, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_s_coturn_relays_over_udp_and_tls_with_credentials_the_server_minted() {
    let Some((coturn, turns, cert)) = coturn_from_the_guide() else {
        return;
    };
    let urls = vec![coturn.url.clone(), turns.clone()];
    let server = SignalServer::bind_with(
        "127.0.0.1:0".parse().expect("addr"),
        SignalConfig::default().with_turn(Some(TurnSecret::new(SECRET, urls))),
    )
    .await
    .expect("server");
    let options =
        relay_only().with_endpoint(EndpointConfig::default().with_turn_tls(Some(trusting(cert))));
    let mut host = join(&server.url(), "", options.clone())
        .await
        .expect("host");
    let mut guest = join(&server.url(), &host.lobby, options)
        .await
        .expect("guest");
    // A relayed address through each listener.
    let mut through = Vec::new();
    while through.len() < 2 {
        let url = wait_for(&mut guest.events, false, |e| match e {
            Event::CandidateGathered(c) if c.kind == rtcmesh::CandidateKind::Relayed => {
                Some(c.url.clone())
            }
            _ => None,
        })
        .await;
        through.push(url);
    }
    through.sort();
    assert_eq!(through, [coturn.url.clone(), turns]);
    wait_for(&mut guest.events, false, |e| {
        matches!(e, Event::PeerConnected(1)).then_some(())
    })
    .await;
    guest
        .handle
        .send(
            Target::Peer(1),
            TransferMode::Reliable,
            0,
            b"guide".to_vec(),
        )
        .await
        .expect("send");
    wait_for(&mut host.events, false, |e| match e {
        Event::Packet(p) if p.data == b"guide" => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_udp_the_mesh_waits_out_coturn_s_minute_on_the_refused_username_without_a_false_alarm()
{
    let Some(coturn) = Coturn::start() else {
        return;
    };
    let config = MeshConfig::default()
        .with_ice_transport_policy(IceTransportPolicy::Relay)
        .with_ice_servers(vec![minted(&coturn.url, 2, "ann")]);
    let mesh = rtcmesh::Mesh::create_mesh(1, config).expect("mesh");
    let (handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("endpoint");
    wait_for(&mut events, false, relayed).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    handle
        .rebind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("rebind");
    wait_for(&mut events, true, |e| match e {
        Event::IceServerFailed {
            reason: IceServerError::Unauthorized,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    let refused = std::time::Instant::now();
    let fresh = minted(&coturn.url, 600, "ann");
    handle
        .call(move |mesh, now| mesh.set_ice_server_credentials(now, &fresh))
        .await
        .expect("running")
        .expect("its own server");
    // coturn answers 437 to the fresh username from this address until its
    // max-allocate-timeout (60 s) ends; then the allocation is made. Nothing else is reported
    // (`wait_for` fails on any other refusal).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    let second = loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("relayed again within 75 s")
            .expect("open");
        if let Some(address) = relayed(&event) {
            break address;
        }
        if let Event::IceServerFailed { url, reason } = event {
            panic!("{url}: {reason}");
        }
    };
    let waited = refused.elapsed();
    println!(
        "over UDP, relayed again {waited:?} after coturn refused the expired credential ({second})"
    );
    assert!(waited >= Duration::from_secs(55), "{waited:?}");
}
