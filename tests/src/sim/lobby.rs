//! The lobby server in the loop: the sans-IO [`LobbyServer`] on the world's clock, members
//! talking to it over simulated WebSockets (reliable, ordered, with a one-way latency per
//! connection), and each member's side run as the tokio adapter's `join` runs it
//! (`io-tokio/src/lobby_client.rs`): JOIN, then ID and a PEER_CONNECT per member, then the
//! lobby's name; the machine is created for the assigned id (`LobbyClient::create_mesh`); the
//! early events are applied once ICE gathering completed (or after 2 s); from then on every
//! frame goes through `LobbyClient::apply` and every signal of the machine becomes a frame.
//!
//! The server side keeps `rtcmesh-signal`'s keepalive: a ping every `ping_interval`, and a
//! connection that sent nothing (not even a pong) for `ping_interval + pong_timeout` is closed
//! with 4004. So a member can go two ways: [`World::crash`] closes its WebSocket at once (the
//! operating system ends the TCP connection of a dead process), [`World::vanish`] leaves it
//! half-open (power loss, a cable pulled): the server notices only by its keepalive.
//!
//! Members may opt in to host migration ([`JoinOptions::with_migration`], the `?migrate=1` of
//! a real WebSocket URL): the server's probe of a host reported lost is a ping on its
//! WebSocket, answered by a live member's side at once and by a dead or vanished one never.
//! [`World::report_host_lost`] and [`World::hand_over`] send the client's frames.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rtcmesh::lobby::{
    close, ConnectOptions, ConnectionId, LobbyClient, LobbyEvent, LobbyServer, LobbyServerConfig,
    Migration, ServerOutput,
};
use rtcmesh::{LobbyRequest, Machine, Mesh, MeshConfig, PeerId};

use crate::nat::NatBehavior;
use crate::sim::node::{Driven, Joining, NodeId, Recorded, Running};
use crate::sim::{Scheduled, World};

/// How long a joining member waits for ICE gathering before applying what the lobby
/// announced (the tokio adapter's `GATHERING_WAIT`).
pub const GATHERING_WAIT: Duration = Duration::from_secs(2);

/// `rtcmesh-signal`'s close code when a connection stopped answering pings.
pub const NO_PONG: u16 = 4004;

/// A WebSocket frame in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// The connection opened (the handshake reached the server).
    Open,
    /// A text frame.
    Text(String),
    /// A keepalive ping (server → member).
    Ping,
    /// Its answer.
    Pong,
    /// A close frame with its code and reason.
    Close(u16, String),
    /// The TCP connection ended without a close frame (the process died).
    Gone,
}

/// One WebSocket connection as the network and the server see it.
struct Socket {
    node: NodeId,
    /// One-way latency, both ways.
    latency: Duration,
    /// The last arrival scheduled each way, so frames keep their order.
    last_up: Instant,
    last_down: Instant,
    /// The server has it open (it connected and was not closed).
    open: bool,
    /// The last frame the server heard on it.
    heard: Instant,
    /// The server's next ping.
    next_ping: Instant,
    /// What its request asked for (the URL's query).
    options: ConnectOptions,
}

/// The lobby server and the WebSockets to it.
pub struct SimLobby {
    /// The machine under test.
    pub server: LobbyServer,
    /// How often the server pings each connection (`rtcmesh-signal`'s default: 10 s).
    pub ping_interval: Duration,
    /// A connection silent for `ping_interval` plus this is closed with [`NO_PONG`] (10 s).
    pub pong_timeout: Duration,
    sockets: BTreeMap<ConnectionId, Socket>,
    next_conn: ConnectionId,
    /// Lobbies the server opened, by name, in order.
    pub opened: Vec<String>,
    /// Lobbies the server closed, in order.
    pub closed: Vec<String>,
    /// Every close the server sent: (node, code, reason).
    pub closes: Vec<(NodeId, u16, String)>,
    /// Every host change the server made: (lobby, new host's connection, epoch).
    pub host_changes: Vec<(String, ConnectionId, u32)>,
}

impl SimLobby {
    fn new(config: LobbyServerConfig, seed: u64) -> SimLobby {
        SimLobby {
            server: LobbyServer::new(config, seed),
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(10),
            sockets: BTreeMap::new(),
            next_conn: 1,
            opened: Vec::new(),
            closed: Vec::new(),
            closes: Vec::new(),
            host_changes: Vec::new(),
        }
    }

