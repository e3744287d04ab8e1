//! The receiving half: puts each reliable channel's fragments back in order, reassembles
//! messages, and decides when to acknowledge.
//!
//! Bounded per peer: each channel accepts fragments at most [`REORDER_WINDOW`] ahead of the next
//! one it delivers, all channels together hold at most `budget` bytes out of order (each
//! fragment counted as the whole message it came in, at least [`MIN_FRAGMENT_CHARGE`]), a message being reassembled at most the
//! mesh's packet size, and the acknowledgement state at most [`MAX_ACK_RANGES`] ranges. What
//! does not fit is dropped, counted and not acknowledged: the sender sends it again later, and
//! the fragment the channel waits for always fits (it is delivered, not held).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::frame::{self, Data, MAX_ACK_RANGES};

/// How far past the next fragment a channel accepts (the sender never goes further).
pub(crate) const REORDER_WINDOW: u64 = 4096;

/// The least a held fragment counts against the budget (its bookkeeping).
const MIN_FRAGMENT_CHARGE: usize = 64;

/// The longest an acknowledgement waits for data going the other way to ride along.
pub(crate) const MAX_ACK_DELAY: Duration = Duration::from_millis(25);

/// Fragments received since the last acknowledgement that make one go at once.
const ACK_EVERY: u32 = 16;

/// What became of a DATA frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// New: delivered or held for delivery.
    Accepted,
    /// Seen before (delivered or held): acknowledged again.
    Duplicate,
    /// Beyond the reorder window or the budget: dropped, not acknowledged.
    OutOfWindow,
    /// Not a reliable channel of the layout: dropped, not acknowledged.
    Malformed,
    /// Completed a message larger than the packet size, which is dropped whole (the fragment
    /// is acknowledged: the sender must move on).
    Oversized,
}

/// One reliable channel's reordering.
#[derive(Debug, Default)]
struct Reorder {
    /// The sequence number of the next fragment to deliver.
    next: u64,
    /// Fragments after `next` that arrived early: index `i` holds `next + 1 + i`.
    held: VecDeque<Option<Held>>,
    /// The message being reassembled from its first fragments.
    partial: Vec<u8>,
    /// A message grew past the packet size: its fragments are dropped until its last one.
    skipping: bool,
}

/// A fragment that arrived early: the message it came in, and where its payload starts.
#[derive(Debug)]
struct Held {
    message: Vec<u8>,
    start: usize,
    fin: bool,
}

impl Held {
    /// What it holds: the whole message it came in (an acknowledgement in front included).
    fn len(&self) -> usize {
        self.message.len()
    }
}

/// The receiving half of one peer.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// By layout index: `Some` for the reliable channels.
    channels: Vec<Option<Reorder>>,
    /// Transmission numbers received, as inclusive ranges, highest first.
    received: SmallVec<[(u64, u64); 8]>,
    /// Transmissions below this are acknowledged or given up by the sender: forgotten.
    floor: u64,
    /// When the largest received transmission arrived.
    largest_at: Option<Instant>,
    /// Fragments received since the last acknowledgement, the first one's arrival, and whether
    /// the next acknowledgement should go at once (something arrived out of order).
    unacked: u32,
    unacked_since: Option<Instant>,
    ack_now: bool,
    /// Bytes held out of order (charged), and the most allowed.
    held_bytes: usize,
    budget: usize,
    /// The largest message (the mesh's packet size).
    max_message: usize,
}

impl Receiver {
    /// A receiver for these channels (`reliable[i]`: whether layout channel `i` is reliable).
    pub fn new(reliable: impl Iterator<Item = bool>, budget: usize, max_message: usize) -> Self {
        Receiver {
            channels: reliable.map(|r| r.then(Reorder::default)).collect(),
            received: SmallVec::new(),
            floor: 0,
            largest_at: None,
            unacked: 0,
            unacked_since: None,
            ack_now: false,
            held_bytes: 0,
            budget,
            max_message,
        }
    }

