//! The lobby server as a state machine over connection ids: the behaviour of the Godot demo's
//! `server_node/server.js`, with its limits, timeouts and close reasons, plus the limits a
//! server on the internet needs (lobby size, lobbies per address, idle members).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::message::{LobbyError, LobbyMessage, MessageKind};
use crate::transfer::{PeerId, SERVER_ID};

/// The caller's handle for one WebSocket connection.
pub type ConnectionId = u64;

/// Limits and timeouts. The first four default to the reference server's values; the others
/// are rtcmesh's own bounds, generous enough for any game lobby.
///
/// ```
/// use std::time::Duration;
/// use rtcmesh::lobby::{LobbyServer, LobbyServerConfig};
///
/// let config = LobbyServerConfig::default()
///     .with_max_lobby_size(8) // a game for up to 8 players
///     .with_member_idle_timeout(Some(Duration::from_secs(60)));
/// let server = LobbyServer::new(config, rand_seed());
/// assert_eq!(server.config().max_lobby_size, 8);
/// # fn rand_seed() -> u64 { 7 }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LobbyServerConfig {
    /// Connections beyond this are closed at once.
    pub max_peers: usize,
    /// Lobby creations beyond this are refused.
    pub max_lobbies: usize,
    /// A connection that has not joined a lobby by then is closed.
    pub join_timeout: Duration,
    /// A sealed lobby is closed this long after the seal.
    pub seal_close_after: Duration,
    /// Members per lobby, host included (default 256). In a mesh lobby every join is announced
    /// to every member (the protocol's O(n²) for a lobby of n), so this also bounds the
    /// announcements a single lobby can cause; in a client/server lobby a join is announced to
    /// the host only (departures still go to every member, as in Godot's demo server).
    pub max_lobby_size: usize,
    /// Open lobbies created from one client address (default 16; IPv6 addresses count per
    /// /64, where one subscriber's addresses live).
    pub max_lobbies_per_address: usize,
    /// A joined member that sends nothing for this long is closed (4003); `None` (default)
    /// keeps quiet members, as the reference server does.
    pub member_idle_timeout: Option<Duration>,
    /// `true` when other servers share the lobbies (a cluster): a JOIN for a lobby this server
    /// does not have becomes [`ServerOutput::Handoff`] instead of "Lobby does not exists".
    pub handoff_unknown_lobbies: bool,
    /// Host migration: after a HOST_LOST report, how long the host has to answer the
    /// server's probe ([`ServerOutput::Ping`]) before it is replaced (default 500 ms).
    pub host_probe_timeout: Duration,
    /// Host migration: HOST_LOST reports older than this no longer count towards the
    /// max(2, ⌈n/2⌉) reports that replace a host (default 5 s).
    pub host_lost_window: Duration,
}

impl Default for LobbyServerConfig {
    fn default() -> Self {
        LobbyServerConfig {
            max_peers: 4096,
            max_lobbies: 1024,
            join_timeout: Duration::from_secs(1),
            seal_close_after: Duration::from_secs(10),
            max_lobby_size: 256,
            max_lobbies_per_address: 16,
            member_idle_timeout: None,
            handoff_unknown_lobbies: false,
            host_probe_timeout: Duration::from_millis(500),
            host_lost_window: Duration::from_secs(5),
        }
    }
}

crate::__config_setters!(LobbyServerConfig {
    with_max_peers => max_peers: usize,
    with_max_lobbies => max_lobbies: usize,
    with_join_timeout => join_timeout: Duration,
    with_seal_close_after => seal_close_after: Duration,
    with_max_lobby_size => max_lobby_size: usize,
    with_max_lobbies_per_address => max_lobbies_per_address: usize,
    with_member_idle_timeout => member_idle_timeout: Option<Duration>,
    with_handoff_unknown_lobbies => handoff_unknown_lobbies: bool,
    with_host_probe_timeout => host_probe_timeout: Duration,
    with_host_lost_window => host_lost_window: Duration,
});

/// What the server wants done on its WebSockets.
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::lobby::{close, LobbyServer, LobbyServerConfig, ServerOutput};
///
/// let mut server = LobbyServer::new(LobbyServerConfig::default(), 1);
/// server.connect(Instant::now(), 9, "127.0.0.1".parse()?);
/// server.handle_text(Instant::now(), 9, "not json");
/// match server.poll_output() {
///     Some(ServerOutput::Close { to: 9, code, reason }) => {
///         assert_eq!((code, reason), (close::PROTOCOL_ERROR, close::INVALID_FORMAT));
///     }
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum ServerOutput {
    /// Send a text frame.
    Send {
        /// The connection.
        to: ConnectionId,
        /// The frame.
        text: String,
    },
    /// Close the connection with this close code and reason (the server already forgot it).
    Close {
        /// The connection.
        to: ConnectionId,
        /// WebSocket close code: 4000 for protocol errors, 1000 after a seal, 1009 too big,
        /// 4003 idle (see [`close`](super::close)).
        code: u16,
        /// Human-readable reason, the reference server's wording.
        reason: &'static str,
    },
    /// A lobby was created, with `host` as its host (for a cluster registry, logs, metrics).
    LobbyOpened {
        /// Its name.
        name: String,
        /// The host's connection.
        host: ConnectionId,
    },
    /// A lobby is gone (its host left, it was sealed and closed, or everyone was closed).
    LobbyClosed {
        /// Its name.
        name: String,
    },
    /// With [`LobbyServerConfig::handoff_unknown_lobbies`]: `conn` asked to join a lobby this
    /// server does not have. The server forgot the connection without closing it; the caller
    /// finds the lobby elsewhere (and forwards `join`, the client's JOIN frame, there) or
    /// closes it with [`close::LOBBY_DOES_NOT_EXIST`](super::close::LOBBY_DOES_NOT_EXIST).
    Handoff {
        /// The connection.
        conn: ConnectionId,
        /// The lobby it asked for.
        lobby: String,
        /// Its JOIN frame, unchanged.
        join: String,
    },
    /// Host migration: send a WebSocket ping on `to` (the host of a lobby some member reported
    /// lost) and call [`LobbyServer::handle_pong`] when its pong arrives.
    Ping {
        /// The connection.
        to: ConnectionId,
    },
    /// Host migration: `host` is the lobby's host (peer 1) from `epoch` on (for logs,
    /// metrics, and a cluster's record of the lobby).
    HostChanged {
        /// The lobby.
        name: String,
        /// The new host's connection.
        host: ConnectionId,
        /// The lobby's epoch, one more than before.
        epoch: u32,
    },
}

/// Whether a connection takes part in host migration, as it asked on its WebSocket URL
/// (`?migrate=1`: may become host; `?migrate=follow`: follows but never leads). Connections
/// that did not ask see exactly the Godot demo's protocol.
///
/// ```
/// use rtcmesh::lobby::{ConnectOptions, Migration};
///
/// let options = ConnectOptions::from_request_target("/?migrate=1");
/// assert_eq!(options.migration, Migration::Eligible);
/// assert_eq!(ConnectOptions::from_request_target("/").migration, Migration::Off);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Migration {
    /// The Godot demo's protocol, byte for byte (a host leaving closes its lobby).
    #[default]
    Off,
    /// Told of host migrations in the lobby's own frames, never elected.
    Follow,
    /// Told of host migrations, and may be elected host.
    Eligible,
}

impl Migration {
    /// The URL query parameter that asks for this (`None` for [`Migration::Off`]).
    pub fn query(self) -> Option<&'static str> {
        match self {
            Migration::Off => None,
            Migration::Follow => Some("migrate=follow"),
            Migration::Eligible => Some("migrate=1"),
        }
    }

    fn opted_in(self) -> bool {
        self != Migration::Off
    }
}

/// What a connection asked for when it opened (read from its WebSocket request).
///
/// ```
/// use rtcmesh::lobby::{ConnectOptions, Migration};
///
/// let plain = ConnectOptions::default();
/// assert_eq!(plain.migration, Migration::Off);
/// let follower = ConnectOptions::default().with_migration(Migration::Follow);
/// assert_eq!(ConnectOptions::from_request_target("/lobby?x=2&migrate=follow"), follower);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Host migration (the `migrate` query parameter).
    pub migration: Migration,
    /// Send the HELLO frame on connect (default `true`). A cluster node that takes over a
    /// connection another node already greeted turns it off.
    pub hello: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            migration: Migration::Off,
            hello: true,
        }
    }
}