    /// The node on the other end of connection `conn` (as in [`SimLobby::host_changes`]).
    pub fn node_of(&self, conn: ConnectionId) -> Option<NodeId> {
        self.sockets.get(&conn).map(|s| s.node)
    }

    /// When the server or its keepalive next has something to do.
    fn deadline(&self) -> Option<Instant> {
        let grace = self.ping_interval + self.pong_timeout;
        let keepalive = self
            .sockets
            .values()
            .filter(|s| s.open)
            .map(|s| s.next_ping.min(s.heard + grace));
        self.server
            .poll_timeout()
            .into_iter()
            .chain(keepalive)
            .min()
    }
}

/// How a member joins the lobby.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The lobby's name; `""` creates one (and makes the member its host, id 1).
    pub lobby: String,
    /// A mesh lobby (`true`) or a client/server lobby.
    pub mesh: bool,
    /// The configuration of the mesh the member creates once it has an id.
    pub config: MeshConfig,
    /// One-way latency of its WebSocket to the server.
    pub latency: Duration,
    /// `add_peer`'s `unreliable_lifetime` for every peer the lobby announces.
    pub unreliable_lifetime: i32,
    /// A NAT of its own in front of it, if any.
    pub nat: Option<NatBehavior>,
    /// Host migration (`?migrate=…` on its WebSocket URL); off by default.
    pub migration: Migration,
}

impl JoinOptions {
    /// Creates a new lobby (mesh or client/server), 10 ms from the server.
    pub fn create(mesh: bool) -> JoinOptions {
        JoinOptions::join("", mesh)
    }

    /// Joins the lobby called `name`, 10 ms from the server.
    pub fn join(name: &str, mesh: bool) -> JoinOptions {
        JoinOptions {
            lobby: name.to_owned(),
            mesh,
            config: MeshConfig::default(),
            latency: Duration::from_millis(10),
            unreliable_lifetime: 1,
            nat: None,
            migration: Migration::Off,
        }
    }

    /// Opts in to host migration (`?migrate=1` for [`Migration::Eligible`]).
    pub fn with_migration(mut self, migration: Migration) -> JoinOptions {
        self.migration = migration;
        self
    }

    /// With this mesh configuration.
    pub fn with_config(mut self, config: MeshConfig) -> JoinOptions {
        self.config = config;
        self
    }

    /// With this one-way WebSocket latency.
    pub fn with_latency(mut self, latency: Duration) -> JoinOptions {
        self.latency = latency;
        self
    }

    /// Behind a NAT of its own.
    pub fn behind_nat(mut self, behavior: NatBehavior) -> JoinOptions {
        self.nat = Some(behavior);
        self
    }
}

type Make = Box<dyn FnOnce(Mesh) -> Box<dyn Driven>>;

/// A node's side of the lobby: its WebSocket as its client sees it, and the protocol state the
/// tokio adapter's `join` keeps.
pub struct Member {
    /// Its connection id at the server.
    pub conn: ConnectionId,
    /// The protocol client.
    pub client: LobbyClient,
    /// Its WebSocket is open (from its side).
    pub open: bool,
    /// Its machine exists (the lobby assigned an id and told the lobby's name).
    pub joined: bool,
    /// The host sealed the lobby: peers leaving it are reported but not removed.
    pub sealed: bool,
    /// Every lobby event it decoded, in order.
    pub events: Vec<LobbyEvent>,
    /// Frames dropped: malformed, refused by the machine, or signals with the WebSocket closed.
    pub rejected: u64,
    /// The close frame the server sent it, if any.
    pub closed: Option<(u16, String)>,
    /// What its machine asked of the lobby (host migration), in order.
    pub requests: Vec<LobbyRequest>,
    /// Why joining failed, if it did.
    pub failed: Option<String>,
    config: MeshConfig,
    lifetime: i32,
    make: Option<Make>,
    /// Events before the lobby's name, applied once gathering completed.
    early: Vec<LobbyEvent>,
    /// When the early events are applied at the latest (while they wait).
    apply_by: Option<Instant>,
    /// Frames that arrived while the early events wait, in order.
    backlog: VecDeque<String>,
}

impl Member {
    /// Its lobby's name, once joined.
    pub fn lobby(&self) -> Option<&str> {
        self.joined.then(|| self.client.lobby())
    }

    /// The peers the lobby announced joining, in order.
    pub fn announced(&self) -> Vec<PeerId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                LobbyEvent::PeerJoined(id) => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// The peers the lobby announced leaving, in order.
    pub fn departed(&self) -> Vec<PeerId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                LobbyEvent::PeerLeft(id) => Some(*id),
                _ => None,
            })
            .collect()
    }
}

