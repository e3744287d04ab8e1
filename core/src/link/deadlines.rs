//! The deadlines that end a link (connect timeout, silence, lost ICE), start its handshake over,
//! or (once connected) move or restart its path ([`super::ice_restart`]): [`Deadlines`] keeps
//! the moments they are measured from and gives a [`Verdict`]. Every deadline is
//! `checked_add`ed: one past the end of `Instant`'s range (a `Duration::MAX` setting, or a clock
//! near its end) is "never", not a panic.

use std::time::{Duration, Instant};

use super::{Link, LinkEvent, Loss, Role};
use crate::config::MeshConfig;
use crate::limits::deadline;
use str0m::Input;

/// The time limits that end or repair a link, from [`MeshConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// `disconnect_grace`.
    pub grace: Duration,
    /// `peer_timeout`.
    pub silence: Duration,
    /// `connect_retry_interval`.
    pub retry: Duration,
    /// `ice_restart_after` (or its automatic value).
    pub restart_after: Duration,
    /// `ice_restart_interval`.
    pub restart_interval: Duration,
    /// `max_ice_restarts`.
    pub max_restarts: u32,
    /// `peer_move_after`.
    pub move_after: Duration,
}

impl Timeouts {
    pub fn of(config: &MeshConfig) -> Timeouts {
        Timeouts {
            grace: config.disconnect_grace,
            silence: config.peer_timeout,
            retry: config.connect_retry_interval,
            restart_after: config.restart_after(),
            restart_interval: config.ice_restart_interval,
            max_restarts: config.max_ice_restarts,
            move_after: config.peer_move_after,
        }
    }
}

/// The moments a link's deadlines are measured from.
#[derive(Debug)]
pub(super) struct Deadlines {
    /// When the peer is given up if not connected (`None`: never).
    connect_by: Option<Instant>,
    /// Offering side: when the answer to the current offer was applied (the retry clock).
    answered_at: Option<Instant>,
    /// ICE connected on this connection (a later disconnection is a loss of the path).
    ice_was_connected: bool,
    /// When ICE reported the connected path lost (cleared when it reconnects, or a restart
    /// reaches the agent).
    ice_lost_at: Option<Instant>,
    /// When the last datagram from this peer arrived (or the connection began).
    last_heard: Instant,
}

/// What a link's deadlines decide at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The link ends, for this reason.
    End(Loss),
    /// The handshake did not connect in time: start it over with a fresh `Rtc`.
    RetryHandshake,
    /// Connected and within its limits: the recovery step decides on moves and restarts.
    Recover,
    /// Not connected yet, within its limits.
    Wait,
}

impl Deadlines {
    /// A connection that began at `now`, given up at `connect_by` unless connected.
    pub fn new(now: Instant, connect_by: Option<Instant>) -> Deadlines {
        Deadlines {
            connect_by,
            answered_at: None,
            ice_was_connected: false,
            ice_lost_at: None,
            last_heard: now,
        }
    }

    /// A new connection (a handshake retry) began at `now`: the answering side gets a new
    /// connect deadline (`Some`), the offering side keeps its own (`None`), which bounds the
    /// retries.
    pub fn start_over(&mut self, now: Instant, connect_by: Option<Option<Instant>>) {
        *self = Deadlines::new(now, connect_by.unwrap_or(self.connect_by));
    }

    /// Offering side: the answer arrived (the retry clock starts).
    pub fn answered(&mut self, now: Instant) {
        self.answered_at = Some(now);
    }

    /// A datagram from the peer arrived.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// When the peer was last heard from.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// When ICE reported the path lost, if it is.
    pub fn ice_lost_at(&self) -> Option<Instant> {
        self.ice_lost_at
    }

    /// ICE connected (again).
    pub fn ice_connected(&mut self) {
        self.ice_was_connected = true;
        self.ice_lost_at = None;
    }

    /// ICE disconnected: returns whether a connected path was lost (not a failed attempt).
    pub fn ice_disconnected(&mut self, now: Instant) -> bool {
        if self.ice_was_connected {
            self.ice_lost_at.get_or_insert(now);
        }
        self.ice_was_connected
    }

    /// An ICE restart reached the agent: the lost path is no longer the question.
    pub fn ice_restarted(&mut self) {
        self.ice_lost_at = None;
    }

    /// What the deadlines decide at `now`. `restart_may_follow(ice_lost_at)` tells whether an
    /// ICE restart can still help a lost path (then the ICE grace period does not end it).
    pub fn verdict(
        &self,
        now: Instant,
        connected: bool,
        limits: &Timeouts,
        restart_may_follow: impl Fn(Instant) -> bool,
    ) -> Verdict {
        let passed = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        if !connected && passed(self.connect_by) {
            Verdict::End(Loss::ConnectTimeout)
        } else if self
            .ice_lost_at
            .is_some_and(|at| passed(deadline(at, limits.grace)) && !restart_may_follow(at))
        {
            Verdict::End(Loss::IceLost)
        } else if connected && passed(deadline(self.last_heard, limits.silence)) {
            Verdict::End(Loss::Silent)
        } else if !connected && passed(self.answered_at.and_then(|at| deadline(at, limits.retry))) {
            Verdict::RetryHandshake
        } else if connected {
            Verdict::Recover
        } else {
            Verdict::Wait
        }
    }