impl ConnectOptions {
    /// With this host-migration setting.
    pub fn with_migration(mut self, migration: Migration) -> ConnectOptions {
        self.migration = migration;
        self
    }

    /// With or without the HELLO frame on connect.
    pub fn with_hello(mut self, hello: bool) -> ConnectOptions {
        self.hello = hello;
        self
    }

    /// Reads the options from a WebSocket request's target (path and query, e.g.
    /// `"/?migrate=1"`): `migrate=1` (or `true`) is [`Migration::Eligible`], `migrate=follow`
    /// [`Migration::Follow`]; anything else, or no `migrate`, is [`Migration::Off`].
    pub fn from_request_target(target: &str) -> ConnectOptions {
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let query = query.split('#').next().unwrap_or("");
        let mut options = ConnectOptions::default();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "migrate" {
                options.migration = match value {
                    "1" | "true" => Migration::Eligible,
                    "follow" => Migration::Follow,
                    _ => Migration::Off,
                };
            }
        }
        options
    }
}

/// The HELLO frame's data: this server runs host migrations (wire version 1).
pub const HELLO_MIGRATE: &str = "migrate/1";

/// How many members the SUCCESSION frame names at most (the first in line).
pub const SUCCESSION_LEN: usize = 8;

/// Close codes and reasons, worded as in the reference server where it has them.
pub mod close {
    /// Protocol errors and refusals (the reference server's code for all of them).
    pub const PROTOCOL_ERROR: u16 = 4000;
    /// The reason for [`PROTOCOL_ERROR`] when a member was idle too long.
    pub const IDLE: u16 = 4003;
    /// Host migration: a host the lobby replaced after members reported it lost (it learns
    /// it is no longer host from this close, after a HOST_CHANGE naming its successor).
    pub const HOST_REPLACED_CODE: u16 = 4010;
    /// After a seal.
    pub const NORMAL: u16 = 1000;
    /// A frame over [`MAX_MESSAGE_LEN`](crate::lobby::MAX_MESSAGE_LEN).
    pub const TOO_BIG_CODE: u16 = 1009;

    /// Joined no lobby within the join timeout.
    pub const NO_LOBBY: &str = "Have not joined lobby yet";
    /// The lobby's host left: the lobby is closed.
    pub const HOST_DISCONNECTED: &str = "Room host has disconnected";
    /// SEAL from someone other than the host.
    pub const ONLY_HOST_CAN_SEAL: &str = "Only host can seal the lobby";
    /// The sealed lobby's time is up (code 1000).
    pub const SEAL_COMPLETE: &str = "Seal complete";
    /// `max_lobbies` reached.
    pub const TOO_MANY_LOBBIES: &str = "Too many lobbies open, disconnecting";
    /// `max_lobbies_per_address` reached for this client's address.
    pub const TOO_MANY_LOBBIES_FROM_ADDRESS: &str = "Too many lobbies from this address";
    /// A second JOIN.
    pub const ALREADY_IN_LOBBY: &str = "Already in a lobby";
    /// No lobby of that name (the reference server's wording).
    pub const LOBBY_DOES_NOT_EXIST: &str = "Lobby does not exists";
    /// JOIN to a sealed lobby.
    pub const LOBBY_IS_SEALED: &str = "Lobby is sealed";
    /// JOIN to a lobby at `max_lobby_size`.
    pub const LOBBY_IS_FULL: &str = "Lobby is full";
    /// Not a protocol frame.
    pub const INVALID_FORMAT: &str = "Invalid message format";
    /// A message other than JOIN before joining.
    pub const NEED_LOBBY: &str = "Invalid message when not in a lobby";
    /// A signal for someone not in the sender's lobby.
    pub const INVALID_DEST: &str = "Invalid destination";
    /// An unknown message type, or one only the server sends.
    pub const INVALID_CMD: &str = "Invalid command";
    /// `max_peers` reached.
    pub const TOO_MANY_PEERS: &str = "Too many peers connected";
    /// A binary frame.
    pub const INVALID_TRANSFER_MODE: &str = "Invalid transfer mode, must be text";
    /// A frame over the size limit (code 1009).
    pub const TOO_BIG: &str = "Message too big";
    /// Host migration: the host was reported lost and replaced (code 4010).
    pub const HOST_REPLACED: &str = "Replaced as host";
    /// Host migration: the host handed the lobby over (code 1000).
    pub const HOST_HANDED_OVER: &str = "Host handed over";
    /// Host migration: HOST_CHANGE from a member that is not the host.
    pub const ONLY_HOST_CAN_HAND_OVER: &str = "Only host can hand over the lobby";
    /// No frame from a joined member within `member_idle_timeout` (code 4003).
    pub const IDLE_TOO_LONG: &str = "Idle too long";
}

use close as reason;
use close::PROTOCOL_ERROR;

/// What the server counted since it started.
///
/// ```
/// use rtcmesh::lobby::{LobbyServer, LobbyServerConfig, LobbyStats};
///
/// let server = LobbyServer::new(LobbyServerConfig::default(), 1);
/// let stats: LobbyStats = server.stats();
/// assert_eq!((stats.joins, stats.lobbies_created, stats.signals_relayed), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LobbyStats {
    /// Successful JOINs.
    pub joins: u64,
    /// Lobbies created.
    pub lobbies_created: u64,
    /// OFFER / ANSWER / CANDIDATE frames relayed to their destination.
    pub signals_relayed: u64,
    /// PEER_CONNECT / PEER_DISCONNECT frames sent.
    pub announcements: u64,
    /// JOINs handed to the caller for a lobby elsewhere.
    pub handoffs: u64,
    /// Host migrations (a successor elected in a migratable lobby).
    pub migrations: u64,
    /// HOST_LOST reports accepted.
    pub host_lost_reports: u64,
    /// Host-migration frames ignored because their epoch was over.
    pub stale_epochs: u64,
    /// OFFER / ANSWER / CANDIDATE frames for a member that had just left the sender's lobby,
    /// dropped (they crossed its PEER_DISCONNECT; the reference server closes the sender).
    pub signals_to_departed: u64,
}

#[derive(Debug)]
struct Connection {
    /// The id this connection is known by in its lobby, unless it hosts it (then 1).
    peer_id: PeerId,
    address: IpAddr,
    lobby: Option<String>,
    /// The last frame from it, for the idle limit.
    last_frame: Instant,
    migration: Migration,
}

#[derive(Debug)]
struct Lobby {
    host: ConnectionId,
    /// The host's address, counted against `max_lobbies_per_address`.
    creator: IpAddr,
    mesh: bool,
    /// In join order (the order the reference server announces them in).
    members: Vec<ConnectionId>,
    sealed: bool,
    /// The host opted in to migration and the lobby is client/server: the host leaving elects
    /// a successor instead of closing the lobby.
    migratable: bool,
    /// Host changes so far.
    epoch: u32,
    /// HOST_LOST reports in this epoch: reporter and when.
    reports: Vec<(ConnectionId, Instant)>,
    /// A probe of the host is out (since then, these reporters wait for its answer).
    probe: Option<Vec<ConnectionId>>,
    /// The last line of succession sent.
    succession: Vec<PeerId>,
    /// Ids of the members that left last (at most `max_lobby_size`): a signal for one of them
    /// crossed its PEER_DISCONNECT and is dropped, not a protocol error.
    departed: VecDeque<PeerId>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Join(ConnectionId),
    Idle(ConnectionId),
    SealClose(String),
    /// The probe of this lobby's host in this epoch is unanswered.
    Probe(String, u32),
}

