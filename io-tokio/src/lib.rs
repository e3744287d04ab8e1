//! # rtcmesh-tokio
//!
//! Runs an [`rtcmesh`] mesh on a tokio UDP socket, and joins lobbies on a signaling server that
//! speaks the protocol of Godot 4's `webrtc_signaling` demo — or runs that server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use rtcmesh::{Event, Target, TransferMode};
//! use rtcmesh_tokio::{join, JoinOptions};
//!
//! let mut session = join("ws://127.0.0.1:9080", "", JoinOptions::default()).await?;
//! println!("peer {} in lobby {}", session.id(), session.lobby);
//! while let Some(event) = session.events.recv().await {
//!     match event {
//!         Event::PeerConnected(id) => {
//!             session.handle.send(Target::Peer(id), TransferMode::Reliable, 0, b"hello".to_vec()).await?;
//!         }
//!         Event::Packet(p) => println!("{} says {:?}", p.from, p.data),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! - [`Endpoint::spawn`] runs any [`rtcmesh::Machine`] (a mesh or a layer on one) on its own
//!   socket; [`Handle`] sends it commands, [`Events`] yields what it reports.
//! - [`join`] / [`join_with`] connect to a lobby and wire signals both ways.
//! - [`SignalServer`] (and the `rtcmesh-signal` binary) serve lobbies, over `ws://` or
//!   `wss://`, bounded for the internet ([`SignalConfig`]), optionally as one of several
//!   nodes sharing lobbies through Redis ([`ClusterConfig`]); see [`signal`].
//!
//! ## A loop that is not async
//! A game's frame must not wait for the network. [`Handle::try_send`],
//! [`Handle::try_send_many`] and [`Handle::try_call`] queue a command and return at once (from
//! any thread, the runtime's or not; [`TrySendError::Full`] hands the packet back when the loop
//! is behind); [`Handle::snapshot`] reads the peers, status and counters the loop published at
//! its last turn; [`Events::drain`] takes the events waiting now. What became of each send is
//! counted in [`SendStats`] and, for a batch, answered in its [`Reply`].
//!
//! ## Features
//! - `mdns` (on by default): peers' `.local` ICE candidates (browsers hide their host
//!   addresses behind such names) are resolved with mDNS (`mdns-sd`), so a browser on the
//!   same LAN connects host to host, also with no route out. The daemon (a thread, port 5353)
//!   starts only when a peer sends such a name. Without the feature those candidates are
//!   dropped (counted in `MeshStats::mdns_names_unresolved`).
//! - `server` (off by default): [`SignalServer`] and the `rtcmesh-signal` binary
//!   (`cargo install rtcmesh-tokio --features server`). A game client that only joins lobbies
//!   leaves it off and builds none of the server's dependencies (Redis, tracing-subscriber, the
//!   server's TLS).
//!
#![cfg_attr(
    not(feature = "server"),
    doc = " [`SignalServer`]: https://docs.rs/rtcmesh-tokio/latest/rtcmesh_tokio/struct.SignalServer.html"
)]
#![cfg_attr(
    not(feature = "server"),
    doc = " [`SignalConfig`]: https://docs.rs/rtcmesh-tokio/latest/rtcmesh_tokio/struct.SignalConfig.html"
)]
#![cfg_attr(
    not(feature = "server"),
    doc = " [`ClusterConfig`]: https://docs.rs/rtcmesh-tokio/latest/rtcmesh_tokio/struct.ClusterConfig.html"
)]
//!
//! ## Sending in bursts, and a slow application
//! [`Handle::send`] costs one round trip to the loop per packet; [`Handle::send_many`] sends a
//! batch (a game tick) in one turn and answers per packet. [`Events`] is bounded
//! ([`EndpointConfig::event_capacity`]): while it is full the loop stops reading the socket, so
//! a slow application slows the senders (through SCTP) instead of growing a buffer. Reliable
//! channels lose nothing; unreliable packets may be dropped by the kernel meanwhile.
//!
//! ## Addresses
//! [`EndpointConfig::bind`] defaults to `127.0.0.1:0`. To accept peers from other machines,
//! bind a specific interface address (it is then the announced host candidate) or bind
//! `0.0.0.0:port` and set [`EndpointConfig::announce`] to the one address peers should use:
//! rtcmesh announces exactly one host candidate per socket and never enumerates interfaces.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod endpoint;
mod game_loop;
mod lobby_client;
mod mdns;
pub mod signal;
mod socket;
mod streams;

pub use endpoint::{Closed, Endpoint, EndpointConfig, Events, Handle, OutgoingPacket};
pub use game_loop::{Reply, SendStats, Snapshot, TrySendError};
pub use lobby_client::{join, join_with, JoinError, JoinOptions, Session};
#[cfg(feature = "server")]
pub use signal::{ClusterConfig, RateLimit, SignalConfig, SignalMetrics, SignalServer, TurnSecret};

pub use rtcmesh;
/// The TLS library behind `wss://` (for [`JoinOptions::tls`] and the server's `SignalConfig::tls`).
pub use rustls;
