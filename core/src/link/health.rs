//! The deadlines that end a link (connect timeout, silence, lost ICE), start its handshake over,
//! or (once connected) move or restart its path ([`super::restart`]). Every deadline is
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

impl Link {
    /// Advances time to `now`, drains output and applies the link's own deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clock = self.clock.max(now);
        if self.hold_until.is_some_and(|at| now >= at) {
            self.release_held();
        }
        if self.rtc.handle_input(Input::Timeout(now)).is_ok() {
            self.drive(now);
        } else {
            self.end(Loss::Closed);
        }
        if self.lost.is_some() {
            return;
        }
        let limits = self.timeouts;
        let passed = |at: Option<Instant>| at.is_some_and(|at| now >= at);
        if !self.connected && passed(self.connect_deadline) {
            self.end(Loss::ConnectTimeout);
        } else if self.ice_lost_at.is_some_and(|at| {
            passed(deadline(at, limits.grace)) && !self.restart_may_follow(now, at)
        }) {
            self.end(Loss::IceLost);
        } else if self.connected && passed(deadline(self.last_heard, limits.silence)) {
            self.end(Loss::Silent);
        } else if !self.connected
            && passed(self.answered_at.and_then(|at| deadline(at, limits.retry)))
        {
            self.events.push_back(LinkEvent::RetryHandshake);
        } else if self.connected {
            self.recover(now);
        }
    }

    /// The link's next deadline: str0m's timer, the connect timeout, the ICE grace period, and
    /// (connected) the silence limit and the next move or restart decision after `now`.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        let limits = self.timeouts;
        let mut at = self.rtc_deadline;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        earliest(self.hold_until);
        if self.connected {
            earliest(deadline(self.last_heard, limits.silence));
            earliest(self.recovery_deadline(now));
        } else {
            earliest(self.connect_deadline);
            earliest(self.answered_at.and_then(|a| deadline(a, limits.retry)));
        }
        if let Some(lost) = self.ice_lost_at {
            if !self.restart_may_follow(now, lost) {
                earliest(deadline(lost, limits.grace));
            } else if self.role == Role::Answerer {
                // The answering side waits for the offerer's restart (see `restart_may_follow`);
                // the offering side restarts instead, on its own deadlines.
                earliest(deadline(lost, limits.silence));
            }
        }
        at
    }
}
