//! The vocabulary of paths, shared by the mesh, its links and the NAT module: the kinds of ICE
//! candidates, the local ones gathered from servers, the path a peer's traffic takes, and the
//! address pair a datagram arrives on.

use std::fmt;
use std::net::SocketAddr;

/// A datagram's (remote source, local destination) address pair: what the mesh routes on.
pub(crate) type Route = (SocketAddr, SocketAddr);

/// The kind of an ICE candidate (W3C `RTCIceCandidateType`).
///
/// ```
/// use rtcmesh::CandidateKind;
///
/// assert_eq!(CandidateKind::ServerReflexive.as_str(), "srflx"); // as in SDP and the W3C API
/// assert_eq!(CandidateKind::Relayed.to_string(), "relay");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CandidateKind {
    /// A local socket address (`host`).
    Host,
    /// The public address a NAT gave the socket, as a STUN server saw it (`srflx`).
    ServerReflexive,
    /// An address learned from a peer's connectivity check (`prflx`): the peer reached us from
    /// an address it never signalled (typically its own NAT's mapping).
    PeerReflexive,
    /// An address on a TURN server that relays to the socket (`relay`).
    Relayed,
}

impl CandidateKind {
    /// The SDP / W3C name (`host`, `srflx`, `prflx`, `relay`).
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateKind::Host => "host",
            CandidateKind::ServerReflexive => "srflx",
            CandidateKind::PeerReflexive => "prflx",
            CandidateKind::Relayed => "relay",
        }
    }
}

impl From<str0m::CandidateKind> for CandidateKind {
    fn from(kind: str0m::CandidateKind) -> Self {
        match kind {
            str0m::CandidateKind::Host => CandidateKind::Host,
            str0m::CandidateKind::ServerReflexive => CandidateKind::ServerReflexive,
            str0m::CandidateKind::PeerReflexive => CandidateKind::PeerReflexive,
            str0m::CandidateKind::Relayed => CandidateKind::Relayed,
        }
    }
}

impl fmt::Display for CandidateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A local candidate gathered from an ICE server
/// ([`Event::CandidateGathered`](crate::Event::CandidateGathered)).
///
/// ```
/// use rtcmesh::{CandidateKind, Event};
///
/// fn on_event(event: Event) {
///     if let Event::CandidateGathered(candidate) = event {
///         if candidate.kind == CandidateKind::Relayed {
///             println!("{} relays {} for us at {}", candidate.url, candidate.base, candidate.address);
///         }
///     }
/// }
/// # let _ = on_event;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCandidate {
    /// [`ServerReflexive`](CandidateKind::ServerReflexive) or
    /// [`Relayed`](CandidateKind::Relayed).
    pub kind: CandidateKind,
    /// Where peers reach us: the NAT's public mapping, or the TURN server's relayed address.
    pub address: SocketAddr,
    /// The local socket behind it (a host candidate).
    pub base: SocketAddr,
    /// The server URL it came from, as configured.
    pub url: String,
}

/// The path a peer's traffic takes: the local and remote end of ICE's selected pair (W3C's
/// selected `RTCIceCandidatePair`). Read in [`PeerInfo::path`](crate::PeerInfo::path) and
/// [`PeerStats::path`](crate::PeerStats::path), and reported by
/// [`Event::PeerMoved`](crate::Event::PeerMoved) and
/// [`Event::IceRestartEnded`](crate::Event::IceRestartEnded).
///
/// ```
/// use rtcmesh::{CandidateKind, PeerPath};
///
/// let path = PeerPath {
///     local: CandidateKind::Host,
///     local_address: "192.168.1.20:5000".parse()?,
///     remote: CandidateKind::Relayed,
///     remote_address: "203.0.113.7:49160".parse()?,
/// };
/// assert!(path.is_relayed()); // the peer's TURN server relays it
/// assert_eq!(path.to_string(), "host 192.168.1.20:5000 -> relay 203.0.113.7:49160");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerPath {
    /// [`Host`](CandidateKind::Host) (sent from the socket, directly or through a NAT) or
    /// [`Relayed`](CandidateKind::Relayed) (through our TURN allocation).
    pub local: CandidateKind,
    /// The local address datagrams leave from (the socket, or our relayed address).
    pub local_address: SocketAddr,
    /// What the remote address was signalled as; [`PeerReflexive`](CandidateKind::PeerReflexive)
    /// if it never was (the peer was found at an address it never announced: behind a NAT, or
    /// after a rebinding).
    pub remote: CandidateKind,
    /// Where datagrams go.
    pub remote_address: SocketAddr,
}

impl PeerPath {
    /// Whether a TURN server relays this path (on either side).
    pub fn is_relayed(&self) -> bool {
        self.local == CandidateKind::Relayed || self.remote == CandidateKind::Relayed
    }
}

impl fmt::Display for PeerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} {}",
            self.local, self.local_address, self.remote, self.remote_address
        )
    }
}
