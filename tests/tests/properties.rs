//! Property tests: random meshes on random (seeded) faulty networks under random commands.
//!
//! Cases per property: `RTCMESH_PROPTEST_CASES` (default 32, sized for CI on 2 cores); a long
//! run is e.g. `RTCMESH_PROPTEST_CASES=640 cargo test -p rtcmesh-tests --release --test properties`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use rtcmesh::{
    Event, IceServer, IceTransportPolicy, MeshConfig, MultiplayerConfig, PeerId, Target,
    TransferMode,
};
use rtcmesh_tests::{LinkConditions, NatBehavior, World};
use str0m_netem::{Bitrate, DataSize, NetemConfig, Probability, RandomLoss};

fn cases() -> u32 {
    std::env::var("RTCMESH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

#[derive(Debug, Clone)]
struct Faults {
    loss: f32,
    latency_ms: u64,
    jitter_ms: u64,
    duplicate: f32,
    /// A bottleneck on every directed link: (rate in kbit/s, buffer in KiB; tail drop).
    cap: Option<(u64, i64)>,
    /// Every Nth packet overtakes the one before it. (str0m-netem delivers in send order
    /// whatever the jitter, so jitter alone never reorders.)
    reorder_gap: Option<u32>,
}

impl Faults {
    fn lossy(loss: f32, latency_ms: u64, jitter_ms: u64) -> Faults {
        Faults {
            loss,
            latency_ms,
            jitter_ms,
            duplicate: 0.0,
            cap: None,
            reorder_gap: None,
        }
    }

    fn conditions(&self) -> LinkConditions {
        let mut netem = NetemConfig::new()
            .latency(Duration::from_millis(self.latency_ms))
            .jitter(Duration::from_millis(self.jitter_ms))
            .duplicate(Probability::new(self.duplicate));
        if self.loss > 0.0 {
            netem = netem.loss(RandomLoss::new(Probability::new(self.loss)));
        }
        if let Some(gap) = self.reorder_gap {
            netem = netem.reorder_gap(gap);
        }
        if let Some((kbps, buffer_kib)) = self.cap {
            netem = netem.link(Bitrate::kbps(kbps), DataSize::kbytes(buffer_kib));
        }
        LinkConditions::new(netem)
    }
}

/// Loss up to 8 %, latency 1–40 ms with jitter up to 15 ms, duplication up to 5 %, on half of
/// the cases reordering (every 2nd–20th packet overtakes its predecessor), and on a quarter a
/// bandwidth cap of 0.2–5 Mbit/s with an 8–64 KiB buffer.
fn faults() -> impl Strategy<Value = Faults> {
    let cap = prop_oneof![
        3 => Just(None),
        1 => (200u64..5000, 8i64..64).prop_map(Some),
    ];
    let reorder_gap = prop_oneof![Just(None), (2u32..20).prop_map(Some)];
    (
        0.0f32..0.08,
        1u64..40,
        0u64..15,
        0.0f32..0.05,
        cap,
        reorder_gap,
    )
        .prop_map(
            |(loss, latency_ms, jitter_ms, duplicate, cap, reorder_gap)| Faults {
                loss,
                latency_ms,
                jitter_ms,
                duplicate,
                cap,
                reorder_gap,
            },
        )
}

/// Where a peer sits: on the public network, or behind a NAT of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Public,
    Cone,
    Symmetric,
}

/// Half the meshes are all public (no ICE servers); the others mix public peers, cone and
/// symmetric NATs, with a STUN/TURN server every peer uses (a quarter of those relay only).
#[derive(Debug, Clone)]
struct Network {
    places: Vec<Place>,
    relay_only: bool,
}

fn network() -> impl Strategy<Value = Network> {
    let place = prop_oneof![
        Just(Place::Public),
        Just(Place::Cone),
        Just(Place::Symmetric)
    ];
    prop_oneof![
        Just(Network {
            places: Vec::new(),
            relay_only: false
        }),
        (
            proptest::collection::vec(place, 6),
            prop_oneof![3 => Just(false), 1 => Just(true)]
        )
            .prop_map(|(places, relay_only)| Network { places, relay_only }),
    ]
}

impl Network {
    fn place(&self, n: usize) -> Place {
        self.places.get(n).copied().unwrap_or(Place::Public)
    }

    /// Whether a mesh of `size` peers gets the STUN/TURN server (any peer behind a NAT).
    fn has_servers(&self, size: usize) -> bool {
        self.places.iter().take(size).any(|&p| p != Place::Public)
    }

    /// Builds the world: a TURN server if any peer is behind a NAT, and the peers in place.
    fn world(&self, seed: u64, ids: &[PeerId], server: bool, config: &MeshConfig) -> World {
        let mut w = World::with_seed(seed);
        let mut config = config.clone();
        if self.has_servers(ids.len()) {
            w.add_turn_server(&[("player", "s3cret")]);
            let listen = w.servers[0].listen;
            config.ice_servers = vec![
                IceServer::stun(format!("stun:{listen}")),
                IceServer::turn(format!("turn:{listen}"), "player", "s3cret"),
            ];
            if self.relay_only {
                config.ice_transport_policy = IceTransportPolicy::Relay;
            }
        }
        for (n, &id) in ids.iter().enumerate() {
            let mesh = if server && n == 0 {
                rtcmesh::Mesh::create_server(config.clone())
            } else if server {
                rtcmesh::Mesh::create_client(id, config.clone())
            } else {
                rtcmesh::Mesh::create_mesh(id, config.clone())
            }
            .unwrap();
            match self.place(n) {
                Place::Public => w.add(mesh),
                Place::Cone => w.add_behind_nat(mesh, NatBehavior::CONE),
                Place::Symmetric => w.add_behind_nat(mesh, NatBehavior::SYMMETRIC),
            };
        }
        w
    }

    /// Connected pairs that no direct path can join must be relayed (a symmetric NAT against
    /// any other NAT), and under the relay policy every pair is.
    fn paths_are_sound(&self, w: &World) -> Result<(), TestCaseError> {
        for (n, node) in w.nodes.iter().enumerate().filter(|(_, n)| n.alive) {
            for peer in node.mesh().connected_peers() {
                let m = w.node_of(peer).expect("peer node");
                let (a, b) = (self.place(n), self.place(m));
                let must_relay = self.relay_only && self.has_servers(w.nodes.len())
                    || (a == Place::Symmetric && b != Place::Public)
                    || (b == Place::Symmetric && a != Place::Public);
                if must_relay {
                    let path = node.mesh().peer(peer).and_then(|p| p.path);
                    prop_assert!(
                        path.is_some_and(|p| p.is_relayed()),
                        "node {n} ({a:?}) to peer {peer} ({b:?}): not relayed: {path:?}"
                    );
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send {
        from: usize,
        target: u8,
        to: usize,
        mode: u8,
        channel: u16,
        len: usize,
    },
    Remove {
        node: usize,
        peer: usize,
    },
    Close {
        node: usize,
    },
    Advance {
        ms: u64,
    },
    /// The NAT in front of `node` rebinds (it is seen at a new address, not told): its NAT box
    /// forgets every mapping, or a public node is seen at a new address.
    Rebind {
        node: usize,
    },
    /// `node`'s socket moves to a new address (its mesh is told).
    Move {
        node: usize,
    },
}

/// A fresh address for the n-th change of the run (never a node's).
fn changed_address(n: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 1, (n % 250) as u8 + 1], 6000 + n))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..6, 0u8..3, 0usize..6, 0u8..3, 0u16..4, 1usize..3000)
            .prop_map(|(from, target, to, mode, channel, len)| Op::Send { from, target, to, mode, channel, len }),
        1 => (0usize..6, 0usize..6).prop_map(|(node, peer)| Op::Remove { node, peer }),
        1 => (0usize..6).prop_map(|node| Op::Close { node }),
        3 => (1u64..300).prop_map(|ms| Op::Advance { ms }),
        1 => (0usize..6).prop_map(|node| Op::Rebind { node }),
        1 => (0usize..6).prop_map(|node| Op::Move { node }),
    ]
}

