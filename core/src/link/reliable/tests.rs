//! The two halves talking over a simulated lossy wire (no SCTP): what arrives, in which order,
//! and how fast a loss is repaired.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::frame;
use super::receiver::{Received, Receiver};
use super::sender::{Header, Sender, Wire};

const FRAME_MAX: usize = 1212;

/// Messages written by one side this turn.
struct VecWire<'a> {
    out: &'a mut Vec<Vec<u8>>,
}

impl Wire for VecWire<'_> {
    fn data(&mut self, header: Header, payload: &[u8]) -> Result<Option<usize>, ()> {
        let mut m = Vec::new();
        header.write(&mut m);
        m.extend_from_slice(payload);
        let len = m.len();
        self.out.push(m);
        Ok(Some(len))
    }
}

struct Side {
    sender: Sender,
    receiver: Receiver,
    delivered: Vec<(Instant, usize, Vec<u8>)>,
    outcomes: Vec<Received>,
}

impl Side {
    fn new() -> Side {
        Side {
            sender: Sender::new(2, FRAME_MAX, 1 << 20),
            receiver: Receiver::new([true, true].into_iter(), 1 << 20, 64 * 1024),
            delivered: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    fn on_message(&mut self, now: Instant, m: &[u8]) {
        let decoded = frame::decode(m).expect("well-formed");
        if let Some(ack) = &decoded.ack {
            assert!(self.sender.on_ack(now, ack));
        }
        if let Some(data) = &decoded.data {
            let delivered = &mut self.delivered;
            let outcome = self.receiver.on_data(now, data, m.to_vec(), &mut |i, p| {
                delivered.push((now, i, p))
            });
            self.outcomes.push(outcome);
        }
    }

    /// Timers, then what is due out.
    fn turn(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        self.sender.on_timeout(now);
        self.sender.transmit(now, &mut VecWire { out });
        if self.receiver.ack_deadline().is_some_and(|at| at <= now) {
            let mut m = Vec::new();
            self.receiver.put_ack(now, &mut m);
            self.receiver.acked();
            out.push(m);
        }
    }
}

/// Decides whether message number `n` from side `from` is lost.
type Drop = dyn FnMut(usize, usize, &[u8]) -> bool;

/// Two sides and the wire between them: `one_way` latency, and `drop` decides per message
/// (direction, index of the message in that direction) whether it is lost.
struct Pair {
    now: Instant,
    sides: [Side; 2],
    wire: VecDeque<(Instant, usize, Vec<u8>)>,
    one_way: Duration,
    sent: [usize; 2],
    drop: Box<Drop>,
    /// Messages waiting for room in the window (as the link's queue holds them).
    backlog: [VecDeque<(usize, Vec<u8>)>; 2],
}

impl Pair {
    fn new(one_way: Duration, drop: impl FnMut(usize, usize, &[u8]) -> bool + 'static) -> Pair {
        Pair {
            now: Instant::now(),
            sides: [Side::new(), Side::new()],
            wire: VecDeque::new(),
            one_way,
            sent: [0; 2],
            drop: Box::new(drop),
            backlog: Default::default(),
        }
    }

    fn send(&mut self, from: usize, channel: usize, data: &[u8]) -> bool {
        let side = &mut self.sides[from];
        // The link's send window (64 KiB here) bounds what the sender holds.
        let window = side.sender.outstanding() + data.len() > 64 * 1024;
        if window && side.sender.outstanding() > 0 || !side.sender.has_room(channel, data.len()) {
            return false;
        }
        let mut out = Vec::new();
        side.sender
            .send(self.now, channel, data, &mut VecWire { out: &mut out });
        self.put(from, out);
        true
    }

    /// Sends now or as soon as the window has room, in order.
    fn queue(&mut self, from: usize, channel: usize, data: Vec<u8>) {
        self.backlog[from].push_back((channel, data));
        self.flush_backlog(from);
    }

    fn flush_backlog(&mut self, from: usize) {
        while let Some((channel, data)) = self.backlog[from].pop_front() {
            if !self.send(from, channel, &data) {
                self.backlog[from].push_front((channel, data));
                return;
            }
        }
    }

    fn put(&mut self, from: usize, out: Vec<Vec<u8>>) {
        for m in out {
            let n = self.sent[from];
            self.sent[from] += 1;
            if !(self.drop)(from, n, &m) {
                self.wire.push_back((self.now + self.one_way, 1 - from, m));
            }
        }
    }

    /// Runs 1 ms steps for `d`.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(1);
            while self.wire.front().is_some_and(|m| m.0 <= self.now) {
                let (_, to, m) = self.wire.pop_front().expect("checked");
                self.sides[to].on_message(self.now, &m);
            }
            for s in 0..2 {
                self.flush_backlog(s);
                let mut out = Vec::new();
                self.sides[s].turn(self.now, &mut out);
                self.put(s, out);
            }
        }
    }

