//! One peer of the NAT lab (`interop/natlab/run.sh`): joins a mesh lobby through STUN and TURN
//! and connects to every other member.
//!
//! Usage: `natlab_peer <signal-url> <lobby|-> <bind-ip> <peers> <stun-url|-> <turn-url> <user>
//! <credential> [stream | bulk <count>]`. With `-` it creates the lobby and prints
//! `LOBBY <name>`. The STUN URL may be `-` (none), the TURN URL too (none of its own: `join`
//! uses the credentials the signaling server mints, if it does; USER and CRED are then
//! ignored). The TURN URL may be `turn:`, `turn:…?transport=tcp` or `turns:`; with
//! `RTCMESH_TURN_CA=<pem file>` a `turns:` server's certificate is checked against that CA,
//! and `RTCMESH_ICE_POLICY=relay` allows relayed candidates only. Every mode prints `ME <id>`,
//! `SOCKET <address>`, `GATHERED <kind> <address> <ms since start>`,
//! `SERVER_FAILED <url> <reason>` and
//! `PATH <peer> <connect-ms> <local-kind> <remote-kind> <relayed|direct>`, and ends with `DONE`
//! (exit 0) or `FAILED <why>` (exit 1).
//!
//! * Default: exchanges a packet with each peer, prints the paths, and exits once every other
//!   peer said it is done too.
//! * `stream` (one other peer): sends a reliable packet every 20 ms (sequence number and send
//!   time) until its standard input closes, while the lab changes the NATs under it. Prints
//!   `RECV <seq> <sent-ms> <arrived-ms>` per packet received (times are Unix milliseconds, so
//!   the lab can compare them with its own clock) and `EVENT <ms> <event> [<details>]` for the
//!   mesh's path events. A packet out of order, missing or twice, or the peer disconnecting, is
//!   `FAILED`. At the end both sides say how far they sent, and each waits until it has every
//!   packet up to there.
//! * `bulk <count>` (one other peer): a hello on each of Godot's three channels both ways
//!   (`CHANNELS ok`), then the peer that joined the lobby second sends `count` reliable packets
//!   of 1,200 bytes as fast as the mesh takes them; the other prints
//!   `RATE <bytes> <ms from the first packet to the last>`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rtcmesh::lobby::LobbyEvent;
use rtcmesh::{
    Event, IceServer, IceTransportPolicy, Mesh, MeshConfig, PeerId, SendError, Target, TransferMode,
};
use rtcmesh_tokio::rustls::pki_types::pem::PemObject;
use rtcmesh_tokio::rustls::pki_types::CertificateDer;
use rtcmesh_tokio::signal::client_tls;
use rtcmesh_tokio::{join, EndpointConfig, JoinOptions, OutgoingPacket, Session};

const HELLO: &[u8] = b"hello";
const DONE: &[u8] = b"done";
/// `bulk` mode: the payload size (a typical game snapshot, the benchmark's).
const BULK_SIZE: usize = 1200;

