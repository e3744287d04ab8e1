//! Host migration: when the server leaves or is lost, the player the lobby elects becomes peer
//! 1 and the others follow it, keeping their ids (docs/host-migration.md).
//!
//! The lobby decides (it sees a crashed server's connection close, and it is the one party
//! every member trusts); this layer carries the decision out:
//!
//! * **A client** whose server is replaced drops (or, after a graceful leave, drains) its link
//!   to the old server and connects to the new peer 1. Meanwhile its status is `Connecting`,
//!   peer 1 stays in its peer list, its reliable sends are held (bounded) and go to the new
//!   server, its unreliable ones are dropped and counted.
//! * **The successor** becomes the server (its id `X` becomes 1, its mesh a server's) and
//!   re-admits the survivors within the rejoin window, holding what is sent to those not back
//!   yet; then it removes the rest (DEL_PEER) and tells each survivor the roster is complete.
//! * **The server** keeps its opted-in clients sure it is alive (a keepalive when it sent
//!   nothing else), and on [`leave`](Multiplayer::leave) hands over gracefully: fences on
//!   every reliable channel, so nothing sent before the hand-over is lost.
//!
//! Everything here is off unless [`MigrationConfig::enabled`] is set, the lobby said it can
//! migrate, and the peer concerned opted in: private SYS commands never reach a plain Godot
//! peer, whose `_process_sys` would fail on them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

use smallvec::SmallVec;

use super::wire::{self, Migration as Command};
use super::{Multiplayer, MultiplayerEvent, Route};
use crate::error::{AddPeerError, PromoteError, SendError};
use crate::event::{Event, Packet};
use crate::limits::deadline;
use crate::lobby::{ApplyError, LobbyClient, LobbyEvent};
use crate::transfer::{ConnectionStatus, Mode, PeerId, Target, TransferMode, SERVER_ID};

#[cfg(doc)]
use super::MigrationConfig;

/// Why the server is changing (in [`MultiplayerEvent::HostMigrating`]).
///
/// ```
/// # use rtcmesh::*;
/// fn why(event: &MultiplayerEvent) -> Option<&'static str> {
///     match event {
///         MultiplayerEvent::HostMigrating { reason: MigrationReason::Left, .. } => Some("host left"),
///         MultiplayerEvent::HostMigrating { .. } => Some("host lost"),
///         _ => None,
///     }
/// }
/// assert_eq!(why(&MultiplayerEvent::HostMigrating { epoch: 0, reason: MigrationReason::Lost }), Some("host lost"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MigrationReason {
    /// The server handed over (it called [`Multiplayer::leave`]): nothing it sent is lost.
    Left,
    /// The server crashed, lost power or was cut off: what was in flight to or from it is lost
    /// (see [`MultiplayerStats::host_lost_bytes`](crate::MultiplayerStats::host_lost_bytes)).
    Lost,
}

/// What the lobby server must be told, from [`MultiplayerEvent::ToLobby`]: send it on the
/// lobby connection (`rtcmesh::lobby::LobbyClient` has a frame for each).
///
/// ```
/// # use rtcmesh::*;
/// fn to_lobby(request: LobbyRequest) -> String {
///     match request {
///         LobbyRequest::HostLost { epoch } => format!("HOST_LOST epoch {epoch}"),
///         LobbyRequest::HandOver { to, epoch } => format!("HOST_CHANGE to {to:?}, epoch {epoch}"),
///         other => format!("{other:?}"),
///     }
/// }
/// assert_eq!(to_lobby(LobbyRequest::HostLost { epoch: 3 }), "HOST_LOST epoch 3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LobbyRequest {
    /// This client heard nothing from its server for `host_timeout`, or lost its connection:
    /// the lobby decides whether the server is gone.
    HostLost {
        /// The epoch of the server that went silent.
        epoch: u32,
    },
    /// This server is leaving and every opted-in client drained it: the lobby should make
    /// `to` the server (`None`: the next in its line, when this server had no client to
    /// hand over to).
    HandOver {
        /// The successor this server chose ([`Multiplayer::successor`]).
        to: Option<PeerId>,
        /// The epoch that ends.
        epoch: u32,
    },
}

/// Why [`Multiplayer::host_changed`] refused a change of server.
///
/// ```
/// # use rtcmesh::*;
/// let mut game = Multiplayer::new(Mesh::create_client(4, MeshConfig::default())?, MultiplayerConfig::default());
/// let now = std::time::Instant::now();
/// assert_eq!(game.host_changed(now, 1, 5), Err(MigrationError::Disabled));
/// # Ok::<(), CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MigrationError {
    /// [`MigrationConfig::enabled`] is off.
    Disabled,
    /// Only client/server games migrate (this is a mesh-mode game).
    NotClientServer,
    /// The epoch is not newer than the current one: a late or repeated message.
    StaleEpoch {
        /// The epoch given.
        epoch: u32,
        /// This peer's epoch.
        current: u32,
    },
    /// The new server's former id is not a valid client id (`2..=2147483647`).
    InvalidHost(PeerId),
    /// The multiplayer layer was closed.
    Closed,
    /// Connecting to the new server failed.
    AddPeer(AddPeerError),
    /// Becoming the server failed.
    Promote(PromoteError),
}

impl fmt::Display for MigrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationError::Disabled => f.write_str(
                "host migration is off: enable MultiplayerConfig::migration to follow a new server",
            ),
            MigrationError::NotClientServer => {
                f.write_str("host migration needs a client/server game, not mesh mode")
            }
            MigrationError::StaleEpoch { epoch, current } => write!(
                f,
                "host change for epoch {epoch} ignored: this peer is at epoch {current} already"
            ),
            MigrationError::InvalidHost(id) => write!(
                f,
                "{id} cannot become the server: a former client id is in 2..=2147483647"
            ),
            MigrationError::Closed => f.write_str("the multiplayer layer is closed"),
            MigrationError::AddPeer(e) => write!(f, "could not connect to the new server: {e}"),
            MigrationError::Promote(e) => write!(f, "could not become the server: {e}"),
        }
    }
}

impl std::error::Error for MigrationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MigrationError::AddPeer(e) => Some(e),
            MigrationError::Promote(e) => Some(e),
            _ => None,
        }
    }
}

/// A reliable `send_bytes` held while the server changes.
#[derive(Debug)]
struct Held {
    target: Target,
    channel: u16,
    bytes: Vec<u8>,
}

/// A framed packet the new server holds for a survivor still reconnecting.
#[derive(Debug)]
struct Waiting {
    mode: TransferMode,
    channel: u16,
    frame: Vec<u8>,
}

