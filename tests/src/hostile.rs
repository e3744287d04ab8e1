//! Peers that misbehave on purpose, and a small world to watch a mesh defend itself.
//!
//! An [`Attacker`] is a raw `str0m::Rtc` that negotiates Godot's channel layout with its victim
//! like any peer, then does what a hostile player could: opens data channels outside the layout
//! (in-band, DCEP), writes on SCTP stream ids nobody negotiated, floods candidates (trickled, in
//! its offer, and peer-reflexive ones by replaying a STUN request from new source ports), storms
//! the victim with new offers, and sends messages above the victim's packet size. A
//! [`HostileWorld`] puts well-behaved [`Mesh`]es and attackers on one perfect network with a
//! fake clock (1 ms one-way, in order) and a signaling channel, and records when each event
//! happened, so tests can check both that a limit held and that well-behaved peers kept
//! delivering with unchanged latency.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use rtcmesh::str0m::channel::{ChannelConfig, ChannelId, Reliability};
use rtcmesh::str0m::net::{Protocol, Receive};
use rtcmesh::str0m::{Candidate, Event as RtcEvent, Input, Output, Rtc};
use rtcmesh::{Event, Mesh, MeshConfig, Packet, PeerId, Signal, SignalError, Target, TransferMode};

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

    /// `n` new offers, each the attacker's offer with another session version: valid, and
    /// different from each other, so each one asks the victim to start over.
    pub fn offer_storm(&self, n: usize) -> Vec<Signal> {
        let sdp = self.offer.as_deref().expect("make_offer first");
        (1..=n)
            .map(|k| {
                let varied: String = sdp
                    .split_inclusive('\n')
                    .map(|line| match line.strip_prefix("o=") {
                        Some(rest) => {
                            let mut fields: Vec<&str> = rest.split(' ').collect();
                            let version = format!("{}", 1000 + k);
                            if fields.len() > 2 {
                                fields[2] = &version;
                            }
                            format!("o={}", fields.join(" "))
                        }
                        None => line.to_owned(),
                    })
                    .collect();
                Signal::Offer(varied)
            })
            .collect()
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

/// One well-behaved host: a mesh and what it emitted, with the time of each event.
pub struct Host {
    /// The mesh.
    pub mesh: Mesh,
    /// Its address.
    pub addr: SocketAddr,
    /// Every event except signals, with when it was emitted.
    pub events: Vec<(Instant, Event)>,
    /// Errors returned when a signal was passed to it.
    pub signal_errors: Vec<SignalError>,
    /// Every address it sent a datagram to, with how many.
    pub sent_to: HashMap<SocketAddr, u64>,
}

impl Host {
    /// How many distinct addresses it sent datagrams to, other than these.
    pub fn destinations_except(&self, known: &[SocketAddr]) -> usize {
        self.sent_to.keys().filter(|a| !known.contains(a)).count()
    }

    /// Packets received, with their arrival time.
    pub fn packets(&self) -> Vec<(Instant, &Packet)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Packet(p) => Some((*at, p)),
                _ => None,
            })
            .collect()
    }

    /// Whether it emitted `PeerDisconnected(peer)`.
    pub fn lost(&self, peer: PeerId) -> bool {
        self.events
            .iter()
            .any(|(_, e)| *e == Event::PeerDisconnected(peer))
    }
}

/// Something on its way.
enum InFlight {
    Datagram {
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    Signal {
        from: PeerId,
        to: PeerId,
        signal: Signal,
    },
}

/// Where an address or id leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Host(usize),
    Attacker(usize),
}

/// Well-behaved hosts and attackers on a perfect network (fixed latency, in order) with a fake
/// clock and a signaling channel.
pub struct HostileWorld {
    /// The fake clock.
    pub now: Instant,
    /// The well-behaved meshes; host 0 is the victim in the constructors below.
    pub hosts: Vec<Host>,
    /// The attackers.
    pub attackers: Vec<Attacker>,
    /// One-way latency of datagrams.
    pub latency: Duration,
    /// Latency of signals.
    pub signal_latency: Duration,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, InFlight>,
    next_seq: u64,
    by_addr: HashMap<SocketAddr, Who>,
    /// Datagrams sent to an address nobody has (dropped).
    pub datagrams_nowhere: u64,
    /// Whether to time the hosts' `handle_datagram` and `handle_signal` calls (wall clock, for
    /// the benchmark; off by default).
    pub measure: bool,
    /// With `measure`: the time of each `handle_datagram` call, per (host, source IP).
    pub datagram_cpu: HashMap<(usize, IpAddr), Vec<Duration>>,
    /// With `measure`: time spent in `handle_signal`, and calls, per (host, sender id).
    pub signal_cpu: HashMap<(usize, PeerId), (Duration, u64)>,
}

