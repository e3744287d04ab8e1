//! Mesh configuration: Godot's `channels_config` plus the settings Godot hard-codes.

use std::time::Duration;

use str0m::config::DtlsCert;

use crate::channels::MAX_EXTRA_CHANNELS;
use crate::error::CreateError;
use crate::limits::Limits;
use crate::transfer::TransferMode;

/// Chainable `with_*` setters, one per public field of a configuration struct: callers write
/// `Config::default().with_x(..)`, and since the structs are `#[non_exhaustive]`, a new field
/// never breaks them. (Used by the adapter crates too.)
#[doc(hidden)]
#[macro_export]
macro_rules! __config_setters {
    ($ty:ty { $($setter:ident => $field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), "), for chaining.")]
                #[must_use]
                pub fn $setter(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

/// The most a TURN Send indication adds to a datagram (IPv6 peer address, padding).
const TURN_OVERHEAD: usize = 52;

/// Settings shared by every peer of one mesh. `MeshConfig::default()` matches Godot with no extra
/// channels; every field is documented with why its default was chosen. Start from the default
/// and change what you need with the `with_*` setters (or by assigning fields): new settings
/// are added without breaking that code.
///
/// ```
/// # use rtcmesh::*;
/// # use std::time::Duration;
/// let config = MeshConfig::default()
///     .with_channels(vec![TransferMode::Reliable]) // Godot's channels_config: one extra channel
///     .with_peer_timeout(Duration::from_secs(8));
/// assert_eq!(config.channels.len(), 1);
/// let mut config = config;
/// config.max_packet_size = 16 * 1024; // fields can be set directly too
/// # let _ = Mesh::create_mesh(2, config)?;
/// # Ok::<(), CreateError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// Godot's `channels_config`: one extra channel per entry, with that transfer mode.
    pub channels: Vec<TransferMode>,
    /// A peer whose channels are not all open this long after `add_peer` is removed (and, in
    /// client mode, the status becomes `Disconnected`). Godot waits forever; default 30 s,
    /// which leaves room for several handshake retries (`connect_retry_interval`) and, with a
    /// remote that lacks SNAP, for SCTP's INIT retransmissions (after 3, 9 and 21 s: RFC 4960's
    /// initial RTO, doubling, which str0m 0.25 does not expose).
    pub connect_timeout: Duration,
    /// A handshake that has not connected this long after the answer arrived is started over
    /// (fresh ICE, DTLS and SCTP, a new offer from the offering side) until `connect_timeout`.
    /// On a lossy link a few lost handshake packets leave DTLS waiting out a retransmission
    /// backoff of seconds; a fresh attempt usually connects in one round trip. A peer that
    /// connected on the answering side only is reported disconnected, then connected again.
    /// At least 1 s; `connect_timeout` or more (e.g. `Duration::MAX`) never retries. Default 5 s.
    pub connect_retry_interval: Duration,
    /// How long an ICE disconnection of a connected peer may last before the peer is removed.
    /// Godot removes at once; transient losses are common, so the default is 2 s.
    /// `Duration::MAX` keeps the peer through any ICE loss (`peer_timeout` still applies).
    pub disconnect_grace: Duration,
    /// A connected peer from which no datagram at all arrives for this long is removed. ICE
    /// consent checks flow every `stun_max_rto` even when the game sends nothing, so silence
    /// means the peer is gone. This is the loss-detection time for a vanished peer; str0m's own
    /// ICE gives up no sooner than 15 s. Must be at least twice `stun_max_rto`; `Duration::MAX`
    /// never removes a silent peer. Default 10 s.
    pub peer_timeout: Duration,
    /// Longest wait between ICE consent checks and STUN retransmissions (str0m
    /// `set_max_stun_rto`). Within 250 ms..=60 s (str0m adds it to the clock). Default 3 s.
    pub stun_max_rto: Duration,
    /// STUN retransmissions before a candidate pair is given up (str0m default 9).
    pub stun_max_retransmits: usize,
    /// The largest packet `send` accepts. Must not exceed `sctp_send_buffer`. Default 64 KiB
    /// (the most every WebRTC stack accepts: RFC 8841's default when the SDP says nothing).
    /// A peer that advertises a smaller `a=max-message-size` gets at most that. It is also the
    /// mesh's own `a=max-message-size`, so peers refuse to send it anything larger.
    pub max_packet_size: usize,
    /// Bytes that may wait per peer in rtcmesh's own send queue (packets that did not fit the
    /// SCTP send window yet) before `send` reports
    /// [`SendError::QueueFull`](crate::SendError::QueueFull). The queue is served round robin
    /// across channels, and packets of partially reliable channels leave it once their
    /// lifetime (counted from `send`) is over. A packet counts at least 64 bytes (its
    /// bookkeeping), so a flood of tiny packets stays bounded too. `0` turns the queue off:
    /// `send` then refuses what SCTP cannot take at once. Default 1 MiB.
    pub max_queued_bytes: usize,
    /// The most bytes SCTP holds per peer (str0m's `set_sctp_max_buffered_amount`): the upper
    /// bound of the send window, which rtcmesh sizes per peer from ICE's round trip and the
    /// rate SCTP drains (about twice their product) so that a long round trip does not cap a
    /// transfer at window ÷ RTT. Default 1 MiB: SCTP's receive window in str0m, so more could
    /// never be in flight.
    pub sctp_send_buffer: usize,
    /// The least the send window allows SCTP to hold per peer, and the window on a link whose
    /// round trip is too short to matter (a LAN, loopback). sctp-proto rescans everything it
    /// holds on every poll, so this bounds what a burst of small packets costs per packet, and
    /// how long a packet can wait inside SCTP where rtcmesh's round robin does not reach.
    /// At most `sctp_send_buffer`; set both equal for a fixed buffer (either way SCTP holds at
    /// most 2,048 chunks: 2,048 messages when they are small). Default 32 KiB.
    pub sctp_send_buffer_min: usize,
    /// The datagram size str0m aims for (`set_mtu`), 576..=1500. Default 1300, so a message of
    /// Godot's advertised 1,200-byte packet size travels in one datagram (with str0m's 1150 it
    /// is split in two, and over real sockets such two-datagram messages ran 9× slower in our
    /// benchmark); 1300 still leaves room under common tunnel MTUs.
    pub mtu: usize,
    /// The DTLS certificate every peer uses. `None` generates one when the mesh is created
    /// (the only use of OS randomness outside str0m's own handshakes). Sharing one certificate
    /// saves about 1 ms of CPU and 30 KiB per peer.
    pub dtls_cert: Option<DtlsCert>,
    /// The networks remote peers may be reached at. `None` (default): anywhere. With a list,
    /// remote candidates outside it (trickled or inside an SDP) and datagrams from outside it
    /// are dropped and counted, so no packet is ever sent elsewhere — e.g.
    /// `Some(IpPrefix::loopback())` for tests, or your LAN's prefix.
    ///
    /// ICE servers bypass the list (they are your configuration), and peers reached through
    /// our TURN allocation are checked by their own address. A peer's *relayed* candidate is
    /// an address on its TURN server: allow that server's address to reach such peers.
    pub remote_allowlist: Option<Vec<crate::IpPrefix>>,
    /// Silence (no datagram at all from a connected peer) after which the offering side (the
    /// larger id) restarts ICE: a new offer with new ICE credentials, through your signaling.
    /// The peer stays connected meanwhile (see [`Event::IceRestartStarted`](crate::Event)).
    /// ICE consent failing on the selected path for this long, ICE reporting the path lost, and
    /// [`Mesh::move_host_candidate`](crate::Mesh::move_host_candidate) restart it too. `None`
    /// (default): 40 % of `peer_timeout` (4 s), but no less than 1.25 × `stun_max_rto`, since an
    /// idle link is heard from at least every `stun_max_rto`. Must be shorter than
    /// `peer_timeout`, which stays the limit on silence, restarts included.
    pub ice_restart_after: Option<Duration>,
    /// The least time between two ICE restarts of one peer, and so how long one restart has
    /// before the next is tried. At least 1 s (the renegotiation rate a receiving mesh accepts);
    /// default 2 s.
    pub ice_restart_interval: Duration,
    /// ICE restarts tried for one spell of trouble before rtcmesh gives up and leaves the peer
    /// to the loss path (`peer_timeout`, `disconnect_grace`). The count starts over once the
    /// peer is reachable again. `0` turns ICE restarts off. Default 3.
    pub max_ice_restarts: u32,
    /// A connected peer whose traffic arrives from a new address (its NAT rebound its mapping,
    /// or it moved) while the old address has been silent this long, with at least three of
    /// our datagrams to it unanswered and an ICE consent check of ours unanswered this long
    /// too, is switched to the new address without a restart: the old address's candidates
    /// are dropped, so ICE sends on the pair it already checked on the new one
    /// ([`Event::PeerMoved`](crate::Event)). Default 500 ms.
    pub peer_move_after: Duration,
    /// How often str0m measures a peer's round-trip time and selected candidate pair (its
    /// `PeerStats` event): the round trip sizes the peer's SCTP send window (see
    /// `sctp_send_buffer`) and is [`PeerStats::round_trip_time`](crate::PeerStats::round_trip_time).
    /// `None` turns the measurement off (no round trip, so the window stays at
    /// `sctp_send_buffer_min`; the path is still known from the traffic), and so does an
    /// interval longer than a day (`Duration::MAX` means never, as for every duration here).
    /// At least 100 ms; default 1 s.
    pub stats_interval: Option<Duration>,
    /// Bounds on what one remote peer and its signals can make the mesh hold or do (remote
    /// candidates, channels outside the layout, signal sizes, renegotiation rate); see
    /// [`Limits`].
    pub limits: Limits,
    /// STUN and TURN servers (Godot's and the W3C's `iceServers`). Empty (default): host
    /// candidates only, which connects peers on one network but rarely across the internet.
    /// A `stun:` server gives a server-reflexive candidate (enough between most home NATs), a
    /// `turn:` server also relays for peers no direct path reaches (symmetric NATs), reached over
    /// UDP, TCP (`?transport=tcp`) or TLS (`turns:`) for networks that block UDP. Checked when
    /// the mesh is created: `stuns:` and TURN over DTLS are refused.
    pub ice_servers: Vec<crate::IceServer>,
    /// W3C `iceTransportPolicy`: `All` (default) or `Relay` (only through TURN; the host and
    /// public addresses are never given to peers).
    pub ice_transport_policy: crate::IceTransportPolicy,
    /// Between two rtcmesh peers that both have it on, reliable channels are carried by
    /// rtcmesh's own retransmission instead of SCTP's: on a lossy link a lost message is sent
    /// again about a round trip after it was due, never a second or more later as sctp-proto
    /// does for a second loss in a round trip or a lost retransmission (see
    /// `docs/loss-recovery.md`). Messages still arrive once, in order, per channel. It is
    /// agreed in the SDP (`a=x-rtcmesh-reliable:1`), so a browser or Godot peer, which never
    /// agrees, gets exactly the same channels and bytes either way.
    /// [`PeerStats::retransmission`](crate::PeerStats::retransmission) says whether a peer has
    /// it and what it did. Default on.
    pub own_retransmission: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            channels: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            connect_retry_interval: Duration::from_secs(5),
            disconnect_grace: Duration::from_secs(2),
            peer_timeout: Duration::from_secs(10),
            stun_max_rto: Duration::from_secs(3),
            stun_max_retransmits: 9,
            max_packet_size: 64 * 1024,
            max_queued_bytes: 1024 * 1024,
            sctp_send_buffer: 1024 * 1024,
            sctp_send_buffer_min: 32 * 1024,
            mtu: 1300,
            dtls_cert: None,
            remote_allowlist: None,
            ice_restart_after: None,
            ice_restart_interval: Duration::from_secs(2),
            max_ice_restarts: 3,
            peer_move_after: Duration::from_millis(500),
            stats_interval: Some(Duration::from_secs(1)),
            limits: Limits::default(),
            ice_servers: Vec::new(),
            ice_transport_policy: crate::IceTransportPolicy::All,
            own_retransmission: true,
        }
    }
}

