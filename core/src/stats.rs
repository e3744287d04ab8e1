//! Counters of what the mesh did and dropped (per peer: [`PeerStats`](crate::PeerStats)).

/// Counters since the mesh was created, read with [`Mesh::stats`](crate::Mesh::stats).
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
/// // A datagram from nobody the mesh knows is dropped and counted, never an error.
/// mesh.handle_datagram(std::time::Instant::now(), "127.0.0.1:6000".parse()?, "127.0.0.1:5000".parse()?, b"junk");
/// let stats = mesh.stats();
/// assert_eq!(stats.datagrams_received, 1);
/// assert_eq!(stats.datagrams_routed, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStats {
    /// Datagrams handed to `handle_datagram`: from peers, from ICE servers, relayed.
    pub datagrams_received: u64,
    /// Datagrams routed to a peer by the address map without a scan.
    pub datagrams_routed: u64,
    /// Datagrams that are not STUN, DTLS, RTP or RTCP (dropped).
    pub datagrams_malformed: u64,
    /// Well-formed datagrams no peer accepted (dropped).
    pub datagrams_unroutable: u64,
    /// Datagrams a peer accepted but failed to process (dropped; the peer keeps running).
    pub datagrams_rejected: u64,
    /// Datagrams handed out by `poll_transmit`, the counterpart of `datagrams_received`: to
    /// peers, to ICE servers (STUN and TURN requests), relayed ones once each as wrapped for
    /// the TURN server. A datagram dropped before it (waiting for a TURN permission) is not
    /// counted: see `datagrams_relay_dropped`.
    pub datagrams_sent: u64,
    /// Packets handed to a data channel's SCTP stream (a broadcast counts once per peer).
    pub packets_sent: u64,
    /// Packets dropped from rtcmesh's send queue because they outlived their channel's packet
    /// lifetime (counted from `send`) before reaching SCTP; per channel in
    /// [`Mesh::peer_stats`](crate::Mesh::peer_stats).
    pub packets_expired: u64,
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
    /// that got past SCTP (dropped). The mesh advertises that size as its `a=max-message-size`
    /// and SCTP enforces it, ending the association of a peer that sends more: this stays 0
    /// unless the two disagree.
    pub packets_too_large: u64,
    /// Datagrams sent to peers through our TURN allocations.
    pub datagrams_relayed_sent: u64,
    /// Datagrams from peers that arrived through our TURN allocations.
    pub datagrams_relayed_received: u64,
    /// Datagrams for a peer that could not go through the TURN allocation (no permission yet
    /// and the waiting room full, permission refused, or no allocation).
    pub datagrams_relay_dropped: u64,
    /// Fragments of rtcmesh's own retransmission dropped because they arrived too far ahead of
    /// the one their channel waits for (past the reorder window or the bytes a peer may hold
    /// out of order, `sctp_send_buffer`); the sender retransmits them. Per peer in
    /// [`RetransmissionStats::out_of_window`](crate::RetransmissionStats::out_of_window).
    pub fragments_out_of_window: u64,
    /// Messages on rtcmesh's own retransmission channel that did not parse or named a
    /// channel that is not reliable (dropped). Stays 0 but for a misbehaving peer.
    pub frames_malformed: u64,
    /// Streams to TURN servers (`?transport=tcp`, `turns:`) closed because the server broke
    /// TURN's framing: bytes that are not TURN, or a message unfinished for 15 s (each also
    /// reported as [`IceServerError::InvalidStream`](crate::IceServerError::InvalidStream)).
    pub turn_streams_broken: u64,
    /// Messages on such streams larger than 4 KiB, skipped without being held (a peer's
    /// oversize datagram relayed to us; the stream goes on).
    pub turn_stream_frames_oversize: u64,
    /// Remote candidates whose address is a `.local` name that is not one label of ASCII
    /// letters, digits and hyphens (at most 63) before `.local` (dropped).
    pub mdns_names_refused: u64,
    /// `.local` names dropped past [`Limits::max_mdns_names`](crate::Limits::max_mdns_names)
    /// (per peer) or [`Limits::max_mdns_queries`](crate::Limits::max_mdns_queries) (per mesh),
    /// with their candidates.
    pub mdns_names_over_limit: u64,
    /// `.local` names the adapter resolved (their candidates went to ICE with the address).
    pub mdns_names_resolved: u64,
    /// `.local` names the adapter could not resolve (their candidates are dropped).
    pub mdns_names_unresolved: u64,
    /// `.local` names not answered within [`Limits::mdns_timeout`](crate::Limits::mdns_timeout)
    /// (their candidates are dropped).
    pub mdns_timeouts: u64,
}
