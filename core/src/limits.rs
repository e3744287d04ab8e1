//! Every bound on what a remote peer, its signals or its server can make a mesh hold or do, in
//! one place: the configurable limits ([`Limits`] in [`MeshConfig`](crate::MeshConfig),
//! [`MultiplayerLimits`] in [`MultiplayerConfig`](crate::MultiplayerConfig)) with safe
//! defaults, and the fixed ones. Each limit, when hit, is counted in
//! [`MeshStats`](crate::MeshStats) or [`MultiplayerStats`](crate::MultiplayerStats); the README's
//! reliability table lists them all.

use std::time::{Duration, Instant};

use crate::error::CreateError;

/// The most routes (remote / local address pairs) remembered per peer; ICE may try several.
pub(crate) const MAX_ROUTES_PER_PEER: usize = 8;

/// The most ADD_PEER / DEL_PEER a client holds while it authenticates with the server.
pub(crate) const MAX_BUFFERED_EXCHANGE: usize = 1024;

/// The most SCTP chunks one peer's send window lets str0m hold (about the chunks a 128 KiB
/// buffer of 100-byte messages held, times one and a half): sctp-proto walks every chunk it
/// holds on each poll, so this bounds the CPU a poll costs whatever the message size, also when
/// the remote acknowledges slowly or not at all.
pub(crate) const MAX_SCTP_CHUNKS: usize = 2048;

/// The least a packet in rtcmesh's send queue counts against
/// [`MeshConfig::max_queued_bytes`](crate::MeshConfig::max_queued_bytes) (about its
/// bookkeeping), so that a flood of tiny packets cannot hold many times the limit.
pub(crate) const MIN_QUEUED_PACKET_CHARGE: usize = 64;

/// Bounds on what one remote peer, and the signals it sends, can make a mesh hold or do
/// ([`MeshConfig::limits`](crate::MeshConfig::limits)). The defaults leave room for every
/// well-behaved WebRTC stack; each field says what happens past it.
///
/// ```
/// # use rtcmesh::*;
/// let config = MeshConfig::default().with_limits(Limits::default().with_max_remote_candidates(8));
/// assert_eq!(config.limits.max_remote_candidates, 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Remote ICE candidates one connection keeps: trickled, inside an offer or answer, and
    /// peer-reflexive ones (a datagram from an address the peer never announced). str0m keeps
    /// every remote candidate for the connection's life and each new one costs time in
    /// proportion to those before it; past the limit, new addresses are dropped (the candidate,
    /// the SDP line, or the datagram) and counted in `candidates_over_limit`. A browser
    /// announces a handful (host, server-reflexive and relayed, per interface); a new
    /// handshake (retry) and an ICE restart (which replaces the remote candidates) start from
    /// zero. At least 1; default 32.
    pub max_remote_candidates: usize,
    /// Data channels a peer may open outside the negotiated layout (in-band, DCEP) before it is
    /// disconnected. Every such channel is closed at once and counted in `channels_refused`;
    /// the one past this allowance also ends the connection (`peers_disconnected_for_abuse`).
    /// Default 3.
    pub max_refused_channels: u32,
    /// The longest offer or answer `handle_signal` accepts, in bytes; longer ones are refused
    /// with [`SignalError::TooLarge`](crate::SignalError::TooLarge) and counted in
    /// `signals_too_large`. A data-only SDP is 1–3 KiB, a browser's with many candidates
    /// rarely above 10 KiB. At least 1 KiB; default 32 KiB.
    pub max_sdp_len: usize,
    /// The longest trickled candidate `handle_signal` accepts, in bytes (refused and counted as
    /// for `max_sdp_len`). A candidate attribute is about 100–250 bytes. At least 64; default
    /// 1 KiB.
    pub max_candidate_len: usize,
    /// New offers (a remote starting the handshake over, or restarting ICE) accepted in a row
    /// before the rate limit applies. Each one rebuilds the connection or its ICE state, so a
    /// remote sending offers every few milliseconds would keep it restarting. At least 1;
    /// default 4.
    pub renegotiation_burst: u32,
    /// Once the burst is spent, one more new offer is accepted per this interval; offers
    /// beyond that are refused with [`SignalError::TooManyOffers`](crate::SignalError::TooManyOffers)
    /// and counted in `offers_rate_limited`, and the connection carries on as it was. Must not
    /// exceed the remote's `connect_retry_interval` and `ice_restart_interval` (each at least
    /// 1 s), so its handshake retries and ICE restarts always pass; `Duration::ZERO` turns the
    /// rate limit off. Default 1 s.
    pub renegotiation_interval: Duration,
    /// `.local` (mDNS) names one peer may have waiting to be resolved. A browser hides each of
    /// its host addresses behind one name (one or two per network interface); each held
    /// candidate also takes a slot of `max_remote_candidates`. Past it, further names' candidates
    /// are dropped and counted in `mdns_names_over_limit`. 0 drops every `.local` candidate.
    /// Default 8.
    pub max_mdns_names: usize,
    /// mDNS queries outstanding for the whole mesh (names the adapter was asked to resolve and
    /// did not answer yet). Past it, a new name's candidates are dropped and counted in
    /// `mdns_names_over_limit`. Default 64.
    pub max_mdns_queries: usize,
    /// How long a name may take to resolve: past it, its candidates are dropped and counted in
    /// `mdns_timeouts`, and a late answer is ignored. The other candidates never wait for it.
    /// Default 5 s (an mDNS answer on a LAN takes milliseconds; the adapters give up after 3 s).
    pub mdns_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_remote_candidates: 32,
            max_refused_channels: 3,
            max_sdp_len: 32 * 1024,
            max_candidate_len: 1024,
            renegotiation_burst: 4,
            renegotiation_interval: Duration::from_secs(1),
            max_mdns_names: 8,
            max_mdns_queries: 64,
            mdns_timeout: Duration::from_secs(5),
        }
    }
}

