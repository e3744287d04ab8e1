//! Counters of what the mesh did and dropped, and what it measured per peer.

use std::net::SocketAddr;
use std::time::Duration;

use crate::transfer::TransferMode;

/// Counters since the mesh was created, read with [`Mesh::stats`](crate::Mesh::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeshStats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams_received: u64,
    /// Datagrams routed to a peer by the address map without a scan.
    pub datagrams_routed: u64,
    /// Datagrams that are not STUN, DTLS, RTP or RTCP (dropped).
    pub datagrams_malformed: u64,
    /// Well-formed datagrams no peer accepted (dropped).
    pub datagrams_unroutable: u64,
    /// Datagrams a peer accepted but failed to process (dropped; the peer keeps running).
    pub datagrams_rejected: u64,
    /// Datagrams emitted for sending.
    pub datagrams_sent: u64,
    /// Packets written to a data channel (a broadcast counts once per peer).
    pub packets_sent: u64,
    /// Packets delivered as [`Event::Packet`](crate::Event::Packet).
    pub packets_received: u64,
    /// Incoming data-channel messages on a channel outside the layout (dropped).
    pub packets_unknown_channel: u64,
    /// Remote ICE candidates that could not be parsed (dropped).
    pub candidates_rejected: u64,
    /// Remote ICE candidates outside [`MeshConfig::remote_allowlist`](crate::MeshConfig::remote_allowlist)
    /// (dropped, from trickled signals and from SDP).
    pub candidates_not_allowed: u64,
    /// Datagrams from a source outside the allowlist (dropped).
    pub datagrams_not_allowed: u64,
    /// Handshakes started over after `connect_retry_interval` without connecting (counted on
    /// both sides).
    pub connect_retries: u64,
    /// ICE restarts begun on connected peers (offers sent, or restart offers followed).
    pub ice_restarts: u64,
    /// Connected peers switched to a new path without a restart (a NAT rebinding).
    pub peer_moves: u64,
    /// Remote candidates dropped past [`Limits::max_remote_candidates`](crate::Limits::max_remote_candidates):
    /// trickled ones, `a=candidate` lines of offers and answers, and datagrams from a new
    /// address (each would have become a peer-reflexive candidate).
    pub candidates_over_limit: u64,
    /// Data channels a remote opened outside the layout (in-band, DCEP), closed at once.
    pub channels_refused: u64,
    /// Peers disconnected for going past a limit that ends the connection (more channels
    /// outside the layout than [`Limits::max_refused_channels`](crate::Limits::max_refused_channels)).
    pub peers_disconnected_for_abuse: u64,
    /// Signals refused as [`SignalError::TooLarge`](crate::SignalError::TooLarge).
    pub signals_too_large: u64,
    /// New offers refused as [`SignalError::TooManyOffers`](crate::SignalError::TooManyOffers).
    pub offers_rate_limited: u64,
    /// Incoming messages larger than [`MeshConfig::max_packet_size`](crate::MeshConfig::max_packet_size)
    /// (dropped; SCTP lets a remote send up to 256 KiB).
    pub packets_too_large: u64,
}

/// The two ends a peer's traffic takes (W3C's selected `RTCIceCandidatePair`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CandidatePair {
    /// This side's address (the socket's, or a relay's).
    pub local: SocketAddr,
    /// What kind of candidate `local` is.
    pub local_kind: CandidateKind,
    /// The peer's address as seen from here.
    pub remote: SocketAddr,
    /// What kind of candidate `remote` is: `PeerReflexive` when the peer was found at an address
    /// it never announced (behind a NAT, or after a rebinding).
    pub remote_kind: CandidateKind,
}

impl CandidatePair {
    /// Whether either end is a TURN relay (the traffic pays a relay's latency and bandwidth).
    pub fn is_relayed(&self) -> bool {
        self.local_kind == CandidateKind::Relayed || self.remote_kind == CandidateKind::Relayed
    }
}

/// The kind of an ICE candidate (W3C's `RTCIceCandidateType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CandidateKind {
    /// A socket's own address (`host`).
    Host,
    /// The address a STUN server saw (`srflx`).
    ServerReflexive,
    /// An address learned from the peer's own checks (`prflx`).
    PeerReflexive,
    /// A TURN relay's address (`relay`).
    Relayed,
}

impl From<str0m::CandidateKind> for CandidateKind {
    fn from(kind: str0m::CandidateKind) -> Self {
        match kind {
            str0m::CandidateKind::Host => CandidateKind::Host,
            str0m::CandidateKind::ServerReflexive => CandidateKind::ServerReflexive,
            str0m::CandidateKind::PeerReflexive => CandidateKind::PeerReflexive,
            str0m::CandidateKind::Relayed => CandidateKind::Relayed,
        }
    }
}

/// One peer's traffic and path, read with [`Mesh::peer_stats`](crate::Mesh::peer_stats) (and
/// summed over every peer by [`Mesh::aggregate_peer_stats`](crate::Mesh::aggregate_peer_stats)).
/// Counters run from `add_peer`; a handshake retry (a new connection) keeps them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PeerStats {
    /// Round-trip time of the latest ICE consent check on the selected pair (W3C's
    /// `currentRoundTripTime`), measured every [`MeshConfig::stats_interval`](crate::MeshConfig::stats_interval).
    /// `None` until the first measurement, or with the interval off. (str0m 0.25 exposes no
    /// SCTP round-trip time or retransmission count.)
    pub rtt: Option<Duration>,
    /// The candidate pair the traffic takes, `None` before the first datagram.
    pub path: Option<CandidatePair>,
    /// UDP datagrams sent to this peer (ICE checks, DTLS, SCTP with its retransmissions).
    pub datagrams_sent: u64,
    /// Their bytes (UDP payload).
    pub bytes_sent: u64,
    /// UDP datagrams received from this peer and accepted.
    pub datagrams_received: u64,
    /// Their bytes (UDP payload).
    pub bytes_received: u64,
    /// Per channel, in layout order: `reliable`, `ordered`, `unreliable`, then the extra
    /// channels.
    pub channels: Vec<ChannelStats>,
    /// Bytes waiting in rtcmesh's send queue for SCTP buffer space.
    pub queued_bytes: usize,
    /// ICE restarts begun (offers sent, or restart offers followed).
    pub ice_restarts: u64,
    /// Path changes without a restart ([`Event::PeerMoved`](crate::Event::PeerMoved)).
    pub moves: u64,
}

/// One channel's packets, in [`PeerStats::channels`].
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
        }
    }

    pub(crate) fn add(&mut self, other: &ChannelStats) {
        self.packets_sent += other.packets_sent;
        self.bytes_sent += other.bytes_sent;
        self.packets_received += other.packets_received;
        self.bytes_received += other.bytes_received;
    }
}