/// Payload: [sender id i32][channel index u8][seq u32][filler derived from both].
fn payload(sender: PeerId, index: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(len.max(9));
    p.extend_from_slice(&sender.to_le_bytes());
    p.push(index);
    p.extend_from_slice(&seq.to_le_bytes());
    while p.len() < len {
        p.push((p.len() as u32 ^ seq ^ sender as u32) as u8);
    }
    p
}

fn decode(data: &[u8]) -> Option<(PeerId, u8, u32)> {
    let sender = PeerId::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let seq = u32::from_le_bytes(data.get(5..9)?.try_into().ok()?);
    Some((sender, data[4], seq))
}

/// The channel index a (mode, transfer channel) pair uses, and its effective mode.
fn resolve(mode: TransferMode, channel: u16, extra: &[TransferMode]) -> (u8, TransferMode) {
    match channel {
        0 => (2 - mode as u8, mode), // layout: reliable 0, ordered 1, unreliable 2
        k => (2 + k as u8, extra[k as usize - 1]),
    }
}

/// After `connect_timeout` every peer is either connected or gone: nothing hangs half-open.
fn no_half_open_peers(w: &World) -> Result<(), TestCaseError> {
    for node in w.nodes.iter().filter(|n| n.alive) {
        for p in node.mesh().peers() {
            let info = node.mesh().peer(p).unwrap();
            prop_assert!(
                info.connected,
                "node {}: peer {p} stuck half-open: {info:?}",
                node.mesh().unique_id()
            );
        }
    }
    Ok(())
}

