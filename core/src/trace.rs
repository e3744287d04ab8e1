//! `tracing` spans and events: one span per mesh (`mesh`, with its `id` and `mode`) and, inside
//! it, one per peer (`peer`, with the peer's `id`), entered by nothing: events name their span
//! as parent, so no span is entered per packet. Events mark what changes a peer's life, at info
//! level (connected, ICE restart began / ended, moved, lost with its reason, removed) or debug
//! level (a handshake retry, a further restart attempt); nothing is logged per packet. Without
//! a subscriber each call is a check of a cached flag (measured in the benchmark, see README).

use tracing::{debug, info, info_span, Span};

use crate::path::PeerPath;
use crate::transfer::{Mode, PeerId};

/// The mesh's span.
pub(crate) fn mesh_span(id: PeerId, mode: Mode) -> Span {
    info_span!("mesh", id, mode = ?mode)
}

/// A peer's span, inside the mesh's.
pub(crate) fn peer_span(mesh: &Span, peer: PeerId) -> Span {
    info_span!(parent: mesh, "peer", id = peer)
}

pub(crate) fn connected(span: &Span) {
    info!(parent: span, "connected");
}

pub(crate) fn handshake_retried(span: &Span) {
    debug!(parent: span, "handshake started over with a new connection");
}

pub(crate) fn restart_began(span: &Span, attempt: u32) {
    info!(parent: span, attempt, "ICE restart began");
}

pub(crate) fn restart_retried(span: &Span, attempt: u32) {
    debug!(parent: span, attempt, "ICE restart tried again");
}

pub(crate) fn restart_ended(span: &Span, path: &PeerPath) {
    info!(parent: span, local = %path.local_address, remote = %path.remote_address, relayed = path.is_relayed(), "ICE restart ended");
}

pub(crate) fn moved(span: &Span, path: &PeerPath) {
    info!(parent: span, local = %path.local_address, remote = %path.remote_address, relayed = path.is_relayed(), "moved to a new path");
}

pub(crate) fn lost(span: &Span, reason: &'static str) {
    info!(parent: span, reason, "lost");
}

pub(crate) fn removed(span: &Span) {
    info!(parent: span, "removed");
}

pub(crate) fn closed(span: &Span) {
    info!(parent: span, "closed");
}
