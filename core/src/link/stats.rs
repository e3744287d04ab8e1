//! One peer's counters and measurements, for [`Mesh::peer_stats`](crate::Mesh::peer_stats).

use std::time::Duration;

use super::Link;
use crate::stats::PeerStats;

/// Datagram counters and the latest round-trip time of one peer.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
    pub rtt: Option<Duration>,
}

impl Link {
    /// The peer's stats now.
    pub fn stats(&self) -> PeerStats {
        let c = self.counters;
        PeerStats {
            rtt: c.rtt,
            path: self.path.selected(),
            datagrams_sent: c.datagrams_sent,
            bytes_sent: c.bytes_sent,
            datagrams_received: c.datagrams_received,
            bytes_received: c.bytes_received,
            channels: self.channel_stats.to_vec(),
            queued_bytes: self.queued_bytes(),
            ice_restarts: self.recovery.total,
            moves: self.moves,
        }
    }
}