impl HostileWorld {
    /// An empty world whose clock starts now.
    pub fn new() -> HostileWorld {
        HostileWorld {
            now: Instant::now(),
            hosts: Vec::new(),
            attackers: Vec::new(),
            latency: Duration::from_millis(1),
            signal_latency: Duration::from_millis(5),
            queue: BinaryHeap::new(),
            in_flight: HashMap::new(),
            next_seq: 0,
            by_addr: HashMap::new(),
            datagrams_nowhere: 0,
            measure: false,
            datagram_cpu: HashMap::new(),
            signal_cpu: HashMap::new(),
        }
    }

    /// A victim (mesh id 1, host 0) and a well-behaved peer (id 2, host 1), connected, events
    /// cleared; `config` is the victim's.
    pub fn victim_and_friend(config: &MeshConfig) -> HostileWorld {
        let mut w = HostileWorld::new();
        w.add_host(Mesh::create_mesh(1, config.clone()).expect("victim"));
        w.add_host(Mesh::create_mesh(2, MeshConfig::default()).expect("friend"));
        w.introduce(0, 1);
        assert!(
            w.run_until(Duration::from_secs(5), |w| w.hosts_connected(0, 1)),
            "victim and friend did not connect"
        );
        for h in &mut w.hosts {
            h.events.clear();
        }
        w
    }

