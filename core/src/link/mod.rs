//! One remote peer: its str0m `Rtc`, its channels, and its connect / loss state.
//!
//! The link is split along its concerns: [`negotiation`] (offer / answer, candidates, starting
//! over), [`queue`] (rtcmesh's own bounded send queue in front of SCTP), [`window`] (how much
//! SCTP may hold at a time), [`health`] (the deadlines that end or restart a link), [`path`]
//! (the selected candidate pair, the kinds of its ends, and moved peers), [`restart`] (ICE
//! restart), [`stats`] (per-peer counters), [`guard`] (what the remote may not make it
//! hold) and [`reliable`] (rtcmesh's own retransmission of the reliable channels between two
//! rtcmesh peers). This file holds the link itself and the loop that drains str0m's output.
//!
//! A link is a machine of its own, like str0m's `Rtc` under it and quinn's `Connection`: the
//! mesh feeds it inputs (datagrams, signals, time, writes) and drains what each produced from
//! its own queues: datagrams ([`Link::poll_transmit`]) and [`LinkEvent`]s
//! ([`Link::poll_event`]), which say what the mesh must act on (announce the peer, remove it,
//! start the handshake over, forget routes) or carry an [`Event`] for the application.
//!
//! Writes do not drain: they leave the link due ([`Link::is_due`]), and the mesh drains each
//! due link once, from its next `poll_transmit`, `poll_event` or `handle_timeout`. Every poll of
//! str0m costs sctp-proto a walk over everything it holds, so a burst of sends costs one poll
//! instead of one per packet.

mod deadlines;
mod guard;
mod ice_restart;
mod layout;
mod negotiation;
mod path;
mod queue;
mod reliable;
mod session_attribute;
mod stats;
mod window;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::channel::ChannelId;
use str0m::{Event as RtcEvent, IceConnectionState, Input, Output, Rtc};

use crate::channels::ChannelSpec;
use crate::error::AddPeerError;
use crate::event::{Event, Packet, Transmit};
use crate::path::CandidateKind;
use crate::signal::{OutgoingSignal, Signal};
use crate::transfer::PeerId;

use deadlines::Deadlines;
pub(crate) use deadlines::Timeouts;
use guard::{Guard, RefusedChannel};
use ice_restart::Recovery;
pub(crate) use negotiation::LinkSetup;
use negotiation::{Handshake, HeldCandidates, Negotiation};
use path::Path;
use queue::SendQueue;
pub(crate) use queue::WriteError;
#[cfg(feature = "_internal_test_exports")]
pub(crate) use reliable::fuzz as fuzz_reliable;
use reliable::Reliable;
pub use reliable::RetransmissionStats;
pub use stats::{ChannelStats, PeerStats};
use stats::{Counters, LinkCounts};
use window::SendWindow;

/// One channel of the peer, in layout order.
#[derive(Debug)]
struct LinkChannel {
    spec: ChannelSpec,
    /// `None` on the answering side until the offer arrives and the channel is created.
    id: Option<ChannelId>,
    open: bool,
    /// The packet lifetime of a partially reliable channel (`None`: reliable).
    lifetime: Option<Duration>,
    /// Bytes written to SCTP on this channel and not yet seen released.
    in_sctp: usize,
    /// Its counters (carried over a handshake retry).
    stats: ChannelStats,
}

/// Why a link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// Removed by the application (`remove_peer`, `disconnect_peer`, `close`).
    Removed,
    /// Not all channels opened within `connect_timeout`.
    ConnectTimeout,
    /// Nothing arrived from the connected peer for `peer_timeout`.
    Silent,
    /// ICE stayed disconnected longer than `disconnect_grace`.
    IceLost,
    /// The remote closed a channel or the connection, or str0m failed.
    Closed,
    /// The remote went past a limit that ends the connection (channels outside the layout, a
    /// message above our packet size through rtcmesh's own retransmission).
    Abuse,
    /// The remote rtcmesh stated a channel layout different from ours (see [`layout`]): our
    /// extra channel count and its (`None`: unreadable).
    LayoutMismatch { local: u16, remote: Option<u16> },
}

