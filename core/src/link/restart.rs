//! ICE restart: when a connected peer's path fails, the offering side (the larger id) sends a
//! new offer with new ICE credentials and its current candidates, and the answering side
//! follows. Unlike a handshake retry (a fresh `Rtc`), the restart keeps the `Rtc`: DTLS and the
//! SCTP association, and so every reliable packet in flight, survive it.
//!
//! Trouble is: nothing heard for `ice_restart_after`, ICE consent on the selected pair
//! unanswered that long, ICE reporting the path lost, or this side's address changing. Before
//! restarting, a peer heard from a new address is simply moved there ([`super::path`]).
//! Restarts are at least `ice_restart_interval` apart and at most `max_ice_restarts` per spell
//! of trouble; then the loss path (`peer_timeout`, `disconnect_grace`) decides.

use std::time::Instant;

use str0m::Input;

use super::negotiation::Negotiation;
use super::{Link, LinkEvent, Loss, Role};
use crate::event::{Event, Transmit};
use crate::signal::Signal;

/// Where a link stands on restarting ICE.
#[derive(Debug, Default)]
pub(super) struct Recovery {
    /// Restarts begun since the peer was last reachable.
    attempts: u32,
    /// When the latest restart began (offer sent, or restart offer followed).
    last_began: Option<Instant>,
    /// A restart began and has not ended (`IceRestartStarted` was emitted).
    active: bool,
    /// The latest restart reached the ICE agent (new credentials on both sides).
    applied: bool,
    /// ICE connected again after it was applied: the next selected pair seen ends it.
    reconnected: bool,
    /// This side's address changed: restart without waiting for silence.
    pub moved_locally: bool,
    /// A restart began since the last drive: the mesh should re-check its NAT mappings (the
    /// path may have died because ours changed; see [`LinkEvent::RecheckNat`]).
    pub recheck_nat: bool,
    /// Restarts begun in the link's life.
    pub total: u64,
}

impl Recovery {
    /// Starts over with a new connection (a handshake retry).
    pub fn reset(&mut self) {
        *self = Recovery {
            total: self.total,
            ..Recovery::default()
        };
    }

    /// Whether a restart is under way.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether ICE reconnected after a restart and waits for the path to report.
    pub fn awaits_path(&self) -> bool {
        self.reconnected
    }
}

impl Link {
    /// Whether another restart may begin at `now` (offering side, within the budget, rate).
    fn may_restart(&self, now: Instant) -> bool {
        let limits = self.timeouts;
        self.role == Role::Offerer
            && self.recovery.attempts < limits.max_restarts
            && self.recovery.last_began.is_none_or(|t| {
                t.checked_add(limits.restart_interval)
                    .is_some_and(|t| now >= t)
            })
            && matches!(
                self.negotiation,
                Negotiation::Done | Negotiation::Restarting { .. }
            )
    }

    /// Whether the path is in trouble at `now`.
    fn in_trouble(&self, now: Instant) -> bool {
        let limits = self.timeouts;
        let passed = |t: Instant| {
            t.checked_add(limits.restart_after)
                .is_some_and(|t| now >= t)
        };
        passed(self.last_heard)
            || self.path.consent_failing_since().is_some_and(passed)
            || self.ice_lost_at.is_some()
            || self.recovery.moved_locally
    }

