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
use super::{Link, LinkEvent, Loss, Role, Timeouts};
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

/// What the recovery step decides for a connected link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Offer an ICE restart now.
    Restart,
    /// The path came back before the restart reached the peer (or its answer was lost): the
    /// restart is over (a late answer is still applied).
    EndRestart,
    /// Nothing to do.
    Wait,
}

/// What the recovery decisions read from the rest of the link.
#[derive(Debug, Clone, Copy)]
pub(super) struct Facts {
    pub role: Role,
    pub limits: Timeouts,
    /// No offer/answer of ours is outstanding but a restart's (a restart may be offered).
    pub negotiation_idle: bool,
    /// When the last datagram from the peer arrived.
    pub last_heard: Instant,
    /// Since when ICE consent on the selected pair goes unanswered.
    pub consent_failing_since: Option<Instant>,
    /// When ICE reported the path lost.
    pub ice_lost_at: Option<Instant>,
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

    /// When the next restart may begin (rate limit), if one began.
    fn next_allowed(&self, limits: &Timeouts) -> Option<Instant> {
        self.last_began
            .and_then(|t| t.checked_add(limits.restart_interval))
    }

    /// Whether another restart may begin at `now`: the offering side, within the budget and
    /// the rate, with no other negotiation outstanding.
    fn may_restart(&self, now: Instant, f: &Facts) -> bool {
        f.role == Role::Offerer
            && self.attempts < f.limits.max_restarts
            && self.next_allowed(&f.limits).is_none_or(|t| now >= t)
            && f.negotiation_idle
    }

    /// Whether the path is in trouble at `now`: nothing heard, consent unanswered, ICE lost,
    /// or this side moved.
    fn in_trouble(&self, now: Instant, f: &Facts) -> bool {
        let passed = |t: Instant| {
            t.checked_add(f.limits.restart_after)
                .is_some_and(|t| now >= t)
        };
        passed(f.last_heard)
            || f.consent_failing_since.is_some_and(passed)
            || f.ice_lost_at.is_some()
            || self.moved_locally
    }

    /// The recovery step's decision at `now`.
    pub fn step(&self, now: Instant, f: &Facts) -> Step {
        let trouble = self.in_trouble(now, f);
        if trouble && self.may_restart(now, f) {
            Step::Restart
        } else if !trouble
            && self.active
            && !self.applied
            && self.next_allowed(&f.limits).is_some_and(|t| now >= t)
        {
            Step::EndRestart
        } else {
            Step::Wait
        }
    }

    /// Bookkeeping for a restart that began (either side). Returns whether it begins a spell
    /// of trouble (`IceRestartStarted` is due) rather than retrying within one.
    pub fn began(&mut self, now: Instant) -> bool {
        self.attempts += 1;
        self.total += 1;
        self.last_began = Some(now);
        self.applied = false;
        self.recheck_nat = true;
        self.reconnected = false;
        !std::mem::replace(&mut self.active, true)
    }

    /// Restarts begun in this spell of trouble.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The restart reached the ICE agent.
    pub fn applied(&mut self) {
        self.applied = true;
        self.reconnected = false;
    }

    /// ICE reported connected. Returns whether this follows an applied restart (then the next
    /// path seen ends it, and the old one is forgotten).
    pub fn ice_connected(&mut self) -> bool {
        let after_restart = self.active && self.applied;
        if after_restart {
            self.reconnected = true;
        }
        after_restart
    }

    /// The restart ended on a path: returns when it began.
    pub fn ended(&mut self) -> Option<Instant> {
        self.active = false;
        self.applied = false;
        self.reconnected = false;
        self.attempts = 0;
        self.last_began
    }

    /// The restart cannot end yet (no path known): it ends when one is seen.
    pub fn end_when_path_seen(&mut self) {
        self.reconnected = true;
    }

