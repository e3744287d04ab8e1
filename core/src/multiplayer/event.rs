//! What the multiplayer layer emits.

use crate::error::IceServerError;
use crate::event::{LossReason, Packet};
use crate::path::{LocalCandidate, PeerPath};
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
    /// The mesh's [`Event::IceRestartStarted`](crate::Event::IceRestartStarted) for a direct peer.
    IceRestartStarted(PeerId),
    /// The mesh's [`Event::IceRestartEnded`](crate::Event::IceRestartEnded) for a direct peer.
    IceRestartEnded {
        /// The peer.
        peer: PeerId,
        /// The candidate pair its traffic now takes.
        path: PeerPath,
    },
    /// The mesh's [`Event::PeerMoved`](crate::Event::PeerMoved) for a direct peer.
    PeerMoved {
        /// The peer.
        peer: PeerId,
        /// The candidate pair its traffic now takes.
        path: PeerPath,
    },
    /// The mesh lost a direct peer by itself, and why (the mesh's
    /// [`Event::PeerLost`](crate::Event::PeerLost)).
    PeerLost {
        /// The peer.
        id: PeerId,
        /// Why its connection ended.
        reason: LossReason,
    },
    /// The mesh gathered a candidate from an ICE server
    /// ([`Event::CandidateGathered`](crate::Event::CandidateGathered)).
    CandidateGathered(LocalCandidate),
    /// An ICE server did not serve ([`Event::IceServerFailed`](crate::Event::IceServerFailed)).
    IceServerFailed {
        /// The URL, as configured.
        url: String,
        /// What went wrong.
        reason: IceServerError,
    },
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