impl World {
    /// Starts the lobby server (a [`LobbyServer`] seeded from the world's seed).
    pub fn add_lobby(&mut self, config: LobbyServerConfig) {
        self.lobby = Some(SimLobby::new(config, self.seed ^ 0x10BB_1E5E));
    }

    /// The lobby server (panics if the world has none).
    pub fn lobby(&self) -> &SimLobby {
        self.lobby.as_ref().expect("no lobby: World::add_lobby")
    }

    /// The lobby server, mutably.
    pub fn lobby_mut(&mut self) -> &mut SimLobby {
        self.lobby.as_mut().expect("no lobby: World::add_lobby")
    }

    /// A member connects to the lobby server and joins as `options` say; once the lobby
    /// assigns its id, its machine is `make(mesh)` (the mesh the lobby asks for: mesh, server
    /// or client). Returns its node, which runs nothing until then ([`Node::is_machine`]).
    ///
    /// [`Node::is_machine`]: crate::Node::is_machine
    pub fn join_lobby<M>(
        &mut self,
        options: JoinOptions,
        make: impl FnOnce(Mesh) -> M + 'static,
    ) -> NodeId
    where
        M: Machine + 'static,
        M::Event: Recorded,
    {
        let make: Make = Box::new(move |mesh| Box::new(Running::new(make(mesh))));
        let n = match options.nat {
            Some(behavior) => self.place_behind_nat(Box::new(Joining), behavior),
            None => self.place_public(Box::new(Joining)),
        };
        let now = self.now;
        let lobby = self.lobby_mut();
        let conn = lobby.next_conn;
        lobby.next_conn += 1;
        lobby.sockets.insert(
            conn,
            Socket {
                node: n,
                latency: options.latency,
                last_up: now,
                last_down: now,
                open: false,
                heard: now,
                next_ping: now,
                options: ConnectOptions::default().with_migration(options.migration),
            },
        );
        let client =
            LobbyClient::new(options.lobby.clone(), options.mesh).with_migration(options.migration);
        let join = client.join_message();
        self.nodes[n].lobby = Some(Member {
            conn,
            client,
            open: true,
            joined: false,
            sealed: false,
            events: Vec::new(),
            rejected: 0,
            closed: None,
            requests: Vec::new(),
            failed: None,
            config: options.config,
            lifetime: options.unreliable_lifetime,
            make: Some(make),
            early: Vec::new(),
            apply_by: None,
            backlog: VecDeque::new(),
        });
        self.ws_send(conn, true, Frame::Open);
        self.ws_send(conn, true, Frame::Text(join));
        n
    }

    /// A member creates a lobby and the world runs until it is the lobby's host (at most 10 s
    /// of simulated time). Returns its node and the lobby's name.
    pub fn open_lobby<M>(
        &mut self,
        options: JoinOptions,
        make: impl FnOnce(Mesh) -> M + 'static,
    ) -> (NodeId, String)
    where
        M: Machine + 'static,
        M::Event: Recorded,
    {
        let n = self.join_lobby(options, make);
        assert!(
            self.run_until(Duration::from_secs(10), |w| w.joined(n)),
            "the host did not get a lobby: {:?}",
            self.member(n).failed
        );
        let name = self.member(n).client.lobby().to_owned();
        (n, name)
    }

    /// Node `n`'s side of the lobby (panics if it did not join one).
    pub fn member(&self, n: NodeId) -> &Member {
        self.nodes[n]
            .lobby
            .as_ref()
            .expect("node is not a lobby member")
    }

    /// Whether node `n` joined its lobby and runs its machine.
    pub fn joined(&self, n: NodeId) -> bool {
        self.nodes[n].lobby.as_ref().is_some_and(|m| m.joined)
    }

    /// Node `n` (the host) seals its lobby.
    pub fn seal(&mut self, n: NodeId) {
        let member = self.nodes[n].lobby.as_ref().expect("not a lobby member");
        if member.open {
            let (conn, text) = (member.conn, member.client.seal_message());
            self.ws_send(conn, true, Frame::Text(text));
        }
    }

