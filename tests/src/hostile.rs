//! Peers that misbehave on purpose, and a small world to watch a mesh defend itself.
//!
//! An [`Attacker`] is a raw `str0m::Rtc` that negotiates Godot's channel layout with its victim
//! like any peer, then does what a hostile player could: opens data channels outside the layout
//! (in-band, DCEP), writes on SCTP stream ids nobody negotiated, floods candidates (trickled, in
//! its offer, and peer-reflexive ones by replaying a STUN request from new source ports), storms
//! the victim with new offers, and sends messages above the victim's packet size. An attacker
//! is a node of the [`World`] like any other, next to well-behaved [`Mesh`]es (or a
//! [`Multiplayer`](rtcmesh::Multiplayer)), and the world records when each event happened, so
//! tests can check both that a limit held and that well-behaved peers kept delivering with
//! unchanged latency.

use std::any::Any;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use rtcmesh::str0m::channel::{ChannelConfig, ChannelId, Reliability};
use rtcmesh::str0m::net::{Protocol, Receive};
use rtcmesh::str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};
use rtcmesh::{
    Mesh, MeshConfig, OutgoingSignal, PeerId, Signal, SignalError, Target, TransferMode, Transmit,
};

use crate::sim::node::{Commands, Driven, Seen};
use crate::sim::{NodeId, World};

/// A hostile peer: a raw str0m connection with Godot's three default channels, driven by hand.
pub struct Attacker {
    /// The peer id it claims.
    pub id: PeerId,
    /// Its address on the simulated network.
    pub addr: SocketAddr,
    /// The connection (public: tests may do anything str0m allows).
    pub rtc: Rtc,
    /// Its channels of the Godot layout (reliable, ordered, unreliable).
    pub layout: Vec<ChannelId>,
    /// Every channel str0m reported open, in order.
    pub opened: Vec<ChannelId>,
    /// Every channel str0m reported closed (the victim closed it), in order.
    pub closed: Vec<ChannelId>,
    /// Messages received, per channel.
    pub received: Vec<(ChannelId, Vec<u8>)>,
    /// The offer it made (the SDP text), to vary in an offer storm.
    pub offer: Option<String>,
    /// Answers the victim sent it (one per offer the victim followed).
    pub answers: usize,
    pending: Option<SdpPendingOffer>,
    /// Channels to open outside the layout, a few per millisecond.
    opening: VecDeque<ChannelConfig>,
    last_opened: Option<Instant>,
    /// Negotiated channels on stream ids outside the layout, to write one message on once open.
    write_once_open: Vec<ChannelId>,
    /// The last STUN binding request it sent, to replay from other source ports.
    pub stun_request: Option<Vec<u8>>,
    /// Datagrams it wants sent: (source, destination, contents).
    out: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    timeout: Option<Instant>,
    /// Signals for peers: answers to their offers (see [`Attacker::answer`]).
    replies: VecDeque<OutgoingSignal>,
    /// `false` once str0m failed or closed: it no longer sends or receives.
    pub alive: bool,
    /// Why str0m failed, if it did.
    pub error: Option<String>,
}

/// Channels an attacker opens per millisecond.
const OPEN_PER_TURN: usize = 8;

/// Godot's layout (ids 1, 2, 3), as a peer negotiates it.
fn godot_layout() -> [ChannelConfig; 3] {
    let life = Reliability::MaxPacketLifetime { lifetime: 1 };
    let cfg = |label: &str, ordered, reliability, id| ChannelConfig {
        label: label.into(),
        ordered,
        reliability,
        negotiated: Some(id),
        protocol: String::new(),
    };
    [
        cfg("reliable", true, Reliability::Reliable, 1),
        cfg("ordered", true, life, 2),
        cfg("unreliable", false, life, 3),
    ]
}

