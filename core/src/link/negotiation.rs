//! Offer / answer: who offers, applying the remote's SDP and candidates, starting a handshake
//! over with a fresh `Rtc`, and renegotiating a connected one (an ICE restart).
//!
//! # New connection or same connection?
//! An offer on a link already negotiated is one of three things, told apart by the SDP's
//! `o=` line, whose session id stays the same for the life of one connection (RFC 3264 §8;
//! str0m and browsers keep it, a fresh `Rtc` draws a new one):
//! - the applied offer again (same text): refused as unexpected;
//! - a different session id: the offerer started over with a new connection (handshake retry,
//!   [`Link::starts_over`]): the mesh follows with a fresh `Rtc`;
//! - the same session id: a renegotiation of this connection, applied to the existing `Rtc`,
//!   which keeps DTLS and SCTP. New ICE credentials (`a=ice-ufrag`) in it make it an ICE restart.
//!
//! The DTLS fingerprint cannot tell them apart: every connection of a mesh shares one
//! certificate.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::{Candidate, Rtc, RtcConfig};

use super::guard::MdnsRefused;
use super::reliable;
use super::window::SendWindow;
use super::{layout, ChannelStats, Link, LinkChannel, Loss, Role};
use crate::channels::{self, ChannelSpec};
use crate::config::MeshConfig;
use crate::error::{AddPeerError, SignalError};
use crate::mdns::{self, CandidateAddress};
use crate::signal::Signal;

/// The longest the answering side keeps the offerer's trickled candidates from ICE while it
/// waits for the offerer's first check (see [`HeldCandidates`]): a signaling trip with room
/// to spare; past it, a NAT that must see our checks first gets them.
const HOLD_CANDIDATES: Duration = Duration::from_secs(1);

/// Answering side, from the first offer until the offerer's first datagram (or
/// [`HOLD_CANDIDATES`]): the offerer's trickled candidates wait here, so no connectivity check
/// of ours reaches the offerer before it can have our answer. libdatachannel (Godot's native
/// stack) fails a connection whose checks complete while it is still applying the answer (see
/// docs/interop.md); the wait is bounded for NATs that open only once both sides send. What
/// is held passed the [`Guard`](super::guard::Guard)'s cap first, so it is bounded too.
#[derive(Debug, Default)]
pub(super) struct HeldCandidates {
    until: Option<Instant>,
    held: Vec<Candidate>,
}

impl HeldCandidates {
    /// Holds trickled candidates from now until `at` (or [`release`](Self::release)).
    fn hold_until(&mut self, at: Instant) {
        self.until = Some(at);
    }

    /// `c` back when nothing is held (str0m takes it now), or `None` when it is kept.
    fn keep(&mut self, c: Candidate) -> Option<Candidate> {
        if self.until.is_some() {
            self.held.push(c);
            None
        } else {
            Some(c)
        }
    }

    /// Ends the wait: what was held, for str0m (nothing when nothing was held).
    pub fn release(&mut self) -> Vec<Candidate> {
        match self.until.take() {
            Some(_) => std::mem::take(&mut self.held),
            None => Vec::new(),
        }
    }

    /// When the wait ends by itself.
    pub fn deadline(&self) -> Option<Instant> {
        self.until
    }

    /// Drops what was held (it belonged to an old connection's offerer).
    fn clear(&mut self) {
        self.until = None;
        self.held.clear();
    }
}

/// The largest message a remote accepts when its SDP has no `a=max-message-size` (RFC 8841
/// §6.1).
pub(super) const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Who makes the SDP offer, and how far the exchange got.
#[derive(Debug)]
pub(super) enum Negotiation {
    /// We offered and wait for the answer.
    Offered(SdpPendingOffer),
    /// We wait for the remote offer.
    AwaitingOffer,
    /// Offer and answer are applied.
    Done,
    /// Connected; we offered an ICE restart and wait for the answer. The connection carries on
    /// meanwhile. `ufrag` is the offer's new ICE username fragment: str0m's agent takes the
    /// new credentials only with the answer, so candidates gathered before it are trickled
    /// with this one (the peer, which applies the offer at once, drops the old one's).
    Restarting {
        pending: SdpPendingOffer,
        ufrag: String,
    },
}