    fn delivered(&self, to: usize) -> Vec<Vec<u8>> {
        self.sides[to]
            .delivered
            .iter()
            .map(|d| d.2.clone())
            .collect()
    }
}

fn is_data(m: &[u8]) -> bool {
    frame::decode(m).is_ok_and(|d| d.data.is_some())
}

#[test]
fn every_message_arrives_once_and_in_order_through_heavy_loss() {
    // 15 % of everything lost, data and acknowledgements, both ways (a fixed pattern).
    let mut x: u64 = 7;
    let mut pair = Pair::new(Duration::from_millis(20), move |_, _, _| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % 100 < 15
    });
    let mut expected: [Vec<Vec<u8>>; 2] = Default::default();
    for i in 0..400u32 {
        for from in 0..2 {
            // Small messages and, every tenth, one of several fragments.
            let len = if i % 10 == 0 { 3000 } else { 60 };
            let mut m = vec![from as u8; len];
            m[..4].copy_from_slice(&i.to_le_bytes());
            expected[1 - from].push(m.clone());
            pair.queue(from, 0, m);
        }
        pair.run(Duration::from_millis(10));
    }
    pair.run(Duration::from_secs(10));
    for (to, expected) in expected.iter().enumerate() {
        assert_eq!(&pair.delivered(to), expected, "side {to}");
        let c = pair.sides[1 - to].sender.counters;
        assert!(c.retransmissions > 50, "{c:?}");
    }
}

#[test]
fn a_lost_retransmission_is_sent_again_within_round_trips_not_seconds() {
    // Message 10's first transmission and its first retransmission are both lost.
    let mut seen = 0;
    let mut pair = Pair::new(Duration::from_millis(20), move |from, _, m| {
        let Ok(frame::Message { data: Some(d), .. }) = frame::decode(m) else {
            return false;
        };
        if from == 0 && d.sequence == 10 {
            seen += 1;
            return seen <= 2;
        }
        false
    });
    let start = pair.now;
    for i in 0..60u8 {
        // A game's 60 Hz inputs.
        assert!(pair.send(0, 1, &[i; 80]));
        pair.run(Duration::from_millis(16));
    }
    pair.run(Duration::from_secs(1));
    let delivered = &pair.sides[1].delivered;
    assert_eq!(delivered.len(), 60);
    let sent_at = start + Duration::from_millis(16 * 10);
    let at = delivered[10].0;
    // Round trip 40 ms: each loss is found about 9/8 of a round trip after it was sent, once
    // a later message is acknowledged; two losses cost about three round trips, not SCTP's
    // 1 s + 2 s timer.
    let late = at - sent_at;
    assert!(late < Duration::from_millis(250), "{late:?}");
    assert!(
        pair.sides[0].sender.counters.retransmissions >= 2,
        "{:?}",
        pair.sides[0].sender.counters
    );
}

#[test]
fn a_lost_last_message_is_probed_after_a_silence() {
    // Nothing follows the last message, so no acknowledgement shows it missing.
    let mut pair = Pair::new(Duration::from_millis(20), |from, _, m| {
        from == 0
            && frame::decode(m)
                .ok()
                .and_then(|d| d.data)
                .is_some_and(|d| d.sequence == 4 && d.transmission == 4)
    });
    for i in 0..5u8 {
        assert!(pair.send(0, 0, &[i; 10]));
        pair.run(Duration::from_millis(5));
    }
    pair.run(Duration::from_millis(500));
    assert_eq!(pair.sides[1].delivered.len(), 5);
    assert!(pair.sides[0].sender.counters.probes >= 1);
    let late = pair.sides[1].delivered[4].0 - (pair.now - Duration::from_millis(500));
    assert!(late < Duration::from_millis(300), "{late:?}");
}

#[test]
fn the_congestion_window_halves_once_per_round_of_losses_and_grows_back() {
    let mut pair = Pair::new(Duration::from_millis(10), |from, n, m| {
        // Three data messages lost in a row, once.
        from == 0 && (100..103).contains(&n) && is_data(m)
    });
    let mut sent = 0u32;
    let mut windows = Vec::new();
    for _ in 0..300 {
        while pair.send(0, 0, &[0; 1000]) {
            sent += 1;
        }
        pair.run(Duration::from_millis(1));
        windows.push(pair.sides[0].sender.cwnd);
    }
    // Every fall of the window: exactly one, a halving (three losses in one round trip are
    // one congestion event), and it grows again after.
    let falls: Vec<(usize, usize, usize)> = windows
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[1] < w[0])
        .map(|(i, w)| (i, w[0], w[1]))
        .collect();
    println!("falls {falls:?}, last {}", windows.last().expect("some"));
    assert_eq!(falls.len(), 1, "{falls:?}");
    let (at, before, after) = falls[0];
    // Halved (sampled once a millisecond: slow start may have grown it within the step first).
    assert!(after <= before * 2 / 3, "{before} → {after}");
    assert!(
        windows.last().copied().expect("some") > after,
        "grows again"
    );
    assert!(at > 0);
    pair.run(Duration::from_secs(2));
    assert_eq!(pair.sides[1].delivered.len() as u32, sent);
}

