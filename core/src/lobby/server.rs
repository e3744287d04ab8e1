//! The lobby server as a state machine over connection ids: the behaviour of the Godot demo's
//! `server_node/server.js`, with its limits, timeouts and close reasons, plus the limits a
//! server on the internet needs (lobby size, lobbies per address, idle members).

use std::collections::{BTreeSet, HashMap, VecDeque};
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
/// let config = LobbyServerConfig {
///     max_lobby_size: 8, // a game for up to 8 players
///     member_idle_timeout: Some(Duration::from_secs(60)),
///     ..LobbyServerConfig::default()
/// };
/// let server = LobbyServer::new(config, rand_seed());
/// assert_eq!(server.config().max_lobby_size, 8);
/// # fn rand_seed() -> u64 { 7 }
/// ```
#[derive(Debug, Clone)]
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
        }
    }
}

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
}

/// Close codes and reasons, worded as in the reference server where it has them.
pub mod close {
    /// Protocol errors and refusals (the reference server's code for all of them).
    pub const PROTOCOL_ERROR: u16 = 4000;
    /// The reason for [`PROTOCOL_ERROR`] when a member was idle too long.
    pub const IDLE: u16 = 4003;
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
}

#[derive(Debug)]
struct Connection {
    /// The id this connection is known by in its lobby, unless it hosts it (then 1).
    peer_id: PeerId,
    address: IpAddr,
    lobby: Option<String>,
    /// The last frame from it, for the idle limit.
    last_frame: Instant,
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
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Join(ConnectionId),
    Idle(ConnectionId),
    SealClose(String),
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
            },
        );
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
                    // not run the "host left" path on the others.
                    if self.lobbies.get(&name).is_some_and(|lobby| lobby.sealed) {
                        self.close_lobby(&name, close::NORMAL, reason::SEAL_COMPLETE);
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
        match message.kind {
            MessageKind::Seal => self.seal(now, conn, lobby_name),
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
                let dest = dest.ok_or((PROTOCOL_ERROR, reason::INVALID_DEST))?;
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
        let (mesh, host) = (lobby.mesh, lobby.host);
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
        for member in members {
            let theirs = self.lobby_peer_id(member);
            self.send(
                member,
                &LobbyMessage::new(MessageKind::PeerConnect, assigned.into(), ""),
            );
            self.send(
                conn,
                &LobbyMessage::new(MessageKind::PeerConnect, theirs.into(), ""),
            );
            self.stats.announcements += 2;
        }
        if let Some(lobby) = self.lobbies.get_mut(&name) {
            lobby.members.push(conn);
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
        if lobby.host == conn {
            self.close_lobby(&name, PROTOCOL_ERROR, reason::HOST_DISCONNECTED);
        } else {
            let members = lobby.members.clone();
            for member in members {
                self.send(
                    member,
                    &LobbyMessage::new(MessageKind::PeerDisconnect, leaving.into(), ""),
                );
                self.stats.announcements += 1;
            }
        }
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
