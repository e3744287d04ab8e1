//! Signals in and candidates out: the offer / answer / candidate exchange the application
//! carries through its signaling transport.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::Candidate;

use super::Mesh;
use crate::allowlist;
use crate::error::{CandidateError, SignalError};
use crate::limits;
use crate::mdns::{Asked, CandidateAddress, MdnsQuery};
use crate::nat::IceTransportPolicy;
use crate::path::LocalCandidate;
use crate::signal::Signal;
use crate::transfer::PeerId;

impl Mesh {
    /// Registers a local socket address as a host ICE candidate for every peer, present and
    /// future. Call it with the address the socket is bound to (not `0.0.0.0`) before adding peers;
    /// peers already negotiating get it trickled as a [`Signal::Candidate`].
    ///
    /// With ICE servers configured, gathering starts from this address at the next call that
    /// gives the mesh a time (`handle_timeout`, for one); under
    /// [`IceTransportPolicy::Relay`](crate::IceTransportPolicy::Relay) the address is used to
    /// reach the TURN server but never given to peers.
    pub fn add_host_candidate(&mut self, address: SocketAddr) -> Result<(), CandidateError> {
        let candidate =
            Candidate::host(address, "udp").map_err(|e| CandidateError::Rejected(e.to_string()))?;
        if self.host_addresses.contains(&address) {
            return Ok(());
        }
        self.host_addresses.push(address);
        self.nat.add_host(address);
        self.absorb_nat();
        if self.nat.policy() == IceTransportPolicy::Relay {
            return Ok(());
        }
        for key in self.peers.keys() {
            self.peers
                .link_mut(key)
                .add_local_candidate(candidate.clone());
            self.settle(key);
        }
        Ok(())
    }

    /// This side's socket moved from `old` to `new` (a new network, a new port): `new` becomes
    /// a host candidate for every peer (trickled to those already negotiating) and `old` is
    /// dropped, so ICE checks pairs from the new address; on links where this side offers, ICE
    /// restarts at once (rate limits apply, see [`MeshConfig::ice_restart_interval`](crate::MeshConfig::ice_restart_interval)).
    /// Peers stay connected; a peer's own checks from `new` move it here on the other side too.
    /// With ICE servers, what they gave through `old` (server-reflexive candidates, TURN
    /// allocations) is dropped and gathered again from `new`, and trickled to the peers (a
    /// restart offer carries whatever is gathered by then). Call it right after the socket
    /// changed, before handing it any datagram.
    pub fn move_host_candidate(
        &mut self,
        now: Instant,
        old: SocketAddr,
        new: SocketAddr,
    ) -> Result<(), CandidateError> {
        if old == new {
            return Ok(());
        }
        let gone =
            Candidate::host(old, "udp").map_err(|e| CandidateError::Rejected(e.to_string()))?;
        Candidate::host(new, "udp").map_err(|e| CandidateError::Rejected(e.to_string()))?;
        let now = self.observe(now);
        // Server-reflexive and relayed candidates gathered through the old socket go with it;
        // the ICE servers are asked again from the new one.
        self.nat.move_host(now, old, new);
        self.add_host_candidate(new)?;
        self.host_addresses.retain(|&a| a != old);
        for key in self.peers.keys() {
            let link = self.peers.link_mut(key);
            link.remove_host_candidate(gone.clone());
            link.handle_timeout(now);
            self.settle(key);
        }
        Ok(())
    }

    /// The registered host addresses.
    pub fn host_candidates(&self) -> &[SocketAddr] {
        &self.host_addresses
    }

