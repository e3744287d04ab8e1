//! Latency under loss (`bench latency`, `bench latency quick`): game traffic between two peers
//! on the simulated network (fake clock, `str0m-netem` links with seeded loss), rtcmesh against
//! two raw `str0m::Rtc` with the same channels and the same traffic, driven the same way.
//!
//! Every figure is in simulated time, so the machine's load does not change it. Each profile
//! runs several seeds (the network's loss pattern; str0m's own randomness is not seedable);
//! percentiles pool every seed's messages, and the per-seed p99 gives the median and spread.
//! With `explain`, sctp-proto's trace log (the `log` crate) is read during the runs and every
//! late reliable message is attributed to the recovery that delivered it (see [`explain`]).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtcmesh::str0m::change::{SdpAnswer, SdpOffer};
use rtcmesh::str0m::channel::{ChannelConfig, ChannelId, Reliability};
use rtcmesh::str0m::net::{Protocol, Receive};
use rtcmesh::str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};
use rtcmesh::{Event, Mesh, PeerId, Target, TransferMode};
use str0m_netem::{
    GilbertElliot, Input as NetInput, Netem, NetemConfig, Output as NetOutput, Probability,
    RandomLoss,
};

use super::{addr, godot_channels, median_spread, mesh_pair, raw_config, Net};

// ---------------------------------------------------------------------------------------------
// The traffic: what a small real-time game sends each way.

/// One stream of game messages in one direction.
struct Flow {
    name: &'static str,
    mode: TransferMode,
    /// Godot's transfer channel: 0 for the mode's default channel, `k` for extra channel `k`.
    channel: u16,
    /// Messages per second.
    hz: u32,
    /// Message sizes, uniformly drawn (then nudged so `size % 8` is the flow's index, which is
    /// how [`explain`] tells flows apart in sctp-proto's log, which names no stream).
    min: usize,
    max: usize,
}

const FLOWS: [Flow; 5] = [
    Flow {
        name: "events",
        mode: TransferMode::Reliable,
        channel: 0,
        hz: 20,
        min: 50,
        max: 150,
    },
    Flow {
        name: "inputs",
        mode: TransferMode::Reliable,
        channel: 1,
        hz: 60,
        min: 50,
        max: 100,
    },
    Flow {
        name: "state",
        mode: TransferMode::Reliable,
        channel: 2,
        hz: 10,
        min: 100,
        max: 300,
    },
    Flow {
        name: "positions",
        mode: TransferMode::Unreliable,
        channel: 0,
        hz: 60,
        min: 100,
        max: 300,
    },
    Flow {
        name: "animation",
        mode: TransferMode::UnreliableOrdered,
        channel: 0,
        hz: 30,
        min: 50,
        max: 200,
    },
];

/// The extra channels the flows use (Godot's `channels_config`): two reliable ones.
fn extra_channels() -> Vec<TransferMode> {
    vec![TransferMode::Reliable, TransferMode::Reliable]
}

/// The index of a flow's channel in Godot's layout (0–2 defaults, then the extras).
fn channel_index(flow: &Flow) -> usize {
    match (flow.channel, flow.mode) {
        (0, TransferMode::Reliable) => 0,
        (0, TransferMode::UnreliableOrdered) => 1,
        (0, TransferMode::Unreliable) => 2,
        (k, _) => 2 + usize::from(k),
    }
}

/// A small deterministic generator (splitmix64) for sizes and phases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Message `seq` of flow `f`: `[f, seq (4 bytes LE), padding]`, its size ≡ f (mod 8).
fn message(rng: &mut Rng, f: usize, seq: u32) -> Vec<u8> {
    let flow = &FLOWS[f];
    let mut size = flow.min + rng.below((flow.max - flow.min + 1) as u64) as usize;
    size = size - size % 8 + f;
    if size < flow.min {
        size += 8;
    }
    let mut data = vec![0x5au8; size];
    data[0] = f as u8;
    data[1..5].copy_from_slice(&seq.to_le_bytes());
    data
}

// ---------------------------------------------------------------------------------------------
// The network profiles.

#[derive(Clone, Copy)]
enum Loss {
    Random(f32),
    /// Gilbert–Elliott: bursts of `bad` packets lost on average, every `good` packets.
    Bursty {
        good: f32,
        bad: f32,
    },
}

#[derive(Clone, Copy)]
struct Profile {
    name: &'static str,
    one_way: Duration,
    jitter: Duration,
    loss: Loss,
}

impl Profile {
    fn netem(&self, seed: u64) -> NetemConfig {
        let config = NetemConfig::new()
            .latency(self.one_way)
            .jitter(self.jitter)
            .seed(seed);
        match self.loss {
            Loss::Random(0.0) => config,
            Loss::Random(p) => config.loss(RandomLoss::new(Probability::new(p))),
            Loss::Bursty { good, bad } => config.loss(
                GilbertElliot::new()
                    .good_duration(good)
                    .bad_duration(bad)
                    .loss_in_bad(Probability::ONE),
            ),
        }
    }
}

fn profiles() -> Vec<Profile> {
    let ms = Duration::from_millis;
    let p = |name, one_way, jitter, loss| Profile {
        name,
        one_way: ms(one_way),
        jitter: ms(jitter),
        loss,
    };
    vec![
        p("20 ± 5 ms, no loss", 20, 5, Loss::Random(0.0)),
        p("20 ± 5 ms, 1 %", 20, 5, Loss::Random(0.01)),
        p("20 ± 5 ms, 3 %", 20, 5, Loss::Random(0.03)),
        p("20 ± 5 ms, 5 %", 20, 5, Loss::Random(0.05)),
        // ≈ 3 %: bursts of 2 packets every 66 (Wi-Fi-like).
        p(
            "20 ± 5 ms, 3 % in bursts of 2",
            20,
            5,
            Loss::Bursty {
                good: 64.0,
                bad: 2.0,
            },
        ),
        p("50 ± 5 ms (100 ms RTT), 3 %", 50, 5, Loss::Random(0.03)),
    ]
}

