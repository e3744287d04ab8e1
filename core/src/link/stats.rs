//! What one peer's link did and measured, per peer and per channel: read with
//! [`Mesh::peer_stats`](crate::Mesh::peer_stats) (and summed with
//! [`Mesh::aggregate_peer_stats`](crate::Mesh::aggregate_peer_stats)).

use std::time::Duration;

use super::Link;
use crate::path::PeerPath;
use crate::stats::MeshStats;
use crate::transfer::{PeerId, TransferMode};

/// Counters of one channel of one peer, in Godot's layout order.
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{Mesh, MeshConfig, TransferMode};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default().with_channels([TransferMode::Reliable]))?;
/// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
/// mesh.add_peer(Instant::now(), 7, 1)?;
/// let stats = mesh.peer_stats(7).expect("added");
/// // Godot's layout: reliable, ordered, unreliable, then extra channel 1.
/// let modes: Vec<_> = stats.channels.iter().map(|c| (c.channel, c.mode)).collect();
/// assert_eq!(modes[3], (1, TransferMode::Reliable));
/// assert!(stats.channels.iter().all(|c| c.packets_sent == 0 && c.packets_expired == 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Godot's transfer channel: 0 for the three default channels, `k` for extra channel `k`.
    pub channel: u16,
    /// The channel's transfer mode.
    pub mode: TransferMode,
    /// Packets handed to SCTP (queued ones count once they leave the queue).
    pub packets_sent: u64,
    /// Their payload bytes.
    pub bytes_sent: u64,
    /// Packets delivered as [`Event::Packet`](crate::Event::Packet).
    pub packets_received: u64,
    /// Their payload bytes.
    pub bytes_received: u64,
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
            bytes_sent: 0,
            packets_received: 0,
            bytes_received: 0,
            packets_expired: 0,
            queued_bytes: 0,
        }
    }

    /// Adds `other`'s counters to these (for the aggregate).
    pub(crate) fn add(&mut self, other: &ChannelStats) {
        self.packets_sent += other.packets_sent;
        self.bytes_sent += other.bytes_sent;
        self.packets_received += other.packets_received;
        self.bytes_received += other.bytes_received;
        self.packets_expired += other.packets_expired;
        self.queued_bytes += other.queued_bytes;
    }

    /// The counters of a connection that is being replaced (a handshake retry): they carry
    /// over, while the queue starts empty.
    pub(super) fn carried_over(self) -> ChannelStats {
        ChannelStats {
            queued_bytes: 0,
            ..self
        }
    }
}

/// One peer's traffic, path and send state. Counters run from `add_peer`; a handshake retry (a
/// new connection) keeps them.
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{Mesh, MeshConfig};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
/// mesh.add_peer(Instant::now(), 7, 1)?;
/// let stats = mesh.peer_stats(7).expect("added");
/// assert_eq!(stats.peer, 7);
/// assert_eq!(stats.round_trip_time, None); // measured once connected, every stats_interval
/// println!("{} B queued, window {} B, path {:?}", stats.queued_bytes, stats.sctp_window, stats.path);
/// let everyone = mesh.aggregate_peer_stats(); // every peer summed
/// assert_eq!(everyone.datagrams_sent, stats.datagrams_sent);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's id (0 in [`Mesh::aggregate_peer_stats`](crate::Mesh::aggregate_peer_stats),
    /// which is no peer's).
    pub peer: PeerId,
    /// The latest round trip ICE measured to this peer: its consent check on the selected
    /// pair (W3C's `currentRoundTripTime`), every
    /// [`MeshConfig::stats_interval`](crate::MeshConfig::stats_interval). `None` until the
    /// first measurement, with the interval off, and again after a handshake retry. It also
    /// sizes the SCTP send window. (str0m 0.25 exposes no SCTP round-trip time or
    /// retransmission count.)
    pub round_trip_time: Option<Duration>,
    /// The candidate pair the traffic takes (is this peer relayed?), `None` before DTLS went
    /// out on one; while an ICE restart or a move finds the next pair, the last one. The same
    /// as [`PeerInfo::path`](crate::PeerInfo::path).
    pub path: Option<PeerPath>,
    /// UDP datagrams sent to this peer (ICE checks, DTLS, SCTP with its retransmissions).
    pub datagrams_sent: u64,
    /// Their bytes (UDP payload; before TURN wraps what goes through our relay).
    pub bytes_sent: u64,
    /// UDP datagrams received from this peer and accepted.
    pub datagrams_received: u64,
    /// Their bytes (UDP payload; after unwrapping what came through our relay).
    pub bytes_received: u64,
    /// One entry per channel, in layout order (`reliable`, `ordered`, `unreliable`, extras).
    pub channels: Vec<ChannelStats>,
    /// Bytes waiting in rtcmesh's send queue for room in the SCTP send window (the sum of the
    /// channels' `queued_bytes`).
    pub queued_bytes: usize,
    /// Packets str0m refused for good while their channel was closing (dropped and counted;
    /// the peer is on its way out).
    pub packets_write_failed: u64,
    /// The bytes rtcmesh lets into SCTP at a time now (see
    /// [`MeshConfig::sctp_send_buffer`](crate::MeshConfig::sctp_send_buffer)).
    pub sctp_window: usize,
    /// Bytes handed to SCTP and not yet acknowledged or abandoned (at most; refreshed as
    /// acknowledgements arrive).
    pub sctp_buffered: usize,
    /// The largest packet this peer accepts: its SDP `a=max-message-size` (64 KiB when it
    /// advertises none), at most [`Mesh::max_packet_size`](crate::Mesh::max_packet_size).
    pub max_packet_size: usize,
    /// ICE restarts begun (offers sent, or restart offers followed).
    pub ice_restarts: u64,
    /// Path changes without a restart ([`Event::PeerMoved`](crate::Event::PeerMoved)).
    pub moves: u64,
    /// What rtcmesh's own retransmission did for the reliable channels, when both ends agreed
    /// on it (both rtcmesh with [`MeshConfig::own_retransmission`](crate::MeshConfig::own_retransmission));
    /// `None`: SCTP retransmits them (a browser or Godot peer, or it is off). In the
    /// aggregate, the sum over the peers that have it.
    pub retransmission: Option<super::RetransmissionStats>,
}

