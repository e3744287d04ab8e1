//! Signaling through a lobby server that speaks the protocol of Godot 4's `webrtc_signaling`
//! demo (godot-demo-projects, `networking/webrtc_signaling`), so Godot clients written against
//! that demo and rtcmesh peers can share one server.
//!
//! Everything here is I/O-free: [`LobbyMessage`] is the wire format (JSON text frames),
//! [`LobbyClient`] turns a WebSocket's text frames into mesh commands and the mesh's signals
//! into text frames, and [`LobbyServer`] is the whole server as a state machine over
//! connection ids. The WebSocket itself belongs to the caller (`rtcmesh-tokio` ships one).
//!
//! # Protocol
//! Every frame is `{"type": int, "id": int, "data": string}`:
//!
//! | type | client → server | server → client |
//! |---|---|---|
//! | 0 JOIN | `id` 0 = mesh, 1 = client/server; `data` lobby name or `""` to create one | `data` the lobby name |
//! | 1 ID | — | `id` your peer id (the lobby host gets 1); `data` `"true"` in a mesh lobby |
//! | 2 PEER_CONNECT | — | `id` a peer in your lobby (in a client/server lobby a client hears only of the host, the host of every client) |
//! | 3 PEER_DISCONNECT | — | `id` a peer that left |
//! | 4 OFFER, 5 ANSWER | `id` destination, `data` SDP | `id` source, `data` SDP |
//! | 6 CANDIDATE | `id` destination, `data` `"\n<mid>\n<index>\n<candidate>"` | `id` source |
//! | 7 SEAL | host only | lobby sealed; closed 10 s later |
//! | 12 TURN_CREDENTIALS | ask for fresh ones (`data` `""`; rate-limited) | only to connections opened with `?turn=1`, by a server configured to mint them: `data` `{"urls": [...], "username": "<expiry>:<member>", "credential": "...", "ttl": seconds}`, sent before the JOIN answer and again before they expire |
//!
//! Types 8–11 are host migration's, sent only to connections that opted in with `?migrate=1`;
//! 12 is rtcmesh's and the reference server refuses it ("Invalid command"), as a server that
//! does not mint credentials does.
//!
//! On PEER_CONNECT both sides add the peer and the side with the **larger** id offers, which
//! is the rule [`Mesh`](crate::Mesh) follows.

mod client;
mod message;
mod server;

pub use client::{ApplyError, LobbyClient, LobbyEvent};
pub use message::{LobbyError, LobbyMessage, MessageKind, MAX_MESSAGE_LEN};
pub use server::{
    address_key, close, ConnectOptions, ConnectionId, LobbyServer, LobbyServerConfig, LobbyStats,
    Migration, ServerOutput, HELLO_MIGRATE, SUCCESSION_LEN,
};

#[cfg(test)]
mod migration_tests;
