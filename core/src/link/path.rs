//! The path a peer's traffic takes: the selected candidate pair, the addresses the peer is heard
//! from, whether ICE consent on the selected pair is answered, and recognising a peer that moved
//! (a NAT rebinding) without an ICE restart.
//!
//! str0m does not expose its ICE agent's pairs, so the path is read off the traffic: DTLS goes
//! out on the selected pair only, and str0m's stats event names it too. A peer has moved when
//! its authenticated traffic arrives from a new address while the address we send to has gone
//! silent and leaves our datagrams unanswered. str0m's agent would keep sending to the old,
//! higher-priority pair until its consent checks give up (about 20 s); dropping the old
//! address's candidates makes it use the pair it has already checked on the new one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::{Candidate, CandidateKind as RtcKind, Rtc};

use crate::stats::{CandidateKind, CandidatePair};

/// Remote addresses remembered per peer (ICE may try several); the least recently heard goes.
const MAX_HEARD: usize = 8;

/// Remote candidates remembered per peer for their kinds and to drop them on a move.
const MAX_KNOWN: usize = 32;

/// Unanswered datagrams to the selected address before it can count as abandoned.
const UNANSWERED_FOR_MOVE: u32 = 3;

/// ICE binding requests on the selected pair without a response before consent counts as
/// failing (str0m checks again at 250 ms, 500 ms, … once one goes unanswered).
const UNANSWERED_CONSENT: u32 = 3;

/// One remote address this peer was heard from.
#[derive(Debug, Clone, Copy)]
struct Heard {
    addr: SocketAddr,
    at: Instant,
    /// Datagrams sent to `addr` since it was last heard.
    unanswered: u32,
}

/// What rtcmesh knows of a peer's path.
#[derive(Debug, Default)]
pub(super) struct Path {
    /// The selected (local, remote) pair, as last seen on the traffic.
    selected: Option<(SocketAddr, SocketAddr)>,
    heard: SmallVec<[Heard; 2]>,
    /// Binding requests sent on the selected pair since its last response, and when the first
    /// of them went out.
    consent_unanswered: u32,
    consent_since: Option<Instant>,
    /// Local candidates added to the `Rtc`, for their kinds.
    local: SmallVec<[(SocketAddr, CandidateKind); 2]>,
    /// Remote candidates from signals (trickled or in SDP), for their kinds and to drop them.
    remote: SmallVec<[Candidate; 4]>,
}

/// The kind of datagram, by its first byte (RFC 7983).
fn is_stun(contents: &[u8]) -> bool {
    contents.first().is_some_and(|&b| b < 4)
}

fn is_dtls(contents: &[u8]) -> bool {
    contents.first().is_some_and(|&b| (20..64).contains(&b))
}

fn is_binding(contents: &[u8], class: u8) -> bool {
    is_stun(contents) && contents.len() >= 20 && contents[0] == class && contents[1] == 0x01
}

impl Path {
    /// Forgets everything learned about the remote (a new connection or an ICE restart); local
    /// candidates stay.
    pub fn reset_remote(&mut self) {
        self.selected = None;
        self.heard.clear();
        self.consent_unanswered = 0;
        self.consent_since = None;
        self.remote.clear();
    }

    /// Forgets the selected pair, so the next one seen is reported (after an ICE restart).
    pub fn forget_selected(&mut self) {
        self.selected = None;
        self.consent_unanswered = 0;
        self.consent_since = None;
    }

    pub fn add_local(&mut self, addr: SocketAddr, kind: CandidateKind) {
        if !self.local.iter().any(|&(a, _)| a == addr) {
            self.local.push((addr, kind));
        }
    }

    pub fn remove_local(&mut self, addr: SocketAddr) {
        self.local.retain(|&mut (a, _)| a != addr);
    }

    /// Remembers a remote candidate the peer signalled (bounded: past the bound, only its kind
    /// is lost).
    pub fn add_remote(&mut self, candidate: &Candidate) {
        if self.remote.len() < MAX_KNOWN
            && !self
                .remote
                .iter()
                .any(|c| c.addr() == candidate.addr() && c.kind() == candidate.kind())
        {
            self.remote.push(candidate.clone());
        }
    }

    /// Remembers the candidates of an SDP (its `a=candidate` lines).
    pub fn add_remote_sdp(&mut self, sdp: &str) {
        for line in sdp.lines() {
            let Some(attr) = line.trim().strip_prefix("a=") else {
                continue;
            };
            if attr.starts_with("candidate:") {
                if let Ok(c) = Candidate::from_sdp_string(attr) {
                    self.add_remote(&c);
                }
            }
        }
    }

