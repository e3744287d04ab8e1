//! The rtcmesh side of the interop test (`interop/run.sh`): a signaling server and an rtcmesh
//! *server* (SceneMultiplayer layer, one extra reliable channel) hosting a client/server lobby
//! on loopback. Foreign clients (Chromium, aiortc) join that lobby. The server echoes every RAW
//! packet whose payload starts with `echo:` back to its sender on the same channel, and relays
//! between clients as SceneMultiplayer does, and reports ICE restarts (Chromium restarts ICE
//! mid-stream). The signaling runs over `wss://` with a certificate generated here for
//! `127.0.0.1` and the signaling address (rcgen), written as PEM files for the clients. Prints
//! `READY <wss-url> <lobby> <cert.pem> <key.pem>` once listening. Exits after
//! `RTCMESH_INTEROP_SECONDS` (default 60) or when stdin closes. Next to the certificate it
//! writes `offer.sdp`: the offer an rtcmesh mesh makes (with rtcmesh's session-level attributes,
//! which every other stack must ignore), for the clients to check they accept it unchanged.
//! Prints `PATH <peer> <pair>` when a peer connects and, at the end, `MDNS resolved <n>
//! unresolved <n> timeouts <n>` (peers' `.local` candidates).
//!
//! The NAT lab (`interop/natlab/run.sh`) runs it on a lab address: `RTCMESH_INTEROP_ADDR` (the
//! IP for the signaling server and the UDP socket, default 127.0.0.1) and
//! `RTCMESH_INTEROP_ALLOW` (the remote allowlist as comma-separated prefixes, default loopback;
//! `any` for none).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::{
    IpPrefix, MeshConfig, Multiplayer, MultiplayerConfig, MultiplayerEvent, Target, TransferMode,
};
use rtcmesh_tokio::signal::{client_tls, server_tls_from_pem_files};
use rtcmesh_tokio::{join_with, EndpointConfig, JoinOptions, SignalConfig, SignalServer};
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds = std::env::var("RTCMESH_INTEROP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let ip: IpAddr = std::env::var("RTCMESH_INTEROP_ADDR")
        .unwrap_or_else(|_| "127.0.0.1".into())
        .parse()?;
    let allowlist = match std::env::var("RTCMESH_INTEROP_ALLOW").ok().as_deref() {
        None => Some(IpPrefix::loopback()),
        Some("any") => None,
        Some(list) => Some(
            list.split(',')
                .map(str::parse)
                .collect::<Result<Vec<IpPrefix>, _>>()?,
        ),
    };
    let mut names = vec!["127.0.0.1".to_owned()];
    if !ip.is_loopback() {
        names.push(ip.to_string());
    }
    let certified = rcgen::generate_simple_self_signed(names)?;
    let dir = std::env::temp_dir().join(format!("rtcmesh-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem())?;
    std::fs::write(&key, certified.signing_key.serialize_pem())?;
    let config = SignalConfig::default().with_tls(Some(server_tls_from_pem_files(&cert, &key)?));
    std::fs::write(dir.join("offer.sdp"), rtcmesh_offer(ip)?)?;
    let server = SignalServer::bind_with(SocketAddr::new(ip, 0), config).await?;
    let mut roots = rtcmesh_tokio::rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone())?;
    let options = JoinOptions::default()
        .with_tls(Some(client_tls(roots)?))
        .with_mesh(false)
        .with_config(
            MeshConfig::default()
                .with_channels(vec![TransferMode::Reliable])
                .with_remote_allowlist(allowlist),
        )
        .with_endpoint(
            EndpointConfig::default()
                .with_bind(SocketAddr::new(ip, 0))
                .with_announce(None),
        );
    let mut host = join_with(&server.url(), "", options, |mesh| {
        Multiplayer::new(mesh, MultiplayerConfig::default())
    })
    .await?;
    println!(
        "READY {} {} {} {}",
        server.url(),
        host.lobby,
        cert.display(),
        key.display()
    );
    let started = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::pin!(deadline);
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            event = host.events.recv() => match event {
                Some(MultiplayerEvent::PeerConnected(id)) => {
                    println!("server: peer_connected({id}) at {:.0?}", started.elapsed());
                    // The candidate pair in use, as `PATH <peer> <local kind> <local address> ->
                    // <remote kind> <remote address>` (the NAT lab checks it).
                    let path = host.handle.call(move |m, _| m.mesh().peer(id).and_then(|p| p.path)).await;
                    match path {
                        Ok(Some(path)) => println!("PATH {id} {path}"),
                        _ => println!("server: no path to {id}"),
                    }
                }
                Some(MultiplayerEvent::PeerDisconnected(id)) => println!("server: peer_disconnected({id})"),
                Some(MultiplayerEvent::Packet(p)) => {
                    println!("server: {} bytes from {} on {:?}/{}", p.data.len(), p.from, p.mode, p.channel);
                    if p.data.starts_with(b"echo:") {
                        let sent = host.handle.send_bytes(Target::Peer(p.from), p.mode, p.channel, p.data).await;
                        if let Err(e) = sent {
                            println!("server: echo to {} failed: {e}", p.from);
                        }
                    }
                }
                Some(MultiplayerEvent::Mesh(rtcmesh::Event::IceRestartStarted(id))) => {
                    println!("server: ICE restart of {id} started at {:.0?}", started.elapsed());
                }
                Some(MultiplayerEvent::Mesh(rtcmesh::Event::IceRestartEnded { peer, path })) => println!(
                    "server: ICE restart of {peer} ended at {:.0?} on {path}",
                    started.elapsed()
                ),
                Some(_) => {}
                None => break,
            },
            read = stdin.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { break },
            () = &mut deadline => break,
        }
    }
    let stats = host
        .handle
        .call(|m, _| (m.stats(), m.mesh().stats()))
        .await?;
    println!("server: multiplayer {:?}", stats.0);
    println!("server: mesh {:?}", stats.1);
    println!(
        "MDNS resolved {} unresolved {} timeouts {}",
        stats.1.mdns_names_resolved, stats.1.mdns_names_unresolved, stats.1.mdns_timeouts
    );
    let signaling = server.metrics();
    println!(
        "server: signaling over wss: {} joins, {} signals relayed",
        signaling.joins, signaling.signals_relayed
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The offer an rtcmesh mesh (id 2) makes to peer 1: Godot's channels, one host candidate on
/// `ip` (nobody answers there), and rtcmesh's session-level attributes.
fn rtcmesh_offer(ip: IpAddr) -> Result<String, Box<dyn std::error::Error>> {
    let mut mesh = rtcmesh::Mesh::create_mesh(2, MeshConfig::default())?;
    mesh.add_host_candidate(SocketAddr::new(ip, 9))?;
    mesh.add_peer(Instant::now(), 1, 1)?;
    std::iter::from_fn(|| mesh.poll_event())
        .find_map(|e| match e {
            rtcmesh::Event::Signal(s) => match s.signal {
                rtcmesh::Signal::Offer(sdp) => Some(sdp),
                _ => None,
            },
            _ => None,
        })
        .ok_or_else(|| "no offer".into())
}
