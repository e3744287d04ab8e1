//! rtcmesh's own send queue in front of SCTP. SCTP holds at most the send window (see
//! [`window`](super::window)); what the channels send beyond it waits here, bounded by
//! `max_queued_bytes`, in one FIFO per channel, served round robin so that no channel starves
//! another (sctp-proto 0.10 serves every unordered message before any ordered one, and all
//! ordered channels from one FIFO). On partially reliable channels a packet's lifetime counts
//! from `send`, as a browser's `maxPacketLifeTime` does: a packet that waited longer is dropped
//! here, before it reaches SCTP, and counted on its channel.

use std::collections::VecDeque;
use std::time::Instant;

use smallvec::SmallVec;
use str0m::Rtc;

use super::window::SendWindow;
use super::{Link, LinkChannel};
use crate::limits::MIN_QUEUED_PACKET_CHARGE;

/// A packet waiting for room in the send window.
#[derive(Debug)]
struct Queued {
    data: Vec<u8>,
    /// The mesh's time at `send`: the packet's lifetime counts from here.
    sent_at: Instant,
}

/// Packets waiting for room in the send window: one FIFO per channel, the channels that have
/// any in round-robin order, and their total size.
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    /// Indexed by channel; grows to the highest channel used.
    fifos: Vec<VecDeque<Queued>>,
    /// Channels with packets waiting, each once, the next to serve first.
    turns: VecDeque<usize>,
    bytes: usize,
    /// What the queue is charged against `max_queued_bytes`: each packet at least
    /// [`MIN_QUEUED_PACKET_CHARGE`], so that tiny packets cannot hold many times the limit in
    /// bookkeeping.
    charged: usize,
}

fn charge(len: usize) -> usize {
    len.max(MIN_QUEUED_PACKET_CHARGE)
}

impl SendQueue {
    /// Drops everything queued (the connection it was for is gone).
    pub fn clear(&mut self) {
        self.fifos.clear();
        self.turns.clear();
        self.bytes = 0;
        self.charged = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn push(&mut self, index: usize, packet: Queued) {
        if self.fifos.len() <= index {
            self.fifos.resize_with(index + 1, VecDeque::new);
        }
        let fifo = &mut self.fifos[index];
        if fifo.is_empty() {
            self.turns.push_back(index);
        }
        self.bytes += packet.data.len();
        self.charged += charge(packet.data.len());
        fifo.push_back(packet);
    }

    /// Drops the packets at the head of channel `index` that are older than `lifetime`;
    /// returns how many, and their bytes. The FIFO is in send order, so only its head can have
    /// expired first.
    fn expire(&mut self, index: usize, now: Instant, ch: &mut LinkChannel) -> usize {
        let Some(lifetime) = ch.lifetime else {
            return 0;
        };
        let fifo = &mut self.fifos[index];
        let mut expired = 0;
        while fifo
            .front()
            .is_some_and(|p| now.saturating_duration_since(p.sent_at) > lifetime)
        {
            let packet = fifo.pop_front().expect("checked");
            self.bytes -= packet.data.len();
            self.charged -= charge(packet.data.len());
            ch.stats.queued_bytes -= packet.data.len();
            expired += 1;
        }
        ch.stats.packets_expired += expired as u64;
        expired
    }
}

/// Why a packet could not be written or queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The queue is at `max_queued_bytes`: nothing was written.
    QueueFull,
    /// The channel refused the packet for good (it is closing or closed): dropped and counted.
    Closed,
}

impl Link {
    /// Writes a packet to channel `index`: into SCTP while the send window has room and nothing
    /// waits before it, else into the queue (bounded by `max_queued`). `Ok(true)` when SCTP took
    /// it: the link is then due, to be drained once for the burst (see [`Link::flush`]).
    pub fn write(
        &mut self,
        now: Instant,
        index: usize,
        data: &[u8],
        max_queued: usize,
    ) -> Result<bool, WriteError> {
        if index >= self.channels.len() {
            return Err(WriteError::Closed);
        }
        if self.queue.is_empty() {
            if !self.window.allows(data.len()) {
                self.refresh_window(now, true);
            }
            if self.window.allows(data.len()) {
                match self.write_one(now, index, data) {
                    Ok(true) => {
                        self.counts.packets_sent += 1;
                        self.unsent = true;
                        self.due = true;
                        return Ok(true);
                    }
                    Ok(false) => {}
                    Err(()) => {
                        self.write_failed += 1;
                        return Err(WriteError::Closed);
                    }
                }
            }
            self.window.block();
        }
        if self.queue.charged + charge(data.len()) > max_queued {
            self.expire_queued(now);
            if self.queue.charged + charge(data.len()) > max_queued {
                return Err(WriteError::QueueFull);
            }
        }
        self.channels[index].stats.queued_bytes += data.len();
        self.queue.push(
            index,
            Queued {
                data: data.to_vec(),
                sent_at: now,
            },
        );
        Ok(false)
    }