/// What every link of a mesh is built from.
pub(crate) struct LinkSetup<'a> {
    pub layout: &'a [ChannelSpec],
    pub config: &'a MeshConfig,
    pub rtc_config: &'a RtcConfig,
    /// Host addresses links may use (none under `IceTransportPolicy::Relay`).
    pub host_addresses: &'a [SocketAddr],
    /// Candidates gathered from ICE servers (server-reflexive, relayed).
    pub gathered: &'a [Candidate],
    /// The mesh's `tracing` span, parent of the peer's.
    pub span: &'a tracing::Span,
}

/// A handshake's starting point: a fresh `Rtc`, its channels and (offering side) the offer.
pub(super) struct Handshake {
    pub rtc: Rtc,
    pub channels: SmallVec<[LinkChannel; 4]>,
    pub negotiation: Negotiation,
    pub offer: Option<Signal>,
}

impl Link {
    /// A fresh `Rtc` with this side's channels and, on the offering side, its offer.
    pub(super) fn handshake(
        now: Instant,
        role: Role,
        lifetime_ms: u16,
        setup: &LinkSetup<'_>,
    ) -> Result<Handshake, AddPeerError> {
        let mut rtc = setup.rtc_config.clone().build(now);
        for &addr in setup.host_addresses {
            // Addresses were validated when registered.
            if let Ok(c) = Candidate::host(addr, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        for c in setup.gathered {
            rtc.add_local_candidate(c.clone());
        }
        let mut channels: SmallVec<[LinkChannel; 4]> = setup
            .layout
            .iter()
            .map(|spec| LinkChannel {
                spec: *spec,
                id: None,
                open: false,
                lifetime: channels::lifetime(spec, lifetime_ms),
                in_sctp: 0,
                stats: ChannelStats::new(spec.transfer_channel, spec.mode),
            })
            .collect();
        let (negotiation, offer) = if role == Role::Offerer {
            let mut api = rtc.sdp_api();
            for ch in &mut channels {
                let config = channels::str0m_config(&ch.spec, lifetime_ms);
                ch.id = Some(api.add_channel_with_config(config));
            }
            let (offer, pending) = api
                .apply()
                .ok_or_else(|| AddPeerError::Rtc("no offer produced".into()))?;
            let sdp = layout::state(setup.layout, offer.to_sdp_string());
            let sdp = reliable::advertise(setup.config.own_retransmission, sdp);
            (Negotiation::Offered(pending), Some(Signal::Offer(sdp)))
        } else {
            (Negotiation::AwaitingOffer, None)
        };
        Ok(Handshake {
            rtc,
            channels,
            negotiation,
            offer,
        })
    }

    /// Starts the handshake over with a fresh `Rtc` (new ICE credentials, DTLS and SCTP): a
    /// handshake retry, not an ICE restart. The old `Rtc` is dropped without a goodbye, so the
    /// remote keeps its link for the new offer; on the offering side the new offer is the next
    /// event. The link is no longer connected: the mesh reports a peer it had announced as
    /// disconnected before it calls this.
    pub fn retry(&mut self, now: Instant, setup: LinkSetup<'_>) -> Result<(), AddPeerError> {
        let Handshake {
            rtc,
            channels,
            negotiation,
            offer,
        } = Link::handshake(now, self.role, self.lifetime_ms, &setup)?;
        self.rtc = rtc;
        // The counters run from `add_peer`: they carry over to the new connection's channels.
        let mut channels = channels;
        for (new, old) in channels.iter_mut().zip(&self.channels) {
            new.stats = old.stats.carried_over();
        }
        self.channels = channels;
        self.negotiation = negotiation;
        self.path.reset_remote();
        self.path.forget_last();
        self.recovery.reset();
        self.offer_hash = 0;
        self.remote_session = 0;
        self.remote_ufrag = 0;
        crate::trace::handshake_retried(&self.span);
        self.connected = false;
        self.opening = false;
        // Candidates held for the old connection's offerer are its, not the new one's.
        self.held.clear();
        self.rtc_deadline = None;
        self.queue.clear();
        self.window = SendWindow::new(
            setup.config.sctp_send_buffer_min,
            setup.config.sctp_send_buffer,
        );
        self.busy.clear();
        self.unsent = false;
        self.clock = now;
        self.max_message_size = DEFAULT_MAX_MESSAGE_SIZE;
        self.guard.forget_candidates();
        self.reliable.reset();
        // The answering side follows the offerer, whose own deadline bounds the retries.
        let connect_by = offer
            .is_none()
            .then(|| crate::limits::deadline(now, setup.config.connect_timeout));
        self.deadlines.start_over(now, connect_by);
        if let Some(offer) = offer {
            self.signal(offer);
        }
        Ok(())
    }

    /// Whether `sdp` is an offer for a new connection on a link already negotiated: the
    /// offerer started over (see [`LinkEvent::RetryHandshake`](super::LinkEvent) and the module
    /// docs), and the mesh follows
    /// with a fresh `Rtc`. A repeat of the applied offer is not, nor is a renegotiation of this
    /// connection (same session id, see [`renegotiate`](Link::renegotiate)). A new connection
    /// arriving faster than the renegotiation rate limit is refused with
    /// [`SignalError::TooManyOffers`] before it is even parsed.
    pub fn starts_over(&mut self, now: Instant, sdp: &str) -> Result<bool, SignalError> {
        let new_connection = self.role == Role::Answerer
            && matches!(self.negotiation, Negotiation::Done)
            && self.offer_hash != 0
            && self.offer_hash != hash(sdp)
            && self.remote_session != sdp_session(sdp);
        if !new_connection {
            return Ok(false);
        }
        self.offer_allowed(now)?;
        if SdpOffer::from_sdp_string(sdp).is_err() {
            return Ok(false);
        }
        self.guard.offer_taken();
        Ok(true)
    }

    /// Applies a signal from this peer. An answer that leaves the link unusable ends it
    /// ([`LinkEvent::Lost`](super::LinkEvent::Lost)) besides the error.
    pub fn handle_signal(&mut self, now: Instant, signal: Signal) -> Result<(), SignalError> {
        match signal {
            Signal::Offer(sdp) => match self.negotiation {
                Negotiation::AwaitingOffer => {
                    self.accept_first_offer(sdp)?;
                    self.held.hold_until(now + HOLD_CANDIDATES);
                }
                Negotiation::Done if hash(&sdp) != self.offer_hash => {
                    if sdp_session(&sdp) != self.remote_session {
                        // Only the offering side may start a new connection.
                        return Err(SignalError::UnexpectedOffer(self.peer));
                    }
                    self.renegotiate(now, sdp)?;
                }
                // A repeat, or glare: our restart offer is outstanding and wins (larger id).
                _ => return Err(SignalError::UnexpectedOffer(self.peer)),
            },
            Signal::Answer(sdp) => {
                let restarting = match self.negotiation {
                    Negotiation::Offered(_) => false,
                    Negotiation::Restarting { .. } => true,
                    _ => return Err(SignalError::UnexpectedAnswer(self.peer)),
                };
                let ufrag = sdp_ufrag(&sdp);
                // An answer to our restart (new credentials) brings a fresh set of remote
                // candidates: str0m drops the old ones when it applies it, so does the cap.
                let before = (restarting && ufrag != self.remote_ufrag)
                    .then(|| self.guard.forget_candidates());
                let sdp = self.bound_sdp_candidates(sdp);
                let answer = match SdpAnswer::from_sdp_string(&sdp) {
                    Ok(answer) => answer,
                    Err(e) => {
                        self.guard.keep_candidates(before);
                        return Err(SignalError::Invalid(format!("bad SDP answer: {e}")));
                    }
                };
                let (Negotiation::Offered(pending) | Negotiation::Restarting { pending, .. }) =
                    std::mem::replace(&mut self.negotiation, Negotiation::Done)
                else {
                    unreachable!("checked above");
                };
                if let Err(e) = self.rtc.sdp_api().accept_answer(pending, answer) {
                    if !restarting {
                        // str0m consumed the pending offer; the link cannot recover, so it ends.
                        self.end(Loss::Closed);
                    }
                    self.guard.keep_candidates(before);
                    // A refused restart answer leaves the connection as it was; the next
                    // restart (or the loss path) follows if the path stays broken.
                    return Err(SignalError::Invalid(format!("answer refused: {e}")));
                }
                self.remote_session = sdp_session(&sdp);
                if !restarting {
                    // The connection's answer: both ends agree on their own retransmission.
                    self.reliable.on_answer(&sdp);
                    self.reliable.create_channel(&mut self.rtc);
                }
                if restarting && ufrag != self.remote_ufrag {
                    self.path.reset_remote();
                    self.restart_applied();
                }
                self.remote_ufrag = ufrag;
                self.learn_remote(&sdp);
                if !restarting {
                    self.deadlines.answered(now);
                    self.check_layout(&layout::stated(&sdp));
                    if self.lost.is_some() {
                        return Ok(());
                    }
                }
            }
            Signal::Candidate(text) => {
                let text = text.trim();
                let attr = text.strip_prefix("a=").unwrap_or(text);
                match mdns::candidate_address(attr) {
                    CandidateAddress::Mdns(name) => self.hold_mdns(name, attr),
                    CandidateAddress::BadName => {
                        self.counts.mdns_names_refused += 1;
                        return Err(SignalError::Invalid(format!(
                            "bad candidate: its .local name is not one label of ASCII \
                             letters, digits and hyphens: {attr}"
                        )));
                    }
                    CandidateAddress::Other => match Candidate::from_sdp_string(attr) {
                        Ok(c) => self.add_remote_candidate(c),
                        Err(e) => {
                            self.counts.candidates_rejected += 1;
                            return Err(SignalError::Invalid(format!("bad candidate: {e}")));
                        }
                    },
                }
            }
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// Whether a new offer from the remote may start the handshake over at `now`.
    fn offer_allowed(&mut self, now: Instant) -> Result<(), SignalError> {
        if self.guard.offer_allowed(now) {
            Ok(())
        } else {
            Err(SignalError::TooManyOffers(self.peer))
        }
    }

    /// An offer's or answer's SDP with its candidates past the cap removed (and counted), and
    /// its `.local` ones held until their names resolve.
    fn bound_sdp_candidates(&mut self, sdp: String) -> String {
        let (sdp, removed) = self.guard.bound_sdp(&sdp);
        self.counts.candidates_over_limit += removed.over_limit;
        self.counts.mdns_names_over_limit += removed.mdns_over_limit;
        self.counts.mdns_names_refused += removed.mdns_refused;
        sdp
    }

    /// A trickled `.local` candidate: to ICE at once if its name resolved already on this
    /// connection, else held until it does (unless past a limit: then counted).
    fn hold_mdns(&mut self, name: &str, attr: &str) {
        if let Some(ip) = self.guard.mdns_address(name) {
            if let Some(c) =
                mdns::with_address(attr, ip).and_then(|line| Candidate::from_sdp_string(&line).ok())
            {
                self.add_remote_candidate(c);
            }
            return;
        }
        match self.guard.hold_mdns(name, attr) {
            Ok(()) => {}
            Err(MdnsRefused::OverLimit) => self.counts.candidates_over_limit += 1,
            Err(MdnsRefused::TooManyNames) => self.counts.mdns_names_over_limit += 1,
        }
    }

    /// The `.local` names held since the last call: the mesh asks the adapter to resolve them.
    pub fn take_mdns_names(&mut self) -> Vec<String> {
        self.guard.take_mdns_names()
    }

    /// `name` resolved to `ip`: the candidates carrying it go to ICE with `ip` in its place
    /// (foundation, priority, port and type as signalled). Returns how many went.
    pub fn resolved_mdns(&mut self, now: Instant, name: &str, ip: IpAddr) -> usize {
        let mut applied = 0;
        for line in self.guard.release_mdns(name) {
            match mdns::with_address(&line, ip).map(|l| Candidate::from_sdp_string(&l)) {
                Some(Ok(c)) => {
                    self.add_remote_candidate(c);
                    applied += 1;
                }
                _ => self.counts.candidates_rejected += 1,
            }
        }
        self.guard.remember_mdns(name, ip);
        self.handle_timeout(now);
        applied
    }

    /// `name` will not resolve: the candidates carrying it are dropped.
    pub fn drop_mdns(&mut self, name: &str) {
        self.guard.release_mdns(name);
    }

    /// A trickled candidate: to str0m (or held, see [`HeldCandidates`]) unless past the cap
    /// (then counted).
    fn add_remote_candidate(&mut self, c: Candidate) {
        if !self.guard.admit_candidate(&c) {
            self.counts.candidates_over_limit += 1;
            return;
        }
        self.path.add_remote(&c);
        if let Some(c) = self.held.keep(c) {
            self.rtc.add_remote_candidate(c);
        }
    }

    /// Answering side: the offerer was heard from, or the wait is over: str0m gets the
    /// candidates it trickled meanwhile.
    pub(super) fn release_held(&mut self) {
        for c in self.held.release() {
            self.rtc.add_remote_candidate(c);
        }
    }

    /// Answering side: the offer that creates the connection, and its channels.
    fn accept_first_offer(&mut self, sdp: String) -> Result<(), SignalError> {
        let offer_hash = hash(&sdp);
        let sdp = self.bound_sdp_candidates(sdp);
        let offer = SdpOffer::from_sdp_string(&sdp)
            .map_err(|e| SignalError::Invalid(format!("bad SDP offer: {e}")))?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SignalError::Invalid(format!("offer refused: {e}")))?;
        let mut api = self.rtc.direct_api();
        for ch in &mut self.channels {
            let config = channels::str0m_config(&ch.spec, self.lifetime_ms);
            ch.id = Some(api.create_data_channel(config));
        }
        self.reliable.on_offer(&sdp);
        self.reliable.create_channel(&mut self.rtc);
        self.negotiation = Negotiation::Done;
        self.offer_hash = offer_hash;
        self.remote_session = sdp_session(&sdp);
        self.remote_ufrag = sdp_ufrag(&sdp);
        self.learn_remote(&sdp);
        // An rtcmesh offerer stated its layout: ours goes back, and a mismatch ends the link
        // once the answer is out, so the offerer learns it too.
        let stated = layout::stated(&sdp);
        let answer = self.reliable.answer(answer.to_sdp_string());
        if stated == layout::Stated::Nothing {
            self.signal(Signal::Answer(answer));
        } else {
            let specs = self.layout();
            self.signal(Signal::Answer(layout::state(&specs, answer)));
            self.check_layout(&stated);
        }
        Ok(())
    }

    /// The channel layout of this link.
    fn layout(&self) -> SmallVec<[ChannelSpec; 8]> {
        self.channels.iter().map(|c| c.spec).collect()
    }

    /// Ends the link if the remote stated a channel layout other than ours.
    fn check_layout(&mut self, stated: &layout::Stated) {
        if let Err(m) = layout::check(&self.layout(), stated) {
            self.end(Loss::LayoutMismatch {
                local: m.local,
                remote: m.remote,
            });
        }
    }

    /// A new offer for this connection (same session): applied to the existing `Rtc`, which
    /// keeps DTLS and SCTP. With new ICE credentials it is an ICE restart, which the agent
    /// applies at once (its old pairs and remote candidates are dropped, and the candidate cap
    /// starts over with the offer's). Such offers share the renegotiation rate limit with new
    /// connections: a remote's restarts, at least `ice_restart_interval` (≥ 1 s) apart, pass;
    /// a flood is refused with [`SignalError::TooManyOffers`] and the connection carries on.
    fn renegotiate(&mut self, now: Instant, sdp: String) -> Result<(), SignalError> {
        if let Err(e) = self.offer_allowed(now) {
            self.counts.offers_rate_limited += 1;
            return Err(e);
        }
        let offer_hash = hash(&sdp);
        let ufrag = sdp_ufrag(&sdp);
        let restart = ufrag != self.remote_ufrag;
        let before = restart.then(|| self.guard.forget_candidates());
        let sdp = self.bound_sdp_candidates(sdp);
        let offer = match SdpOffer::from_sdp_string(&sdp) {
            Ok(offer) => offer,
            Err(e) => {
                self.guard.keep_candidates(before);
                return Err(SignalError::Invalid(format!("bad SDP offer: {e}")));
            }
        };
        self.guard.offer_taken();
        let answer = match self.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => answer,
            Err(e) => {
                self.guard.keep_candidates(before);
                return Err(SignalError::Invalid(format!("offer refused: {e}")));
            }
        };
        self.offer_hash = offer_hash;
        if restart {
            self.remote_ufrag = ufrag;
            self.path.reset_remote();
            if self.connected {
                self.restart_began(now);
            }
            self.restart_applied();
        }
        self.learn_remote(&sdp);
        self.send_answer(&answer);
        Ok(())
    }

    /// What an applied offer or answer says about the remote: its candidates (for the path's
    /// kinds) and the largest message it accepts.
    fn learn_remote(&mut self, sdp: &str) {
        self.path.add_remote_sdp(sdp);
        self.max_message_size = max_message_size(sdp);
    }

    /// Sends our answer to the peer's offer through the signaling channel.
    fn send_answer(&mut self, answer: &SdpAnswer) {
        self.signal(Signal::Answer(self.reliable.answer(answer.to_sdp_string())));
    }

    /// Adds a local candidate (host, or gathered from an ICE server) and, once the SDP exchange
    /// has started, trickles it to the peer (a [`Signal::Candidate`]; before, the offer or
    /// answer carries it). Nothing is trickled if str0m found it redundant. It stays on the
    /// `Rtc` across ICE restarts, whose offers carry it again.
    ///
    /// A server-reflexive candidate is trickled even when str0m finds it redundant: its agent
    /// learned the same address from a check's response first (a peer-reflexive candidate of
    /// ours, which it never signals), typically right after our NAT mapped us anew, and the
    /// peer behind a filtering NAT must send to that address before our checks get in.
    ///
    /// While our restart offer waits for its answer, the candidate is trickled with the
    /// offer's ICE credentials: the peer applied the offer already (signals arrive in order),
    /// and drops a candidate of the old ones. That is the moment a restart's new
    /// server-reflexive address typically arrives (the NAT is re-checked as the offer goes out).
    pub fn add_local_candidate(&mut self, candidate: Candidate) {
        let started = self.negotiation_started();
        self.path
            .add_local(candidate.addr(), candidate.kind().into());
        let mut signalled = match self.rtc.add_local_candidate(candidate.clone()) {
            Some(added) => added.clone(),
            None if candidate.kind() == str0m::CandidateKind::ServerReflexive => candidate,
            None => return,
        };
        if !started {
            return;
        }
        let ufrag = match &self.negotiation {
            Negotiation::Restarting { ufrag, .. } => ufrag.clone(),
            _ => self.rtc.direct_api().local_ice_credentials().ufrag,
        };
        signalled.set_ufrag(&ufrag);
        self.signal(Signal::Candidate(signalled.to_sdp_string()));
    }

    /// This side's address `old` is gone (the socket moved to `new`, already added): drops
    /// its candidate, so ICE checks pairs from the new one, and restarts ICE on the offering
    /// side.
    pub fn remove_host_candidate(&mut self, old: Candidate) {
        self.rtc.direct_api().invalidate_candidate(&old);
        if self.connected {
            self.recovery.moved_locally = true;
        }
    }

    /// Our public (server-reflexive) address changed. A peer that seemed to move before we
    /// noticed may not have: its address went silent because our NAT's mapping to it was
    /// gone, and ICE, told to forget that address, would never check it from the new mapping.
    /// Its candidates go back to the agent, whose checks tell whether they work; where they
    /// do, the direct path between two NATs is found again (instead of staying on a relay).
    pub fn on_public_address_changed(&mut self) {
        for c in self.path.revive_all() {
            self.rtc.add_remote_candidate(c);
        }
    }

    /// Stops using a local candidate that is gone (a lost TURN allocation, a changed NAT
    /// mapping): its pairs are dropped and ICE moves to the others.
    pub fn invalidate_local_candidate(&mut self, candidate: &Candidate) {
        self.rtc.direct_api().invalidate_candidate(candidate);
    }

    /// Whether the SDP exchange has started (later candidates must be trickled).
    fn negotiation_started(&self) -> bool {
        !matches!(self.negotiation, Negotiation::AwaitingOffer)
    }
}

/// The largest message the remote accepts: `a=max-message-size` in the SDP's first data
/// channel (`m=application`) section, as str0m reads it (RFC 8841 §6: 64 KiB when absent, `0`
/// for no limit). str0m refuses larger writes for good, so `send` refuses them first.
fn max_message_size(sdp: &str) -> usize {
    let mut in_data_section = false;
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            if in_data_section {
                break;
            }
            in_data_section = media.starts_with("application");
        } else if in_data_section {
            if let Some(value) = line.strip_prefix("a=max-message-size:") {
                return match value.trim().parse::<u64>() {
                    Ok(0) => usize::MAX,
                    Ok(n) => usize::try_from(n.min(u64::from(u32::MAX))).unwrap_or(usize::MAX),
                    Err(_) => DEFAULT_MAX_MESSAGE_SIZE,
                };
            }
        }
    }
    DEFAULT_MAX_MESSAGE_SIZE
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish() | 1
}