/// The whole signaling server, I/O-free: feed it connection events and text frames, drain
/// [`ServerOutput`]s. Peer ids and lobby names come from a generator seeded by the caller, so
/// the same inputs give the same outputs. Every lookup is a hash lookup; the only work that
/// grows with a lobby's size is the protocol's own announcements to its members, bounded by
/// [`LobbyServerConfig::max_lobby_size`].
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::lobby::{LobbyClient, LobbyEvent, LobbyServer, LobbyServerConfig, ServerOutput};
///
/// // The whole server, in memory: your WebSocket server feeds it frames by connection id and
/// // carries out what it outputs. Here two lobby clients play the WebSockets' other ends.
/// let mut server = LobbyServer::new(LobbyServerConfig::default(), 42); // 42 seeds the peer ids
/// let now = Instant::now();
/// let mut host = LobbyClient::new("", true); // "" creates a lobby; true: a mesh lobby
/// server.connect(now, 1, "127.0.0.1".parse()?);
/// server.handle_text(now, 1, &host.join_message());
/// let mut name = String::new();
/// while let Some(output) = server.poll_output() {
///     if let ServerOutput::Send { to: 1, text } = output {
///         if let LobbyEvent::Joined(lobby) = host.handle_text(&text)? {
///             name = lobby; // share it with the players who should join
///         }
///     }
/// }
/// assert_eq!(host.id(), Some(1)); // the lobby's host
///
/// let mut guest = LobbyClient::new(name, true);
/// server.connect(now, 2, "127.0.0.1".parse()?);
/// server.handle_text(now, 2, &guest.join_message());
/// let (mut host_saw, mut guest_saw) = (Vec::new(), Vec::new());
/// while let Some(output) = server.poll_output() {
///     match output {
///         ServerOutput::Send { to: 1, text } => host_saw.push(host.handle_text(&text)?),
///         ServerOutput::Send { to: 2, text } => guest_saw.push(guest.handle_text(&text)?),
///         other => println!("{other:?}"),
///     }
/// }
/// let guest_id = guest.id().expect("assigned");
/// assert!(host_saw.contains(&LobbyEvent::PeerJoined(guest_id)));
/// assert!(guest_saw.contains(&LobbyEvent::PeerJoined(1)));
/// assert_eq!(server.stats().joins, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct LobbyServer {
    config: LobbyServerConfig,
    rng: u64,
    connections: HashMap<ConnectionId, Connection>,
    /// Every connection's peer id, for relaying by id and for unique ids.
    by_peer_id: HashMap<PeerId, ConnectionId>,
    lobbies: HashMap<String, Lobby>,
    lobbies_by_address: HashMap<IpAddr, usize>,
    deadlines: BTreeSet<(Instant, Deadline)>,
    outputs: VecDeque<ServerOutput>,
    stats: LobbyStats,
}

impl LobbyServer {
    /// A server with these limits; `seed` drives peer id and lobby name generation (give it a
    /// random value in production so lobby names are hard to guess).
    pub fn new(config: LobbyServerConfig, seed: u64) -> LobbyServer {
        LobbyServer {
            config,
            rng: seed,
            connections: HashMap::new(),
            by_peer_id: HashMap::new(),
            lobbies: HashMap::new(),
            lobbies_by_address: HashMap::new(),
            deadlines: BTreeSet::new(),
            outputs: VecDeque::new(),
            stats: LobbyStats::default(),
        }
    }

    /// The limits it runs with.
    pub fn config(&self) -> &LobbyServerConfig {
        &self.config
    }

    /// Connections currently open.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Lobbies currently open.
    pub fn lobby_count(&self) -> usize {
        self.lobbies.len()
    }

    /// Whether `conn` is a connection the server knows (open, not closed by it).
    pub fn is_connected(&self, conn: ConnectionId) -> bool {
        self.connections.contains_key(&conn)
    }

    /// What it counted.
    pub fn stats(&self) -> LobbyStats {
        self.stats
    }

    /// A WebSocket connection opened from `address` (the client's IP address, for the
    /// per-address lobby limit).
    pub fn connect(&mut self, now: Instant, conn: ConnectionId, address: IpAddr) {
        self.connect_with(now, conn, address, ConnectOptions::default());
    }

    /// A WebSocket connection opened from `address` with what its request asked for
    /// ([`ConnectOptions::from_request_target`]). A connection that opted in to host
    /// migration is greeted with HELLO `"migrate/1"`.
    pub fn connect_with(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        address: IpAddr,
        options: ConnectOptions,
    ) {
        if self.connections.len() >= self.config.max_peers || self.connections.contains_key(&conn) {
            self.push_close(conn, PROTOCOL_ERROR, reason::TOO_MANY_PEERS);
            return;
        }
        let peer_id = self.fresh_peer_id();
        self.by_peer_id.insert(peer_id, conn);
        self.connections.insert(
            conn,
            Connection {
                peer_id,
                address: address_key(address),
                lobby: None,
                last_frame: now,
                migration: options.migration,
            },
        );
        if options.migration.opted_in() && options.hello {
            self.send(
                conn,
                &LobbyMessage::new(MessageKind::Hello, 0, HELLO_MIGRATE),
            );
        }
        // A duration too long for the clock means "never".
        if let Some(at) = now.checked_add(self.config.join_timeout) {
            self.deadlines.insert((at, Deadline::Join(conn)));
        }
    }

    /// A text frame arrived on `conn`. Protocol errors close that connection only.
    pub fn handle_text(&mut self, now: Instant, conn: ConnectionId, text: &str) {
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        c.last_frame = now;
        if let Err((code, why)) = self.parse(now, conn, text) {
            self.close(conn, code, why);
        }
    }

    /// A binary frame arrived on `conn`: the protocol is text only.
    pub fn handle_binary(&mut self, conn: ConnectionId) {
        if self.connections.contains_key(&conn) {
            self.close(conn, PROTOCOL_ERROR, reason::INVALID_TRANSFER_MODE);
        }
    }

    /// A pong arrived on `conn` (the answer to a [`ServerOutput::Ping`], or to any ping the
    /// caller sends): if it is a host the server probed, the host is alive and the members
    /// that reported it lost are told to connect to it again (PEER_DISCONNECT 1, PEER_CONNECT
    /// 1; the host hears the same of them).
    pub fn handle_pong(&mut self, conn: ConnectionId) {
        let Some(name) = self.connections.get(&conn).and_then(|c| c.lobby.clone()) else {
            return;
        };
        let Some(lobby) = self.lobbies.get_mut(&name) else {
            return;
        };
        if lobby.host != conn {
            return;
        }
        let Some(reporters) = lobby.probe.take() else {
            return;
        };
        for reporter in reporters {
            let Some(theirs) = self
                .connections
                .get(&reporter)
                .filter(|c| c.lobby.as_deref() == Some(&name))
                .map(|c| (c.peer_id, c.migration))
            else {
                continue;
            };
            let server = i64::from(SERVER_ID);
            self.send(
                reporter,
                &LobbyMessage::new(MessageKind::PeerDisconnect, server, ""),
            );
            self.send(
                reporter,
                &LobbyMessage::new(MessageKind::PeerConnect, server, "m"),
            );
            let (id, flag) = (
                i64::from(theirs.0),
                capability(theirs.1, Migration::Eligible),
            );
            self.send(
                conn,
                &LobbyMessage::new(MessageKind::PeerDisconnect, id, ""),
            );
            self.send(conn, &LobbyMessage::new(MessageKind::PeerConnect, id, flag));
            self.stats.announcements += 4;
        }
    }

    /// The epoch of lobby `name` (how many times its host changed), if it is open here.
    pub fn epoch(&self, name: &str) -> Option<u32> {
        self.lobbies.get(name).map(|l| l.epoch)
    }

    /// A frame too large for the transport arrived on `conn`.
    pub fn handle_oversized(&mut self, conn: ConnectionId) {
        if self.connections.contains_key(&conn) {
            self.close(conn, close::TOO_BIG_CODE, reason::TOO_BIG);
        }
    }

    /// The connection closed (from either side, or the caller closed it for its own reasons).
    /// Its lobby is told; a host leaving closes the lobby.
    pub fn disconnect(&mut self, conn: ConnectionId) {
        self.forget(conn);
    }

    /// Closes every connection with `code` and `reason` (a server shutting down), without
    /// announcing anyone's departure to members that are closed too.
    pub fn close_all(&mut self, code: u16, reason: &'static str) {
        let names: Vec<String> = self.lobbies.keys().cloned().collect();
        for name in names {
            self.close_lobby(&name, code, reason);
        }
        let rest: Vec<ConnectionId> = self.connections.keys().copied().collect();
        for conn in rest {
            self.close(conn, code, reason);
        }
    }