/// `stream` mode: how often a packet goes out.
const EVERY: Duration = Duration::from_millis(20);
/// `stream` mode: the whole run, from joining to the end of the stream, is bounded by this.
const STREAM_LIMIT: Duration = Duration::from_secs(90);
/// `stream` mode: after its input closed, how long a peer waits for the other's last packets.
const FINISH_LIMIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> ExitCode {
    since_start();
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
    // RUST_LOG=rtcmesh=info shows the mesh's traces (str0m=debug its ICE agent) on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, mode) = match args.split_last() {
        Some((last, rest)) if last == "stream" => (rest, Mode::Stream),
        Some((count, rest)) if rest.last().is_some_and(|m| m == "bulk") => {
            let count = count.parse().map_err(|e| format!("bulk count: {e}"))?;
            (&rest[..rest.len() - 1], Mode::Bulk(count))
        }
        _ => (args.as_slice(), Mode::Meet),
    };
    let [url, lobby, bind, peers, stun, turn, user, credential] = args else {
        return Err(
            "usage: natlab_peer URL LOBBY|- BIND-IP PEERS STUN-URL TURN-URL USER CRED [stream]"
                .into(),
        );
    };
    let bind: IpAddr = bind.parse().map_err(|e| format!("bind address: {e}"))?;
    let others: usize = peers.parse().map_err(|e| format!("peer count: {e}"))?;
    // No TURN server of its own (`-`): the signaling server may mint one (`?turn=1`).
    let mut servers = Vec::new();
    if turn != "-" {
        servers.push(IceServer::turn(
            turn.clone(),
            user.clone(),
            credential.clone(),
        ));
    }
    if stun != "-" {
        servers.insert(0, IceServer::stun(stun.clone()));
    }
    let policy = match std::env::var("RTCMESH_ICE_POLICY").ok().as_deref() {
        Some("relay") => IceTransportPolicy::Relay,
        _ => IceTransportPolicy::All,
    };
    let turn_tls = match std::env::var_os("RTCMESH_TURN_CA") {
        Some(path) => {
            let mut roots = rtcmesh_tokio::rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| format!("CA: {e}"))? {
                roots
                    .add(cert.map_err(|e| format!("CA: {e}"))?)
                    .map_err(|e| format!("CA: {e}"))?;
            }
            Some(client_tls(roots).map_err(|e| format!("CA: {e}"))?)
        }
        None => None,
    };
    let options = JoinOptions::default()
        .with_mesh(true)
        .with_config(
            MeshConfig::default()
                .with_ice_servers(servers)
                .with_ice_transport_policy(policy),
        )
        .with_endpoint(
            EndpointConfig::default()
                .with_bind(SocketAddr::new(bind, 0))
                .with_announce(None)
                .with_turn_tls(turn_tls),
        );
    let creator = lobby == "-";
    let lobby = if creator { "" } else { lobby.as_str() };
    let mut session = join(url, lobby, options)
        .await
        .map_err(|e| format!("join: {e}"))?;
    println!("LOBBY {}", session.lobby);
    println!("ME {}", session.id());
    println!("SOCKET {}", session.handle.local_addr());
    match mode {
        Mode::Meet => meet_everyone(&mut session, others).await,
        Mode::Stream | Mode::Bulk(_) if others != 1 => {
            Err("stream and bulk modes need exactly one other peer".into())
        }
        Mode::Stream => stream_across_changes(&mut session).await,
        Mode::Bulk(count) => bulk(&mut session, !creator, count).await,
    }
}

/// What the peer does once it joined.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Meet,
    Stream,
    Bulk(usize),
}

/// When the program started (for `GATHERED` lines).
fn since_start() -> u128 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis()
}