impl Loss {
    /// Why, in words (for traces).
    pub fn reason(self) -> &'static str {
        match self {
            Loss::Removed => "removed by the application",
            Loss::ConnectTimeout => "channels not open within connect_timeout",
            Loss::Silent => "nothing heard for peer_timeout",
            Loss::IceLost => "ICE disconnected longer than disconnect_grace",
            Loss::Closed => "closed by the remote, or the connection failed",
            Loss::Abuse => "went past a limit that ends the connection (channels outside the layout, or a message above our packet size)",
            Loss::LayoutMismatch { .. } => "its channel layout differs from ours",
        }
    }
}

/// Which side of the SDP exchange this link is. Godot's demo decides it by the ids (the larger
/// offers); the mesh makes that choice once, when it creates the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Makes the offers: the first one, handshake retries and ICE restarts.
    Offerer,
    /// Answers, and follows the offerer's retries and restarts.
    Answerer,
}

impl Role {
    /// Godot's rule: the side whose own id is larger offers.
    pub fn of(own_id: PeerId, peer: PeerId) -> Role {
        if own_id > peer {
            Role::Offerer
        } else {
            Role::Answerer
        }
    }
}

/// What a link reports to the mesh, drained with [`Link::poll_event`] after each input.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// All channels opened: announce the peer.
    Connected,
    /// The link is over: remove it. Reported once; the link does nothing after it.
    Lost(Loss),
    /// The handshake made no progress for `connect_retry_interval`: start it over with a fresh
    /// `Rtc` ([`Link::retry`]).
    RetryHandshake,
    /// ICE just lost its connection, an ICE restart began, or the peer moved: a NAT mapping
    /// may have changed (ours, or one on the way), worth re-checking at once, so the peer gets
    /// the new server-reflexive and relayed candidates (trickled, right after a restart's
    /// offer).
    RecheckNat,
    /// The peer moved away from this remote address: forget its routes.
    RouteStale(SocketAddr),
    /// An ICE restart that began at `since` just ended: forget routes not heard from since.
    RestartEnded {
        /// When the restart began.
        since: Instant,
    },
    /// For the application: a packet, a signal for the peer, an ICE restart, a move.
    App(Event),
}

/// The state of one remote peer.
pub(crate) struct Link {
    peer: PeerId,
    rtc: Rtc,
    role: Role,
    negotiation: Negotiation,
    /// Packet lifetime of the `ordered` and `unreliable` channels, in ms.
    lifetime_ms: u16,
    channels: SmallVec<[LinkChannel; 4]>,
    /// All channels opened and [`LinkEvent::Connected`] was reported (until a handshake retry).
    connected: bool,
    /// A channel opened or the transport connected during this drain: check readiness at its
    /// end.
    opening: bool,
    /// Why the link ended, once it did ([`LinkEvent::Lost`] was reported).
    lost: Option<Loss>,
    /// The moments its deadlines are measured from (see [`Deadlines`]).
    deadlines: Deadlines,
    /// Answering side: the offerer's trickled candidates, until its first datagram.
    held: HeldCandidates,
    /// Answering side: a hash of the offer applied, so a repeated offer is not taken as new.
    offer_hash: u64,
    /// The remote's SDP session id (`o=` line), to tell a renegotiation of this connection (an
    /// ICE restart) from a new connection (a handshake retry).
    remote_session: u64,
    /// The remote's ICE username fragment, to tell an ICE restart from other renegotiation.
    remote_ufrag: u64,
    rtc_deadline: Option<Instant>,
    /// The time limits, from the mesh's configuration.
    timeouts: Timeouts,
    queue: SendQueue,
    window: SendWindow,
    /// Channels with bytes in SCTP (`in_sctp > 0`), so the window's refresh reads only those.
    busy: SmallVec<[usize; 4]>,
    /// Must be drained at the mesh's next poll: written to, or input arrived while packets
    /// wait in the queue.
    due: bool,
    /// SCTP took packets since the last drain.
    unsent: bool,
    /// The latest time given to the `Rtc`.
    clock: Instant,
    /// The largest message the remote accepts (its SDP `a=max-message-size`, RFC 8841).
    max_message_size: usize,
    /// Packets str0m refused for good (see [`PeerStats::packets_write_failed`]).
    write_failed: u64,
    /// The selected pair, the kinds of both ends, and where the peer is heard (see [`path`]).
    path: Path,
    recovery: Recovery,
    counters: Counters,
    /// The peer's `tracing` span (a child of the mesh's).
    span: tracing::Span,
    guard: Guard,
    /// Datagrams to send, drained by the mesh.
    transmits: VecDeque<Transmit>,
    /// What the mesh must act on or pass to the application, drained by the mesh.
    events: VecDeque<LinkEvent>,
    /// The mesh's counters this link added to (the mesh sums them: see [`Link::counts`]).
    counts: LinkCounts,
    /// rtcmesh's own retransmission of the reliable channels (when both ends offer it).
    reliable: Reliable,
}