/// Whether a datagram is a STUN binding request (RFC 8489: type 0x0001, magic cookie).
fn is_binding_request(d: &[u8]) -> bool {
    d.len() >= 20 && d[0..2] == [0x00, 0x01] && d[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

impl Attacker {
    /// An attacker with this id at `addr` (str0m's defaults, SNAP on as rtcmesh has it).
    pub fn new(now: Instant, id: PeerId, addr: SocketAddr) -> Attacker {
        let mut rtc = Rtc::builder()
            .set_stats_interval(None)
            .set_snap_enabled(true)
            .build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        Attacker {
            id,
            addr,
            rtc,
            layout: Vec::new(),
            opened: Vec::new(),
            closed: Vec::new(),
            received: Vec::new(),
            offer: None,
            answers: 0,
            pending: None,
            opening: VecDeque::new(),
            last_opened: None,
            write_once_open: Vec::new(),
            stun_request: None,
            out: VecDeque::new(),
            timeout: None,
            replies: VecDeque::new(),
            alive: true,
            error: None,
        }
    }

    /// Makes the offer with Godot's layout (the attacker offers: give it the larger id).
    pub fn make_offer(&mut self) -> Signal {
        let mut api = self.rtc.sdp_api();
        self.layout = godot_layout()
            .into_iter()
            .map(|c| api.add_channel_with_config(c))
            .collect();
        let (offer, pending) = api.apply().expect("offer");
        self.pending = Some(pending);
        let sdp = offer.to_sdp_string();
        self.offer = Some(sdp.clone());
        Signal::Offer(sdp)
    }

    /// The same offer with `n` extra host candidates on distinct loopback addresses.
    pub fn offer_with_candidates(&mut self, n: usize) -> Signal {
        let Signal::Offer(sdp) = self.make_offer() else {
            unreachable!("make_offer makes an offer");
        };
        let extra: String = (0..n)
            .map(|i| format!("a={}\r\n", fake_candidate(i)))
            .collect();
        // Candidates belong to the media section, after its attributes; put them at the end.
        let sdp = format!("{sdp}{extra}");
        self.offer = Some(sdp.clone());
        Signal::Offer(sdp)
    }

    /// `n` new offers, each the attacker's offer with another session id (`o=` line): valid, and
    /// different from each other, so each one asks the victim to start over with a new
    /// connection (a handshake retry).
    pub fn offer_storm(&self, n: usize) -> Vec<Signal> {
        self.varied_offers(
            n,
            |k, fields| fields[1] = format!("{}", 7_000_000 + k),
            |_, _| None,
        )
    }

    /// `n` ICE restart offers for the current connection: the attacker's offer with its
    /// session id kept, the version raised and new ICE credentials each time, so each one asks
    /// the victim to restart ICE on the connection it has (as a browser's `restartIce()` does).
    pub fn restart_storm(&self, n: usize) -> Vec<Signal> {
        self.varied_offers(
            n,
            |k, fields| fields[2] = format!("{}", 1000 + k),
            |k, line| {
                if line.starts_with("a=ice-ufrag:") {
                    Some(format!("a=ice-ufrag:rst{k}\r\n"))
                } else if line.starts_with("a=ice-pwd:") {
                    Some(format!("a=ice-pwd:restartpassword{k:012}\r\n"))
                } else {
                    None
                }
            },
        )
    }

    /// The attacker's offer `n` times, the `o=` fields changed by `origin` and other lines
    /// replaced where `line` says.
    fn varied_offers(
        &self,
        n: usize,
        origin: impl Fn(usize, &mut Vec<String>),
        line: impl Fn(usize, &str) -> Option<String>,
    ) -> Vec<Signal> {
        let sdp = self.offer.as_deref().expect("make_offer first");
        (1..=n)
            .map(|k| {
                let varied: String = sdp
                    .split_inclusive('\n')
                    .map(|l| {
                        if let Some(rest) = l.strip_prefix("o=") {
                            let mut fields: Vec<String> =
                                rest.split(' ').map(str::to_owned).collect();
                            if fields.len() > 2 {
                                origin(k, &mut fields);
                            }
                            return format!("o={}", fields.join(" "));
                        }
                        line(k, l).unwrap_or_else(|| l.to_owned())
                    })
                    .collect();
                Signal::Offer(varied)
            })
            .collect()
    }

    /// The same offer claiming rtcmesh's own retransmission (`a=x-rtcmesh-reliable:1`, which
    /// str0m itself knows nothing of): a victim that has it on agrees, and both ends create
    /// the hidden channel (the attacker with [`open_hidden_channel`](Self::open_hidden_channel)).
    pub fn offer_claiming_own_retransmission(&mut self) -> Signal {
        let Signal::Offer(sdp) = self.make_offer() else {
            unreachable!("make_offer makes an offer");
        };
        let at = sdp.find("\r\nm=").expect("a media section") + 2;
        let sdp = format!("{}a=x-rtcmesh-reliable:1\r\n{}", &sdp[..at], &sdp[at..]);
        self.offer = Some(sdp.clone());
        Signal::Offer(sdp)
    }

    /// Creates the hidden channel rtcmesh uses for its own retransmission (negotiated SCTP
    /// stream 1024, unordered, no retransmissions), to write anything on it.
    pub fn open_hidden_channel(&mut self) -> ChannelId {
        self.rtc.direct_api().create_data_channel(ChannelConfig {
            label: "rtcmesh-reliable".into(),
            ordered: false,
            reliability: Reliability::MaxRetransmits { retransmits: 0 },
            negotiated: Some(1024),
            protocol: String::new(),
        })
    }

    /// Writes `data` on a channel it created (`false` if str0m refused).
    pub fn write(&mut self, id: ChannelId, data: &[u8]) -> bool {
        self.rtc
            .channel(id)
            .is_some_and(|mut c| c.write(true, data).unwrap_or(false))
    }

    /// Answers a mesh's offer as a Godot or browser peer would (the attacker has the smaller
    /// id here): str0m's own answer, Godot's three channels created out of band. Returns the
    /// answer to signal back.
    pub fn answer(&mut self, offer: &str) -> Signal {
        let offer = SdpOffer::from_sdp_string(offer).expect("offer");
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("accept offer");
        let mut api = self.rtc.direct_api();
        self.layout = godot_layout()
            .into_iter()
            .map(|c| api.create_data_channel(c))
            .collect();
        Signal::Answer(answer.to_sdp_string())
    }

    /// Applies a signal from the victim (the answer; anything else is ignored).
    pub fn handle_signal(&mut self, signal: Signal) {
        match signal {
            Signal::Answer(sdp) => {
                self.answers += 1;
                let Some(pending) = self.pending.take() else {
                    return; // answers to storm offers: the attacker does not care
                };
                let answer = SdpAnswer::from_sdp_string(&sdp).expect("answer");
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .expect("accept answer");
            }
            Signal::Candidate(attr) => {
                if let Ok(c) = Candidate::from_sdp_string(attr.trim_start_matches("a=")) {
                    self.rtc.add_remote_candidate(c);
                }
            }
            Signal::Offer(sdp) => {
                // Not used by these stories (the attacker has the larger id), but harmless.
                let _ = SdpOffer::from_sdp_string(&sdp);
            }
        }
    }

    /// Opens `n` data channels in-band (DCEP), outside the layout, a few per millisecond
    /// (str0m fails with "transmit queue full" when hundreds open at once).
    pub fn open_dcep_channels(&mut self, n: usize) {
        let start = self.opening.len();
        self.opening
            .extend((start..start + n).map(|i| ChannelConfig {
                label: format!("intruder-{i}"),
                negotiated: None,
                ..ChannelConfig::default()
            }));
    }

    /// Writes one message on each of these SCTP stream ids once they are open, without any
    /// DCEP: out-of-band "negotiated" ids the victim never agreed to (paced as above).
    pub fn write_on_streams(&mut self, ids: impl IntoIterator<Item = u16>) {
        self.opening.extend(ids.into_iter().map(|id| ChannelConfig {
            label: format!("stream-{id}"),
            negotiated: Some(id),
            ..ChannelConfig::default()
        }));
    }

    /// Channels it has yet to open.
    pub fn still_opening(&self) -> usize {
        self.opening.len()
    }

    /// Writes `data` on layout channel `index` (0 reliable, 1 ordered, 2 unreliable).
    pub fn send(&mut self, index: usize, data: &[u8]) -> bool {
        let Some(&id) = self.layout.get(index) else {
            return false;
        };
        self.rtc
            .channel(id)
            .is_some_and(|mut c| c.write(true, data).unwrap_or(false))
    }

    /// Whether its three layout channels are open.
    pub fn connected(&self) -> bool {
        self.layout.iter().all(|id| self.opened.contains(id)) && !self.layout.is_empty()
    }

    fn handle_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        if !self.alive {
            return;
        }
        let Ok(r) = Receive::new(Protocol::Udp, source, self.addr, contents) else {
            return;
        };
        if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
            self.fail(e);
        }
        self.drive(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.alive {
            return;
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.fail(e);
        }
        self.drive(now);
    }

    fn fail(&mut self, e: impl std::fmt::Display) {
        self.alive = false;
        self.error.get_or_insert_with(|| e.to_string());
    }

    /// Drains str0m's output, opening the next few channels and writing on freshly opened
    /// unnegotiated streams.
    pub fn drive(&mut self, now: Instant) {
        let due = self
            .last_opened
            .is_none_or(|at| now >= at + Duration::from_millis(1));
        if self.alive && self.connected() && due && !self.opening.is_empty() {
            self.last_opened = Some(now);
            let mut api = self.rtc.direct_api();
            for config in self.opening.drain(..self.opening.len().min(OPEN_PER_TURN)) {
                let negotiated = config.negotiated.is_some();
                let id = api.create_data_channel(config);
                if negotiated {
                    self.write_once_open.push(id);
                }
            }
        }
        while self.alive {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    if is_binding_request(&t.contents) {
                        self.stun_request = Some(t.contents.to_vec());
                    }
                    self.out
                        .push_back((t.source, t.destination, t.contents.to_vec()));
                }
                Ok(Output::Timeout(t)) => {
                    let soon = now + Duration::from_millis(1);
                    let more = !self.opening.is_empty() && self.connected();
                    self.timeout = Some(if more { t.min(soon) } else { t });
                    return;
                }
                Ok(Output::Event(RtcEvent::ChannelOpen(id, _))) => {
                    self.opened.push(id);
                    if let Some(i) = self.write_once_open.iter().position(|&c| c == id) {
                        self.write_once_open.swap_remove(i);
                        if let Some(mut c) = self.rtc.channel(id) {
                            let _ = c.write(true, b"x");
                        }
                    }
                }
                Ok(Output::Event(RtcEvent::ChannelClose(id))) => self.closed.push(id),
                Ok(Output::Event(RtcEvent::ChannelData(d))) => self.received.push((d.id, d.data)),
                Ok(Output::Event(_)) => {}
                Err(e) => self.fail(e),
            }
        }
    }
}