    /// Node `n` (a client in a migratable lobby) reports its path to peer 1 dead (HOST_LOST
    /// with the epoch it knows). Returns `false` when it cannot (migration off, not a client,
    /// WebSocket closed).
    pub fn report_host_lost(&mut self, n: NodeId) -> bool {
        let Some(member) = self.nodes[n].lobby.as_ref().filter(|m| m.open) else {
            return false;
        };
        let Ok(text) = member.client.host_lost_message() else {
            return false;
        };
        let conn = member.conn;
        self.ws_send(conn, true, Frame::Text(text));
        true
    }

    /// Node `n` (the host of a migratable lobby) hands it over to peer `to` (`None`: the next
    /// in line). Returns `false` when it cannot (migration off, not the host, WebSocket
    /// closed).
    pub fn hand_over(&mut self, n: NodeId, to: Option<PeerId>) -> bool {
        let Some(member) = self.nodes[n].lobby.as_ref().filter(|m| m.open) else {
            return false;
        };
        let Ok(text) = member.client.hand_over_message(to) else {
            return false;
        };
        let conn = member.conn;
        self.ws_send(conn, true, Frame::Text(text));
        true
    }

    /// Node `n` leaves its lobby cleanly: it closes its WebSocket (1000), its machine runs on.
    pub fn leave_lobby(&mut self, n: NodeId) {
        let Some(member) = self.nodes[n].lobby.as_mut() else {
            return;
        };
        if std::mem::replace(&mut member.open, false) {
            let conn = member.conn;
            self.ws_send(conn, true, Frame::Close(1000, String::new()));
        }
    }

    /// Node `n`'s process dies: it is gone from the network, and its WebSocket closes at once
    /// (the server hears the connection end one latency later). For a node that is not a
    /// lobby member this is [`vanish`](World::vanish).
    pub fn crash(&mut self, n: NodeId) {
        self.nodes[n].alive = false;
        let Some(member) = self.nodes[n].lobby.as_mut() else {
            return;
        };
        if std::mem::replace(&mut member.open, false) {
            let conn = member.conn;
            self.ws_send(conn, true, Frame::Gone);
        }
    }

    /// Sets the one-way latency of node `n`'s WebSocket (frames in flight keep their times;
    /// later ones never overtake them).
    pub fn set_lobby_latency(&mut self, n: NodeId, latency: Duration) {
        let conn = self.member(n).conn;
        if let Some(s) = self.lobby_mut().sockets.get_mut(&conn) {
            s.latency = latency;
        }
    }

    /// Puts a frame on connection `conn`, towards the server or towards the member.
    pub(crate) fn ws_send(&mut self, conn: ConnectionId, to_server: bool, frame: Frame) {
        let now = self.now;
        let Some(socket) = self.lobby_mut().sockets.get_mut(&conn) else {
            return;
        };
        let last = if to_server {
            &mut socket.last_up
        } else {
            &mut socket.last_down
        };
        let at = (now + socket.latency).max(*last);
        *last = at;
        self.schedule(
            at,
            Scheduled::Frame {
                conn,
                to_server,
                frame,
            },
        );
    }

    /// A frame arrives at its end.
    pub(crate) fn deliver_frame(&mut self, conn: ConnectionId, to_server: bool, frame: Frame) {
        if to_server {
            self.server_receives(conn, frame);
        } else {
            self.member_receives(conn, frame);
        }
    }

    fn server_receives(&mut self, conn: ConnectionId, frame: Frame) {
        let now = self.now;
        let Some(node) = self.lobby().sockets.get(&conn).map(|s| s.node) else {
            return;
        };
        let address = self.nodes[node].public.ip();
        let lobby = self.lobby_mut();
        let ping_interval = lobby.ping_interval;
        let Some(socket) = lobby.sockets.get_mut(&conn) else {
            return;
        };
        socket.heard = now;
        match frame {
            Frame::Open => {
                socket.open = true;
                socket.next_ping = now + ping_interval;
                let options = socket.options;
                lobby.server.connect_with(now, conn, address, options);
            }
            Frame::Pong if socket.open => lobby.server.handle_pong(conn),
            Frame::Text(text) if socket.open => lobby.server.handle_text(now, conn, &text),
            Frame::Close(..) | Frame::Gone if socket.open => {
                socket.open = false;
                lobby.server.disconnect(conn);
            }
            _ => {}
        }
        self.lobby_flush();
    }

