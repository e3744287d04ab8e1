//! SceneMultiplayer's authentication, without callbacks: a table of peers still authenticating.
//!
//! A direct peer whose channels opened is *pending*. Each side sends data with `send_auth`
//! (`[7][0][data…]`) and, when satisfied, `complete_auth` (`[7][0]`). The peer is admitted once
//! both sides completed; a pending peer past its deadline is disconnected.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use crate::error::SendError;
use crate::transfer::PeerId;

/// One peer still authenticating (Godot's `PendingPeer`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pending {
    /// This side called `complete_auth`.
    pub local: bool,
    /// The remote side sent `[7][0]`.
    pub remote: bool,
    /// When it is dropped; `None` until a time was observed (or with no timeout).
    pub deadline: Option<Instant>,
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

    /// Gives every peer without a deadline one, once a time is known.
    pub fn start_clocks(&mut self, deadline: Instant) {
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

/// Why `send_auth` or `complete_auth` was refused (Godot's errors for the same calls).
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
