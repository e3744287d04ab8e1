//! rtcmesh's own retransmission for reliable channels, between two rtcmesh peers.
//!
//! sctp-proto 0.10 (str0m's SCTP) recovers a second loss within a round trip, and a lost
//! retransmission, only after its retransmission timer, at least a second (see
//! `docs/loss-recovery.md`). Between two rtcmesh peers that both offer it, the reliable
//! channels' messages travel instead on one hidden data channel that SCTP never retransmits
//! (unordered, `maxRetransmits: 0`), numbered, acknowledged and retransmitted by rtcmesh
//! ([`sender`]), and put back in order per channel by the receiver ([`receiver`]); the wire
//! format is in [`frame`].
//!
//! # Agreement
//! The offering rtcmesh adds the session-level SDP attribute `a=x-rtcmesh-reliable:1` to its
//! offers (RFC 8866 §5.13: a receiver ignores attributes it does not know); an answering rtcmesh
//! that offers it too echoes it in its answer, and only then. Both ends use it for the
//! connection once the answer is applied, so a browser or Godot peer, which never echoes it,
//! gets exactly today's channels and bytes. The SDP, not a signal of our own, carries it
//! because every signaling path already relays offers and answers verbatim (Godot's demo
//! server, the lobby, the application's own), so nothing new has to reach the other side.
//! A handshake retry (a new connection) agrees again; an ICE restart keeps the agreement and
//! the state (the SCTP association survives it).
//!
//! # The hidden channel
//! Both ends create it out of band (negotiated, no DCEP) on SCTP stream [`STREAM_ID`], past
//! the layout's last id (`RESERVED_CHANNELS + MAX_EXTRA_CHANNELS`), with
//! `maxRetransmits: 0`: a lost chunk is abandoned when SCTP notices (then a FORWARD-TSN moves
//! SCTP on), while rtcmesh sends the fragment again as a new message.

mod frame;
mod receiver;
mod sender;

use std::time::{Duration, Instant};

use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::Rtc;

use super::session_attribute;
use crate::channels::ChannelSpec;
use crate::config::MeshConfig;
use crate::event::{Event, Packet};
use crate::transfer::TransferMode;

use receiver::{Received, Receiver};
use sender::{Header, Sender, Wire};

/// The SCTP stream id of the hidden channel: past every layout id (at most
/// `RESERVED_CHANNELS + MAX_EXTRA_CHANNELS` = 1003).
pub(crate) const STREAM_ID: u16 = 1024;

/// The SDP attribute that offers (and, echoed, accepts) rtcmesh's own retransmission, and the
/// version of the frames it offers.
const ATTRIBUTE: &str = "a=x-rtcmesh-reliable:";
const VERSION: &str = "1";

/// What str0m adds to an SCTP chunk's user data on the way to a datagram (its
/// `MAX_DTLS_OVERHEAD` 48 and `SCTP_OVERHEAD` 40): a frame of `mtu - 88` bytes is one chunk.
const DATAGRAM_OVERHEAD: usize = 88;

const _: () = assert!(
    STREAM_ID as usize > crate::channels::RESERVED_CHANNELS + crate::channels::MAX_EXTRA_CHANNELS
);

/// `sdp` with the attribute that offers rtcmesh's own retransmission, when `enabled`.
pub(crate) fn advertise(enabled: bool, sdp: String) -> String {
    if enabled {
        session_attribute::add(sdp, &format!("{ATTRIBUTE}{VERSION}"))
    } else {
        sdp
    }
}

/// Whether `sdp` offers (or accepts) rtcmesh's own retransmission.
pub(crate) fn advertised(sdp: &str) -> bool {
    session_attribute::find(sdp, ATTRIBUTE) == Some(VERSION)
}