    /// Handles a DATA frame that came in `message` (its payload is `message[data.payload]`, to
    /// the end); complete messages are passed to `deliver` with their channel's layout index,
    /// in order. A message of one fragment is delivered in the buffer it arrived in.
    pub fn on_data(
        &mut self,
        now: Instant,
        data: &Data,
        message: Vec<u8>,
        deliver: &mut dyn FnMut(usize, Vec<u8>),
    ) -> Received {
        let start = data.payload.start.min(message.len());
        // Held out of order, the whole message is kept (no copy): that is what it costs.
        let len = message.len();
        let index = usize::from(data.channel);
        let max_message = self.max_message;
        let Some(Some(ch)) = self.channels.get_mut(index) else {
            return Received::Malformed;
        };
        let outcome = if data.sequence < ch.next {
            Received::Duplicate
        } else if data.sequence == ch.next {
            let mut bad = ch.take(message, start, data.fin, max_message, &mut |m| {
                deliver(index, m)
            });
            ch.next += 1;
            // What waited behind it, in order: `held[0]` is the new `next`.
            while let Some(Some(held)) = ch.held.pop_front() {
                self.held_bytes -= charge(held.len());
                bad |= ch.take(held.message, held.start, held.fin, max_message, &mut |m| {
                    deliver(index, m)
                });
                ch.next += 1;
            }
            if bad {
                Received::Oversized
            } else {
                Received::Accepted
            }
        } else if data.sequence - ch.next > REORDER_WINDOW {
            Received::OutOfWindow
        } else {
            let slot = (data.sequence - ch.next - 1) as usize;
            if ch.held.get(slot).is_some_and(Option::is_some) {
                Received::Duplicate
            } else if self.held_bytes + charge(len) > self.budget {
                Received::OutOfWindow
            } else {
                if ch.held.len() <= slot {
                    ch.held.resize_with(slot + 1, || None);
                }
                ch.held[slot] = Some(Held {
                    message,
                    start,
                    fin: data.fin,
                });
                self.held_bytes += charge(len);
                Received::Accepted
            }
        };
        if matches!(
            outcome,
            Received::Accepted | Received::Duplicate | Received::Oversized
        ) {
            self.record(now, data.transmission, data.floor);
            if outcome == Received::Duplicate || data.ack_now {
                // The sender is retransmitting what arrived (our acknowledgements may be
                // lost), or waits for an acknowledgement to send more.
                self.ack_now = true;
            }
        }
        outcome
    }

    /// Remembers a received transmission for the next acknowledgement.
    fn record(&mut self, now: Instant, tx: u64, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            while self.received.last().is_some_and(|r| r.1 < floor) {
                self.received.pop();
            }
        }
        self.unacked += 1;
        self.unacked_since.get_or_insert(now);
        if self.unacked >= ACK_EVERY {
            self.ack_now = true;
        }
        if tx < self.floor {
            return;
        }
        match self.received.first_mut() {
            None => {
                self.received.push((tx, tx));
                self.largest_at = Some(now);
            }
            Some(top) if tx == top.1 + 1 => {
                top.1 = tx;
                self.largest_at = Some(now);
            }
            Some(top) if tx > top.1 => {
                // A gap: something before it was lost (or is late). Say so at once.
                self.received.insert(0, (tx, tx));
                self.largest_at = Some(now);
                self.ack_now = true;
            }
            Some(_) => {
                // Below the largest: fills (part of) a gap, or repeats.
                self.ack_now = true;
                insert(&mut self.received, tx);
            }
        }
        self.received.truncate(MAX_ACK_RANGES);
    }

    /// When the next acknowledgement is due (`None`: nothing to acknowledge).
    pub fn ack_deadline(&self) -> Option<Instant> {
        let since = self.unacked_since?;
        Some(if self.ack_now {
            since
        } else {
            since + MAX_ACK_DELAY
        })
    }

    /// Whether anything waits to be acknowledged.
    pub fn ack_pending(&self) -> bool {
        self.unacked_since.is_some()
    }

    /// Appends an ACK frame for everything received to `out` (call [`acked`](Self::acked)
    /// once it is on its way).
    pub fn put_ack(&self, now: Instant, out: &mut Vec<u8>) {
        let delay = self
            .largest_at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        frame::put_ack(out, &self.received, delay.as_micros() as u64);
    }

    /// The acknowledgement went out: the next one waits for new data.
    pub fn acked(&mut self) {
        self.unacked = 0;
        self.unacked_since = None;
        self.ack_now = false;
    }

    /// Bytes held out of order.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

