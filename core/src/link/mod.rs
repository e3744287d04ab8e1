//! One remote peer: its str0m `Rtc`, its channels, and its connect / loss state.
//!
//! The link is split along its concerns: [`negotiation`] (offer / answer, candidates, starting
//! over), [`queue`] (rtcmesh's own bounded send queue in front of SCTP), [`window`] (how much
//! SCTP may hold at a time), [`health`] (the deadlines that end or restart a link), [`path`]
//! (the selected candidate pair, the kinds of its ends, and moved peers), [`restart`] (ICE
//! restart), [`stats`] (per-peer counters) and [`guard`] (what the remote may not make it
//! hold). This file holds the link itself and the loop that drains str0m's output into the
//! mesh.
//!
//! Writes do not drain: they mark the link dirty, and the mesh drains each dirty link once,
//! from its next `poll_transmit`, `poll_event` or `handle_timeout`. Every poll of str0m costs
//! sctp-proto a walk over everything it holds, so a burst of sends costs one poll instead of
//! one per packet.

mod guard;
mod health;
mod negotiation;
mod path;
mod queue;
mod restart;
mod stats;
mod window;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::channel::ChannelId;
use str0m::{Candidate, Event as RtcEvent, IceConnectionState, Input, Output, Rtc};

use crate::channels::ChannelSpec;
use crate::error::AddPeerError;
use crate::event::{Event, EventQueue, Packet, Transmit};
use crate::path::{CandidateKind, Route};
use crate::signal::Signal;
use crate::stats::MeshStats;
use crate::transfer::PeerId;

use guard::Guard;
pub(crate) use health::Timeouts;
pub(crate) use negotiation::LinkSetup;
use negotiation::{Handshake, Negotiation};
use path::Path;
use queue::SendQueue;
pub(crate) use queue::WriteError;
use restart::Recovery;
use stats::Counters;
pub use stats::{ChannelStats, PeerStats};
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
    /// The remote went past a limit that ends the connection (channels outside the layout).
    Abuse,
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
            Loss::Abuse => "opened more channels outside the layout than limits allow",
        }
    }
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
    /// ICE just lost its connection, an ICE restart began, or the peer moved: a NAT mapping
    /// may have changed (ours, or one on the way), worth re-checking at once, so the peer gets
    /// the new server-reflexive and relayed candidates (trickled, right after a restart's
    /// offer).
    pub recheck_nat: bool,
    /// Packets wait in the queue and input may have made room: flush the link at the next
    /// poll.
    pub wrote: bool,
    /// The peer moved away from this remote address: forget its routes.
    pub stale_remote: Option<SocketAddr>,
    /// An ICE restart that began then just ended: forget routes not heard from since.
    pub restarted_since: Option<Instant>,
}

impl Progress {
    /// Folds in what a later drive of the same link reported.
    fn absorb(&mut self, other: Progress) {
        self.connected |= other.connected;
        self.lost = self.lost.or(other.lost);
        self.retry |= other.retry;
        self.recheck_nat |= other.recheck_nat;
        self.wrote |= other.wrote;
        self.stale_remote = self.stale_remote.or(other.stale_remote);
        self.restarted_since = self.restarted_since.or(other.restarted_since);
    }
}

/// Outputs shared by every link of a mesh.
pub(crate) struct Sink<'a> {
    pub transmits: &'a mut VecDeque<Transmit>,
    pub events: &'a mut EventQueue,
    pub stats: &'a mut MeshStats,
}