/// What rtcmesh's own retransmission did for one peer, in
/// [`PeerStats::retransmission`](crate::PeerStats::retransmission).
///
/// ```
/// use std::time::{Duration, Instant};
/// use rtcmesh::{Event, Mesh, MeshConfig, Target, TransferMode};
///
/// # fn exchange(from: &mut Mesh, to: &mut Mesh) -> Vec<Event> {
/// #     let now = Instant::now();
/// #     from.handle_timeout(now);
/// #     while let Some(t) = from.poll_transmit() {
/// #         to.handle_datagram(now, t.source, t.destination, &t.contents);
/// #     }
/// #     let mut events = Vec::new();
/// #     while let Some(event) = from.poll_event() {
/// #         match event {
/// #             Event::Signal(s) => to.handle_signal(now, from.unique_id(), s.signal).expect("a signal"),
/// #             other => events.push(other),
/// #         }
/// #     }
/// #     events
/// # }
/// // Two meshes in memory (`exchange` moves one's datagrams and signals to the other, as in
/// // `Mesh`'s example).
/// let mut a = Mesh::create_mesh(1, MeshConfig::default())?;
/// let mut b = Mesh::create_mesh(2, MeshConfig::default())?;
/// a.add_host_candidate("127.0.0.1:5001".parse()?)?;
/// b.add_host_candidate("127.0.0.1:5002".parse()?)?;
/// a.add_peer(Instant::now(), 2, 1)?;
/// b.add_peer(Instant::now(), 1, 1)?;
/// let give_up = Instant::now() + Duration::from_secs(10);
/// while b.stats().packets_received == 0 {
///     assert!(Instant::now() < give_up, "delivered within 10 s");
///     if exchange(&mut a, &mut b).contains(&Event::PeerConnected(2)) {
///         a.send(Target::Peer(2), TransferMode::Reliable, 0, b"hello")?;
///     }
///     exchange(&mut b, &mut a);
/// }
/// // Both ends are rtcmesh with the default configuration: they agreed on it.
/// let own = a.peer_stats(2).and_then(|s| s.retransmission).expect("agreed");
/// assert_eq!(own.messages_sent, 1);
/// assert_eq!(own.retransmissions, 0); // nothing is lost in memory
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RetransmissionStats {
    /// Reliable messages sent this way (each counts once however often it was sent).
    pub messages_sent: u64,
    /// Fragments sent, first transmissions and retransmissions (a message travels in
    /// fragments of at most one SCTP chunk each).
    pub fragments_sent: u64,
    /// Fragments sent again because they were lost (an acknowledgement of later ones showed
    /// it) or as probes after a silence.
    pub retransmissions: u64,
    /// Of them, probes: the oldest unacknowledged fragments sent again after a probe timeout
    /// with no acknowledgement.
    pub probes: u64,
    /// Fragments received twice (a retransmission whose first copy arrived): dropped.
    pub duplicates_received: u64,
    /// Fragments received too far ahead of the one their channel waits for (beyond 4,096
    /// fragments, or beyond the bytes a peer may hold out of order: `sctp_send_buffer`):
    /// dropped and not acknowledged, so the sender retransmits them. Stays 0 between two
    /// meshes with the same configuration.
    pub out_of_window: u64,
    /// Messages on the hidden channel that did not parse, named a channel that is not a
    /// reliable one of the layout, or acknowledged something never sent: dropped. Stays 0 but
    /// for a misbehaving peer.
    pub malformed: u64,
    /// Acknowledgements sent (most of them ride along with data to the same peer).
    pub acks_sent: u64,
    /// The smoothed round trip measured from the acknowledgements (`None` before the first).
    pub round_trip_time: Option<Duration>,
    /// Bytes sent and not yet acknowledged.
    pub bytes_in_flight: usize,
    /// The congestion window: the bytes that may be in flight.
    pub congestion_window: usize,
    /// Bytes received out of order, waiting for an earlier fragment.
    pub bytes_held: usize,
}

impl RetransmissionStats {
    /// Adds another peer's counters to these (for the aggregate).
    pub(crate) fn add(&mut self, o: &RetransmissionStats) {
        self.messages_sent += o.messages_sent;
        self.fragments_sent += o.fragments_sent;
        self.retransmissions += o.retransmissions;
        self.probes += o.probes;
        self.duplicates_received += o.duplicates_received;
        self.out_of_window += o.out_of_window;
        self.malformed += o.malformed;
        self.acks_sent += o.acks_sent;
        self.round_trip_time = self.round_trip_time.max(o.round_trip_time);
        self.bytes_in_flight += o.bytes_in_flight;
        self.congestion_window += o.congestion_window;
        self.bytes_held += o.bytes_held;
    }
}