/// A reliable packet that must arrive unless its pair stopped being connected after the send.
struct Expected {
    /// (receiver, sender, channel index, seq).
    packet: (PeerId, PeerId, u8, u32),
    /// Lengths of the sender's and the receiver's event logs when it was sent.
    sender_mark: usize,
    receiver_mark: usize,
}

/// Runs a scenario and checks every invariant; returns the first violation.
fn check(
    server: bool,
    size: usize,
    extra: Vec<TransferMode>,
    faults: Faults,
    seed: u64,
    ops: Vec<Op>,
    network: Network,
) -> Result<(), TestCaseError> {
    let config = MeshConfig::default().with_channels(extra.clone());
    let ids: Vec<PeerId> = (1..=size as PeerId).collect();
    let mut w = network.world(seed, &ids, server, &config);
    w.set_all_links(faults.conditions());
    w.introduce_all();
    // Every mesh converges within `connect_timeout`, healthy or not, NATs or not: stalled
    // handshakes are retried (see `stalled_handshakes_are_retried_until_lossy_meshes_converge`)
    // and a TURN server relays for whoever has no direct path.
    let converged = w.run_until(config.connect_timeout, World::fully_connected);
    prop_assert!(converged, "mesh did not converge within connect_timeout");
    no_half_open_peers(&w)?;
    network.paths_are_sound(&w)?;

    let mut seqs: BTreeMap<(PeerId, u8), u32> = BTreeMap::new();
    // Reliable sends: (receiver, sender, index, seq) with the lengths of the sender's and the
    // receiver's event logs at the time, to tell whether the pair stayed connected after it.
    let mut expected: Vec<Expected> = Vec::new();
    let mut touched: BTreeSet<PeerId> = BTreeSet::new(); // nodes that removed or closed
    let mut changes = 0u16; // addresses handed out by Rebind / Move
    let mut closed: BTreeSet<PeerId> = BTreeSet::new();
    for op in ops {
        match op {
            Op::Send {
                from,
                target,
                to,
                mode,
                channel,
                len,
            } => {
                let from = from % size;
                let to_id = ids[to % size];
                let mode = TransferMode::try_from(mode as i64).unwrap();
                let target = match target {
                    0 => Target::All,
                    1 => Target::Peer(to_id),
                    _ => Target::AllExcept(to_id),
                };
                let channel = channel % (extra.len() as u16 + 1);
                let (index, _) = resolve(mode, channel, &extra);
                let sender = ids[from];
                let seq = *seqs.entry((sender, index)).or_default();
                let data = payload(sender, index, seq, len);
                let receivers: Vec<PeerId> = w.nodes[from].mesh().connected_peers().collect();
                match w.nodes[from].mesh_mut().send(target, mode, channel, &data) {
                    Ok(()) => {
                        *seqs.get_mut(&(sender, index)).unwrap() += 1;
                        let reliable = resolve(mode, channel, &extra).1 == TransferMode::Reliable;
                        for r in receivers {
                            let hit = match target {
                                Target::All => true,
                                Target::Peer(p) => p == r,
                                Target::AllExcept(p) => p != r,
                            };
                            if hit && reliable {
                                let receiver = w.node_of(r).expect("receiver exists");
                                expected.push(Expected {
                                    packet: (r, sender, index, seq),
                                    sender_mark: w.nodes[from].events().len(),
                                    receiver_mark: w.nodes[receiver].events().len(),
                                });
                            }
                        }
                    }
                    Err(e) => {
                        // Only the documented errors that fit the situation.
                        use rtcmesh::SendError::*;
                        prop_assert!(
                            matches!(
                                e,
                                UnknownPeer(_) | PeerNotConnected(_) | Disconnected | QueueFull(_)
                            ),
                            "unexpected send error {e:?}"
                        );
                    }
                }
                w.drain(from);
            }
            Op::Remove { node, peer } => {
                let (node, peer) = (node % size, ids[peer % size]);
                if w.nodes[node].mesh_mut().remove_peer(peer) {
                    touched.insert(ids[node]);
                    touched.insert(peer);
                }
                w.drain(node);
            }
            Op::Close { node } => {
                let node = node % size;
                w.nodes[node].mesh_mut().close();
                touched.insert(ids[node]);
                closed.insert(ids[node]);
                w.drain(node);
            }
            Op::Advance { ms } => w.run_for(Duration::from_millis(ms)),
            Op::Rebind { node } => {
                let node = node % size;
                changes += 1;
                match w.nodes[node].nat {
                    // Behind a NAT box: the box forgets its mappings.
                    Some(k) => w.nats[k].rebind(),
                    None => w.rebind(node, changed_address(changes)),
                }
            }
            Op::Move { node } => {
                changes += 1;
                w.move_node(node % size, changed_address(changes));
            }
        }
    }
    // Let retransmissions finish (loss up to 8 %, RTT up to ~110 ms; a move that waits for the
    // moved peer's next ICE check, then SCTP's backed-off retransmission).
    w.run_for(Duration::from_secs(30));

    let mut received: BTreeSet<(PeerId, PeerId, u8, u32)> = BTreeSet::new();
    for (n, &me) in ids.iter().enumerate() {
        // A closed mesh refuses signals still on their way to it, and a mesh refuses those of
        // a peer it removed (a candidate gathered late and trickled just then, or an ICE
        // restart offer sent before the peer noticed): that and nothing else.
        let unexpected: Vec<&rtcmesh::SignalError> = w.nodes[n]
            .signal_errors
            .iter()
            .filter(|e| match e {
                rtcmesh::SignalError::Closed => !closed.contains(&me),
                rtcmesh::SignalError::UnknownPeer(p) => {
                    !(touched.contains(&me) || touched.contains(p))
                }
                _ => true,
            })
            .collect();
        prop_assert!(unexpected.is_empty(), "signal errors {:?}", unexpected);
        let mut last: BTreeMap<(PeerId, u8), u32> = BTreeMap::new();
        let mut state: BTreeMap<PeerId, bool> = BTreeMap::new();
        for e in w.nodes[n].events() {
            match e {
                Event::PeerConnected(p) => {
                    let was = state.insert(*p, true);
                    prop_assert!(was != Some(true), "node {me}: connected twice to {p}");
                }
                Event::PeerDisconnected(p) => {
                    let was = state.insert(*p, false);
                    prop_assert!(
                        was == Some(true),
                        "node {me}: disconnect from {p} without connect"
                    );
                }
                Event::Packet(pkt) => {
                    let (sender, index, seq) =
                        decode(&pkt.data).ok_or_else(|| TestCaseError::fail("short packet"))?;
                    prop_assert_eq!(sender, pkt.from, "sender id");
                    prop_assert_eq!(
                        pkt.data.clone(),
                        payload(sender, index, seq, pkt.data.len()),
                        "corrupted"
                    );
                    let fresh = received.insert((me, sender, index, seq));
                    prop_assert!(fresh, "node {}: duplicate {:?}", me, (sender, index, seq));
                    let effective = if index < 3 {
                        [
                            TransferMode::Reliable,
                            TransferMode::UnreliableOrdered,
                            TransferMode::Unreliable,
                        ][index as usize]
                    } else {
                        extra[index as usize - 3]
                    };
                    prop_assert_eq!(pkt.mode, effective);
                    if effective != TransferMode::Unreliable {
                        if let Some(prev) = last.insert((sender, index), seq) {
                            prop_assert!(
                                seq > prev,
                                "node {}: out of order on {:?}",
                                me,
                                (sender, index)
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // Reliable: exactly once (checked above) and nothing missing between peers that stayed
    // connected after the send (neither side removed, closed, or saw the other disconnect).
    let disconnected_after = |node: PeerId, peer: PeerId, mark: usize| {
        w.nodes[w.node_of(node).unwrap()].events()[mark..].contains(&Event::PeerDisconnected(peer))
    };
    for e in &expected {
        let (r, s, _, _) = e.packet;
        if touched.contains(&r)
            || touched.contains(&s)
            || disconnected_after(s, r, e.sender_mark)
            || disconnected_after(r, s, e.receiver_mark)
        {
            continue;
        }
        prop_assert!(
            received.contains(&e.packet),
            "reliable packet lost: {:?}",
            e.packet
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_on_faulty_networks_keep_every_invariant(
        server in any::<bool>(),
        size in 2usize..=6,
        extra in proptest::collection::vec(prop_oneof![Just(TransferMode::Reliable), Just(TransferMode::UnreliableOrdered), Just(TransferMode::Unreliable)], 0..3),
        faults in faults(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..40),
        network in network(),
    ) {
        check(server, size, extra, faults, seed, ops, network)?;
    }

    #[test]
    fn a_partitioned_or_vanished_peer_is_reported_within_the_timeout_and_the_rest_keep_delivering(
        size in 3usize..=5,
        victim in 0usize..5,
        vanish in any::<bool>(),
        at_ms in 0u64..2000,
        faults in faults(),
        seed in any::<u64>(),
    ) {
        let victim = victim % size;
        let peer_timeout = Duration::from_secs(3);
        let config = MeshConfig::default().with_peer_timeout(peer_timeout).with_stun_max_rto(Duration::from_secs(1));
        let ids: Vec<PeerId> = (1..=size as PeerId).collect();
        let mut w = World::mesh_with_seed(&ids, &config, seed);
        w.introduce_all();
        prop_assert!(w.run_until(Duration::from_secs(60), World::fully_connected));
        w.set_all_links(faults.conditions());
        w.run_for(Duration::from_millis(at_ms));
        if vanish {
            w.vanish(victim);
        } else {
            for n in 0..size { if n != victim { w.partition(n, victim, true); } }
        }
        let cut = w.now;
        let victim_id = ids[victim];
        let others: Vec<usize> = (0..size).filter(|&n| n != victim).collect();
        let reported = w.run_until(peer_timeout + Duration::from_secs(2), |w| {
            others.iter().all(|&n| w.nodes[n].disconnected().contains(&victim_id))
        });
        prop_assert!(reported, "loss not reported within {:?} (+2 s slack); {:?}", peer_timeout, w.now - cut);
        // The survivors still deliver reliably to each other.
        let (a, b) = (others[0], others[1]);
        let before = w.nodes[b].packets().len();
        w.nodes[a].mesh_mut().send(Target::Peer(ids[b]), TransferMode::Reliable, 0, b"still here").unwrap();
        w.drain(a);
        // SCTP's retransmission timeout starts at 3 s on a connection without a round-trip
        // sample yet (RFC 4960's RTO.Initial; sctp-proto's, not configurable through str0m) and
        // doubles: 100 s covers four lost transmissions in a row (found with 10 s: three lost
        // in a row at 7.7 % loss, delivered after 21 s).
        prop_assert!(w.run_until(Duration::from_secs(100), |w| w.nodes[b].packets().len() > before));
        prop_assert!(w.nodes[a].mesh().connected_peers().any(|p| p == ids[b]));
    }

    #[test]
    fn a_partition_that_heals_within_the_timeouts_loses_no_peer_and_delivery_resumes(
        size in 2usize..=5,
        a in 0usize..5,
        b in 0usize..5,
        at_ms in 0u64..2000,
        cut_ms in 100u64..2000,
        faults in faults(),
        seed in any::<u64>(),
    ) {
        let (a, b) = (a % size, (a + 1 + b % (size - 1)) % size);
        // The cut (≤ 2 s) is shorter than the silence limit and the ICE grace period, with room
        // for the consent check that notices the heal (every ≤ 1 s) and a few lost ones.
        let config = MeshConfig::default().with_peer_timeout(Duration::from_secs(10)).with_disconnect_grace(Duration::from_secs(6)).with_stun_max_rto(Duration::from_secs(1));
        let ids: Vec<PeerId> = (1..=size as PeerId).collect();
        let mut w = World::mesh_with_seed(&ids, &config, seed);
        w.set_all_links(faults.conditions());
        w.introduce_all();
        prop_assert!(w.run_until(config.connect_timeout, World::fully_connected));
        w.run_for(Duration::from_millis(at_ms));
        // A handshake retry while connecting may legitimately report a disconnect: look after.
        let marks: Vec<usize> = w.nodes.iter().map(|n| n.events().len()).collect();
        w.partition(a, b, true);
        let send = |w: &mut World, seq: u32| {
            let data = payload(ids[a], 0, seq, 100);
            w.nodes[a].mesh_mut().send(Target::Peer(ids[b]), TransferMode::Reliable, 0, &data).unwrap();
            w.drain(a);
        };
        send(&mut w, 0); // sent into the cut: SCTP retransmits it after the heal
        w.run_for(Duration::from_millis(cut_ms));
        w.partition(a, b, false);
        send(&mut w, 1);
        let arrived = |w: &World| {
            w.nodes[b].packets().iter().filter(|p| p.from == ids[a]).count() == 2
        };
        // SCTP retransmits from 3 s (no round-trip sample yet) or 1 s, doubling each time: 100 s
        // covers four lost transmissions in a row (found with 15 s: two lost ones plus, before
        // the clock fix in `Link::write`, a timeout inflated to 2.4 s).
        prop_assert!(w.run_until(Duration::from_secs(100), arrived), "delivery did not resume");
        let got: Vec<u32> = w.nodes[b].packets().iter().filter_map(|p| decode(&p.data)).map(|d| d.2).collect();
        prop_assert_eq!(got, vec![0, 1]);
        w.run_for(Duration::from_secs(5));
        for (node, &mark) in w.nodes.iter().zip(&marks) {
            let lost: Vec<&Event> = node.events()[mark..].iter().filter(|e| matches!(e, Event::PeerDisconnected(_))).collect();
            prop_assert!(lost.is_empty(), "node {} lost a peer: {:?}", node.mesh().unique_id(), lost);
        }
        prop_assert!(w.fully_connected());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 32, ..ProptestConfig::default() })]

    /// The move in the fault list: a peer whose address changes mid-stream (its NAT rebinds, or
    /// its socket moves) on a faulty network stays connected everywhere, keeps its id, and its
    /// reliable stream arrives exactly once and in order.
    #[test]
    fn a_peer_whose_address_changes_mid_stream_stays_connected_and_loses_nothing(
        size in 2usize..=4,
        mover in 0usize..4,
        partner in 0usize..3,
        rebind in any::<bool>(),
        at in 10u32..150,
        faults in faults(),
        seed in any::<u64>(),
    ) {
        let mover = mover % size;
        let partner = (mover + 1 + partner % (size - 1)) % size;
        let config = MeshConfig::default();
        let ids: Vec<PeerId> = (1..=size as PeerId).collect();
        let mut w = World::mesh_with_seed(&ids, &config, seed);
        w.set_all_links(faults.conditions());
        w.introduce_all();
        prop_assert!(w.run_until(config.connect_timeout, World::fully_connected));
        let marks: Vec<usize> = w.nodes.iter().map(|n| n.events().len()).collect();
        let mut stream = rtcmesh_tests::Stream::new(mover, partner, 300);
        let mut change = None;
        stream.run(&mut w, 200, Duration::from_millis(25), |w, i| {
            if i == at {
                change = Some(w.now);
                if rebind { w.rebind(mover, changed_address(1)); } else { w.move_node(mover, changed_address(1)); }
            }
        });
        // SCTP's backed-off retransmissions over a lossy path: as for the healing partition.
        prop_assert!(stream.finish(&mut w, Duration::from_secs(100)), "stream incomplete: {:?}", stream.check());
        if let Err(e) = stream.check() { return Err(TestCaseError::fail(e)); }
        w.run_for(Duration::from_secs(5));
        for (node, &mark) in w.nodes.iter().zip(&marks) {
            let lost: Vec<&Event> = node.events()[mark..].iter().filter(|e| matches!(e, Event::PeerDisconnected(_))).collect();
            prop_assert!(lost.is_empty(), "node {} lost a peer: {:?}", node.mesh().unique_id(), lost);
            prop_assert!(node.signal_errors.is_empty(), "signal errors {:?}", node.signal_errors);
        }
        prop_assert!(w.fully_connected());
        let stall = stream.stall_after(change.expect("changed")).expect("delivered");
        // Recovery: the moved peer's next ICE check and our next consent check to its old
        // address (each ≤ stun_max_rto, 3 s), peer_move_after, then SCTP's next retransmission,
        // backed off during the outage (1, 2, 4, 8 s …) and lossy itself. 300 cases: median
        // 3.0 s (rebinding) / 1.2 s (move), 90 % within 7.0 / 6.3 s, slowest 14.7 s.
        prop_assert!(stall < Duration::from_secs(20), "delivery stalled {stall:?}");
        if std::env::var_os("RTCMESH_PRINT_STALLS").is_some() {
            println!("stall {:.2} s (rebind {rebind}, loss {:.3}, latency {} ms)", stall.as_secs_f64(), faults.loss, faults.latency_ms);
        }
    }
}

/// One step of a random client/server game.
#[derive(Debug, Clone)]
enum GameOp {
    /// Node `from` sends a reliable packet to `target` (0: all, 1: peer `k`, 2: all but `k`).
    Send { from: usize, target: u8, k: usize },
    /// Time passes.
    Wait { ms: u64 },
    /// Client `client` is cut off from the server for `ms`, then the cut heals.
    Cut { client: usize, ms: u64 },
}

fn game_op() -> impl Strategy<Value = GameOp> {
    prop_oneof![
        8 => (0usize..6, 0u8..3, 0usize..6).prop_map(|(from, target, k)| GameOp::Send { from, target, k }),
        3 => (1u64..300).prop_map(|ms| GameOp::Wait { ms }),
        1 => (0usize..5, 100u64..1500).prop_map(|(client, ms)| GameOp::Cut { client, ms }),
    ]
}

/// The multiplayer layer's promise on a faulty network: in a client/server game (relay on),
/// every reliable `send_bytes` reaches exactly the peers its target names, once each, in the
/// order each sender sent them, with the true sender's id, whether it went straight to the
/// server or through it to another client; cuts that heal within the timeouts lose nobody.
fn check_game(
    size: usize,
    faults: Faults,
    seed: u64,
    ops: Vec<GameOp>,
) -> Result<(), TestCaseError> {
    let mesh = MeshConfig::default()
        .with_peer_timeout(Duration::from_secs(10))
        .with_disconnect_grace(Duration::from_secs(6))
        .with_stun_max_rto(Duration::from_secs(1));
    let clients: Vec<PeerId> = (0..size as PeerId - 1).map(|k| 10 + 7 * k).collect();
    let mut w = World::game_with_seed(seed, &clients, &mesh, &MultiplayerConfig::default());
    w.set_all_links(faults.conditions());
    for n in 1..size {
        w.introduce_to_server(n);
    }
    prop_assert!(
        w.run_until(mesh.connect_timeout, World::everyone_admitted),
        "the game did not start"
    );
    let ids: Vec<PeerId> = (0..size).map(|n| w.id(n)).collect();
    let marks: Vec<usize> = w.nodes.iter().map(|n| n.event_count()).collect();
    // (receiver node, sender id) -> the sender's sequence numbers, in sending order.
    let mut expected: BTreeMap<(usize, PeerId), Vec<u32>> = BTreeMap::new();
    let mut seq = 0u32;
    for op in ops {
        match op {
            GameOp::Send { from, target, k } => {
                let (from, k) = (from % size, k % size);
                let target = match target {
                    0 => Target::All,
                    1 if k != from => Target::Peer(ids[k]),
                    1 => continue,
                    _ => Target::AllExcept(ids[k]),
                };
                seq += 1;
                let data = payload(ids[from], 0, seq, 64);
                w.tick();
                w.nodes[from]
                    .mp_mut()
                    .send_bytes(target, TransferMode::Reliable, 0, &data)
                    .expect("send_bytes");
                w.drain(from);
                for to in (0..size).filter(|&to| to != from) {
                    let wanted = match target {
                        Target::All => true,
                        Target::Peer(p) => p == ids[to],
                        Target::AllExcept(p) => p != ids[to],
                    };
                    if wanted {
                        expected.entry((to, ids[from])).or_default().push(seq);
                    }
                }
            }
            GameOp::Wait { ms } => w.run_for(Duration::from_millis(ms)),
            GameOp::Cut { client, ms } => {
                let client = 1 + client % (size - 1);
                w.partition(0, client, true);
                w.run_for(Duration::from_millis(ms));
                w.partition(0, client, false);
            }
        }
    }
    let delivered = |w: &World| {
        expected.iter().all(|(&(to, from), seqs)| {
            w.nodes[to]
                .packets_since(marks[to])
                .iter()
                .filter(|p| p.from == from)
                .count()
                >= seqs.len()
        })
    };
    // SCTP's backed-off retransmissions on a lossy path, twice (to the server, then on).
    prop_assert!(
        w.run_until(Duration::from_secs(200), delivered),
        "not everything arrived"
    );
    w.run_for(Duration::from_secs(2));
    for to in 0..size {
        let mut got: BTreeMap<PeerId, Vec<u32>> = BTreeMap::new();
        for p in w.nodes[to].packets_since(marks[to]) {
            let (sender, _, seq) = decode(&p.data).expect("a payload of this test");
            prop_assert_eq!(sender, p.from, "the true sender at node {}", to);
            got.entry(p.from).or_default().push(seq);
        }
        for from in ids.iter().copied().filter(|&id| id != ids[to]) {
            let want = expected.get(&(to, from)).cloned().unwrap_or_default();
            let have = got.remove(&from).unwrap_or_default();
            prop_assert_eq!(have, want, "node {} from {}", to, from);
        }
        prop_assert!(
            got.is_empty(),
            "node {} got packets from nowhere: {:?}",
            to,
            got
        );
        // From the game's start: a handshake retry while joining may report a peer that
        // connected on the answering side only as disconnected, then connected again
        // (`MeshConfig::connect_retry_interval`); that loses no game data.
        prop_assert!(
            w.nodes[to].disconnected_since(marks[to]).is_empty(),
            "node {} lost {:?}",
            to,
            w.nodes[to].disconnected_since(marks[to])
        );
    }
    prop_assert!(w.everyone_admitted());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 32, ..ProptestConfig::default() })]

    #[test]
    fn a_relayed_game_on_a_faulty_network_delivers_every_reliable_packet_once_in_order(
        size in 2usize..=5,
        faults in faults(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(game_op(), 1..40),
    ) {
        check_game(size, faults, seed, ops)?;
    }
}

/// Regression, found by the partition property (seed below): on a 5-peer mesh with 5.5 % random
/// loss, pair 1–3 lost SCTP's INIT-ACK, then the retransmitted INIT, then the INIT-ACK again.
/// SCTP retransmits its handshake from a 3 s RTO that doubles (3 s, 9 s, 21 s after the first
/// INIT), so the channels could not open before `connect_timeout` (20 s) and the pair was
/// removed: the mesh never converged. Fixed by SNAP (the INIT travels in the SDP): the mesh
/// now converges within a few seconds.
#[test]
fn lossy_handshake_converges() {
    let faults = Faults::lossy(0.055_124_37, 1, 1);
    let config = MeshConfig::default()
        .with_peer_timeout(Duration::from_secs(3))
        .with_stun_max_rto(Duration::from_secs(1));
    let mut w = World::with_seed(9_879_946_467_594_467_489);
    for id in 1..=5 {
        w.add(rtcmesh::Mesh::create_mesh(id, config.clone()).unwrap());
    }
    w.set_all_links(faults.conditions());
    w.introduce_all();
    assert!(
        w.run_until(config.connect_timeout, World::fully_connected),
        "lossy mesh did not converge within connect_timeout"
    );
    w.run_for(Duration::from_secs(30));
    assert!(w.fully_connected(), "a pair was lost after converging");
    for node in &w.nodes {
        assert!(node.disconnected().is_empty());
        assert_eq!(node.connected().len(), 4);
    }
}

/// Regression, found by running the convergence check over thousands of seeds once SNAP was on:
/// about 1 in 1,000 five-peer meshes at 8 % loss (1 in 45 at 15 %) still did not converge. DTLS's
/// final flight (the server's ChangeCipherSpec + Finished) was lost three times; the DTLS server
/// (dimpl 0.9) answers a retransmitted client flight at most once per its own, doubling
/// retransmission timeout, so the client's next retransmission went unanswered, the one after
/// was lost, and the next was due after `connect_timeout`. Fixed by starting a stalled
/// handshake over (`connect_retry_interval`). 100 seeded meshes at 15 % loss must all converge
/// within `connect_timeout`; without the retry, about 9 runs in 10 fail here.
#[test]
fn stalled_handshakes_are_retried_until_lossy_meshes_converge() {
    let config = MeshConfig::default();
    let mut retries = 0;
    for seed in 0..100u64 {
        let faults = Faults::lossy(0.15, 1 + seed % 40, seed % 15);
        let mut w = World::with_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for id in 1..=5 {
            w.add(rtcmesh::Mesh::create_mesh(id, config.clone()).unwrap());
        }
        w.set_all_links(faults.conditions());
        w.introduce_all();
        assert!(
            w.run_until(config.connect_timeout, World::fully_connected),
            "seed {seed}: lossy mesh did not converge within connect_timeout"
        );
        retries += w
            .nodes
            .iter()
            .map(|n| n.mesh().stats().connect_retries)
            .sum::<u64>();
    }
    assert!(retries > 0, "the retry path was exercised");
}
