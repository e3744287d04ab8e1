//! What a link refuses from its remote, per [`Limits`]: remote candidates past the cap (trickled,
//! in an SDP, or peer-reflexive from a new source address), data channels outside the layout,
//! messages above our packet size, and new offers faster than the renegotiation rate.
//!
//! str0m keeps every remote candidate and every SCTP stream for the connection's life and scans
//! them on each new candidate or poll, so these are refused before str0m sees them where
//! possible, and closed right after where not.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::net::Protocol;
use str0m::{Candidate, CandidateKind};

use crate::config::MeshConfig;
use crate::limits::{Limits, RateLimit};
use crate::mdns::{self, CandidateAddress, HeldNames};

/// One remote candidate as str0m tells them apart.
type CandidateKey = (SocketAddr, CandidateKind, Protocol);

/// The remote candidates given to the current `Rtc`, bounded.
#[derive(Debug, Default)]
pub(super) struct RemoteCandidates {
    known: HashSet<CandidateKey>,
    addresses: HashSet<SocketAddr>,
    /// `a=candidate` lines passed on that we could not parse (each takes a slot).
    unparsed: usize,
    /// `.local` candidates waiting for their names to resolve (each takes a slot).
    mdns: HeldNames,
}

/// Why a `.local` candidate was not held for its name to resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MdnsRefused {
    /// The candidate cap is reached (`candidates_over_limit`).
    OverLimit,
    /// The peer has `max_mdns_names` names waiting (`mdns_names_over_limit`).
    TooManyNames,
}

/// What filtering an SDP's candidates removed, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Removed {
    /// Past the candidate cap.
    pub over_limit: u64,
    /// `.local` names past `max_mdns_names`.
    pub mdns_over_limit: u64,
    /// `.local` names that are not valid ones.
    pub mdns_refused: u64,
}

impl RemoteCandidates {
    fn len(&self) -> usize {
        self.known.len() + self.unparsed + self.mdns.len()
    }

    /// Holds a `.local` candidate until its name resolves, if there is room.
    fn hold_mdns(
        &mut self,
        name: &str,
        attribute: &str,
        max: usize,
        max_names: usize,
    ) -> Result<(), MdnsRefused> {
        if self.mdns.holds(name, attribute) {
            return Ok(());
        }
        if self.len() >= max {
            return Err(MdnsRefused::OverLimit);
        }
        self.mdns
            .hold(name, attribute, max_names)
            .map_err(|mdns::Refused::TooManyNames| MdnsRefused::TooManyNames)
    }

    /// Whether `c` may go to str0m: it is known already, or there is room (it is remembered).
    fn admit(&mut self, c: &Candidate, max: usize) -> bool {
        let key = (c.addr(), c.kind(), c.proto());
        if self.known.contains(&key) {
            return true;
        }
        if self.len() >= max {
            return false;
        }
        self.known.insert(key);
        self.addresses.insert(key.0);
        true
    }

    /// Whether a datagram from `source` may reach str0m: from an address str0m knows, or room
    /// for the peer-reflexive candidate it would learn from it.
    fn admit_source(&mut self, source: SocketAddr, max: usize) -> bool {
        if self.addresses.contains(&source) {
            return true;
        }
        let prflx = (source, CandidateKind::PeerReflexive, Protocol::Udp);
        if self.len() >= max {
            return false;
        }
        self.known.insert(prflx);
        self.addresses.insert(source);
        true
    }

    /// Adds `other`'s candidates to these (an upper bound on what str0m may hold when it is not
    /// known which of the two sets it kept).
    fn merge(&mut self, other: RemoteCandidates, max_names: usize) {
        self.known.extend(other.known);
        self.addresses.extend(other.addresses);
        self.unparsed += other.unparsed;
        self.mdns.merge(other.mdns, max_names);
    }

