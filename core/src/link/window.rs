//! How much of a peer's traffic rtcmesh lets into SCTP at a time: about what the round trip
//! needs, between [`MeshConfig::sctp_send_buffer_min`] and [`MeshConfig::sctp_send_buffer`].
//!
//! sctp-proto (0.10) walks every message it holds on each poll, so the less it holds, the
//! cheaper each packet: a burst of 100-byte messages in a 128 KiB buffer is ~1,300 entries per
//! scan. But SCTP can only keep in flight what it holds, so a fixed small buffer caps a transfer
//! at buffer ÷ round trip (16 KiB over 50 ms: 0.3 MB/s). So the window starts at the minimum and,
//! while the sender has more to write than the window takes, is set once per round trip to twice
//! what SCTP released (acknowledged or abandoned) during the last one: it doubles each round trip
//! while it is what limits the transfer, and settles near twice the path's bandwidth-delay
//! product when the network is the limit. Without a round-trip measurement, or with a round trip
//! too short to time (a LAN, loopback), it stays at the minimum.
//!
//! The window also holds at most [`MAX_SCTP_CHUNKS`] SCTP chunks at the recent message size (a
//! fixed bound, in [`limits`](crate::limits)): sctp-proto's per-poll walks are per chunk, so a
//! megabyte of 100-byte messages (10,000 chunks), or even 32 KiB of 1-byte ones, would cost
//! each poll many times what 100 KB of 1-KB messages costs.
//!
//! The round trip is ICE's (the last STUN consent check on the selected pair, as a browser's
//! `currentRoundTripTime`); the released bytes come from SCTP's per-channel `bufferedAmount`.
//!
//! [`MeshConfig::sctp_send_buffer_min`]: crate::MeshConfig::sctp_send_buffer_min
//! [`MeshConfig::sctp_send_buffer`]: crate::MeshConfig::sctp_send_buffer

use std::time::{Duration, Instant};

use crate::limits::MAX_SCTP_CHUNKS;

/// The user data one SCTP chunk carries at rtcmesh's default MTU, roughly (1300 minus the
/// DTLS, SCTP and DATA chunk headers).
const CHUNK_PAYLOAD: usize = 1200;

/// The send window of one peer.
#[derive(Debug)]
pub(super) struct SendWindow {
    min: usize,
    max: usize,
    limit: usize,
    /// Bytes in SCTP at the last refresh plus the bytes written since: an upper bound, since
    /// SCTP only releases bytes while it handles input or is polled.
    in_sctp: usize,
    /// The latest ICE round trip.
    rtt: Option<Duration>,
    /// A write found the window full since the last refresh: the sender is window-limited.
    blocked: bool,
    /// Start of the current measurement (only while the sender is backlogged) and the bytes
    /// SCTP released since.
    sample: Option<(Instant, usize)>,
    /// User bytes per SCTP chunk over the last ~16 writes, times 16 (a moving average in
    /// integers, cheap on every packet).
    bytes_per_chunk_x16: usize,
}

impl SendWindow {
    pub fn new(min: usize, max: usize) -> SendWindow {
        let min = min.min(max);
        SendWindow {
            min,
            max,
            limit: min,
            in_sctp: 0,
            rtt: None,
            blocked: false,
            sample: None,
            // Until writes say otherwise, the chunk bound is the minimum window itself.
            bytes_per_chunk_x16: (min / MAX_SCTP_CHUNKS).max(1) * 16,
        }
    }

    /// The bytes SCTP may hold now: the window, and no more than [`MAX_SCTP_CHUNKS`] chunks of
    /// the recent message size.
    pub fn limit(&self) -> usize {
        self.limit
            .min(MAX_SCTP_CHUNKS * (self.bytes_per_chunk_x16 / 16))
    }

    /// Bytes in SCTP, at most (see [`SendWindow::in_sctp`]'s field).
    pub fn in_sctp(&self) -> usize {
        self.in_sctp
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Whether a message of `len` bytes may go into SCTP now. An empty SCTP takes any message
    /// (one larger than the window must still be able to go).
    pub fn allows(&self, len: usize) -> bool {
        self.in_sctp == 0 || self.in_sctp + len <= self.limit()
    }

    /// A write did not fit: the sender has more to send than the window takes.
    pub fn block(&mut self) {
        self.blocked = true;
    }

    pub fn wrote(&mut self, len: usize) {
        self.in_sctp += len;
        let per_chunk = len / len.div_ceil(CHUNK_PAYLOAD).max(1);
        self.bytes_per_chunk_x16 -= self.bytes_per_chunk_x16 / 16;
        self.bytes_per_chunk_x16 += per_chunk;
    }

    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(rtt);
    }

