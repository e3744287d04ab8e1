//! What a loop that is not async needs from a running endpoint: sends that never wait
//! ([`Handle::try_send`](crate::Handle::try_send)), the loop's state without a round trip
//! ([`Snapshot`]), and how it learns what became of its sends ([`SendReceipt`], [`SendStats`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtcmesh::{ConnectionStatus, MeshStats, PeerId, PendingEvents, PumpStats, SendError};
use tokio::sync::oneshot;

use crate::endpoint::Closed;

/// Why [`Handle::try_send`](crate::Handle::try_send) or
/// [`try_send_many`](crate::Handle::try_send_many) did not queue anything. `T` is what was
/// given, handed back so nothing is lost: send it again next frame, or drop it.
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig, SendError, Target, TransferMode};
/// use rtcmesh_tokio::{Endpoint, EndpointConfig, TrySendError};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (handle, _events) = Endpoint::spawn(EndpointConfig::default(), Mesh::create_mesh(2, MeshConfig::default())?).await?;
/// // What can never be sent is refused at once, without a trip to the loop.
/// let refused = handle.try_send(Target::Peer(1), TransferMode::Reliable, 9, b"x".to_vec());
/// assert!(matches!(refused, Err(TrySendError::Invalid { error: SendError::UnknownChannel(9), .. })));
/// handle.close();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// [`EndpointConfig::command_capacity`](crate::EndpointConfig::command_capacity) commands
    /// already wait for the loop (it is behind, or the machine is starved of CPU): nothing was
    /// queued. Send it again next frame, send less, or raise the capacity.
    Full(T),
    /// The endpoint has stopped (closed, or its socket failed): nothing will be sent any more.
    Closed(T),
    /// The packet can never be sent as given (empty, larger than
    /// [`Mesh::max_packet_size`](rtcmesh::Mesh::max_packet_size), a channel outside the
    /// layout, an invalid target id): refused at once, the loop never saw it.
    /// [`try_send_many`](crate::Handle::try_send_many) never returns this: each packet's own
    /// result is in its [`Reply`].
    Invalid {
        /// What the machine would have answered.
        error: SendError,
        /// The packet, as given.
        packet: T,
    },
}

impl<T> TrySendError<T> {
    /// What was given, back.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t) | TrySendError::Closed(t) => t,
            TrySendError::Invalid { packet, .. } => packet,
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str(
                "the endpoint's command queue is full (its loop is behind): send again next \
                 frame, send less, or raise EndpointConfig::command_capacity",
            ),
            TrySendError::Closed(_) => f.write_str("the rtcmesh endpoint has stopped"),
            TrySendError::Invalid { error, .. } => write!(f, "packet refused: {error}"),
        }
    }
}

impl<T: fmt::Debug> std::error::Error for TrySendError<T> {}

/// The loop's answer to a command queued without waiting
/// ([`Handle::try_send_many`](crate::Handle::try_send_many): each packet's result;
/// [`Handle::try_call`](crate::Handle::try_call): the closure's), there once the loop has run
/// it (on its next turn, usually within microseconds). A game looks on a later frame with
/// [`try_take`](Reply::try_take); async code can [`wait`](Reply::wait); dropping it is fine
/// ([`SendStats`] counts send results either way).
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig, SendError, Target, TransferMode};
/// use rtcmesh_tokio::{Endpoint, EndpointConfig, OutgoingPacket};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (handle, _events) = Endpoint::spawn(EndpointConfig::default(), Mesh::create_mesh(2, MeshConfig::default())?).await?;
/// let packet = OutgoingPacket { target: Target::Peer(7), mode: TransferMode::Reliable, channel: 0, data: b"hi".to_vec() };
/// let mut reply = handle.try_send_many(vec![packet])?; // returns at once
/// // A game looks again next frame; `None` means the loop has not run it yet.
/// if let Some(results) = reply.try_take() {
///     println!("{:?}", results?);
/// } else {
///     assert_eq!(reply.wait().await?, [Err(SendError::UnknownPeer(7))]); // async code can wait
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Reply<T> {
    answer: oneshot::Receiver<T>,
    taken: bool,
}

impl<T> Reply<T> {
    pub(crate) fn new(answer: oneshot::Receiver<T>) -> Self {
        Reply {
            answer,
            taken: false,
        }
    }

    /// The answer if the loop has run the command, once: `None` before that, and after it was
    /// taken. `Err(Closed)` if the endpoint stopped before running it.
    pub fn try_take(&mut self) -> Option<Result<T, Closed>> {
        if self.taken {
            return None;
        }
        let answer = match self.answer.try_recv() {
            Ok(answer) => Ok(answer),
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Err(oneshot::error::TryRecvError::Closed) => Err(Closed),
        };
        self.taken = true;
        Some(answer)
    }

