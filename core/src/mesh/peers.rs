//! The mesh's peer table: every link, and what the mesh alone keeps about each (its routes,
//! its slot in the timer queue, whether it waits to be drained). Nothing else in the mesh
//! writes per-peer bookkeeping, and the mesh reads a link only through its methods.

use std::collections::BTreeMap;
use std::time::Instant;

use slab::Slab;
use smallvec::SmallVec;

use super::demux::Demux;
use super::timers::Timers;
use crate::limits::MAX_ROUTES_PER_PEER;
use crate::link::Link;
use crate::path::Route;
use crate::transfer::PeerId;

/// One peer: its link, and the mesh's bookkeeping for it.
struct Peer {
    /// Boxed: a link is ~13 KB (str0m's `Rtc` alone is ~10 KB), and the slab grows by
    /// doubling, so inline links would leave up to a link's size of unused capacity per peer
    /// (3.7 KB per peer at 100 peers, 8 KB at 10 in `bench scale`).
    link: Box<Link>,
    /// Routes learned for this peer, forgotten when it is removed.
    routes: SmallVec<[Route; 2]>,
    /// The deadline registered in the timer queue.
    scheduled: Option<Instant>,
    /// On the list of links to drain at the next poll.
    listed: bool,
}

/// Every peer of a mesh, by slab key (stable for a link's life) and by id.
#[derive(Default)]
pub(super) struct PeerTable {
    peers: Slab<Peer>,
    by_id: BTreeMap<PeerId, usize>,
    demux: Demux,
    timers: Timers,
    /// Links that may need a drain at the next poll (each listed once).
    dirty: Vec<usize>,
}

impl PeerTable {
    /// Adds a link; returns its key.
    pub fn insert(&mut self, link: Link) -> usize {
        let peer = link.peer();
        let key = self.peers.insert(Peer {
            link: Box::new(link),
            routes: SmallVec::new(),
            scheduled: None,
            listed: false,
        });
        self.by_id.insert(peer, key);
        key
    }

    /// Removes a link, forgetting its routes and its deadline.
    pub fn remove(&mut self, key: usize) -> Link {
        let peer = self.peers.remove(key);
        self.timers.reschedule(key, peer.scheduled, None);
        for route in &peer.routes {
            self.demux.forget(route, key);
        }
        self.by_id.remove(&peer.link.peer());
        *peer.link
    }

    /// Host migration: the peer `old` goes by `new` from now on; its key, routes, deadline
    /// and place on the drain list stay.
    pub fn rekey(&mut self, old: PeerId, new: PeerId, mesh_span: &tracing::Span) {
        if let Some(key) = self.by_id.remove(&old) {
            self.peers[key].link.rename(new, mesh_span);
            self.by_id.insert(new, key);
        }
    }

    /// The key of the peer with this id.
    pub fn key(&self, id: PeerId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    pub fn contains_id(&self, id: PeerId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn contains(&self, key: usize) -> bool {
        self.peers.contains(key)
    }

    /// The link of `key`, which must exist.
    pub fn link(&self, key: usize) -> &Link {
        &self.peers[key].link
    }

    /// The link of `key`, which must exist.
    pub fn link_mut(&mut self, key: usize) -> &mut Link {
        &mut self.peers[key].link
    }

    /// The link of `key`, if it still exists.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Link> {
        self.peers.get_mut(key).map(|p| &mut *p.link)
    }

    /// The link of the peer with this id.
    pub fn by_id(&self, id: PeerId) -> Option<&Link> {
        self.key(id).map(|key| self.link(key))
    }

    /// Peer ids in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.by_id.keys().copied()
    }

    /// (id, key) pairs in ascending id order.
    pub fn entries(&self) -> impl Iterator<Item = (PeerId, usize)> + '_ {
        self.by_id.iter().map(|(&id, &key)| (id, key))
    }

    /// Every link, in slab order.
    pub fn links(&self) -> impl Iterator<Item = &Link> + '_ {
        self.peers.iter().map(|(_, p)| &*p.link)
    }

    /// Every key, in slab order (a copy: the caller may change the table meanwhile).
    pub fn keys(&self) -> SmallVec<[usize; 16]> {
        self.peers.iter().map(|(k, _)| k).collect()
    }

    /// The first key whose link claims a datagram on a route not known yet (a scan, for first
    /// contact only).
    pub fn find(&self, claims: impl Fn(&Link) -> bool) -> Option<usize> {
        self.peers
            .iter()
            .find(|(_, p)| claims(&p.link))
            .map(|(k, _)| k)
    }

    /// The peer a route is known to belong to.
    pub fn route(&self, route: &Route) -> Option<usize> {
        self.demux.lookup(route)
    }

    /// Routes `route` to `key` from now on (at most [`MAX_ROUTES_PER_PEER`] per peer, the
    /// oldest forgotten first).
    pub fn learn_route(&mut self, route: Route, key: usize) {
        self.demux.learn(route, key);
        let routes = &mut self.peers[key].routes;
        if !routes.contains(&route) {
            if routes.len() == MAX_ROUTES_PER_PEER {
                let old = routes.remove(0);
                self.demux.forget(&old, key);
            }
            routes.push(route);
        }
    }

    /// Forgets the routes of `key` that `keep` refuses.
    pub fn forget_routes(&mut self, key: usize, keep: impl Fn(&Link, Route) -> bool) {
        let peer = &mut self.peers[key];
        let routes = std::mem::take(&mut peer.routes);
        let (kept, gone): (SmallVec<_>, SmallVec<[_; 2]>) =
            routes.into_iter().partition(|&r| keep(&peer.link, r));
        peer.routes = kept;
        for route in gone {
            self.demux.forget(&route, key);
        }
    }

    /// Address pairs routed without a scan.
    pub fn known_routes(&self) -> usize {
        self.demux.len()
    }

    /// Registers `key`'s next deadline.
    pub fn schedule(&mut self, key: usize, next: Option<Instant>) {
        let peer = &mut self.peers[key];
        self.timers.reschedule(key, peer.scheduled, next);
        peer.scheduled = next;
    }

    /// The earliest deadline of all peers.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Keys whose deadline is at or before `now`, earliest first.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        self.timers.due(now)
    }

    /// Lists `key` to be drained at the next poll (once).
    pub fn mark_dirty(&mut self, key: usize) {
        let peer = &mut self.peers[key];
        if !peer.listed {
            peer.listed = true;
            self.dirty.push(key);
        }
    }

    /// The listed keys, taken off the list (`keep` is an emptied list whose allocation to
    /// reuse, see [`PeerTable::give_back`]).
    pub fn take_dirty(&mut self) -> Vec<usize> {
        let keys = std::mem::take(&mut self.dirty);
        for &key in &keys {
            if let Some(peer) = self.peers.get_mut(key) {
                peer.listed = false;
            }
        }
        keys
    }

    /// An emptied list from [`take_dirty`](PeerTable::take_dirty), kept for its allocation.
    pub fn give_back(&mut self, mut keys: Vec<usize>) {
        keys.clear();
        if self.dirty.is_empty() {
            self.dirty = keys;
        }
    }

    /// Whether a listed link still needs its drain.
    pub fn any_dirty(&self) -> bool {
        self.dirty
            .iter()
            .any(|&key| self.peers.get(key).is_some_and(|p| p.link.is_due()))
    }
}