/// A client's change of server, from the first sign until the new server admitted it (or
/// this peer became the server).
#[derive(Debug)]
struct Switch {
    reason: MigrationReason,
    /// When it gives up (`MigrationFailed`).
    deadline: Option<Instant>,
    /// The lobby's decision: the new epoch and the new server's former id.
    target: Option<(u32, PeerId)>,
    /// Graceful: the reliable channels whose `HostDone` arrived from the old server.
    done: BTreeSet<u16>,
    /// Nothing more will come from the old server (all `HostDone`, its link gone, or it was
    /// lost rather than leaving).
    drained: bool,
    /// The old server's link, renamed to the new server's former id while it drains.
    retiring: Option<PeerId>,
    /// A client: the link to the new peer 1 exists. The successor: promoted.
    dialed: bool,
    /// A client: the new peer 1 admitted it.
    connected: bool,
    /// When the link to the new peer 1 was made.
    dialed_at: Option<Instant>,
    /// The new peer 1 was reported unreachable to the lobby.
    reported: bool,
    /// Datagrams received from the new peer 1 at the last check, and since when.
    heard: Option<(u64, Instant)>,
    /// Packets for the application that arrived from the new side before the switch was
    /// announced, delivered right after it.
    early: VecDeque<Packet>,
    early_bytes: usize,
}

impl Switch {
    fn new(reason: MigrationReason, deadline: Option<Instant>) -> Switch {
        Switch {
            reason,
            deadline,
            target: None,
            done: BTreeSet::new(),
            drained: reason == MigrationReason::Lost,
            retiring: None,
            dialed: false,
            connected: false,
            dialed_at: None,
            reported: false,
            heard: None,
            early: VecDeque::new(),
            early_bytes: 0,
        }
    }
}

/// Where migration stands on this peer.
#[derive(Debug, Default)]
enum Phase {
    #[default]
    Steady,
    /// The server called `leave`: it waits for every opted-in client's `Stopped` on every
    /// reliable channel (or the deadline).
    Leaving {
        successor: PeerId,
        waiting: BTreeMap<PeerId, BTreeSet<u16>>,
        deadline: Option<Instant>,
    },
    /// The old server sent `HostDone` and asked the lobby to hand over: it closes once its
    /// clients went, the lobby confirmed, or at the deadline.
    HandedOver { deadline: Option<Instant> },
    /// A client (or the successor) changes server.
    Switching(Box<Switch>),
}

/// The new server's wait for the survivors.
#[derive(Debug, Default)]
struct Rejoin {
    /// When the survivors still missing are removed; `None` once the window closed.
    deadline: Option<Instant>,
    /// Survivors not back yet.
    expected: BTreeSet<PeerId>,
    /// What waits for them.
    waiting: BTreeMap<PeerId, VecDeque<Waiting>>,
    /// Opted-in survivors admitted in the window: they get the roster when it closes.
    admitted: Vec<PeerId>,
}

/// The migration state of a [`Multiplayer`].
#[derive(Debug, Default)]
pub(super) struct MigrationState {
    /// The lobby said it can migrate this game.
    lobby: bool,
    epoch: u32,
    /// Peers the lobby marked as opted in, in the order it announced them (join order).
    opted_in: Vec<PeerId>,
    /// A client: the successor its server named last.
    named_successor: Option<PeerId>,
    /// The lobby's line of succession (eligible members, the next host first), if it sent one.
    succession: Vec<PeerId>,
    /// `add_peer`'s lifetime for the peers the layer adds itself (the last one given).
    lifetime: Option<i32>,
    phase: Phase,
    /// A client: reliable sends held while the server changes, and their bytes.
    held: VecDeque<Held>,
    held_bytes: usize,
    /// The new server: survivors reconnecting.
    rejoin: Rejoin,
    waiting_bytes: usize,
    /// A survivor: relayed peers the new server has not announced yet; those it never
    /// announces are gone when its roster arrives.
    unconfirmed: BTreeSet<PeerId>,
    /// A client: datagrams received from the server at the last check, and when that count
    /// last changed.
    heard: Option<(u64, Instant)>,
    /// A client: the silent server was reported to the lobby.
    reported: bool,
    /// The server: datagrams sent to each opted-in client at the last keepalive tick.
    sent: BTreeMap<PeerId, u64>,
    /// The next keepalive tick (server) or liveness check (client).
    next_tick: Option<Instant>,
    /// The status the layer reported itself at the end of a switch: the mesh's own report of
    /// it, if it follows, is not repeated.
    reported_status: Option<ConnectionStatus>,
}

impl MigrationState {
    pub fn is_switching(&self) -> bool {
        matches!(self.phase, Phase::Switching(_))
    }

    fn switch(&self) -> Option<&Switch> {
        match &self.phase {
            Phase::Switching(s) => Some(s),
            _ => None,
        }
    }

    fn switch_mut(&mut self) -> Option<&mut Switch> {
        match &mut self.phase {
            Phase::Switching(s) => Some(s),
            _ => None,
        }
    }

    /// A client's link to its new server is gone before it was admitted.
    pub fn new_server_gone(&self, mesh: &crate::mesh::Mesh) -> bool {
        self.switch().is_some_and(|s| s.dialed) && !mesh.has_peer(SERVER_ID)
    }

    /// A client's link to its new server is up and not admitted yet.
    pub fn awaits_new_server(&self) -> bool {
        self.switch().is_some_and(|s| s.dialed && !s.connected)
    }

    /// The old server's link while it drains under another id.
    pub fn retiring(&self) -> Option<PeerId> {
        self.switch().and_then(|s| s.retiring)
    }

    pub fn opted_in(&self, peer: PeerId) -> bool {
        self.opted_in.contains(&peer)
    }

    /// A survivor still reconnecting to this new server.
    pub fn expects(&self, peer: PeerId) -> bool {
        self.rejoin.expected.contains(&peer)
    }
}

impl Multiplayer {
    /// The lobby said whether it can migrate this game (its HELLO `migrate/1`). Until it
    /// does, the layer behaves as without migration.
    pub fn set_lobby_migrates(&mut self, migrates: bool) {
        self.migration.lobby = migrates;
        self.pump();
    }

    /// The lobby marked `peer` as opted in to host migration (or not): only such peers get
    /// the private SYS commands. The order of these calls is the lobby's join order, which
    /// [`successor`](Multiplayer::successor) follows.
    pub fn set_peer_migrates(&mut self, peer: PeerId, migrates: bool) {
        let known = self.migration.opted_in.iter().position(|&p| p == peer);
        match (known, migrates) {
            (None, true) => self.migration.opted_in.push(peer),
            (Some(i), false) => {
                self.migration.opted_in.remove(i);
            }
            _ => {}
        }
    }

