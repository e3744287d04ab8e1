//! What the multiplayer layer emits.

use crate::event::Packet;
use crate::signal::OutgoingSignal;
use crate::transfer::{ConnectionStatus, PeerId};

/// Something the application should know about, drained with
/// [`Multiplayer::poll_event`](crate::Multiplayer::poll_event). The SceneMultiplayer signals,
/// plus the mesh's outgoing signals and status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum MultiplayerEvent {
    /// A peer was admitted (Godot's `peer_connected`): a direct peer whose channels opened (and
    /// who authenticated, if auth is on), or, on a client, a peer the server announced.
    PeerConnected(PeerId),
    /// An admitted peer is gone (Godot's `peer_disconnected`), direct or relayed.
    PeerDisconnected(PeerId),
    /// A `send_bytes` payload (Godot's `peer_packet`), with its true sender, and the channel and
    /// mode it travelled on. Never SYS bytes.
    Packet(Packet),
    /// A signal to deliver to another peer through the application's signaling transport.
    Signal(OutgoingSignal),
    /// The mesh's connection status changed.
    StatusChanged(ConnectionStatus),
    /// A direct peer's channels opened and it must now authenticate (Godot's
    /// `peer_authenticating`): exchange [`AuthData`](MultiplayerEvent::AuthData) with
    /// `send_auth`, then call `complete_auth`.
    PeerAuthenticating(PeerId),
    /// Authentication data from a peer still authenticating (what Godot passes to
    /// `auth_callback`). Never empty.
    AuthData {
        /// The authenticating peer.
        from: PeerId,
        /// The bytes it sent with `send_auth`.
        data: Vec<u8>,
    },
    /// A peer that was authenticating timed out or disconnected (Godot's
    /// `peer_authentication_failed`). It is never reported connected.
    PeerAuthenticationFailed(PeerId),
}

impl crate::event::Payload for MultiplayerEvent {
    fn payload_len(&self) -> usize {
        match self {
            MultiplayerEvent::Packet(p) => p.data.len(),
            MultiplayerEvent::AuthData { data, .. } => data.len(),
            _ => 0,
        }
    }
}
