//! The simulated network every rtcmesh integration test, property and example runs on.
//!
//! A [`World`] owns N [`Mesh`]es, a fake clock and an in-memory network. It moves datagrams
//! (through per-link [`LinkConditions`]) and signals (a perfect, delayed channel standing in for
//! a signaling server) between them, and records every event each node emits, so tests read as
//! stories: build a world, connect nodes, run until a condition, assert on the event logs.
//! [`MpWorld`] does the same for the multiplayer layer.

pub mod fuzz;
pub mod hostile;
pub mod multiplayer_world;
pub mod sim;

pub use multiplayer_world::{Machine, MpNode, MpWorld};
pub use sim::{LinkConditions, Node, NodeId, World};