impl Link {
    /// Creates the connection; on the offering side, its offer is the first event.
    pub fn new(
        now: Instant,
        peer: PeerId,
        role: Role,
        lifetime_ms: u16,
        setup: LinkSetup<'_>,
    ) -> Result<Link, AddPeerError> {
        let Handshake {
            rtc,
            channels,
            negotiation,
            offer,
        } = Link::handshake(now, role, lifetime_ms, &setup)?;
        let mut path = Path::default();
        for &addr in setup.host_addresses {
            path.add_local(addr, CandidateKind::Host);
        }
        for c in setup.gathered {
            path.add_local(c.addr(), c.kind().into());
        }
        let span = crate::trace::peer_span(setup.span, peer);
        let mut link = Link {
            peer,
            rtc,
            role,
            negotiation,
            lifetime_ms,
            channels,
            connected: false,
            opening: false,
            lost: None,
            deadlines: Deadlines::new(
                now,
                crate::limits::deadline(now, setup.config.connect_timeout),
            ),
            held: HeldCandidates::default(),
            offer_hash: 0,
            remote_session: 0,
            remote_ufrag: 0,
            rtc_deadline: None,
            timeouts: Timeouts::of(setup.config),
            queue: SendQueue::default(),
            window: SendWindow::new(
                setup.config.sctp_send_buffer_min,
                setup.config.sctp_send_buffer,
            ),
            busy: SmallVec::new(),
            due: false,
            unsent: false,
            clock: now,
            max_message_size: negotiation::DEFAULT_MAX_MESSAGE_SIZE,
            write_failed: 0,
            path,
            recovery: Recovery::default(),
            counters: Counters::default(),
            span,
            guard: Guard::new(setup.config),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counts: LinkCounts::default(),
            reliable: Reliable::new(setup.config, setup.layout),
        };
        if let Some(offer) = offer {
            link.signal(offer);
        }
        Ok(link)
    }

    /// The peer's id.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Host migration: the peer goes by `peer` from now on, over the same connection. Its
    /// role (who offers) stays as it was, so both ends keep agreeing on it.
    pub fn rename(&mut self, peer: PeerId, mesh_span: &tracing::Span) {
        self.peer = peer;
        self.span = crate::trace::peer_span(mesh_span, peer);
    }

