//! Counters of what the multiplayer layer delivered, relayed and dropped.

/// Counters since the [`Multiplayer`](crate::Multiplayer) was created. Every packet refused as
/// invalid or unauthorised is counted in exactly one field; harmless repeats (a second ADD_PEER
/// for a known peer, DEL_PEER for an unknown one, a late `[7][0]`) are ignored silently.
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig, Multiplayer, MultiplayerConfig};
///
/// let game = Multiplayer::new(Mesh::create_server(MeshConfig::default())?, MultiplayerConfig::default());
/// let stats = game.stats();
/// assert_eq!((stats.packets_received, stats.relayed, stats.malformed), (0, 0, 0));
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MultiplayerStats {
    /// RAW payloads delivered as packet events (direct or relayed).
    pub packets_received: u64,
    /// Copies the server forwarded for RELAY packets (a broadcast counts once per recipient).
    pub relayed: u64,
    /// Malformed packets: empty, RAW without payload, SYS too short, unknown SYS command, RELAY
    /// without an inner packet or with an impossible peer id, peer exchange naming an invalid id,
    /// or auth data from an admitted peer.
    pub malformed: u64,
    /// Godot commands this layer does not implement (RPC, path cache, spawn, despawn, sync).
    pub unsupported: u64,
    /// RELAY packets for a peer id the server has not admitted.
    pub relay_unknown_target: u64,
    /// RELAY, ADD_PEER or DEL_PEER received while the relay is off or in mesh mode.
    pub relay_refused: u64,
    /// SYS commands hidden inside a RELAY (an attempt to pose as another sender or to inject
    /// peer exchange): refused by the server, dropped by clients.
    pub spoof_attempts: u64,
    /// ADD_PEER, DEL_PEER or RELAY that only the server may send, received from another peer
    /// (or ADD_PEER / DEL_PEER received by the server itself).
    pub sys_not_from_server: u64,
    /// Packets from a peer that is still authenticating (other than auth) or not admitted.
    pub unauthenticated: u64,
    /// ADD_PEER / DEL_PEER held back because they arrived while the server was authenticating.
    pub peer_exchange_buffered: u64,
    /// Packets the layer itself sent (peer exchange, relay copies, auth) that the mesh refused
    /// (queue full, packet too large for this side's limit).
    pub send_failed: u64,
    /// Peers whose authentication failed because they sent more auth data than
    /// [`MultiplayerLimits::max_auth_bytes`](crate::MultiplayerLimits::max_auth_bytes).
    pub auth_over_limit: u64,
    /// ADD_PEER announcements a client dropped past
    /// [`MultiplayerLimits::max_relayed_peers`](crate::MultiplayerLimits::max_relayed_peers).
    pub relayed_peers_over_limit: u64,
    /// Reliable packets held while the server changed, sent to the new one (or, on a new
    /// server, held for a survivor still reconnecting).
    pub migration_held: u64,
    /// Packets lost to a server change and not claimed delivered: unreliable sends made while
    /// it changed, and held packets whose peer never came back.
    pub migration_dropped: u64,
    /// Bytes handed to a server that was lost, never acknowledged by it (what waited in
    /// rtcmesh's queue and in SCTP when its connection was dropped).
    pub host_lost_bytes: u64,
    /// Host-migration commands refused: from a peer that may not send them (not opted in,
    /// not our server), of another epoch, or with migration off.
    pub migration_refused: u64,
}