    /// The candidates gathered from ICE servers so far (server-reflexive, relayed).
    pub fn local_candidates(&self) -> impl Iterator<Item = &LocalCandidate> + '_ {
        self.nat.local_candidates()
    }

    /// Whether gathering is done (W3C `iceGatheringState` `"complete"`): every ICE server gave
    /// its candidate or failed. Always true without ICE servers. Peers added before that get
    /// the rest trickled; waiting for it (briefly) makes the first offer carry everything.
    pub fn ice_gathering_complete(&self) -> bool {
        self.nat.gathering_complete()
    }

    /// The host names in [`MeshConfig::ice_servers`](crate::MeshConfig::ice_servers) that still
    /// need addresses: resolve each and pass the result to
    /// [`set_ice_server_addresses`](Mesh::set_ice_server_addresses). (IP literals need nothing;
    /// the adapters do this for you.)
    pub fn ice_server_hosts(&self) -> Vec<String> {
        self.nat.unresolved_hosts()
    }

    /// The addresses `host` resolved to (the core does no DNS). An empty list means the lookup
    /// failed: the servers named so are reported with
    /// [`IceServerError::Unresolved`](crate::IceServerError::Unresolved).
    pub fn set_ice_server_addresses(&mut self, host: &str, addresses: &[IpAddr]) {
        self.nat.set_addresses(self.last_now, host, addresses);
        self.absorb_nat();
    }

    /// New credentials for TURN servers this mesh was created with, while it runs: short-lived
    /// ones renewed before they expire (coturn's `use-auth-secret`, a managed TURN service's
    /// REST call). `server` names the servers by URL (as in
    /// [`MeshConfig::ice_servers`](crate::MeshConfig::ice_servers); scheme, host, port and
    /// transport must match) and carries the new username and credential.
    ///
    /// Nothing is dropped: an allocation that exists keeps relaying with the username it was
    /// made with (TURN refuses any other on it, and refreshing it needs no new credential), and
    /// the next allocation on that server (after a loss, a network change, a server restart)
    /// uses the new ones. A server whose last attempt failed (e.g.
    /// [`IceServerError::Unauthorized`](crate::IceServerError::Unauthorized): the credential
    /// had expired) tries again at once. Errors change nothing. `rtcmesh_tokio::join` does this
    /// for credentials the signaling server mints.
    ///
    /// ```
    /// use std::time::Instant;
    /// use rtcmesh::{IceServer, Mesh, MeshConfig};
    ///
    /// let turn = |username: &str, credential: &str| {
    ///     IceServer::turn("turn:203.0.113.1:3478", username, credential)
    /// };
    /// let config = MeshConfig::default().with_ice_servers(vec![turn("1767225600:ann", "c2VjcmV0")]);
    /// let mut mesh = Mesh::create_mesh(2, config)?;
    /// // An hour later, fresh ones from your credential service:
    /// mesh.set_ice_server_credentials(Instant::now(), &turn("1767229200:ann", "bmV3ZXI="))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_ice_server_credentials(
        &mut self,
        now: Instant,
        server: &crate::IceServer,
    ) -> Result<(), crate::error::CredentialsError> {
        if self.closed {
            return Err(crate::error::CredentialsError::Closed);
        }
        let now = self.observe(now);
        self.nat.set_credentials(Some(now), server)?;
        self.absorb_nat();
        Ok(())
    }

    /// The next `.local` name a peer's candidates carry, for the adapter to resolve with mDNS
    /// (browsers hide their host addresses so; the core does no DNS). Answer each with
    /// [`resolved_mdns`](Mesh::resolved_mdns) within
    /// [`Limits::mdns_timeout`](crate::Limits::mdns_timeout); the adapters do this for you.
    /// New names come only from [`handle_signal`](Mesh::handle_signal): poll after it.
    pub fn poll_mdns_query(&mut self) -> Option<MdnsQuery> {
        self.mdns.next()
    }

    /// The adapter's answer to an [`MdnsQuery`]: `Some(address)` sends `peer`'s candidates
    /// carrying `name` to ICE with the address in its place (as signalled otherwise), `None`
    /// (it did not resolve) drops them. Returns whether any candidate took the address. An
    /// answer for a query that timed out, or a peer that is gone, is ignored; an address
    /// outside [`MeshConfig::remote_allowlist`](crate::MeshConfig::remote_allowlist) is
    /// dropped (`candidates_not_allowed`).
    pub fn resolved_mdns(
        &mut self,
        now: Instant,
        peer: PeerId,
        name: &str,
        address: Option<IpAddr>,
    ) -> bool {
        if self.closed || !self.mdns.answer(peer, name) {
            return false;
        }
        let Some(key) = self.peers.key(peer) else {
            return false;
        };
        let now = self.observe(now);
        let Some(ip) = address else {
            self.stats.mdns_names_unresolved += 1;
            self.peers.link_mut(key).drop_mdns(name);
            return false;
        };
        if !allowlist::is_allowed(self.config.remote_allowlist.as_deref(), ip) {
            self.stats.candidates_not_allowed += 1;
            self.peers.link_mut(key).drop_mdns(name);
            return false;
        }
        self.stats.mdns_names_resolved += 1;
        let applied = self.peers.link_mut(key).resolved_mdns(now, name, ip);
        self.settle(key);
        applied > 0
    }

    /// Starts a query for each name the link's candidates brought; past the mesh's limit, the
    /// name's candidates are dropped (and counted).
    fn ask_mdns(&mut self, key: usize, now: Instant) {
        if !self.peers.contains(key) {
            return;
        }
        let limits = &self.config.limits;
        let deadline = limits::deadline(now, limits.mdns_timeout);
        let max = limits.max_mdns_queries;
        let link = self.peers.link_mut(key);
        let peer = link.peer();
        for name in link.take_mdns_names() {
            if self.mdns.ask(peer, name.clone(), deadline, max) == Asked::Full {
                link.drop_mdns(&name);
                self.stats.mdns_names_over_limit += 1;
            }
        }
    }

    /// Drops the names not answered in time, with their candidates.
    pub(super) fn expire_mdns(&mut self, now: Instant) {
        if self.mdns.deadline().is_none_or(|at| at > now) {
            return;
        }
        for (peer, name) in self.mdns.expire(now) {
            self.stats.mdns_timeouts += 1;
            if let Some(key) = self.peers.key(peer) {
                self.peers.link_mut(key).drop_mdns(&name);
            }
        }
    }

    /// Passes a signal received from `from` (through the application's signaling transport).
    ///
    /// Signals are bounded ([`MeshConfig::limits`](crate::MeshConfig::limits)): longer ones are
    /// refused with [`SignalError::TooLarge`], a peer's candidates past the cap are dropped, and
    /// a new offer (the remote starting over, or restarting ICE) faster than the renegotiation
    /// rate is refused with [`SignalError::TooManyOffers`]; each is counted in
    /// [`stats`](Mesh::stats). An ICE restart also starts the peer's candidate cap over, since
    /// it replaces the remote candidates.
    pub fn handle_signal(
        &mut self,
        now: Instant,
        from: PeerId,
        signal: Signal,
    ) -> Result<(), SignalError> {
        if self.closed {
            return Err(SignalError::Closed);
        }
        let limits = &self.config.limits;
        let max = match signal {
            Signal::Offer(_) | Signal::Answer(_) => limits.max_sdp_len,
            Signal::Candidate(_) => limits.max_candidate_len,
        };
        if signal.body().len() > max {
            self.stats.signals_too_large += 1;
            return Err(SignalError::TooLarge {
                size: signal.body().len(),
                max,
            });
        }
        let key = self.peers.key(from).ok_or(SignalError::UnknownPeer(from))?;
        let now = self.observe(now);
        let Some(signal) = self.within_allowlist(signal) else {
            return Ok(());
        };
        if let Signal::Offer(sdp) = &signal {
            let follow = self.peers.link_mut(key).starts_over(now, sdp);
            if let Err(SignalError::TooManyOffers(_)) = follow {
                self.stats.offers_rate_limited += 1;
            }
            if follow? {
                // The offerer gave up on a stalled handshake and started over: follow it.
                self.retry_link(key, now);
                if !self.peers.contains(key) {
                    return Ok(());
                }
            }
        }
        let result = self.peers.link_mut(key).handle_signal(now, signal);
        self.ask_mdns(key, now);
        // An answer that left the link unusable ends it (reported as lost).
        self.settle(key);
        if result.is_ok() {
            self.absorb_nat();
        }
        result
    }

    /// The signal with its remote candidates limited to the allowlist; `None` when it was a
    /// single candidate outside it (dropped and counted).
    fn within_allowlist(&mut self, signal: Signal) -> Option<Signal> {
        let Some(list) = self.config.remote_allowlist.as_deref() else {
            return Some(signal);
        };
        match signal {
            Signal::Candidate(attr) => {
                let ip = allowlist::candidate_address(&attr);
                // A name is checked once resolved (`resolved_mdns`).
                let name = matches!(
                    crate::mdns::candidate_address(&attr),
                    CandidateAddress::Mdns(_)
                );
                if name || ip.is_some_and(|ip| allowlist::is_allowed(Some(list), ip)) {
                    Some(Signal::Candidate(attr))
                } else {
                    self.stats.candidates_not_allowed += 1;
                    None
                }
            }
            Signal::Offer(sdp) => {
                let (sdp, removed) = allowlist::filter_sdp(&sdp, list);
                self.stats.candidates_not_allowed += removed as u64;
                Some(Signal::Offer(sdp))
            }
            Signal::Answer(sdp) => {
                let (sdp, removed) = allowlist::filter_sdp(&sdp, list);
                self.stats.candidates_not_allowed += removed as u64;
                Some(Signal::Answer(sdp))
            }
        }
    }
}