    /// The next moment a [`verdict`](Self::verdict) may change (not counting the recovery
    /// step's own deadlines).
    pub fn next(
        &self,
        connected: bool,
        role: Role,
        limits: &Timeouts,
        restart_may_follow: impl Fn(Instant) -> bool,
    ) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        if connected {
            earliest(deadline(self.last_heard, limits.silence));
        } else {
            earliest(self.connect_by);
            earliest(self.answered_at.and_then(|a| deadline(a, limits.retry)));
        }
        if let Some(lost) = self.ice_lost_at {
            if !restart_may_follow(lost) {
                earliest(deadline(lost, limits.grace));
            } else if role == Role::Answerer {
                // The answering side waits for the offerer's restart (see
                // `Recovery::may_follow`); the offering side restarts instead, on its own
                // deadlines.
                earliest(deadline(lost, limits.silence));
            }
        }
        at
    }
}

impl Link {
    /// Advances time to `now`, drains output and applies the link's own deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        self.release_output_buffers();
        if self.held.deadline().is_some_and(|at| now >= at) {
            self.release_held();
        }
        // rtcmesh's own retransmission: losses and probes that came due, and an
        // acknowledgement that waited long enough (drained below with SCTP's own output).
        self.reliable.on_timeout(now);
        self.flush_reliable(now, false);
        if self.rtc.handle_input(Input::Timeout(now)).is_ok() {
            self.drive(now);
        } else {
            self.end(Loss::Closed);
        }
        if self.lost.is_some() {
            return;
        }
        let verdict = self
            .deadlines
            .verdict(now, self.connected, &self.timeouts, |lost| {
                self.restart_may_follow(now, lost)
            });
        match verdict {
            Verdict::End(loss) => self.end(loss),
            Verdict::RetryHandshake => self.events.push_back(LinkEvent::RetryHandshake),
            Verdict::Recover => self.recover(now),
            Verdict::Wait => {}
        }
    }

    /// The link's next deadline: str0m's timer, the held candidates' release, the connect
    /// timeout, the ICE grace period, and (connected) the silence limit and the next move or
    /// restart decision after `now`.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        let own = self
            .deadlines
            .next(self.connected, self.role, &self.timeouts, |lost| {
                self.restart_may_follow(now, lost)
            });
        [
            self.rtc_deadline,
            self.held.deadline(),
            self.reliable.deadline(),
            own,
            self.recovery_deadline(now),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Timeouts {
        Timeouts::of(&MeshConfig::default())
    }

    #[test]
    fn a_link_that_never_connects_retries_its_handshake_then_times_out() {
        let t0 = Instant::now();
        let l = limits();
        let mut d = Deadlines::new(t0, Some(t0 + Duration::from_secs(30)));
        let never = |_| false;
        assert_eq!(d.verdict(t0, false, &l, never), Verdict::Wait);
        d.answered(t0);
        assert_eq!(d.next(false, Role::Offerer, &l, never), Some(t0 + l.retry));
        assert_eq!(
            d.verdict(t0 + l.retry, false, &l, never),
            Verdict::RetryHandshake
        );
        d.start_over(t0 + l.retry, None);
        assert_eq!(
            d.verdict(t0 + Duration::from_secs(30), false, &l, never),
            Verdict::End(Loss::ConnectTimeout),
            "the offering side's retries keep its first deadline"
        );
    }

    #[test]
    fn a_connected_link_ends_on_silence_or_a_lost_path_no_restart_can_help() {
        let t0 = Instant::now();
        let l = limits();
        let mut d = Deadlines::new(t0, None);
        assert_eq!(d.verdict(t0, true, &l, |_| false), Verdict::Recover);
        assert_eq!(
            d.verdict(t0 + l.silence, true, &l, |_| false),
            Verdict::End(Loss::Silent)
        );
        assert!(
            !d.ice_disconnected(t0),
            "a path never connected is not lost"
        );
        d.ice_connected();
        assert!(d.ice_disconnected(t0));
        d.heard(t0 + l.grace);
        assert_eq!(
            d.verdict(t0 + l.grace, true, &l, |_| true),
            Verdict::Recover,
            "a restart may still help"
        );
        assert_eq!(
            d.verdict(t0 + l.grace, true, &l, |_| false),
            Verdict::End(Loss::IceLost)
        );
        d.ice_restarted();
        assert_eq!(
            d.verdict(t0 + l.grace, true, &l, |_| false),
            Verdict::Recover
        );
    }
}
