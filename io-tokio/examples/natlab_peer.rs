//! One peer of the NAT lab (`interop/natlab/run.sh`): joins a mesh lobby through STUN and TURN,
//! connects to every other member, exchanges a packet with each, and prints, per peer, the path
//! ICE chose and how long connecting took. Exits 0 once every other peer said it is done too.
//!
//! Usage: `natlab_peer <signal-url> <lobby|-> <bind-ip> <peers> <stun-url> <turn-url> <user>
//! <credential>`. With `-` it creates the lobby and prints `LOBBY <name>`. Output lines:
//! `ME <id>`, `GATHERED <kind> <address>`, `SERVER_FAILED <url> <reason>`,
//! `PATH <peer> <connect-ms> <local-kind> <remote-kind> <relayed|direct>`, then `DONE`, or
//! `FAILED <why>`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rtcmesh::lobby::LobbyEvent;
use rtcmesh::{Event, IceServer, MeshConfig, PeerId, Target, TransferMode};
use rtcmesh_tokio::{join, EndpointConfig, JoinOptions};

const HELLO: &[u8] = b"hello";
const DONE: &[u8] = b"done";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => {
            println!("DONE");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("FAILED {why}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, lobby, bind, peers, stun, turn, user, credential] = args.as_slice() else {
        return Err(
            "usage: natlab_peer URL LOBBY|- BIND-IP PEERS STUN-URL TURN-URL USER CRED".into(),
        );
    };
    let bind: IpAddr = bind.parse().map_err(|e| format!("bind address: {e}"))?;
    let others: usize = peers.parse().map_err(|e| format!("peer count: {e}"))?;
    let options = JoinOptions {
        mesh: true,
        config: MeshConfig {
            ice_servers: vec![
                IceServer::stun(stun.clone()),
                IceServer::turn(turn.clone(), user.clone(), credential.clone()),
            ],
            ..MeshConfig::default()
        },
        endpoint: EndpointConfig {
            bind: SocketAddr::new(bind, 0),
            announce: None,
            ..EndpointConfig::default()
        },
        ..JoinOptions::default()
    };
    let lobby = if lobby == "-" { "" } else { lobby.as_str() };
    let mut session = join(url, lobby, options)
        .await
        .map_err(|e| format!("join: {e}"))?;
    println!("LOBBY {}", session.lobby);
    let me = session.id;
    println!("ME {me}");

    // When each peer was announced by the lobby (or, for members already there, when we joined).
    let joined = Instant::now();
    let mut announced: BTreeMap<PeerId, Instant> = BTreeMap::new();
    let mut connected: BTreeMap<PeerId, Duration> = BTreeMap::new();
    let mut hellos: BTreeSet<PeerId> = BTreeSet::new();
    let mut done: BTreeSet<PeerId> = BTreeSet::new();
    let mut reported = false;
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        if reported && done.len() == others {
            // Let our own "done" reach everyone before the socket closes.
            tokio::time::sleep(Duration::from_millis(500)).await;
            session.handle.close();
            return Ok(());
        }
        tokio::select! {
            event = session.lobby_events.recv() => {
                if let Some(LobbyEvent::PeerJoined(id)) = event {
                    announced.entry(id).or_insert_with(Instant::now);
                }
            }
            event = session.events.recv() => match event {
                Some(Event::CandidateGathered(c)) => println!("GATHERED {} {}", c.kind, c.address),
                Some(Event::IceServerFailed { url, reason }) => println!("SERVER_FAILED {url} {reason}"),
                Some(Event::PeerConnected(id)) => {
                    let since = announced.get(&id).copied().unwrap_or(joined);
                    connected.insert(id, since.elapsed());
                    let sent = session.handle.send(Target::Peer(id), TransferMode::Reliable, 0, HELLO).await;
                    sent.map_err(|e| format!("hello to {id}: {e}"))?;
                }
                Some(Event::Packet(p)) if p.data == HELLO => {
                    hellos.insert(p.from);
                }
                Some(Event::Packet(p)) if p.data == DONE => {
                    done.insert(p.from);
                }
                Some(Event::PeerLost { id, reason }) => return Err(format!("peer {id} lost: {reason}")),
                Some(Event::PeerDisconnected(id)) => return Err(format!("peer {id} disconnected")),
                Some(_) => {}
                None => return Err("the endpoint stopped".into()),
            },
            () = &mut deadline => {
                return Err(format!(
                    "timed out: peer {me} connected to {:?}, hello from {hellos:?}, done from {done:?}",
                    connected.keys().collect::<Vec<_>>()
                ));
            }
        }
        if !reported && connected.len() == others && hellos.len() == others {
            reported = true;
            for (&id, took) in &connected {
                let info = session
                    .handle
                    .call(move |m, _| m.peer(id))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("peer {id} vanished"))?;
                let path = info.path.ok_or(format!("no path to {id}"))?;
                println!(
                    "PATH {id} {} {} {} {}",
                    took.as_millis(),
                    path.local,
                    path.remote,
                    if path.is_relayed() {
                        "relayed"
                    } else {
                        "direct"
                    }
                );
            }
            let sent = session
                .handle
                .send(Target::All, TransferMode::Reliable, 0, DONE)
                .await;
            sent.map_err(|e| format!("done: {e}"))?;
        }
    }
}
