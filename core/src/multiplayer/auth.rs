//! SceneMultiplayer's authentication, without callbacks: a table of peers still authenticating.
//!
//! A direct peer whose channels opened is *pending*. Each side sends data with `send_auth`
//! (`[7][0][data…]`) and, when satisfied, `complete_auth` (`[7][0]`). The peer is admitted once
//! both sides completed; a pending peer past its deadline, or past
//! [`MultiplayerLimits::max_auth_bytes`](crate::MultiplayerLimits::max_auth_bytes) of auth
//! data, is disconnected.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use super::exchange::Exchange;
use super::{wire, Multiplayer, MultiplayerEvent};
use crate::error::SendError;
use crate::event::Packet;
use crate::transfer::{Mode, PeerId, Target, TransferMode, SERVER_ID};
use wire::Message;

/// One peer still authenticating (Godot's `PendingPeer`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pending {
    /// This side called `complete_auth`.
    pub local: bool,
    /// The remote side sent `[7][0]`.
    pub remote: bool,
    /// When it is dropped; `None` until a time was observed (or with no timeout, or one past
    /// the end of `Instant`'s range).
    pub deadline: Option<Instant>,
    /// Auth data bytes received from it so far.
    pub auth_bytes: usize,
}

/// Peers still authenticating, by id.
#[derive(Debug, Default)]
pub(crate) struct PendingPeers {
    peers: BTreeMap<PeerId, Pending>,
}

impl PendingPeers {
    pub fn insert(&mut self, peer: PeerId, deadline: Option<Instant>) {
        self.peers.insert(
            peer,
            Pending {
                deadline,
                ..Pending::default()
            },
        );
    }

    pub fn get(&self, peer: PeerId) -> Option<&Pending> {
        self.peers.get(&peer)
    }

    pub fn get_mut(&mut self, peer: PeerId) -> Option<&mut Pending> {
        self.peers.get_mut(&peer)
    }

    pub fn contains(&self, peer: PeerId) -> bool {
        self.peers.contains_key(&peer)
    }

    pub fn remove(&mut self, peer: PeerId) -> Option<Pending> {
        self.peers.remove(&peer)
    }

    pub fn ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// Gives every peer without a deadline one, once a time is known (`None`: never).
    pub fn start_clocks(&mut self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            return;
        };
        for p in self.peers.values_mut() {
            p.deadline.get_or_insert(deadline);
        }
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.deadline).min()
    }

    /// Removes and returns, in id order, the peers whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in &due {
            self.peers.remove(id);
        }
        due
    }
}

impl Multiplayer {
    /// Godot's `send_auth(id, data)`: sends `[7][0][data…]` to a peer still authenticating.
    pub fn send_auth(&mut self, peer: PeerId, data: &[u8]) -> Result<(), AuthError> {
        let pending = self
            .pending
            .get(peer)
            .ok_or(AuthError::NotAuthenticating(peer))?;
        if data.is_empty() {
            return Err(AuthError::EmptyData);
        }
        if pending.local {
            return Err(AuthError::AlreadyCompleted(peer));
        }
        if pending.remote {
            return Err(AuthError::RemoteCompleted(peer));
        }
        let mut frame = Vec::with_capacity(2 + data.len());
        wire::encode_auth(data, &mut frame);
        let result = self
            .mesh
            .send(Target::Peer(peer), TransferMode::Reliable, 0, &frame)
            .map_err(AuthError::Send);
        self.pump();
        result
    }

    /// Godot's `complete_auth(id)`: tells the peer this side is satisfied (`[7][0]`). The peer
    /// is admitted (`PeerConnected`) once the remote side completed too.
    pub fn complete_auth(&mut self, peer: PeerId) -> Result<(), AuthError> {
        let pending = self
            .pending
            .get_mut(peer)
            .ok_or(AuthError::NotAuthenticating(peer))?;
        if pending.local {
            return Err(AuthError::AlreadyCompleted(peer));
        }
        pending.local = true;
        let remote = pending.remote;
        let result = self
            .mesh
            .send(
                Target::Peer(peer),
                TransferMode::Reliable,
                0,
                &wire::AUTH_COMPLETE,
            )
            .map_err(AuthError::Send);
        // Admission may send packets, so it follows the confirmation (as in Godot).
        if remote {
            self.pending.remove(peer);
            self.admit(peer);
        }
        self.pump();
        result
    }

