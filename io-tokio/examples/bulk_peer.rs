//! One peer of the bulk-under-loss benchmark (`interop/bulk/run.sh`): an rtcmesh mesh on one
//! UDP socket, signaling through its standard input and output as JSON lines, sending or
//! receiving reliable messages as fast as the stack takes them.
//!
//! Usage: `bulk_peer <send|recv> <bind-ip> <size> <count>`. The sender is peer 2 (it offers),
//! the receiver peer 1 (it answers), as rtcmesh decides by id; the other end may be any WebRTC
//! stack with Godot's channel layout (negotiated channels 1–3). With
//! `RTCMESH_OWN_RETRANSMISSION=0` in its environment the mesh has
//! `MeshConfig::own_retransmission` off (SCTP retransmits even towards another rtcmesh).
//!
//! Lines out: `{"type":"offer"|"answer","sdp":…}`, `{"type":"candidate","candidate":…,"mid":"0"}`,
//! `{"type":"open"}` once connected, then the sender's `{"type":"sent","messages":…}` or the
//! receiver's `{"type":"result","messages":…,"bytes":…,"seconds":…}` (seconds from `start` to the
//! last message). Lines in: the other end's signals, `{"type":"start"}` (begin the transfer) and
//! `{"type":"stop"}` (end it: the receiver reports what it has). Exits after reporting, when its
//! input closes, or after 120 s whatever happens.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::{Event, Mesh, MeshConfig, SendError, Signal, Target, TransferMode};
use rtcmesh_tokio::{Endpoint, EndpointConfig, OutgoingPacket};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const LIMIT: Duration = Duration::from_secs(120);

fn say(v: Value) {
    println!("{v}");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [role, bind, size, count] = args.as_slice() else {
        return Err("usage: bulk_peer <send|recv> <bind-ip> <size> <count>".into());
    };
    let sender = match role.as_str() {
        "send" => true,
        "recv" => false,
        _ => return Err("role must be send or recv".into()),
    };
    let bind: IpAddr = bind.parse()?;
    let size: usize = size.parse()?;
    let count: usize = count.parse()?;
    let (me, them) = if sender { (2, 1) } else { (1, 2) };
    let endpoint = EndpointConfig::default().with_bind(SocketAddr::new(bind, 0));
    let own = std::env::var("RTCMESH_OWN_RETRANSMISSION").map_or(true, |v| v != "0");
    let config = MeshConfig::default().with_own_retransmission(own);
    let (handle, mut events) = Endpoint::spawn(endpoint, Mesh::create_mesh(me, config)?).await?;
    handle.add_peer(them, 1).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let deadline = tokio::time::Instant::now() + LIMIT;
    let (mut open, mut started, mut stopped) = (false, None::<Instant>, false);
    let (mut received, mut bytes, mut last) = (0usize, 0usize, None::<Instant>);
    let mut sent = 0usize;
    // Our SDP's media id, for the candidates we trickle (the other end needs it).
    let mut mid = String::from("0");
    let packet = OutgoingPacket {
        target: Target::Peer(them),
        mode: TransferMode::Reliable,
        channel: 0,
        data: vec![0x42u8; size],
    };
    loop {
        // The sender keeps rtcmesh's queue full between other work.
        if sender && open && started.is_some() && !stopped && sent < count {
            let batch = (count - sent).min(16);
            let results = handle.send_many(vec![packet.clone(); batch]).await;
            let accepted = results.iter().take_while(|r| r.is_ok()).count();
            sent += accepted;
            match results.get(accepted) {
                Some(Err(SendError::QueueFull(_))) => {
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                // The receiver is gone (it reported and closed): the transfer is over, and
                // the receiver's report is the figure.
                Some(Err(e)) => {
                    eprintln!("bulk_peer: send stopped: {e}");
                    say(json!({"type": "sent", "messages": sent}));
                    break;
                }
                _ => {}
            }
            if sent == count {
                say(json!({"type": "sent", "messages": sent}));
            }
        }
        let busy = sender && open && started.is_some() && !stopped && sent < count;
        let wait = if busy {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline) => return Err("time limit".into()),
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                let v: Value = serde_json::from_str(&line)?;
                match v["type"].as_str().unwrap_or("") {
                    "offer" | "answer" => {
                        let sdp = v["sdp"].as_str().unwrap_or("").to_owned();
                        let signal = if v["type"] == "offer" { Signal::Offer(sdp) } else { Signal::Answer(sdp) };
                        handle.handle_signal(them, signal).await?;
                    }
                    "candidate" => {
                        let c = v["candidate"].as_str().unwrap_or("");
                        let c = c.strip_prefix("a=").unwrap_or(c).to_owned();
                        if !c.is_empty() {
                            handle.handle_signal(them, Signal::Candidate(c)).await?;
                        }
                    }
                    "start" => started = Some(Instant::now()),
                    "stop" => {
                        stopped = true;
                        if sender {
                            say(json!({"type": "sent", "messages": sent}));
                            break;
                        }
                    }
                    _ => {}
                }
            }
            event = events.recv() => match event {
                Some(Event::Signal(s)) => {
                    let kind = s.signal.kind();
                    match s.signal {
                        Signal::Offer(sdp) | Signal::Answer(sdp) => {
                            if let Some(m) = sdp.lines().find_map(|l| l.strip_prefix("a=mid:")) {
                                mid = m.trim().to_owned();
                            }
                            say(json!({"type": kind, "sdp": sdp}));
                        }
                        Signal::Candidate(c) => {
                            say(json!({"type": "candidate", "candidate": c, "mid": mid}))
                        }
                    }
                }
                Some(Event::PeerConnected(_)) => {
                    open = true;
                    say(json!({"type": "open"}));
                }
                Some(Event::Packet(p)) => {
                    received += 1;
                    bytes += p.data.len();
                    last = Some(Instant::now());
                }
                // A sender that was told to stop closes at once, which may reach us before
                // our own `stop`: the transfer is over, report it.
                Some(Event::PeerDisconnected(_)) if !sender && started.is_some() => stopped = true,
                Some(Event::PeerDisconnected(_)) => return Err("peer disconnected".into()),
                Some(_) => {}
                None => return Err("endpoint closed".into()),
            },
            () = tokio::time::sleep(wait), if busy || !sender => {}
        }
        if !sender && (stopped || received >= count) {
            let seconds = match (started, last) {
                (Some(s), Some(l)) => l.saturating_duration_since(s).as_secs_f64(),
                _ => 0.0,
            };
            say(
                json!({"type": "result", "messages": received, "bytes": bytes, "seconds": seconds}),
            );
            break;
        }
    }
    handle.close();
    Ok(())
}
