//! What the mesh emits: events and datagrams to send.

use std::net::SocketAddr;

use crate::signal::OutgoingSignal;
use crate::stats::CandidatePair;
use crate::transfer::{ConnectionStatus, PeerId, TransferMode};

/// Something the application should know about, drained with [`Mesh::poll_event`](crate::Mesh::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Event {
    /// All of this peer's channels are open (Godot's `peer_connected`). Fires once per peer.
    PeerConnected(PeerId),
    /// A connected peer is gone (Godot's `peer_disconnected`). Fires once, after `PeerConnected`.
    PeerDisconnected(PeerId),
    /// A packet arrived.
    Packet(Packet),
    /// A signal to deliver to another peer through the application's signaling transport.
    Signal(OutgoingSignal),
    /// The local connection status changed (client mode: connecting → connected → disconnected;
    /// any mode: → disconnected on `close`).
    StatusChanged(ConnectionStatus),
    /// ICE is restarting for this connected peer (its path went silent or failed, or this side
    /// moved): new ICE credentials travel in a new offer through your signaling. The peer stays
    /// connected, its id and its reliable streams are kept, and packets sent meanwhile wait (in
    /// SCTP's buffer, then the bounded send queue). Followed by
    /// [`IceRestartEnded`](Event::IceRestartEnded), or by `PeerDisconnected` if the peer cannot
    /// be reached again within `peer_timeout`.
    IceRestartStarted(PeerId),
    /// The ICE restart succeeded: the peer is reachable on `path`, and what waited is sent.
    IceRestartEnded {
        /// The peer.
        peer: PeerId,
        /// The candidate pair its traffic now takes.
        path: CandidatePair,
    },
    /// A connected peer's traffic moved to another candidate pair without a restart: its NAT
    /// rebound, it moved and ICE found it at its new address, or ICE chose a better pair.
    PeerMoved {
        /// The peer.
        peer: PeerId,
        /// The candidate pair its traffic now takes.
        path: CandidatePair,
    },
}

/// A packet received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The sender's peer id.
    pub from: PeerId,
    /// Godot's transfer channel: 0 for the three default channels, `k` for extra channel `k`.
    pub channel: u16,
    /// The transfer mode of the channel it arrived on.
    pub mode: TransferMode,
    /// The payload, exactly as the sender wrote it.
    pub data: Vec<u8>,
}

/// A UDP datagram to send, drained with [`Mesh::poll_transmit`](crate::Mesh::poll_transmit).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The local address to send it from (one of the registered host addresses).
    pub source: SocketAddr,
    /// The datagram's bytes.
    pub contents: Vec<u8>,
}
