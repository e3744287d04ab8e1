//! What the mesh emits: events and datagrams to send.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;

use crate::error::IceServerError;
use crate::path::{LocalCandidate, PeerPath};
use crate::signal::OutgoingSignal;
use crate::transfer::{ConnectionStatus, PeerId, TransferMode};

/// Something the application should know about, drained with [`Mesh::poll_event`](crate::Mesh::poll_event).
///
/// ```
/// use rtcmesh::{Event, Mesh, MeshConfig};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// while let Some(event) = mesh.poll_event() {
///     match event {
///         Event::Signal(s) => println!("for peer {}: {}", s.to, s.signal.encode()), // your signaling
///         Event::PeerConnected(id) => println!("peer_connected({id})"),
///         Event::Packet(p) => println!("{} bytes from {} on channel {}", p.data.len(), p.from, p.channel),
///         Event::PeerDisconnected(id) => println!("peer_disconnected({id})"),
///         other => println!("{other:?}"), // restarts, moves, losses, gathered candidates…
///     }
/// }
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
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
        path: PeerPath,
    },
    /// A connected peer's traffic moved to another candidate pair without a restart: its NAT
    /// rebound, it moved and ICE found it at its new address, or ICE chose a better pair.
    PeerMoved {
        /// The peer.
        peer: PeerId,
        /// The candidate pair its traffic now takes.
        path: PeerPath,
    },
    /// A peer's connection ended by itself (not by `remove_peer`, `disconnect_peer` or
    /// `close`), connected or not, and why. A connected peer also gets `PeerDisconnected`,
    /// right after this.
    PeerLost {
        /// The peer.
        id: PeerId,
        /// Why its connection ended.
        reason: LossReason,
    },
    /// A local candidate was gathered from an ICE server (W3C `icecandidate` for `srflx` and
    /// `relay`): peers already negotiating get it trickled, later ones in their offer/answer.
    CandidateGathered(LocalCandidate),
    /// An ICE server did not serve (W3C `icecandidateerror`): the URL as configured, and why.
    /// Reported once per failure streak; the mesh keeps trying in the background.
    IceServerFailed {
        /// The URL, as configured.
        url: String,
        /// What went wrong.
        reason: IceServerError,
    },
}

/// Why a peer's connection ended ([`Event::PeerLost`]).
///
/// ```
/// use rtcmesh::{Event, LossReason};
///
/// let event = Event::PeerLost {
///     id: 4,
///     reason: LossReason::ConnectTimeout { local_relay: false, remote_relay: false },
/// };
/// if let Event::PeerLost { id, reason } = event {
///     // "did not connect in time, and no relay was available on either side: configure a TURN server …"
///     assert!(reason.to_string().contains("TURN"));
///     assert_eq!(id, 4);
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LossReason {
    /// The channels did not all open within `connect_timeout`. Says whether either side had a
    /// relayed (TURN) candidate: without one, peers behind symmetric NATs or strict firewalls
    /// cannot reach each other.
    ConnectTimeout {
        /// This mesh had a relayed candidate (a working TURN allocation).
        local_relay: bool,
        /// The peer signalled a relayed candidate.
        remote_relay: bool,
    },
    /// Nothing arrived from the connected peer for `peer_timeout`.
    Silent,
    /// ICE stayed disconnected longer than `disconnect_grace`.
    IceLost,
    /// The peer closed the connection (or a channel), or its signals could not be applied.
    Closed,
    /// The peer went past a limit that ends the connection (it kept opening channels outside
    /// the layout, see [`Limits::max_refused_channels`](crate::Limits::max_refused_channels);
    /// or it sent a message above our packet size through rtcmesh's own retransmission, which
    /// SCTP would have refused by ending the association).
    Abuse,
    /// The peer (an rtcmesh) is configured with other extra channels
    /// ([`MeshConfig::channels`](crate::MeshConfig::channels)) than we are: every packet on a
    /// channel one side lacks would be lost, so the connection ends instead. Both sides must
    /// list the same modes in the same order. A Godot or browser peer does not state its
    /// layout, so a mismatch with one cannot be seen here (see the guide's sending page).
    ChannelLayoutMismatch {
        /// Our extra channel count.
        local: u16,
        /// The peer's (`None`: it stated a layout we could not read).
        remote: Option<u16>,
    },
}

impl fmt::Display for LossReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossReason::ConnectTimeout {
                local_relay: false,
                remote_relay: false,
            } => f.write_str(
                "did not connect in time, and no relay was available on either side: \
                 configure a TURN server (MeshConfig::ice_servers) to cross symmetric NATs",
            ),
            LossReason::ConnectTimeout { .. } => {
                f.write_str("did not connect in time, even with a relay available")
            }
            LossReason::Silent => f.write_str("nothing arrived from the peer for peer_timeout"),
            LossReason::IceLost => f.write_str("the network path was lost (ICE disconnected)"),
            LossReason::Closed => f.write_str("the peer closed the connection"),
            LossReason::Abuse => {
                f.write_str("disconnected: the peer went past a limit that ends the connection")
            }
            LossReason::ChannelLayoutMismatch { local, remote } => {
                write!(
                    f,
                    "the peer's channels differ from ours (ours: {local} extra, "
                )?;
                match remote {
                    Some(remote) => write!(f, "theirs: {remote} extra")?,
                    None => f.write_str("theirs unreadable")?,
                }
                f.write_str(
                    "): configure the same MeshConfig::channels, in the same order, on both",
                )
            }
        }
    }
}

/// A packet received from a peer.
///
/// ```
/// use rtcmesh::{Event, Packet, TransferMode};
///
/// let event = Event::Packet(Packet { from: 3, channel: 0, mode: TransferMode::Reliable, data: b"hi".to_vec() });
/// if let Event::Packet(Packet { from, channel: 0, mode: TransferMode::Reliable, data }) = event {
///     assert_eq!((from, data.as_slice()), (3, &b"hi"[..])); // Godot's get_packet + get_packet_peer
/// }
/// ```
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
///
/// ```
/// use std::net::UdpSocket;
/// use rtcmesh::{Mesh, MeshConfig};
///
/// let socket = UdpSocket::bind("127.0.0.1:0")?;
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// mesh.add_host_candidate(socket.local_addr()?)?;
/// while let Some(transmit) = mesh.poll_transmit() {
///     // `transmit.source` is one of the host candidates: with one socket, always this one.
///     socket.send_to(&transmit.contents, transmit.destination)?;
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The local address to send it from (one of the registered host addresses; datagrams
    /// for a TURN server are already wrapped and leave from the host address too).
    pub source: SocketAddr,
    /// The datagram's bytes.
    pub contents: Vec<u8>,
}

/// Events the application has not read yet: how many, and how many payload bytes they carry
/// (the data of [`Event::Packet`]s). Read with [`Machine::pending_events`](crate::Machine::pending_events);
/// an I/O loop compares it with its own limit and stops reading the socket while the
/// application is behind, so the backlog stays bounded and the senders slow down.
///
/// ```
/// use rtcmesh::{Machine, Mesh, MeshConfig, PendingEvents};
///
/// let mesh = Mesh::create_server(MeshConfig::default())?;
/// let pending = mesh.pending_events();
/// assert_eq!(pending, PendingEvents { events: 0, bytes: 0 });
/// // An I/O loop stops reading its socket while this is above its limits.
/// let behind = pending.events >= 1024 || pending.bytes >= 4 << 20;
/// assert!(!behind);
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
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