    /// Carries out what the server asked for.
    pub(crate) fn lobby_flush(&mut self) {
        while let Some(out) = self.lobby.as_mut().and_then(|l| l.server.poll_output()) {
            match out {
                ServerOutput::Send { to, text } => self.ws_send(to, false, Frame::Text(text)),
                ServerOutput::Close { to, code, reason } => self.server_closes(to, code, reason),
                ServerOutput::LobbyOpened { name, .. } => self.lobby_mut().opened.push(name),
                ServerOutput::LobbyClosed { name } => self.lobby_mut().closed.push(name),
                ServerOutput::Handoff { conn, .. } => {
                    // No other server shares the lobbies: what the signal server does then.
                    self.server_closes(conn, close::PROTOCOL_ERROR, close::LOBBY_DOES_NOT_EXIST)
                }
                ServerOutput::Ping { to } => self.ws_send(to, false, Frame::Ping),
                ServerOutput::HostChanged { name, host, epoch } => {
                    self.lobby_mut().host_changes.push((name, host, epoch))
                }
                _ => {}
            }
        }
    }

    /// The server closes `conn` (it already forgot it).
    fn server_closes(&mut self, conn: ConnectionId, code: u16, reason: &str) {
        let lobby = self.lobby_mut();
        let Some(socket) = lobby.sockets.get_mut(&conn) else {
            return;
        };
        socket.open = false;
        let node = socket.node;
        lobby.closes.push((node, code, reason.to_owned()));
        self.ws_send(conn, false, Frame::Close(code, reason.to_owned()));
    }

    /// When the lobby server has something to do next.
    pub(crate) fn lobby_deadline(&self) -> Option<Instant> {
        self.lobby.as_ref().and_then(SimLobby::deadline)
    }

    /// Runs what is due at the server: its own timeouts, then the keepalive.
    pub(crate) fn lobby_timeout(&mut self) {
        let now = self.now;
        let Some(lobby) = self.lobby.as_mut() else {
            return;
        };
        if lobby.server.poll_timeout().is_some_and(|t| t <= now) {
            lobby.server.handle_timeout(now);
        }
        let grace = lobby.ping_interval + lobby.pong_timeout;
        let interval = lobby.ping_interval;
        let mut silent = Vec::new();
        let mut pings = Vec::new();
        for (&conn, s) in lobby.sockets.iter_mut().filter(|(_, s)| s.open) {
            if s.heard + grace <= now {
                silent.push(conn);
            } else if s.next_ping <= now {
                s.next_ping = now + interval;
                pings.push(conn);
            }
        }
        for conn in silent {
            let lobby = self.lobby_mut();
            lobby.server.disconnect(conn);
            self.server_closes(conn, NO_PONG, "No reply to ping");
        }
        for conn in pings {
            self.ws_send(conn, false, Frame::Ping);
        }
        self.lobby_flush();
    }

    fn member_receives(&mut self, conn: ConnectionId, frame: Frame) {
        let Some(n) = self
            .lobby
            .as_ref()
            .and_then(|l| l.sockets.get(&conn))
            .map(|s| s.node)
        else {
            return;
        };
        let node = &mut self.nodes[n];
        let Some(member) = node.lobby.as_mut().filter(|m| m.open && node.alive) else {
            return; // a dead process or a closed socket reads nothing
        };
        match frame {
            Frame::Ping => self.ws_send(conn, true, Frame::Pong),
            Frame::Close(code, reason) => {
                member.open = false;
                if !member.joined {
                    member.failed = Some(format!("refused ({code}): {reason}"));
                }
                member.closed = Some((code, reason));
            }
            Frame::Gone => member.open = false,
            Frame::Text(text) if member.apply_by.is_some() => member.backlog.push_back(text),
            Frame::Text(text) => self.member_text(n, &text),
            Frame::Open | Frame::Pong => {}
        }
    }

    /// One text frame, as the `join` flow reads it.
    fn member_text(&mut self, n: NodeId, text: &str) {
        let now = self.now;
        let member = self.nodes[n].lobby.as_mut().expect("a member");
        let event = match member.client.handle_text(text) {
            Ok(event) => event,
            Err(e) if !member.joined => {
                // `join` gives up on a server that breaks the protocol, and drops the socket.
                member.failed = Some(format!("protocol: {e}"));
                member.open = false;
                let conn = member.conn;
                self.ws_send(conn, true, Frame::Gone);
                return;
            }
            Err(_) => {
                member.rejected += 1;
                return;
            }
        };
        member.events.push(event.clone());
        if !member.joined {
            match event {
                LobbyEvent::Joined(_) => self.member_creates(n),
                other => member.early.push(other),
            }
            return;
        }
        member.sealed |= event == LobbyEvent::Sealed;
        if member.sealed && matches!(event, LobbyEvent::PeerLeft(_)) {
            return;
        }
        let lifetime = member.lifetime;
        let node = &mut self.nodes[n];
        let lobby = &node.lobby.as_ref().expect("a member").client;
        let machine = node.driven.commands_mut().expect("joined");
        let applied = machine.apply(lobby, &event, now, lifetime);
        if !applied {
            self.nodes[n].lobby.as_mut().expect("a member").rejected += 1;
        }
        self.drain(n);
    }

