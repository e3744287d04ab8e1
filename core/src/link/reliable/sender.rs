//! The sending half: numbers each fragment per channel and each transmission per peer, keeps
//! what is not acknowledged yet, finds losses from acknowledgements and retransmits them, probes
//! after a silence, and paces new data with a congestion window of its own.
//!
//! Loss detection follows QUIC's (RFC 9002 §6): a transmission is lost once one sent after it
//! is acknowledged and either three later ones are, or it is older than 9/8 of the round trip.
//! A lost fragment is sent again with a new transmission number, so a lost retransmission is
//! found the same way and sent again (SCTP, in sctp-proto 0.10, fast-retransmits a chunk only
//! once). With nothing acknowledged for a probe timeout (`srtt + 4·rttvar + max_ack_delay`,
//! at least the round trip plus a few milliseconds, doubling while nothing comes back, at most
//! [`MAX_PROBE_TIMEOUT`]), the oldest unacknowledged fragments are sent again as probes.
//!
//! Congestion control is NewReno's (RFC 9002 §7) in bytes: slow start from
//! [`INITIAL_WINDOW_FRAMES`] frames, halved once per round trip with losses, back to the
//! minimum after repeated probe timeouts, at most the peer's `sctp_send_buffer`.
//! Retransmissions go out whatever the window (they replace bytes that left the network).
//! SCTP's own congestion control still runs underneath.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::frame::{self, Ack, MAX_DATA_HEADER};

use super::receiver::{MAX_ACK_DELAY, REORDER_WINDOW};

/// Frames the congestion window starts with (RFC 9002's 10 packets).
const INITIAL_WINDOW_FRAMES: usize = 10;
/// The least congestion window, in frames.
const MIN_WINDOW_FRAMES: usize = 2;
/// The most transmissions one peer keeps track of (in flight, or acknowledged behind one still
/// in flight); new messages wait beyond it.
pub(crate) const MAX_TRACKED: usize = 2 * REORDER_WINDOW as usize;
/// Timer granularity: the least a round-trip variation counts for.
const GRANULARITY: Duration = Duration::from_millis(2);
/// The round trip assumed before the first measurement (ICE's, when it has one, replaces it).
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// The longest wait between probes while nothing is acknowledged (a path that comes back is
/// probed within this).
pub(crate) const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probe timeouts in a row after which the congestion window falls to its minimum.
const PERSISTENT_CONGESTION: u32 = 3;
/// Later transmissions acknowledged that make an earlier one lost.
const PACKET_THRESHOLD: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    InFlight,
    Acked,
    Lost,
}

/// One transmission of a fragment.
#[derive(Debug, Clone, Copy)]
struct Tx {
    channel: u16,
    sequence: u64,
    sent_at: Instant,
    bytes: u32,
    state: State,
}

/// A fragment not acknowledged yet.
#[derive(Debug)]
struct Fragment {
    payload: Vec<u8>,
    fin: bool,
    acked: bool,
    /// Its latest transmission (`None`: not sent yet).
    last_tx: Option<u64>,
}

#[derive(Debug, Default)]
struct Channel {
    /// The sequence number of `fragments[0]`.
    base: u64,
    fragments: VecDeque<Fragment>,
}

impl Channel {
    fn peek(&self, sequence: u64) -> Option<&Fragment> {
        let i = usize::try_from(sequence.checked_sub(self.base)?).ok()?;
        self.fragments.get(i)
    }

    fn get(&mut self, sequence: u64) -> Option<&mut Fragment> {
        let i = usize::try_from(sequence.checked_sub(self.base)?).ok()?;
        self.fragments.get_mut(i)
    }
}

/// The round-trip estimate (RFC 6298 / RFC 9002 §5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rtt {
    pub smoothed: Duration,
    pub var: Duration,
    pub latest: Duration,
    pub min: Duration,
    pub measured: bool,
    /// ICE's latest round trip (a floor for the probe timeout).
    pub ice: Option<Duration>,
}

