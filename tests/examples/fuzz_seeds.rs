//! Writes the seed corpora in `fuzz/corpus/<target>/` from real traffic: datagrams and signals
//! of a mesh connecting, lobby frames, SceneMultiplayer packets. Re-run after a format change:
//! `cargo run --example fuzz_seeds`.

use std::path::Path;
use std::time::{Duration, Instant};

use rtcmesh::lobby::{LobbyMessage, MessageKind};
use rtcmesh::multiplayer::wire;
use rtcmesh::{Event, Mesh, MeshConfig, Target, TransferMode};

/// Moves `me`'s signals and datagrams to `other`, recording them.
#[allow(clippy::too_many_arguments)]
fn exchange(
    me: &mut Mesh,
    other: &mut Mesh,
    from_id: i32,
    me_addr: std::net::SocketAddr,
    other_addr: std::net::SocketAddr,
    now: Instant,
    signals: &mut Vec<rtcmesh::Signal>,
    datagrams: &mut Vec<Vec<u8>>,
) {
    while let Some(e) = me.poll_event() {
        if let Event::Signal(s) = e {
            signals.push(s.signal.clone());
            other.handle_signal(now, from_id, s.signal).unwrap();
        }
    }
    while let Some(t) = me.poll_transmit() {
        datagrams.push(t.contents.clone());
        other.handle_datagram(now, me_addr, other_addr, &t.contents);
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("seed");
    };

    // Two meshes connecting: keep their signals and a few datagrams of each kind.
    let mut now = Instant::now();
    let (a_addr, b_addr) = (
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.2:5000".parse().unwrap(),
    );
    let mut a = Mesh::create_mesh(2, MeshConfig::default()).unwrap();
    let mut b = Mesh::create_mesh(1, MeshConfig::default()).unwrap();
    a.add_host_candidate(a_addr).unwrap();
    b.add_host_candidate(b_addr).unwrap();
    a.add_peer(now, 1, 1).unwrap();
    b.add_peer(now, 2, 1).unwrap();
    let mut signals = Vec::new();
    let mut datagrams = Vec::new();
    let mut sent_data = false;
    for _ in 0..2000 {
        exchange(
            &mut a,
            &mut b,
            2,
            a_addr,
            b_addr,
            now,
            &mut signals,
            &mut datagrams,
        );
        exchange(
            &mut b,
            &mut a,
            1,
            b_addr,
            a_addr,
            now,
            &mut signals,
            &mut datagrams,
        );
        if a.connected_peers().count() == 1 && !sent_data {
            a.send(Target::Peer(1), TransferMode::Reliable, 0, &[3, 1, 2, 3])
                .unwrap();
            sent_data = true;
        }
        now += Duration::from_millis(5);
        a.handle_timeout(now);
        b.handle_timeout(now);
    }
    // Datagram inputs: [count, node, source selector] then the datagram (the body reads the
    // length from the end; the fuzzer sorts out the rest).
    for (i, d) in datagrams.iter().take(12).enumerate() {
        let mut input = vec![0, 1, 1];
        input.extend_from_slice(d);
        write("datagram", &format!("real-{i:02}"), &input);
    }
    for (i, s) in signals.iter().enumerate() {
        let selector = match s {
            rtcmesh::Signal::Offer(_) => 0u8,
            rtcmesh::Signal::Answer(_) => 1,
            rtcmesh::Signal::Candidate(_) => 2,
        };
        write(
            "signal",
            &format!("body-{i:02}"),
            &[&[selector], s.body().as_bytes()].concat(),
        );
        write(
            "signal",
            &format!("encoded-{i:02}"),
            &[&[3u8], s.encode().as_bytes()].concat(),
        );
    }

    let frames = [
        LobbyMessage::new(MessageKind::Join, 0, "").encode(),
        LobbyMessage::new(MessageKind::Id, 1, "true").encode(),
        LobbyMessage::new(MessageKind::PeerConnect, 1234, "").encode(),
        LobbyMessage::new(MessageKind::Offer, 1, "v=0\r\n").encode(),
        LobbyMessage::new(
            MessageKind::Candidate,
            1,
            LobbyMessage::candidate_data(
                "0",
                0,
                "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
            ),
        )
        .encode(),
        LobbyMessage::new(MessageKind::Seal, 0, "").encode(),
    ];
    for (i, f) in frames.iter().enumerate() {
        write("lobby", &format!("frame-{i:02}"), f.as_bytes());
    }

    let raw = |payload: &[u8]| {
        let mut out = Vec::new();
        wire::encode_raw(payload, &mut out);
        out
    };
    let relay = |to, inner: &[u8]| {
        let mut out = Vec::new();
        wire::encode_relay(to, inner, &mut out);
        out
    };
    let mut auth = Vec::new();
    wire::encode_auth(b"secret", &mut auth);
    let packets: Vec<Vec<u8>> = vec![
        raw(&[1, 2, 3]),
        relay(7, &raw(&[1, 2, 3])),
        relay(0, &raw(b"all")),
        relay(-3, &raw(b"but 3")),
        wire::add_peer(3).to_vec(),
        wire::del_peer(3).to_vec(),
        auth,
        wire::AUTH_COMPLETE.to_vec(),
    ];
    for (i, p) in packets.iter().enumerate() {
        // [count, sender node, target selector, mode] then the packet.
        write(
            "multiplayer",
            &format!("packet-{i:02}"),
            &[&[0u8, 1, 1, 2][..], p].concat(),
        );
    }

    for (i, seed) in [
        &[0u8, 0, 0, 0, 1, 0, 0, 0][..],
        &[2, 0, 2, 0, 0, 0],
        &[1, 4, 1, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0],
    ]
    .iter()
    .enumerate()
    {
        write("commands", &format!("seq-{i:02}"), seed);
    }
    // What a TURN server sends a mesh while it allocates: the challenge, the allocation, the
    // Binding answer. Each becomes a seed for `ice_server` (mode byte 0: raw datagram).
    let start = Instant::now();
    let listen: std::net::SocketAddr = "127.250.0.1:3478".parse().unwrap();
    let mut server = rtcmesh_tests::SimTurnServer::new(listen, &[("fuzz", "fuzz")], start);
    let config = MeshConfig::default().with_ice_servers(vec![rtcmesh::IceServer::turn(
        format!("turn:{listen}"),
        "fuzz",
        "fuzz",
    )]);
    let mut m = Mesh::create_mesh(1, config).unwrap();
    m.add_host_candidate(a_addr).unwrap();
    m.handle_timeout(start);
    let mut from_server = Vec::new();
    let mut t = start;
    for _ in 0..100 {
        while let Some(tx) = m.poll_transmit() {
            let mut out = Vec::new();
            server.receive(t, a_addr, tx.destination, &tx.contents, &mut out);
            for (from, _, bytes) in out {
                from_server.push(bytes.clone());
                m.handle_datagram(t, from, a_addr, &bytes);
            }
        }
        if m.ice_gathering_complete() {
            break;
        }
        t += Duration::from_millis(60);
        m.handle_timeout(t);
    }
    for (i, bytes) in from_server.iter().take(6).enumerate() {
        let len = bytes.len().min(255) as u8;
        write(
            "ice_server",
            &format!("server-{i:02}"),
            &[&[1u8], &bytes[..], &[0, len]].concat(),
        );
    }
    // rtcmesh's own retransmission: messages of its hidden channel, each after a length byte
    // (the wire format is in core/src/link/reliable/frame.rs). DATA: 0x10 | FIN, transmission,
    // floor gap, channel, sequence, payload; ACK: 0x02, largest, delay, range count, first
    // range, (gap, length)*.
    let reliable: [&[&[u8]]; 5] = [
        // Two messages in order on channel 0, then out of order on channel 2.
        &[
            &[0x11, 0, 0, 0, 0, b'a'],
            &[0x11, 1, 0, 0, 1, b'b'],
            &[0x11, 3, 0, 2, 1, b'd'],
            &[0x11, 2, 0, 2, 0, b'c'],
        ],
        // A message in three fragments, one repeated.
        &[
            &[0x10, 0, 0, 0, 0, 1, 2, 3],
            &[0x10, 1, 0, 0, 1, 4, 5, 6],
            &[0x10, 1, 0, 0, 1, 4, 5, 6],
            &[0x11, 2, 0, 0, 2, 7],
        ],
        // Acknowledgements of what the body sent first: all, then with a gap.
        &[&[0x02, 2, 0, 0, 2], &[0x02, 2, 0x40, 0x64, 1, 0, 0, 0]],
        // An acknowledgement riding in front of data.
        &[&[0x02, 1, 0, 0, 1, 0x11, 0, 0, 0, 0, b'x']],
        // A fragment far ahead, then the budget filled.
        &[
            &[0x11, 9, 0, 0, 0x50, 0, 1],
            &[0x10, 5, 0, 2, 3, 9, 9, 9, 9],
        ],
    ];
    for (i, messages) in reliable.iter().enumerate() {
        let input: Vec<u8> = messages
            .iter()
            .flat_map(|m| [&[m.len() as u8][..], m].concat())
            .collect();
        write("reliable", &format!("messages-{i:02}"), &input);
    }
    println!("seed corpora written to {}", root.display());
}
