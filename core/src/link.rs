//! One remote peer: its str0m `Rtc`, its channels, and its connect / loss state.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output, Rtc, RtcConfig};

use crate::channels::{self, ChannelSpec};
use crate::config::MeshConfig;
use crate::demux::Route;
use crate::error::{AddPeerError, SignalError};
use crate::event::{Event, Packet, Transmit};
use crate::signal::{OutgoingSignal, Signal};
use crate::stats::MeshStats;
use crate::transfer::PeerId;

/// Who makes the SDP offer, and how far the exchange got.
#[derive(Debug)]
enum Negotiation {
    /// We offered and wait for the answer.
    Offered(SdpPendingOffer),
    /// We wait for the remote offer.
    AwaitingOffer,
    /// Offer and answer are applied.
    Done,
}

/// One channel of the peer, in layout order.
#[derive(Debug)]
struct LinkChannel {
    spec: ChannelSpec,
    /// `None` on the answering side until the offer arrives and the channel is created.
    id: Option<ChannelId>,
    open: bool,
}

/// Why a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// Not all channels opened within `connect_timeout`.
    ConnectTimeout,
    /// Nothing arrived from the connected peer for `peer_timeout`.
    Silent,
    /// ICE stayed disconnected longer than `disconnect_grace`.
    IceLost,
    /// The remote closed a channel or the connection, or str0m failed.
    Closed,
}

/// What the mesh must do after a link was driven.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// All channels just opened: announce the peer.
    pub connected: bool,
    /// The link is over: remove it.
    pub lost: Option<Loss>,
    /// The handshake made no progress for `connect_retry_interval`: renegotiate from scratch.
    pub retry: bool,
}

/// A packet waiting for SCTP buffer space.
#[derive(Debug)]
struct Queued {
    channel: usize,
    data: Vec<u8>,
}

/// Outputs shared by every link of a mesh.
pub(crate) struct Sink<'a> {
    pub transmits: &'a mut VecDeque<Transmit>,
    pub events: &'a mut VecDeque<Event>,
    pub stats: &'a mut MeshStats,
}

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

/// What every link of a mesh is built from.
pub(crate) struct LinkSetup<'a> {
    pub own_id: PeerId,
    pub layout: &'a [ChannelSpec],
    pub config: &'a MeshConfig,
    pub rtc_config: &'a RtcConfig,
    pub host_addresses: &'a [SocketAddr],
}

/// A handshake's starting point: a fresh `Rtc`, its channels and (offering side) the offer.
struct Handshake {
    rtc: Rtc,
    channels: SmallVec<[LinkChannel; 4]>,
    negotiation: Negotiation,
    offer: Option<Signal>,
}

/// The state of one remote peer.
pub(crate) struct Link {
    pub peer: PeerId,
    rtc: Rtc,
    negotiation: Negotiation,
    /// Packet lifetime of the `ordered` and `unreliable` channels, in ms.
    lifetime_ms: u16,
    channels: SmallVec<[LinkChannel; 4]>,
    /// `peer_connected` was emitted.
    pub announced: bool,
    /// `disconnect_peer(force = false)` was called: remove on the next drive.
    pub closing: bool,
    ice_was_connected: bool,
    ice_lost_at: Option<Instant>,
    connect_deadline: Instant,
    /// Offering side: when the answer to the current offer was applied (the retry clock).
    answered_at: Option<Instant>,
    /// Answering side: a hash of the offer applied, so a repeated offer is not taken as new.
    offer_hash: u64,
    /// When the last datagram from this peer arrived (or the link was created).
    last_heard: Instant,
    rtc_deadline: Option<Instant>,
    /// The deadline currently registered in the mesh's timers.
    pub scheduled: Option<Instant>,
    /// Routes learned for this peer, forgotten when it is removed.
    pub routes: SmallVec<[Route; 2]>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
}