impl PeerStats {
    /// An aggregate with nothing added yet.
    pub(crate) fn empty(max_packet_size: usize) -> PeerStats {
        PeerStats {
            peer: 0,
            round_trip_time: None,
            path: None,
            datagrams_sent: 0,
            bytes_sent: 0,
            datagrams_received: 0,
            bytes_received: 0,
            channels: Vec::new(),
            queued_bytes: 0,
            packets_write_failed: 0,
            sctp_window: 0,
            sctp_buffered: 0,
            max_packet_size,
            ice_restarts: 0,
            moves: 0,
            retransmission: None,
        }
    }

    /// Adds one peer's stats to an aggregate (see
    /// [`Mesh::aggregate_peer_stats`](crate::Mesh::aggregate_peer_stats)).
    pub(crate) fn add(&mut self, s: &PeerStats) {
        self.round_trip_time = self.round_trip_time.max(s.round_trip_time);
        self.datagrams_sent += s.datagrams_sent;
        self.bytes_sent += s.bytes_sent;
        self.datagrams_received += s.datagrams_received;
        self.bytes_received += s.bytes_received;
        self.queued_bytes += s.queued_bytes;
        self.packets_write_failed += s.packets_write_failed;
        self.sctp_window += s.sctp_window;
        self.sctp_buffered += s.sctp_buffered;
        self.max_packet_size = self.max_packet_size.min(s.max_packet_size);
        self.ice_restarts += s.ice_restarts;
        self.moves += s.moves;
        if let Some(r) = &s.retransmission {
            self.retransmission
                .get_or_insert_with(Default::default)
                .add(r);
        }
        if self.channels.is_empty() {
            self.channels.clone_from(&s.channels);
        } else {
            for (t, c) in self.channels.iter_mut().zip(&s.channels) {
                t.add(c);
            }
        }
    }
}

/// Datagram counters of one peer.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counters {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
}

impl Link {
    /// The peer's stats now; `max_packet_size` is the mesh's.
    pub fn stats(&self, max_packet_size: usize) -> PeerStats {
        let c = self.counters;
        PeerStats {
            peer: self.peer,
            round_trip_time: self.window.rtt(),
            path: self.path(),
            datagrams_sent: c.datagrams_sent,
            bytes_sent: c.bytes_sent,
            datagrams_received: c.datagrams_received,
            bytes_received: c.bytes_received,
            channels: self.channels.iter().map(|c| c.stats).collect(),
            queued_bytes: self.queued_bytes(),
            packets_write_failed: self.write_failed,
            sctp_window: self.window.limit(),
            sctp_buffered: self.window.in_sctp(),
            max_packet_size: self.max_message_size.min(max_packet_size),
            ice_restarts: self.recovery.total,
            moves: self.counts.peer_moves,
            retransmission: self.reliable.stats(),
        }
    }
}

/// The mesh counters a link adds to, kept on the link and summed by the mesh (in
/// [`Mesh::stats`](crate::Mesh::stats), and into the mesh's own totals when the link ends).
/// Only the counters a link writes: a full [`MeshStats`] per link would cost 128 bytes more
/// per peer.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LinkCounts {
    pub packets_sent: u64,
    pub packets_expired: u64,
    pub packets_received: u64,
    pub packets_unknown_channel: u64,
    pub packets_too_large: u64,
    pub candidates_rejected: u64,
    pub candidates_over_limit: u64,
    pub channels_refused: u64,
    pub peers_disconnected_for_abuse: u64,
    pub offers_rate_limited: u64,
    pub ice_restarts: u64,
    pub peer_moves: u64,
    pub mdns_names_refused: u64,
    pub mdns_names_over_limit: u64,
    pub fragments_out_of_window: u64,
    pub frames_malformed: u64,
}

impl LinkCounts {
    /// Adds these to the mesh's `totals`. Written with `self` taken apart, so a new counter
    /// cannot be forgotten here.
    pub fn add_to(&self, totals: &mut MeshStats) {
        let LinkCounts {
            packets_sent,
            packets_expired,
            packets_received,
            packets_unknown_channel,
            packets_too_large,
            candidates_rejected,
            candidates_over_limit,
            channels_refused,
            peers_disconnected_for_abuse,
            offers_rate_limited,
            ice_restarts,
            peer_moves,
            mdns_names_refused,
            mdns_names_over_limit,
            fragments_out_of_window,
            frames_malformed,
        } = *self;
        totals.packets_sent += packets_sent;
        totals.packets_expired += packets_expired;
        totals.packets_received += packets_received;
        totals.packets_unknown_channel += packets_unknown_channel;
        totals.packets_too_large += packets_too_large;
        totals.candidates_rejected += candidates_rejected;
        totals.candidates_over_limit += candidates_over_limit;
        totals.channels_refused += channels_refused;
        totals.peers_disconnected_for_abuse += peers_disconnected_for_abuse;
        totals.offers_rate_limited += offers_rate_limited;
        totals.ice_restarts += ice_restarts;
        totals.peer_moves += peer_moves;
        totals.mdns_names_refused += mdns_names_refused;
        totals.mdns_names_over_limit += mdns_names_over_limit;
        totals.fragments_out_of_window += fragments_out_of_window;
        totals.frames_malformed += frames_malformed;
    }
}