    /// `sdp` with the `a=candidate` lines past the cap removed, and `.local` ones taken out
    /// (held for their names to resolve, or removed), and how many were removed.
    fn filter_sdp(&mut self, sdp: &str, max: usize, max_names: usize) -> (String, Removed) {
        let mut removed = Removed::default();
        let mut out = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            if let Some(attr) = line.strip_prefix("a=") {
                if attr.starts_with("candidate:") {
                    match mdns::candidate_address(attr) {
                        CandidateAddress::Mdns(name) => {
                            match self.hold_mdns(name, attr, max, max_names) {
                                Ok(()) => {}
                                Err(MdnsRefused::OverLimit) => removed.over_limit += 1,
                                Err(MdnsRefused::TooManyNames) => removed.mdns_over_limit += 1,
                            }
                            continue;
                        }
                        CandidateAddress::BadName => {
                            removed.mdns_refused += 1;
                            continue;
                        }
                        CandidateAddress::Other => {}
                    }
                    let admitted = match Candidate::from_sdp_string(attr.trim_end()) {
                        Ok(c) => self.admit(&c, max),
                        Err(_) if self.len() < max => {
                            self.unparsed += 1;
                            true
                        }
                        Err(_) => false,
                    };
                    if !admitted {
                        removed.over_limit += 1;
                        continue;
                    }
                }
            }
            out.push_str(line);
        }
        (out, removed)
    }
}

/// A link's limits and what the remote has used of them.
#[derive(Debug)]
pub(super) struct Guard {
    limits: Limits,
    max_packet_size: usize,
    /// Remote candidates of the current `Rtc`'s ICE agent (cleared when the handshake starts
    /// over, and when an ICE restart reaches the agent: str0m drops its remote candidates then).
    remote: RemoteCandidates,
    /// Channels outside the layout the remote opened (kept across restarts).
    refused_channels: u32,
    /// New offers from the remote (kept across restarts).
    offers: RateLimit,
}

impl Guard {
    pub fn new(config: &MeshConfig) -> Guard {
        Guard {
            limits: config.limits.clone(),
            max_packet_size: config.max_packet_size,
            remote: RemoteCandidates::default(),
            refused_channels: 0,
            offers: RateLimit::full(config.limits.renegotiation_burst),
        }
    }
}

/// What to do with a data channel the remote opened outside the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefusedChannel {
    /// Close it; the connection carries on.
    Close,
    /// Close it and end the connection: the remote is past its allowance.
    CloseAndEnd,
}

impl Guard {
    /// Whether a remote candidate may go to str0m: known already, or room under the cap.
    pub fn admit_candidate(&mut self, c: &Candidate) -> bool {
        self.remote.admit(c, self.limits.max_remote_candidates)
    }

    /// An offer's or answer's SDP with its candidates past the cap removed and its `.local`
    /// ones held (see [`Guard::hold_mdns`]), and what was removed.
    pub fn bound_sdp(&mut self, sdp: &str) -> (String, Removed) {
        self.remote.filter_sdp(
            sdp,
            self.limits.max_remote_candidates,
            self.limits.max_mdns_names,
        )
    }

    /// Holds a `.local` candidate until its name resolves (it takes a slot of the cap
    /// meanwhile); a repeat is held once.
    pub fn hold_mdns(&mut self, name: &str, attribute: &str) -> Result<(), MdnsRefused> {
        self.remote.hold_mdns(
            name,
            attribute,
            self.limits.max_remote_candidates,
            self.limits.max_mdns_names,
        )
    }

    /// The names held since the last call (the mesh asks the adapter to resolve each).
    pub fn take_mdns_names(&mut self) -> Vec<String> {
        self.remote.mdns.take_fresh()
    }

    /// The candidates carrying `name`, released from their slots.
    pub fn release_mdns(&mut self, name: &str) -> Vec<String> {
        self.remote.mdns.release(name)
    }

    /// Where `name` resolved to for the current candidate set, if it did.
    pub fn mdns_address(&self, name: &str) -> Option<std::net::IpAddr> {
        self.remote.mdns.resolved(name)
    }

    /// Remembers where `name` resolved to, for later candidates carrying it.
    pub fn remember_mdns(&mut self, name: &str, ip: std::net::IpAddr) {
        self.remote
            .mdns
            .remember(name, ip, self.limits.max_mdns_names);
    }

    /// Whether a datagram from a new address may go on to str0m: a new address becomes a
    /// peer-reflexive candidate, so it needs room under the cap.
    pub fn admit_source(&mut self, source: SocketAddr) -> bool {
        self.remote
            .admit_source(source, self.limits.max_remote_candidates)
    }

