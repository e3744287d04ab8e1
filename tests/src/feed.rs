//! Numbered packets on several channels at once between two nodes of a [`World`] (meshes, or
//! the multiplayer layer: `send_bytes`, relayed between clients), both ways, as a game sends them: a few per channel every tick. Records when each packet was sent and
//! arrived, so a test can check what each channel kind promises (reliable: every packet once, in
//! order; ordered: never out of order or twice; unordered: never twice) and measure how long a
//! channel stayed silent after a network change.

use std::time::{Duration, Instant};

use rtcmesh::{SendError, Target, TransferMode};

use crate::sim::{NodeId, World};

/// One (transfer mode, transfer channel) pair: the channel a packet is sent on.
pub type Kind = (TransferMode, u16);

/// What one direction of one channel saw.
#[derive(Debug, Default, Clone)]
struct Track {
    /// Send time of each sequence number.
    sent: Vec<Instant>,
    /// (sequence number, arrival time) in arrival order.
    arrived: Vec<(u32, Instant)>,
}

/// Packets `[seq u32][filler]` on each of `kinds`, sent both ways between two nodes.
#[derive(Debug)]
pub struct Feed {
    ends: [NodeId; 2],
    kinds: Vec<Kind>,
    size: usize,
    /// Indexed by direction (0: `a` → `b`), then by kind.
    tracks: [Vec<Track>; 2],
    /// Events of each receiving end already scanned.
    scanned: [usize; 2],
}

impl Feed {
    /// A feed of `size`-byte packets (at least 4) on `kinds` between nodes `a` and `b`.
    pub fn new(a: NodeId, b: NodeId, kinds: &[Kind], size: usize) -> Feed {
        Feed {
            ends: [a, b],
            kinds: kinds.to_vec(),
            size: size.max(4),
            tracks: [
                vec![Track::default(); kinds.len()],
                vec![Track::default(); kinds.len()],
            ],
            scanned: [0, 0],
        }
    }

    /// Sends `count` packets on every channel each way, channel after channel as a game's tick
    /// does. A send refused with `QueueFull` is retried after a millisecond of simulated time
    /// (backpressure, not loss), at most 10 s; any other error is a test failure.
    pub fn send(&mut self, w: &mut World, count: usize) {
        for d in 0..2 {
            let (from, to) = (self.ends[d], self.ends[1 - d]);
            let to_id = w.id(to);
            for _ in 0..count {
                for (k, &(mode, channel)) in self.kinds.iter().enumerate() {
                    let track = &mut self.tracks[d][k];
                    let seq = track.sent.len() as u32;
                    let mut data = seq.to_le_bytes().to_vec();
                    data.resize(self.size, (seq % 251) as u8);
                    let mut waited = Duration::ZERO;
                    loop {
                        match w.nodes[from].commands().send(
                            Target::Peer(to_id),
                            mode,
                            channel,
                            &data,
                        ) {
                            Ok(()) => break,
                            Err(SendError::QueueFull(_)) if waited < Duration::from_secs(10) => {
                                w.drain(from);
                                w.run_for(Duration::from_millis(1));
                                waited += Duration::from_millis(1);
                            }
                            Err(e) => panic!("send {seq} on {mode:?}/{channel} from {from}: {e}"),
                        }
                    }
                    track.sent.push(w.now);
                }
            }
            w.drain(from);
        }
    }

    /// Records the packets that arrived since the last call (stamped with the world's time).
    pub fn collect(&mut self, w: &World) {
        for d in 0..2 {
            let (from, to) = (self.ends[d], self.ends[1 - d]);
            let from_id = w.id(from);
            for p in w.nodes[to].packets_since(self.scanned[d]) {
                if p.from != from_id {
                    continue;
                }
                if let Some(k) = self.kinds.iter().position(|&k| k == (p.mode, p.channel)) {
                    let seq = u32::from_le_bytes(p.data[..4].try_into().expect("4 bytes"));
                    self.tracks[d][k].arrived.push((seq, w.now));
                }
            }
            self.scanned[d] = w.nodes[to].event_count();
        }
    }

