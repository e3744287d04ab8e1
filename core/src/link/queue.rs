//! rtcmesh's own send queue in front of SCTP: packets wait here (bounded) while str0m's SCTP
//! buffer is full, in send order.

use std::collections::VecDeque;
use std::time::Instant;

use str0m::Input;

use super::{Link, Loss, Progress, Sink};
use crate::stats::MeshStats;

/// A packet waiting for SCTP buffer space.
#[derive(Debug)]
struct Queued {
    channel: usize,
    data: Vec<u8>,
}

/// Packets waiting for SCTP buffer space, and their total size.
#[derive(Debug, Default)]
pub(super) struct SendQueue {
    packets: VecDeque<Queued>,
    bytes: usize,
}

impl SendQueue {
    /// Drops everything queued (the connection it was for is gone).
    pub fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

impl Link {
    /// Writes a packet to channel `index`, queueing it (bounded) while SCTP's buffer is full.
    /// `Err(())` when the queue is full too; nothing was written then.
    pub fn write(
        &mut self,
        now: Instant,
        index: usize,
        data: &[u8],
        max_queued: usize,
        sink: &mut Sink<'_>,
    ) -> Result<Progress, ()> {
        // SCTP stamps the packet with the connection's clock (round-trip samples, retransmission
        // timers, lifetimes): bring it to the mesh's latest time first, not the last datagram's.
        if self.rtc.handle_input(Input::Timeout(now)).is_err() {
            return Ok(Progress {
                lost: Some(Loss::Closed),
                ..Progress::default()
            });
        }
        if self.queue.is_empty() && self.try_write(index, data) {
            sink.stats.packets_sent += 1;
            self.count_sent(index, data.len());
            return Ok(self.drive(now, sink));
        }
        if self.queue.bytes + data.len() > max_queued {
            return Err(());
        }
        self.queue.bytes += data.len();
        self.queue.packets.push_back(Queued {
            channel: index,
            data: data.to_vec(),
        });
        Ok(self.drive(now, sink))
    }

    /// Bytes waiting for SCTP buffer space.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes
    }

    fn count_sent(&mut self, index: usize, len: usize) {
        if let Some(c) = self.channel_stats.get_mut(index) {
            c.packets_sent += 1;
            c.bytes_sent += len as u64;
        }
    }

    fn try_write(&mut self, index: usize, data: &[u8]) -> bool {
        let Some(ch) = self.channels.get(index) else {
            return false;
        };
        if !ch.open {
            return false;
        }
        let Some(id) = ch.id else {
            return false;
        };
        match self.rtc.channel(id) {
            Some(mut channel) => channel.write(true, data).unwrap_or(false),
            None => false,
        }
    }

    /// Moves queued packets into SCTP while it has room; true if any moved.
    pub(super) fn flush_queue(&mut self, stats: &mut MeshStats) -> bool {
        let mut moved = false;
        while let Some(queued) = self.queue.packets.pop_front() {
            if !self.try_write(queued.channel, &queued.data) {
                self.queue.packets.push_front(queued);
                break;
            }
            self.queue.bytes -= queued.data.len();
            stats.packets_sent += 1;
            self.count_sent(queued.channel, queued.data.len());
            moved = true;
        }
        moved
    }
}