    /// Waits for the answer (in async code). `Err(Closed)` if the endpoint stopped before
    /// running the command, or [`try_take`](Reply::try_take) already took it.
    pub async fn wait(self) -> Result<T, Closed> {
        if self.taken {
            return Err(Closed);
        }
        self.answer.await.map_err(|_| Closed)
    }
}

/// What became of the packets [`Handle`](crate::Handle)s gave the loop (every send method,
/// waiting or not), counted as it happens: a game that does not keep its [`Reply`]s still
/// sees a peer whose queue is full, or packets to a peer that left.
///
/// ```
/// # use rtcmesh_tokio::SendStats;
/// let stats = SendStats::default();
/// assert_eq!(stats.refused(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendStats {
    /// Packets the machine accepted.
    pub accepted: u64,
    /// Refused with [`SendError::QueueFull`]: the peer (or, for a broadcast, some peer) is
    /// slower than the sender. Send less to it, or again later.
    pub queue_full: u64,
    /// Refused because the target was not there: [`SendError::Disconnected`],
    /// [`UnknownPeer`](SendError::UnknownPeer), [`PeerNotConnected`](SendError::PeerNotConnected).
    pub not_connected: u64,
    /// Refused as too large: [`SendError::PacketTooLarge`] (by the machine: the multiplayer
    /// layer's framing makes its limit smaller than the mesh's) or
    /// [`PacketTooLargeForPeers`](SendError::PacketTooLargeForPeers).
    pub too_large: u64,
    /// Refused as invalid: empty, an unknown channel, an invalid target (by `try_send` at
    /// once, or by the machine), and any other refusal.
    pub invalid: u64,
    /// `try_send` / `try_send_many` calls that found the command queue full
    /// ([`TrySendError::Full`]): the loop is behind.
    pub command_queue_full: u64,
}

impl SendStats {
    /// Every packet refused, whatever the reason (not counting `command_queue_full`, whose
    /// packets were handed back).
    pub fn refused(&self) -> u64 {
        self.queue_full + self.not_connected + self.too_large + self.invalid
    }
}

/// [`SendStats`], shared between the loop and every handle.
#[derive(Debug, Default)]
pub(crate) struct SendCounters {
    accepted: AtomicU64,
    queue_full: AtomicU64,
    not_connected: AtomicU64,
    too_large: AtomicU64,
    invalid: AtomicU64,
    command_queue_full: AtomicU64,
}

impl SendCounters {
    pub(crate) fn count(&self, result: &Result<(), SendError>) {
        let counter = match result {
            Ok(()) => &self.accepted,
            Err(SendError::QueueFull(_)) => &self.queue_full,
            Err(
                SendError::Disconnected
                | SendError::UnknownPeer(_)
                | SendError::PeerNotConnected(_),
            ) => &self.not_connected,
            Err(SendError::PacketTooLarge { .. } | SendError::PacketTooLargeForPeers { .. }) => {
                &self.too_large
            }
            Err(_) => &self.invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_command_queue_full(&self) {
        self.command_queue_full.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> SendStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SendStats {
            accepted: get(&self.accepted),
            queue_full: get(&self.queue_full),
            not_connected: get(&self.not_connected),
            too_large: get(&self.too_large),
            invalid: get(&self.invalid),
            command_queue_full: get(&self.command_queue_full),
        }
    }
}

/// The machine's state as the loop last published it, read without a round trip to the loop
/// ([`Handle::snapshot`](crate::Handle::snapshot)): the loop publishes one at every turn,
/// before it hands that turn's events to [`Events`](crate::Events), so it is never older than
/// the events already read (a peer whose `PeerConnected` you read is in `connected_peers`).
/// With more than 64 peers, what looks at every peer (the peer lists and `mesh`, which sums the
/// peers' counters) is rewritten at most once a millisecond (5.5 µs per turn with 500 peers, a
/// third of what handling a datagram costs there), so it may lag the events by that much; the
/// rest is rewritten at every turn. For anything not
/// here (one peer's [`PeerStats`](rtcmesh::PeerStats), its path), use
/// [`Handle::try_call`](crate::Handle::try_call) or [`Handle::call`](crate::Handle::call).
///
/// ```
/// use rtcmesh::{ConnectionStatus, Mesh, MeshConfig};
/// use rtcmesh_tokio::{Endpoint, EndpointConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (handle, _events) = Endpoint::spawn(EndpointConfig::default(), Mesh::create_mesh(3, MeshConfig::default())?).await?;
/// let now = handle.snapshot(); // no await: a copy of what the loop published
/// assert_eq!(now.unique_id, 3);
/// assert_eq!(now.status, ConnectionStatus::Connected); // a mesh is connected from the start
/// assert!(now.connected_peers.is_empty());
/// println!("{} datagrams in, {} sends refused", now.mesh.datagrams_received, now.sends.refused());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The machine's own peer id.
    pub unique_id: PeerId,
    /// Godot's `get_connection_status`.
    pub status: ConnectionStatus,
    /// Every peer added, connected or not (Godot's `get_peers`), in ascending order.
    pub peers: Vec<PeerId>,
    /// The peers that are connected (`PeerConnected` emitted), in ascending order.
    pub connected_peers: Vec<PeerId>,
    /// The mesh's counters.
    pub mesh: MeshStats,
    /// The socket's counters. `receive_buffer_drops` is read from the kernel at most once a
    /// second (it costs a read of `/proc/net/udp`); [`Handle::stats`](crate::Handle::stats)
    /// reads it now.
    pub pump: PumpStats,
    /// What became of the packets handles gave the loop (read now, not at publication).
    pub sends: SendStats,
    /// Events (and packet bytes) waiting in the machine, not yet in
    /// [`Events`](crate::Events): above zero, the application is behind.
    pub pending: PendingEvents,
    /// Turns the loop has run (each wake-up: datagrams, a command, a timer).
    pub turns: u64,
    /// When the loop published it.
    pub published: Instant,
    /// The loop has stopped: this is its last snapshot, after the close.
    pub stopped: bool,
}

impl Snapshot {
    /// The first snapshot, before the loop's first turn.
    pub(crate) fn new(mesh: &rtcmesh::Mesh, now: Instant) -> Snapshot {
        Snapshot {
            unique_id: mesh.unique_id(),
            status: mesh.status(),
            peers: Vec::new(),
            connected_peers: Vec::new(),
            mesh: MeshStats::default(),
            pump: PumpStats::default(),
            sends: SendStats::default(),
            pending: PendingEvents::default(),
            turns: 0,
            published: now,
            stopped: false,
        }
    }