#[test]
fn an_acknowledgement_of_what_was_never_sent_is_ignored() {
    let mut sender = Sender::new(1, FRAME_MAX, 1 << 20);
    let now = Instant::now();
    let mut out = Vec::new();
    sender.send(now, 0, b"x", &mut VecWire { out: &mut out });
    let mut m = Vec::new();
    frame::put_ack(&mut m, &[(0, 1_000_000_000)], 0);
    let ack = frame::decode(&m).expect("ack").ack.expect("ack");
    assert!(!sender.on_ack(now, &ack));
    assert_eq!(sender.in_flight(), out[0].len());
    // A huge range that covers what was sent costs what was sent, not its width.
    m.clear();
    frame::put_ack(&mut m, &[(0, 0)], u64::MAX >> 2);
    let ack = frame::decode(&m).expect("ack").ack.expect("ack");
    assert!(sender.on_ack(now, &ack));
    assert_eq!(sender.in_flight(), 0);
}

#[test]
fn a_lone_message_after_a_quiet_spell_is_acknowledged_at_once_and_never_probed() {
    // The probe timeout allows for the receiver's acknowledgement delay (25 ms) with only a
    // few milliseconds to spare: on a loaded machine, where timers fire late, a lone message
    // acknowledged after that delay was probed for nothing. Nothing else in flight: the
    // sender asks for the acknowledgement at once.
    let mut pair = Pair::new(Duration::from_millis(5), |_, _, _| false);
    for round in 0..3u8 {
        assert!(pair.send(0, 0, &[round; 8]));
        pair.run(Duration::from_millis(2));
        // Sent while the first is in flight: this one waits for company as usual.
        assert!(pair.send(0, 0, &[round; 8]));
        pair.run(Duration::from_millis(10));
        assert_eq!(
            pair.sides[0].sender.outstanding(),
            8,
            "round {round}: the lone one acknowledged at once, the other not yet"
        );
        pair.run(Duration::from_secs(2));
        assert_eq!(pair.sides[0].sender.outstanding(), 0);
    }
    assert_eq!(pair.sides[0].sender.counters.retransmissions, 0);
    assert_eq!(pair.delivered(1).len(), 6);
}

#[test]
fn probes_lost_on_a_changed_path_do_not_stall_what_is_sent_after_them() {
    // The peer's address changes: our probes go to its old address and are lost, while the
    // acknowledgement of the originals, held up on the way, arrives after them. The probes'
    // fragments need nothing more. A message sent next and lost must still be probed and
    // repaired; when the probes kept their place in flight, each probe timeout chose them
    // again, sent nothing for fragments already acknowledged, and the sender stalled for
    // good (the property a_peer_whose_address_changes_mid_stream failed about 1 case in 200).
    let mut sender = Sender::new(1, FRAME_MAX, 1 << 20);
    let mut now = Instant::now();
    let mut out = Vec::new();
    sender.send(now, 0, b"a", &mut VecWire { out: &mut out });
    sender.send(now, 0, b"b", &mut VecWire { out: &mut out });
    now += Duration::from_secs(1);
    sender.on_timeout(now);
    sender.transmit(now, &mut VecWire { out: &mut out });
    assert_eq!(sender.counters.probes, 2);
    assert_eq!(out.len(), 4, "the originals and the two probes");
    // The originals' acknowledgement (transmissions 0 and 1) arrives; the probes (2, 3) are
    // lost.
    let mut m = Vec::new();
    frame::put_ack(&mut m, &[(0, 1)], 0);
    assert!(sender.on_ack(now, &frame::decode(&m).expect("ack").ack.expect("ack")));
    assert_eq!(sender.outstanding(), 0);
    // The next message (transmission 4) is lost too.
    sender.send(now, 0, b"c", &mut VecWire { out: &mut out });
    let sent = out.len();
    for _ in 0..5000 {
        now += Duration::from_millis(1);
        sender.on_timeout(now);
        sender.transmit(now, &mut VecWire { out: &mut out });
    }
    let again: Vec<frame::Data> = out[sent..]
        .iter()
        .filter_map(|m| frame::decode(m).ok()?.data)
        .collect();
    assert!(
        again.iter().any(|d| d.sequence == 2),
        "message c probed within 5 s: {again:?}"
    );
}