    /// Whether the ICE-lost rule may remove a connected peer at `now`: not while a restart can
    /// still help.
    pub fn may_follow(&self, now: Instant, ice_lost_at: Instant, f: &Facts) -> bool {
        if f.limits.max_restarts == 0 {
            return false;
        }
        if f.role == Role::Offerer {
            self.attempts < f.limits.max_restarts
        } else {
            // The answering side waits for the offerer's restart, which its silence limit
            // bounds.
            ice_lost_at
                .checked_add(f.limits.silence)
                .is_some_and(|t| now < t)
        }
    }

    /// The next time [`step`](Self::step) has something to decide, if after `now`, besides a
    /// move (`move_deadline`).
    pub fn deadline(
        &self,
        now: Instant,
        f: &Facts,
        move_deadline: Option<Instant>,
    ) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t.filter(|&t| t > now) {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        earliest(move_deadline);
        let next_allowed = self.next_allowed(&f.limits);
        if f.role == Role::Offerer && self.attempts < f.limits.max_restarts {
            let later = |t: Option<Instant>| match (t, next_allowed) {
                (Some(t), Some(n)) => Some(t.max(n)),
                (t, None) => t,
                (None, _) => None,
            };
            earliest(later(f.last_heard.checked_add(f.limits.restart_after)));
            earliest(later(
                f.consent_failing_since
                    .and_then(|t| t.checked_add(f.limits.restart_after)),
            ));
        }
        if self.active && !self.applied {
            earliest(next_allowed);
        }
        at
    }
}

impl Link {
    /// What the recovery decisions read from the link now.
    fn facts(&self) -> Facts {
        Facts {
            role: self.role,
            limits: self.timeouts,
            negotiation_idle: matches!(
                self.negotiation,
                Negotiation::Done | Negotiation::Restarting { .. }
            ),
            last_heard: self.deadlines.last_heard(),
            consent_failing_since: self.path.consent_failing_since(),
            ice_lost_at: self.deadlines.ice_lost_at(),
        }
    }