/// What the hidden channel is built from (kept to start over after a handshake retry).
#[derive(Debug, Clone)]
struct Setup {
    enabled: bool,
    /// By layout index: whether the channel is reliable (carried here once agreed).
    reliable: Vec<bool>,
    frame_max: usize,
    max_cwnd: usize,
    budget: usize,
    max_message: usize,
}

/// rtcmesh's own retransmission for one peer.
#[derive(Debug)]
pub(crate) struct Reliable {
    setup: Setup,
    /// Both ends agreed on it for the current connection.
    agreed: bool,
    /// The hidden channel (once agreed and created).
    channel: Option<ChannelId>,
    open: bool,
    sender: Sender,
    receiver: Receiver,
    scratch: Vec<u8>,
    stats: RetransmissionStats,
}

impl Reliable {
    pub fn new(config: &MeshConfig, layout: &[ChannelSpec]) -> Reliable {
        let setup = Setup {
            enabled: config.own_retransmission,
            reliable: layout
                .iter()
                .map(|c| c.mode == TransferMode::Reliable)
                .collect(),
            frame_max: config.mtu.saturating_sub(DATAGRAM_OVERHEAD),
            max_cwnd: config.sctp_send_buffer,
            budget: config.sctp_send_buffer,
            max_message: config.max_packet_size,
        };
        Reliable::from_setup(setup)
    }

    fn from_setup(setup: Setup) -> Reliable {
        Reliable {
            sender: Sender::new(setup.reliable.len(), setup.frame_max, setup.max_cwnd),
            receiver: Receiver::new(
                setup.reliable.iter().copied(),
                setup.budget,
                setup.max_message,
            ),
            setup,
            agreed: false,
            channel: None,
            open: false,
            scratch: Vec::new(),
            stats: RetransmissionStats::default(),
        }
    }

    /// A new connection (a handshake retry): nothing agreed, nothing in flight.
    pub fn reset(&mut self) {
        *self = Reliable::from_setup(self.setup.clone());
    }

    /// Whether this mesh offers it (`MeshConfig::own_retransmission`).
    pub fn enabled(&self) -> bool {
        self.setup.enabled
    }

    /// Answering side: the offer that creates the connection. Agreed if both offer it.
    pub fn on_offer(&mut self, sdp: &str) {
        self.agreed = self.setup.enabled && advertised(sdp);
    }

    /// Offering side: the answer that completes the connection. Agreed if it echoes ours.
    pub fn on_answer(&mut self, sdp: &str) {
        self.agreed = self.setup.enabled && advertised(sdp);
    }

    /// Our answer, with the attribute if agreed.
    pub fn answer(&self, sdp: String) -> String {
        advertise(self.agreed, sdp)
    }

    /// Once agreed: creates the hidden channel (both ends do, out of band).
    pub fn create_channel(&mut self, rtc: &mut Rtc) {
        if self.agreed && self.channel.is_none() {
            let config = ChannelConfig {
                label: "rtcmesh-reliable".into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                negotiated: Some(STREAM_ID),
                protocol: String::new(),
            };
            self.channel = Some(rtc.direct_api().create_data_channel(config));
        }
    }

    /// Whether `id` is the hidden channel.
    pub fn is_channel(&self, id: ChannelId) -> bool {
        self.channel == Some(id)
    }

    /// Payload bytes taken and not acknowledged yet (what the link's send window counts).
    pub fn outstanding(&self) -> usize {
        self.sender.outstanding()
    }

    /// The hidden channel opened.
    pub fn on_open(&mut self) {
        self.open = true;
    }

    /// Whether nothing more is needed for the peer to be ready (not agreed, or open).
    pub fn ready(&self) -> bool {
        !self.agreed || self.open
    }