    /// SCTP now holds `buffered` bytes. `backlogged`: rtcmesh's queue holds packets for this
    /// peer, so whatever SCTP released is what the path (or the window) allowed, not what the
    /// application happened to send.
    pub fn refresh(&mut self, now: Instant, buffered: usize, backlogged: bool) {
        let released = self.in_sctp.saturating_sub(buffered);
        self.in_sctp = buffered;
        let limited = backlogged || std::mem::take(&mut self.blocked);
        let rtt = match self.rtt {
            Some(rtt) if limited && !rtt.is_zero() => rtt,
            _ => {
                self.sample = None;
                return;
            }
        };
        let Some((start, bytes)) = self.sample else {
            // What was released before now belongs to an unmeasured stretch of time.
            self.sample = Some((now, 0));
            return;
        };
        let bytes = bytes + released;
        let elapsed = now.saturating_duration_since(start);
        if elapsed < rtt {
            self.sample = Some((start, bytes));
            return;
        }
        let per_rtt = bytes as f64 * rtt.as_secs_f64() / elapsed.as_secs_f64();
        let most = self
            .max
            .min(MAX_SCTP_CHUNKS * (self.bytes_per_chunk_x16 / 16));
        let target = (2.0 * per_rtt).min(most as f64) as usize;
        // Grow at once; shrink by at most a quarter per round trip (one slow round trip, e.g.
        // after a loss, should not throw the window away).
        self.limit = if target >= self.limit {
            target
        } else {
            target.max(self.limit - self.limit / 4).min(most)
        }
        .clamp(self.min, self.max);
        self.sample = Some((now, 0));
    }

    /// The sender caught up (nothing queued): end the measurement, keep the window.
    pub fn idle(&mut self) {
        self.sample = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    #[test]
    fn an_empty_window_takes_any_message_and_a_full_one_refuses() {
        let mut w = SendWindow::new(16 * KIB, 1024 * KIB);
        assert!(w.allows(64 * KIB));
        w.wrote(64 * KIB);
        assert!(!w.allows(1));
        let now = Instant::now();
        w.refresh(now, 1, false);
        assert!(w.allows(16 * KIB - 1) && !w.allows(16 * KIB));
    }

    #[test]
    fn without_a_round_trip_the_window_stays_at_the_minimum() {
        let mut w = SendWindow::new(16 * KIB, 1024 * KIB);
        let mut now = Instant::now();
        for _ in 0..100 {
            w.wrote(16 * KIB);
            now += Duration::from_millis(10);
            w.refresh(now, 0, true);
        }
        assert_eq!(w.limit(), 16 * KIB);
        w.set_rtt(Duration::ZERO);
        for _ in 0..100 {
            w.wrote(16 * KIB);
            now += Duration::from_millis(10);
            w.refresh(now, 0, true);
        }
        assert_eq!(w.limit(), 16 * KIB);
    }

    #[test]
    fn a_window_limited_sender_doubles_per_round_trip_up_to_the_maximum() {
        let mut w = SendWindow::new(16 * KIB, 1024 * KIB);
        w.set_rtt(Duration::from_millis(50));
        let mut now = Instant::now();
        let mut limits = Vec::new();
        for _ in 0..10 {
            // Each round trip SCTP releases the whole window (the window is the limit).
            let window = w.limit();
            for _ in 0..window / (16 * KIB) {
                w.wrote(16 * KIB);
            }
            w.block();
            now += Duration::from_millis(50);
            w.refresh(now, 0, true);
            limits.push(w.limit() / KIB);
        }
        assert_eq!(limits, [16, 32, 64, 128, 256, 512, 1024, 1024, 1024, 1024]);
    }

    #[test]
    fn small_messages_grow_the_window_to_at_most_max_chunks() {
        let mut w = SendWindow::new(16 * KIB, 1024 * KIB);
        w.set_rtt(Duration::from_millis(50));
        let mut now = Instant::now();
        for _ in 0..20 {
            let window = w.limit();
            for _ in 0..window / 100 {
                w.wrote(100);
            }
            w.block();
            now += Duration::from_millis(50);
            w.refresh(now, 0, true);
        }
        // 2048 chunks of 100 B (the average converges from 1200 B towards 100 B).
        assert!((MAX_SCTP_CHUNKS * 100..=MAX_SCTP_CHUNKS * 102).contains(&w.limit()));
    }

    #[test]
    fn tiny_messages_are_held_to_max_chunks_even_at_the_minimum() {
        let mut w = SendWindow::new(32 * KIB, 1024 * KIB);
        let mut written = 0;
        while w.allows(1) && written < 100_000 {
            w.wrote(1);
            written += 1;
        }
        assert!(
            written <= MAX_SCTP_CHUNKS + 64,
            "{written} one-byte messages in SCTP"
        );
        assert!(written >= MAX_SCTP_CHUNKS - 64, "{written}");
    }

    #[test]
    fn a_network_limited_sender_settles_at_twice_the_bandwidth_delay_product() {
        let mut w = SendWindow::new(16 * KIB, 1024 * KIB);
        w.set_rtt(Duration::from_millis(50));
        let mut now = Instant::now();
        // The path carries 40 KiB per round trip, whatever the window.
        for _ in 0..30 {
            w.wrote(40 * KIB);
            now += Duration::from_millis(50);
            w.refresh(now, w.in_sctp() - 40 * KIB, true);
        }
        assert_eq!(w.limit(), 80 * KIB);
    }

    #[test]
    fn an_application_limited_sender_keeps_its_window() {
        let mut w = SendWindow::new(16 * KIB, 1024 * KIB);
        w.set_rtt(Duration::from_millis(50));
        let mut now = Instant::now();
        for _ in 0..4 {
            let window = w.limit();
            w.wrote(window);
            now += Duration::from_millis(50);
            w.refresh(now, 0, true);
        }
        let grown = w.limit();
        assert!(grown > 16 * KIB);
        // A trickle without backlog is not a measurement of the path.
        for _ in 0..20 {
            w.wrote(100);
            now += Duration::from_millis(50);
            w.refresh(now, 0, false);
        }
        assert_eq!(w.limit(), grown);
    }
}