    /// A packet from a peer still authenticating: only auth passes. A client holds the server's
    /// peer exchange until it is admitted (Godot drops it).
    pub(super) fn on_pending_packet(&mut self, packet: Packet) {
        let from = packet.from;
        let holds_exchange = self.mesh.mode() == Mode::Client && from == SERVER_ID;
        match wire::decode(&packet.data) {
            Ok(Message::Auth(rest)) if !rest.is_empty() => {
                let Some(pending) = self.pending.get_mut(from) else {
                    return;
                };
                pending.auth_bytes = pending.auth_bytes.saturating_add(rest.len());
                if pending.auth_bytes > self.config.limits.max_auth_bytes {
                    self.stats.auth_over_limit += 1;
                    self.fail_auth(from);
                    return;
                }
                let mut data = packet.data;
                data.drain(..wire::AUTH_COMPLETE.len());
                self.events
                    .push_back(MultiplayerEvent::AuthData { from, data });
            }
            Ok(Message::Auth(_)) => {
                let Some(pending) = self.pending.get_mut(from) else {
                    return;
                };
                pending.remote = true;
                if pending.local {
                    self.pending.remove(from);
                    self.admit(from);
                }
            }
            Ok(Message::AddPeer(peer)) if holds_exchange => self.hold(Exchange::Add(peer)),
            Ok(Message::DelPeer(peer)) if holds_exchange => self.hold(Exchange::Del(peer)),
            _ => self.stats.unauthenticated += 1,
        }
    }

    /// Ends a peer's authentication (timed out, or too much auth data): reported failed and
    /// disconnected.
    pub(super) fn fail_auth(&mut self, peer: PeerId) {
        self.pending.remove(peer);
        self.forget_pending(peer);
        self.events
            .push_back(MultiplayerEvent::PeerAuthenticationFailed(peer));
        // Its PeerDisconnected is ignored: the peer is neither pending nor admitted now.
        self.mesh.disconnect_peer(peer, false);
    }
}

/// Why `send_auth` or `complete_auth` was refused (Godot's errors for the same calls).
///
/// ```
/// use rtcmesh::multiplayer::AuthError;
/// use rtcmesh::{Mesh, MeshConfig, Multiplayer, MultiplayerConfig};
///
/// let mut game = Multiplayer::new(Mesh::create_server(MeshConfig::default())?, MultiplayerConfig::default().with_auth(true));
/// // Peer 5 never connected, so it is not authenticating.
/// assert_eq!(game.send_auth(5, b"token"), Err(AuthError::NotAuthenticating(5)));
/// assert_eq!(game.complete_auth(5), Err(AuthError::NotAuthenticating(5)));
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The peer is not authenticating (unknown, already admitted, or auth is off).
    NotAuthenticating(PeerId),
    /// Auth data must not be empty: `[7][0]` alone means "completed".
    EmptyData,
    /// This side already called `complete_auth` for the peer.
    AlreadyCompleted(PeerId),
    /// The remote side completed; no more auth data can be sent to it.
    RemoteCompleted(PeerId),
    /// The mesh refused the packet.
    Send(SendError),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::NotAuthenticating(id) => write!(
                f,
                "peer {id} is not authenticating (unknown, admitted, or auth is off)"
            ),
            AuthError::EmptyData => f.write_str("auth data must not be empty"),
            AuthError::AlreadyCompleted(id) => {
                write!(
                    f,
                    "authentication with peer {id} was already completed here"
                )
            }
            AuthError::RemoteCompleted(id) => write!(
                f,
                "peer {id} completed authentication: no more auth data can be sent"
            ),
            AuthError::Send(e) => write!(f, "auth packet not sent: {e}"),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuthError::Send(e) => Some(e),
            _ => None,
        }
    }
}