    /// Whether the lobby marked `peer` as opted in.
    pub fn peer_migrates(&self, peer: PeerId) -> bool {
        self.migration.opted_in(peer)
    }

    /// The migration epoch: 0 until the first change of server, then the lobby's count.
    pub fn epoch(&self) -> u32 {
        self.migration.epoch
    }

    /// Whether this server called [`leave`](Multiplayer::leave) and is handing over (it sends
    /// nothing more, and closes once its clients moved to the successor).
    pub fn is_leaving(&self) -> bool {
        self.has_left()
    }

    /// Whether the server is changing (between `HostMigrating` and `HostMigrated`,
    /// `BecameHost` or `MigrationFailed`).
    pub fn is_migrating(&self) -> bool {
        self.migration.is_switching()
    }

    /// Who takes over if this server leaves: the first client in the lobby's line of
    /// succession it has admitted (without a line: the earliest-joined opted-in client, the
    /// lobby's own rule). On a client, the successor its server named last. Send it a snapshot of the game before [`leave`](Multiplayer::leave): it
    /// arrives before `BecameHost`.
    pub fn successor(&self) -> Option<PeerId> {
        let admitted = |p: &PeerId| *p != SERVER_ID && self.peers.get(p) == Some(&Route::Direct);
        match self.mesh.mode() {
            // The lobby's line when it sent one (eligible members only), else join order.
            Mode::Server if !self.migration.succession.is_empty() => {
                self.migration.succession.iter().copied().find(admitted)
            }
            Mode::Server => self.migration.opted_in.iter().copied().find(admitted),
            Mode::Client => self
                .migration
                .named_successor
                .or_else(|| self.migration.succession.first().copied()),
            Mode::Mesh => None,
        }
    }

    /// This server called `leave` and is handing over: it sends nothing more.
    pub(super) fn has_left(&self) -> bool {
        matches!(
            self.migration.phase,
            Phase::Leaving { .. } | Phase::HandedOver { .. }
        )
    }

    fn migration_on(&self) -> bool {
        self.config.migration.enabled
            && self.migration.lobby
            && self.mesh.is_server_relay_supported()
    }

    /// Leaves the game. A server with migration on and an opted-in client to take over hands
    /// over gracefully: every opted-in client receives everything sent before (and relayed
    /// through) this server, then the lobby is asked to make [`successor`](Multiplayer::successor)
    /// the server ([`MultiplayerEvent::ToLobby`]), and this side closes once the clients
    /// moved (at most `migration_timeout` later). A server with migration on and no client
    /// admitted yet asks the lobby to pick the next in line (`to: None`) and closes. Anything
    /// else is [`close`](Multiplayer::close).
    pub fn leave(&mut self, now: Instant) {
        self.observe(now);
        let successor = self.successor();
        let (true, Mode::Server, Some(successor), Phase::Steady) = (
            self.migration_on(),
            self.mesh.mode(),
            successor,
            &self.migration.phase,
        ) else {
            if self.has_left() {
                return;
            }
            if self.migration_on()
                && self.mesh.mode() == Mode::Server
                && !self.migration.is_switching()
            {
                // No client to hand over to (none admitted yet): the lobby picks the next in
                // line, and the members still joining follow it.
                let epoch = self.migration.epoch;
                self.events
                    .push_back(MultiplayerEvent::ToLobby(LobbyRequest::HandOver {
                        to: None,
                        epoch,
                    }));
            }
            self.close();
            return;
        };
        let clients: SmallVec<[PeerId; 16]> = self
            .direct_peers()
            .filter(|&p| self.migration.opted_in(p))
            .collect();
        let epoch = self.migration.epoch;
        for &client in &clients {
            self.fence(client, Command::HostLeaving, successor, epoch);
        }
        self.migration.phase = Phase::Leaving {
            successor,
            waiting: clients.iter().map(|&c| (c, BTreeSet::new())).collect(),
            deadline: deadline(now, self.config.migration.host_timeout),
        };
        self.pump();
    }

    /// The lobby changed the server: from `epoch` on, the player that had the id `was` is
    /// peer 1. On that player this layer becomes the server (`BecameHost`); on the others it
    /// connects to the new server (`HostMigrated` once admitted). On a server that left, it
    /// completes the hand-over; on a server that was replaced while cut off, it steps down
    /// (`MigrationFailed`, then `Disconnected`).
    pub fn host_changed(
        &mut self,
        now: Instant,
        epoch: u32,
        was: PeerId,
    ) -> Result<(), MigrationError> {
        self.observe(now);
        let result = self.try_host_changed(now, epoch, was);
        self.pump();
        result
    }

    fn try_host_changed(
        &mut self,
        now: Instant,
        epoch: u32,
        was: PeerId,
    ) -> Result<(), MigrationError> {
        if !self.config.migration.enabled {
            return Err(MigrationError::Disabled);
        }
        if !self.mesh.is_server_relay_supported() {
            return Err(MigrationError::NotClientServer);
        }
        if self.closed() {
            return Err(MigrationError::Closed);
        }
        let current = self.migration.epoch;
        if epoch <= current {
            return Err(MigrationError::StaleEpoch { epoch, current });
        }
        if was <= SERVER_ID {
            return Err(MigrationError::InvalidHost(was));
        }
        self.migration.lobby = true;
        if self.mesh.mode() == Mode::Server {
            self.migration.epoch = epoch;
            if self.has_left() {
                // The lobby confirms the hand-over. This server still closes only once its
                // clients drained it (what it relayed last may be on its way again after a
                // loss), or at the deadline.
                return Ok(());
            }
            // Replaced while it was cut off: it steps down.
            self.migration.phase = Phase::Steady;
            self.events
                .push_back(MultiplayerEvent::MigrationFailed { epoch: current });
            self.close();
            return Ok(());
        }
        let own = self.mesh.unique_id();
        if !self.migration.is_switching() {
            self.begin_switch(now, MigrationReason::Lost);
        }
        let Some(switch) = self.migration.switch_mut() else {
            return Err(MigrationError::Closed);
        };
        let previous = switch.target.replace((epoch, was));
        // Each decision of the lobby gives the switch its full time again.
        switch.deadline = deadline(now, self.config.migration.migration_timeout);
        if let Some((_, dead)) = previous {
            // The successor named before is gone too (it died during the migration): it left
            // the game, and its link (as peer 1) goes.
            switch.dialed = false;
            switch.connected = false;
            self.mesh.disconnect_peer(SERVER_ID, true);
            if dead != own {
                self.events
                    .push_back(MultiplayerEvent::PeerDisconnected(dead));
            }
        }
        self.migration.epoch = epoch;
        if was == own {
            self.promote(now)?;
        } else {
            self.dial(now, was)?;
        }
        self.try_complete();
        Ok(())
    }