impl MeshConfig {
    /// Sets the extra channels (Godot's `channels_config`), for chaining.
    #[must_use]
    pub fn with_channels(mut self, channels: impl Into<Vec<TransferMode>>) -> Self {
        self.channels = channels.into();
        self
    }

    pub(crate) fn validate(&self) -> Result<(), CreateError> {
        if self.channels.len() > MAX_EXTRA_CHANNELS {
            return Err(CreateError::TooManyChannels(self.channels.len()));
        }
        if !(str0m::DATAGRAM_MTU_TARGET_MIN..=str0m::DATAGRAM_MTU_TARGET_MAX).contains(&self.mtu) {
            return Err(CreateError::InvalidConfig("mtu must be within 576..=1500"));
        }
        if self.stun_max_rto < Duration::from_millis(250)
            || self.stun_max_rto > Duration::from_secs(60)
            || self.stun_max_retransmits == 0
        {
            return Err(CreateError::InvalidConfig(
                "stun_max_rto must be within 250 ms..=60 s and stun_max_retransmits at least 1",
            ));
        }
        if self.connect_retry_interval < Duration::from_secs(1) {
            return Err(CreateError::InvalidConfig(
                "connect_retry_interval must be at least 1 s",
            ));
        }
        if self.peer_timeout < self.stun_max_rto.saturating_mul(2) {
            return Err(CreateError::InvalidConfig(
                "peer_timeout must be at least twice stun_max_rto",
            ));
        }
        if self.sctp_send_buffer < 1024 {
            return Err(CreateError::InvalidConfig(
                "sctp_send_buffer must be at least 1024 bytes",
            ));
        }
        if self.sctp_send_buffer_min < 1024 || self.sctp_send_buffer_min > self.sctp_send_buffer {
            return Err(CreateError::InvalidConfig(
                "sctp_send_buffer_min must be within 1024..=sctp_send_buffer",
            ));
        }
        if self.max_packet_size == 0 || self.max_packet_size > self.sctp_send_buffer {
            return Err(CreateError::InvalidConfig(
                "max_packet_size must be within 1..=sctp_send_buffer",
            ));
        }
        if self.max_ice_restarts > 0 && self.restart_after() >= self.peer_timeout {
            return Err(CreateError::InvalidConfig(
                "ice_restart_after must be shorter than peer_timeout (or set max_ice_restarts to 0)",
            ));
        }
        if self.ice_restart_interval < Duration::from_secs(1) {
            return Err(CreateError::InvalidConfig(
                "ice_restart_interval must be at least 1 s",
            ));
        }
        if self
            .stats_interval
            .is_some_and(|i| i < Duration::from_millis(100))
        {
            return Err(CreateError::InvalidConfig(
                "stats_interval must be at least 100 ms (or None)",
            ));
        }
        let turn = self
            .ice_servers
            .iter()
            .flat_map(|s| &s.urls)
            .any(|u| u.trim().to_ascii_lowercase().starts_with("turn:"));
        if turn && self.mtu > 1500 - TURN_OVERHEAD {
            return Err(CreateError::InvalidConfig(
                "mtu must be at most 1448 with a turn: server (TURN's Send indication adds 52 bytes)",
            ));
        }
        if self.max_packet_size > 256 * 1024 {
            return Err(CreateError::InvalidConfig(
                "max_packet_size must not exceed 256 KiB (the SCTP max-message-size)",
            ));
        }
        self.limits.validate()
    }
}

