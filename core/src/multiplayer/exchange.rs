//! Peer exchange (`SYS_COMMAND_ADD_PEER` / `DEL_PEER`): a client learns from the server which
//! other clients it can reach through it.

use std::collections::btree_map::Entry;

use super::{Multiplayer, MultiplayerEvent, Route};
use crate::limits::MAX_BUFFERED_EXCHANGE;
use crate::transfer::{Mode, PeerId, SERVER_ID};

/// Peer exchange held back while the server is still authenticating.
#[derive(Debug, Clone, Copy)]
pub(super) enum Exchange {
    Add(PeerId),
    Del(PeerId),
}

impl Multiplayer {
    pub(super) fn hold(&mut self, exchange: Exchange) {
        if self.buffered.len() < MAX_BUFFERED_EXCHANGE {
            self.buffered.push(exchange);
            self.stats.peer_exchange_buffered += 1;
        } else {
            self.stats.unauthenticated += 1;
        }
    }

    /// ADD_PEER / DEL_PEER: accepted only by a client with the relay on, only from the server.
    pub(super) fn on_peer_exchange(&mut self, from: PeerId, exchange: Exchange) {
        if !self.relay_active() {
            self.stats.relay_refused += 1;
            return;
        }
        if self.mesh.mode() != Mode::Client || from != SERVER_ID {
            self.stats.sys_not_from_server += 1;
            return;
        }
        let own = self.mesh.unique_id();
        let (Exchange::Add(peer) | Exchange::Del(peer)) = exchange;
        if peer <= SERVER_ID || peer == own {
            self.stats.malformed += 1;
            return;
        }
        match exchange {
            Exchange::Add(peer) => {
                self.confirmed(peer);
                // A client's only direct peer is the server: the rest are relayed.
                let relayed = self.peers.len() - usize::from(self.peers.contains_key(&SERVER_ID));
                let full = relayed >= self.config.limits.max_relayed_peers;
                if full && !self.peers.contains_key(&peer) {
                    self.stats.relayed_peers_over_limit += 1;
                    return;
                }
                if let Entry::Vacant(entry) = self.peers.entry(peer) {
                    entry.insert(Route::Relayed);
                    self.events.push_back(MultiplayerEvent::PeerConnected(peer));
                }
            }
            Exchange::Del(peer) => {
                if self.peers.get(&peer) == Some(&Route::Relayed) {
                    self.peers.remove(&peer);
                    self.events
                        .push_back(MultiplayerEvent::PeerDisconnected(peer));
                }
            }
        }
    }
}