    /// The selected pair, with kinds.
    pub fn selected(&self) -> Option<CandidatePair> {
        let (local, remote) = self.selected?;
        let local_kind = self
            .local
            .iter()
            .find(|&&(a, _)| a == local)
            .map_or(CandidateKind::Host, |&(_, k)| k);
        let remote_kind = self
            .remote
            .iter()
            .filter(|c| c.addr() == remote)
            .map(|c| CandidateKind::from(c.kind()))
            .next()
            .unwrap_or(CandidateKind::PeerReflexive);
        Some(CandidatePair {
            local,
            local_kind,
            remote,
            remote_kind,
        })
    }

    /// Notes a datagram going out. Returns true if it showed a new selected pair.
    pub fn on_transmit(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> bool {
        if let Some(h) = self.heard.iter_mut().find(|h| h.addr == destination) {
            h.unanswered = h.unanswered.saturating_add(1);
        }
        if is_dtls(contents) {
            return self.observe(source, destination);
        }
        if is_binding(contents, 0x00) && self.selected.is_some_and(|(_, r)| r == destination) {
            self.consent_unanswered = self.consent_unanswered.saturating_add(1);
            self.consent_since.get_or_insert(now);
        }
        false
    }

    /// Notes that the selected pair is (local, remote). Returns true if that is news.
    pub fn observe(&mut self, local: SocketAddr, remote: SocketAddr) -> bool {
        if self.selected == Some((local, remote)) {
            return false;
        }
        self.selected = Some((local, remote));
        self.consent_unanswered = 0;
        self.consent_since = None;
        true
    }

    /// Notes a datagram from the peer that its `Rtc` accepted.
    pub fn on_receive(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        match self.heard.iter_mut().find(|h| h.addr == source) {
            Some(h) => {
                h.at = h.at.max(now);
                h.unanswered = 0;
            }
            None => {
                if self.heard.len() == MAX_HEARD {
                    if let Some(oldest) = (0..self.heard.len()).min_by_key(|&i| self.heard[i].at) {
                        self.heard.swap_remove(oldest);
                    }
                }
                self.heard.push(Heard {
                    addr: source,
                    at: now,
                    unanswered: 0,
                });
            }
        }
        if is_binding(contents, 0x01) && self.selected.is_some_and(|(_, r)| r == source) {
            self.consent_unanswered = 0;
            self.consent_since = None;
        }
    }

    /// Since when ICE consent on the selected pair has gone unanswered (at least
    /// [`UNANSWERED_CONSENT`] requests), if it has.
    pub fn consent_failing_since(&self) -> Option<Instant> {
        (self.consent_unanswered >= UNANSWERED_CONSENT)
            .then_some(self.consent_since)
            .flatten()
    }

    /// The selected remote address if the peer has moved away from it: silent for `after` with
    /// our datagrams to it unanswered, while the peer was heard from another address since,
    /// within `after`.
    pub fn abandoned(&self, now: Instant, after: Duration) -> Option<SocketAddr> {
        let (_, remote) = self.selected?;
        let old = self.heard.iter().find(|h| h.addr == remote)?;
        if old.unanswered < UNANSWERED_FOR_MOVE || now < old.at.checked_add(after)? {
            return None;
        }
        self.heard
            .iter()
            .any(|h| {
                h.addr != remote
                    && h.at > old.at
                    && h.at.checked_add(after).is_some_and(|t| now < t)
            })
            .then_some(remote)
    }

    /// When [`abandoned`](Path::abandoned) should be asked again: the selected address's
    /// silence deadline, while the peer is heard elsewhere.
    pub fn move_deadline(&self, after: Duration) -> Option<Instant> {
        let (_, remote) = self.selected?;
        let old = self.heard.iter().find(|h| h.addr == remote)?;
        self.heard
            .iter()
            .any(|h| h.addr != remote && h.at > old.at)
            .then(|| old.at.checked_add(after))
            .flatten()
    }

    /// Drops `addr`'s remote candidates from `rtc`'s ICE agent, so it sends on a pair at another
    /// address (one it has checked, or checks now), and forgets the address.
    pub fn drop_remote(&mut self, rtc: &mut Rtc, addr: SocketAddr) {
        let mut api = rtc.direct_api();
        for c in self.remote.iter().filter(|c| c.addr() == addr) {
            api.invalidate_candidate(c);
        }
        // The agent's own peer-reflexive candidate for the address (learned from a check).
        let prflx = Candidate::from_parts(
            "prflx".into(),
            1,
            str0m::net::Protocol::Udp,
            0,
            addr,
            RtcKind::PeerReflexive,
            None,
            None,
            None,
        );
        api.invalidate_candidate(&prflx);
        self.heard.retain(|h| h.addr != addr);
        self.selected = None;
        self.consent_unanswered = 0;
        self.consent_since = None;
    }

    /// Whether `addr` was heard from at or after `since`.
    pub fn heard_since(&self, addr: SocketAddr, since: Instant) -> bool {
        self.heard.iter().any(|h| h.addr == addr && h.at >= since)
    }
}