impl MeshConfig {
    /// The stats interval given to str0m: `None` for an interval so long it means never (str0m
    /// adds it to the clock, which would overflow at `Duration::MAX`).
    pub(crate) fn measurement_interval(&self) -> Option<Duration> {
        const NEVER: Duration = Duration::from_secs(24 * 3600);
        self.stats_interval.filter(|&i| i <= NEVER)
    }

    /// The silence after which the offering side restarts ICE (`ice_restart_after`, or its
    /// automatic value).
    pub(crate) fn restart_after(&self) -> Duration {
        self.ice_restart_after.unwrap_or_else(|| {
            // Saturating: a `Duration::MAX` peer_timeout means an automatic value of "never".
            (self.peer_timeout / 5)
                .saturating_mul(2)
                .max((self.stun_max_rto / 4).saturating_mul(5))
        })
    }
}

crate::__config_setters!(MeshConfig {
    with_connect_timeout => connect_timeout: Duration,
    with_connect_retry_interval => connect_retry_interval: Duration,
    with_disconnect_grace => disconnect_grace: Duration,
    with_peer_timeout => peer_timeout: Duration,
    with_stun_max_rto => stun_max_rto: Duration,
    with_stun_max_retransmits => stun_max_retransmits: usize,
    with_max_packet_size => max_packet_size: usize,
    with_max_queued_bytes => max_queued_bytes: usize,
    with_sctp_send_buffer => sctp_send_buffer: usize,
    with_sctp_send_buffer_min => sctp_send_buffer_min: usize,
    with_mtu => mtu: usize,
    with_dtls_cert => dtls_cert: Option<DtlsCert>,
    with_remote_allowlist => remote_allowlist: Option<Vec<crate::IpPrefix>>,
    with_ice_restart_after => ice_restart_after: Option<Duration>,
    with_ice_restart_interval => ice_restart_interval: Duration,
    with_max_ice_restarts => max_ice_restarts: u32,
    with_peer_move_after => peer_move_after: Duration,
    with_stats_interval => stats_interval: Option<Duration>,
    with_limits => limits: Limits,
    with_ice_servers => ice_servers: Vec<crate::IceServer>,
    with_ice_transport_policy => ice_transport_policy: crate::IceTransportPolicy,
    with_own_retransmission => own_retransmission: bool,
});