    /// A connected link's recovery step: move a peer heard at a new address, restart ICE on
    /// trouble, end a restart that is no longer needed.
    pub(super) fn recover(&mut self, now: Instant) {
        if let Some(old) = self.path.abandoned(now, self.timeouts.move_after) {
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
        match self.recovery.step(now, &self.facts()) {
            Step::Restart => {
                self.begin_restart(now);
                if std::mem::take(&mut self.recovery.recheck_nat) {
                    self.events.push_back(LinkEvent::RecheckNat);
                }
            }
            Step::EndRestart => self.end_restart(),
            Step::Wait => {}
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
        let sdp = super::reliable::advertise(self.reliable.enabled(), offer.to_sdp_string());
        self.signal(Signal::Offer(sdp));
    }

    /// A restart began (either side): counted, traced, and reported when it begins a spell.
    pub(super) fn restart_began(&mut self, now: Instant) {
        let first = self.recovery.began(now);
        self.counts.ice_restarts += 1;
        if first {
            crate::trace::restart_began(&self.span, self.recovery.attempts());
            self.events
                .push_back(LinkEvent::App(Event::IceRestartStarted(self.peer)));
        } else {
            crate::trace::restart_retried(&self.span, self.recovery.attempts());
        }
    }

    /// The restart reached the ICE agent (answer applied, or restart offer followed): the old
    /// pairs are gone and the agent checks the new candidates.
    pub(super) fn restart_applied(&mut self) {
        self.recovery.applied();
        self.deadlines.ice_restarted();
    }

    /// ICE reported connected: after an applied restart, the next path seen ends it.
    pub(super) fn on_ice_connected(&mut self) {
        if self.recovery.ice_connected() {
            self.path.forget_selected();
        }
    }

    /// Ends the restart with the current path (if known; otherwise when it is seen).
    pub(super) fn end_restart(&mut self) {
        let Some(path) = self.path.selected() else {
            self.recovery.end_when_path_seen();
            return;
        };
        if let Some(since) = self.recovery.ended() {
            self.events.push_back(LinkEvent::RestartEnded { since });
        }
        self.path.tell(path);
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
        self.connected && self.recovery.may_follow(now, ice_lost_at, &self.facts())
    }

    /// The next time the recovery step has something to decide, if after `now`.
    pub(super) fn recovery_deadline(&self, now: Instant) -> Option<Instant> {
        if !self.connected {
            return None;
        }
        let moving = self.path.move_deadline(self.timeouts.move_after);
        self.recovery.deadline(now, &self.facts(), moving)
    }

    /// Notes a datagram this link emits (path and counters).
    pub(super) fn on_transmit(&mut self, now: Instant, t: &Transmit) -> bool {
        self.counters.datagrams_sent += 1;
        self.counters.bytes_sent += t.contents.len() as u64;
        self.path
            .on_transmit(now, t.source, t.destination, &t.contents)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::MeshConfig;

    fn facts(role: Role, now: Instant) -> Facts {
        let config = MeshConfig::default()
            .with_ice_restart_after(Some(Duration::from_secs(2)))
            .with_ice_restart_interval(Duration::from_secs(3))
            .with_max_ice_restarts(2);
        Facts {
            role,
            limits: Timeouts::of(&config),
            negotiation_idle: true,
            last_heard: now,
            consent_failing_since: None,
            ice_lost_at: None,
        }
    }

    #[test]
    fn the_offering_side_restarts_on_silence_within_its_budget_and_rate() {
        let t0 = Instant::now();
        let f = facts(Role::Offerer, t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = Recovery::default();
        assert_eq!(r.step(at(1), &f), Step::Wait, "heard recently");
        assert_eq!(r.deadline(at(1), &f, None), Some(at(2)));
        assert_eq!(r.step(at(2), &f), Step::Restart);
        assert!(r.began(at(2)), "the first restart of a spell is reported");
        assert_eq!(r.step(at(3), &f), Step::Wait, "one restart per interval");
        assert_eq!(r.deadline(at(3), &f, None), Some(at(5)));
        assert_eq!(r.step(at(5), &f), Step::Restart);
        assert!(
            !r.began(at(5)),
            "a retry within the spell is not reported again"
        );
        assert_eq!(r.step(at(9), &f), Step::Wait, "the budget is spent");
        assert!(
            !r.may_follow(at(9), at(8), &f),
            "ICE loss may now remove the peer"
        );
        assert_eq!(r.ended(), Some(at(5)));
        assert_eq!(r.attempts(), 0, "a new spell has a new budget");
        assert_eq!(r.total, 2);
    }

    #[test]
    fn the_answering_side_never_restarts_and_waits_out_the_silence_limit_for_the_offerer() {
        let t0 = Instant::now();
        let f = facts(Role::Answerer, t0);
        let r = Recovery::default();
        let later = t0 + Duration::from_secs(60);
        assert_eq!(r.step(later, &f), Step::Wait);
        assert!(r.may_follow(t0 + Duration::from_secs(1), t0, &f));
        assert!(!r.may_follow(t0 + f.limits.silence, t0, &f));
    }

    #[test]
    fn a_restart_the_path_outlived_ends_after_the_interval_unless_it_reached_the_agent() {
        let t0 = Instant::now();
        let mut f = facts(Role::Offerer, t0);
        let mut r = Recovery::default();
        r.began(t0);
        f.last_heard = t0 + Duration::from_secs(2);
        assert_eq!(r.step(t0 + Duration::from_secs(2), &f), Step::Wait);
        assert_eq!(r.step(t0 + Duration::from_secs(3), &f), Step::EndRestart);
        r.applied();
        assert_eq!(
            r.step(t0 + Duration::from_secs(3), &f),
            Step::Wait,
            "an applied restart ends on the path ICE finds"
        );
        assert!(r.ice_connected());
        assert!(r.awaits_path());
    }
}