    /// Fires due timeouts: unjoined connections, idle members and sealed lobbies.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, _)) = self.deadlines.first() {
            if *at > now {
                break;
            }
            let Some((_, deadline)) = self.deadlines.pop_first() else {
                break;
            };
            match deadline {
                Deadline::Join(conn) => {
                    if self
                        .connections
                        .get(&conn)
                        .is_some_and(|c| c.lobby.is_none())
                    {
                        self.close(conn, PROTOCOL_ERROR, reason::NO_LOBBY);
                    }
                }
                Deadline::Idle(conn) => self.check_idle(now, conn),
                Deadline::SealClose(name) => {
                    // Every member, host included, gets 1000 "Seal complete" as in the
                    // reference server: the lobby goes as a whole, so the host's close must
                    // not run the "host left" path on the others. A migratable lobby keeps
                    // the members that opted in (they may need it for a migration).
                    match self.lobbies.get(&name) {
                        Some(lobby) if lobby.sealed && lobby.migratable => {
                            let plain: Vec<ConnectionId> = lobby
                                .members
                                .iter()
                                .copied()
                                .filter(|m| !self.migration_of(*m).opted_in())
                                .collect();
                            for member in plain {
                                self.detach(&name, member);
                                self.close(member, close::NORMAL, reason::SEAL_COMPLETE);
                            }
                        }
                        Some(lobby) if lobby.sealed => {
                            self.close_lobby(&name, close::NORMAL, reason::SEAL_COMPLETE);
                        }
                        _ => {}
                    }
                }
                Deadline::Probe(name, epoch) => {
                    let unanswered = self
                        .lobbies
                        .get(&name)
                        .is_some_and(|l| l.epoch == epoch && l.probe.is_some());
                    if unanswered {
                        self.replace_lost_host(&name);
                    }
                }
            }
        }
    }

    /// When [`handle_timeout`](LobbyServer::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The next thing to do on a WebSocket.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    /// Closes an idle member, or looks again when it could next be idle. Only one idle
    /// deadline per member is ever pending, however many frames it sends.
    fn check_idle(&mut self, now: Instant, conn: ConnectionId) {
        let Some(limit) = self.config.member_idle_timeout else {
            return;
        };
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if c.lobby.is_none() {
            return;
        }
        match c.last_frame.checked_add(limit) {
            Some(due) if due <= now => self.close(conn, close::IDLE, reason::IDLE_TOO_LONG),
            Some(due) => {
                self.deadlines.insert((due, Deadline::Idle(conn)));
            }
            None => {}
        }
    }

    fn parse(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        text: &str,
    ) -> Result<(), (u16, &'static str)> {
        let message = LobbyMessage::decode(text).map_err(|e| match e {
            LobbyError::TooLong(_) => (close::TOO_BIG_CODE, reason::TOO_BIG),
            LobbyError::UnknownType(_) => (PROTOCOL_ERROR, reason::INVALID_CMD),
            _ => (PROTOCOL_ERROR, reason::INVALID_FORMAT),
        })?;
        if message.id < 0 {
            return Err((PROTOCOL_ERROR, reason::INVALID_FORMAT));
        }
        if message.kind == MessageKind::Join {
            return self.join(now, conn, message.data, message.id == 0, text);
        }
        let lobby_name = self.connections[&conn]
            .lobby
            .clone()
            .ok_or((PROTOCOL_ERROR, reason::NEED_LOBBY))?;
        let migration = self.migration_of(conn);
        match message.kind {
            MessageKind::Seal => self.seal(now, conn, lobby_name),
            MessageKind::HostChange if migration.opted_in() => {
                self.hand_over(conn, &lobby_name, message.id, &message.data)
            }
            MessageKind::HostLost if migration.opted_in() => {
                self.host_lost(now, conn, &lobby_name, message.id, &message.data)
            }
            MessageKind::Offer | MessageKind::Answer | MessageKind::Candidate => {
                let lobby = &self.lobbies[&lobby_name];
                let dest = if message.id == i64::from(SERVER_ID) {
                    Some(lobby.host)
                } else {
                    PeerId::try_from(message.id)
                        .ok()
                        .and_then(|id| self.by_peer_id.get(&id).copied())
                        .filter(|m| {
                            *m != lobby.host
                                && self.connections[m].lobby.as_deref() == Some(&lobby_name)
                        })
                };
                let Some(dest) = dest else {
                    let departed =
                        PeerId::try_from(message.id).is_ok_and(|id| lobby.departed.contains(&id));
                    if departed {
                        self.stats.signals_to_departed += 1;
                        return Ok(());
                    }
                    return Err((PROTOCOL_ERROR, reason::INVALID_DEST));
                };
                let from = self.lobby_peer_id(conn);
                let relayed = LobbyMessage::new(message.kind, i64::from(from), message.data);
                self.send(dest, &relayed);
                self.stats.signals_relayed += 1;
                Ok(())
            }
            _ => Err((PROTOCOL_ERROR, reason::INVALID_CMD)),
        }
    }

    fn join(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        name: String,
        mesh: bool,
        frame: &str,
    ) -> Result<(), (u16, &'static str)> {
        if self.connections[&conn].lobby.is_some() {
            return Err((PROTOCOL_ERROR, reason::ALREADY_IN_LOBBY));
        }
        let address = self.connections[&conn].address;
        let name = if name.is_empty() {
            if self.lobbies.len() >= self.config.max_lobbies {
                return Err((PROTOCOL_ERROR, reason::TOO_MANY_LOBBIES));
            }
            let created = self.lobbies_by_address.get(&address).copied().unwrap_or(0);
            if created >= self.config.max_lobbies_per_address {
                return Err((PROTOCOL_ERROR, reason::TOO_MANY_LOBBIES_FROM_ADDRESS));
            }
            let name = self.fresh_lobby_name();
            let lobby = Lobby {
                host: conn,
                creator: address,
                mesh,
                members: Vec::new(),
                sealed: false,
                migratable: !mesh && self.migration_of(conn).opted_in(),
                epoch: 0,
                reports: Vec::new(),
                probe: None,
                succession: Vec::new(),
                departed: VecDeque::new(),
            };
            self.lobbies.insert(name.clone(), lobby);
            *self.lobbies_by_address.entry(address).or_insert(0) += 1;
            self.stats.lobbies_created += 1;
            self.outputs.push_back(ServerOutput::LobbyOpened {
                name: name.clone(),
                host: conn,
            });
            name
        } else {
            name
        };
        let Some(lobby) = self.lobbies.get(&name) else {
            if self.config.handoff_unknown_lobbies {
                self.forget(conn);
                self.stats.handoffs += 1;
                self.outputs.push_back(ServerOutput::Handoff {
                    conn,
                    lobby: name,
                    join: frame.to_owned(),
                });
                return Ok(());
            }
            return Err((PROTOCOL_ERROR, reason::LOBBY_DOES_NOT_EXIST));
        };
        if lobby.sealed {
            return Err((PROTOCOL_ERROR, reason::LOBBY_IS_SEALED));
        }
        if lobby.members.len() >= self.config.max_lobby_size {
            return Err((PROTOCOL_ERROR, reason::LOBBY_IS_FULL));
        }
        let (mesh, host, migratable) = (lobby.mesh, lobby.host, lobby.migratable);
        // In a client/server lobby the clients talk only to the host, and the host relays:
        // as in Godot's demo server, a newcomer meets the host and nobody else (a stock Godot
        // client would `add_peer` another client and fail).
        let members: Vec<ConnectionId> = lobby
            .members
            .iter()
            .copied()
            .filter(|&m| mesh || m == host)
            .collect();
        if let Some(c) = self.connections.get_mut(&conn) {
            c.lobby = Some(name.clone());
        }
        let assigned = self.lobby_peer_id(conn);
        self.send(
            conn,
            &LobbyMessage::new(
                MessageKind::Id,
                assigned.into(),
                if mesh { "true" } else { "" },
            ),
        );
        let mine = self.migration_of(conn);
        for member in members {
            let (theirs, their_migration) = (self.lobby_peer_id(member), self.migration_of(member));
            self.send(
                member,
                &LobbyMessage::new(
                    MessageKind::PeerConnect,
                    assigned.into(),
                    capability(mine, their_migration),
                ),
            );
            self.send(
                conn,
                &LobbyMessage::new(
                    MessageKind::PeerConnect,
                    theirs.into(),
                    capability(their_migration, mine),
                ),
            );
            self.stats.announcements += 2;
        }
        if let Some(lobby) = self.lobbies.get_mut(&name) {
            lobby.members.push(conn);
        }
        if migratable && mine.opted_in() {
            // The newcomer learns the line of succession; the others only if it changed.
            let line = self.line_of_succession(&name);
            self.send(conn, &succession_message(self.lobbies[&name].epoch, &line));
            self.announce_succession(&name, Some(conn));
        }
        self.send(conn, &LobbyMessage::new(MessageKind::Join, 0, name));
        self.stats.joins += 1;
        if let Some(limit) = self.config.member_idle_timeout {
            if let Some(at) = now.checked_add(limit) {
                self.deadlines.insert((at, Deadline::Idle(conn)));
            }
        }
        Ok(())
    }

    fn seal(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        name: String,
    ) -> Result<(), (u16, &'static str)> {
        let Some(lobby) = self.lobbies.get_mut(&name) else {
            return Err((PROTOCOL_ERROR, reason::NEED_LOBBY));
        };
        if lobby.host != conn {
            return Err((PROTOCOL_ERROR, reason::ONLY_HOST_CAN_SEAL));
        }
        lobby.sealed = true;
        let members = lobby.members.clone();
        for member in members {
            self.send(member, &LobbyMessage::new(MessageKind::Seal, 0, ""));
        }
        if let Some(at) = now.checked_add(self.config.seal_close_after) {
            self.deadlines.insert((at, Deadline::SealClose(name)));
        }
        Ok(())
    }

    /// The id `conn` has inside its lobby: 1 for the host.
    fn lobby_peer_id(&self, conn: ConnectionId) -> PeerId {
        let Some(c) = self.connections.get(&conn) else {
            return 0;
        };
        match c.lobby.as_ref().and_then(|name| self.lobbies.get(name)) {
            Some(lobby) if lobby.host == conn => SERVER_ID,
            _ => c.peer_id,
        }
    }

    fn close(&mut self, conn: ConnectionId, code: u16, reason: &'static str) {
        self.forget(conn);
        self.push_close(conn, code, reason);
    }

    /// Closes every member of `name` with the same code and reason, and forgets the lobby.
    fn close_lobby(&mut self, name: &str, code: u16, reason: &'static str) {
        let Some(lobby) = self.remove_lobby(name) else {
            return;
        };
        for member in lobby.members {
            self.remove_connection(member);
            self.push_close(member, code, reason);
        }
    }

    fn push_close(&mut self, conn: ConnectionId, code: u16, reason: &'static str) {
        self.outputs.push_back(ServerOutput::Close {
            to: conn,
            code,
            reason,
        });
    }

    fn remove_connection(&mut self, conn: ConnectionId) -> Option<Connection> {
        let c = self.connections.remove(&conn)?;
        if self.by_peer_id.get(&c.peer_id) == Some(&conn) {
            self.by_peer_id.remove(&c.peer_id);
        }
        Some(c)
    }

    fn remove_lobby(&mut self, name: &str) -> Option<Lobby> {
        let lobby = self.lobbies.remove(name)?;
        if let Some(count) = self.lobbies_by_address.get_mut(&lobby.creator) {
            *count -= 1;
            if *count == 0 {
                self.lobbies_by_address.remove(&lobby.creator);
            }
        }
        self.outputs.push_back(ServerOutput::LobbyClosed {
            name: name.to_owned(),
        });
        Some(lobby)
    }

    /// Removes `conn`, tells its lobby, and closes the lobby if it was the host.
    fn forget(&mut self, conn: ConnectionId) {
        let leaving = self.lobby_peer_id(conn);
        let Some(c) = self.remove_connection(conn) else {
            return;
        };
        let Some(name) = c.lobby else { return };
        let Some(lobby) = self.lobbies.get_mut(&name) else {
            return;
        };
        if let Some(at) = lobby.members.iter().position(|m| *m == conn) {
            lobby.members.remove(at);
        }
        if lobby.host != conn {
            if lobby.departed.len() >= self.config.max_lobby_size.max(1) {
                lobby.departed.pop_front();
            }
            lobby.departed.push_back(leaving);
        }
        lobby.reports.retain(|(r, _)| *r != conn);
        if let Some(waiting) = lobby.probe.as_mut() {
            waiting.retain(|r| *r != conn);
        }
        if lobby.host == conn {
            if !(lobby.migratable && self.elect(&name, None)) {
                self.close_lobby(&name, PROTOCOL_ERROR, reason::HOST_DISCONNECTED);
            }
        } else {
            let members = lobby.members.clone();
            for member in members {
                self.send(
                    member,
                    &LobbyMessage::new(MessageKind::PeerDisconnect, leaving.into(), ""),
                );
                self.stats.announcements += 1;
            }
            self.announce_succession(&name, None);
        }
    }

    fn migration_of(&self, conn: ConnectionId) -> Migration {
        self.connections
            .get(&conn)
            .map_or(Migration::Off, |c| c.migration)
    }

    /// Takes `conn` out of lobby `name` without telling anyone (it stays connected).
    fn detach(&mut self, name: &str, conn: ConnectionId) {
        if let Some(lobby) = self.lobbies.get_mut(name) {
            lobby.members.retain(|m| *m != conn);
            lobby.reports.retain(|(r, _)| *r != conn);
        }
        if let Some(c) = self.connections.get_mut(&conn) {
            c.lobby = None;
        }
    }

    /// The eligible members after the host, in join order.
    fn candidates(&self, name: &str) -> Vec<ConnectionId> {
        let Some(lobby) = self.lobbies.get(name) else {
            return Vec::new();
        };
        lobby
            .members
            .iter()
            .copied()
            .filter(|m| *m != lobby.host && self.migration_of(*m) == Migration::Eligible)
            .collect()
    }

    fn line_of_succession(&self, name: &str) -> Vec<PeerId> {
        self.candidates(name)
            .into_iter()
            .take(SUCCESSION_LEN)
            .map(|m| self.lobby_peer_id(m))
            .collect()
    }

    /// Sends the line of succession to the opted-in members if it changed (but not to
    /// `except`, which was just told).
    fn announce_succession(&mut self, name: &str, except: Option<ConnectionId>) {
        let line = self.line_of_succession(name);
        let Some(lobby) = self.lobbies.get_mut(name) else {
            return;
        };
        if !lobby.migratable || lobby.succession == line {
            return;
        }
        lobby.succession = line.clone();
        let (epoch, members) = (lobby.epoch, lobby.members.clone());
        let message = succession_message(epoch, &line);
        for member in members {
            if Some(member) != except && self.migration_of(member).opted_in() {
                self.send(member, &message);
            }
        }
    }

    /// The host of lobby `name` is gone (already out of its members): the first eligible
    /// member (or `preferred`, if eligible) becomes peer 1 in the next epoch. Its HOST_CHANGE
    /// goes out first, then the members it must now serve; opted-in members get HOST_CHANGE,
    /// plain ones what the Godot demo client understands. Returns `false` (nothing done) when
    /// no member is eligible.
    fn elect(&mut self, name: &str, preferred: Option<ConnectionId>) -> bool {
        let candidates = self.candidates(name);
        let Some(successor) = preferred
            .filter(|p| candidates.contains(p))
            .or_else(|| candidates.first().copied())
        else {
            return false;
        };
        let was = i64::from(self.connections[&successor].peer_id);
        let Some(lobby) = self.lobbies.get_mut(name) else {
            return false;
        };
        lobby.host = successor;
        lobby.epoch = lobby.epoch.wrapping_add(1);
        lobby.reports.clear();
        lobby.probe = None;
        let (epoch, members) = (lobby.epoch, lobby.members.clone());
        let others: Vec<ConnectionId> = members.into_iter().filter(|m| *m != successor).collect();
        let server = i64::from(SERVER_ID);
        self.send(
            successor,
            &LobbyMessage::new(MessageKind::HostChange, server, epoch.to_string()),
        );
        for &member in &others {
            let (theirs, flag) = (
                self.lobby_peer_id(member),
                capability(self.migration_of(member), Migration::Eligible),
            );
            self.send(
                successor,
                &LobbyMessage::new(MessageKind::PeerConnect, theirs.into(), flag),
            );
        }
        for &member in &others {
            if self.migration_of(member).opted_in() {
                self.send(
                    member,
                    &LobbyMessage::new(MessageKind::HostChange, was, epoch.to_string()),
                );
            } else {
                self.send(
                    member,
                    &LobbyMessage::new(MessageKind::PeerDisconnect, server, ""),
                );
                self.send(
                    member,
                    &LobbyMessage::new(MessageKind::PeerDisconnect, was, ""),
                );
                self.send(
                    member,
                    &LobbyMessage::new(MessageKind::PeerConnect, server, ""),
                );
            }
        }
        let plain = others
            .iter()
            .filter(|m| !self.migration_of(**m).opted_in())
            .count();
        self.stats.migrations += 1;
        self.stats.announcements += (others.len() + 3 * plain) as u64;
        self.outputs.push_back(ServerOutput::HostChanged {
            name: name.to_owned(),
            host: successor,
            epoch,
        });
        self.announce_succession(name, None);
        true
    }

    /// HOST_CHANGE from `conn`: the host hands the lobby over to member `to` (0: the lobby
    /// picks; a member that is not eligible: the lobby picks too).
    fn hand_over(
        &mut self,
        conn: ConnectionId,
        name: &str,
        to: i64,
        data: &str,
    ) -> Result<(), (u16, &'static str)> {
        let epoch = LobbyMessage::parse_epoch(data)
            .map_err(|_| (PROTOCOL_ERROR, reason::INVALID_FORMAT))?;
        let Some(lobby) = self.lobbies.get(name) else {
            return Err((PROTOCOL_ERROR, reason::NEED_LOBBY));
        };
        if epoch != lobby.epoch || !lobby.migratable {
            self.stats.stale_epochs += u64::from(epoch != lobby.epoch);
            return Ok(());
        }
        if lobby.host != conn {
            return Err((PROTOCOL_ERROR, reason::ONLY_HOST_CAN_HAND_OVER));
        }
        let preferred = PeerId::try_from(to)
            .ok()
            .and_then(|id| self.by_peer_id.get(&id).copied());
        if self.candidates(name).is_empty() {
            // Nobody to take over: the lobby ends as when its host leaves.
            self.close_lobby(name, PROTOCOL_ERROR, reason::HOST_DISCONNECTED);
            return Ok(());
        }
        self.depose(
            name,
            conn,
            preferred,
            close::NORMAL,
            reason::HOST_HANDED_OVER,
        );
        Ok(())
    }

    /// Replaces the host of lobby `name` (still connected) with a successor and closes it
    /// after telling it who took over. Does nothing when no member is eligible.
    fn depose(
        &mut self,
        name: &str,
        host: ConnectionId,
        preferred: Option<ConnectionId>,
        code: u16,
        why: &'static str,
    ) {
        if self.candidates(name).is_empty() {
            return;
        }
        self.detach(name, host);
        if !self.elect(name, preferred) {
            return;
        }
        let lobby = &self.lobbies[name];
        let (epoch, successor) = (lobby.epoch, lobby.host);
        let was = i64::from(self.connections[&successor].peer_id);
        self.send(
            host,
            &LobbyMessage::new(MessageKind::HostChange, was, epoch.to_string()),
        );
        self.close(host, code, why);
    }

    /// HOST_LOST from `conn`: counts the report; enough reports replace the host, fewer
    /// start a probe of the host's WebSocket.
    fn host_lost(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        name: &str,
        id: i64,
        data: &str,
    ) -> Result<(), (u16, &'static str)> {
        if id != i64::from(SERVER_ID) {
            return Err((PROTOCOL_ERROR, reason::INVALID_DEST));
        }
        let epoch = LobbyMessage::parse_epoch(data)
            .map_err(|_| (PROTOCOL_ERROR, reason::INVALID_FORMAT))?;
        let window = self.config.host_lost_window;
        let opted_in = {
            let Some(lobby) = self.lobbies.get(name) else {
                return Err((PROTOCOL_ERROR, reason::NEED_LOBBY));
            };
            if epoch != lobby.epoch {
                self.stats.stale_epochs += 1;
                return Ok(());
            }
            if !lobby.migratable || lobby.host == conn {
                return Ok(());
            }
            lobby
                .members
                .iter()
                .filter(|m| **m != lobby.host && self.migration_of(**m).opted_in())
                .count()
        };
        self.stats.host_lost_reports += 1;
        let probe_timeout = self.config.host_probe_timeout;
        let lobby = self.lobbies.get_mut(name).expect("checked above");
        lobby
            .reports
            .retain(|(r, at)| *r != conn && at.checked_add(window).is_some_and(|end| end > now));
        lobby.reports.push((conn, now));
        let needed = 2.max(opted_in.div_ceil(2));
        if lobby.reports.len() >= needed {
            self.replace_lost_host(name);
            return Ok(());
        }
        match lobby.probe.as_mut() {
            Some(waiting) => {
                if !waiting.contains(&conn) {
                    waiting.push(conn);
                }
            }
            None => {
                lobby.probe = Some(vec![conn]);
                let (host, epoch) = (lobby.host, lobby.epoch);
                self.outputs.push_back(ServerOutput::Ping { to: host });
                if let Some(at) = now.checked_add(probe_timeout) {
                    self.deadlines
                        .insert((at, Deadline::Probe(name.to_owned(), epoch)));
                }
            }
        }
        Ok(())
    }

    /// Members reported the host lost and it did not answer (or enough of them did): fence it
    /// (HOST_CHANGE, then close 4010) and elect a successor.
    fn replace_lost_host(&mut self, name: &str) {
        let Some(lobby) = self.lobbies.get_mut(name) else {
            return;
        };
        lobby.probe = None;
        let host = lobby.host;
        self.depose(
            name,
            host,
            None,
            close::HOST_REPLACED_CODE,
            reason::HOST_REPLACED,
        );
    }

    fn send(&mut self, to: ConnectionId, message: &LobbyMessage) {
        self.outputs.push_back(ServerOutput::Send {
            to,
            text: message.encode(),
        });
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random id in 2..=2147483647 not used by another connection (1 is the hosts' id).
    fn fresh_peer_id(&mut self) -> PeerId {
        loop {
            let id = (self.next_random() & 0x7FFF_FFFF) as PeerId;
            if id > SERVER_ID && !self.by_peer_id.contains_key(&id) {
                return id;
            }
        }
    }

    fn fresh_lobby_name(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        loop {
            let name: String = (0..16)
                .map(|_| ALPHABET[(self.next_random() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            if !self.lobbies.contains_key(&name) {
                return name;
            }
        }
    }
}

/// PEER_CONNECT's data for a peer that opted in as `peer`, told to a receiver that opted in as
/// `receiver`: `"m"` when both take part in migration, else `""` (the Godot demo's).
fn capability(peer: Migration, receiver: Migration) -> &'static str {
    if peer.opted_in() && receiver.opted_in() {
        "m"
    } else {
        ""
    }
}

fn succession_message(epoch: u32, line: &[PeerId]) -> LobbyMessage {
    let mut data = format!("{epoch}:");
    for (i, id) in line.iter().enumerate() {
        let _ = write!(data, "{}{id}", if i == 0 { "" } else { "," });
    }
    LobbyMessage::new(MessageKind::Succession, 0, data)
}

/// The key an address is counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    struct Harness {
        server: LobbyServer,
        now: Instant,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                server: LobbyServer::new(LobbyServerConfig::default(), 7),
                now: Instant::now(),
            }
        }
        fn text(&mut self, conn: ConnectionId, text: &str) -> Vec<ServerOutput> {
            self.server.handle_text(self.now, conn, text);
            self.drain()
        }
        fn drain(&mut self) -> Vec<ServerOutput> {
            std::iter::from_fn(|| self.server.poll_output()).collect()
        }
        fn messages_to(out: &[ServerOutput], conn: ConnectionId) -> Vec<LobbyMessage> {
            out.iter()
                .filter_map(|o| match o {
                    ServerOutput::Send { to, text } if *to == conn => {
                        LobbyMessage::decode(text).ok()
                    }
                    _ => None,
                })
                .collect()
        }
        /// Connects `conn`, joins `lobby`, returns (its peer id, the lobby name).
        fn join(&mut self, conn: ConnectionId, lobby: &str, mesh: bool) -> (i64, String) {
            self.server.connect(self.now, conn, LOCAL);
            let join =
                LobbyMessage::new(MessageKind::Join, if mesh { 0 } else { 1 }, lobby).encode();
            let out = self.text(conn, &join);
            let mine = Self::messages_to(&out, conn);
            let id = mine
                .iter()
                .find(|m| m.kind == MessageKind::Id)
                .expect("ID")
                .id;
            let name = mine
                .iter()
                .find(|m| m.kind == MessageKind::Join)
                .expect("JOIN")
                .data
                .clone();
            (id, name)
        }
    }

    #[test]
    fn durations_too_long_for_the_clock_mean_never() {
        let mut h = Harness::new();
        h.server = LobbyServer::new(
            LobbyServerConfig {
                join_timeout: Duration::MAX,
                seal_close_after: Duration::MAX,
                member_idle_timeout: Some(Duration::MAX),
                ..LobbyServerConfig::default()
            },
            7,
        );
        h.server.connect(h.now, 9, LOCAL);
        let (_, name) = h.join(1, "", true);
        h.text(1, &LobbyMessage::new(MessageKind::Seal, 0, name).encode());
        h.server
            .handle_timeout(h.now + Duration::from_secs(86_400 * 365));
        let out = h.drain();
        assert_eq!(closed(&out, 9), None, "no join timeout");
        assert_eq!(closed(&out, 1), None, "no idle or seal close");
    }

    fn closed(out: &[ServerOutput], conn: ConnectionId) -> Option<(u16, &'static str)> {
        out.iter().find_map(|o| match o {
            ServerOutput::Close { to, code, reason } if *to == conn => Some((*code, *reason)),
            _ => None,
        })
    }

    #[test]
    fn join_announces_peers_both_ways_and_the_host_is_1() {
        let mut h = Harness::new();
        let (host, name) = h.join(10, "", true);
        assert_eq!(host, 1);
        assert_eq!(name.len(), 16);
        h.server.connect(h.now, 11, LOCAL);
        let out = h.text(
            11,
            &LobbyMessage::new(MessageKind::Join, 0, name.clone()).encode(),
        );
        let to_new = Harness::messages_to(&out, 11);
        assert_eq!(to_new[0].kind, MessageKind::Id);
        assert_eq!(to_new[0].data, "true");
        let new_id = to_new[0].id;
        assert!(new_id > 1);
        assert_eq!(
            to_new[1],
            LobbyMessage::new(MessageKind::PeerConnect, 1, "")
        );
        assert_eq!(to_new[2], LobbyMessage::new(MessageKind::Join, 0, name));
        assert_eq!(
            Harness::messages_to(&out, 10),
            vec![LobbyMessage::new(MessageKind::PeerConnect, new_id, "")]
        );
    }

    #[test]
    fn a_client_server_lobby_shows_each_client_only_the_host_as_godots_demo_server_does() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", false);
        h.join(11, &name, false);
        h.server.connect(h.now, 12, LOCAL);
        let out = h.text(12, &join_frame(&name));
        let second = h.server.connections[&12].peer_id;
        assert_eq!(
            Harness::messages_to(&out, 12),
            vec![
                LobbyMessage::new(MessageKind::Id, second.into(), ""),
                LobbyMessage::new(MessageKind::PeerConnect, 1, ""),
                LobbyMessage::new(MessageKind::Join, 0, name.clone()),
            ],
            "the newcomer hears of the host only"
        );
        assert_eq!(
            Harness::messages_to(&out, 10),
            vec![LobbyMessage::new(
                MessageKind::PeerConnect,
                second.into(),
                ""
            )]
        );
        assert!(
            Harness::messages_to(&out, 11).is_empty(),
            "the first client never hears of the second"
        );
        assert_eq!(h.server.stats().announcements, 4, "two per client");
        // A client leaving is announced to every member, as Godot's server does.
        h.server.disconnect(12);
        let out = h.drain();
        for member in [10, 11] {
            assert_eq!(
                Harness::messages_to(&out, member),
                vec![LobbyMessage::new(
                    MessageKind::PeerDisconnect,
                    second.into(),
                    ""
                )]
            );
        }
    }

    #[test]
    fn signals_are_relayed_with_the_source_id() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", false);
        let (b, _) = h.join(11, &name, false);
        let out = h.text(
            11,
            &LobbyMessage::new(MessageKind::Offer, 1, "sdp-b").encode(),
        );
        assert_eq!(
            Harness::messages_to(&out, 10),
            vec![LobbyMessage::new(MessageKind::Offer, b, "sdp-b")]
        );
        let out = h.text(
            10,
            &LobbyMessage::new(MessageKind::Answer, b, "sdp-a").encode(),
        );
        assert_eq!(
            Harness::messages_to(&out, 11),
            vec![LobbyMessage::new(MessageKind::Answer, 1, "sdp-a")]
        );
    }

    #[test]
    fn a_message_for_another_lobby_closes_only_the_sender() {
        let mut h = Harness::new();
        let (_, first) = h.join(10, "", true);
        let (a, _) = h.join(11, &first, true);
        let (_, second) = h.join(20, "", true);
        let (_, _) = h.join(21, &second, true);
        let out = h.text(21, &LobbyMessage::new(MessageKind::Offer, a, "x").encode());
        assert_eq!(closed(&out, 21), Some((4000, reason::INVALID_DEST)));
        assert!(
            Harness::messages_to(&out, 11).is_empty(),
            "nothing crosses lobbies"
        );
        // The other lobby goes on.
        let out = h.text(11, &LobbyMessage::new(MessageKind::Offer, 1, "y").encode());
        assert_eq!(Harness::messages_to(&out, 10).len(), 1);
        assert_eq!(h.server.lobby_count(), 2);
    }

    /// A member that leaves races the signals already on their way to it: the host's answer
    /// that crosses the PEER_DISCONNECT is dropped and counted, not a reason to close the
    /// host (the reference server closes it, and a migratable lobby would then replace a
    /// live host). An id never in the lobby is still a protocol error.
    #[test]
    fn a_signal_for_a_member_that_just_left_is_dropped_not_fatal() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", false);
        let (gone, _) = h.join(11, &name, false);
        h.join(12, &name, false);
        h.server.disconnect(11);
        h.drain();
        let out = h.text(
            10,
            &LobbyMessage::new(MessageKind::Answer, gone, "sdp").encode(),
        );
        assert_eq!(closed(&out, 10), None, "the host stays");
        assert!(out.is_empty(), "nothing relayed: {out:?}");
        assert_eq!(h.server.stats().signals_to_departed, 1);
        let out = h.text(
            10,
            &LobbyMessage::new(MessageKind::Answer, 999, "sdp").encode(),
        );
        assert_eq!(closed(&out, 10), Some((4000, reason::INVALID_DEST)));
    }

    #[test]
    fn bad_frames_get_a_clear_close_reason() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", true);
        h.join(11, &name, true);
        h.join(12, &name, true);
        assert_eq!(
            closed(&h.text(11, "{not json"), 11),
            Some((4000, reason::INVALID_FORMAT))
        );
        assert_eq!(
            closed(&h.text(12, r#"{"type":42,"id":1}"#), 12),
            Some((4000, reason::INVALID_CMD))
        );
        h.server.connect(h.now, 13, LOCAL);
        assert_eq!(
            closed(&h.text(13, r#"{"type":4,"id":1,"data":"x"}"#), 13),
            Some((4000, reason::NEED_LOBBY))
        );
        h.server.connect(h.now, 14, LOCAL);
        let big = format!(r#"{{"type":0,"id":0,"data":"{}"}}"#, "x".repeat(70_000));
        assert_eq!(closed(&h.text(14, &big), 14), Some((1009, reason::TOO_BIG)));
        h.server.connect(h.now, 15, LOCAL);
        h.server.handle_binary(15);
        assert_eq!(
            closed(&h.drain(), 15),
            Some((4000, reason::INVALID_TRANSFER_MODE))
        );
        h.server.connect(h.now, 16, LOCAL);
        assert_eq!(
            closed(&h.text(16, r#"{"type":0,"id":0,"data":"NOPE"}"#), 16),
            Some((4000, reason::LOBBY_DOES_NOT_EXIST))
        );
        let out = h.text(10, r#"{"type":0,"id":0,"data":""}"#);
        assert_eq!(closed(&out, 10), Some((4000, reason::ALREADY_IN_LOBBY)));
    }

    #[test]
    fn a_connection_that_never_joins_is_closed_after_the_join_timeout() {
        let mut h = Harness::new();
        h.server.connect(h.now, 1, LOCAL);
        h.join(2, "", true);
        assert_eq!(
            h.server.poll_timeout(),
            Some(h.now + Duration::from_secs(1))
        );
        h.server.handle_timeout(h.now + Duration::from_millis(999));
        assert!(h.drain().is_empty());
        h.server.handle_timeout(h.now + Duration::from_secs(1));
        let out = h.drain();
        assert_eq!(
            out,
            vec![ServerOutput::Close {
                to: 1,
                code: 4000,
                reason: reason::NO_LOBBY
            }]
        );
        assert_eq!(h.server.connection_count(), 1);
    }

    #[test]
    fn a_leaving_peer_is_announced_and_a_leaving_host_closes_the_lobby() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", true);
        let (b, _) = h.join(11, &name, true);
        h.join(12, &name, true);
        h.server.disconnect(11);
        let out = h.drain();
        for conn in [10, 12] {
            assert_eq!(
                Harness::messages_to(&out, conn),
                vec![LobbyMessage::new(MessageKind::PeerDisconnect, b, "")]
            );
        }
        h.server.disconnect(10);
        assert_eq!(
            closed(&h.drain(), 12),
            Some((4000, reason::HOST_DISCONNECTED))
        );
        assert_eq!(h.server.lobby_count(), 0);
        assert_eq!(h.server.connection_count(), 0);
    }

    #[test]
    fn seal_refuses_joins_and_closes_the_lobby_later() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", true);
        h.join(11, &name, true);
        h.join(13, &name, true);
        let out = h.text(11, r#"{"type":7,"id":0}"#);
        assert_eq!(closed(&out, 11), Some((4000, reason::ONLY_HOST_CAN_SEAL)));
        let out = h.text(10, r#"{"type":7,"id":0}"#);
        assert_eq!(
            Harness::messages_to(&out, 10),
            vec![LobbyMessage::new(MessageKind::Seal, 0, "")]
        );
        h.server.connect(h.now, 12, LOCAL);
        let out = h.text(12, &LobbyMessage::new(MessageKind::Join, 0, name).encode());
        assert_eq!(closed(&out, 12), Some((4000, reason::LOBBY_IS_SEALED)));
        h.server.handle_timeout(h.now + Duration::from_secs(10));
        let out = h.drain();
        for member in [10, 13] {
            assert_eq!(closed(&out, member), Some((1000, reason::SEAL_COMPLETE)));
            assert!(
                Harness::messages_to(&out, member).is_empty(),
                "no PEER_DISCONNECT"
            );
        }
        assert_eq!(h.server.lobby_count(), 0);
    }

    #[test]
    fn peer_ids_are_unique_and_never_0_or_1() {
        let mut h = Harness::new();
        let mut seen = std::collections::HashSet::new();
        for conn in 0..500 {
            h.server.connect(h.now, conn, LOCAL);
            let id = h.server.connections[&conn].peer_id;
            assert!(id > 1);
            assert!(seen.insert(id));
        }
    }

    fn config(f: impl FnOnce(&mut LobbyServerConfig)) -> Harness {
        let mut config = LobbyServerConfig::default();
        f(&mut config);
        Harness {
            server: LobbyServer::new(config, 7),
            now: Instant::now(),
        }
    }

    fn join_frame(lobby: &str) -> String {
        LobbyMessage::new(MessageKind::Join, 0, lobby).encode()
    }

    #[test]
    fn a_full_lobby_refuses_the_next_member_and_the_others_never_hear_of_it() {
        let mut h = config(|c| c.max_lobby_size = 3);
        let (_, name) = h.join(10, "", true);
        h.join(11, &name, true);
        h.join(12, &name, true);
        h.server.connect(h.now, 13, LOCAL);
        let out = h.text(13, &join_frame(&name));
        assert_eq!(closed(&out, 13), Some((4000, reason::LOBBY_IS_FULL)));
        assert_eq!(out.len(), 1, "no announcement of the refused member");
        // A place frees up when someone leaves.
        h.server.disconnect(12);
        h.drain();
        h.join(14, &name, true);
    }

    #[test]
    fn lobbies_per_address_are_capped_and_ipv6_counts_per_64() {
        let mut h = config(|c| c.max_lobbies_per_address = 2);
        let a: IpAddr = "2001:db8::1".parse().expect("addr");
        let same_64: IpAddr = "2001:db8::ffff:2".parse().expect("addr");
        let other: IpAddr = "2001:db8:0:1::1".parse().expect("addr");
        for (conn, from) in [(1, a), (2, same_64)] {
            h.server.connect(h.now, conn, from);
            let out = h.text(conn, &join_frame(""));
            assert!(closed(&out, conn).is_none());
        }
        h.server.connect(h.now, 3, a);
        let out = h.text(3, &join_frame(""));
        assert_eq!(
            closed(&out, 3),
            Some((4000, reason::TOO_MANY_LOBBIES_FROM_ADDRESS))
        );
        h.server.connect(h.now, 4, other);
        assert!(closed(&h.text(4, &join_frame("")), 4).is_none());
        // Joining someone else's lobby is never limited, and a closed lobby frees its slot.
        h.server.disconnect(1);
        h.drain();
        h.server.connect(h.now, 5, a);
        assert!(closed(&h.text(5, &join_frame("")), 5).is_none());
        assert_eq!(
            address_key("::ffff:10.1.2.3".parse().expect("addr")),
            IpAddr::from([10, 1, 2, 3])
        );
    }

    #[test]
    fn an_idle_member_is_closed_and_one_that_talks_is_not() {
        let idle = Duration::from_secs(30);
        let mut h = config(|c| c.member_idle_timeout = Some(idle));
        let (_, name) = h.join(10, "", true);
        let (quiet, _) = h.join(11, &name, true);
        let start = h.now;
        // The host keeps signalling the quiet member every 10 s.
        for step in 1..=4u32 {
            h.now = start + Duration::from_secs(10) * step;
            h.server.handle_timeout(h.now);
            let out = h.drain();
            if step < 3 {
                assert!(out.iter().all(|o| !matches!(o, ServerOutput::Close { .. })));
            } else if step == 3 {
                assert_eq!(closed(&out, 11), Some((close::IDLE, reason::IDLE_TOO_LONG)));
                assert_eq!(
                    Harness::messages_to(&out, 10),
                    vec![LobbyMessage::new(MessageKind::PeerDisconnect, quiet, "")]
                );
            }
            if step < 3 {
                let out = h.text(
                    10,
                    &LobbyMessage::new(MessageKind::Offer, quiet, "x").encode(),
                );
                assert_eq!(Harness::messages_to(&out, 11).len(), 1);
            }
        }
        assert_eq!(h.server.connection_count(), 1, "the talking host stays");
    }

    #[test]
    fn an_unknown_lobby_is_handed_off_in_a_cluster() {
        let mut h = config(|c| c.handoff_unknown_lobbies = true);
        h.server.connect(h.now, 5, LOCAL);
        let frame = join_frame("ELSEWHERE");
        let out = h.text(5, &frame);
        assert_eq!(
            out,
            vec![ServerOutput::Handoff {
                conn: 5,
                lobby: "ELSEWHERE".into(),
                join: frame
            }]
        );
        assert!(!h.server.is_connected(5), "forgotten, not closed");
        h.server.handle_timeout(h.now + Duration::from_secs(5));
        assert!(
            h.drain().is_empty(),
            "no join timeout for a handed-off connection"
        );
    }

    #[test]
    fn lobbies_report_their_life_and_close_all_closes_everyone_once() {
        let mut h = Harness::new();
        h.server.connect(h.now, 1, LOCAL);
        let out = h.text(1, &join_frame(""));
        let name = match &out[0] {
            ServerOutput::LobbyOpened { name, host: 1 } => name.clone(),
            other => panic!("expected LobbyOpened, got {other:?}"),
        };
        h.join(2, &name, true);
        h.server.connect(h.now, 3, LOCAL);
        h.server.close_all(1001, "Server shutting down");
        let out = h.drain();
        for conn in 1..=3 {
            assert_eq!(closed(&out, conn), Some((1001, "Server shutting down")));
        }
        assert!(out.contains(&ServerOutput::LobbyClosed { name }));
        assert!(
            out.iter().all(|o| !matches!(o, ServerOutput::Send { .. })),
            "no announcements to members that are closed anyway"
        );
        assert_eq!(h.server.connection_count() + h.server.lobby_count(), 0);
    }
}
