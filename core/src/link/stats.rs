//! What one peer's link did with the packets it was given, per channel: read with
//! [`Mesh::peer_stats`](crate::Mesh::peer_stats).

use std::time::Duration;

use crate::transfer::{PeerId, TransferMode};

/// Counters of one channel of one peer, in Godot's layout order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Godot's transfer channel: 0 for the three default channels, `k` for extra channel `k`.
    pub channel: u16,
    /// The channel's transfer mode.
    pub mode: TransferMode,
    /// Packets handed to SCTP.
    pub packets_sent: u64,
    /// Packets dropped from rtcmesh's send queue before they reached SCTP, because they had
    /// waited longer than the channel's packet lifetime (counted from `send`, as a browser's
    /// `maxPacketLifeTime`). Always 0 on reliable channels.
    pub packets_expired: u64,
    /// Bytes waiting in rtcmesh's send queue on this channel.
    pub queued_bytes: usize,
}

impl ChannelStats {
    pub(crate) fn new(channel: u16, mode: TransferMode) -> ChannelStats {
        ChannelStats {
            channel,
            mode,
            packets_sent: 0,
            packets_expired: 0,
            queued_bytes: 0,
        }
    }
}

/// One peer's send path: per-channel counters, what SCTP holds and the window rtcmesh allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's id.
    pub peer: PeerId,
    /// One entry per channel, in layout order (`reliable`, `ordered`, `unreliable`, extras).
    pub channels: Vec<ChannelStats>,
    /// Packets str0m refused for good while their channel was closing (dropped and counted;
    /// the peer is on its way out).
    pub packets_write_failed: u64,
    /// The bytes rtcmesh lets into SCTP at a time now (see
    /// [`MeshConfig::sctp_send_buffer`](crate::MeshConfig::sctp_send_buffer)).
    pub sctp_window: usize,
    /// Bytes handed to SCTP and not yet acknowledged or abandoned (at most; refreshed as
    /// acknowledgements arrive).
    pub sctp_buffered: usize,
    /// The latest round trip ICE measured to this peer, if any.
    pub round_trip_time: Option<Duration>,
    /// The largest packet this peer accepts: its SDP `a=max-message-size` (64 KiB when it
    /// advertises none), at most [`Mesh::max_packet_size`](crate::Mesh::max_packet_size).
    pub max_packet_size: usize,
}