/// The session id of an SDP's `o=` line, hashed (0 when there is none).
fn sdp_session(sdp: &str) -> u64 {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("o="))
        .and_then(|o| o.split_whitespace().nth(1))
        .map_or(0, hash)
}

/// The first `a=ice-ufrag` of an SDP, hashed (0 when there is none).
fn sdp_ufrag(sdp: &str) -> u64 {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map_or(0, |u| hash(u.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_wait_while_held_and_go_to_str0m_when_released() {
        let c = |port| Candidate::host(SocketAddr::from(([127, 0, 0, 1], port)), "udp").unwrap();
        let mut held = HeldCandidates::default();
        assert!(held.keep(c(1)).is_some(), "nothing is held before an offer");
        let now = Instant::now();
        held.hold_until(now + HOLD_CANDIDATES);
        assert!(held.keep(c(2)).is_none());
        assert!(held.keep(c(3)).is_none());
        assert_eq!(held.deadline(), Some(now + HOLD_CANDIDATES));
        assert_eq!(held.release().len(), 2);
        assert!(held.release().is_empty(), "released once");
        assert!(
            held.keep(c(4)).is_some(),
            "after the release, candidates pass"
        );
        held.hold_until(now);
        assert!(held.keep(c(5)).is_none());
        held.clear();
        assert!(held.release().is_empty(), "a retry drops what was held");
    }

    #[test]
    fn max_message_size_is_read_from_the_data_section_as_rfc_8841_says() {
        let sdp = |attrs: &str| {
            format!(
                "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=max-message-size:1\r\n\
                 m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n{attrs}\
                 m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=max-message-size:2\r\n"
            )
        };
        assert_eq!(
            max_message_size(&sdp("a=max-message-size:16384\r\n")),
            16384
        );
        assert_eq!(max_message_size(&sdp("")), DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(
            max_message_size(&sdp("a=max-message-size:0\r\n")),
            usize::MAX
        );
        assert_eq!(
            max_message_size(&sdp("a=max-message-size:99999999999\r\n")),
            u32::MAX as usize
        );
        assert_eq!(
            max_message_size(&sdp("a=max-message-size:lots\r\n")),
            DEFAULT_MAX_MESSAGE_SIZE
        );
        assert_eq!(max_message_size("garbage"), DEFAULT_MAX_MESSAGE_SIZE);
    }
}
