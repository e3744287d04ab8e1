//! What the multiplayer layer emits.

use super::migration::{LobbyRequest, MigrationReason};
use crate::event::{Event, Packet};
use crate::transfer::PeerId;

/// Something the application should know about, drained with
/// [`Multiplayer::poll_event`](crate::Multiplayer::poll_event): the SceneMultiplayer signals,
/// and what the mesh reported ([`MultiplayerEvent::Mesh`]).
///
/// ```
/// # use rtcmesh::*;
/// fn show(event: MultiplayerEvent) {
///     match event {
///         MultiplayerEvent::PeerConnected(id) => println!("{id} joined the game"),
///         MultiplayerEvent::Packet(p) => println!("{} sent {} bytes", p.from, p.data.len()),
///         MultiplayerEvent::Mesh(Event::Signal(s)) => println!("deliver a signal to {}", s.to),
///         MultiplayerEvent::Mesh(Event::StatusChanged(s)) => println!("now {s:?}"),
///         other => println!("{other:?}"),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum MultiplayerEvent {
    /// A peer was admitted (Godot's `peer_connected`): a direct peer whose channels opened (and
    /// who authenticated, if auth is on), or, on a client, a peer the server announced.
    PeerConnected(PeerId),
    /// An admitted peer is gone (Godot's `peer_disconnected`), direct or relayed.
    PeerDisconnected(PeerId),
    /// A `send_bytes` payload (Godot's `peer_packet`), with its true sender, and the channel and
    /// mode it travelled on. Never SYS bytes.
    Packet(Packet),
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
    /// Host migration: the server is leaving or was lost, and the game waits for the next one.
    /// Until [`HostMigrated`](MultiplayerEvent::HostMigrated),
    /// [`BecameHost`](MultiplayerEvent::BecameHost) or
    /// [`MigrationFailed`](MultiplayerEvent::MigrationFailed) the status is `Connecting`, peer 1
    /// stays in the peer list (no `PeerDisconnected(1)`: 1 is a role, not a player), reliable
    /// packets sent meanwhile are held and go to the new server, unreliable ones are dropped
    /// and counted.
    HostMigrating {
        /// The epoch that is ending.
        epoch: u32,
        /// Whether the server left (a graceful hand-over) or was lost.
        reason: MigrationReason,
    },
    /// Host migration is over on this client: peer 1 is now the player that had the id `was`
    /// (no `PeerDisconnected(was)`: apply the rename in the game's own tables). Held packets
    /// went to it; the status is `Connected` again.
    HostMigrated {
        /// The new epoch.
        epoch: u32,
        /// The new server's former id.
        was: PeerId,
    },
    /// Host migration made this peer the server: its id is 1 from here on (it was `was`).
    /// The other survivors reconnect to it within the rejoin window; it rebuilds the game
    /// from its own state (what the old server sent before leaving arrived before this).
    BecameHost {
        /// The new epoch.
        epoch: u32,
        /// This peer's former id.
        was: PeerId,
    },
    /// No new server in time (or this peer was fenced out): every peer is reported
    /// disconnected and the status becomes `Disconnected`.
    MigrationFailed {
        /// The epoch that ended.
        epoch: u32,
    },
    /// Something the lobby server must be told (send it on the lobby connection): a server
    /// this client lost, or a hand-over this server asks for.
    ToLobby(LobbyRequest),
    /// What the mesh reported that this layer passes on unchanged: signals to deliver
    /// ([`Event::Signal`]), status changes, ICE restarts, moves, losses of direct peers,
    /// gathered candidates and ICE server failures. Never [`Event::PeerConnected`],
    /// [`Event::PeerDisconnected`] or [`Event::Packet`]: this layer reports peers and packets
    /// itself, with SceneMultiplayer's meaning (admitted peers, `send_bytes` payloads).
    Mesh(Event),
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
