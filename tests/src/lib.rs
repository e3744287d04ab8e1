//! The simulated network every rtcmesh integration test, property and example runs on.
//!
//! One [`World`] drives every kind of node: any [`rtcmesh::Machine`] (a [`Mesh`](rtcmesh::Mesh),
//! a [`Multiplayer`](rtcmesh::Multiplayer)) and hostile peers ([`hostile::Attacker`]), side by
//! side, on a fake clock. It moves datagrams (through per-link [`LinkConditions`]: latency,
//! loss, reordering, partitions) and signals (a perfect, delayed channel, or the sans-IO
//! [`LobbyServer`](rtcmesh::lobby::LobbyServer) in the loop over simulated WebSockets) between
//! them, and records every event each node emits, so tests read as stories: build a world,
//! connect nodes, run until a condition, assert on the event logs.
//!
//! For NAT traversal the world also holds NAT boxes ([`SimNat`]: cone or symmetric mapping,
//! with filtering) in front of chosen nodes, and STUN/TURN servers ([`SimTurnServer`], the
//! sans-IO `turn-server-proto`) on the same fake clock.

pub mod feed;
pub mod fuzz;
pub mod hostile;
pub mod nat;
pub mod sim;
pub mod stream;
pub mod turn_server;

pub use feed::{Feed, Kind};
pub use nat::{Filtering, Mapping, NatBehavior, SimNat};
pub use sim::lobby::{JoinOptions, Member, SimLobby};
pub use sim::{LinkConditions, Node, NodeId, World};
pub use stream::Stream;
pub use turn_server::SimTurnServer;

/// The code of `README.md` and of every page of the guide in `docs/`, compiled and run as doc
/// tests (`cargo test -p rtcmesh-tests --doc`), so the documentation cannot drift from the code.
/// `tests/tests/docs.rs` checks that every page is listed here and that the links between
/// pages lead somewhere.
#[cfg(doctest)]
pub mod docs {
    #[doc = include_str!("../../README.md")]
    pub struct Readme;
    #[doc = include_str!("../../core/README.md")]
    pub struct CoreReadme;
    #[doc = include_str!("../../io-tokio/README.md")]
    pub struct TokioReadme;
    #[doc = include_str!("../../io-mio/README.md")]
    pub struct MioReadme;
    #[doc = include_str!("../../docs/README.md")]
    pub struct Guide;
    #[doc = include_str!("../../docs/design.md")]
    pub struct Design;
    #[doc = include_str!("../../docs/game-loop.md")]
    pub struct GameLoop;
    #[doc = include_str!("../../docs/godot.md")]
    pub struct Godot;
    #[doc = include_str!("../../docs/host-migration.md")]
    pub struct HostMigration;
    #[doc = include_str!("../../docs/internet.md")]
    pub struct Internet;
    #[doc = include_str!("../../docs/interop.md")]
    pub struct Interop;
    #[doc = include_str!("../../docs/loss-recovery.md")]
    pub struct LossRecovery;
    #[doc = include_str!("../../docs/loop.md")]
    pub struct Loop;
    #[doc = include_str!("../../docs/mio.md")]
    pub struct Mio;
    #[doc = include_str!("../../docs/multiplayer.md")]
    pub struct Multiplayer;
    #[doc = include_str!("../../docs/network-changes.md")]
    pub struct NetworkChanges;
    #[doc = include_str!("../../docs/performance.md")]
    pub struct Performance;
    #[doc = include_str!("../../docs/reliability.md")]
    pub struct Reliability;
    #[doc = include_str!("../../docs/sending.md")]
    pub struct Sending;
    #[doc = include_str!("../../docs/signaling-server.md")]
    pub struct SignalingServer;
    #[doc = include_str!("../../docs/stats-and-traces.md")]
    pub struct StatsAndTraces;
    #[doc = include_str!("../../docs/testing.md")]
    pub struct Testing;
    #[doc = include_str!("../../docs/tokio.md")]
    pub struct Tokio;
}
