//! The earliest deadline of all peers in O(log n): one ordered entry per peer.

use std::collections::BTreeSet;
use std::time::Instant;

/// Deadlines keyed by slab key; each key has at most one entry.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeSet<(Instant, usize)>,
}

impl Timers {
    /// Replaces `key`'s deadline `old` (if any) with `new` (if any).
    pub fn reschedule(&mut self, key: usize, old: Option<Instant>, new: Option<Instant>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.queue.remove(&(old, key));
        }
        if let Some(new) = new {
            self.queue.insert((new, key));
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|&(at, _)| at)
    }

    /// Keys whose deadline is at or before `now`, earliest first.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        self.queue
            .iter()
            .take_while(|&&(at, _)| at <= now)
            .map(|&(_, key)| key)
            .collect()
    }
}