    /// Adds a well-behaved host at `127.0.0.<n+1>:5000`; returns its index.
    pub fn add_host(&mut self, mut mesh: Mesh) -> usize {
        let n = self.hosts.len();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n as u8 + 1)), 5000);
        mesh.add_host_candidate(addr).expect("host candidate");
        self.by_addr.insert(addr, Who::Host(n));
        self.hosts.push(Host {
            mesh,
            addr,
            events: Vec::new(),
            signal_errors: Vec::new(),
            sent_to: HashMap::new(),
        });
        n
    }

    /// Adds an attacker with this id at `127.0.1.<k+1>:5000`; returns its index.
    pub fn add_attacker(&mut self, id: PeerId) -> usize {
        let k = self.attackers.len();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, k as u8 + 1)), 5000);
        self.by_addr.insert(addr, Who::Attacker(k));
        self.attackers.push(Attacker::new(self.now, id, addr));
        k
    }

    /// Hosts `a` and `b` add each other.
    pub fn introduce(&mut self, a: usize, b: usize) {
        let now = self.now;
        let (ida, idb) = (
            self.hosts[a].mesh.unique_id(),
            self.hosts[b].mesh.unique_id(),
        );
        self.hosts[a].mesh.add_peer(now, idb, 1).expect("add_peer");
        self.hosts[b].mesh.add_peer(now, ida, 1).expect("add_peer");
        self.drain_host(a);
        self.drain_host(b);
    }

    /// Host `h` adds attacker `k`, which offers with `offer` (from one of its `make_offer`
    /// variants); the handshake then runs by itself.
    pub fn admit_attacker(&mut self, h: usize, k: usize, offer: Signal) {
        let now = self.now;
        let id = self.attackers[k].id;
        self.hosts[h]
            .mesh
            .add_peer(now, id, 1)
            .expect("add attacker");
        self.drain_host(h);
        let to = self.hosts[h].mesh.unique_id();
        self.signal_from_attacker(k, to, offer);
    }

    /// Host `h` adds attacker `k` with a plain offer and runs until both sides connected.
    pub fn connect_attacker(&mut self, h: usize, k: usize) {
        let offer = self.attackers[k].make_offer();
        self.admit_attacker(h, k, offer);
        let id = self.attackers[k].id;
        assert!(
            self.run_until(Duration::from_secs(5), |w| {
                w.attackers[k].connected() && w.hosts[h].mesh.peer(id).is_some_and(|p| p.connected)
            }),
            "attacker did not connect"
        );
    }

    /// Sends a signal from attacker `k` to the host with id `to` (through the signaling delay).
    pub fn signal_from_attacker(&mut self, k: usize, to: PeerId, signal: Signal) {
        let from = self.attackers[k].id;
        let at = self.now + self.signal_latency;
        self.schedule(at, InFlight::Signal { from, to, signal });
    }

    /// Replays attacker `k`'s last STUN binding request to host `h` from `n` new source ports:
    /// each looks like a peer-reflexive candidate to the victim.
    pub fn prflx_flood(&mut self, k: usize, h: usize, n: usize) {
        let request = self.attackers[k]
            .stun_request
            .clone()
            .expect("the attacker sent a binding request");
        let (ip, dest) = (self.attackers[k].addr.ip(), self.hosts[h].addr);
        for i in 0..n {
            let source = SocketAddr::new(ip, 20_000 + i as u16);
            let at = self.now + self.latency;
            self.schedule(
                at,
                InFlight::Datagram {
                    source,
                    destination: dest,
                    contents: request.clone(),
                },
            );
        }
    }

    /// Whether hosts `a` and `b` report each other connected.
    pub fn hosts_connected(&self, a: usize, b: usize) -> bool {
        let (ida, idb) = (
            self.hosts[a].mesh.unique_id(),
            self.hosts[b].mesh.unique_id(),
        );
        self.hosts[a].mesh.peer(idb).is_some_and(|p| p.connected)
            && self.hosts[b].mesh.peer(ida).is_some_and(|p| p.connected)
    }

    /// Drains host `h`'s datagrams and events. Call after driving its mesh directly.
    pub fn drain_host(&mut self, h: usize) {
        let from = self.hosts[h].mesh.unique_id();
        while let Some(t) = self.hosts[h].mesh.poll_transmit() {
            *self.hosts[h].sent_to.entry(t.destination).or_default() += 1;
            let at = self.now + self.latency;
            self.schedule(
                at,
                InFlight::Datagram {
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents,
                },
            );
        }
        let now = self.now;
        let mut signals = Vec::new();
        while let Some(e) = self.hosts[h].mesh.poll_event() {
            match e {
                Event::Signal(s) => signals.push(s),
                other => self.hosts[h].events.push((now, other)),
            }
        }
        for s in signals {
            let at = self.now + self.signal_latency;
            self.schedule(
                at,
                InFlight::Signal {
                    from,
                    to: s.to,
                    signal: s.signal,
                },
            );
        }
    }

    /// Drains attacker `k`'s datagrams. Call after driving it directly.
    pub fn drain_attacker(&mut self, k: usize) {
        let now = self.now;
        self.attackers[k].drive(now);
        while let Some((source, destination, contents)) = self.attackers[k].out.pop_front() {
            let at = self.now + self.latency;
            self.schedule(
                at,
                InFlight::Datagram {
                    source,
                    destination,
                    contents,
                },
            );
        }
    }

    fn schedule(&mut self, at: Instant, what: InFlight) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.in_flight.insert(seq, what);
        self.queue.push(Reverse((at, seq)));
    }

    fn next_time(&self) -> Option<Instant> {
        let arrival = self.queue.peek().map(|Reverse((at, _))| *at);
        let hosts = self.hosts.iter().filter_map(|h| h.mesh.poll_timeout());
        let attackers = self
            .attackers
            .iter()
            .filter(|a| a.alive)
            .filter_map(|a| a.timeout);
        arrival.into_iter().chain(hosts).chain(attackers).min()
    }

    fn node_by_id(&self, id: PeerId) -> Option<Who> {
        if let Some(h) = self.hosts.iter().position(|h| h.mesh.unique_id() == id) {
            return Some(Who::Host(h));
        }
        self.attackers
            .iter()
            .position(|a| a.id == id)
            .map(Who::Attacker)
    }

    /// Advances to the next thing that happens and handles everything due then.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > now {
                break;
            }
            self.queue.pop();
            match self.in_flight.remove(&seq) {
                Some(InFlight::Datagram {
                    source,
                    destination,
                    contents,
                }) => match self.by_addr.get(&destination) {
                    Some(&Who::Host(h)) => {
                        let started = self.measure.then(Instant::now);
                        self.hosts[h]
                            .mesh
                            .handle_datagram(now, source, destination, &contents);
                        if let Some(started) = started {
                            let spent = started.elapsed();
                            self.datagram_cpu
                                .entry((h, source.ip()))
                                .or_default()
                                .push(spent);
                        }
                    }
                    Some(&Who::Attacker(k)) => {
                        self.attackers[k].handle_datagram(now, source, &contents)
                    }
                    None => self.datagrams_nowhere += 1,
                },
                Some(InFlight::Signal { from, to, signal }) => match self.node_by_id(to) {
                    Some(Who::Host(h)) => {
                        let started = self.measure.then(Instant::now);
                        let result = self.hosts[h].mesh.handle_signal(now, from, signal);
                        if let Some(started) = started {
                            let spent = self.signal_cpu.entry((h, from)).or_default();
                            spent.0 += started.elapsed();
                            spent.1 += 1;
                        }
                        if let Err(e) = result {
                            self.hosts[h].signal_errors.push(e);
                        }
                    }
                    Some(Who::Attacker(k)) => self.attackers[k].handle_signal(signal),
                    None => {}
                },
                None => {}
            }
        }
        for h in 0..self.hosts.len() {
            if self.hosts[h].mesh.poll_timeout().is_some_and(|t| t <= now) {
                self.hosts[h].mesh.handle_timeout(now);
            }
            self.drain_host(h);
        }
        for k in 0..self.attackers.len() {
            if self.attackers[k].timeout.is_some_and(|t| t <= now) {
                self.attackers[k].handle_timeout(now);
            }
            self.drain_attacker(k);
        }
        true
    }

    /// Runs until `done` holds or `limit` of simulated time passes; returns whether it held.
    pub fn run_until(&mut self, limit: Duration, done: impl FnMut(&HostileWorld) -> bool) -> bool {
        crate::sim::run_until(self, limit, done)
    }

    /// Runs for `duration` of simulated time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }

    /// Host `from` sends one reliable packet to the host with id `to` every `every` for
    /// `duration`, each carrying its send time's index; returns the one-way latency of every
    /// packet that arrived at `to` (in sending order) and how many were sent.
    pub fn steady_traffic(
        &mut self,
        from: usize,
        to: usize,
        every: Duration,
        duration: Duration,
    ) -> (Vec<Duration>, usize) {
        let peer = self.hosts[to].mesh.unique_id();
        let mut sent_at = Vec::new();
        let end = self.now + duration;
        let first = self.hosts[to].events.len();
        while self.now < end {
            let now = self.now;
            self.hosts[from].mesh.handle_timeout(now);
            let index = sent_at.len() as u32;
            if self.hosts[from]
                .mesh
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
            self.drain_host(from);
            let next = self.now + every;
            self.run_until(every, |w| w.now >= next);
        }
        self.run_for(Duration::from_millis(100));
        let sender = self.hosts[from].mesh.unique_id();
        let latencies = self.hosts[to].events[first..]
            .iter()
            .filter_map(|(at, e)| match e {
                Event::Packet(p) if p.from == sender && p.data.len() == 4 => {
                    let index = u32::from_be_bytes(p.data[..4].try_into().ok()?) as usize;
                    Some(*at - *sent_at.get(index)?)
                }
                _ => None,
            })
            .collect();
        (latencies, sent_at.len())
    }
}

impl Default for HostileWorld {
    fn default() -> Self {
        HostileWorld::new()
    }
}

impl crate::sim::Simulated for HostileWorld {
    fn clock(&mut self) -> &mut Instant {
        &mut self.now
    }
    fn next_time(&self) -> Option<Instant> {
        HostileWorld::next_time(self)
    }
    fn step(&mut self) -> bool {
        HostileWorld::step(self)
    }
    fn at_deadline(&mut self) {
        let now = self.now;
        for h in 0..self.hosts.len() {
            self.hosts[h].mesh.handle_timeout(now);
            self.drain_host(h);
        }
    }
}