impl Reorder {
    /// Adds the next fragment (`message[start..]`) to the message being reassembled; a
    /// complete message goes to `deliver`. Returns true if the message outgrew `max` (it is
    /// dropped whole).
    fn take(
        &mut self,
        mut message: Vec<u8>,
        start: usize,
        fin: bool,
        max: usize,
        deliver: &mut dyn FnMut(Vec<u8>),
    ) -> bool {
        let mut bad = false;
        let payload = &message[start..];
        if !self.skipping {
            if self.partial.len() + payload.len() > max {
                self.partial = Vec::new();
                self.skipping = true;
                bad = true;
            } else if fin && self.partial.is_empty() {
                // The whole message in one fragment: its own buffer, without the header.
                message.drain(..start);
                deliver(message);
            } else {
                self.partial.extend_from_slice(payload);
                if fin {
                    deliver(std::mem::take(&mut self.partial));
                }
            }
        }
        if fin {
            self.skipping = false;
        }
        bad
    }
}

fn charge(len: usize) -> usize {
    len.max(MIN_FRAGMENT_CHARGE)
}

/// Adds `tx` to `ranges` (highest first), merging neighbours.
fn insert(ranges: &mut SmallVec<[(u64, u64); 8]>, tx: u64) {
    // The first range whose low end is at or below tx.
    let i = ranges.iter().position(|r| r.0 <= tx);
    match i {
        Some(i) if ranges[i].1 >= tx => {} // already in it
        Some(i) => {
            // Between ranges[i] (below) and ranges[i - 1] (above, if any).
            let joins_below = ranges[i].1 + 1 == tx;
            let joins_above = i > 0 && ranges[i - 1].0 == tx + 1;
            match (joins_below, joins_above) {
                (true, true) => {
                    ranges[i - 1].0 = ranges[i].0;
                    ranges.remove(i);
                }
                (true, false) => ranges[i].1 = tx,
                (false, true) => ranges[i - 1].0 = tx,
                (false, false) => ranges.insert(i, (tx, tx)),
            }
        }
        None => {
            // Below every range.
            match ranges.last_mut() {
                Some(last) if last.0 == tx + 1 => last.0 = tx,
                _ => ranges.push((tx, tx)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message carrying only a payload (the tests' frames have no header).
    fn m(payload: &[u8]) -> Vec<u8> {
        payload.to_vec()
    }

    fn data(tx: u64, seq: u64, fin: bool) -> Data {
        Data {
            transmission: tx,
            floor: 0,
            channel: 0,
            sequence: seq,
            fin,
            ack_now: false,
            payload: 0..0,
        }
    }

    fn receiver() -> Receiver {
        Receiver::new([true, false].into_iter(), 1 << 20, 1000)
    }

    #[test]
    fn fragments_are_delivered_once_in_order_whatever_order_they_arrive_in() {
        let mut r = receiver();
        let now = Instant::now();
        let mut got = Vec::new();
        let mut deliver = |i: usize, m: Vec<u8>| got.push((i, m));
        // Message A = "ab" (two fragments), B = "c", C = "d".
        let frags = [
            (0, b"a", false),
            (1, b"b", true),
            (2, b"c", true),
            (3, b"d", true),
        ];
        for &tx in &[3u64, 1, 2, 1, 0, 3] {
            let (seq, p, fin) = frags[tx as usize];
            r.on_data(now, &data(tx, seq, fin), m(p), &mut deliver);
        }
        assert_eq!(
            got,
            vec![(0, b"ab".to_vec()), (0, b"c".to_vec()), (0, b"d".to_vec())]
        );
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn an_unreliable_channel_or_an_unknown_one_is_malformed() {
        let mut r = receiver();
        let now = Instant::now();
        let mut d = data(0, 0, true);
        for channel in [1, 2, 9999] {
            d.channel = channel;
            assert_eq!(
                r.on_data(now, &d, m(b"x"), &mut |_, _| panic!("delivered")),
                Received::Malformed
            );
        }
        assert!(!r.ack_pending(), "nothing malformed is acknowledged");
    }

    #[test]
    fn fragments_beyond_the_window_or_the_budget_are_dropped_and_not_acknowledged() {
        let mut r = Receiver::new([true].into_iter(), 200, 1000);
        let now = Instant::now();
        let mut none = |_: usize, _: Vec<u8>| panic!("delivered");
        assert_eq!(
            r.on_data(now, &data(0, REORDER_WINDOW + 1, true), m(b"x"), &mut none),
            Received::OutOfWindow
        );
        assert_eq!(
            r.on_data(now, &data(1, 5, true), m(&[0; 150]), &mut none),
            Received::Accepted
        );
        assert_eq!(
            r.on_data(now, &data(2, 6, true), m(&[0; 100]), &mut none),
            Received::OutOfWindow,
            "over the 200-byte budget"
        );
        let mut out = Vec::new();
        r.put_ack(now, &mut out);
        r.acked();
        let ack = frame::decode(&out).expect("ack").ack.expect("ack");
        assert_eq!(ack.ranges.as_slice(), &[(1, 1)]);
        // The fragment the channel waits for always fits.
        let mut got = 0;
        assert_eq!(
            r.on_data(now, &data(3, 0, true), m(&[0; 500]), &mut |_, _| got += 1),
            Received::Accepted
        );
        assert_eq!(got, 1);
    }

    #[test]
    fn a_message_larger_than_the_packet_size_is_dropped_whole() {
        let mut r = Receiver::new([true].into_iter(), 1 << 20, 10);
        let now = Instant::now();
        let mut got = Vec::new();
        let mut deliver = |_: usize, m: Vec<u8>| got.push(m);
        assert_eq!(
            r.on_data(now, &data(0, 0, false), m(&[1; 8]), &mut deliver),
            Received::Accepted
        );
        assert_eq!(
            r.on_data(now, &data(1, 1, false), m(&[1; 8]), &mut deliver),
            Received::Oversized
        );
        r.on_data(now, &data(2, 2, true), m(&[1; 8]), &mut deliver);
        r.on_data(now, &data(3, 3, true), m(b"ok"), &mut deliver);
        assert_eq!(got, vec![b"ok".to_vec()]);
    }

    #[test]
    fn acknowledgements_wait_for_company_unless_something_is_missing() {
        let mut r = receiver();
        let now = Instant::now();
        r.on_data(now, &data(0, 0, true), m(b"x"), &mut |_, _| {});
        assert_eq!(r.ack_deadline(), Some(now + MAX_ACK_DELAY));
        r.on_data(now, &data(2, 2, true), m(b"x"), &mut |_, _| {});
        assert_eq!(r.ack_deadline(), Some(now), "a gap is reported at once");
        let mut out = Vec::new();
        r.put_ack(now + Duration::from_millis(3), &mut out);
        r.acked();
        let ack = frame::decode(&out).expect("ack").ack.expect("ack");
        assert_eq!(ack.ranges.as_slice(), &[(2, 2), (0, 0)]);
        assert_eq!(ack.delay_us, 3000);
        assert_eq!(r.ack_deadline(), None);
    }

    #[test]
    fn ranges_merge_and_stay_bounded_and_the_floor_forgets_old_ones() {
        let mut ranges: SmallVec<[(u64, u64); 8]> = SmallVec::new();
        for tx in [10, 8, 12, 9, 11, 3, 5, 4] {
            insert(&mut ranges, tx);
        }
        assert_eq!(ranges.as_slice(), &[(8, 12), (3, 5)]);
        let mut r = receiver();
        let now = Instant::now();
        for i in 0..100u64 {
            // Every other transmission lost: a new range each time.
            let mut d = data(2 * i, i, true);
            d.floor = 0;
            r.on_data(now, &d, m(b"x"), &mut |_, _| {});
        }
        assert_eq!(r.received.len(), MAX_ACK_RANGES);
        let mut d = data(200, 100, true);
        d.floor = 190;
        r.on_data(now, &d, m(b"x"), &mut |_, _| {});
        assert!(r.received.iter().all(|x| x.1 >= 190), "{:?}", r.received);
    }
}