/// `bulk` mode: a hello on every channel both ways, then `count` reliable packets of 1,200
/// bytes from the sender; the receiver prints the rate.
async fn bulk(session: &mut Session<Mesh>, sender: bool, count: usize) -> Result<(), String> {
    let joined = Instant::now();
    let mut announced: Option<Instant> = None;
    let limit = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(limit);
    let peer = loop {
        tokio::select! {
            event = session.lobby_events.recv() => {
                if let Some(LobbyEvent::PeerJoined(_)) = event {
                    announced.get_or_insert_with(Instant::now);
                }
            }
            event = session.events.recv() => match event {
                Some(Event::PeerConnected(id)) => break id,
                Some(event) => print_event(&event)?,
                None => return Err("the endpoint stopped".into()),
            },
            () = &mut limit => return Err("no peer connected".into()),
        }
    };
    print_path(session, peer, announced.unwrap_or(joined).elapsed()).await?;
    // Every channel, both ways: the unreliable ones a few times (nothing is lost in the lab,
    // but they are allowed to be).
    let modes = [
        TransferMode::Reliable,
        TransferMode::UnreliableOrdered,
        TransferMode::Unreliable,
    ];
    for mode in modes {
        for _ in 0..3 {
            let sent = session
                .handle
                .send(Target::Peer(peer), mode, 0, HELLO)
                .await;
            sent.map_err(|e| format!("hello on {mode:?}: {e}"))?;
        }
    }
    let mut heard: BTreeSet<String> = BTreeSet::new();
    let mut first: Option<Instant> = None;
    let mut received = 0usize;
    let mut next = 0usize;
    let mut done_heard = false;
    let mut channels_printed = false;
    loop {
        let channels_ok = heard.len() == modes.len();
        if channels_ok && !channels_printed {
            channels_printed = true;
            println!("CHANNELS ok");
        }
        if channels_ok && sender && next < count {
            // As fast as the mesh takes them: a refused packet (its queue is full) waits.
            let batch: Vec<OutgoingPacket> = (next..count.min(next + 64))
                .map(|_| OutgoingPacket {
                    target: Target::Peer(peer),
                    mode: TransferMode::Reliable,
                    channel: 0,
                    data: vec![0xB5; BULK_SIZE],
                })
                .collect();
            let results = session.handle.send_many(batch).await;
            let taken = results.iter().take_while(|r| r.is_ok()).count();
            next += taken;
            if taken < results.len() {
                match &results[taken] {
                    Err(SendError::QueueFull(_)) => {}
                    Err(e) => return Err(format!("bulk send: {e}")),
                    Ok(()) => {}
                }
            }
        }
        if done_heard || (!sender && received == count && channels_ok) {
            if !sender {
                let took = first.map_or(0, |f| f.elapsed().as_millis());
                println!("RATE {} {took}", count * BULK_SIZE);
                let sent = session
                    .handle
                    .send(Target::Peer(peer), TransferMode::Reliable, 0, DONE)
                    .await;
                sent.map_err(|e| format!("done: {e}"))?;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            session.handle.close();
            return Ok(());
        }
        let wait = if channels_ok && sender && next < count {
            Duration::from_millis(1)
        } else {
            Duration::from_secs(60)
        };
        tokio::select! {
            event = session.events.recv() => match event {
                Some(Event::Packet(p)) if p.data == HELLO => {
                    heard.insert(format!("{:?}", p.mode));
                }
                Some(Event::Packet(p)) if p.data == DONE => done_heard = true,
                Some(Event::Packet(p)) if p.data.len() == BULK_SIZE => {
                    first.get_or_insert_with(Instant::now);
                    received += 1;
                }
                Some(event) => print_event(&event)?,
                None => return Err("the endpoint stopped".into()),
            },
            () = tokio::time::sleep(wait) => {}
            () = &mut limit => {
                return Err(format!("bulk did not finish: {received} of {count} received, channels {heard:?}"))
            }
        }
        limit
            .as_mut()
            .reset(tokio::time::Instant::now() + Duration::from_secs(60));
    }
}

/// Prints the path to `id` as a `PATH` line.
async fn print_path(session: &Session<Mesh>, id: PeerId, took: Duration) -> Result<(), String> {
    let info = session
        .handle
        .call(move |m, _| m.peer(id))
        .await
        .map_err(|e| e.to_string())?
        .ok_or(format!("peer {id} vanished"))?;
    let path = info.path.ok_or(format!("no path to {id}"))?;
    let relayed = if path.is_relayed() {
        "relayed"
    } else {
        "direct"
    };
    println!(
        "PATH {id} {} {} {} {relayed}",
        took.as_millis(),
        path.local,
        path.remote
    );
    Ok(())
}

/// The default mode: a hello to and from every peer, the paths printed, then done.
async fn meet_everyone(session: &mut Session<Mesh>, others: usize) -> Result<(), String> {
    let me = session.id();
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
                Some(Event::CandidateGathered(c)) => {
                    println!("GATHERED {} {} {}", c.kind, c.address, since_start())
                }
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
                print_path(session, id, *took).await?;
            }
            let sent = session
                .handle
                .send(Target::All, TransferMode::Reliable, 0, DONE)
                .await;
            sent.map_err(|e| format!("done: {e}"))?;
        }
    }
}

/// Unix time in milliseconds: comparable across the lab's processes and with its own clock.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What travels in `stream` mode, on the reliable channel (ordered, so the end marker comes
/// after every packet before it).
enum Message {
    /// Sequence number and Unix send time (ms).
    Packet { seq: u32, sent_ms: u64 },
    /// The sender stopped: its last sequence number (`u32::MAX`: it sent none).
    End { last: u32 },
    /// The sender received everything up to the other side's `End`.
    Got,
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match *self {
            Message::Packet { seq, sent_ms } => {
                let mut b = vec![b'p'];
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(&sent_ms.to_le_bytes());
                b
            }
            Message::End { last } => {
                let mut b = vec![b'e'];
                b.extend_from_slice(&last.to_le_bytes());
                b
            }
            Message::Got => vec![b'g'],
        }
    }

    fn decode(data: &[u8]) -> Option<Message> {
        let u32_at = |at: usize| Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?));
        match (data.first()?, data.len()) {
            (b'p', 13) => Some(Message::Packet {
                seq: u32_at(1)?,
                sent_ms: u64::from_le_bytes(data[5..13].try_into().ok()?),
            }),
            (b'e', 5) => Some(Message::End { last: u32_at(1)? }),
            (b'g', 1) => Some(Message::Got),
            _ => None,
        }
    }
}

