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

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    use base64::Engine;
    use hmac::Mac;
    let expired = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 60;
    let username = format!("{expired}:late");
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let config = MeshConfig::default()
        .with_ice_transport_policy(IceTransportPolicy::Relay)
        .with_ice_servers(vec![IceServer::turn(
            coturn.url.clone(),
            username,
            credential,
        )]);
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
