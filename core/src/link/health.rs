//! The deadlines that end a link (connect timeout, silence, lost ICE) or start its handshake
//! over. Every deadline is `checked_add`ed: one past the end of `Instant`'s range (a
//! `Duration::MAX` setting, or a clock near its end) is "never", not a panic.

use std::time::{Duration, Instant};

use super::{Link, Loss, Progress, Sink};
use crate::config::MeshConfig;
use crate::limits::deadline;
use str0m::Input;

/// The time limits that end a link, from [`MeshConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// `disconnect_grace`.
    pub grace: Duration,
    /// `peer_timeout`.
    pub silence: Duration,
    /// `connect_retry_interval`.
    pub retry: Duration,
}

impl Limits {
    pub fn of(config: &MeshConfig) -> Limits {
        Limits {
            grace: config.disconnect_grace,
            silence: config.peer_timeout,
            retry: config.connect_retry_interval,
        }
    }
}

impl Link {
    /// Advances time to `now`, drains output and applies the link's own deadlines.
    pub fn timeout(&mut self, now: Instant, limits: Limits, sink: &mut Sink<'_>) -> Progress {
        self.clock = self.clock.max(now);
        let mut progress = if self.rtc.handle_input(Input::Timeout(now)).is_ok() {
            self.drive(now, sink)
        } else {
            Progress {
                lost: Some(Loss::Closed),
                ..Progress::default()
            }
        };
        if progress.lost.is_none() {
            let passed = |at: Option<Instant>| at.is_some_and(|at| now >= at);
            if !self.announced && passed(self.connect_deadline) {
                progress.lost = Some(Loss::ConnectTimeout);
            } else if passed(self.ice_lost_at.and_then(|at| deadline(at, limits.grace))) {
                progress.lost = Some(Loss::IceLost);
            } else if self.announced && passed(deadline(self.last_heard, limits.silence)) {
                progress.lost = Some(Loss::Silent);
            } else if self.closing {
                progress.lost = Some(Loss::Closed);
            } else if !self.announced
                && !progress.connected
                && passed(self.answered_at.and_then(|at| deadline(at, limits.retry)))
            {
                progress.retry = true;
            }
        }
        progress
    }

    /// The link's next deadline: str0m's timer, the connect timeout, the ICE grace period.
    pub fn deadline(&self, limits: Limits) -> Option<Instant> {
        let mut at = self.rtc_deadline;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        if self.announced {
            earliest(deadline(self.last_heard, limits.silence));
        } else {
            earliest(self.connect_deadline);
            earliest(self.answered_at.and_then(|a| deadline(a, limits.retry)));
        }
        earliest(
            self.ice_lost_at
                .and_then(|lost| deadline(lost, limits.grace)),
        );
        at
    }
}