    /// Whether messages on this channel travel here.
    pub fn carries(&self, mode: TransferMode) -> bool {
        self.agreed && mode == TransferMode::Reliable
    }

    /// Whether a message of `len` bytes on layout channel `index` may be taken now.
    pub fn has_room(&self, index: usize, len: usize) -> bool {
        self.sender.has_room(index, len)
    }

    /// Takes a message on layout channel `index` and sends what the wire takes; returns the
    /// bytes written to SCTP (`Err`: the hidden channel is closed).
    pub fn send(
        &mut self,
        now: Instant,
        rtc: &mut Rtc,
        index: usize,
        data: &[u8],
    ) -> Result<usize, ()> {
        let id = self.channel.filter(|_| self.open).ok_or(())?;
        self.stats.messages_sent += 1;
        let mut wire = ChannelWire {
            rtc,
            id,
            receiver: &mut self.receiver,
            scratch: &mut self.scratch,
            now,
            frame_max: self.setup.frame_max,
            written: 0,
            acks: 0,
        };
        self.sender.send(now, index, data, &mut wire);
        let written = wire.written;
        self.stats.acks_sent += wire.acks;
        Ok(written)
    }

    /// A message from the hidden channel: acknowledgements to the sender, fragments to the
    /// receiver; complete messages go to `deliver` with their layout index.
    pub fn on_message(
        &mut self,
        now: Instant,
        message: Vec<u8>,
        deliver: &mut dyn FnMut(usize, Vec<u8>),
    ) -> Received {
        let Ok(decoded) = frame::decode(&message) else {
            self.stats.malformed += 1;
            return Received::Malformed;
        };
        let mut refused = false;
        if let Some(ack) = &decoded.ack {
            if !self.sender.on_ack(now, ack) {
                self.stats.malformed += 1;
                refused = true;
            }
        }
        let Some(data) = decoded.data else {
            return if refused {
                Received::Malformed
            } else {
                Received::Accepted
            };
        };
        let outcome = self.receiver.on_data(now, &data, message, deliver);
        match outcome {
            Received::Accepted => {}
            Received::Duplicate => self.stats.duplicates_received += 1,
            Received::OutOfWindow => self.stats.out_of_window += 1,
            Received::Malformed | Received::Oversized => self.stats.malformed += 1,
        }
        outcome
    }

    /// Whether the link should be flushed this turn: an acknowledgement is due now, or
    /// fragments wait to be (re)sent.
    pub fn wants_flush(&self, now: Instant) -> bool {
        self.open
            && (self.sender.has_pending()
                || self.receiver.ack_deadline().is_some_and(|at| at <= now))
    }

    /// Sends what is due: retransmissions and waiting fragments, and the acknowledgement if it
    /// is due, or if `wrote` (other data goes to the peer this turn: it rides along). Returns
    /// the bytes written to SCTP.
    pub fn flush(&mut self, now: Instant, rtc: &mut Rtc, wrote: bool) -> usize {
        let Some(id) = self.channel.filter(|_| self.open) else {
            return 0;
        };
        let mut wire = ChannelWire {
            rtc,
            id,
            receiver: &mut self.receiver,
            scratch: &mut self.scratch,
            now,
            frame_max: self.setup.frame_max,
            written: 0,
            acks: 0,
        };
        if self.sender.has_pending() {
            self.sender.transmit(now, &mut wire);
        }
        let due = wire.receiver.ack_deadline().is_some_and(|at| at <= now);
        if wire.receiver.ack_pending() && (due || wrote || wire.written > 0) {
            wire.ack_alone();
        }
        let written = wire.written;
        self.stats.acks_sent += wire.acks;
        written
    }