/// The state of one remote peer.
pub(crate) struct Link {
    pub peer: PeerId,
    rtc: Rtc,
    /// This side makes the offers (its id is the larger).
    offers: bool,
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
    /// When the peer is given up if not connected (`None`: never).
    connect_deadline: Option<Instant>,
    /// Offering side: when the answer to the current offer was applied (the retry clock).
    answered_at: Option<Instant>,
    /// Answering side, from the first offer until the offerer's first datagram (or this
    /// time): its trickled candidates wait here, so no connectivity check of ours reaches the
    /// offerer before it can have our answer. libdatachannel (Godot's native stack) fails a
    /// connection whose checks complete while it is still applying the answer (see
    /// docs/interop.md); the wait is bounded for NATs that open only once both sides send.
    hold_until: Option<Instant>,
    held: Vec<Candidate>,
    /// Answering side: a hash of the offer applied, so a repeated offer is not taken as new.
    offer_hash: u64,
    /// The remote's SDP session id (`o=` line), to tell a renegotiation of this connection (an
    /// ICE restart) from a new connection (a handshake retry).
    remote_session: u64,
    /// The remote's ICE username fragment, to tell an ICE restart from other renegotiation.
    remote_ufrag: u64,
    /// When the last datagram from this peer arrived (or the link was created).
    last_heard: Instant,
    rtc_deadline: Option<Instant>,
    /// The deadline currently registered in the mesh's timers.
    pub scheduled: Option<Instant>,
    /// Routes learned for this peer, forgotten when it is removed.
    pub routes: SmallVec<[Route; 2]>,
    queue: SendQueue,
    window: SendWindow,
    /// Channels with bytes in SCTP (`in_sctp > 0`), so the window's refresh reads only those.
    busy: SmallVec<[usize; 4]>,
    /// On the mesh's list of links to flush at its next poll (written to, or input arrived
    /// while packets wait in the queue).
    pub dirty: bool,
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
    /// Path changes without a restart.
    moves: u64,
    /// The peer's `tracing` span (a child of the mesh's).
    span: tracing::Span,
    guard: Guard,
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
        let mut path = Path::default();
        for &addr in setup.host_addresses {
            path.add_local(addr, CandidateKind::Host);
        }
        for c in setup.gathered {
            path.add_local(c.addr(), c.kind().into());
        }
        let span = crate::trace::peer_span(setup.span, peer);
        let link = Link {
            peer,
            rtc,
            offers: setup.own_id > peer,
            negotiation,
            lifetime_ms,
            channels,
            announced: false,
            closing: false,
            ice_was_connected: false,
            ice_lost_at: None,
            connect_deadline: crate::limits::deadline(now, setup.config.connect_timeout),
            answered_at: None,
            hold_until: None,
            held: Vec::new(),
            offer_hash: 0,
            remote_session: 0,
            remote_ufrag: 0,
            last_heard: now,
            rtc_deadline: None,
            scheduled: None,
            routes: SmallVec::new(),
            queue: SendQueue::default(),
            window: SendWindow::new(
                setup.config.sctp_send_buffer_min,
                setup.config.sctp_send_buffer,
            ),
            busy: SmallVec::new(),
            dirty: false,
            unsent: false,
            clock: now,
            max_message_size: negotiation::DEFAULT_MAX_MESSAGE_SIZE,
            write_failed: 0,
            path,
            recovery: Recovery::default(),
            counters: Counters::default(),
            moves: 0,
            span,
            guard: Guard::new(setup.config),
        };
        Ok((link, offer))
    }

    /// Whether this peer's `Rtc` claims the datagram (ICE credentials or a known address).
    pub fn accepts(&self, input: &Input<'_>) -> bool {
        self.rtc.accepts(input)
    }

    /// Feeds a datagram this peer accepted (`contents` its raw bytes; `input`'s source is the
    /// peer's address, also when it came through our TURN allocation). `false` if str0m
    /// refused it (counted by the caller).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        input: Input<'_>,
        contents: &[u8],
        limits: Timeouts,
        sink: &mut Sink<'_>,
    ) -> (bool, Progress) {
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
            self.last_heard = self.last_heard.max(now);
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
        let mut progress = self.drive(now, sink);
        if ok && self.announced && progress.lost.is_none() {
            // Heard from a new address: the peer may have moved (a NAT rebinding).
            self.recover(now, limits, &mut progress, sink);
        }
        (ok, progress)
    }

    /// The once-per-turn drain of a dirty link (called by the mesh at its next poll): brings
    /// the `Rtc` to `now` (SCTP times round trips, retransmissions and lifetimes from its
    /// clock), moves what the window has room for from the queue, and drains str0m once for
    /// everything written since the last drain.
    pub fn flush(&mut self, now: Instant, sink: &mut Sink<'_>) -> Progress {
        let mut drain = self.unsent;
        if now > self.clock {
            self.clock = now;
            drain = true;
            if self.rtc.handle_input(Input::Timeout(now)).is_err() {
                self.dirty = false;
                return Progress {
                    lost: Some(Loss::Closed),
                    ..Progress::default()
                };
            }
        }
        if !self.queue.is_empty() {
            drain |= self.flush_queue(now, sink.stats);
        }
        if !drain {
            // Nothing new for str0m: a poll now would only repeat SCTP's walk.
            self.dirty = false;
            return Progress::default();
        }
        let mut progress = self.drive(now, sink);
        // What still waits moves when acknowledgements make room (input marks the link again).
        progress.wrote = false;
        progress
    }

    /// The largest packet this peer accepts (its `a=max-message-size`).
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
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

    /// When the peer was last heard from (or the link created).
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// Whether a datagram from `remote` arrived at or after `since`.
    pub fn heard_since(&self, remote: SocketAddr, since: Instant) -> bool {
        self.path.heard_since(remote, since)
    }

    /// The peer was just reported connected.
    pub fn on_announced(&mut self) {
        if let Some(path) = self.path.selected() {
            self.path.tell(path);
        }
        crate::trace::connected(&self.span);
    }

    /// Records why the link is ending in its trace.
    pub fn trace_end(&self, reason: Loss) {
        match reason {
            Loss::Removed => crate::trace::removed(&self.span),
            Loss::Closed => crate::trace::closed(&self.span),
            other => crate::trace::lost(&self.span, other.reason()),
        }
    }

    /// Starts a graceful close (SCTP abort, DTLS close_notify) and drains what it sends.
    pub fn close(&mut self, sink: &mut Sink<'_>) {
        let _ = self.rtc.close();
        self.drain(None, sink);
        self.rtc.disconnect();
    }

    /// Drains str0m's output after any input.
    fn drive(&mut self, now: Instant, sink: &mut Sink<'_>) -> Progress {
        self.dirty = false;
        self.unsent = false;
        let mut progress = Progress::default();
        self.drain(Some((now, &mut progress)), sink);
        progress.recheck_nat |= std::mem::take(&mut self.recovery.recheck_nat);
        // Input may have made room for queued packets: they move at the next poll, once for
        // everything this turn brings, as the application's own writes do.
        progress.wrote = !self.queue.is_empty();
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
                    let t = Transmit {
                        destination: t.destination,
                        source: t.source,
                        contents: t.contents.into(),
                    };
                    if let Some((now, progress)) = progress.as_mut() {
                        if self.on_transmit(*now, &t) {
                            self.on_new_path(progress, sink);
                        }
                    }
                    sink.transmits.push_back(t);
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
                Some(_) if !self.fits_packet_size(data.data.len(), sink) => {}
                Some(index) => {
                    let ch = &mut self.channels[index];
                    let spec = ch.spec;
                    sink.stats.packets_received += 1;
                    ch.stats.packets_received += 1;
                    ch.stats.bytes_received += data.data.len() as u64;
                    sink.events.push_back(Event::Packet(Packet {
                        from: self.peer,
                        channel: spec.transfer_channel,
                        mode: spec.mode,
                        data: data.data,
                    }));
                }
                None => sink.stats.packets_unknown_channel += 1,
            },
            RtcEvent::ChannelOpen(id, _label) => match self.channel_index(id) {
                Some(index) => {
                    self.channels[index].open = true;
                    progress.connected |= !self.announced && self.is_ready();
                }
                // Opened in-band by the remote (DCEP): not part of the layout.
                None => self.refuse_channel(id, progress, sink),
            },
            RtcEvent::Connected => progress.connected |= !self.announced && self.is_ready(),
            // Godot removes a peer when any of its channels closes.
            RtcEvent::ChannelClose(id) if self.channel_index(id).is_some() => {
                progress.lost = Some(Loss::Closed);
            }
            RtcEvent::IceConnectionStateChange(state) => match state {
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    self.ice_was_connected = true;
                    self.ice_lost_at = None;
                    self.on_ice_connected();
                }
                IceConnectionState::Disconnected if self.ice_was_connected => {
                    self.ice_lost_at.get_or_insert(now);
                    progress.recheck_nat = true;
                }
                _ => {}
            },
            RtcEvent::Closed => progress.lost = Some(Loss::Closed),
            RtcEvent::PeerStats(stats) => {
                if let Some(pair) = stats.selected_candidate_pair {
                    if let Some(rtt) = pair.current_round_trip_time {
                        self.window.set_rtt(rtt);
                    }
                    if self.path.observe(pair.local.addr, pair.remote.addr) {
                        self.on_new_path(progress, sink);
                    }
                }
            }
            _ => {}
        }
    }
}
