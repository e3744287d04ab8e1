//! A numbered reliable stream between two nodes of a [`World`], both ways, with the time each
//! packet was sent and arrived: for checking "exactly once, in order" and measuring how long
//! delivery stalled across a network change.

use std::time::{Duration, Instant};

use rtcmesh::{Event, Target, TransferMode};

use crate::sim::{NodeId, World};

/// One direction of the stream.
#[derive(Debug, Default)]
struct Direction {
    /// Send time of each sequence number.
    sent: Vec<Instant>,
    /// (sequence number, arrival time) in arrival order.
    arrived: Vec<(u32, Instant)>,
    /// Events of the receiver already scanned.
    scanned: usize,
}

/// Reliable packets `[seq u32][filler]` on channel 0, sent both ways between `a` and `b`.
#[derive(Debug)]
pub struct Stream {
    ends: [NodeId; 2],
    dirs: [Direction; 2],
    size: usize,
    /// Every other event of either end, with the node and the time it was collected.
    pub events: Vec<(Instant, NodeId, Event)>,
    /// Events of each end already scanned for `events`.
    scanned: [usize; 2],
}

impl Stream {
    /// A stream of `size`-byte packets (at least 4) between nodes `a` and `b`.
    pub fn new(a: NodeId, b: NodeId, size: usize) -> Stream {
        Stream {
            ends: [a, b],
            dirs: [Direction::default(), Direction::default()],
            size: size.max(4),
            events: Vec::new(),
            scanned: [0, 0],
        }
    }

    /// Sends the next packet each way (a `send` that fails is a test failure: the peer must stay
    /// connected and its queue must hold what waits).
    pub fn send(&mut self, w: &mut World) {
        for d in 0..2 {
            let (from, to) = (self.ends[d], self.ends[1 - d]);
            let seq = self.dirs[d].sent.len() as u32;
            let mut data = seq.to_le_bytes().to_vec();
            data.resize(self.size, (seq % 251) as u8);
            let to_id = w.id(to);
            w.nodes[from]
                .mesh_mut()
                .send(Target::Peer(to_id), TransferMode::Reliable, 0, &data)
                .unwrap_or_else(|e| panic!("send {seq} from node {from}: {e}"));
            self.dirs[d].sent.push(w.now);
            w.drain(from);
        }
    }

    /// Records the packets that arrived since the last call (stamped with the world's time).
    pub fn collect(&mut self, w: &World) {
        for d in 0..2 {
            let (from, to) = (self.ends[d], self.ends[1 - d]);
            let from_id = w.id(from);
            let events = w.nodes[to].events();
            let dir = &mut self.dirs[d];
            for e in &events[dir.scanned.min(events.len())..] {
                if let Event::Packet(p) = e {
                    if p.from == from_id && p.channel == 0 && p.mode == TransferMode::Reliable {
                        let seq = u32::from_le_bytes(p.data[..4].try_into().expect("4 bytes"));
                        dir.arrived.push((seq, w.now));
                    }
                }
            }
            dir.scanned = events.len();
        }
        for (i, &n) in self.ends.iter().enumerate() {
            let events = w.nodes[n].events();
            for e in &events[self.scanned[i].min(events.len())..] {
                if !matches!(e, Event::Packet(_)) {
                    self.events.push((w.now, n, e.clone()));
                }
            }
            self.scanned[i] = events.len();
        }
    }

    /// When the first event matching `f` was collected, and on which node.
    pub fn first_event(&self, f: impl Fn(&Event) -> bool) -> Option<(Instant, NodeId)> {
        self.events
            .iter()
            .find(|(_, _, e)| f(e))
            .map(|&(t, n, _)| (t, n))
    }

    /// Sends one packet each way every `every`, `count` times, calling `at(world, i)` before
    /// the i-th send (to change the network mid-stream).
    pub fn run(
        &mut self,
        w: &mut World,
        count: u32,
        every: Duration,
        mut at: impl FnMut(&mut World, u32),
    ) {
        for i in 0..count {
            at(w, i);
            w.tick();
            self.send(w);
            w.run_for(every);
            self.collect(w);
        }
    }

    /// Runs the world until every packet sent has arrived, or `limit` passes; whether they did.
    pub fn finish(&mut self, w: &mut World, limit: Duration) -> bool {
        let deadline = w.now + limit;
        while w.now < deadline {
            self.collect(w);
            if self.complete() {
                return true;
            }
            w.run_for(Duration::from_millis(10));
        }
        self.collect(w);
        self.complete()
    }

    /// Whether every packet sent has arrived.
    pub fn complete(&self) -> bool {
        self.dirs.iter().all(|d| d.arrived.len() >= d.sent.len())
    }

    /// `Ok` if each direction delivered every packet sent, exactly once and in order.
    pub fn check(&self) -> Result<(), String> {
        for (i, d) in self.dirs.iter().enumerate() {
            let got: Vec<u32> = d.arrived.iter().map(|&(s, _)| s).collect();
            let want: Vec<u32> = (0..d.sent.len() as u32).collect();
            if got != want {
                let first_bad = got.iter().zip(&want).position(|(g, w)| g != w);
                return Err(format!(
                    "direction {i}: {} of {} packets arrived; first difference at index {:?}",
                    got.len(),
                    want.len(),
                    first_bad
                ));
            }
        }
        Ok(())
    }

    /// How long delivery stalled after `change`: per direction, from `change` until the first
    /// packet sent at or after it arrived; the larger of the two.
    pub fn stall_after(&self, change: Instant) -> Option<Duration> {
        self.dirs
            .iter()
            .map(|d| {
                let first = d.sent.iter().position(|&t| t >= change)? as u32;
                let &(_, at) = d.arrived.iter().find(|&&(s, _)| s == first)?;
                Some(at - change)
            })
            .try_fold(Duration::ZERO, |max, s| s.map(|s| max.max(s)))
    }

    /// The longest time any packet took from send to arrival (the worst stall a player saw).
    pub fn worst_latency(&self) -> Duration {
        self.dirs
            .iter()
            .flat_map(|d| {
                d.arrived
                    .iter()
                    .map(move |&(s, at)| at - d.sent[s as usize])
            })
            .max()
            .unwrap_or_default()
    }
}