impl Link {
    /// Creates the connection. The side with the larger id offers (Godot demo's rule); its offer
    /// is returned to be signalled.
    pub fn new(
        now: Instant,
        peer: PeerId,
        lifetime_ms: u16,
        setup: LinkSetup<'_>,
    ) -> Result<(Link, Option<Signal>), AddPeerError> {
        let Handshake {
            rtc,
            channels,
            negotiation,
            offer,
        } = Link::handshake(now, peer, lifetime_ms, &setup)?;
        let link = Link {
            peer,
            rtc,
            negotiation,
            lifetime_ms,
            channels,
            announced: false,
            closing: false,
            ice_was_connected: false,
            ice_lost_at: None,
            connect_deadline: now + setup.config.connect_timeout,
            answered_at: None,
            offer_hash: 0,
            last_heard: now,
            rtc_deadline: None,
            scheduled: None,
            routes: SmallVec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
        };
        Ok((link, offer))
    }

    /// A fresh `Rtc` with this side's channels and, on the offering side, its offer.
    fn handshake(
        now: Instant,
        peer: PeerId,
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
        let offers = setup.own_id > peer;
        let mut channels: SmallVec<[LinkChannel; 4]> = setup
            .layout
            .iter()
            .map(|spec| LinkChannel {
                spec: *spec,
                id: None,
                open: false,
            })
            .collect();
        let (negotiation, offer) = if offers {
            let mut api = rtc.sdp_api();
            for ch in &mut channels {
                let config = channels::str0m_config(&ch.spec, lifetime_ms);
                ch.id = Some(api.add_channel_with_config(config));
            }
            let (offer, pending) = api
                .apply()
                .ok_or_else(|| AddPeerError::Rtc("no offer produced".into()))?;
            (
                Negotiation::Offered(pending),
                Some(Signal::Offer(offer.to_sdp_string())),
            )
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

    /// Starts the handshake over with a fresh `Rtc` (new ICE credentials, DTLS and SCTP); the
    /// old one is dropped without a goodbye, so the remote keeps its link for the new offer.
    /// On the offering side the new offer is returned. `announced` is left to the caller.
    pub fn restart(
        &mut self,
        now: Instant,
        setup: LinkSetup<'_>,
    ) -> Result<Option<Signal>, AddPeerError> {
        let Handshake {
            rtc,
            channels,
            negotiation,
            offer,
        } = Link::handshake(now, self.peer, self.lifetime_ms, &setup)?;
        self.rtc = rtc;
        self.channels = channels;
        self.negotiation = negotiation;
        self.ice_was_connected = false;
        self.ice_lost_at = None;
        self.answered_at = None;
        self.last_heard = now;
        self.rtc_deadline = None;
        self.queue.clear();
        self.queued_bytes = 0;
        if offer.is_none() {
            // The answering side follows the offerer, whose own deadline bounds the retries.
            self.connect_deadline = now + setup.config.connect_timeout;
        }
        Ok(offer)
    }

    /// Whether `sdp` is a new offer from the offering side for a link already negotiated: the
    /// offerer started over (see [`Progress::retry`]). A repeat of the applied offer is not.
    pub fn is_new_offer(&self, sdp: &str) -> bool {
        matches!(self.negotiation, Negotiation::Done)
            && self.offer_hash != 0
            && self.offer_hash != hash(sdp)
            && SdpOffer::from_sdp_string(sdp).is_ok()
    }

    /// Applies a signal from this peer.
    pub fn handle_signal(
        &mut self,
        now: Instant,
        signal: Signal,
        limits: Limits,
        sink: &mut Sink<'_>,
    ) -> Result<Progress, SignalError> {
        match signal {
            Signal::Offer(sdp) => {
                if !matches!(self.negotiation, Negotiation::AwaitingOffer) {
                    return Err(SignalError::UnexpectedOffer(self.peer));
                }
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
                self.negotiation = Negotiation::Done;
                self.offer_hash = hash(&sdp);
                sink.events.push_back(Event::Signal(OutgoingSignal {
                    to: self.peer,
                    signal: Signal::Answer(answer.to_sdp_string()),
                }));
            }
            Signal::Answer(sdp) => {
                if !matches!(self.negotiation, Negotiation::Offered(_)) {
                    return Err(SignalError::UnexpectedAnswer(self.peer));
                }
                let answer = SdpAnswer::from_sdp_string(&sdp)
                    .map_err(|e| SignalError::Invalid(format!("bad SDP answer: {e}")))?;
                let Negotiation::Offered(pending) =
                    std::mem::replace(&mut self.negotiation, Negotiation::Done)
                else {
                    unreachable!("checked above");
                };
                if let Err(e) = self.rtc.sdp_api().accept_answer(pending, answer) {
                    // str0m consumed the pending offer; the link cannot recover, so it ends.
                    self.closing = true;
                    return Err(SignalError::Invalid(format!("answer refused: {e}")));
                }
                self.answered_at = Some(now);
            }
            Signal::Candidate(text) => {
                let text = text.trim();
                let attr = text.strip_prefix("a=").unwrap_or(text);
                match Candidate::from_sdp_string(attr) {
                    Ok(c) => self.rtc.add_remote_candidate(c),
                    Err(e) => {
                        sink.stats.candidates_rejected += 1;
                        return Err(SignalError::Invalid(format!("bad candidate: {e}")));
                    }
                }
            }
        }
        Ok(self.timeout(now, limits, sink))
    }

    /// Whether this peer's `Rtc` claims the datagram (ICE credentials or a known address).
    pub fn accepts(&self, input: &Input<'_>) -> bool {
        self.rtc.accepts(input)
    }

    /// Feeds a datagram this peer accepted. `false` if str0m refused it (counted by the caller).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        input: Input<'_>,
        sink: &mut Sink<'_>,
    ) -> (bool, Progress) {
        let ok = self.rtc.handle_input(input).is_ok();
        if ok {
            self.last_heard = self.last_heard.max(now);
        }
        (ok, self.drive(now, sink))
    }

    /// Adds a local host candidate and returns its SDP attribute, to trickle to the peer.
    pub fn add_host_candidate(&mut self, candidate: Candidate) -> Option<String> {
        self.rtc
            .add_local_candidate(candidate)
            .map(|c| c.to_sdp_string())
    }

    /// Whether the SDP exchange has started (later candidates must be trickled).
    pub fn negotiation_started(&self) -> bool {
        !matches!(self.negotiation, Negotiation::AwaitingOffer)
    }

    /// Advances time to `now`, drains output and applies the link's own deadlines.
    pub fn timeout(&mut self, now: Instant, limits: Limits, sink: &mut Sink<'_>) -> Progress {
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

    /// Writes a packet to channel `index`, queueing it (bounded) while SCTP's buffer is full.
    /// `Err(())` when the queue is full too; nothing was written then.
    pub fn write(
        &mut self,
        now: Instant,
        index: usize,
        data: &[u8],
        max_queued: usize,
        sink: &mut Sink<'_>,
    ) -> Result<Progress, ()> {
        // SCTP stamps the packet with the connection's clock (round-trip samples, retransmission
        // timers, lifetimes): bring it to the mesh's latest time first, not the last datagram's.
        if self.rtc.handle_input(Input::Timeout(now)).is_err() {
            return Ok(Progress {
                lost: Some(Loss::Closed),
                ..Progress::default()
            });
        }
        if self.queue.is_empty() && self.try_write(index, data) {
            sink.stats.packets_sent += 1;
            return Ok(self.drive(now, sink));
        }
        if self.queued_bytes + data.len() > max_queued {
            return Err(());
        }
        self.queued_bytes += data.len();
        self.queue.push_back(Queued {
            channel: index,
            data: data.to_vec(),
        });
        Ok(self.drive(now, sink))
    }

    /// Whether all channels are open and the transport is connected.
    pub fn is_ready(&self) -> bool {
        self.channels.iter().all(|c| c.open) && self.rtc.is_connected()
    }

    /// Channels open so far.
    pub fn open_channels(&self) -> usize {
        self.channels.iter().filter(|c| c.open).count()
    }

    /// Channels in the layout.
    pub fn total_channels(&self) -> usize {
        self.channels.len()
    }

    /// Bytes waiting for SCTP buffer space.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Starts a graceful close (SCTP abort, DTLS close_notify) and drains what it sends.
    pub fn close(&mut self, sink: &mut Sink<'_>) {
        let _ = self.rtc.close();
        self.drain(None, sink);
        self.rtc.disconnect();
    }

    fn try_write(&mut self, index: usize, data: &[u8]) -> bool {
        let Some(ch) = self.channels.get(index) else {
            return false;
        };
        if !ch.open {
            return false;
        }
        let Some(id) = ch.id else {
            return false;
        };
        match self.rtc.channel(id) {
            Some(mut channel) => channel.write(true, data).unwrap_or(false),
            None => false,
        }
    }

    /// Moves queued packets into SCTP while it has room; true if any moved.
    fn flush_queue(&mut self, stats: &mut MeshStats) -> bool {
        let mut moved = false;
        while let Some(queued) = self.queue.pop_front() {
            if !self.try_write(queued.channel, &queued.data) {
                self.queue.push_front(queued);
                break;
            }
            self.queued_bytes -= queued.data.len();
            stats.packets_sent += 1;
            moved = true;
        }
        moved
    }

    /// Drains str0m's output after any input, flushing the send queue as room appears.
    fn drive(&mut self, now: Instant, sink: &mut Sink<'_>) -> Progress {
        let mut progress = Progress::default();
        loop {
            self.drain(Some((now, &mut progress)), sink);
            if self.queue.is_empty() || progress.lost.is_some() || !self.flush_queue(sink.stats) {
                break;
            }
        }
        if !self.rtc.is_alive() {
            progress.lost.get_or_insert(Loss::Closed);
        }
        progress
    }

    fn drain(&mut self, mut progress: Option<(Instant, &mut Progress)>, sink: &mut Sink<'_>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.rtc_deadline = Some(at);
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    sink.stats.datagrams_sent += 1;
                    sink.transmits.push_back(Transmit {
                        destination: t.destination,
                        source: t.source,
                        contents: t.contents.into(),
                    });
                }
                Ok(Output::Event(event)) => {
                    if let Some((now, progress)) = progress.as_mut() {
                        self.on_event(*now, event, progress, sink);
                    }
                }
                Err(_) => {
                    self.rtc_deadline = None;
                    if let Some((_, progress)) = progress.as_mut() {
                        progress.lost = Some(Loss::Closed);
                    }
                    return;
                }
            }
        }
    }

    fn channel_index(&self, id: ChannelId) -> Option<usize> {
        self.channels.iter().position(|c| c.id == Some(id))
    }

    fn on_event(
        &mut self,
        now: Instant,
        event: RtcEvent,
        progress: &mut Progress,
        sink: &mut Sink<'_>,
    ) {
        match event {
            RtcEvent::ChannelData(data) => match self.channel_index(data.id) {
                Some(index) => {
                    let spec = self.channels[index].spec;
                    sink.stats.packets_received += 1;
                    sink.events.push_back(Event::Packet(Packet {
                        from: self.peer,
                        channel: spec.transfer_channel,
                        mode: spec.mode,
                        data: data.data,
                    }));
                }
                None => sink.stats.packets_unknown_channel += 1,
            },
            RtcEvent::ChannelOpen(id, _label) => {
                if let Some(index) = self.channel_index(id) {
                    self.channels[index].open = true;
                    progress.connected |= !self.announced && self.is_ready();
                }
            }
            RtcEvent::Connected => progress.connected |= !self.announced && self.is_ready(),
            // Godot removes a peer when any of its channels closes.
            RtcEvent::ChannelClose(id) if self.channel_index(id).is_some() => {
                progress.lost = Some(Loss::Closed);
            }
            RtcEvent::IceConnectionStateChange(state) => match state {
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    self.ice_was_connected = true;
                    self.ice_lost_at = None;
                }
                IceConnectionState::Disconnected if self.ice_was_connected => {
                    self.ice_lost_at.get_or_insert(now);
                }
                _ => {}
            },
            RtcEvent::Closed => progress.lost = Some(Loss::Closed),
            _ => {}
        }
    }
}

fn hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish() | 1
}
