//! Signals in and candidates out: the offer / answer / candidate exchange the application
//! carries through its signaling transport.

use std::net::SocketAddr;
use std::time::Instant;

use smallvec::SmallVec;
use str0m::Candidate;

use super::Mesh;
use crate::allowlist;
use crate::error::{CandidateError, SignalError};
use crate::event::Event;
use crate::link::Limits;
use crate::signal::{OutgoingSignal, Signal};
use crate::transfer::PeerId;

impl Mesh {
    /// Registers a local socket address as a host ICE candidate for every peer, present and
    /// future. Call it with the address the socket is bound to (not `0.0.0.0`) before adding peers;
    /// peers already negotiating get it trickled as a [`Signal::Candidate`].
    pub fn add_host_candidate(&mut self, address: SocketAddr) -> Result<(), CandidateError> {
        let candidate =
            Candidate::host(address, "udp").map_err(|e| CandidateError::Rejected(e.to_string()))?;
        if self.host_addresses.contains(&address) {
            return Ok(());
        }
        self.host_addresses.push(address);
        let keys: SmallVec<[usize; 16]> = self.links.iter().map(|(k, _)| k).collect();
        for key in keys {
            let link = &mut self.links[key];
            let started = link.negotiation_started();
            if let Some(attr) = link.add_host_candidate(candidate.clone()) {
                if started {
                    self.events.push_back(Event::Signal(OutgoingSignal {
                        to: link.peer,
                        signal: Signal::Candidate(attr),
                    }));
                }
            }
            self.refresh(key);
        }
        Ok(())
    }

    /// The registered host addresses.
    pub fn host_candidates(&self) -> &[SocketAddr] {
        &self.host_addresses
    }

    /// Passes a signal received from `from` (through the application's signaling transport).
    ///
    /// Signals are bounded ([`MeshConfig::limits`](crate::MeshConfig::limits)): longer ones are
    /// refused with [`SignalError::TooLarge`], a peer's candidates past the cap are dropped, and
    /// a new offer (the remote starting over) faster than the renegotiation rate is refused with
    /// [`SignalError::TooManyOffers`]; each is counted in [`stats`](Mesh::stats).
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
        let key = *self
            .by_id
            .get(&from)
            .ok_or(SignalError::UnknownPeer(from))?;
        let now = self.observe(now);
        let Some(signal) = self.within_allowlist(signal) else {
            return Ok(());
        };
        if let Signal::Offer(sdp) = &signal {
            let follow = self.links[key].follows_new_offer(now, sdp);
            if let Err(SignalError::TooManyOffers(_)) = follow {
                self.stats.offers_rate_limited += 1;
            }
            if follow? {
                // The offerer gave up on a stalled handshake and started over: follow it.
                self.retry_link(key, now);
                if !self.links.contains(key) {
                    return Ok(());
                }
            }
        }
        let limits = Limits::of(&self.config);
        let result = self.links[key].handle_signal(now, signal, limits, &mut sink!(self));
        match result {
            Ok(progress) => {
                self.settle(key, progress);
                Ok(())
            }
            Err(e) => {
                if self.links[key].closing {
                    self.remove_link(key, true);
                }
                Err(e)
            }
        }
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
                if ip.is_some_and(|ip| allowlist::is_allowed(Some(list), ip)) {
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