    /// Rewrites this snapshot in place from the machine (no allocation once the peer lists
    /// have grown to the peer count); what looks at every peer (the peer lists, the mesh's
    /// counters, which sum the peers') only when `every_peer` says so.
    pub(crate) fn update(
        &mut self,
        machine: &impl rtcmesh::Machine,
        pump: PumpStats,
        turns: u64,
        now: Instant,
        every_peer: bool,
    ) {
        let mesh = machine.mesh();
        self.unique_id = mesh.unique_id(); // host migration may give a client the server's id
        self.status = mesh.status();
        if every_peer {
            self.peers.clear();
            self.peers.extend(mesh.peers());
            self.connected_peers.clear();
            self.connected_peers.extend(mesh.connected_peers());
            self.mesh = mesh.stats();
        }
        self.pump = pump;
        self.pending = machine.pending_events();
        self.turns = turns;
        self.published = now;
    }
}

/// Up to this many peers, the loop rewrites the whole snapshot at every turn (well under a
/// microsecond); above, what looks at every peer at most once per [`EVERY_PEER_INTERVAL`]: it
/// costs 5.5 µs per turn with 500 peers (measured), a third of one datagram's handling there.
pub(crate) const EVERY_TURN_UP_TO: usize = 64;

/// How often what looks at every peer is rewritten above [`EVERY_TURN_UP_TO`] peers.
pub(crate) const EVERY_PEER_INTERVAL: Duration = Duration::from_millis(1);

/// When the loop rewrites the parts of the snapshot that look at every peer.
#[derive(Debug)]
pub(crate) struct EveryPeerClock {
    last: Option<Instant>,
}

impl EveryPeerClock {
    pub(crate) fn new() -> EveryPeerClock {
        EveryPeerClock { last: None }
    }

    /// Whether to rewrite them now, for a machine that had `peers` peers.
    pub(crate) fn due(&mut self, peers: usize, now: Instant) -> bool {
        let due = peers <= EVERY_TURN_UP_TO
            || self
                .last
                .is_none_or(|last| now.saturating_duration_since(last) >= EVERY_PEER_INTERVAL);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// What the loop shares with every handle: the published snapshot and the send counters.
#[derive(Debug)]
pub(crate) struct Shared {
    snapshot: Mutex<Snapshot>,
    pub(crate) sends: SendCounters,
}

impl Shared {
    pub(crate) fn new(snapshot: Snapshot) -> Shared {
        Shared {
            snapshot: Mutex::new(snapshot),
            sends: SendCounters::default(),
        }
    }

    /// The published snapshot, locked (the loop only holds the lock to rewrite it).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Snapshot> {
        // Nothing that holds the lock can panic half-way through a rewrite that matters: a
        // poisoned snapshot is still a snapshot.
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A guard that marks the snapshot stopped when dropped (when the loop ends, however).
    pub(crate) fn stop_on_drop(self: &Arc<Self>) -> StopOnDrop {
        StopOnDrop(self.clone())
    }

    /// A copy of the snapshot, with the send counters as they are now.
    pub(crate) fn read(&self) -> Snapshot {
        let mut snapshot = self.lock().clone();
        snapshot.sends = self.sends.read();
        snapshot
    }
}

/// Marks the published snapshot stopped when dropped.
pub(crate) struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
    }
}
