//! Per-connection rate limit: two token buckets, one for messages and one for bytes.

use std::time::Instant;

/// How fast one connection may send: a sustained rate and a burst, for messages and for
/// bytes. A connection that goes past either is closed with 4002 "Sending too fast".
///
/// ```
/// use rtcmesh_tokio::RateLimit;
///
/// let strict = RateLimit { messages_per_second: 20.0, message_burst: 200.0, ..RateLimit::default() };
/// assert_eq!(strict.bytes_per_second, RateLimit::default().bytes_per_second);
/// let _trusted = RateLimit::unlimited(); // benchmarks, a private network
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained messages per second (default 200).
    pub messages_per_second: f64,
    /// Messages that may arrive at once before the sustained rate applies (default 1,000:
    /// a peer joining a full mesh lobby answers every member with an SDP and a few
    /// candidates in one go).
    pub message_burst: f64,
    /// Sustained bytes per second (default 1 MiB).
    pub bytes_per_second: f64,
    /// Bytes that may arrive at once (default 4 MiB).
    pub byte_burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            messages_per_second: 200.0,
            message_burst: 1000.0,
            bytes_per_second: 1024.0 * 1024.0,
            byte_burst: 4.0 * 1024.0 * 1024.0,
        }
    }
}

impl RateLimit {
    /// No limit (for benchmarks and trusted deployments).
    pub fn unlimited() -> RateLimit {
        RateLimit {
            messages_per_second: f64::INFINITY,
            message_burst: f64::INFINITY,
            bytes_per_second: f64::INFINITY,
            byte_burst: f64::INFINITY,
        }
    }
}

/// The buckets of one connection.
#[derive(Debug)]
pub(crate) struct Buckets {
    limit: RateLimit,
    messages: f64,
    bytes: f64,
    at: Instant,
}

impl Buckets {
    pub fn new(limit: RateLimit, now: Instant) -> Buckets {
        Buckets {
            limit,
            messages: limit.message_burst,
            bytes: limit.byte_burst,
            at: now,
        }
    }

    /// Takes one message of `len` bytes; `false` when the connection went over its limit.
    pub fn admit(&mut self, now: Instant, len: usize) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        let l = self.limit;
        self.messages = (self.messages + elapsed * l.messages_per_second).min(l.message_burst);
        self.bytes = (self.bytes + elapsed * l.bytes_per_second).min(l.byte_burst);
        self.messages -= 1.0;
        self.bytes -= len as f64;
        self.messages >= 0.0 && self.bytes >= 0.0
    }
}

/// How long until `buckets` could admit one more message (for tests).
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn refill_time(limit: &RateLimit) -> Duration {
        Duration::from_secs_f64(1.0 / limit.messages_per_second)
    }

    #[test]
    fn a_burst_passes_then_the_sustained_rate_applies() {
        let limit = RateLimit {
            messages_per_second: 10.0,
            message_burst: 5.0,
            bytes_per_second: 1000.0,
            byte_burst: 1000.0,
        };
        let start = Instant::now();
        let mut b = Buckets::new(limit, start);
        for _ in 0..5 {
            assert!(b.admit(start, 1));
        }
        assert!(!b.admit(start, 1), "the sixth at once is too many");
        let mut b = Buckets::new(limit, start);
        // One message every 100 ms forever is fine.
        for i in 0..100u32 {
            assert!(b.admit(start + refill_time(&limit) * i, 1));
        }
    }

    #[test]
    fn bytes_are_limited_too() {
        let limit = RateLimit {
            bytes_per_second: 100.0,
            byte_burst: 200.0,
            ..RateLimit::default()
        };
        let start = Instant::now();
        let mut b = Buckets::new(limit, start);
        assert!(b.admit(start, 200));
        assert!(!b.admit(start, 1));
        let mut b = Buckets::new(limit, start);
        assert!(b.admit(start, 150));
        assert!(b.admit(start + Duration::from_secs(1), 150));
        assert!(RateLimit::unlimited().messages_per_second.is_infinite());
    }
}