    /// The remote candidates start over (a handshake retry, or an ICE restart's new
    /// credentials reaching str0m, which then drops its remote candidates). Returns the old
    /// set, for [`Guard::keep_candidates`] if the new SDP fails to apply.
    pub fn forget_candidates(&mut self) -> RemoteCandidates {
        std::mem::take(&mut self.remote)
    }

    /// After an SDP that replaced the candidate set failed to apply: str0m may have dropped
    /// the old candidates or not, so both sets are counted.
    pub fn keep_candidates(&mut self, before: Option<RemoteCandidates>) {
        if let Some(before) = before {
            self.remote.merge(before, self.limits.max_mdns_names);
        }
    }

    /// Whether a new offer from the remote may start the handshake over at `now`.
    pub fn offer_allowed(&mut self, now: Instant) -> bool {
        let (burst, interval) = (
            self.limits.renegotiation_burst,
            self.limits.renegotiation_interval,
        );
        self.offers.allows(now, burst, interval)
    }

    /// Records that a new offer started the handshake over.
    pub fn offer_taken(&mut self) {
        self.offers.take();
    }

    /// A channel the remote opened outside the layout: closed at once; past the allowance the
    /// connection ends.
    pub fn refuse_channel(&mut self) -> RefusedChannel {
        self.refused_channels = self.refused_channels.saturating_add(1);
        if self.refused_channels > self.limits.max_refused_channels {
            RefusedChannel::CloseAndEnd
        } else {
            RefusedChannel::Close
        }
    }

    /// Whether an incoming message fits our own packet size.
    pub fn fits_packet_size(&self, len: usize) -> bool {
        len <= self.max_packet_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: u16) -> Candidate {
        Candidate::host(SocketAddr::from(([127, 0, 0, 1], 5000 + i)), "udp").expect("candidate")
    }

    #[test]
    fn candidates_past_the_cap_are_refused_but_repeats_pass() {
        let mut remote = RemoteCandidates::default();
        assert!(remote.admit(&host(0), 2));
        assert!(remote.admit(&host(1), 2));
        assert!(!remote.admit(&host(2), 2));
        assert!(remote.admit(&host(0), 2), "a repeat takes no slot");
        assert!(remote.admit_source(SocketAddr::from(([127, 0, 0, 1], 5001)), 2));
        assert!(!remote.admit_source(SocketAddr::from(([127, 0, 0, 1], 6000)), 2));
    }

    #[test]
    fn a_remote_past_its_channel_allowance_is_ended_and_offers_are_rate_limited() {
        let config = MeshConfig::default().with_limits(
            Limits::default()
                .with_max_refused_channels(1)
                .with_renegotiation_burst(1),
        );
        let mut guard = Guard::new(&config);
        assert_eq!(guard.refuse_channel(), RefusedChannel::Close);
        assert_eq!(guard.refuse_channel(), RefusedChannel::CloseAndEnd);
        let now = Instant::now();
        assert!(guard.offer_allowed(now));
        guard.offer_taken();
        assert!(!guard.offer_allowed(now), "the burst is spent");
        assert!(guard.fits_packet_size(config.max_packet_size));
        assert!(!guard.fits_packet_size(config.max_packet_size + 1));
    }

    #[test]
    fn a_merged_set_counts_both() {
        let mut fresh = RemoteCandidates::default();
        assert!(fresh.admit(&host(0), 2));
        let mut old = RemoteCandidates::default();
        assert!(old.admit(&host(0), 2));
        assert!(old.admit(&host(1), 2));
        fresh.merge(old, 8);
        assert_eq!(fresh.len(), 2, "a candidate in both counts once");
        assert!(!fresh.admit(&host(2), 2));
        assert!(fresh.admit_source(SocketAddr::from(([127, 0, 0, 1], 5001)), 2));
    }

    #[test]
    fn sdp_lines_past_the_cap_are_removed() {
        let sdp = "v=0\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 127.0.0.1 5001 typ host\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                   a=candidate:x garbage\r\n\
                   a=end-of-candidates\r\n";
        let mut remote = RemoteCandidates::default();
        let (out, removed) = remote.filter_sdp(sdp, 1, 8);
        assert_eq!(removed.over_limit, 2);
        assert_eq!(
            out,
            "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\n"
        );
    }
}
