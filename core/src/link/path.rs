//! The path a peer's traffic takes: the selected candidate pair and the kinds of its ends (from
//! the local candidates added and the remote ones signalled, trickled or in an SDP), the
//! addresses the peer is heard from, whether ICE consent on the selected pair is answered, and
//! recognising a peer that moved (a NAT rebinding) without an ICE restart.
//!
//! str0m does not expose its ICE agent's pairs, so the path is read off the traffic: str0m sends
//! DTLS and SCTP only on the nominated pair, from its local candidate's base (our socket, or our
//! relayed address) to the remote candidate's address, and its stats event names the pair too.
//!
//! A peer has moved when its authenticated traffic arrives from another address while the
//! address we send to has gone silent, leaves our datagrams unanswered, and leaves an ICE
//! consent check of ours unanswered too. str0m's agent would keep sending to the old,
//! higher-priority pair until its consent checks give up (about 20 s); dropping the old
//! address's candidates makes it use the pair it has already checked on the new one.
//!
//! Silence alone is no proof: each side's agent may send on a different valid pair for a while
//! (after a renomination, one side through a relay, a peer behind a symmetric NAT seen at one
//! address per path), so the peer can be quiet at the address we send to while everything we
//! send there arrives. An unanswered check is the proof. Should a drop still be a mistake (a
//! lost check), the peer's next check from the dropped address gives its candidates back to
//! the agent ([`Path::revive`]): str0m would otherwise refuse that address's DTLS for good. So
//! does a change of our own public address ([`Path::revive_all`]): behind a NAT, the peer
//! looks moved when it is our mapping that changed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::{Candidate, CandidateKind as RtcKind, Rtc};

use super::Link;
use crate::path::{CandidateKind, PeerPath};

/// Remote addresses remembered per peer (ICE may try several); the least recently heard goes.
const MAX_HEARD: usize = 8;

/// Local candidates remembered per peer for their kinds (hosts, our relayed addresses); the
/// oldest goes (a host moved many times, allocations replaced over hours).
const MAX_LOCAL: usize = 8;

/// Remote candidates remembered per peer for their kinds and to drop them on a move (what ICE
/// pairs beyond this is still used, only its kind is not known).
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
    /// The selected (local, remote) pair, as last seen on the traffic; `None` until a pair is
    /// seen again after a restart or a move.
    selected: Option<(SocketAddr, SocketAddr)>,
    /// The pair the traffic took last, with its kinds as known then, kept while `selected` is
    /// being found again: what [`Path::reported`] says meanwhile.
    last: Option<PeerPath>,
    heard: SmallVec<[Heard; 2]>,
    /// Binding requests sent on the selected pair since its last response, and when the first
    /// of them went out.
    consent_unanswered: u32,
    consent_since: Option<Instant>,
    /// Local candidates str0m may send from (hosts, our relayed addresses), for their kinds.
    local: SmallVec<[(SocketAddr, CandidateKind); 2]>,
    /// Remote candidates from signals (trickled or in SDP), for their kinds and to drop them.
    remote: SmallVec<[Candidate; 4]>,
    /// Candidates dropped by a move, given back to the agent if the peer is heard at their
    /// address again (the move was a mistake: it still sends from there).
    dropped: SmallVec<[Candidate; 2]>,
    /// The pair the application was last told of (connected, moved, restart ended).
    told: Option<PeerPath>,
}