    /// Every `every`, `per_tick` packets per channel each way, `ticks` times, calling
    /// `at(world, i)` before the i-th tick (to change the network mid-feed).
    pub fn run(
        &mut self,
        w: &mut World,
        ticks: u32,
        every: Duration,
        per_tick: usize,
        mut at: impl FnMut(&mut World, u32),
    ) {
        for i in 0..ticks {
            at(w, i);
            w.tick();
            self.send(w, per_tick);
            w.run_for(every);
            self.collect(w);
        }
    }

    /// Runs the world until `kind` delivered as many packets as were sent each way, or `limit`
    /// passes; whether it did.
    pub fn finish(&mut self, w: &mut World, kind: Kind, limit: Duration) -> bool {
        let k = self.kind(kind);
        let deadline = w.now + limit;
        loop {
            self.collect(w);
            let done = self
                .tracks
                .iter()
                .all(|t| t[k].arrived.len() >= t[k].sent.len());
            if done || w.now >= deadline {
                return done;
            }
            w.run_for(Duration::from_millis(10));
        }
    }

    fn kind(&self, kind: Kind) -> usize {
        self.kinds
            .iter()
            .position(|&k| k == kind)
            .unwrap_or_else(|| panic!("{kind:?} is not fed"))
    }

    /// `Ok` if, each way, `kind` delivered every packet sent, exactly once and in order.
    pub fn check_complete(&self, kind: Kind) -> Result<(), String> {
        let k = self.kind(kind);
        for d in 0..2 {
            let t = &self.tracks[d][k];
            let got: Vec<u32> = t.arrived.iter().map(|&(s, _)| s).collect();
            if got != (0..t.sent.len() as u32).collect::<Vec<_>>() {
                return Err(format!(
                    "{kind:?} direction {d}: {} of {} packets, not each once in order",
                    got.len(),
                    t.sent.len()
                ));
            }
        }
        Ok(())
    }

    /// `Ok` if, each way, `kind` never delivered a packet twice and, with `ordered`, never one
    /// older than a packet it already delivered.
    pub fn check_no_duplicates(&self, kind: Kind, ordered: bool) -> Result<(), String> {
        let k = self.kind(kind);
        for d in 0..2 {
            let arrived = &self.tracks[d][k].arrived;
            let mut seen = vec![false; self.tracks[d][k].sent.len()];
            for (i, &(seq, _)) in arrived.iter().enumerate() {
                let s = seq as usize;
                if s >= seen.len() || std::mem::replace(&mut seen[s], true) {
                    return Err(format!(
                        "{kind:?} direction {d}: packet {seq} twice or unsent"
                    ));
                }
                if ordered && i > 0 && arrived[i - 1].0 > seq {
                    return Err(format!(
                        "{kind:?} direction {d}: packet {seq} after {}",
                        arrived[i - 1].0
                    ));
                }
            }
        }
        Ok(())
    }

    /// Per direction, how long after `change` the first packet sent at or after it arrived on
    /// `kind` (`None`: none did).
    pub fn resumed_after(&self, kind: Kind, change: Instant) -> [Option<Duration>; 2] {
        let k = self.kind(kind);
        [0, 1].map(|d| {
            let t = &self.tracks[d][k];
            let first = t.sent.iter().position(|&s| s >= change)? as u32;
            t.arrived
                .iter()
                .find(|&&(s, _)| s >= first)
                .map(|&(_, at)| at - change)
        })
    }

    /// Per direction, (packets sent at or after `change`, how many of them arrived) on `kind`.
    pub fn delivered_after(&self, kind: Kind, change: Instant) -> [(usize, usize); 2] {
        let k = self.kind(kind);
        [0, 1].map(|d| {
            let t = &self.tracks[d][k];
            let first = t
                .sent
                .iter()
                .position(|&s| s >= change)
                .unwrap_or(t.sent.len());
            let got = t
                .arrived
                .iter()
                .filter(|&&(s, _)| s as usize >= first)
                .count();
            (t.sent.len() - first, got)
        })
    }
}
