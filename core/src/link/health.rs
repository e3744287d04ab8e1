//! The deadlines that end a link (connect timeout, silence, lost ICE) or start its handshake
//! over.

use std::time::{Duration, Instant};

use super::{Link, Loss, Progress, Sink};
use crate::config::MeshConfig;
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
            if !self.announced && now >= self.connect_deadline {
                progress.lost = Some(Loss::ConnectTimeout);
            } else if self.ice_lost_at.is_some_and(|at| now >= at + limits.grace) {
                progress.lost = Some(Loss::IceLost);
            } else if self.announced && now >= self.last_heard + limits.silence {
                progress.lost = Some(Loss::Silent);
            } else if self.closing {
                progress.lost = Some(Loss::Closed);
            } else if !self.announced
                && !progress.connected
                && self.answered_at.is_some_and(|at| now >= at + limits.retry)
            {
                progress.retry = true;
            }
        }
        progress
    }

    /// The link's next deadline: str0m's timer, the connect timeout, the ICE grace period.
    pub fn deadline(&self, limits: Limits) -> Option<Instant> {
        let mut at = self.rtc_deadline;
        let mut earliest = |t: Instant| at = Some(at.map_or(t, |a| a.min(t)));
        if self.announced {
            earliest(self.last_heard + limits.silence);
        } else {
            earliest(self.connect_deadline);
            if let Some(answered) = self.answered_at {
                earliest(answered + limits.retry);
            }
        }
        if let Some(lost) = self.ice_lost_at {
            earliest(lost + limits.grace);
        }
        at
    }
}