    /// The lobby told the member its id and the lobby's name: create its machine.
    fn member_creates(&mut self, n: NodeId) {
        let now = self.now;
        let addr = self.nodes[n].addr;
        let member = self.nodes[n].lobby.as_mut().expect("a member");
        let Some(id) = member.client.id() else {
            member.failed = Some("the lobby named itself before assigning an id".into());
            return;
        };
        let mesh_lobby = member
            .early
            .iter()
            .any(|e| matches!(e, LobbyEvent::Assigned { mesh: true, .. }));
        let mesh = match LobbyClient::create_mesh(id, mesh_lobby, member.config.clone()) {
            Ok(mesh) => mesh,
            Err(e) => {
                member.failed = Some(format!("create: {e}"));
                return;
            }
        };
        let make = member.make.take().expect("created once");
        member.joined = true;
        member.apply_by = Some(now + GATHERING_WAIT);
        let mut driven = make(mesh);
        bind(driven.as_mut(), addr, now);
        self.nodes[n].driven = driven;
        self.drain(n);
        self.member_progress(n);
    }

    /// Applies the early events of a member that waited for gathering, once gathering
    /// completed or the wait is over, then the frames that arrived meanwhile.
    pub(crate) fn member_progress(&mut self, n: NodeId) {
        let now = self.now;
        let node = &mut self.nodes[n];
        let Some(member) = node.lobby.as_mut() else {
            return;
        };
        let Some(by) = member.apply_by else { return };
        let gathered = node
            .driven
            .commands()
            .is_some_and(|c| c.mesh().ice_gathering_complete());
        if !gathered && now < by {
            return;
        }
        member.apply_by = None;
        let (early, lifetime) = (std::mem::take(&mut member.early), member.lifetime);
        let mut rejected = 0;
        for event in &early {
            let lobby = &node.lobby.as_ref().expect("a member").client;
            let machine = node.driven.commands_mut().expect("joined");
            if !machine.apply(lobby, event, now, lifetime) {
                rejected += 1;
            }
        }
        let member = node.lobby.as_mut().expect("a member");
        member.rejected += rejected;
        let backlog = std::mem::take(&mut member.backlog);
        self.drain(n);
        for text in backlog {
            if self.nodes[n].lobby.as_ref().is_some_and(|m| m.open) {
                self.member_text(n, &text);
            }
        }
    }

    /// When a waiting member applies its early events at the latest.
    pub(crate) fn members_deadline(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.lobby.as_ref()?.apply_by)
            .min()
    }

    /// What member `n`'s machine asks of the lobby (host migration) goes out as a frame
    /// (dropped and counted if it cannot: WebSocket closed, migration off).
    pub(crate) fn member_request(&mut self, n: NodeId, request: LobbyRequest) {
        let member = self.nodes[n].lobby.as_mut().expect("a member");
        let text = match member.client.request_message(&request) {
            Ok(text) if member.open => text,
            _ => {
                member.rejected += 1;
                return;
            }
        };
        member.requests.push(request);
        let conn = member.conn;
        self.ws_send(conn, true, Frame::Text(text));
    }

    /// A signal of member `n`'s machine goes out as a lobby frame (dropped and counted if its
    /// WebSocket is closed).
    pub(crate) fn member_signal(&mut self, n: NodeId, signal: rtcmesh::OutgoingSignal) {
        let member = self.nodes[n].lobby.as_mut().expect("a member");
        if !member.open {
            member.rejected += 1;
            return;
        }
        let (conn, text) = (member.conn, member.client.signal_message(&signal));
        self.ws_send(conn, true, Frame::Text(text));
    }
}

/// Binds a machine to its node's address, as an application binds its socket, and gives it
/// the time (gathering starts before any peer exists).
pub(crate) fn bind(driven: &mut dyn Driven, addr: std::net::SocketAddr, now: Instant) {
    if let Some(commands) = driven.commands_mut() {
        commands
            .mesh_mut()
            .add_host_candidate(addr)
            .expect("loopback host candidate");
    }
    driven.handle_timeout(now);
}