    /// Starts a change of server on a client: from now on its status is `Connecting` and
    /// its sends are held.
    fn begin_switch(&mut self, now: Instant, reason: MigrationReason) {
        let timeout = self.config.migration.migration_timeout;
        self.migration.phase =
            Phase::Switching(Box::new(Switch::new(reason, deadline(now, timeout))));
        self.events.push_back(MultiplayerEvent::HostMigrating {
            epoch: self.migration.epoch,
            reason,
        });
        self.events
            .push_back(MultiplayerEvent::Mesh(Event::StatusChanged(
                ConnectionStatus::Connecting,
            )));
    }

    /// Lets go of the old server's link: renamed to `keep_as` to drain (a graceful leave not
    /// drained yet), or dropped, counting what it never acknowledged.
    fn release_old_server(&mut self, keep_as: PeerId) {
        let Some(switch) = self.migration.switch() else {
            return;
        };
        let (drained, lost) = (switch.drained, switch.reason == MigrationReason::Lost);
        if !self.mesh.has_peer(SERVER_ID) {
            return;
        }
        if !drained && self.mesh.rename_peer(SERVER_ID, keep_as).is_ok() {
            if let Some(s) = self.migration.switch_mut() {
                s.retiring = Some(keep_as);
            }
            return;
        }
        if lost {
            self.count_lost_to_server();
        }
        self.mesh.disconnect_peer(SERVER_ID, true);
    }

    /// What the lost server never acknowledged: bytes waiting in rtcmesh's queue for it and
    /// in SCTP.
    fn count_lost_to_server(&mut self) {
        if let Some(stats) = self.mesh.peer_stats(SERVER_ID) {
            let unacked = stats.queued_bytes + stats.sctp_buffered;
            self.stats.host_lost_bytes += unacked as u64;
        }
    }

    /// A survivor connects to the new server (former id `was`).
    fn dial(&mut self, now: Instant, was: PeerId) -> Result<(), MigrationError> {
        if self.peers.get(&was) == Some(&Route::Relayed) {
            // No PeerDisconnected: the player is peer 1 now (HostMigrated says so).
            self.peers.remove(&was);
        }
        let has_new_link = self.migration.switch().is_some_and(|s| s.dialed);
        if has_new_link {
            return Ok(());
        }
        self.release_old_server(was);
        // Those the new server does not announce before its roster are gone.
        self.migration.unconfirmed = self
            .peers
            .iter()
            .filter(|&(_, &r)| r == Route::Relayed)
            .map(|(&p, _)| p)
            .collect();
        let lifetime = self.migration.lifetime.unwrap_or(1);
        let result = self.mesh.add_peer(now, SERVER_ID, lifetime);
        self.pump();
        result.map_err(MigrationError::AddPeer)?;
        if let Some(s) = self.migration.switch_mut() {
            s.dialed = true;
            s.dialed_at = Some(now);
            s.reported = false;
            s.heard = None;
        }
        Ok(())
    }

    /// The successor becomes the server: id 1, and a connection offered to every survivor.
    fn promote(&mut self, now: Instant) -> Result<(), MigrationError> {
        let own = self.mesh.unique_id();
        let keep = self.migration.switch().is_some_and(|s| !s.drained);
        let lost = self
            .migration
            .switch()
            .is_some_and(|s| s.reason == MigrationReason::Lost);
        self.pending.remove(SERVER_ID);
        self.forget_pending(SERVER_ID);
        if lost && !keep {
            self.count_lost_to_server();
        }
        self.mesh
            .promote_to_server(now, keep)
            .map_err(MigrationError::Promote)?;
        self.pump();
        if let Some(s) = self.migration.switch_mut() {
            s.dialed = true;
            s.connected = true;
            if keep {
                s.retiring = Some(own);
            }
        }
        self.peers.remove(&SERVER_ID);
        let survivors: Vec<PeerId> = self.peers.keys().copied().collect();
        let lifetime = self.migration.lifetime.unwrap_or(1);
        let window = self.config.migration.rejoin_window;
        self.migration.rejoin = Rejoin {
            deadline: deadline(now, window),
            expected: survivors.iter().copied().collect(),
            waiting: BTreeMap::new(),
            admitted: Vec::new(),
        };
        for survivor in survivors {
            // The survivors offer (their ids are larger); a failure leaves it to the window.
            if !self.mesh.has_peer(survivor) {
                let _ = self.mesh.add_peer(now, survivor, lifetime);
            }
        }
        self.pump();
        Ok(())
    }

    /// Announces the end of a switch once the lobby decided, the new link is up and the old
    /// server is drained.
    fn try_complete(&mut self) {
        let Some(switch) = self.migration.switch() else {
            return;
        };
        let Some((epoch, was)) = switch.target else {
            return;
        };
        if !(switch.connected && switch.drained) {
            return;
        }
        let Phase::Switching(switch) = std::mem::take(&mut self.migration.phase) else {
            return;
        };
        if let Some(retiring) = switch.retiring {
            self.mesh.disconnect_peer(retiring, true);
        }
        let became_host = self.mesh.mode() == Mode::Server;
        self.events.push_back(if became_host {
            MultiplayerEvent::BecameHost { epoch, was }
        } else {
            MultiplayerEvent::HostMigrated { epoch, was }
        });
        self.events
            .push_back(MultiplayerEvent::Mesh(Event::StatusChanged(
                ConnectionStatus::Connected,
            )));
        self.migration.reported_status = Some(ConnectionStatus::Connected);
        for packet in switch.early {
            self.deliver(packet);
        }
        let held = std::mem::take(&mut self.migration.held);
        self.migration.held_bytes = 0;
        for Held {
            target,
            channel,
            bytes,
        } in held
        {
            let target = retarget(target, was, became_host);
            let Some(target) = target else {
                self.stats.migration_dropped += 1;
                continue;
            };
            if self
                .try_send_bytes(target, TransferMode::Reliable, channel, &bytes)
                .is_err()
            {
                self.stats.migration_dropped += 1;
            }
        }
        if became_host {
            self.check_rejoin_complete();
        }
    }

