//! Datagrams in: from the socket to the peer they belong to, by address pair first, by ICE
//! credentials on first contact.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::Mesh;
use crate::allowlist;
use crate::nat::{RelayedBytes, ServerInput};

impl Mesh {
    /// Passes one UDP datagram received on the socket: `source` is the remote address,
    /// `destination` the local one it arrived on. Datagrams no peer accepts are dropped and
    /// counted in [`stats`](Mesh::stats); nothing a datagram contains can stop the mesh.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        self.stats.datagrams_received += 1;
        if self.closed {
            self.stats.datagrams_unroutable += 1;
            return;
        }
        // Configured ICE servers come first (they bypass the allowlist: they are configuration).
        // What a peer sent to our relayed address continues below as a datagram from that
        // peer to the relayed address.
        if !self.nat.is_empty() && self.nat.is_server(source) {
            let now = self.observe(now);
            let input = self.nat.handle_server_datagram(now, source, contents);
            self.absorb_nat();
            match input {
                ServerInput::Handled => return,
                ServerInput::Relayed { peer, relay, data } => {
                    match data {
                        RelayedBytes::Range(range) => {
                            self.handle_peer_datagram(now, peer, relay, &contents[range])
                        }
                        RelayedBytes::Owned(bytes) => {
                            self.handle_peer_datagram(now, peer, relay, &bytes)
                        }
                    }
                    return;
                }
                ServerInput::NotServer => {}
            }
        }
        self.handle_peer_datagram(now, source, destination, contents);
    }

    /// A datagram from a peer (directly, or unwrapped from our TURN allocation).
    pub(super) fn handle_peer_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        if !allowlist::is_allowed(self.config.remote_allowlist.as_deref(), source.ip()) {
            self.stats.datagrams_not_allowed += 1;
            return;
        }
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, contents) else {
            self.stats.datagrams_malformed += 1;
            return;
        };
        let now = self.observe(now);
        let input = Input::Receive(now, receive);
        let route = (source, destination);
        let key = match self.peers.route(&route) {
            Some(key) if self.peers.link(key).accepts(&input) => {
                self.stats.datagrams_routed += 1;
                key
            }
            _ => {
                // First contact on this address pair: ask each peer (ICE credentials decide).
                let Some(key) = self.peers.find(|link| link.accepts(&input)) else {
                    self.stats.datagrams_unroutable += 1;
                    return;
                };
                // A new source address becomes a (peer-reflexive) remote candidate: bounded.
                if !self.peers.link_mut(key).admit_source(source) {
                    self.stats.candidates_over_limit += 1;
                    return;
                }
                self.peers.learn_route(route, key);
                key
            }
        };
        if !self
            .peers
            .link_mut(key)
            .handle_receive(now, input, contents)
        {
            self.stats.datagrams_rejected += 1;
        }
        self.settle(key);
        self.absorb_nat();
    }
}