/// `stream` mode: connect to the one other peer, then stream to it until standard input closes,
/// checking that its stream arrives exactly once and in order.
async fn stream_across_changes(session: &mut Session<Mesh>) -> Result<(), String> {
    let joined = Instant::now();
    let limit = tokio::time::sleep(STREAM_LIMIT);
    tokio::pin!(limit);
    let peer = loop {
        tokio::select! {
            event = session.events.recv() => match event {
                Some(Event::PeerConnected(id)) => break id,
                Some(event) => print_event(&event)?,
                None => return Err("the endpoint stopped".into()),
            },
            () = &mut limit => return Err("no peer connected".into()),
        }
    };
    print_path(session, peer, joined.elapsed()).await?;

    // The lab closes our standard input to end the stream; a thread reads it (a blocked read
    // must not hold the runtime up when we exit).
    let (input_closed, mut stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = std::io::sink();
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut sink);
        let _ = input_closed.send(());
    });

    let send = |message: Message| {
        let handle = session.handle.clone();
        async move {
            handle
                .send(
                    Target::Peer(peer),
                    TransferMode::Reliable,
                    0,
                    message.encode(),
                )
                .await
                .map_err(|e| format!("send to {peer}: {e}"))
        }
    };
    println!("STREAMING {peer}");
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_seq: u32 = 0;
    let mut expected: u32 = 0;
    let mut stopped = false;
    let mut their_end: Option<u32> = None;
    let mut they_got_all = false;
    let finish = tokio::time::sleep(STREAM_LIMIT);
    tokio::pin!(finish);
    loop {
        if their_end.is_some() && they_got_all {
            // Our `Got` may have just gone out (their `End` came last): give it a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            session.handle.close();
            println!("SENT {next_seq} RECEIVED {expected}");
            return Ok(());
        }
        tokio::select! {
            _ = tick.tick(), if !stopped => {
                send(Message::Packet { seq: next_seq, sent_ms: unix_ms() }).await?;
                next_seq += 1;
            }
            _ = &mut stop, if !stopped => {
                stopped = true;
                send(Message::End { last: next_seq.wrapping_sub(1) }).await?;
                finish.as_mut().reset(tokio::time::Instant::now() + FINISH_LIMIT);
            }
            event = session.events.recv() => match event {
                Some(Event::Packet(p)) if p.from == peer => match Message::decode(&p.data) {
                    Some(Message::Packet { seq, sent_ms }) => {
                        println!("RECV {seq} {sent_ms} {}", unix_ms());
                        if seq != expected {
                            return Err(format!(
                                "packet {seq} arrived when {expected} was next (missing, twice or out of order)"
                            ));
                        }
                        expected += 1;
                    }
                    Some(Message::End { last }) => {
                        if last.wrapping_add(1) != expected {
                            return Err(format!(
                                "the peer sent up to {last}, {expected} packets arrived"
                            ));
                        }
                        their_end = Some(last);
                        send(Message::Got).await?;
                    }
                    Some(Message::Got) => they_got_all = true,
                    None => return Err(format!("a packet that is not the stream: {:?}", p.data)),
                },
                Some(event) => print_event(&event)?,
                None => return Err("the endpoint stopped".into()),
            },
            () = &mut limit, if !stopped => return Err("the lab never ended the stream".into()),
            () = &mut finish, if stopped => {
                return Err(format!(
                    "the stream did not finish: {expected} packets from the peer, its end {}, it got ours: {they_got_all}",
                    their_end.map_or("not seen".into(), |n| n.to_string())
                ));
            }
        }
    }
}

/// Prints an event of `stream` mode as an `EVENT` line (and the mode-independent lines);
/// a peer lost is an error.
fn print_event(event: &Event) -> Result<(), String> {
    let ms = unix_ms();
    match event {
        Event::CandidateGathered(c) => {
            println!("GATHERED {} {} {}", c.kind, c.address, since_start());
            println!("EVENT {ms} CandidateGathered {} {}", c.kind, c.address);
        }
        Event::IceServerFailed { url, reason } => {
            println!("SERVER_FAILED {url} {reason}");
            println!("EVENT {ms} IceServerFailed {url} {reason}");
        }
        Event::PeerMoved { path, .. } => println!("EVENT {ms} PeerMoved {path}"),
        Event::IceRestartStarted(_) => println!("EVENT {ms} IceRestartStarted"),
        Event::IceRestartEnded { path, .. } => println!("EVENT {ms} IceRestartEnded {path}"),
        Event::PeerLost { id, reason } => return Err(format!("peer {id} lost: {reason}")),
        Event::PeerDisconnected(id) => return Err(format!("peer {id} disconnected")),
        _ => {}
    }
    Ok(())
}