    /// A client gives up on a change of server: everyone is reported gone and the layer
    /// closes.
    fn fail_switch(&mut self) {
        let epoch = self.migration.epoch;
        self.events
            .push_back(MultiplayerEvent::MigrationFailed { epoch });
        self.close();
    }

    /// The mesh reported the server's link gone. Returns whether migration takes it (no
    /// PeerDisconnected, relayed peers kept): a migratable server lost, or the old one of a
    /// switch under way.
    pub(super) fn on_server_link_lost(&mut self, now: Option<Instant>) -> bool {
        if self.mesh.has_peer(SERVER_ID) {
            // A handshake retry of the same connection, not a loss.
            return false;
        }
        let epoch = self.migration.epoch;
        if let Some(switch) = self.migration.switch_mut() {
            if !switch.dialed {
                switch.drained = true;
            } else {
                // The new server went before it admitted us: the lobby decides what next.
                switch.connected = false;
                switch.dialed = false;
                if !std::mem::replace(&mut switch.reported, true) {
                    self.events
                        .push_back(MultiplayerEvent::ToLobby(LobbyRequest::HostLost { epoch }));
                }
            }
            self.try_complete();
            return true;
        }
        let migratable = self.migration_on()
            && self.mesh.mode() == Mode::Client
            && self.migration.opted_in(SERVER_ID)
            && matches!(self.migration.phase, Phase::Steady)
            && self.peers.get(&SERVER_ID) == Some(&Route::Direct);
        if !migratable {
            return false;
        }
        let Some(now) = now.or(self.last_now) else {
            return false;
        };
        self.begin_switch(now, MigrationReason::Lost);
        let epoch = self.migration.epoch;
        if !std::mem::replace(&mut self.migration.reported, true) {
            self.events
                .push_back(MultiplayerEvent::ToLobby(LobbyRequest::HostLost { epoch }));
        }
        true
    }

    /// The mesh reported the retiring server's link gone: it is drained.
    pub(super) fn on_retiring_lost(&mut self) {
        if let Some(switch) = self.migration.switch_mut() {
            switch.retiring = None;
            switch.drained = true;
        }
        self.try_complete();
    }

    /// Whether a mesh event is about migration's own business and must not reach the
    /// application as is: status changes while switching (the layer reports its own), and
    /// anything about the retiring link.
    pub(super) fn hides(&mut self, event: &Event) -> bool {
        if let Event::StatusChanged(status) = event {
            // The layer reported this one itself when the switch ended.
            if let Some(reported) = self.migration.reported_status.take() {
                if reported == *status {
                    return true;
                }
            }
        }
        let Some(switch) = self.migration.switch() else {
            return false;
        };
        match event {
            Event::StatusChanged(_) => true,
            Event::PeerLost { id, .. } => Some(*id) == switch.retiring || *id == SERVER_ID,
            _ => false,
        }
    }

    /// A direct peer was admitted while migration is under way: the new server admitting a
    /// survivor. Returns whether it was a silent re-admission.
    pub(super) fn on_admitted(&mut self, peer: PeerId) -> bool {
        if self.mesh.mode() == Mode::Client && peer == SERVER_ID {
            if let Some(switch) = self.migration.switch_mut() {
                if switch.dialed {
                    switch.connected = true;
                }
                self.try_complete();
                return true;
            }
            return false;
        }
        if self.mesh.mode() != Mode::Server {
            return false;
        }
        if !self.migration.rejoin.expected.remove(&peer) {
            // A client admitted outside a rejoin window: it knows every peer now (the
            // ADD_PEERs just went out). One that reconnected forgets those that left meanwhile.
            if self.migration_on() && self.migration.opted_in(peer) {
                self.send_migration(peer, Command::Roster, 0);
            }
            return false;
        }
        // ADD_PEER went out in `admit`; then what waited for it, in order.
        for w in self
            .migration
            .rejoin
            .waiting
            .remove(&peer)
            .unwrap_or_default()
        {
            self.migration.waiting_bytes -= w.frame.len();
            if self
                .mesh
                .send(Target::Peer(peer), w.mode, w.channel, &w.frame)
                .is_err()
            {
                self.stats.migration_dropped += 1;
            }
        }
        if self.migration.opted_in(peer) {
            if self.migration.rejoin.deadline.is_some() {
                self.migration.rejoin.admitted.push(peer);
            } else {
                self.send_migration(peer, Command::Roster, 0);
            }
        }
        self.check_rejoin_complete();
        true
    }

    /// Closes the rejoin window once every survivor is back.
    fn check_rejoin_complete(&mut self) {
        if self.migration.rejoin.deadline.is_some()
            && self.migration.rejoin.expected.is_empty()
            && !self.migration.is_switching()
        {
            self.close_rejoin_window();
        }
    }

    /// The rejoin window is over: survivors not back are gone (DEL_PEER to the others), and
    /// those back get the roster.
    fn close_rejoin_window(&mut self) {
        self.migration.rejoin.deadline = None;
        let missing = std::mem::take(&mut self.migration.rejoin.expected);
        for (_, waiting) in std::mem::take(&mut self.migration.rejoin.waiting) {
            self.stats.migration_dropped += waiting.len() as u64;
        }
        self.migration.waiting_bytes = 0;
        for peer in missing {
            self.pending.remove(peer);
            self.mesh.disconnect_peer(peer, true);
            if self.peers.contains_key(&peer) {
                self.drop_direct(peer, true);
            }
        }
        for peer in std::mem::take(&mut self.migration.rejoin.admitted) {
            if self.peers.get(&peer) == Some(&Route::Direct) {
                self.send_migration(peer, Command::Roster, 0);
            }
        }
    }

    /// A survivor learns that the new server announced `peer`.
    pub(super) fn confirmed(&mut self, peer: PeerId) {
        self.migration.unconfirmed.remove(&peer);
    }

    /// A send made while the server changes: held if reliable (within `held_bytes`), else
    /// dropped and counted.
    pub(super) fn hold_for_new_server(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        bytes: &[u8],
    ) -> Result<(), SendError> {
        let reliable = if channel == 0 {
            mode == TransferMode::Reliable
        } else {
            self.channel_is_reliable(channel)
        };
        if !reliable {
            self.stats.migration_dropped += 1;
            return Ok(());
        }
        let limit = self.config.migration.held_bytes;
        if self.migration.held_bytes + bytes.len() > limit {
            return Err(SendError::QueueFull(vec![SERVER_ID]));
        }
        self.migration.held_bytes += bytes.len();
        self.migration.held.push_back(Held {
            target,
            channel,
            bytes: bytes.to_vec(),
        });
        self.stats.migration_held += 1;
        Ok(())
    }

