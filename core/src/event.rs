//! What the mesh emits: events and datagrams to send.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::signal::OutgoingSignal;
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

/// Events the application has not read yet: how many, and how many payload bytes they carry
/// (the data of [`Event::Packet`]s). Read with [`Machine::pending_events`](crate::Machine::pending_events);
/// an I/O loop compares it with its own limit and stops reading the socket while the
/// application is behind, so the backlog stays bounded and the senders slow down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingEvents {
    /// Events waiting in the machine's queue.
    pub events: usize,
    /// Payload bytes of the packets among them.
    pub bytes: usize,
}

/// An event queue (the mesh's, the multiplayer layer's): a FIFO that keeps its
/// [`PendingEvents`] current in O(1).
#[derive(Debug)]
pub(crate) struct EventQueue<E = Event> {
    queue: VecDeque<E>,
    bytes: usize,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            queue: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<E: Payload> EventQueue<E> {
    pub fn push_back(&mut self, event: E) {
        self.bytes += event.payload_len();
        self.queue.push_back(event);
    }

    pub fn pop_front(&mut self) -> Option<E> {
        let event = self.queue.pop_front()?;
        self.bytes -= event.payload_len();
        Some(event)
    }

    pub fn pending(&self) -> PendingEvents {
        PendingEvents {
            events: self.queue.len(),
            bytes: self.bytes,
        }
    }
}

/// The payload bytes an event carries, counted in [`PendingEvents::bytes`].
pub(crate) trait Payload {
    fn payload_len(&self) -> usize;
}

impl Payload for Event {
    fn payload_len(&self) -> usize {
        match self {
            Event::Packet(p) => p.data.len(),
            _ => 0,
        }
    }
}