    /// Which side of the SDP exchange this link is.
    #[cfg(test)]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing the mesh must act on or pass on.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// Gives back the output queues' memory once the mesh drained them (it drains after every
    /// input, so they are empty between inputs). Called on the link's timer, not per packet: a
    /// burst reuses them, an idle peer holds none (about 1.4 KiB per peer otherwise).
    fn release_output_buffers(&mut self) {
        if self.transmits.is_empty() {
            self.transmits = VecDeque::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
    }

    /// The mesh's counters this link added to since it was created (datagrams it sent, packets
    /// it delivered, what its guard refused, ...): the mesh's totals are its own plus these.
    pub fn counts(&self) -> &LinkCounts {
        &self.counts
    }

    /// Whether this peer's `Rtc` claims the datagram (ICE credentials or a known address).
    pub fn accepts(&self, input: &Input<'_>) -> bool {
        self.rtc.accepts(input)
    }

    /// Whether a datagram that reached this link from a new address may go on to str0m (see
    /// [`Guard::admit_source`]).
    pub fn admit_source(&mut self, source: SocketAddr) -> bool {
        self.guard.admit_source(source)
    }

    /// Feeds a datagram this peer accepted (`contents` its raw bytes; `input`'s source is the
    /// peer's address, also when it came through our TURN allocation). `false` if str0m
    /// refused it (counted by the caller).
    pub fn handle_receive(&mut self, now: Instant, input: Input<'_>, contents: &[u8]) -> bool {
        let source = match &input {
            Input::Receive(_, r) => Some(r.source),
            Input::Timeout(_) => None,
        };
        // The offerer reached us (str0m accepts only datagrams of this connection): it has our
        // answer, so its candidates go to str0m before its check does (a check from a
        // candidate str0m does not know yet would make a peer-reflexive one of it).
        self.release_held();
        let ok = self.rtc.handle_input(input).is_ok();
        if ok {
            self.deadlines.heard(now);
            self.clock = self.clock.max(now);
            self.counters.datagrams_received += 1;
            self.counters.bytes_received += contents.len() as u64;
            if let Some(source) = source {
                self.path.on_receive(now, source, contents);
                for c in self.path.revive(source) {
                    self.rtc.add_remote_candidate(c);
                }
            }
        }
        self.drive(now);
        if ok && self.connected && self.lost.is_none() {
            // Heard from a new address: the peer may have moved (a NAT rebinding).
            self.recover(now);
        }
        ok
    }

    /// The once-per-turn drain of a due link (called by the mesh at its next poll): brings
    /// the `Rtc` to `now` (SCTP times round trips, retransmissions and lifetimes from its
    /// clock), moves what the window has room for from the queue, and drains str0m once for
    /// everything written since the last drain. What still waits in the queue moves when
    /// acknowledgements make room (input leaves the link due again).
    pub fn flush(&mut self, now: Instant) {
        let mut drain = self.unsent;
        if now > self.clock {
            self.clock = now;
            drain = true;
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                self.due = false;
                self.end(Loss::Closed);
                return;
            }
        }
        if !self.queue.is_empty() {
            drain |= self.flush_queue(now);
        }
        drain |= self.flush_reliable(now, drain);
        if drain {
            self.drive(now);
        }
        // Nothing new for str0m (a poll now would only repeat SCTP's walk), or drained.
        self.due = false;
    }

    /// Whether the link must be drained at the mesh's next poll.
    pub fn is_due(&self) -> bool {
        self.due
    }

    /// The largest packet this peer accepts (its `a=max-message-size`).
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Whether all channels opened and the peer was reported connected.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether all channels are open and the transport is connected.
    fn is_ready(&self) -> bool {
        self.channels.iter().all(|c| c.open) && self.reliable.ready() && self.rtc.is_connected()
    }

    /// Channels open so far.
    pub fn open_channels(&self) -> usize {
        self.channels.iter().filter(|c| c.open).count()
    }

    /// Channels in the layout.
    pub fn total_channels(&self) -> usize {
        self.channels.len()
    }

    /// When the peer was last heard from (or the link created).
    pub fn last_heard(&self) -> Instant {
        self.deadlines.last_heard()
    }

    /// Whether a datagram from `remote` arrived at or after `since`.
    pub fn heard_since(&self, remote: SocketAddr, since: Instant) -> bool {
        self.path.heard_since(remote, since)
    }

    /// Records why the link is ending in its trace.
    pub fn trace_end(&self, reason: Loss) {
        match reason {
            Loss::Removed => crate::trace::removed(&self.span),
            Loss::Closed => crate::trace::closed(&self.span),
            other => crate::trace::lost(&self.span, other.reason()),
        }
    }

    /// Starts a graceful close (SCTP abort, DTLS close_notify); what it sends is queued.
    pub fn close(&mut self) {
        let _ = self.rtc.close();
        self.drain(None);
        self.rtc.disconnect();
    }

    /// Ends the link (once): the mesh removes it.
    fn end(&mut self, loss: Loss) {
        if self.lost.is_none() {
            self.lost = Some(loss);
            self.events.push_back(LinkEvent::Lost(loss));
        }
    }

    /// Queues a signal for the peer.
    fn signal(&mut self, signal: Signal) {
        self.events
            .push_back(LinkEvent::App(Event::Signal(OutgoingSignal {
                to: self.peer,
                signal,
            })));
    }

    /// Drains str0m's output after any input.
    fn drive(&mut self, now: Instant) {
        self.due = false;
        self.unsent = false;
        self.drain(Some(now));
        if std::mem::take(&mut self.recovery.recheck_nat) {
            self.events.push_back(LinkEvent::RecheckNat);
        }
        if std::mem::take(&mut self.opening)
            && !self.connected
            && self.lost.is_none()
            && self.is_ready()
        {
            self.connected = true;
            if let Some(path) = self.path.selected() {
                self.path.tell(path);
            }
            crate::trace::connected(&self.span);
            self.events.push_back(LinkEvent::Connected);
        }
        // Input may have made room for queued packets: they move at the next poll, once for
        // everything this turn brings, as the application's own writes do. So do
        // acknowledgements and retransmissions of rtcmesh's own retransmission.
        self.due = !self.queue.is_empty() || self.reliable.wants_flush(now);
        if !self.rtc.is_alive() {
            self.end(Loss::Closed);
        }
    }