    /// The new server's former id, once the lobby named it during a switch.
    pub(super) fn migration_target(&self) -> Option<PeerId> {
        self.migration
            .switch()
            .and_then(|s| s.target)
            .map(|(_, was)| was)
    }

    /// The new server: a framed packet for a survivor still reconnecting waits for it
    /// (reliable ones, within `held_bytes`); returns whether it was taken.
    pub(super) fn wait_for_survivor(
        &mut self,
        peer: PeerId,
        mode: TransferMode,
        channel: u16,
        frame: &[u8],
    ) -> bool {
        if !self.migration.expects(peer) {
            return false;
        }
        let reliable = if channel == 0 {
            mode == TransferMode::Reliable
        } else {
            self.channel_is_reliable(channel)
        };
        if !reliable
            || self.migration.waiting_bytes + frame.len() > self.config.migration.held_bytes
        {
            self.stats.migration_dropped += 1;
            return true;
        }
        self.migration.waiting_bytes += frame.len();
        self.migration
            .rejoin
            .waiting
            .entry(peer)
            .or_default()
            .push_back(Waiting {
                mode,
                channel,
                frame: frame.to_vec(),
            });
        self.stats.migration_held += 1;
        true
    }

    /// Survivors still reconnecting (the new server), in id order.
    pub(super) fn expected_survivors(&self) -> SmallVec<[PeerId; 16]> {
        self.migration.rejoin.expected.iter().copied().collect()
    }

    /// Whether a packet for the application must wait until the switch is announced.
    pub(super) fn defer(&mut self, packet: Packet) -> Option<Packet> {
        let limit = self.config.migration.held_bytes;
        let Some(switch) = self.migration.switch_mut().filter(|s| s.dialed) else {
            return Some(packet);
        };
        if switch.early_bytes + packet.data.len() > limit {
            self.stats.migration_dropped += 1;
            return None;
        }
        switch.early_bytes += packet.data.len();
        switch.early.push_back(packet);
        None
    }

    /// Extra channel `channel` (1..) is reliable; channel 0 is reliable when sent so.
    fn channel_is_reliable(&self, channel: u16) -> bool {
        channel > 0
            && self
                .mesh
                .channels_config()
                .get(usize::from(channel) - 1)
                .is_some_and(|&m| m == TransferMode::Reliable)
    }

    /// The reliable transfer channels: 0 and the extra channels configured reliable.
    fn reliable_channels(&self) -> SmallVec<[u16; 4]> {
        let extra = self.mesh.channels_config().len();
        std::iter::once(0)
            .chain((1..=extra as u16).filter(|&c| self.channel_is_reliable(c)))
            .collect()
    }

    /// Sends a migration command once on every reliable channel (a fence).
    fn fence(&mut self, to: PeerId, command: Command, peer: PeerId, epoch: u32) {
        let bytes = wire::migration(command, peer, epoch);
        for channel in self.reliable_channels() {
            if self
                .mesh
                .send(Target::Peer(to), TransferMode::Reliable, channel, &bytes)
                .is_err()
            {
                self.stats.send_failed += 1;
            }
        }
    }

    /// Sends one migration command, reliably on channel 0.
    fn send_migration(&mut self, to: PeerId, command: Command, peer: PeerId) {
        let bytes = wire::migration(command, peer, self.migration.epoch);
        self.send_sys(to, &bytes);
    }

    /// A migration command arrived from `from` (a direct peer, admitted).
    pub(super) fn on_migration(
        &mut self,
        from: PeerId,
        command: Command,
        peer: PeerId,
        epoch: u32,
        channel: u16,
        mode: TransferMode,
    ) {
        let client = self.mesh.mode() == Mode::Client;
        let allowed = self.config.migration.enabled
            && self
                .migration
                .opted_in(if client { SERVER_ID } else { from })
            && match command {
                Command::Stopped | Command::ClientAlive => !client,
                _ => client && from == SERVER_ID,
            };
        if !allowed {
            self.stats.migration_refused += 1;
            return;
        }
        let reliable = mode == TransferMode::Reliable;
        match command {
            Command::HostAlive if epoch >= self.migration.epoch => {
                self.migration.epoch = epoch;
                self.migration.named_successor = (peer > SERVER_ID).then_some(peer);
            }
            Command::HostLeaving if reliable && epoch == self.migration.epoch => {
                self.migration.named_successor = (peer > SERVER_ID).then_some(peer);
                if !self.migration.is_switching() {
                    let now = self.last_now.unwrap_or_else(Instant::now);
                    self.begin_switch(now, MigrationReason::Left);
                    // Everything this client sent came before; nothing more follows.
                    self.fence(SERVER_ID, Command::Stopped, 0, epoch);
                }
            }
            Command::HostDone if reliable && epoch == self.migration.epoch => {
                self.old_server_done(channel)
            }
            Command::Roster
                if epoch == self.migration.epoch
                    && self.migration.switch().is_none_or(|s| s.dialed) =>
            {
                for gone in std::mem::take(&mut self.migration.unconfirmed) {
                    if self.peers.get(&gone) == Some(&Route::Relayed) {
                        self.peers.remove(&gone);
                        self.events
                            .push_back(MultiplayerEvent::PeerDisconnected(gone));
                    }
                }
            }
            Command::Stopped if reliable => self.client_stopped(from, channel),
            // Its acknowledgement was the point.
            Command::ClientAlive => {}
            _ => self.stats.migration_refused += 1,
        }
    }

    /// `HostDone` on `channel`, from the old server (as 1 or renamed).
    fn old_server_done(&mut self, channel: u16) {
        let needed = self.reliable_channels().len();
        let Some(switch) = self.migration.switch_mut() else {
            self.stats.migration_refused += 1;
            return;
        };
        switch.done.insert(channel);
        if switch.done.len() >= needed {
            switch.drained = true;
        }
        self.try_complete();
    }

    /// A leaving server: `Stopped` from a client on `channel`.
    fn client_stopped(&mut self, client: PeerId, channel: u16) {
        let needed = self.reliable_channels().len();
        let Phase::Leaving { waiting, .. } = &mut self.migration.phase else {
            self.stats.migration_refused += 1;
            return;
        };
        if let Some(channels) = waiting.get_mut(&client) {
            channels.insert(channel);
            if channels.len() >= needed {
                waiting.remove(&client);
            }
        }
        if waiting.is_empty() {
            self.finish_leaving();
        }
    }

