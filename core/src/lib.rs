//! # rtcmesh
//!
//! A peer-to-peer WebRTC multiplayer mesh — Godot 4's `WebRTCMultiplayerPeer` — as a sans-IO
//! state machine on [`str0m`]. One [`Mesh`] owns one `str0m::Rtc` per remote peer, all behind
//! one UDP socket. It never touches sockets, threads or clocks: time comes in as `Instant`
//! arguments and everything it wants done comes out of `poll_*` calls.
//!
//! ```no_run
//! # use rtcmesh::*;
//! # fn recv() -> Option<(std::net::SocketAddr, Vec<u8>)> { None }
//! # fn send_udp(_: &Transmit) {}
//! # fn deliver(_: PeerId, _: Signal) {}
//! # fn clock() -> std::time::Instant { unimplemented!() } // your loop's clock
//! # let local: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
//! let mut mesh = Mesh::create_mesh(2, MeshConfig::default())?;
//! mesh.add_host_candidate(local)?;                      // the UDP socket's address
//! mesh.add_peer(clock(), 1, 1)?;                        // Godot's add_peer(1, 1)
//! loop {
//!     if let Some((from, bytes)) = recv() { mesh.handle_datagram(clock(), from, local, &bytes); }
//!     mesh.handle_timeout(clock());                      // every turn: keeps the clock current
//!     while let Some(t) = mesh.poll_transmit() { send_udp(&t); }
//!     while let Some(e) = mesh.poll_event() {
//!         match e {
//!             Event::Signal(s) => deliver(s.to, s.signal), // via your signaling; the other side calls handle_signal
//!             Event::Packet(p) => println!("{} sent {:?}", p.from, p.data),
//!             other => println!("{other:?}"),
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The multiplayer layer
//! [`Multiplayer`] puts Godot's `SceneMultiplayer` on a mesh: `send_bytes`, server relay (clients
//! reach each other through the server), peer exchange and optional authentication, with the
//! same wire bytes as Godot 4, driven through the same `handle_*` / `poll_*` methods. See
//! [`multiplayer`].
//!
//! ## Who offers
//! On `add_peer`, the side whose own id is **larger** creates the SDP offer (the rule of Godot's
//! signaling demo), so the server (id 1) never offers and two meshes that only forward each
//! other's [`Signal`]s connect without further coordination.
//!
//! ## When the network changes
//! A connected peer whose NAT rebinds or who moves is found at its new address
//! ([`Event::PeerMoved`]); a path that goes silent is repaired by an ICE restart on the same
//! connection ([`Event::IceRestartStarted`], [`Event::IceRestartEnded`]), so the peer keeps its
//! id and its reliable data. Only a path dead for `peer_timeout` ends in `PeerDisconnected`. If
//! your own socket moves, call [`Mesh::move_host_candidate`]. [`Mesh::peer_stats`] reports each
//! peer's round-trip time, selected candidate pair and traffic per channel.
//!
//! ## Determinism
//! The same inputs give the same events, in the same order, at the same times, except for what
//! str0m randomises internally: ICE credentials, DTLS handshake randomness and SCTP initial
//! values (and the DTLS certificate, unless [`MeshConfig::dtls_cert`] is given), and what the
//! STUN/TURN crates randomise: transaction ids. These change datagram bytes, never the sequence
//! of events a test observes on a perfect network.
//!
//! ## Across the internet
//! [`MeshConfig::ice_servers`] takes STUN and TURN servers as Godot's `initialize` does. The
//! mesh asks them for its public and relayed addresses through the same socket, before any
//! peer exists (so call `handle_timeout` once the host candidate is registered), and keeps the
//! allocation alive; [`Event::CandidateGathered`] and [`Event::IceServerFailed`] say what
//! happened, [`PeerInfo::path`] which path a peer's traffic takes. Servers named by host wait
//! for [`Mesh::set_ice_server_addresses`] (the adapters resolve them): the core does no DNS.
//! TURN servers over TCP or TLS (`turn:…?transport=tcp`, `turns:`, for networks that let no
//! UDP out) are reached on streams the adapter opens and feeds ([`stream`]): the core does no
//! TCP and no TLS either.

#![deny(missing_docs)]

mod allowlist;
mod channels;
mod config;
mod error;
mod event;
mod limits;
mod link;
pub mod lobby;
mod machine;
mod mdns;
mod mesh;
pub mod multiplayer;
mod nat;
mod path;
mod pump;
mod signal;
mod stats;
pub mod stream;
mod trace;
mod transfer;

pub use allowlist::{InvalidPrefix, IpPrefix};
pub use channels::{MAX_EXTRA_CHANNELS, RESERVED_CHANNELS};
pub use config::MeshConfig;
pub use error::{
    AddPeerError, CandidateError, CreateError, CredentialsError, DecodeSignalError, IceServerError,
    InvalidIceServer, PromoteError, RenameError, SendError, SignalError,
};
pub use event::{Event, LossReason, Packet, PendingEvents, Transmit};
pub use limits::{Limits, MultiplayerLimits};
pub use link::{ChannelStats, PeerStats, RetransmissionStats};
pub use machine::Machine;
pub use mdns::{MdnsLookup, MdnsQuery, MdnsResolver, NoMdns};
pub use mesh::{Mesh, PeerInfo};
pub use multiplayer::{
    AuthError, LobbyRequest, MigrationConfig, MigrationError, MigrationReason, Multiplayer,
    MultiplayerConfig, MultiplayerEvent, MultiplayerStats,
};
pub use nat::{IceServer, IceTransportPolicy, MAX_ICE_SERVER_URLS};
pub use path::{CandidateKind, LocalCandidate, PeerPath};
pub use pump::{
    udp_table_drops, DatagramPump, Flush, PumpStats, SocketBuffers, StreamBuffer, RECEIVE_BATCH,
    SOCKET_BUFFER, STREAM_BUFFER,
};
pub use signal::{OutgoingSignal, Signal};
pub use stats::MeshStats;
pub use stream::{StreamCommand, StreamEnd, StreamId, StreamInput, TlsFailure};
pub use transfer::{
    is_valid_peer_id, ConnectionStatus, InvalidTransferMode, Mode, PeerId, Target, TransferMode,
    SERVER_ID,
};

/// Internals for the fuzz targets and their `cargo test` runs (`rtcmesh-tests`), behind a
/// feature no application enables.
#[cfg(feature = "_internal_test_exports")]
#[doc(hidden)]
pub mod _internal_test_exports {
    /// Arbitrary bytes, cut into messages (a length byte, then that many bytes), to one peer's
    /// own-retransmission state as if they arrived on its hidden channel.
    pub fn reliable_messages(data: &[u8]) {
        crate::link::fuzz_reliable(data);
    }
}

/// The str0m version rtcmesh is built on, re-exported for configuration types such as
/// [`str0m::config::DtlsCert`].
pub use str0m;