    /// Bytes waiting in rtcmesh's queue.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes
    }

    /// Drops every queued packet that outlived its channel's lifetime.
    fn expire_queued(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.queue.turns.len() {
            let index = self.queue.turns[i];
            self.counts.packets_expired +=
                self.queue.expire(index, now, &mut self.channels[index]) as u64;
            if self.queue.fifos[index].is_empty() {
                self.queue.turns.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Reads what SCTP still holds on the channels written to and passes it to the window.
    fn refresh_window(&mut self, now: Instant, backlogged: bool) {
        let mut buffered = 0;
        let (rtc, channels) = (&mut self.rtc, &mut self.channels);
        self.busy.retain(|&mut index| {
            let ch = &mut channels[index];
            ch.in_sctp = ch
                .id
                .and_then(|id| rtc.channel(id))
                .map_or(0, |mut c| c.buffered_amount());
            buffered += ch.in_sctp;
            ch.in_sctp > 0
        });
        buffered += self.reliable.outstanding();
        self.window.refresh(now, buffered, backlogged);
    }

    /// Moves queued packets into SCTP while the window has room, one channel at a time in
    /// round-robin order, dropping what expired on the way. True if any moved.
    pub(super) fn flush_queue(&mut self, now: Instant) -> bool {
        self.refresh_window(now, true);
        let mut moved = false;
        while let Some(&index) = self.queue.turns.front() {
            let ch = &mut self.channels[index];
            self.counts.packets_expired += self.queue.expire(index, now, ch) as u64;
            let Some(head) = self.queue.fifos[index].front() else {
                self.queue.turns.pop_front();
                continue;
            };
            if !self.window.allows(head.data.len()) {
                self.window.block();
                break;
            }
            let packet = self.queue.fifos[index].pop_front().expect("head");
            match self.write_one(now, index, &packet.data) {
                Ok(true) => {
                    self.counts.packets_sent += 1;
                    moved = true;
                }
                Ok(false) => {
                    self.queue.fifos[index].push_front(packet);
                    break;
                }
                Err(()) => self.write_failed += 1,
            }
            self.queue.bytes -= packet.data.len();
            self.queue.charged -= charge(packet.data.len());
            self.channels[index].stats.queued_bytes -= packet.data.len();
            // Its turn is over: to the back if it has more, out if not.
            self.queue.turns.pop_front();
            if !self.queue.fifos[index].is_empty() {
                self.queue.turns.push_back(index);
            }
        }
        if self.queue.is_empty() {
            self.window.idle();
        }
        if moved {
            self.unsent = true;
        }
        moved
    }
}

impl Link {
    /// Hands one packet to its channel: SCTP's, or rtcmesh's own retransmission for a reliable
    /// channel when both ends agreed on it. `Ok(false)`: no room now; `Err`: refused for good.
    fn write_one(&mut self, now: Instant, index: usize, data: &[u8]) -> Result<bool, ()> {
        if self.reliable.carries(self.channels[index].spec.mode) {
            return self.write_reliable(now, index, data);
        }
        let ch = &mut self.channels[index];
        let sctp = (&mut self.rtc, &mut self.window, &mut self.busy);
        write_to_sctp(sctp, index, ch, data)
    }
}

/// Hands one packet to SCTP. `Ok(false)`: no room now (str0m's buffer is full); `Err`: the
/// channel refuses it for good (closing, closed, or the packet exceeds what the remote accepts).
fn write_to_sctp(
    (rtc, window, busy): (&mut Rtc, &mut SendWindow, &mut SmallVec<[usize; 4]>),
    index: usize,
    ch: &mut LinkChannel,
    data: &[u8],
) -> Result<bool, ()> {
    let id = match ch.id {
        Some(id) if ch.open => id,
        _ => return Err(()),
    };
    let mut channel = rtc.channel(id).ok_or(())?;
    if !channel.write(true, data).map_err(|_| ())? {
        return Ok(false);
    }
    if ch.in_sctp == 0 {
        busy.push(index);
    }
    ch.in_sctp += data.len();
    ch.stats.packets_sent += 1;
    ch.stats.bytes_sent += data.len() as u64;
    window.wrote(data.len());
    Ok(true)
}