impl Default for Rtt {
    fn default() -> Self {
        Rtt {
            smoothed: INITIAL_RTT,
            var: INITIAL_RTT / 2,
            latest: INITIAL_RTT,
            min: INITIAL_RTT,
            measured: false,
            ice: None,
        }
    }
}

impl Rtt {
    /// A round-trip sample: from a transmission to the acknowledgement that first covered it,
    /// less the delay the receiver reports it held that acknowledgement (at most
    /// `MAX_ACK_DELAY`: our peer waits that long at most for data to ride along).
    fn sample(&mut self, rtt: Duration, ack_delay: Duration) {
        let rtt = if rtt > ack_delay {
            rtt - ack_delay
        } else {
            rtt
        };
        self.latest = rtt;
        if !self.measured {
            self.measured = true;
            self.min = rtt;
            self.smoothed = rtt;
            self.var = rtt / 2;
            return;
        }
        self.min = self.min.min(rtt);
        let diff = self.smoothed.abs_diff(rtt);
        self.var = (self.var * 3 + diff) / 4;
        self.smoothed = (self.smoothed * 7 + rtt) / 8;
    }

    /// The probe timeout before any backoff.
    pub fn probe_timeout(&self) -> Duration {
        let pto = self.smoothed + (self.var * 4).max(GRANULARITY) + MAX_ACK_DELAY;
        let floor = self.min.max(self.ice.unwrap_or_default()) + GRANULARITY;
        pto.max(floor)
    }

    /// How much older than the round trip a transmission may be before a later one's
    /// acknowledgement makes it lost.
    fn loss_delay(&self) -> Duration {
        (self.latest.max(self.smoothed) * 9 / 8).max(GRANULARITY)
    }
}

/// Counters of the sending half.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SenderCounters {
    pub transmissions: u64,
    pub retransmissions: u64,
    pub probes: u64,
    pub acks_invalid: u64,
}

/// The sending half of one peer.
#[derive(Debug)]
pub(crate) struct Sender {
    /// By layout index.
    channels: Vec<Channel>,
    /// `txs[i]` is transmission `next_tx - txs.len() + i`.
    txs: VecDeque<Tx>,
    next_tx: u64,
    /// Fragments lost (or probed) waiting to be sent again, and new ones the wire had no room
    /// for yet: (channel, sequence).
    retransmit: VecDeque<(u16, u64)>,
    unsent: VecDeque<(u16, u64)>,
    in_flight: usize,
    in_flight_frames: usize,
    /// Fragments taken and not acknowledged yet (all channels), and their payload bytes.
    held: usize,
    held_bytes: usize,
    pub cwnd: usize,
    ssthresh: usize,
    recovery_start: Option<Instant>,
    pub rtt: Rtt,
    largest_acked: Option<u64>,
    loss_time: Option<Instant>,
    probes_in_a_row: u32,
    last_sent: Option<Instant>,
    /// The largest frame (a DATA header and its payload), so each fits one SCTP chunk.
    frame_max: usize,
    max_cwnd: usize,
    pub counters: SenderCounters,
}

/// Where DATA frames go (one SCTP message each, maybe with an acknowledgement in front).
pub(crate) trait Wire {
    /// Sends one DATA frame. `Ok(Some(size))`: taken, `size` bytes; `Ok(None)`: no room now;
    /// `Err`: never (the channel is closed).
    fn data(&mut self, header: Header, payload: &[u8]) -> Result<Option<usize>, ()>;
}

/// The fields of a DATA frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub transmission: u64,
    pub floor: u64,
    pub channel: u16,
    pub sequence: u64,
    pub fin: bool,
    /// The receiver should acknowledge at once: the congestion window is full, or nothing else
    /// is in flight (a lone message, after a quiet spell, gets no company to wait for, and
    /// its acknowledgement must not come within a timer's slop of the probe timeout).
    pub ack_now: bool,
}

impl Header {
    pub fn write(&self, out: &mut Vec<u8>) {
        frame::put_data_header(
            out,
            self.transmission,
            self.floor,
            self.channel,
            self.sequence,
            self.fin,
            self.ack_now,
        );
    }
}