// ---------------------------------------------------------------------------------------------
// The two stacks behind one interface.

/// One peer as the benchmark drives it: an application loop's calls, in the same order for
/// both stacks (datagrams in, the clock, the game's sends, then everything out).
trait Peer {
    fn address(&self) -> SocketAddr;
    fn receive(&mut self, now: Instant, source: SocketAddr, data: &[u8]);
    fn tick(&mut self, now: Instant);
    /// `false`: no room now (the caller keeps the message and tries again next turn).
    fn send(&mut self, flow: &Flow, data: &[u8]) -> bool;
    /// Drains datagrams to send and payloads delivered.
    fn poll(&mut self, transmits: &mut Vec<Vec<u8>>, delivered: &mut Vec<Vec<u8>>);
    fn next_timeout(&self) -> Option<Instant>;
    fn connected(&self) -> bool;
}

struct MeshPeer {
    mesh: Mesh,
    peer: PeerId,
    address: SocketAddr,
}

impl Peer for MeshPeer {
    fn address(&self) -> SocketAddr {
        self.address
    }
    fn receive(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        self.mesh.handle_datagram(now, source, self.address, data);
    }
    fn tick(&mut self, now: Instant) {
        self.mesh.handle_timeout(now);
    }
    fn send(&mut self, flow: &Flow, data: &[u8]) -> bool {
        self.mesh
            .send(Target::Peer(self.peer), flow.mode, flow.channel, data)
            .is_ok()
    }
    fn poll(&mut self, transmits: &mut Vec<Vec<u8>>, delivered: &mut Vec<Vec<u8>>) {
        while let Some(t) = self.mesh.poll_transmit() {
            transmits.push(t.contents);
        }
        while let Some(e) = self.mesh.poll_event() {
            if let Event::Packet(p) = e {
                delivered.push(p.data);
            }
        }
    }
    fn next_timeout(&self) -> Option<Instant> {
        self.mesh.poll_timeout()
    }
    fn connected(&self) -> bool {
        self.mesh.connected_peers().any(|p| p == self.peer)
    }
}

/// str0m as rtcmesh configures it (same MTU, STUN timing, certificate), with str0m's default
/// 128 KiB SCTP buffer and the same five channels; writes that find no room wait in the
/// benchmark, as they wait in rtcmesh's queue.
struct RawPeer {
    rtc: Rtc,
    address: SocketAddr,
    channels: Vec<ChannelId>,
    open: usize,
    timeout: Option<Instant>,
    transmits: Vec<Vec<u8>>,
    delivered: Vec<Vec<u8>>,
}

/// The raw side's channels: Godot's three, then the two reliable extras (SCTP ids 4 and 5,
/// labelled as rtcmesh labels them).
fn raw_channels() -> Vec<ChannelConfig> {
    let mut channels = godot_channels().to_vec();
    for id in [4u16, 5] {
        channels.push(ChannelConfig {
            label: id.to_string(),
            ordered: true,
            reliability: Reliability::Reliable,
            negotiated: Some(id),
            protocol: String::new(),
        });
    }
    channels
}

impl RawPeer {
    fn new(now: Instant, n: u32) -> RawPeer {
        let mut rtc = raw_config(128 * 1024).build(now);
        rtc.add_local_candidate(Candidate::host(addr(n), "udp").expect("candidate"));
        RawPeer {
            rtc,
            address: addr(n),
            channels: Vec::new(),
            open: 0,
            timeout: None,
            transmits: Vec::new(),
            delivered: Vec::new(),
        }
    }
    fn drive(&mut self) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => self.transmits.push(t.contents.to_vec()),
                Ok(Output::Timeout(t)) => {
                    self.timeout = Some(t);
                    return;
                }
                Ok(Output::Event(RtcEvent::ChannelOpen(..))) => self.open += 1,
                Ok(Output::Event(RtcEvent::ChannelData(d))) => self.delivered.push(d.data),
                Ok(Output::Event(_)) => {}
                Err(e) => panic!("raw rtc: {e}"),
            }
        }
    }
}