/// A distinct, well-formed host candidate attribute (`candidate:…`) for index `i`, on a
/// loopback address (never a real one: the simulated network drops what goes there).
pub fn fake_candidate(i: usize) -> String {
    let ip = Ipv4Addr::new(127, 100 + ((i >> 16) % 100) as u8, (i >> 8) as u8, i as u8);
    let port = 10_000 + (i % 1000) as u16;
    format!("candidate:{i} 1 udp 2130706431 {ip} {port} typ host")
}

/// `n` trickled candidate signals on distinct addresses.
pub fn candidate_flood(n: usize) -> Vec<Signal> {
    (0..n)
        .map(|i| Signal::Candidate(fake_candidate(i)))
        .collect()
}

impl Driven for Attacker {
    fn unique_id(&self) -> PeerId {
        self.id
    }
    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        _: SocketAddr,
        contents: &[u8],
    ) {
        Attacker::handle_datagram(self, now, source, contents)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Attacker::handle_timeout(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.timeout.filter(|_| self.alive)
    }
    fn flush(&mut self, now: Instant) {
        self.drive(now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        let (source, destination, contents) = self.out.pop_front()?;
        Some(Transmit {
            destination,
            source,
            contents,
        })
    }
    fn poll_signal(&mut self, _: Instant) -> Option<OutgoingSignal> {
        // Its offers are hand-made (World::send_signal); its answers go out here.
        self.replies.pop_front()
    }
    fn handle_signal(
        &mut self,
        _: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError> {
        match signal {
            // A mesh with the larger id offers: answer as a Godot peer would.
            Signal::Offer(sdp) if self.layout.is_empty() => {
                let answer = self.answer(&sdp);
                self.replies.push_back(OutgoingSignal {
                    to: from,
                    signal: answer,
                });
            }
            signal => Attacker::handle_signal(self, signal),
        }
        Ok(())
    }
    fn commands(&self) -> Option<&dyn Commands> {
        None
    }
    fn commands_mut(&mut self) -> Option<&mut dyn Commands> {
        None
    }
    fn logged(&self) -> usize {
        0
    }
    fn seen(&self, _: usize) -> (Instant, Seen<'_>) {
        unreachable!("an attacker logs nothing: read its fields")
    }
    fn clear_log(&mut self) {}
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// The stories of `tests/tests/hostile.rs`: a victim, its friend and attackers in one world.
impl World {
    /// A victim (mesh id 1, node 0) and a well-behaved peer (id 2, node 1), connected, events
    /// cleared; `config` is the victim's. The network is perfect (1 ms one way, in order).
    pub fn victim_and_friend(config: &MeshConfig) -> World {
        let mut w = World::new();
        w.add(Mesh::create_mesh(1, config.clone()).expect("victim"));
        w.add(Mesh::create_mesh(2, MeshConfig::default()).expect("friend"));
        w.introduce(0, 1);
        assert!(
            w.run_until(Duration::from_secs(5), |w| w.both_connected(0, 1)),
            "victim and friend did not connect"
        );
        for node in &mut w.nodes {
            node.clear_events();
        }
        w
    }

    /// Adds an attacker with this id; returns its node.
    pub fn add_attacker(&mut self, id: PeerId) -> NodeId {
        let attacker = Attacker::new(self.now, id, self.next_public_addr());
        self.add_driven(Box::new(attacker))
    }

    /// Node `victim` adds attacker node `attacker`, which offers with `offer` (from one of its
    /// `make_offer` variants); the handshake then runs by itself.
    pub fn admit_attacker(&mut self, victim: NodeId, attacker: NodeId, offer: Signal) {
        let now = self.now;
        let id = self.id(attacker);
        self.nodes[victim]
            .commands()
            .add_peer(now, id, 1)
            .expect("add attacker");
        self.drain(victim);
        let to = self.id(victim);
        self.send_signal(id, to, offer);
    }

    /// Node `victim` adds attacker node `attacker` with a plain offer and runs until both
    /// sides connected.
    pub fn connect_attacker(&mut self, victim: NodeId, attacker: NodeId) {
        let offer = self.nodes[attacker].attacker_mut().make_offer();
        self.admit_attacker(victim, attacker, offer);
        let id = self.id(attacker);
        assert!(
            self.run_until(Duration::from_secs(5), |w| {
                w.nodes[attacker].attacker().connected()
                    && w.nodes[victim].mesh().peer(id).is_some_and(|p| p.connected)
            }),
            "attacker did not connect"
        );
    }

    /// Sends a signal from attacker node `attacker` to the peer with id `to` (through the
    /// signaling delay).
    pub fn signal_from_attacker(&mut self, attacker: NodeId, to: PeerId, signal: Signal) {
        let from = self.id(attacker);
        self.send_signal(from, to, signal);
    }

    /// Replays attacker node `attacker`'s last STUN binding request to node `victim` from `n`
    /// new source ports: each looks like a peer-reflexive candidate to the victim.
    pub fn prflx_flood(&mut self, attacker: NodeId, victim: NodeId, n: usize) {
        let request = self.nodes[attacker]
            .attacker()
            .stun_request
            .clone()
            .expect("the attacker sent a binding request");
        let (ip, dest) = (self.nodes[attacker].addr.ip(), self.nodes[victim].addr);
        for i in 0..n {
            let source = SocketAddr::new(ip, 20_000 + i as u16);
            self.inject(attacker, source, dest, request.clone());
        }
    }

    /// Whether the meshes of nodes `a` and `b` report each other connected.
    pub fn both_connected(&self, a: NodeId, b: NodeId) -> bool {
        let (ida, idb) = (self.id(a), self.id(b));
        self.nodes[a].mesh().peer(idb).is_some_and(|p| p.connected)
            && self.nodes[b].mesh().peer(ida).is_some_and(|p| p.connected)
    }

    /// Node `from` sends one reliable packet to node `to` every `every` for `duration`, each
    /// carrying its send time's index; returns the one-way latency of every packet that
    /// arrived at `to` (in sending order) and how many were sent.
    pub fn steady_traffic(
        &mut self,
        from: NodeId,
        to: NodeId,
        every: Duration,
        duration: Duration,
    ) -> (Vec<Duration>, usize) {
        let peer = self.id(to);
        let mut sent_at = Vec::new();
        let end = self.now + duration;
        let first = self.nodes[to].event_count();
        while self.now < end {
            let now = self.now;
            self.nodes[from].driven.handle_timeout(now);
            let index = sent_at.len() as u32;
            if self.nodes[from]
                .commands()
                .send(
                    Target::Peer(peer),
                    TransferMode::Reliable,
                    0,
                    &index.to_be_bytes(),
                )
                .is_ok()
            {
                sent_at.push(now);
            }
            self.drain(from);
            let next = self.now + every;
            self.run_until(every, |w| w.now >= next);
        }
        self.run_for(Duration::from_millis(100));
        let sender = self.id(from);
        let latencies = self.nodes[to]
            .packets_at_since(first)
            .into_iter()
            .filter_map(|(at, p)| {
                if p.from != sender || p.data.len() != 4 {
                    return None;
                }
                let index = u32::from_be_bytes(p.data[..4].try_into().ok()?) as usize;
                Some(at - *sent_at.get(index)?)
            })
            .collect();
        (latencies, sent_at.len())
    }
}