    /// The next time [`on_timeout`](Self::on_timeout) must run.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.open {
            return None;
        }
        match (self.sender.deadline(), self.receiver.ack_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Losses and probes that came due (their fragments wait for [`flush`](Self::flush)).
    pub fn on_timeout(&mut self, now: Instant) {
        if self.open {
            self.sender.on_timeout(now);
        }
    }

    /// ICE's latest round trip (a floor for the probe timeout, and the first estimate).
    pub fn set_ice_rtt(&mut self, rtt: Duration) {
        let r = &mut self.sender.rtt;
        r.ice = Some(rtt);
        if !r.measured {
            r.smoothed = rtt;
            r.var = rtt / 2;
            r.latest = rtt;
            r.min = rtt;
        }
    }

    /// The path changed (ICE reconnected, the peer moved): probe now.
    pub fn on_path_change(&mut self, now: Instant) {
        self.sender.on_path_change(now);
    }

    /// The stats, `None` when not agreed.
    pub fn stats(&self) -> Option<RetransmissionStats> {
        self.agreed.then(|| {
            let c = self.sender.counters;
            RetransmissionStats {
                fragments_sent: c.transmissions,
                retransmissions: c.retransmissions,
                probes: c.probes,
                round_trip_time: self.sender.rtt.measured.then_some(self.sender.rtt.smoothed),
                bytes_in_flight: self.sender.in_flight(),
                congestion_window: self.sender.cwnd,
                bytes_held: self.receiver.held_bytes(),
                ..self.stats
            }
        })
    }
}

/// The hidden channel as the sender's [`Wire`]; an acknowledgement that is pending rides in
/// front of the next DATA frame when both fit one chunk.
struct ChannelWire<'a> {
    rtc: &'a mut Rtc,
    id: ChannelId,
    receiver: &'a mut Receiver,
    scratch: &'a mut Vec<u8>,
    now: Instant,
    frame_max: usize,
    /// Bytes written.
    written: usize,
    /// Acknowledgements written.
    acks: u64,
}

impl ChannelWire<'_> {
    /// Writes `scratch[range]` as one message. `Ok(false)`: no room.
    fn write_scratch(&mut self, range: std::ops::Range<usize>) -> Result<bool, ()> {
        let mut channel = self.rtc.channel(self.id).ok_or(())?;
        let len = range.len();
        let taken = channel.write(true, &self.scratch[range]).map_err(|_| ())?;
        if taken {
            self.written += len;
        }
        Ok(taken)
    }

    /// Writes the pending acknowledgement on its own.
    fn ack_alone(&mut self) {
        self.scratch.clear();
        self.receiver.put_ack(self.now, self.scratch);
        if self.write_scratch(0..self.scratch.len()) == Ok(true) {
            self.receiver.acked();
            self.acks += 1;
        }
    }
}

impl Wire for ChannelWire<'_> {
    fn data(&mut self, header: Header, payload: &[u8]) -> Result<Option<usize>, ()> {
        self.scratch.clear();
        if self.receiver.ack_pending() {
            self.receiver.put_ack(self.now, self.scratch);
        }
        let ack = self.scratch.len();
        header.write(self.scratch);
        self.scratch.extend_from_slice(payload);
        let end = self.scratch.len();
        let mut start = 0;
        if ack > 0 && end > self.frame_max {
            // Together they would take two chunks: the acknowledgement goes on its own.
            if !self.write_scratch(0..ack)? {
                return Ok(None);
            }
            self.receiver.acked();
            self.acks += 1;
            start = ack;
        }
        if !self.write_scratch(start..end)? {
            return Ok(None);
        }
        if ack > 0 && start == 0 {
            self.receiver.acked();
            self.acks += 1;
        }
        Ok(Some(end - start))
    }
}

/// The link's side: where the hidden channel meets the link's channels, window and events.
impl super::Link {
    /// Sends what rtcmesh's own retransmission has due (see [`Reliable::flush`]); `wrote`:
    /// other data goes to the peer this turn. True if anything was written.
    pub(super) fn flush_reliable(&mut self, now: Instant, wrote: bool) -> bool {
        let written = self.reliable.flush(now, &mut self.rtc, wrote);
        if written > 0 {
            self.unsent = true;
        }
        written > 0
    }