/// Adds `c` to `list`, the oldest going past [`MAX_KNOWN`].
fn remember(list: &mut SmallVec<[Candidate; 2]>, c: Candidate) {
    if list.len() == MAX_KNOWN {
        list.remove(0);
    }
    list.push(c);
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
        self.keep_last();
        self.selected = None;
        self.heard.clear();
        self.consent_unanswered = 0;
        self.consent_since = None;
        self.remote.clear();
        self.dropped.clear();
    }

    /// Forgets the selected pair, so the next one seen is reported (after an ICE restart).
    pub fn forget_selected(&mut self) {
        self.keep_last();
        self.selected = None;
        self.consent_unanswered = 0;
        self.consent_since = None;
    }

    /// Notes a local candidate added to the `Rtc`. Only hosts and our relayed addresses are
    /// kept: str0m sends from a candidate's base, which for a server-reflexive one is a host.
    /// A candidate that is gone stays known (str0m may still send from it for a moment), until
    /// newer ones push it out.
    pub fn add_local(&mut self, addr: SocketAddr, kind: CandidateKind) {
        if !matches!(kind, CandidateKind::Host | CandidateKind::Relayed) {
            return;
        }
        if let Some(known) = self.local.iter_mut().find(|(a, _)| *a == addr) {
            known.1 = kind;
            return;
        }
        if self.local.len() == MAX_LOCAL {
            self.local.remove(0);
        }
        self.local.push((addr, kind));
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

    /// Remembers the selected pair as the last one, before it is forgotten.
    fn keep_last(&mut self) {
        if let Some(path) = self.selected() {
            self.last = Some(path);
        }
    }

    /// Forgets the last pair too (a new connection starts: nothing of the old one applies).
    pub fn forget_last(&mut self) {
        self.selected = None;
        self.last = None;
        self.told = None;
    }

    /// The pair the traffic takes, or the one it took last while the next is being found
    /// (after an ICE restart or a move, until DTLS goes out on a pair again).
    pub fn reported(&self) -> Option<PeerPath> {
        self.selected().or(self.last)
    }

    /// The selected pair, with kinds, if seen since the last restart or move.
    pub fn selected(&self) -> Option<PeerPath> {
        let (local, remote) = self.selected?;
        let local_kind = self
            .local
            .iter()
            .find(|&&(a, _)| a == local)
            .map_or(CandidateKind::Host, |&(_, k)| k);
        Some(PeerPath {
            local: local_kind,
            local_address: local,
            remote: self.remote_kind(remote),
            remote_address: remote,
        })
    }

    /// What the remote signalled `address` as; `PeerReflexive` if it never did.
    pub fn remote_kind(&self, address: SocketAddr) -> CandidateKind {
        self.remote
            .iter()
            .find(|c| c.addr() == address)
            .map_or(CandidateKind::PeerReflexive, |c| c.kind().into())
    }

    /// Whether the remote signalled a relayed candidate (for the current ICE credentials).
    pub fn remote_has_relay(&self) -> bool {
        self.remote.iter().any(|c| c.kind() == RtcKind::Relayed)
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

    /// Notes that the selected pair is (local, remote). Returns true if that is news. An
    /// address a move dropped is not: str0m keeps sending there until its agent nominates
    /// another pair (on the answering side, when the offerer's nomination arrives).
    pub fn observe(&mut self, local: SocketAddr, remote: SocketAddr) -> bool {
        if self.selected == Some((local, remote)) || self.dropped.iter().any(|c| c.addr() == remote)
        {
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
    /// our datagrams to it unanswered, an ICE consent request to it unanswered for `after`
    /// too, while the peer was heard from another address since, within `after`.
    pub fn abandoned(&self, now: Instant, after: Duration) -> Option<SocketAddr> {
        let (_, remote) = self.selected?;
        let old = self.heard.iter().find(|h| h.addr == remote)?;
        if old.unanswered < UNANSWERED_FOR_MOVE || now < old.at.checked_add(after)? {
            return None;
        }
        // Silence alone is no proof: the peer may be sending on another pair for a while (each
        // agent picks its own), while what we send arrives. An unanswered check is.
        if now < self.consent_since?.checked_add(after)? {
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
    /// silence (and unanswered check) deadline, while the peer is heard elsewhere.
    pub fn move_deadline(&self, after: Duration) -> Option<Instant> {
        let (_, remote) = self.selected?;
        let old = self.heard.iter().find(|h| h.addr == remote)?;
        let unanswered = self.consent_since?;
        self.heard
            .iter()
            .any(|h| h.addr != remote && h.at > old.at)
            .then(|| old.at.max(unanswered).checked_add(after))
            .flatten()
    }

    /// Drops `addr`'s remote candidates from `rtc`'s ICE agent, so it sends on a pair at another
    /// address (one it has checked, or checks now), and forgets the address.
    pub fn drop_remote(&mut self, rtc: &mut Rtc, addr: SocketAddr) {
        let mut api = rtc.direct_api();
        for c in self.remote.iter().filter(|c| c.addr() == addr) {
            api.invalidate_candidate(c);
            remember(&mut self.dropped, c.clone());
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
        remember(&mut self.dropped, prflx);
        self.heard.retain(|h| h.addr != addr);
        self.keep_last();
        self.selected = None;
        self.consent_unanswered = 0;
        self.consent_since = None;
    }

    /// The candidates a move dropped at `source`, taken back: the peer was heard there again
    /// (its agent still uses a pair there, which str0m would otherwise refuse for good).
    pub fn revive(&mut self, source: SocketAddr) -> SmallVec<[Candidate; 2]> {
        if !self.dropped.iter().any(|c| c.addr() == source) {
            return SmallVec::new();
        }
        let (back, kept) = std::mem::take(&mut self.dropped)
            .into_iter()
            .partition(|c| c.addr() == source);
        self.dropped = kept;
        back
    }

    /// Every candidate a move dropped, taken back: our own public address changed, so the
    /// peer may only have looked gone (our NAT stopped mapping our traffic to it).
    pub fn revive_all(&mut self) -> SmallVec<[Candidate; 2]> {
        std::mem::take(&mut self.dropped)
    }

    /// Notes that the application is told of `path`; whether that is news to it. A move that
    /// ends on the pair the traffic took before (an address dropped, then given back) is none.
    pub fn tell(&mut self, path: PeerPath) -> bool {
        self.told.replace(path) != Some(path)
    }

    /// Whether `addr` was heard from at or after `since`.
    pub fn heard_since(&self, addr: SocketAddr, since: Instant) -> bool {
        self.heard.iter().any(|h| h.addr == addr && h.at >= since)
    }
}

impl Link {
    /// The path the peer's traffic takes, once DTLS or SCTP went out on it (or str0m's stats
    /// named it); while a restart or a move finds the next one, the last.
    pub fn path(&self) -> Option<PeerPath> {
        self.path.reported()
    }

    /// Whether the remote signalled a relayed candidate.
    pub fn remote_has_relay(&self) -> bool {
        self.path.remote_has_relay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn candidate_kinds_are_read_from_signals_and_sdp() {
        let mut path = Path::default();
        let trickled =
            Candidate::from_sdp_string("candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host")
                .expect("candidate");
        path.add_remote(&trickled);
        path.add_remote_sdp(
            "v=0\r\na=candidate:2 1 udp 1694498815 203.0.113.11 5000 typ srflx raddr 0.0.0.0 \
             rport 0\r\na=candidate:3 1 udp 16777215 203.0.113.1 49152 typ relay raddr \
             0.0.0.0 rport 0\r\na=candidate:4 1 udp 1 name.local 1 typ host\r\n\
             a=candidate:5 1 udp 1 10.0.0.3 x typ host\r\n",
        );
        let kinds: Vec<CandidateKind> = path.remote.iter().map(|c| c.kind().into()).collect();
        assert_eq!(
            kinds,
            [
                CandidateKind::Host,
                CandidateKind::ServerReflexive,
                CandidateKind::Relayed
            ]
        );
        assert!(path.remote_has_relay());
        assert_eq!(
            path.remote_kind(addr("203.0.113.11:5000")),
            CandidateKind::ServerReflexive
        );
        assert_eq!(
            path.remote_kind(addr("198.51.100.9:1")),
            CandidateKind::PeerReflexive,
            "never signalled"
        );

        let (ours, theirs) = (addr("10.0.0.1:1"), addr("203.0.113.1:49152"));
        let now = Instant::now();
        path.add_local(ours, CandidateKind::Host);
        assert!(!path.on_transmit(now, ours, theirs, &[0, 1, 0, 0]));
        assert_eq!(
            path.selected(),
            None,
            "STUN does not tell the nominated pair"
        );
        assert!(path.on_transmit(now, ours, theirs, &[22, 254, 253]));
        let selected = path.selected().expect("DTLS went out on the pair");
        assert_eq!(
            (selected.local, selected.remote),
            (CandidateKind::Host, CandidateKind::Relayed)
        );
        assert!(selected.is_relayed());
        assert!(
            !path.on_transmit(now, ours, theirs, &[23, 254, 253]),
            "no news"
        );

        path.reset_remote();
        assert!(
            !path.remote_has_relay(),
            "an ICE restart brings new candidates"
        );
    }

    #[test]
    fn local_kinds_are_bounded_and_relayed_addresses_stay_known() {
        let mut path = Path::default();
        let relay = addr("203.0.113.1:49152");
        path.add_local(relay, CandidateKind::Relayed);
        path.add_local(addr("203.0.113.50:1"), CandidateKind::ServerReflexive);
        assert_eq!(
            path.local.len(),
            1,
            "str0m never sends from a server-reflexive address"
        );
        let now = Instant::now();
        assert!(path.on_transmit(now, relay, addr("198.51.100.2:9"), &[23]));
        assert_eq!(
            path.selected().map(|p| p.local),
            Some(CandidateKind::Relayed)
        );
        for port in 0..100 {
            path.add_local(SocketAddr::from(([10, 0, 0, 1], port)), CandidateKind::Host);
        }
        assert_eq!(path.local.len(), MAX_LOCAL);
    }

    /// A STUN Binding request's first 20 bytes (RFC 5389 header).
    const BINDING_REQUEST: [u8; 20] = [
        0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];

    #[test]
    fn an_answered_consent_check_means_the_peer_did_not_move_and_a_dropped_address_revives() {
        let after = Duration::from_millis(500);
        let (ours, old, new) = (
            addr("10.0.0.1:1"),
            addr("203.0.113.5:5000"),
            addr("198.51.100.7:40000"),
        );
        let mut path = Path::default();
        let t0 = Instant::now();
        path.on_receive(t0, old, &[23]);
        path.observe(ours, old);
        for _ in 0..UNANSWERED_FOR_MOVE {
            path.on_transmit(t0, ours, old, &[23]);
        }
        path.on_receive(t0 + Duration::from_millis(400), new, &[23]);
        assert_eq!(
            path.abandoned(t0 + Duration::from_millis(600), after),
            None,
            "silent, but no check of ours went unanswered: the peer may send on another pair"
        );
        path.on_transmit(t0 + Duration::from_millis(600), ours, old, &BINDING_REQUEST);
        assert_eq!(
            path.move_deadline(after),
            Some(t0 + Duration::from_millis(1100))
        );
        let mut response = BINDING_REQUEST;
        response[0] = 1;
        path.on_receive(t0 + Duration::from_millis(650), old, &response);
        assert_eq!(
            path.abandoned(t0 + Duration::from_millis(1200), after),
            None,
            "the check was answered"
        );
        path.on_transmit(t0 + Duration::from_millis(700), ours, old, &BINDING_REQUEST);
        for _ in 0..UNANSWERED_FOR_MOVE {
            path.on_transmit(t0 + Duration::from_millis(700), ours, old, &[23]);
        }
        path.on_receive(t0 + Duration::from_millis(1000), new, &[23]);
        assert_eq!(
            path.abandoned(t0 + Duration::from_millis(1200), after),
            Some(old),
            "silent since 650 ms, a check unanswered since 700 ms, heard at a new address"
        );
        let mut rtc = str0m::Rtc::new(t0);
        path.drop_remote(&mut rtc, old);
        assert!(path.revive(new).is_empty());
        let back = path.revive(old);
        assert_eq!(back.len(), 1, "the agent's peer-reflexive candidate");
        assert_eq!(back[0].addr(), old);
        assert!(path.revive(old).is_empty(), "given back once");
    }
}