impl Sender {
    pub fn new(channels: usize, frame_max: usize, max_cwnd: usize) -> Sender {
        let frame_max = frame_max.max(MAX_DATA_HEADER + 64);
        let min = MIN_WINDOW_FRAMES * frame_max;
        Sender {
            channels: (0..channels).map(|_| Channel::default()).collect(),
            txs: VecDeque::new(),
            next_tx: 0,
            retransmit: VecDeque::new(),
            unsent: VecDeque::new(),
            in_flight: 0,
            in_flight_frames: 0,
            held: 0,
            held_bytes: 0,
            cwnd: (INITIAL_WINDOW_FRAMES * frame_max).min(max_cwnd.max(min)),
            ssthresh: usize::MAX,
            recovery_start: None,
            rtt: Rtt::default(),
            largest_acked: None,
            loss_time: None,
            probes_in_a_row: 0,
            last_sent: None,
            frame_max,
            max_cwnd: max_cwnd.max(min),
            counters: SenderCounters::default(),
        }
    }

    fn min_cwnd(&self) -> usize {
        MIN_WINDOW_FRAMES * self.frame_max
    }

    /// The payload a fragment of a message on `channel` carries: what the frame leaves after
    /// its header, sized for the numbers it will carry (a little ahead, so that the fragments
    /// of one message fit; a retransmission numbered much later may take two chunks).
    fn fragment_size(&self, channel: usize) -> usize {
        let ahead = 64 + self.held as u64;
        let sequence = self.channels.get(channel).map_or(0, |c| c.base) + ahead;
        let header = 1
            + frame::varint_len(self.next_tx + ahead)
            + frame::varint_len(ahead + self.txs.len() as u64)
            + frame::varint_len(channel as u64)
            + frame::varint_len(sequence);
        self.frame_max - header.min(MAX_DATA_HEADER)
    }

    /// Bytes sent and not acknowledged or lost.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Payload bytes taken and not acknowledged yet (sent or waiting to be).
    pub fn outstanding(&self) -> usize {
        self.held_bytes
    }

    /// Whether a message of `len` bytes on `channel` may be taken now: the fragments it
    /// needs fit what the receiver accepts out of order. (How much the sender may hold is the
    /// link's send window; how much may be in flight, the congestion window.)
    pub fn has_room(&self, channel: usize, len: usize) -> bool {
        let frames = len.div_ceil(self.fragment_size(channel)).max(1);
        let Some(ch) = self.channels.get(channel) else {
            return false;
        };
        self.held + frames <= MAX_TRACKED && ch.fragments.len() + frames <= REORDER_WINDOW as usize
    }

    /// Whether the congestion window lets a new fragment go (retransmissions always go).
    fn window_open(&self) -> bool {
        (self.in_flight == 0 || self.in_flight < self.cwnd) && self.txs.len() < MAX_TRACKED
    }

    /// Takes a message (check [`has_room`](Self::has_room) first) and sends its fragments.
    pub fn send(&mut self, now: Instant, channel: usize, data: &[u8], wire: &mut dyn Wire) {
        let size = self.fragment_size(channel);
        let ch = &mut self.channels[channel];
        let mut chunks = data.chunks(size).peekable();
        let frames = data.len().div_ceil(size).max(1);
        self.held += frames;
        self.held_bytes += data.len();
        if data.is_empty() {
            ch.fragments.push_back(Fragment {
                payload: Vec::new(),
                fin: true,
                acked: false,
                last_tx: None,
            });
            self.unsent
                .push_back((channel as u16, ch.base + ch.fragments.len() as u64 - 1));
        }
        while let Some(chunk) = chunks.next() {
            ch.fragments.push_back(Fragment {
                payload: chunk.to_vec(),
                fin: chunks.peek().is_none(),
                acked: false,
                last_tx: None,
            });
            self.unsent
                .push_back((channel as u16, ch.base + ch.fragments.len() as u64 - 1));
        }
        self.transmit(now, wire);
    }