    /// Writes a message of a reliable channel through rtcmesh's own retransmission.
    /// `Ok(false)`: no room now (it waits in the queue).
    pub(super) fn write_reliable(
        &mut self,
        now: Instant,
        index: usize,
        data: &[u8],
    ) -> Result<bool, ()> {
        if !self.reliable.has_room(index, data.len()) {
            return Ok(false);
        }
        // The window counts what the sender holds until it is acknowledged (see
        // `refresh_window`), as it counts what SCTP holds for the other channels.
        self.reliable.send(now, &mut self.rtc, index, data)?;
        self.window.wrote(data.len());
        let ch = &mut self.channels[index];
        ch.stats.packets_sent += 1;
        ch.stats.bytes_sent += data.len() as u64;
        Ok(true)
    }

    /// A message on the hidden channel: its complete messages become packet events.
    pub(super) fn on_reliable_message(&mut self, now: Instant, data: Vec<u8>) {
        let (reliable, channels, peer) = (&mut self.reliable, &mut self.channels, self.peer);
        let (counts, events) = (&mut self.counts, &mut self.events);
        let outcome = reliable.on_message(now, data, &mut |index, payload| {
            let ch = &mut channels[index];
            counts.packets_received += 1;
            ch.stats.packets_received += 1;
            ch.stats.bytes_received += payload.len() as u64;
            events.push_back(super::LinkEvent::App(Event::Packet(Packet {
                from: peer,
                channel: ch.spec.transfer_channel,
                mode: ch.spec.mode,
                data: payload,
            })));
        });
        match outcome {
            Received::OutOfWindow => self.counts.fragments_out_of_window += 1,
            Received::Malformed => self.counts.frames_malformed += 1,
            Received::Oversized => {
                // What SCTP does to a message above our advertised size: the peer ignored
                // it, and loses its connection.
                self.counts.packets_too_large += 1;
                self.counts.peers_disconnected_for_abuse += 1;
                self.end(super::Loss::Abuse);
            }
            Received::Accepted | Received::Duplicate => {}
        }
    }
}

#[cfg(test)]
mod tests;

/// The fuzz target's body (`_internal_test_exports::reliable_messages`): arbitrary bytes, cut
/// into messages, to one peer's sending and receiving halves as if they came from the hidden
/// channel, with time passing between them. Nothing may panic, and the bounds must hold.
#[cfg(feature = "_internal_test_exports")]
pub(crate) fn fuzz(data: &[u8]) {
    struct Null;
    impl Wire for Null {
        fn data(&mut self, _: Header, payload: &[u8]) -> Result<Option<usize>, ()> {
            Ok(Some(payload.len() + frame::MAX_DATA_HEADER))
        }
    }
    const BUDGET: usize = 4096;
    const MAX_MESSAGE: usize = 2048;
    let mut now = Instant::now();
    let mut sender = Sender::new(3, 300, 64 * 1024);
    let mut receiver = Receiver::new([true, false, true].into_iter(), BUDGET, MAX_MESSAGE);
    // Something in flight for acknowledgements to act on.
    for (channel, len) in [(0, 10), (2, 700), (0, 5)] {
        sender.send(now, channel, &vec![7; len], &mut Null);
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (message, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        now += Duration::from_millis(u64::from(len % 16));
        if let Ok(decoded) = frame::decode(message) {
            if let Some(ack) = &decoded.ack {
                sender.on_ack(now, ack);
            }
            if let Some(d) = &decoded.data {
                receiver.on_data(now, d, message.to_vec(), &mut |i, m| {
                    assert!(i == 0 || i == 2, "delivered on channel {i}");
                    assert!(m.len() <= MAX_MESSAGE);
                });
            }
        }
        sender.on_timeout(now);
        sender.transmit(now, &mut Null);
        let mut ack = Vec::new();
        receiver.put_ack(now, &mut ack);
        receiver.acked();
        assert!(
            ack.is_empty() || frame::decode(&ack).is_ok(),
            "our own ACK parses"
        );
        assert!(receiver.held_bytes() <= BUDGET);
        if let Err(drift) = sender.check_accounting() {
            panic!("the sender's counts drifted: {drift}");
        }
    }
}
