//! Address pair → peer: the O(1) datagram router in front of `Rtc::accepts`.

use crate::path::Route;
use std::collections::HashMap;

/// Known routes. A route is learned when a peer's `Rtc` accepts a datagram on it, and forgotten
/// when the peer is removed; the table never holds a key for a removed peer.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    routes: HashMap<Route, usize>,
}

impl Demux {
    /// The peer key this route belongs to.
    pub fn lookup(&self, route: &Route) -> Option<usize> {
        self.routes.get(route).copied()
    }

    /// Points `route` at `key`; returns the key it pointed at before, if another one.
    pub fn learn(&mut self, route: Route, key: usize) -> Option<usize> {
        self.routes.insert(route, key).filter(|&old| old != key)
    }

    /// Forgets `route` if it still points at `key`.
    pub fn forget(&mut self, route: &Route, key: usize) {
        if self.routes.get(route) == Some(&key) {
            self.routes.remove(route);
        }
    }

    /// Number of known routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }
}