    /// Sends what waits: retransmissions first, then new fragments while the wire takes them.
    pub fn transmit(&mut self, now: Instant, wire: &mut dyn Wire) {
        while let Some(&(channel, sequence)) = self.retransmit.front() {
            match self.transmit_one(now, channel, sequence, wire) {
                Some(true) => {
                    self.retransmit.pop_front();
                }
                Some(false) => return,
                None => {
                    self.retransmit.pop_front(); // acknowledged meanwhile
                }
            }
        }
        while let Some(&(channel, sequence)) = self.unsent.front() {
            if !self.window_open() {
                return;
            }
            match self.transmit_one(now, channel, sequence, wire) {
                Some(false) => return,
                _ => {
                    self.unsent.pop_front();
                }
            }
        }
    }

    /// Whether anything waits that may be sent now.
    pub fn has_pending(&self) -> bool {
        !self.retransmit.is_empty() || (!self.unsent.is_empty() && self.window_open())
    }

    /// One transmission of a fragment. `None`: it needs none (acknowledged); `Some(false)`: the
    /// wire is full.
    fn transmit_one(
        &mut self,
        now: Instant,
        channel: u16,
        sequence: u64,
        wire: &mut dyn Wire,
    ) -> Option<bool> {
        let floor = self.next_tx - self.txs.len() as u64;
        let tx = self.next_tx;
        let ch = self.channels.get_mut(usize::from(channel))?;
        let fragment = ch.get(sequence).filter(|f| !f.acked)?;
        let retransmission = fragment.last_tx.is_some();
        let bytes_before = self.in_flight;
        let header = Header {
            transmission: tx,
            floor,
            channel,
            sequence,
            fin: fragment.fin,
            ack_now: bytes_before == 0 || bytes_before + self.frame_max >= self.cwnd,
        };
        let bytes = match wire.data(header, &fragment.payload) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Some(false),
            Err(()) => return None,
        };
        fragment.last_tx = Some(tx);
        self.next_tx += 1;
        self.txs.push_back(Tx {
            channel,
            sequence,
            sent_at: now,
            bytes: bytes as u32,
            state: State::InFlight,
        });
        self.in_flight += bytes;
        self.in_flight_frames += 1;
        self.last_sent = Some(now);
        self.counters.transmissions += 1;
        if retransmission {
            self.counters.retransmissions += 1;
        }
        Some(true)
    }

    fn tx_index(&self, tx: u64) -> Option<usize> {
        let base = self.next_tx - self.txs.len() as u64;
        usize::try_from(tx.checked_sub(base)?)
            .ok()
            .filter(|&i| i < self.txs.len())
    }

    /// Applies an acknowledgement. Returns false if it acknowledged a transmission never made
    /// (it is ignored).
    pub fn on_ack(&mut self, now: Instant, ack: &Ack) -> bool {
        let Some(largest) = ack.largest() else {
            return true;
        };
        if largest >= self.next_tx {
            self.counters.acks_invalid += 1;
            return false;
        }
        let base = self.next_tx - self.txs.len() as u64;
        let mut newly_acked = false;
        let mut largest_newly = None;
        let in_flight_before = self.in_flight;
        for &(low, high) in &ack.ranges {
            if high < base {
                break;
            }
            let mut tx = low.max(base);
            while tx <= high {
                let i = (tx - base) as usize;
                let t = self.txs[i];
                if t.state != State::Acked {
                    if t.state == State::InFlight {
                        self.in_flight -= t.bytes as usize;
                        self.in_flight_frames -= 1;
                        self.on_acked_bytes(t.bytes as usize, t.sent_at, in_flight_before);
                        largest_newly = largest_newly.max(Some(tx));
                    }
                    self.txs[i].state = State::Acked;
                    newly_acked = true;
                    if let Some(f) = self.channels[usize::from(t.channel)].get(t.sequence) {
                        f.acked = true;
                        if let Some(last) = f.last_tx.filter(|&last| last > tx) {
                            self.retire_later_copies(i, last);
                        }
                    }
                }
                tx += 1;
            }
        }
        if self.largest_acked.is_none_or(|l| largest > l) {
            self.largest_acked = Some(largest);
            if largest_newly == Some(largest) {
                if let Some(i) = self.tx_index(largest) {
                    let delay = Duration::from_micros(ack.delay_us).min(MAX_ACK_DELAY);
                    let rtt = now.saturating_duration_since(self.txs[i].sent_at);
                    self.rtt.sample(rtt, delay);
                }
            }
        }
        if newly_acked {
            self.probes_in_a_row = 0;
        }
        self.detect_lost(now);
        self.forget_acknowledged();
        true
    }

    /// Transmission `txs[i]` was acknowledged and its fragment had been sent again since:
    /// those later copies need nothing more. They leave the bytes in flight now; kept, they
    /// would fill the congestion window and be chosen as probes, which send nothing for an
    /// acknowledged fragment: if they were lost (probes into a path that had just changed),
    /// nothing later would be acknowledged to show it, and the sender stalled for good.
    fn retire_later_copies(&mut self, i: usize, last: u64) {
        let (channel, sequence) = (self.txs[i].channel, self.txs[i].sequence);
        let end = self.tx_index(last).map_or(self.txs.len(), |e| e + 1);
        for j in i + 1..end {
            let t = self.txs[j];
            if t.state == State::InFlight && t.channel == channel && t.sequence == sequence {
                self.txs[j].state = State::Acked;
                self.in_flight -= t.bytes as usize;
                self.in_flight_frames -= 1;
            }
        }
    }

    fn on_acked_bytes(&mut self, bytes: usize, sent_at: Instant, in_flight_before: usize) {
        if self.recovery_start.is_some_and(|r| sent_at <= r) {
            return;
        }
        // A window the sender does not use is no measure of the path: do not grow it.
        if in_flight_before < self.cwnd / 2 {
            return;
        }
        self.cwnd = if self.cwnd < self.ssthresh {
            self.cwnd + bytes
        } else {
            self.cwnd + self.frame_max * bytes / self.cwnd
        }
        .min(self.max_cwnd);
    }

    /// Marks as lost what a later acknowledgement shows missing, queues the fragments again,
    /// and sets the timer for those not lost yet.
    fn detect_lost(&mut self, now: Instant) {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return;
        };
        let base = self.next_tx - self.txs.len() as u64;
        let delay = self.rtt.loss_delay();
        let mut lost_sent_at = None;
        for i in 0..self.txs.len() {
            let tx = base + i as u64;
            if tx >= largest {
                break;
            }
            let t = self.txs[i];
            if t.state != State::InFlight {
                continue;
            }
            let old_enough = now.saturating_duration_since(t.sent_at) >= delay;
            if largest - tx >= PACKET_THRESHOLD || old_enough {
                self.txs[i].state = State::Lost;
                self.in_flight -= t.bytes as usize;
                self.in_flight_frames -= 1;
                lost_sent_at = lost_sent_at.max(Some(t.sent_at));
                let ch = &mut self.channels[usize::from(t.channel)];
                if let Some(f) = ch.get(t.sequence) {
                    // Sent again already (a probe) if its latest transmission is another.
                    if !f.acked && f.last_tx == Some(tx) {
                        self.retransmit.push_back((t.channel, t.sequence));
                    }
                }
            } else {
                let at = t.sent_at + delay;
                self.loss_time = Some(self.loss_time.map_or(at, |l| l.min(at)));
            }
        }
        if let Some(sent_at) = lost_sent_at {
            self.on_congestion(now, sent_at);
        }
    }

    fn on_congestion(&mut self, now: Instant, sent_at: Instant) {
        if self.recovery_start.is_some_and(|r| sent_at <= r) {
            return; // one reduction per round trip
        }
        self.recovery_start = Some(now);
        self.ssthresh = (self.cwnd / 2).max(self.min_cwnd());
        self.cwnd = self.ssthresh;
    }

    /// Drops the bookkeeping of what needs nothing more.
    fn forget_acknowledged(&mut self) {
        while self.txs.front().is_some_and(|t| t.state != State::InFlight) {
            self.txs.pop_front();
        }
        for ch in &mut self.channels {
            while ch.fragments.front().is_some_and(|f| f.acked) {
                let f = ch.fragments.pop_front().expect("checked");
                ch.base += 1;
                self.held -= 1;
                self.held_bytes -= f.payload.len();
            }
        }
    }

    /// When [`on_timeout`](Self::on_timeout) must run: a loss coming due, or the probe timeout.
    pub fn deadline(&self) -> Option<Instant> {
        if self.loss_time.is_some() {
            return self.loss_time;
        }
        if self.in_flight_frames == 0 {
            return None;
        }
        let last = self.last_sent?;
        Some(last + self.probe_timeout())
    }

    /// The probe timeout now, with its backoff.
    fn probe_timeout(&self) -> Duration {
        let base = self.rtt.probe_timeout();
        let backed_off = base.saturating_mul(1 << self.probes_in_a_row.min(10));
        backed_off.min(MAX_PROBE_TIMEOUT.max(base))
    }

    /// Losses that came due, or a probe: the oldest unacknowledged fragments go again.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.loss_time.is_some_and(|t| now >= t) {
            self.detect_lost(now);
            self.forget_acknowledged();
            return;
        }
        if self.deadline().is_none_or(|t| now < t) {
            return;
        }
        self.probes_in_a_row += 1;
        if self.probes_in_a_row >= PERSISTENT_CONGESTION {
            self.cwnd = self.min_cwnd();
        }
        // The two oldest fragments in flight go again (their acknowledgement, or its absence,
        // tells what happened to the rest).
        let mut probed = 0;
        for t in &self.txs {
            if probed == 2 {
                break;
            }
            // A copy of a fragment acknowledged since is no probe: it would send nothing.
            let needed = self
                .channels
                .get(usize::from(t.channel))
                .and_then(|c| c.peek(t.sequence))
                .is_some_and(|f| !f.acked);
            if t.state == State::InFlight
                && needed
                && !self.retransmit.contains(&(t.channel, t.sequence))
            {
                self.retransmit.push_back((t.channel, t.sequence));
                probed += 1;
            }
        }
        self.counters.probes += probed;
        // The probes restart the timer (even if the wire holds them back).
        self.last_sent = Some(now);
    }

    /// The counts kept alongside the queues agree with the queues (the fuzz target's and the
    /// tests' check: a drift would leak window or hold memory forever). Copies of a fragment
    /// in flight at once (a probe beside its original) each count, so bytes in flight are not
    /// bounded by the bytes held, but by what is tracked.
    #[cfg(any(test, feature = "_internal_test_exports"))]
    pub fn check_accounting(&self) -> Result<(), String> {
        let flying = self.txs.iter().filter(|t| t.state == State::InFlight);
        let (frames, bytes) = flying.fold((0, 0), |(n, b), t| (n + 1, b + t.bytes as usize));
        let fragments = self.channels.iter().flat_map(|c| c.fragments.iter());
        let (held, held_bytes) = fragments.fold((0, 0), |(n, b), f| (n + 1, b + f.payload.len()));
        let checks = [
            ("in_flight", self.in_flight, bytes),
            ("in_flight_frames", self.in_flight_frames, frames),
            ("held", self.held, held),
            ("held_bytes", self.held_bytes, held_bytes),
        ];
        for (name, kept, counted) in checks {
            if kept != counted {
                return Err(format!("{name}: kept {kept}, counted {counted}"));
            }
        }
        if self.in_flight_frames > self.txs.len() || self.held > MAX_TRACKED {
            return Err(format!(
                "tracked: {} txs, {} held",
                self.txs.len(),
                self.held
            ));
        }
        Ok(())
    }

    /// A new path (an ICE restart, a move): probe at the next turn instead of waiting out a
    /// backed-off timeout.
    pub fn on_path_change(&mut self, now: Instant) {
        if self.in_flight_frames > 0 && self.probes_in_a_row > 0 {
            self.probes_in_a_row = 0;
            self.last_sent = Some(now - self.probe_timeout());
        }
    }
}