impl Peer for RawPeer {
    fn address(&self) -> SocketAddr {
        self.address
    }
    fn receive(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        let r = Receive::new(Protocol::Udp, source, self.address, data).expect("datagram");
        self.rtc
            .handle_input(Input::Receive(now, r))
            .expect("receive");
    }
    fn tick(&mut self, now: Instant) {
        self.rtc.handle_input(Input::Timeout(now)).expect("timeout");
    }
    fn send(&mut self, flow: &Flow, data: &[u8]) -> bool {
        let Some(&id) = self.channels.get(channel_index(flow)) else {
            return false;
        };
        self.rtc
            .channel(id)
            .is_some_and(|mut c| c.write(true, data).unwrap_or(false))
    }
    fn poll(&mut self, transmits: &mut Vec<Vec<u8>>, delivered: &mut Vec<Vec<u8>>) {
        self.drive();
        transmits.append(&mut self.transmits);
        delivered.append(&mut self.delivered);
    }
    fn next_timeout(&self) -> Option<Instant> {
        self.timeout
    }
    fn connected(&self) -> bool {
        self.open == self.channels.len() && !self.channels.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stack {
    /// rtcmesh as shipped: its own retransmission carries the reliable channels.
    Rtcmesh,
    /// rtcmesh with `own_retransmission` off: SCTP retransmits, as for a browser peer.
    RtcmeshSctp,
    Raw,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::Rtcmesh => "rtcmesh",
            Stack::RtcmeshSctp => "rtcmesh, own retransmission off",
            Stack::Raw => "raw str0m",
        }
    }
    /// `stacks=raw,sctp,own` on the command line picks some.
    fn chosen() -> Vec<Stack> {
        let all = [Stack::Raw, Stack::RtcmeshSctp, Stack::Rtcmesh];
        let Some(list) =
            std::env::args().find_map(|a| a.strip_prefix("stacks=").map(str::to_owned))
        else {
            return all.to_vec();
        };
        all.into_iter()
            .filter(|s| {
                let key = match s {
                    Stack::Raw => "raw",
                    Stack::RtcmeshSctp => "sctp",
                    Stack::Rtcmesh => "own",
                };
                list.split(',').any(|k| k == key)
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated network: one emulator per direction.

struct Sim {
    peers: [Box<dyn Peer>; 2],
    /// `wires[d]` carries what peer `d` sends.
    wires: [Netem<Vec<u8>>; 2],
    now: Instant,
    datagrams: [u64; 2],
}

impl Sim {
    fn new(peers: [Box<dyn Peer>; 2], now: Instant, config: NetemConfig) -> Sim {
        Sim {
            peers,
            wires: [Netem::new(config.seed(1)), Netem::new(config.seed(2))],
            now,
            datagrams: [0; 2],
        }
    }

    fn set_conditions(&mut self, config: NetemConfig, seed: u64) {
        for (d, wire) in self.wires.iter_mut().enumerate() {
            wire.set_config(config.seed(seed.wrapping_mul(2).wrapping_add(d as u64)));
        }
    }

    /// One turn at `self.now`: arrivals, timers, then `send` (the game's writes), then
    /// everything out. Returns the payloads each peer delivered.
    fn turn(&mut self, send: &mut dyn FnMut(usize, &mut dyn Peer)) -> [Vec<Vec<u8>>; 2] {
        let now = self.now;
        for d in 0..2 {
            let source = self.peers[d].address();
            self.wires[d].handle_input(NetInput::Timeout(now));
            while let Some(out) = self.wires[d].poll_output() {
                if let NetOutput::Packet(data) = out {
                    capture::at(1 - d, now);
                    self.peers[1 - d].receive(now, source, &data);
                }
            }
        }
        let mut delivered: [Vec<Vec<u8>>; 2] = Default::default();
        for (d, delivered) in delivered.iter_mut().enumerate() {
            capture::at(d, now);
            self.peers[d].tick(now);
            send(d, &mut *self.peers[d]);
            let mut transmits = Vec::new();
            self.peers[d].poll(&mut transmits, delivered);
            self.datagrams[d] += transmits.len() as u64;
            for t in transmits {
                self.wires[d].handle_input(NetInput::Packet(now, t));
            }
        }
        capture::idle();
        delivered
    }

    /// The next time anything happens (a datagram arriving, a peer's timer), at or after now.
    fn next_event(&self) -> Option<Instant> {
        let wires = self
            .wires
            .iter()
            .filter(|w| !w.is_empty())
            .map(|w| w.poll_timeout());
        let timers = self.peers.iter().filter_map(|p| p.next_timeout());
        wires.chain(timers).min().map(|t| t.max(self.now))
    }
}

/// Two connected peers of `stack` on a perfect network, ready for traffic.
fn connected(stack: Stack) -> Sim {
    let perfect = NetemConfig::new();
    let mut sim = match stack {
        Stack::Rtcmesh | Stack::RtcmeshSctp => {
            let mut net = Net::new(Duration::ZERO);
            let config = super::mesh_config()
                .with_channels(extra_channels())
                .with_own_retransmission(stack == Stack::Rtcmesh);
            let (a, b) = mesh_pair(&mut net, &config);
            let wrap = |side: super::MeshSide| -> Box<dyn Peer> {
                Box::new(MeshPeer {
                    mesh: side.mesh,
                    peer: side.peer,
                    address: side.address,
                })
            };
            Sim::new([wrap(a), wrap(b)], net.now, perfect)
        }
        Stack::Raw => {
            let now = Instant::now();
            let (mut a, mut b) = (RawPeer::new(now, 1), RawPeer::new(now, 2));
            a.rtc
                .add_remote_candidate(Candidate::host(addr(2), "udp").expect("c"));
            b.rtc
                .add_remote_candidate(Candidate::host(addr(1), "udp").expect("c"));
            let mut api = a.rtc.sdp_api();
            a.channels = raw_channels()
                .into_iter()
                .map(|c| api.add_channel_with_config(c))
                .collect();
            let (offer, pending) = api.apply().expect("offer");
            let offer = SdpOffer::from_sdp_string(&offer.to_sdp_string()).expect("sdp");
            let answer = b.rtc.sdp_api().accept_offer(offer).expect("accept");
            let mut direct = b.rtc.direct_api();
            b.channels = raw_channels()
                .into_iter()
                .map(|c| direct.create_data_channel(c))
                .collect();
            let answer = SdpAnswer::from_sdp_string(&answer.to_sdp_string()).expect("sdp");
            a.rtc
                .sdp_api()
                .accept_answer(pending, answer)
                .expect("answer");
            Sim::new([Box::new(a), Box::new(b)], now, perfect)
        }
    };
    for _ in 0..100_000 {
        if sim.peers.iter().all(|p| p.connected()) {
            return sim;
        }
        sim.turn(&mut |_, _| {});
        sim.now = sim
            .next_event()
            .unwrap_or(sim.now + Duration::from_millis(1));
    }
    panic!("{} pair did not connect", stack.name());
}

// ---------------------------------------------------------------------------------------------
// One run: traffic both ways for a while, every message's fate recorded.

/// What happened to the messages of one flow in one direction.
#[derive(Default)]
struct FlowLog {
    sent: Vec<Instant>,
    delivered: Vec<Option<Instant>>,
}

/// The result of one run: `flows[d][f]` is flow `f` sent by peer `d`.
struct RunLog {
    flows: [Vec<FlowLog>; 2],
    /// Messages measured from here (after the warm-up).
    measured_from: Instant,
    measured: Duration,
    datagrams: u64,
    /// sctp-proto's trace, when captured.
    trace: Option<capture::Trace>,
}

/// Traffic starts this long after connecting and is not counted until then (SCTP's first RTO
/// is 3 s until it has a round trip; the first seconds of a match are not the steady state).
const WARM_UP: Duration = Duration::from_secs(2);
/// After the traffic stops, how long the run waits for the last reliable messages.
const DRAIN: Duration = Duration::from_secs(120);

fn run(stack: Stack, profile: &Profile, seed: u64, minutes: f64, trace: bool) -> RunLog {
    let mut sim = connected(stack);
    sim.set_conditions(profile.netem(seed), seed);
    if trace {
        capture::start();
    }
    let start = sim.now;
    let measured_from = start + WARM_UP;
    let stop = measured_from + Duration::from_secs_f64(minutes * 60.0);
    let mut rng = Rng(seed ^ 0xA5A5_5A5A);
    let mut flows: [Vec<FlowLog>; 2] =
        std::array::from_fn(|_| (0..FLOWS.len()).map(|_| FlowLog::default()).collect());
    // Each flow ticks at its rate from a random phase.
    let mut next: [Vec<Instant>; 2] = std::array::from_fn(|_| {
        FLOWS
            .iter()
            .map(|f| {
                let period = 1_000_000 / u64::from(f.hz);
                start + Duration::from_micros(rng.below(period))
            })
            .collect()
    });
    // Messages the stack had no room for yet, per direction, oldest first.
    let mut backlog: [VecDeque<(usize, Vec<u8>)>; 2] = Default::default();
    let limit = stop + DRAIN;
    let mut steps = 0u64;
    loop {
        steps += 1;
        assert!(steps < 200_000_000, "latency run did not end");
        let now = sim.now;
        let sending = now < stop;
        let mut send = |d: usize, peer: &mut dyn Peer| {
            while let Some((f, data)) = backlog[d].front() {
                if !peer.send(&FLOWS[*f], data) {
                    return;
                }
                backlog[d].pop_front();
            }
            if !sending {
                return;
            }
            for (f, flow) in FLOWS.iter().enumerate() {
                while next[d][f] <= now {
                    let log = &mut flows[d][f];
                    let seq = log.sent.len() as u32;
                    let data = message(&mut rng, f, seq);
                    log.sent.push(now);
                    log.delivered.push(None);
                    if !backlog[d].is_empty() || !peer.send(flow, &data) {
                        backlog[d].push_back((f, data));
                    }
                    next[d][f] += Duration::from_micros(1_000_000 / u64::from(flow.hz));
                }
            }
        };
        let delivered = sim.turn(&mut send);
        for (d, payloads) in delivered.into_iter().enumerate() {
            // Peer `d` received these: they were sent by the other.
            for p in payloads {
                let f = usize::from(p[0]);
                let seq = u32::from_le_bytes(p[1..5].try_into().expect("4 bytes")) as usize;
                let slot = &mut flows[1 - d][f].delivered[seq];
                assert!(slot.is_none(), "message delivered twice");
                *slot = Some(now);
            }
        }
        if now >= stop {
            let all_reliable =
                flows
                    .iter()
                    .flatten()
                    .zip(FLOWS.iter().cycle())
                    .all(|(log, flow)| {
                        flow.mode != TransferMode::Reliable
                            || log.delivered.iter().all(Option::is_some)
                    });
            if all_reliable && backlog.iter().all(VecDeque::is_empty) || now >= limit {
                break;
            }
        }
        let sends = if sending {
            next.iter().flatten().min().copied()
        } else {
            None
        };
        let Some(at) = sim.next_event().into_iter().chain(sends).min() else {
            break;
        };
        sim.now = at.max(now);
        if sim.now == now {
            // Something wants this instant again (a dirty link): let it, but move on after.
            sim.now = now + Duration::from_micros(1);
        }
    }
    let trace = trace.then(capture::stop);
    RunLog {
        flows,
        measured_from,
        measured: stop - measured_from,
        datagrams: sim.datagrams.iter().sum(),
        trace,
    }
}

// ---------------------------------------------------------------------------------------------
// Figures.

/// Reliable-message figures of one or more runs.
#[derive(Default)]
struct Figures {
    /// Every measured reliable message's latency (undelivered ones are left out and counted).
    latencies: Vec<Duration>,
    undelivered: usize,
    stalls_250: usize,
    stalls_1s: usize,
    minutes: f64,
    /// Unreliable flows: (sent, delivered).
    unreliable: (usize, usize),
    unreliable_latencies: Vec<Duration>,
    datagrams: u64,
    /// Messages sent (both directions, every flow) in the measured period.
    messages: usize,
}

/// A stall is a run of consecutive messages of one flow each later than `limit` (one loss
/// holds up everything behind it on an ordered channel: that is one stall, not many).
fn stalls(latencies: &[Option<Duration>], limit: Duration) -> usize {
    let mut count = 0;
    let mut inside = false;
    for l in latencies {
        let late = l.is_none_or(|l| l > limit);
        if late && !inside {
            count += 1;
        }
        inside = late;
    }
    count
}

impl Figures {
    fn add(&mut self, log: &RunLog) {
        self.minutes += log.measured.as_secs_f64() / 60.0;
        self.datagrams += log.datagrams;
        for (f, flow) in FLOWS.iter().enumerate() {
            for d in 0..2 {
                let fl = &log.flows[d][f];
                let measured: Vec<Option<Duration>> = fl
                    .sent
                    .iter()
                    .zip(&fl.delivered)
                    .filter(|(s, _)| **s >= log.measured_from)
                    .map(|(s, r)| r.map(|r| r - *s))
                    .collect();
                self.messages += measured.len();
                if flow.mode == TransferMode::Reliable {
                    self.undelivered += measured.iter().filter(|l| l.is_none()).count();
                    self.latencies.extend(measured.iter().flatten());
                    self.stalls_250 += stalls(&measured, Duration::from_millis(250));
                    self.stalls_1s += stalls(&measured, Duration::from_secs(1));
                } else {
                    self.unreliable.0 += measured.len();
                    self.unreliable.1 += measured.iter().flatten().count();
                    self.unreliable_latencies.extend(measured.iter().flatten());
                }
            }
        }
    }
}

/// The `q` quantile (0..=1) of sorted values.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// One stack on one profile: every seed's run, pooled, plus the per-seed p99s.
struct Measured {
    pooled: Figures,
    p99s: Vec<f64>,
    traces: Vec<(RunLog, Figures)>,
}

fn measure(stack: Stack, profile: &Profile, seeds: u64, minutes: f64, trace: bool) -> Measured {
    let mut pooled = Figures::default();
    let mut p99s = Vec::new();
    let mut traces = Vec::new();
    for seed in 1..=seeds {
        let log = run(stack, profile, seed, minutes, trace);
        let mut one = Figures::default();
        one.add(&log);
        one.latencies.sort();
        p99s.push(quantile(&one.latencies, 0.99).as_secs_f64() * 1e3);
        pooled.add(&log);
        if trace {
            traces.push((log, one));
        }
    }
    pooled.latencies.sort();
    pooled.unreliable_latencies.sort();
    Measured {
        pooled,
        p99s,
        traces,
    }
}

/// `bench latency`: the latency-under-loss table, rtcmesh against raw str0m; with `explain`,
/// the cause of every late message from sctp-proto's trace. Returns rtcmesh's reliable p99 and
/// p99.9 (ms) on the 20 ± 5 ms, 3 % profile.
pub fn run_all(quick: bool, explain_late: bool) -> (f64, f64) {
    let (seeds, minutes) = if quick { (3, 1.0) } else { (5, 10.0) };
    // `seeds=<n>` and `minutes=<m>` override both (for experiments).
    let arg = |key: &str| {
        std::env::args().find_map(|a| a.strip_prefix(key).and_then(|v| v.parse::<f64>().ok()))
    };
    let seeds = arg("seeds=").map_or(seeds, |s| s as u64);
    let minutes = arg("minutes=").unwrap_or(minutes);
    println!(
        "\n## Latency under loss: game traffic on the simulated network, rtcmesh vs raw str0m"
    );
    println!(
        "Two peers, each sending {} flows at once: {}. Sizes uniform in each range; ticks from a random phase. \
         Links: `str0m-netem` one per direction (latency ± uniform jitter, in send order), random or bursty loss, seeded. \
         Both stacks get the same traffic and the same loss seeds, and are driven the same way (datagrams in, timers, the game's sends, everything out). \
         {seeds} seeds × {minutes} simulated minutes per profile and stack, after a {} s warm-up; \
         percentiles pool every seed's reliable messages (both directions); \"p99 per seed\" is the median of the seeds' p99 and its spread ((max − min) ÷ median). \
         A stall is a run of consecutive messages of one reliable flow, each later than the limit; per minute of the pair's traffic ({} reliable flows).",
        FLOWS.len(),
        FLOWS
            .iter()
            .map(|f| format!("{} ({:?}, channel {}, {} Hz, {}–{} B)", f.name, f.mode, f.channel, f.hz, f.min, f.max))
            .collect::<Vec<_>>()
            .join(", "),
        WARM_UP.as_secs(),
        2 * FLOWS.iter().filter(|f| f.mode == TransferMode::Reliable).count(),
    );
    println!("\n| profile | stack | reliable p50 | p99 | p99.9 | max (ms) | p99 per seed: median (spread) | stalls > 250 ms /min | > 1 s /min | undelivered | unreliable delivered | unreliable p99 | datagrams /s |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut target = (f64::NAN, f64::NAN);
    let mut explained = Vec::new();
    // `case=<text>`: only the profiles whose name (spaces removed) contains it.
    let case = std::env::args().find_map(|a| a.strip_prefix("case=").map(str::to_owned));
    let squeeze = |s: &str| s.replace(' ', "");
    for profile in profiles().into_iter().filter(|p| {
        case.as_ref()
            .is_none_or(|c| squeeze(p.name).contains(&squeeze(c)))
    }) {
        let mut rows = Vec::new();
        for stack in Stack::chosen() {
            // sctp-proto's trace explains SCTP's recoveries: those of the stacks where SCTP
            // retransmits the reliable channels.
            let trace = explain_late && stack != Stack::Rtcmesh;
            let m = measure(stack, &profile, seeds, minutes, trace);

            let f = &m.pooled;
            let mut p99s = m.p99s.clone();
            let (median, spread) = median_spread(&mut p99s);
            println!(
                "| {} | {} | {} | **{}** | **{}** | {} | {median:.0} ({:.0} %) | {:.2} | {:.2} | {} | {:.1} % | {} | {:.0} |",
                profile.name,
                stack.name(),
                ms(quantile(&f.latencies, 0.5)),
                ms(quantile(&f.latencies, 0.99)),
                ms(quantile(&f.latencies, 0.999)),
                ms(quantile(&f.latencies, 1.0)),
                spread * 100.0,
                f.stalls_250 as f64 / f.minutes,
                f.stalls_1s as f64 / f.minutes,
                f.undelivered,
                f.unreliable.1 as f64 * 100.0 / f.unreliable.0.max(1) as f64,
                ms(quantile(&f.unreliable_latencies, 0.99)),
                f.datagrams as f64 / (f.minutes * 60.0),
            );
            if stack == Stack::Rtcmesh && profile.name == "20 ± 5 ms, 3 %" {
                target = (
                    quantile(&f.latencies, 0.99).as_secs_f64() * 1e3,
                    quantile(&f.latencies, 0.999).as_secs_f64() * 1e3,
                );
            }
            rows.push((stack, m));
        }
        let find = |stack| {
            rows.iter()
                .find(|(s, _)| *s == stack)
                .map(|(_, m)| &m.pooled)
        };
        for (over, label) in [
            (Stack::Raw, "rtcmesh ÷ raw"),
            (Stack::RtcmeshSctp, "rtcmesh ÷ own off"),
        ] {
            let (Some(mesh), Some(base)) = (find(Stack::Rtcmesh), find(over)) else {
                continue;
            };
            let ratio = |q| {
                quantile(&mesh.latencies, q).as_secs_f64()
                    / quantile(&base.latencies, q).as_secs_f64()
            };
            println!(
                "| {} | {label} | {:.2}× | {:.2}× | {:.2}× | {:.2}× | | | | | | | {:.3}× |",
                profile.name,
                ratio(0.5),
                ratio(0.99),
                ratio(0.999),
                ratio(1.0),
                mesh.datagrams as f64 / base.datagrams.max(1) as f64,
            );
        }
        if explain_late {
            explained.push((profile, rows));
        }
    }
    if explain_late {
        explain::report(&explained);
    }
    target
}

// ---------------------------------------------------------------------------------------------
// sctp-proto's trace log, captured per peer on the simulated clock.

mod capture {
    use std::cell::RefCell;
    use std::time::Instant;

    /// What the explanation needs from one trace line of sctp-proto.
    #[derive(Debug, Clone, Copy)]
    pub enum Record {
        /// A DATA chunk's first transmission (`sending ppi=… tsn=… ssn=… len=…`).
        Send { tsn: u32, ssn: u16, len: u32 },
        /// A fast retransmission (`fast-retransmit: tsn=…`).
        Fast { tsn: u32 },
        /// A retransmission after the T3-rtx timer (`retransmitting tsn=…`).
        Timeout { tsn: u32 },
        /// The T3-rtx timer expired (`T3-rtx timed out: …`).
        T3,
        /// The sender entered fast recovery (`updated cwnd=… (FR)`).
        FastRecovery,
        /// The sender left fast recovery (`exit fast-recovery`).
        FastRecoveryEnd,
        /// The delayed-SACK timer fired (`ack timed out`).
        AckTimer,
        /// A DATA chunk arrived (`DATA: tsn=…`), duplicates included.
        Data { tsn: u32 },
    }

    /// Records per peer: (simulated time, record).
    pub type Trace = [Vec<(Instant, Record)>; 2];

    struct Capture {
        peer: usize,
        now: Instant,
        on: bool,
        trace: Trace,
        line: String,
        /// Log statements (file, line) that never say anything the explanation reads.
        useless: std::collections::HashSet<(&'static str, u32)>,
    }

    thread_local! {
        static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
    }

    struct Logger;
    static LOGGER: Logger = Logger;

    impl log::Log for Logger {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.target().starts_with("sctp_proto")
        }
        fn log(&self, record: &log::Record) {
            if !self.enabled(record.metadata()) {
                return;
            }
            CAPTURE.with(|c| {
                let mut c = c.borrow_mut();
                let Some(c) = c.as_mut().filter(|c| c.on) else {
                    return;
                };
                // Each log statement always says the same kind of thing: one that never
                // parsed is not formatted again (most of sctp-proto's trace is other chatter).
                let site = (
                    record.file_static().unwrap_or(""),
                    record.line().unwrap_or(0),
                );
                if c.useless.contains(&site) {
                    return;
                }
                use std::fmt::Write;
                c.line.clear();
                let _ = write!(c.line, "{}", record.args());
                match parse(&c.line) {
                    Some(r) => {
                        let (peer, now) = (c.peer, c.now);
                        c.trace[peer].push((now, r));
                    }
                    None if !c.line.contains("] updated cwnd=") => {
                        c.useless.insert(site);
                    }
                    None => {}
                }
            });
        }
        fn flush(&self) {}
    }

    fn field(line: &str, key: &str) -> Option<u64> {
        let at = line.find(key)? + key.len();
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    fn parse(line: &str) -> Option<Record> {
        let tsn = || field(line, "tsn=").map(|t| t as u32);
        if line.contains("] sending ppi=") {
            Some(Record::Send {
                tsn: tsn()?,
                ssn: field(line, "ssn=")? as u16,
                len: field(line, "len=")? as u32,
            })
        } else if line.contains("] fast-retransmit: ") {
            Some(Record::Fast { tsn: tsn()? })
        } else if line.contains("] retransmitting tsn=") {
            Some(Record::Timeout { tsn: tsn()? })
        } else if line.contains("] T3-rtx timed out:") {
            Some(Record::T3)
        } else if line.contains("] updated cwnd=") && line.ends_with("(FR)") {
            Some(Record::FastRecovery)
        } else if line.contains("] exit fast-recovery") {
            Some(Record::FastRecoveryEnd)
        } else if line.contains("] ack timed out") {
            Some(Record::AckTimer)
        } else if line.contains("] DATA: tsn=") {
            Some(Record::Data { tsn: tsn()? })
        } else {
            None
        }
    }

    /// Starts capturing (installs the logger on first use).
    pub fn start() {
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Trace);
        CAPTURE.with(|c| {
            *c.borrow_mut() = Some(Capture {
                peer: 0,
                now: Instant::now(),
                on: false,
                trace: Default::default(),
                line: String::new(),
                useless: Default::default(),
            })
        });
    }

    /// What follows is peer `peer`'s doing at simulated time `now`.
    pub fn at(peer: usize, now: Instant) {
        CAPTURE.with(|c| {
            if let Some(c) = c.borrow_mut().as_mut() {
                c.peer = peer;
                c.now = now;
                c.on = true;
            }
        });
    }

    /// Between peers' calls: nothing is attributed.
    pub fn idle() {
        CAPTURE.with(|c| {
            if let Some(c) = c.borrow_mut().as_mut() {
                c.on = false;
            }
        });
    }

    /// Stops capturing and returns the trace.
    pub fn stop() -> Trace {
        log::set_max_level(log::LevelFilter::Off);
        CAPTURE.with(|c| c.borrow_mut().take().map(|c| c.trace).unwrap_or_default())
    }
}

// ---------------------------------------------------------------------------------------------
// Why each late message was late.

mod explain {
    use super::capture::Record;
    use super::*;

    /// How the transmission of a message's data that finally got through was sent.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
    pub enum Cause {
        /// Its first transmission arrived, but left the sender late: the congestion window had
        /// been cut to one packet by a T3 timeout.
        HeldAfterTimeout,
        /// Its first transmission arrived, but left the sender late, without a T3 timeout
        /// before it (the window was halved by a fast retransmit, or was full).
        HeldOther,
        /// Recovered by fast retransmit (three gap reports).
        FastRetransmit,
        /// Recovered by the T3-rtx timer after its fast retransmission was lost too
        /// (sctp-proto fast-retransmits a chunk only once).
        TimeoutAfterLostFastRetransmit,
        /// Recovered by the T3-rtx timer without a fast retransmit, lost while the sender was
        /// in fast recovery for an earlier loss: sctp-proto then counts gap reports only from
        /// SACKs that advance the cumulative ack, which this hole itself blocks.
        TimeoutInFastRecovery,
        /// Recovered by the T3-rtx timer without a fast retransmit, outside fast recovery: too
        /// few gap reports reached the sender (a loss at the end of a burst, or lost SACKs).
        TimeoutFewGapReports,
        /// Delivered by a second or later T3 retransmission (the timer backed off).
        RepeatedTimeout,
        /// None of the above (the trace did not show the data's journey).
        Unknown,
    }

    impl Cause {
        fn describe(self) -> &'static str {
            match self {
                Cause::HeldAfterTimeout => "first transmission held in the sender: congestion window at 1 packet after a T3 timeout",
                Cause::HeldOther => "first transmission held in the sender (window halved by a fast retransmit, or full)",
                Cause::FastRetransmit => "fast retransmit (3 gap reports)",
                Cause::TimeoutAfterLostFastRetransmit => "T3 timeout: the fast retransmission was lost too (only one fast retransmit per chunk)",
                Cause::TimeoutInFastRecovery => "T3 timeout: lost during the fast recovery of an earlier loss (no gap reports counted there)",
                Cause::TimeoutFewGapReports => "T3 timeout: fewer than 3 gap reports, outside fast recovery",
                Cause::RepeatedTimeout => "second or later T3 timeout of the same chunk (backed-off timer)",
                Cause::Unknown => "not seen in the trace",
            }
        }
    }

    /// What a sender's congestion control did, in time order.
    #[derive(Default)]
    struct Sender {
        /// Fast recovery periods: (entered, left).
        recoveries: Vec<(Instant, Option<Instant>)>,
        /// T3-rtx expiries.
        timeouts: Vec<Instant>,
    }

    impl Sender {
        fn in_recovery(&self, from: Instant, to: Instant) -> bool {
            self.recoveries
                .iter()
                .any(|&(a, b)| a <= to && b.is_none_or(|b| b >= from))
        }
        /// Whether the last congestion-window cut before `at` (within 10 s) was a T3 expiry.
        fn cut_by_timeout(&self, at: Instant) -> bool {
            let last_t3 = self.timeouts.iter().rev().find(|t| **t <= at);
            let last_fr = self.recoveries.iter().rev().map(|r| r.0).find(|t| *t <= at);
            match (last_t3, last_fr) {
                (Some(t3), fr) => {
                    at - *t3 < Duration::from_secs(10) && fr.is_none_or(|fr| fr <= *t3)
                }
                _ => false,
            }
        }
    }

    /// One reliable message's journey through SCTP.
    #[derive(Default, Clone)]
    struct Journey {
        tsn: Option<u32>,
        /// Transmissions: (time, 0 = first, 1 = fast retransmit, 2 = T3 retransmit).
        sends: Vec<(Instant, u8)>,
        /// First arrival of its DATA chunk at the receiver.
        arrived: Option<Instant>,
    }

    /// Per late message: (latency, cause, blocked behind an earlier message).
    pub struct Late {
        latency: Duration,
        cause: Cause,
        blocked: bool,
    }

    /// Attributes every reliable message of `log` later than `limit`.
    fn classify(log: &RunLog, limit: Duration) -> (Vec<Late>, [u64; 3], usize) {
        let trace = log.trace.as_ref().expect("trace");
        let mut lates = Vec::new();
        let mut counts = [0u64; 3]; // fast retransmits, T3 expiries, delayed-SACK expiries
        let mut mismatches = 0;
        for d in 0..2 {
            // Map the sender's TSNs to (flow, seq): the n-th first transmission of flow f's
            // size class is its message n (SCTP sends a stream's messages in order).
            let mut count = [0usize; FLOWS.len()];
            let mut journeys: Vec<Vec<Journey>> = FLOWS
                .iter()
                .enumerate()
                .map(|(f, _)| vec![Journey::default(); log.flows[d][f].sent.len()])
                .collect();
            let mut by_tsn: HashMap<u32, (usize, usize)> = HashMap::new();
            let mut sender = Sender::default();
            for &(at, r) in &trace[d] {
                match r {
                    Record::FastRecovery => sender.recoveries.push((at, None)),
                    Record::FastRecoveryEnd => {
                        if let Some(last) = sender.recoveries.last_mut() {
                            last.1.get_or_insert(at);
                        }
                    }
                    Record::Send { tsn, ssn, len } => {
                        let f = (len % 8) as usize;
                        if f >= FLOWS.len() || FLOWS[f].mode != TransferMode::Reliable {
                            continue;
                        }
                        let seq = count[f];
                        count[f] += 1;
                        if ssn != seq as u16 {
                            mismatches += 1;
                        }
                        if let Some(j) = journeys[f].get_mut(seq) {
                            j.tsn = Some(tsn);
                            j.sends.push((at, 0));
                            by_tsn.insert(tsn, (f, seq));
                        }
                    }
                    Record::Fast { tsn } => {
                        counts[0] += 1;
                        if let Some(&(f, s)) = by_tsn.get(&tsn) {
                            journeys[f][s].sends.push((at, 1));
                        }
                    }
                    Record::Timeout { tsn } => {
                        if let Some(&(f, s)) = by_tsn.get(&tsn) {
                            journeys[f][s].sends.push((at, 2));
                        }
                    }
                    Record::T3 => {
                        counts[1] += 1;
                        sender.timeouts.push(at);
                    }
                    _ => {}
                }
            }
            for &(at, r) in &trace[1 - d] {
                match r {
                    Record::Data { tsn } => {
                        if let Some(&(f, s)) = by_tsn.get(&tsn) {
                            let j = &mut journeys[f][s];
                            j.arrived.get_or_insert(at);
                        }
                    }
                    Record::AckTimer => counts[2] += 1,
                    _ => {}
                }
            }
            for (f, flow) in FLOWS.iter().enumerate() {
                if flow.mode != TransferMode::Reliable {
                    continue;
                }
                let fl = &log.flows[d][f];
                let js = &journeys[f];
                // The message whose data arrived last among this one and those before it:
                // the one this message's delivery waited for.
                let mut gate: Option<usize> = None;
                for seq in 0..fl.sent.len() {
                    let arrived = js[seq].arrived;
                    let later = match (gate, arrived) {
                        (None, _) => true,
                        (Some(g), Some(a)) => js[g].arrived.is_none_or(|ga| a >= ga),
                        (Some(_), None) => false,
                    };
                    if later {
                        gate = Some(seq);
                    }
                    if fl.sent[seq] < log.measured_from {
                        continue;
                    }
                    let Some(delivered) = fl.delivered[seq] else {
                        continue;
                    };
                    let latency = delivered - fl.sent[seq];
                    if latency <= limit {
                        continue;
                    }
                    let g = gate.unwrap_or(seq);
                    let cause = cause_of(&js[g], fl.sent[g], &sender);
                    lates.push(Late {
                        latency,
                        cause,
                        blocked: g != seq,
                    });
                }
            }
        }
        (lates, counts, mismatches)
    }

    fn cause_of(j: &Journey, app_sent: Instant, sender: &Sender) -> Cause {
        let Some(arrived) = j.arrived else {
            return Cause::Unknown;
        };
        // The transmission that got through: the last one sent before it arrived.
        let sends: Vec<&(Instant, u8)> = j.sends.iter().filter(|(t, _)| *t <= arrived).collect();
        let (Some(&&(first, _)), Some(&&(last, kind))) = (sends.first(), sends.last()) else {
            return Cause::Unknown;
        };
        let fast = sends.iter().any(|(_, k)| *k == 1);
        let timeouts = sends.iter().filter(|(_, k)| *k == 2).count();
        let first_timeout = sends
            .iter()
            .find(|(_, k)| *k == 2)
            .map_or(last, |(t, _)| *t);
        match kind {
            0 if first - app_sent > Duration::from_millis(20) => {
                if sender.cut_by_timeout(first) {
                    Cause::HeldAfterTimeout
                } else {
                    Cause::HeldOther
                }
            }
            0 => Cause::Unknown,
            1 => Cause::FastRetransmit,
            _ if timeouts >= 2 => Cause::RepeatedTimeout,
            _ if fast => Cause::TimeoutAfterLostFastRetransmit,
            _ if sender.in_recovery(first, first_timeout) => Cause::TimeoutInFastRecovery,
            _ => Cause::TimeoutFewGapReports,
        }
    }

    pub fn report(rows: &[(Profile, Vec<(Stack, Measured)>)]) {
        let limit = Duration::from_millis(150);
        println!(
            "\n### Why reliable messages were late (> {} ms), from sctp-proto's trace",
            limit.as_millis()
        );
        println!(
            "Each late message is traced to the message it waited for (itself, or an earlier one on its ordered channel: \"blocked\"), \
             and that message to the transmission of its DATA chunk that arrived: the first one (sent late), a fast retransmit, or a T3 retransmission. \
             Counts over every seed; \"> 1 s\" counts the same messages later than a second; FR / T3 / delayed-SACK expiries per minute of the pair."
        );
        println!("\n| profile | stack | late messages | blocked | cause | share | of them > 400 ms | > 1 s | latency p50 / max (ms) |");
        println!("|---|---|---|---|---|---|---|---|---|");
        let mut counters = Vec::new();
        for (profile, stacks) in rows {
            for (stack, m) in stacks.iter().filter(|(s, _)| *s != Stack::Rtcmesh) {
                let mut all: Vec<Late> = Vec::new();
                let mut totals = [0u64; 3];
                let mut minutes = 0.0;
                let mut mismatches = 0;
                for (log, _) in &m.traces {
                    let (lates, counts, mis) = classify(log, limit);
                    all.extend(lates);
                    for i in 0..3 {
                        totals[i] += counts[i];
                    }
                    minutes += log.measured.as_secs_f64() / 60.0;
                    mismatches += mis;
                }
                counters.push((profile.name, stack.name(), totals, minutes, mismatches));
                let blocked = all.iter().filter(|l| l.blocked).count();
                let mut causes: Vec<Cause> = all.iter().map(|l| l.cause).collect();
                causes.sort();
                causes.dedup();
                if causes.is_empty() {
                    println!("| {} | {} | 0 | | | | | | |", profile.name, stack.name());
                }
                for (i, cause) in causes.into_iter().enumerate() {
                    let mut of: Vec<Duration> = all
                        .iter()
                        .filter(|l| l.cause == cause)
                        .map(|l| l.latency)
                        .collect();
                    of.sort();
                    let over =
                        |t: u64| of.iter().filter(|l| **l > Duration::from_millis(t)).count();
                    println!(
                        "| {} | {} | {} | {} | {} | {:.1} % | {} | {} | {} / {} |",
                        if i == 0 { profile.name } else { "" },
                        if i == 0 { stack.name() } else { "" },
                        if i == 0 {
                            all.len().to_string()
                        } else {
                            String::new()
                        },
                        if i == 0 {
                            blocked.to_string()
                        } else {
                            String::new()
                        },
                        cause.describe(),
                        of.len() as f64 * 100.0 / all.len() as f64,
                        over(400),
                        over(1000),
                        ms(quantile(&of, 0.5)),
                        ms(quantile(&of, 1.0)),
                    );
                }
            }
        }
        println!("\n| profile | stack | fast retransmits /min | T3 expiries /min | delayed-SACK timer expiries /min | TSN map mismatches |");
        println!("|---|---|---|---|---|---|");
        for (profile, stack, t, minutes, mis) in counters {
            println!(
                "| {profile} | {stack} | {:.1} | {:.1} | {:.1} | {mis} |",
                t[0] as f64 / minutes,
                t[1] as f64 / minutes,
                t[2] as f64 / minutes
            );
        }
    }
}