impl Limits {
    pub(crate) fn validate(&self) -> Result<(), CreateError> {
        if self.max_remote_candidates == 0 {
            return Err(CreateError::InvalidConfig(
                "limits.max_remote_candidates must be at least 1",
            ));
        }
        if self.max_sdp_len < 1024 || self.max_candidate_len < 64 {
            return Err(CreateError::InvalidConfig(
                "limits.max_sdp_len must be at least 1024 and limits.max_candidate_len at least 64",
            ));
        }
        if self.renegotiation_burst == 0 {
            return Err(CreateError::InvalidConfig(
                "limits.renegotiation_burst must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Bounds on what peers can make a [`Multiplayer`](crate::Multiplayer) hold
/// ([`MultiplayerConfig::limits`](crate::MultiplayerConfig::limits)).
///
/// ```
/// # use rtcmesh::*;
/// let limits = MultiplayerLimits::default().with_max_relayed_peers(64);
/// let config = MultiplayerConfig::default().with_limits(limits);
/// assert_eq!(config.limits.max_relayed_peers, 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MultiplayerLimits {
    /// Authentication bytes accepted from one peer while it authenticates (the sum of its
    /// `send_auth` payloads). Past it, authentication fails as on a timeout
    /// (`PeerAuthenticationFailed`, the peer is disconnected) and `auth_over_limit` counts it.
    /// Default 64 KiB.
    pub max_auth_bytes: usize,
    /// Peers a client admits from the server's peer exchange (ADD_PEER). Past it, further
    /// announcements are dropped and counted in `relayed_peers_over_limit`. Default 1024.
    pub max_relayed_peers: usize,
}

impl Default for MultiplayerLimits {
    fn default() -> Self {
        MultiplayerLimits {
            max_auth_bytes: 64 * 1024,
            max_relayed_peers: 1024,
        }
    }
}

/// `now + after`, or `None` ("never") when that is past the end of `Instant`'s range: a
/// `Duration::MAX` timeout means no timeout, never a panic.
pub(crate) fn deadline(now: Instant, after: Duration) -> Option<Instant> {
    now.checked_add(after)
}

/// How far from the end of `Instant`'s range the clock must stay. str0m converts the first
/// `now` it sees to wall-clock time (`SystemTime`), which overflows and panics when `now` is
/// within about the wall clock's age since 1970 of the end; 1000 years covers that with room.
const CLOCK_HEADROOM: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

/// `Ok(now)` when `now` is safe to use, else `Err` with the latest safe instant before it (to
/// within a second): the clock saturates there. No real clock comes near (`Instant` spans
/// billions of years); fake clocks and fuzzers do.
pub(crate) fn saturate_clock(now: Instant) -> Result<Instant, Instant> {
    let safe = |t: Instant| t.checked_add(CLOCK_HEADROOM).is_some();
    if safe(now) {
        return Ok(now);
    }
    // The smallest whole number of seconds to step back (monotone: binary search).
    let back = |secs: u64| {
        now.checked_sub(Duration::from_secs(secs))
            .filter(|&t| safe(t))
    };
    let (mut lo, mut hi) = (0, CLOCK_HEADROOM.as_secs());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if back(mid).is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Err(back(hi).unwrap_or(now))
}

/// A token bucket: `burst` events at once, then one per `interval`. Holds no clock; time comes
/// in with each call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateLimit {
    tokens: u32,
    /// When the last token was added (`None` until the first call).
    refilled: Option<Instant>,
}

impl RateLimit {
    pub fn full(burst: u32) -> RateLimit {
        RateLimit {
            tokens: burst,
            refilled: None,
        }
    }

    /// Adds the tokens earned since the last refill, up to `burst`.
    fn refill(&mut self, now: Instant, burst: u32, interval: Duration) {
        let Some(since) = self.refilled else {
            self.refilled = Some(now);
            return;
        };
        if interval.is_zero() {
            self.tokens = burst;
            self.refilled = Some(now);
            return;
        }
        let elapsed = now.saturating_duration_since(since);
        let earned = elapsed.as_nanos() / interval.as_nanos();
        if earned == 0 {
            return;
        }
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(earned).min(burst);
        // Keep the remainder, so a steady rate of one per interval always passes.
        self.refilled = interval
            .checked_mul(earned)
            .and_then(|spent| since.checked_add(spent))
            .filter(|&at| at <= now)
            .or(Some(now));
        if self.tokens == burst {
            self.refilled = Some(now);
        }
    }

    /// Whether one more event may happen at `now` (nothing is taken).
    pub fn allows(&mut self, now: Instant, burst: u32, interval: Duration) -> bool {
        self.refill(now, burst, interval);
        self.tokens > 0
    }

    /// Takes one token; call after [`allows`](RateLimit::allows) said yes.
    pub fn take(&mut self) {
        self.tokens = self.tokens.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().validate(), Ok(()));
    }

    #[test]
    fn deadlines_saturate_to_never() {
        let now = Instant::now();
        assert_eq!(deadline(now, Duration::MAX), None);
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            Some(now + Duration::from_secs(1))
        );
    }

    #[test]
    fn the_clock_saturates_before_the_end_of_its_range() {
        let now = Instant::now();
        assert_eq!(saturate_clock(now), Ok(now));
        // Walk to the end of the range.
        let mut far = now;
        let mut step = Duration::from_secs(u64::MAX / 2);
        while step >= Duration::from_secs(1) {
            if let Some(next) = far.checked_add(step) {
                far = next;
            } else {
                step /= 2;
            }
        }
        let horizon = saturate_clock(far).expect_err("too close to the end");
        assert!(horizon < far);
        assert!(horizon.checked_add(CLOCK_HEADROOM).is_some());
        assert!(horizon
            .checked_add(CLOCK_HEADROOM + Duration::from_secs(2))
            .is_none());
        assert_eq!(saturate_clock(horizon), Ok(horizon));
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut limit = RateLimit::full(2);
        let mut try_at = |at: Instant| {
            let ok = limit.allows(at, 2, second);
            if ok {
                limit.take();
            }
            ok
        };
        assert!(try_at(t0));
        assert!(try_at(t0));
        assert!(!try_at(t0 + Duration::from_millis(10)));
        assert!(!try_at(t0 + Duration::from_millis(999)));
        assert!(try_at(t0 + second));
        assert!(!try_at(t0 + Duration::from_millis(1500)));
        // A steady one per interval keeps passing (the remainder is kept).
        assert!(try_at(t0 + Duration::from_millis(2000)));
        assert!(try_at(t0 + Duration::from_millis(3000)));
        // A long quiet spell refills up to the burst, no further.
        assert!(try_at(t0 + Duration::from_secs(100)));
        assert!(try_at(t0 + Duration::from_secs(100)));
        assert!(!try_at(t0 + Duration::from_secs(100)));
    }

    #[test]
    fn extreme_intervals_never_panic() {
        let t0 = Instant::now();
        let mut limit = RateLimit::full(1);
        assert!(limit.allows(t0, 1, Duration::MAX));
        limit.take();
        assert!(!limit.allows(t0 + Duration::from_secs(1 << 40), 1, Duration::MAX));
        let mut off = RateLimit::full(1);
        for _ in 0..10 {
            assert!(off.allows(t0, 1, Duration::ZERO));
            off.take();
        }
        // Time going backwards earns nothing.
        let mut back = RateLimit::full(1);
        assert!(back.allows(t0 + Duration::from_secs(5), 1, Duration::from_secs(1)));
        back.take();
        assert!(!back.allows(t0, 1, Duration::from_secs(1)));
    }
}

crate::__config_setters!(Limits {
    with_max_remote_candidates => max_remote_candidates: usize,
    with_max_refused_channels => max_refused_channels: u32,
    with_max_sdp_len => max_sdp_len: usize,
    with_max_candidate_len => max_candidate_len: usize,
    with_renegotiation_burst => renegotiation_burst: u32,
    with_renegotiation_interval => renegotiation_interval: Duration,
    with_max_mdns_names => max_mdns_names: usize,
    with_max_mdns_queries => max_mdns_queries: usize,
    with_mdns_timeout => mdns_timeout: Duration,
});

crate::__config_setters!(MultiplayerLimits {
    with_max_auth_bytes => max_auth_bytes: usize,
    with_max_relayed_peers => max_relayed_peers: usize,
});
