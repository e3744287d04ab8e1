//! One remote peer: its str0m `Rtc`, its channels, and its connect / loss state.
//!
//! The link is split along its concerns: [`negotiation`] (offer / answer, candidates, starting
//! over), [`queue`] (rtcmesh's own bounded send queue in front of SCTP), [`window`] (how much
//! SCTP may hold at a time), [`health`] (the deadlines that end or restart a link), [`guard`]
//! (what the remote may not make it hold) and [`stats`] (its counters). This file holds the
//! link itself and the loop that drains str0m's output into the mesh.
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
mod stats;
mod window;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use smallvec::SmallVec;
use str0m::channel::ChannelId;
use str0m::{Event as RtcEvent, IceConnectionState, Input, Output, Rtc};

use crate::channels::ChannelSpec;
use crate::demux::Route;
use crate::error::AddPeerError;
use crate::event::{Event, EventQueue, Packet, Transmit};
use crate::signal::Signal;
use crate::stats::MeshStats;
use crate::transfer::PeerId;

use guard::Guard;
pub(crate) use health::Limits;
pub(crate) use negotiation::LinkSetup;
use negotiation::{Handshake, Negotiation};
use queue::SendQueue;
pub(crate) use queue::WriteError;
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
    stats: ChannelStats,
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
    /// The remote went past a limit that ends the connection (channels outside the layout).
    Abuse,
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
    /// ICE just lost its connection (a NAT mapping may have changed: worth re-checking).
    pub ice_disconnected: bool,
    /// Packets wait in the queue and input may have made room: flush the link at the next
    /// poll.
    pub wrote: bool,
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
    /// Answering side: a hash of the offer applied, so a repeated offer is not taken as new.
    offer_hash: u64,
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
    guard: Guard,
    /// Where ICE sends and what the remote signalled (see [`path`]).
    paths: path::Paths,
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
            connect_deadline: crate::limits::deadline(now, setup.config.connect_timeout),
            answered_at: None,
            offer_hash: 0,
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
            guard: Guard::new(setup.config),
            paths: path::Paths::default(),
        };
        Ok((link, offer))
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
            self.clock = self.clock.max(now);
        }
        (ok, self.drive(now, sink))
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

    /// The link's counters.
    pub fn stats(&self, max_packet_size: usize) -> PeerStats {
        PeerStats {
            peer: self.peer,
            channels: self.channels.iter().map(|c| c.stats).collect(),
            packets_write_failed: self.write_failed,
            sctp_window: self.window.limit(),
            sctp_buffered: self.window.in_sctp(),
            round_trip_time: self.window.rtt(),
            max_packet_size: self.max_message_size.min(max_packet_size),
        }
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
                    sink.stats.datagrams_sent += 1;
                    self.paths.sent(t.source, t.destination, &t.contents);
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
                Some(_) if !self.fits_packet_size(data.data.len(), sink) => {}
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
                }
                IceConnectionState::Disconnected if self.ice_was_connected => {
                    self.ice_lost_at.get_or_insert(now);
                    progress.ice_disconnected = true;
                }
                _ => {}
            },
            RtcEvent::Closed => progress.lost = Some(Loss::Closed),
            RtcEvent::PeerStats(stats) => {
                let rtt = stats
                    .selected_candidate_pair
                    .and_then(|p| p.current_round_trip_time);
                if let Some(rtt) = rtt {
                    self.window.set_rtt(rtt);
                }
            }
            _ => {}
        }
    }
}