    /// Drains str0m's output; with `now`, acting on it (without, only the datagrams: a
    /// closing link's goodbyes).
    fn drain(&mut self, now: Option<Instant>) {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.rtc_deadline = Some(at);
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    let t = Transmit {
                        destination: t.destination,
                        source: t.source,
                        contents: t.contents.into(),
                    };
                    if let Some(now) = now {
                        if self.on_transmit(now, &t) {
                            self.reliable.on_path_change(now);
                            self.on_new_path();
                        }
                    }
                    self.transmits.push_back(t);
                }
                Ok(Output::Event(event)) => {
                    if let Some(now) = now {
                        self.on_event(now, event);
                    }
                }
                Err(_) => {
                    self.rtc_deadline = None;
                    if now.is_some() {
                        self.end(Loss::Closed);
                    }
                    return;
                }
            }
        }
    }

    fn channel_index(&self, id: ChannelId) -> Option<usize> {
        self.channels.iter().position(|c| c.id == Some(id))
    }

    fn on_event(&mut self, now: Instant, event: RtcEvent) {
        match event {
            RtcEvent::ChannelData(data) if self.reliable.is_channel(data.id) => {
                self.on_reliable_message(now, data.data);
            }
            RtcEvent::ChannelOpen(id, _) if self.reliable.is_channel(id) => {
                self.reliable.on_open();
                self.opening = true;
            }
            RtcEvent::ChannelClose(id) if self.reliable.is_channel(id) => self.end(Loss::Closed),
            RtcEvent::ChannelData(data) => match self.channel_index(data.id) {
                Some(_) if !self.guard.fits_packet_size(data.data.len()) => {
                    self.counts.packets_too_large += 1;
                }
                Some(index) => {
                    let ch = &mut self.channels[index];
                    let spec = ch.spec;
                    self.counts.packets_received += 1;
                    ch.stats.packets_received += 1;
                    ch.stats.bytes_received += data.data.len() as u64;
                    self.events.push_back(LinkEvent::App(Event::Packet(Packet {
                        from: self.peer,
                        channel: spec.transfer_channel,
                        mode: spec.mode,
                        data: data.data,
                    })));
                }
                None => self.counts.packets_unknown_channel += 1,
            },
            RtcEvent::ChannelOpen(id, _label) => match self.channel_index(id) {
                Some(index) => {
                    self.channels[index].open = true;
                    self.opening = true;
                }
                // Opened in-band by the remote (DCEP): not part of the layout.
                None => {
                    self.rtc.direct_api().close_data_channel(id);
                    self.counts.channels_refused += 1;
                    if self.guard.refuse_channel() == RefusedChannel::CloseAndEnd
                        && self.lost.is_none()
                    {
                        self.counts.peers_disconnected_for_abuse += 1;
                        self.end(Loss::Abuse);
                    }
                }
            },
            RtcEvent::Connected => self.opening = true,
            // Godot removes a peer when any of its channels closes.
            RtcEvent::ChannelClose(id) if self.channel_index(id).is_some() => {
                self.end(Loss::Closed);
            }
            RtcEvent::IceConnectionStateChange(state) => match state {
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    self.deadlines.ice_connected();
                    self.on_ice_connected();
                    self.reliable.on_path_change(now);
                }
                IceConnectionState::Disconnected if self.deadlines.ice_disconnected(now) => {
                    self.events.push_back(LinkEvent::RecheckNat);
                }
                _ => {}
            },
            RtcEvent::Closed => self.end(Loss::Closed),
            RtcEvent::PeerStats(stats) => {
                if let Some(pair) = stats.selected_candidate_pair {
                    if let Some(rtt) = pair.current_round_trip_time {
                        self.window.set_rtt(rtt);
                        self.reliable.set_ice_rtt(rtt);
                    }
                    if self.path.observe(pair.local.addr, pair.remote.addr) {
                        self.on_new_path();
                    }
                }
            }
            _ => {}
        }
    }
}