    /// Every client stopped (or the wait is over): `HostDone` after everything relayed, then
    /// the lobby is asked to hand over.
    fn finish_leaving(&mut self) {
        let Phase::Leaving { successor, .. } = self.migration.phase else {
            return;
        };
        let epoch = self.migration.epoch;
        let clients: SmallVec<[PeerId; 16]> = self
            .direct_peers()
            .filter(|&p| self.migration.opted_in(p))
            .collect();
        for client in clients {
            self.fence(client, Command::HostDone, successor, epoch);
        }
        let timeout = self.config.migration.migration_timeout;
        self.migration.phase = Phase::HandedOver {
            deadline: self.last_now.and_then(|now| deadline(now, timeout)),
        };
        self.events
            .push_back(MultiplayerEvent::ToLobby(LobbyRequest::HandOver {
                to: Some(successor),
                epoch,
            }));
    }

    /// A packet from the old server draining under its new name: processed as the server's,
    /// delivered at once (it precedes the switch).
    pub(super) fn on_retiring_packet(&mut self, packet: Packet) {
        let Packet {
            channel,
            mode,
            data,
            ..
        } = packet;
        match wire::decode(&data) {
            Ok(wire::Message::Raw(payload)) => {
                self.stats.packets_received += 1;
                self.events.push_back(MultiplayerEvent::Packet(Packet {
                    from: SERVER_ID,
                    channel,
                    mode,
                    data: payload.to_vec(),
                }));
            }
            Ok(wire::Message::Relay { peer, inner }) if peer > SERVER_ID => {
                if wire::is_sys(inner) {
                    self.stats.spoof_attempts += 1;
                } else if let Ok(wire::Message::Raw(payload)) = wire::decode(inner) {
                    self.stats.packets_received += 1;
                    self.events.push_back(MultiplayerEvent::Packet(Packet {
                        from: peer,
                        channel,
                        mode,
                        data: payload.to_vec(),
                    }));
                } else {
                    self.stats.malformed += 1;
                }
            }
            Ok(wire::Message::Migration {
                command: Command::HostDone,
                epoch,
                ..
            }) if mode == TransferMode::Reliable && epoch + 1 >= self.migration.epoch => {
                self.old_server_done(channel)
            }
            // The old server's peer exchange is over: the new server's roster decides.
            Ok(_) => self.stats.migration_refused += 1,
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// What is due at `now`: keepalives, liveness, the ends of waits.
    pub(super) fn migration_timeout(&mut self, now: Instant) {
        if !self.config.migration.enabled {
            return;
        }
        match &self.migration.phase {
            Phase::Leaving { deadline, .. } if deadline.is_some_and(|d| d <= now) => {
                self.finish_leaving()
            }
            Phase::HandedOver { deadline } => {
                let over = deadline.is_some_and(|d| d <= now);
                if over || self.direct_peers().next().is_none() {
                    self.migration.phase = Phase::Steady;
                    self.close();
                }
            }
            Phase::Switching(s) if s.deadline.is_some_and(|d| d <= now) => self.fail_switch(),
            _ => {}
        }
        if self.migration.rejoin.deadline.is_some_and(|d| d <= now)
            && !self.migration.is_switching()
        {
            self.close_rejoin_window();
        }
        if self.migration.next_tick.is_none_or(|t| t <= now) {
            self.tick(now);
        }
    }

    /// The periodic part: a server's keepalives, a client's liveness check.
    fn tick(&mut self, now: Instant) {
        let config = &self.config.migration;
        let (interval, host_timeout) = (config.keepalive_interval, config.host_timeout);
        if !self.migration_on() || self.closed() {
            self.migration.next_tick = None;
            return;
        }
        match self.mesh.mode() {
            Mode::Server if matches!(self.migration.phase, Phase::Steady) => {
                let successor = self.successor().unwrap_or(0);
                let clients: SmallVec<[PeerId; 16]> = self
                    .direct_peers()
                    .filter(|&p| self.migration.opted_in(p))
                    .collect();
                let mut sent = BTreeMap::new();
                for client in clients {
                    let count = self.mesh.peer_stats(client).map_or(0, |s| s.datagrams_sent);
                    if self.migration.sent.get(&client) == Some(&count) {
                        let bytes =
                            wire::migration(Command::HostAlive, successor, self.migration.epoch);
                        if self
                            .mesh
                            .send(Target::Peer(client), TransferMode::Unreliable, 0, &bytes)
                            .is_err()
                        {
                            self.stats.send_failed += 1;
                        }
                    }
                    sent.insert(client, count);
                }
                self.migration.sent = sent;
                self.migration.next_tick = deadline(now, interval);
            }
            Mode::Client if self.migration.is_switching() => {
                // The new server the lobby named is not reachable: it may have died or lost
                // power in the meantime. The lobby decides (it probes it). Only once nothing
                // came from it for twice `host_timeout`: a handshake that is merely slow (a
                // lost DTLS flight waits 1 s, then 2 s) must not be started over, as the
                // lobby's answer to a live server would.
                let epoch = self.migration.epoch;
                let count = self
                    .mesh
                    .peer_stats(SERVER_ID)
                    .map_or(0, |s| s.datagrams_received);
                if let Some(switch) = self.migration.switch_mut() {
                    if switch.heard.is_none_or(|(seen, _)| seen != count) {
                        switch.heard = Some((count, now));
                    }
                    let window = host_timeout.saturating_mul(2);
                    let passed = |at: Option<Instant>| {
                        at.and_then(|at| deadline(at, window))
                            .is_some_and(|d| d <= now)
                    };
                    let stuck = switch.dialed
                        && !switch.connected
                        && !switch.reported
                        && passed(switch.dialed_at)
                        && passed(switch.heard.map(|(_, at)| at));
                    if stuck {
                        switch.reported = true;
                        self.events
                            .push_back(MultiplayerEvent::ToLobby(LobbyRequest::HostLost { epoch }));
                    }
                }
                self.migration.next_tick = deadline(now, (host_timeout / 4).max(interval));
            }
            Mode::Client
                if self.migration.opted_in(SERVER_ID)
                    && !self.migration.is_switching()
                    && self.peers.get(&SERVER_ID) == Some(&Route::Direct) =>
            {
                let (count, sent) = self
                    .mesh
                    .peer_stats(SERVER_ID)
                    .map_or((0, 0), |s| (s.datagrams_received, s.datagrams_sent));
                // Silence must mean a lost server, not one whose own packets wait for SCTP's
                // retransmission timeout (a lost flight on a new connection costs 3 s): a
                // client that sent nothing for an interval sends a keepalive, which the server
                // acknowledges whatever it waits to send.
                if self.migration.sent.get(&SERVER_ID) == Some(&sent) {
                    let bytes = wire::migration(Command::ClientAlive, 0, self.migration.epoch);
                    if self
                        .mesh
                        .send(Target::Peer(SERVER_ID), TransferMode::Unreliable, 0, &bytes)
                        .is_err()
                    {
                        self.stats.send_failed += 1;
                    }
                }
                self.migration.sent = BTreeMap::from([(SERVER_ID, sent)]);
                match self.migration.heard {
                    Some((seen, _)) if seen != count => {
                        self.migration.heard = Some((count, now));
                        self.migration.reported = false;
                    }
                    Some((_, since))
                        if deadline(since, host_timeout).is_some_and(|d| d <= now)
                            && !self.migration.reported =>
                    {
                        self.migration.reported = true;
                        let epoch = self.migration.epoch;
                        self.events
                            .push_back(MultiplayerEvent::ToLobby(LobbyRequest::HostLost { epoch }));
                    }
                    Some(_) => {}
                    None => self.migration.heard = Some((count, now)),
                }
                self.migration.next_tick = deadline(now, (host_timeout / 4).max(interval));
            }
            _ => self.migration.next_tick = deadline(now, interval),
        }
    }

    /// When [`migration_timeout`](Multiplayer::migration_timeout) must run next.
    pub(super) fn migration_deadline(&self) -> Option<Instant> {
        if !self.config.migration.enabled {
            return None;
        }
        let phase = match &self.migration.phase {
            Phase::Leaving { deadline, .. } | Phase::HandedOver { deadline } => *deadline,
            Phase::Switching(s) => s.deadline,
            Phase::Steady => None,
        };
        let tick = if self.migration_on() && !self.closed() {
            self.migration.next_tick.or(self.last_now)
        } else {
            None
        };
        // The rejoin window closes once the switch ended (`migration_timeout`); until then its
        // deadline is no reason to wake up.
        let rejoin = self
            .migration
            .rejoin
            .deadline
            .filter(|_| !self.migration.is_switching());
        [phase, rejoin, tick].into_iter().flatten().min()
    }

    /// [`Machine::apply_lobby`](crate::Machine::apply_lobby) for the multiplayer layer: with
    /// migration on, the lobby's migration events drive it; everything else is what
    /// [`LobbyClient::apply`] does.
    pub(super) fn apply_lobby_event(
        &mut self,
        lobby: &LobbyClient,
        event: &LobbyEvent,
        now: Instant,
        lifetime: i32,
    ) -> Result<(), ApplyError> {
        if !self.config.migration.enabled {
            return LobbyClient::apply(event, self, now, lifetime);
        }
        let migrate = |r: Result<(), MigrationError>| r.map_err(ApplyError::Migration);
        match event {
            LobbyEvent::Hello { migration } => {
                self.set_lobby_migrates(*migration);
                Ok(())
            }
            LobbyEvent::PeerJoined(id) => {
                self.set_peer_migrates(*id, lobby.peer_migrates(*id));
                LobbyClient::apply(event, self, now, lifetime)
            }
            LobbyEvent::Succession { epoch, line } => {
                self.migration.epoch = self.migration.epoch.max(*epoch);
                self.migration.succession.clone_from(line);
                Ok(())
            }
            LobbyEvent::HostChanged { was, epoch } => migrate(self.host_changed(now, *epoch, *was)),
            LobbyEvent::BecameHost { was, epoch } => {
                let result = self.host_changed(now, *epoch, *was);
                // The lobby announces the members this server now serves, and who opted in.
                self.migration.opted_in.clear();
                migrate(result)
            }
            LobbyEvent::NoLongerHost { successor, epoch } => {
                migrate(self.host_changed(now, *epoch, *successor))
            }
            _ => LobbyClient::apply(event, self, now, lifetime),
        }
    }

    /// A new server in its rejoin window takes in a survivor it did not know of (the old
    /// server had not announced it yet) when it offers: the lobby vouches for it.
    pub(super) fn welcome(&mut self, now: Instant, from: PeerId, signal: &crate::signal::Signal) {
        let rejoining = self.mesh.mode() == Mode::Server
            && self.migration.rejoin.deadline.is_some()
            && matches!(signal, crate::signal::Signal::Offer(_))
            && from > SERVER_ID
            && !self.mesh.has_peer(from);
        if rejoining {
            let lifetime = self.migration.lifetime.unwrap_or(1);
            let _ = self.mesh.add_peer(now, from, lifetime);
        }
    }

    /// Remembers `add_peer`'s lifetime for the connections migration makes itself. A client
    /// that lost its server and adds peer 1 again before the lobby named a new one (the
    /// lobby found the server alive and told it to reconnect) is back with the same server
    /// once admitted: `HostMigrated` with `was` 1.
    pub(super) fn added(&mut self, peer: PeerId, lifetime: i32) {
        self.migration.lifetime = Some(lifetime);
        let epoch = self.migration.epoch;
        if let Some(switch) = self.migration.switch_mut() {
            if peer == SERVER_ID && !switch.dialed {
                if switch.target.is_none() {
                    switch.target = Some((epoch, SERVER_ID));
                    switch.drained = true;
                }
                switch.dialed = true;
                switch.dialed_at = self.last_now;
                switch.reported = false;
                switch.heard = None;
                self.migration.unconfirmed = self
                    .peers
                    .iter()
                    .filter(|&(_, &r)| r == Route::Relayed)
                    .map(|(&p, _)| p)
                    .collect();
            }
        }
    }

    /// Closing: a switch under way ends (its peers are reported gone by `close`).
    pub(super) fn migration_closing(&mut self) -> bool {
        let switching = self.migration.is_switching();
        if switching {
            self.migration.phase = Phase::Steady;
            self.migration.held.clear();
            self.migration.held_bytes = 0;
        }
        self.migration.rejoin = Rejoin::default();
        self.migration.waiting_bytes = 0;
        switching
    }

    fn closed(&self) -> bool {
        self.mesh.is_closed()
    }
}

/// Where a held packet goes once the server changed: the old server's id (1) and the new
/// one's former id are the new server; on the new server itself, packets for the old server
/// have nowhere to go.
fn retarget(target: Target, was: PeerId, became_host: bool) -> Option<Target> {
    Some(match target {
        Target::Peer(SERVER_ID) if became_host => return None,
        Target::Peer(p) if p == was => Target::Peer(SERVER_ID),
        Target::AllExcept(p) if p == was => Target::AllExcept(SERVER_ID),
        other => other,
    })
}