    /// A connected link's recovery step: move a peer heard at a new address, restart ICE on
    /// trouble, end a restart that is no longer needed.
    pub(super) fn recover(&mut self, now: Instant) {
        let limits = self.timeouts;
        if let Some(old) = self.path.abandoned(now, limits.move_after) {
            self.path.drop_remote(&mut self.rtc, old);
            self.events.push_back(LinkEvent::RouteStale(old));
            // The peer's address changed as we see it: often because our own NAT mapping
            // changed, which the peer sees as our move. Our server-reflexive candidate (and an
            // allocation made through the old mapping) would be stale: check them now, so the
            // peer gets our new address trickled and a direct path can be found again.
            self.events.push_back(LinkEvent::RecheckNat);
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                self.end(Loss::Closed);
                return;
            }
            self.drive(now);
            if self.lost.is_some() {
                return;
            }
        }
        let trouble = self.in_trouble(now);
        if trouble && self.may_restart(now) {
            self.begin_restart(now);
            if std::mem::take(&mut self.recovery.recheck_nat) {
                self.events.push_back(LinkEvent::RecheckNat);
            }
        } else if !trouble
            && self.recovery.active
            && !self.recovery.applied
            && self
                .recovery
                .last_began
                .and_then(|t| t.checked_add(limits.restart_interval))
                .is_some_and(|t| now >= t)
        {
            // The path came back before the restart reached the peer (or its answer was lost):
            // the restart is over; a late answer is still applied.
            self.end_restart();
        }
    }

    /// Offering side: a new offer with new ICE credentials and the current candidates.
    fn begin_restart(&mut self, now: Instant) {
        let mut api = self.rtc.sdp_api();
        let ufrag = api.ice_restart(true).ufrag;
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        self.negotiation = Negotiation::Restarting { pending, ufrag };
        self.recovery.moved_locally = false;
        self.restart_began(now);
        self.signal(Signal::Offer(offer.to_sdp_string()));
    }

    /// Bookkeeping for a restart that began (either side).
    pub(super) fn restart_began(&mut self, now: Instant) {
        self.recovery.attempts += 1;
        self.recovery.total += 1;
        self.recovery.last_began = Some(now);
        self.recovery.applied = false;
        self.recovery.recheck_nat = true;
        self.recovery.reconnected = false;
        self.counts.ice_restarts += 1;
        if !self.recovery.active {
            self.recovery.active = true;
            crate::trace::restart_began(&self.span, self.recovery.attempts);
            self.events
                .push_back(LinkEvent::App(Event::IceRestartStarted(self.peer)));
        } else {
            crate::trace::restart_retried(&self.span, self.recovery.attempts);
        }
    }

    /// The restart reached the ICE agent (answer applied, or restart offer followed): the old
    /// pairs are gone and the agent checks the new candidates.
    pub(super) fn restart_applied(&mut self) {
        self.recovery.applied = true;
        self.recovery.reconnected = false;
        self.ice_lost_at = None;
    }

    /// ICE reported connected: after an applied restart, the next path seen ends it.
    pub(super) fn on_ice_connected(&mut self) {
        if self.recovery.active && self.recovery.applied {
            self.recovery.reconnected = true;
            self.path.forget_selected();
        }
    }

    /// Ends the restart with the current path (if known; otherwise when it is seen).
    pub(super) fn end_restart(&mut self) {
        let Some(path) = self.path.selected() else {
            self.recovery.reconnected = true;
            return;
        };
        if let Some(since) = self.recovery.last_began {
            self.events.push_back(LinkEvent::RestartEnded { since });
        }
        self.path.tell(path);
        self.recovery.active = false;
        self.recovery.applied = false;
        self.recovery.reconnected = false;
        self.recovery.attempts = 0;
        crate::trace::restart_ended(&self.span, &path);
        self.events
            .push_back(LinkEvent::App(Event::IceRestartEnded {
                peer: self.peer,
                path,
            }));
    }

    /// A new selected pair was seen on the traffic or in str0m's stats.
    pub(super) fn on_new_path(&mut self) {
        if !self.connected {
            return;
        }
        if self.recovery.awaits_path() {
            self.end_restart();
        } else if !self.recovery.is_active() {
            if let Some(path) = self.path.selected().filter(|&p| self.path.tell(p)) {
                self.moves += 1;
                self.counts.peer_moves += 1;
                crate::trace::moved(&self.span, &path);
                self.events.push_back(LinkEvent::App(Event::PeerMoved {
                    peer: self.peer,
                    path,
                }));
            }
        }
    }

    /// Whether the ICE-lost rule may remove the peer: not while a restart can still help.
    pub(super) fn restart_may_follow(&self, now: Instant, ice_lost_at: Instant) -> bool {
        let limits = self.timeouts;
        if limits.max_restarts == 0 || !self.connected {
            return false;
        }
        if self.role == Role::Offerer {
            self.recovery.attempts < limits.max_restarts
        } else {
            // The answering side waits for the offerer's restart, which its silence limit
            // bounds.
            ice_lost_at
                .checked_add(limits.silence)
                .is_some_and(|t| now < t)
        }
    }

    /// The next time the recovery step has something to decide, if after `now`.
    pub(super) fn recovery_deadline(&self, now: Instant) -> Option<Instant> {
        let limits = self.timeouts;
        if !self.connected {
            return None;
        }
        let mut at: Option<Instant> = None;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t.filter(|&t| t > now) {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        earliest(self.path.move_deadline(limits.move_after));
        let next_allowed = self
            .recovery
            .last_began
            .and_then(|t| t.checked_add(limits.restart_interval));
        if self.role == Role::Offerer && self.recovery.attempts < limits.max_restarts {
            let later = |t: Option<Instant>| match (t, next_allowed) {
                (Some(t), Some(n)) => Some(t.max(n)),
                (t, None) => t,
                (None, _) => None,
            };
            earliest(later(self.last_heard.checked_add(limits.restart_after)));
            earliest(later(
                self.path
                    .consent_failing_since()
                    .and_then(|t| t.checked_add(limits.restart_after)),
            ));
        }
        if self.recovery.active && !self.recovery.applied {
            earliest(next_allowed);
        }
        at
    }

    /// Notes a datagram this link emits (path and counters).
    pub(super) fn on_transmit(&mut self, now: Instant, t: &Transmit) -> bool {
        self.counters.datagrams_sent += 1;
        self.counters.bytes_sent += t.contents.len() as u64;
        self.path
            .on_transmit(now, t.source, t.destination, &t.contents)
    }
}
