//! The server loop: the one task that owns the [`LobbyServer`]. Connections report frames to
//! it; it routes the lobby server's outputs into each connection's bounded outbox, or through
//! Redis to the node holding the socket.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcmesh::lobby::{
    close as lobby_close, ConnectOptions, ConnectionId, LobbyServer, Migration, ServerOutput,
};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::close;
use super::cluster::{Body, Cluster, ClusterEvent, NodeId, NodeMessage};
use super::connection::{Frame, Incoming};
use super::metrics::Counters;
use super::outbox::Outbox;
use super::turn::{self, Allowance, TurnSecret};

/// Orders for the loop from the [`SignalServer`](super::SignalServer) handle.
pub(crate) enum Control {
    /// Close everyone, leave the cluster, wait for the close frames, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// Where a socket's frames go.
enum Route {
    /// To this node's lobby server.
    Local,
    /// Its JOIN names a lobby this node does not have; the owner is being looked up. The
    /// JOIN's permit is held, so the reader reads nothing more meanwhile.
    Pending {
        join: String,
        _permit: Option<OwnedSemaphorePermit>,
    },
    /// To the node that owns its lobby. `asked`: when its JOIN went there, until the owner
    /// answers (it answers at once; one that does not within
    /// [`Cluster::join_answer_timeout`] lost it).
    Proxied {
        owner: NodeId,
        asked: Option<Instant>,
    },
}

/// Who already knows that a connection ended, so is not told again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knows {
    Nobody,
    /// The lobby server running its lobby (it closed or handed off the connection itself, or
    /// its node told us, or is gone).
    Lobby,
}

struct Socket {
    outbox: Arc<Outbox>,
    address: IpAddr,
    route: Route,
    /// Host migration, as its URL asked (travels with its JOIN to another node).
    migration: Migration,
    /// It gets minted TURN credentials (it asked, and the server has a TURN secret).
    turn: Option<TurnState>,
}

/// A connection's minted TURN credentials.
struct TurnState {
    /// When fresh ones are sent unasked.
    remint_at: Instant,
    /// Its requests for fresh ones.
    allowance: Allowance,
}

pub(crate) struct Hub {
    lobby: LobbyServer,
    sockets: HashMap<ConnectionId, Socket>,
    /// Members of this node's lobbies whose sockets are on other nodes: our id for them →
    /// (their node, their id there).
    remote: HashMap<ConnectionId, (NodeId, ConnectionId)>,
    remote_ids: HashMap<(NodeId, ConnectionId), ConnectionId>,
    /// Lobbies this node hosts, with their hosts.
    owned: HashMap<String, ConnectionId>,
    /// Membership news for other nodes from while this node was detached (members it dropped
    /// from its lobbies, its clients it closed): told once it is attached again.
    untold: Vec<(NodeId, ConnectionId, Body)>,
    ids: Arc<AtomicU64>,
    counters: Arc<Counters>,
    cluster: Option<Cluster>,
    /// The permit of the frame being handled, for a JOIN that turns into a handoff.
    permit: Option<OwnedSemaphorePermit>,
    max_sockets: usize,
    close_timeout: Duration,
    ticks: u64,
    turn: Option<TurnSecret>,
    /// Connections whose TURN credentials are due for renewal, by when.
    remints: BTreeSet<(Instant, ConnectionId)>,
    /// This node's random part of member names in TURN usernames.
    node_tag: u32,
}

impl Hub {
    pub fn new(
        lobby: LobbyServer,
        ids: Arc<AtomicU64>,
        counters: Arc<Counters>,
        cluster: Option<Cluster>,
        close_timeout: Duration,
        turn: Option<TurnSecret>,
    ) -> Hub {
        let max_sockets = lobby.config().max_peers;
        Hub {
            lobby,
            sockets: HashMap::new(),
            remote: HashMap::new(),
            remote_ids: HashMap::new(),
            owned: HashMap::new(),
            untold: Vec::new(),
            ids,
            counters,
            cluster,
            permit: None,
            max_sockets,
            close_timeout,
            ticks: 0,
            turn,
            remints: BTreeSet::new(),
            node_tag: super::random_seed() as u32,
        }
    }

    /// Runs until shut down or until every handle is gone.
    pub async fn run(
        mut self,
        mut incoming: mpsc::UnboundedReceiver<Incoming>,
        mut cluster_events: Option<mpsc::Receiver<ClusterEvent>>,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut alive: mpsc::Receiver<()>,
    ) {
        let tick_every = self
            .cluster
            .as_ref()
            .map_or(Duration::from_secs(3600), |c| c.lease_check_interval());
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self
                .lobby
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            let wake = self.remints.first().map_or(wake, |&(at, _)| wake.min(at));
            tokio::select! {
                Some(message) = incoming.recv() => self.incoming(message),
                Some(event) = recv_opt(&mut cluster_events) => self.cluster_event(event),
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    self.lobby.handle_timeout(now);
                    self.remint_due(now);
                }
                _ = tick.tick(), if self.cluster.is_some() => self.tick(),
                order = control.recv() => match order {
                    Some(Control::Shutdown(done)) => {
                        self.shutdown(&mut alive).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
            self.drain();
            self.permit = None;
            self.update_gauges();
        }
    }

    fn incoming(&mut self, message: Incoming) {
        let now = Instant::now();
        match message {
            Incoming::Opened {
                conn,
                from,
                outbox,
                options,
                turn,
            } => {
                if self.sockets.len() >= self.max_sockets {
                    self.counters
                        .closed(lobby_close::PROTOCOL_ERROR, lobby_close::TOO_MANY_PEERS);
                    outbox.close(lobby_close::PROTOCOL_ERROR, lobby_close::TOO_MANY_PEERS);
                    return;
                }
                let address = from.ip();
                let turn = match &self.turn {
                    Some(secret) if turn => Some(TurnState {
                        remint_at: now,
                        allowance: Allowance::new(secret.requests_per_minute, now),
                    }),
                    _ => None,
                };
                let socket = Socket {
                    outbox,
                    address,
                    route: Route::Local,
                    migration: options.migration,
                    turn,
                };
                self.sockets.insert(conn, socket);
                self.lobby.connect_with(now, conn, address, options);
                // Before its JOIN is answered, so a client has them when it creates its mesh.
                self.send_turn(conn, now);
            }
            Incoming::Pong { conn } => match self.sockets.get(&conn).map(|s| &s.route) {
                Some(Route::Local) => self.lobby.handle_pong(conn),
                Some(&Route::Proxied { owner, .. }) => {
                    self.publish(owner, conn, Body::Pong);
                }
                _ => {}
            },
            Incoming::Frame {
                conn,
                frame,
                permit,
            } => {
                let Some(socket) = self.sockets.get_mut(&conn) else {
                    return;
                };
                if let (Some(state), Some(secret), Frame::Text(text)) =
                    (&mut socket.turn, &self.turn, &frame)
                {
                    if turn::is_request(text) {
                        // Answered here, on the node holding the socket; too many are ignored.
                        if state.allowance.take(secret.requests_per_minute, now) {
                            self.send_turn(conn, now);
                        }
                        return;
                    }
                }
                match socket.route {
                    Route::Local => {
                        self.permit = Some(permit);
                        match frame {
                            Frame::Text(text) => self.lobby.handle_text(now, conn, &text),
                            Frame::Binary => self.lobby.handle_binary(conn),
                            Frame::Oversized => self.lobby.handle_oversized(conn),
                        }
                    }
                    Route::Pending { .. } => {}
                    Route::Proxied { owner, .. } => {
                        let body = match frame {
                            Frame::Text(text) => Body::Text(text),
                            Frame::Binary => Body::Binary,
                            Frame::Oversized => Body::Oversized,
                        };
                        self.publish(owner, conn, body);
                    }
                }
            }
            Incoming::Closed { conn } => self.end_socket(conn, None, Knows::Nobody),
        }
    }

    /// Routes everything the lobby server wants done.
    fn drain(&mut self) {
        while let Some(output) = self.lobby.poll_output() {
            match output {
                ServerOutput::Send { to, text } => self.deliver(to, text),
                ServerOutput::Close { to, code, reason } => {
                    // The lobby server already forgot it.
                    if self.sockets.contains_key(&to) {
                        self.end_socket(to, Some((code, reason)), Knows::Lobby);
                    } else {
                        self.end_remote(to, Some((code, reason)), Knows::Lobby);
                    }
                }
                ServerOutput::LobbyOpened { name, host } => {
                    tracing::debug!(lobby = %name, "lobby opened");
                    if let Some(cluster) = &self.cluster {
                        cluster.register(name.clone());
                    }
                    self.owned.insert(name, host);
                }
                ServerOutput::LobbyClosed { name } => {
                    tracing::debug!(lobby = %name, "lobby closed");
                    self.owned.remove(&name);
                    if let Some(cluster) = &self.cluster {
                        cluster.unregister(name);
                    }
                }
                ServerOutput::Handoff { conn, lobby, join } => self.handoff(conn, lobby, join),
                ServerOutput::Ping { to } => {
                    if let Some(socket) = self.sockets.get(&to) {
                        socket.outbox.ping();
                    } else if let Some(&(node, theirs)) = self.remote.get(&to) {
                        self.publish(node, theirs, Body::Ping);
                    }
                }
                ServerOutput::HostChanged { name, host, epoch } => {
                    tracing::info!(lobby = %name, epoch, "host migrated");
                    if let Some(owned) = self.owned.get_mut(&name) {
                        *owned = host;
                    }
                }
                _ => {}
            }
        }
    }

    /// Mints TURN credentials for `conn` (if it gets them) and schedules their renewal.
    fn send_turn(&mut self, conn: ConnectionId, now: Instant) {
        let (Some(secret), Some(socket)) = (&self.turn, self.sockets.get_mut(&conn)) else {
            return;
        };
        let Some(state) = &mut socket.turn else {
            return;
        };
        self.remints.remove(&(state.remint_at, conn));
        state.remint_at = now + secret.remint_after();
        self.remints.insert((state.remint_at, conn));
        let member = format!("{:08x}-{conn}", self.node_tag);
        let frame = secret.frame(&member, std::time::SystemTime::now());
        Counters::add(&self.counters.turn_credentials, 1);
        self.deliver(conn, frame);
    }

    /// Sends fresh credentials to the connections whose renewal is due.
    fn remint_due(&mut self, now: Instant) {
        while let Some(&(at, conn)) = self.remints.first() {
            if at > now {
                break;
            }
            self.remints.pop_first();
            self.send_turn(conn, now);
        }
    }

    fn deliver(&mut self, to: ConnectionId, text: String) {
        if let Some(socket) = self.sockets.get(&to) {
            if let Err(overflow) = socket.outbox.push(text) {
                Counters::add(&self.counters.slow_readers, 1);
                Counters::add(&self.counters.queue_drops, overflow.dropped as u64);
                let slow = (close::SLOW_READER, close::SLOW_READER_REASON);
                self.end_socket(to, Some(slow), Knows::Nobody);
            }
        } else if let Some(&(node, theirs)) = self.remote.get(&to) {
            self.publish(node, theirs, Body::Send(text));
        }
    }

    /// The one way a socket this node holds ends: it is closed with `close` (`None`: it is
    /// closed already), forgotten, and whoever runs its lobby hears it left unless it knows
    /// already: this node's lobby server, or the owning node through Redis (once attached
    /// again if the node is detached).
    fn end_socket(&mut self, conn: ConnectionId, close: Option<(u16, &'static str)>, knows: Knows) {
        let Some(socket) = self.sockets.remove(&conn) else {
            return;
        };
        if let Some(turn) = &socket.turn {
            self.remints.remove(&(turn.remint_at, conn));
        }
        if let Some((code, reason)) = close {
            self.counters.closed(code, reason);
            socket.outbox.close(code, reason);
        }
        if knows == Knows::Lobby {
            return;
        }
        match socket.route {
            Route::Local => self.lobby.disconnect(conn),
            // Nobody has it yet: the owner's lookup is still running.
            Route::Pending { .. } => {}
            Route::Proxied { owner, .. } => self.tell(owner, conn, Body::Gone),
        }
    }

    /// The one way a member of this node's lobbies whose socket is on another node ends: the
    /// lobby server forgets it unless it knows already, and the node holding the socket
    /// closes it with `close` (`None`: that node knows already; once attached again if this
    /// node is detached).
    fn end_remote(&mut self, ours: ConnectionId, close: Option<(u16, &'static str)>, knows: Knows) {
        let Some((node, theirs)) = self.remote.remove(&ours) else {
            return;
        };
        self.remote_ids.remove(&(node, theirs));
        if knows != Knows::Lobby {
            self.lobby.disconnect(ours);
        }
        if let Some((code, reason)) = close {
            self.tell(node, theirs, Body::Close { code, reason });
        }
    }

    /// Membership news for another node (a member left, or must be closed): published now,
    /// or kept while the node is detached and published once it is attached again, so the
    /// nodes agree on who is in which lobby after an outage.
    fn tell(&mut self, node: NodeId, conn: ConnectionId, body: Body) {
        let up = self.cluster.as_ref().is_some_and(Cluster::is_up);
        if up && self.publish(node, conn, body.clone()) {
            return;
        }
        let Some(cluster) = &self.cluster else { return };
        if self.untold.len() < cluster.max_untold() {
            self.untold.push((node, conn, body));
        } else {
            tracing::warn!(
                node = format_args!("{node:016x}"),
                "too much membership news waiting for Redis: dropped one (its lobby's node drops that member when this node's lease runs out)"
            );
        }
    }

    fn handoff(&mut self, conn: ConnectionId, lobby: String, join: String) {
        if self.remote.contains_key(&conn) {
            // A remote member's lobby vanished between the lookup and its JOIN.
            let gone = (
                lobby_close::PROTOCOL_ERROR,
                lobby_close::LOBBY_DOES_NOT_EXIST,
            );
            self.end_remote(conn, Some(gone), Knows::Lobby);
            return;
        }
        let permit = self.permit.take();
        let Some(socket) = self.sockets.get_mut(&conn) else {
            return;
        };
        match &self.cluster {
            Some(cluster) if cluster.is_up() => {
                socket.route = Route::Pending {
                    join,
                    _permit: permit,
                };
                cluster.resolve(conn, lobby);
            }
            _ => {
                let unavailable = (
                    close::CLUSTER_UNAVAILABLE,
                    close::CLUSTER_UNAVAILABLE_REASON,
                );
                self.end_socket(conn, Some(unavailable), Knows::Lobby);
            }
        }
    }

    /// Queues a message for another node; `false` if it could not be (detached, or the queue
    /// overflowed: then the node detaches and reconnects, as when Redis fails).
    fn publish(&mut self, to: NodeId, conn: ConnectionId, body: Body) -> bool {
        let Some(cluster) = self.cluster.as_mut() else {
            return false;
        };
        if !cluster.is_up() {
            return false;
        }
        if cluster.publish(to, conn, body) {
            return true;
        }
        tracing::warn!("too many messages waiting for Redis: detaching from the cluster");
        cluster.reset();
        self.detach();
        false
    }

    fn cluster_event(&mut self, event: ClusterEvent) {
        let now = Instant::now();
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let me = cluster.node;
        match event {
            ClusterEvent::Up { conn, session } => {
                cluster.up(conn, session);
                for name in self.owned.keys() {
                    cluster.register(name.clone());
                }
                let untold = std::mem::take(&mut self.untold);
                if !untold.is_empty() {
                    tracing::info!(
                        news = untold.len(),
                        "telling the other nodes who left while detached"
                    );
                }
                for (node, conn, body) in untold {
                    self.tell(node, conn, body);
                }
            }
            ClusterEvent::Down => {
                if cluster.is_up() {
                    tracing::warn!("lost Redis: detaching from the cluster");
                    self.detach();
                }
            }
            ClusterEvent::Resolved { conn, owner } => {
                let Some(socket) = self.sockets.get_mut(&conn) else {
                    return;
                };
                let Route::Pending { join, .. } = &mut socket.route else {
                    return;
                };
                let refused = match owner {
                    Ok(Some(owner)) if owner != me => {
                        let frame = std::mem::take(join);
                        let (address, migration) = (socket.address, socket.migration);
                        socket.route = Route::Proxied {
                            owner,
                            asked: Some(now),
                        };
                        let join = Body::Join {
                            address,
                            migration,
                            frame,
                        };
                        self.publish(owner, conn, join);
                        return;
                    }
                    Ok(_) => (
                        lobby_close::PROTOCOL_ERROR,
                        lobby_close::LOBBY_DOES_NOT_EXIST,
                    ),
                    Err(()) => (
                        close::CLUSTER_UNAVAILABLE,
                        close::CLUSTER_UNAVAILABLE_REASON,
                    ),
                };
                self.end_socket(conn, Some(refused), Knows::Lobby);
            }
            ClusterEvent::Dead(nodes) => {
                for node in nodes {
                    tracing::info!(
                        node = format_args!("{node:016x}"),
                        "node lease expired: its clients are gone"
                    );
                    self.node_gone(node);
                }
            }
            ClusterEvent::Taken(name) => {
                tracing::error!(lobby = %name, "lobby name already taken by another node; closing its host");
                if let Some(host) = self.owned.get(&name).copied() {
                    let unavailable = (
                        close::CLUSTER_UNAVAILABLE,
                        close::CLUSTER_UNAVAILABLE_REASON,
                    );
                    self.end_socket(host, Some(unavailable), Knows::Nobody);
                }
            }
            ClusterEvent::Message(message) => self.node_message(now, message),
        }
    }

    fn node_message(&mut self, now: Instant, message: NodeMessage) {
        let NodeMessage { from, conn, body } = message;
        match body {
            Body::Join {
                address,
                migration,
                frame,
            } => {
                if self.remote_ids.contains_key(&(from, conn)) {
                    return;
                }
                if !self.cluster.as_ref().is_some_and(Cluster::is_up) {
                    // Detached (the subscription outlived the session by a moment): nothing
                    // could answer it, so its node closes it once this one is back.
                    let unavailable = (
                        close::CLUSTER_UNAVAILABLE,
                        close::CLUSTER_UNAVAILABLE_REASON,
                    );
                    self.tell(
                        from,
                        conn,
                        Body::Close {
                            code: unavailable.0,
                            reason: unavailable.1,
                        },
                    );
                    return;
                }
                let ours = self.ids.fetch_add(1, Ordering::Relaxed);
                self.remote.insert(ours, (from, conn));
                self.remote_ids.insert((from, conn), ours);
                // Its own node greeted it (HELLO) when it connected there.
                let options = ConnectOptions::default()
                    .with_migration(migration)
                    .with_hello(false);
                self.lobby.connect_with(now, ours, address, options);
                self.lobby.handle_text(now, ours, &frame);
            }
            Body::Text(text) => {
                if let Some(&ours) = self.remote_ids.get(&(from, conn)) {
                    self.lobby.handle_text(now, ours, &text);
                }
            }
            Body::Binary => {
                if let Some(&ours) = self.remote_ids.get(&(from, conn)) {
                    self.lobby.handle_binary(ours);
                }
            }
            Body::Oversized => {
                if let Some(&ours) = self.remote_ids.get(&(from, conn)) {
                    self.lobby.handle_oversized(ours);
                }
            }
            Body::Gone => {
                if let Some(&ours) = self.remote_ids.get(&(from, conn)) {
                    self.end_remote(ours, None, Knows::Nobody);
                }
            }
            Body::Send(text) => {
                if let Some(Route::Proxied { owner, asked }) =
                    self.sockets.get_mut(&conn).map(|s| &mut s.route)
                {
                    if *owner == from {
                        *asked = None;
                        self.deliver(conn, text);
                    }
                }
            }
            Body::Close { code, reason } => {
                if self.proxied_by(conn, from) {
                    self.end_socket(conn, Some((code, reason)), Knows::Lobby);
                }
            }
            Body::Ping => {
                if self.proxied_by(conn, from) {
                    if let Some(socket) = self.sockets.get(&conn) {
                        socket.outbox.ping();
                    }
                }
            }
            Body::Pong => {
                if let Some(&ours) = self.remote_ids.get(&(from, conn)) {
                    self.lobby.handle_pong(ours);
                }
            }
        }
    }

    fn proxied_by(&self, conn: ConnectionId, owner: NodeId) -> bool {
        self.sockets
            .get(&conn)
            .is_some_and(|s| matches!(s.route, Route::Proxied { owner: o, .. } if o == owner))
    }

    /// `node` is gone: its members leave our lobbies, our clients in its lobbies are closed as
    /// when a host leaves (its host was connected to it).
    fn node_gone(&mut self, node: NodeId) {
        let theirs: Vec<ConnectionId> = self
            .remote
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(ours, _)| *ours)
            .collect();
        for ours in theirs {
            self.end_remote(ours, None, Knows::Nobody);
        }
        let host_left = (lobby_close::PROTOCOL_ERROR, lobby_close::HOST_DISCONNECTED);
        for conn in self.proxied(|owner, _| owner == node) {
            self.end_socket(conn, Some(host_left), Knows::Lobby);
        }
    }

    /// Sockets this node proxies whose route matches.
    fn proxied(&self, pick: impl Fn(NodeId, Option<Instant>) -> bool) -> Vec<ConnectionId> {
        self.sockets
            .iter()
            .filter(
                |(_, s)| matches!(s.route, Route::Proxied { owner, asked } if pick(owner, asked)),
            )
            .map(|(conn, _)| *conn)
            .collect()
    }

    /// Redis is gone (or too slow): everything that crosses nodes ends; local lobbies go on.
    /// What the other nodes must hear of this waits in `untold` until the node is back.
    fn detach(&mut self) {
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.down();
        }
        let unavailable = (
            close::CLUSTER_UNAVAILABLE,
            close::CLUSTER_UNAVAILABLE_REASON,
        );
        let remote: Vec<ConnectionId> = self.remote.keys().copied().collect();
        for ours in remote {
            self.end_remote(ours, Some(unavailable), Knows::Nobody);
        }
        let crossing: Vec<ConnectionId> = self
            .sockets
            .iter()
            .filter(|(_, s)| !matches!(s.route, Route::Local))
            .map(|(conn, _)| *conn)
            .collect();
        for conn in crossing {
            self.end_socket(conn, Some(unavailable), Knows::Nobody);
        }
    }

    /// Checks the leases of the nodes we share clients with; renews our lobbies' records;
    /// closes proxied clients whose JOIN their lobby's node never answered.
    fn tick(&mut self) {
        self.ticks += 1;
        let Some(cluster) = &self.cluster else { return };
        if !cluster.is_up() {
            return;
        }
        let patience = cluster.join_answer_timeout();
        let now = Instant::now();
        let unanswered =
            self.proxied(|_, asked| asked.is_some_and(|at| now.duration_since(at) > patience));
        let mut nodes: HashSet<NodeId> = self.remote.values().map(|(n, _)| *n).collect();
        for socket in self.sockets.values() {
            if let Route::Proxied { owner, .. } = socket.route {
                nodes.insert(owner);
            }
        }
        let renew = self.ticks.is_multiple_of(cluster.lobby_renew_every());
        let lobbies = if renew {
            self.owned.keys().cloned().collect()
        } else {
            Vec::new()
        };
        cluster.check(nodes.into_iter().collect(), lobbies);
        for conn in unanswered {
            tracing::debug!(conn, "a JOIN sent to another node got no answer");
            let unavailable = (
                close::CLUSTER_UNAVAILABLE,
                close::CLUSTER_UNAVAILABLE_REASON,
            );
            self.end_socket(conn, Some(unavailable), Knows::Nobody);
        }
    }

    async fn shutdown(&mut self, alive: &mut mpsc::Receiver<()>) {
        tracing::info!(
            connections = self.sockets.len(),
            "shutting down: closing every connection"
        );
        self.lobby
            .close_all(close::SHUTTING_DOWN, close::SHUTTING_DOWN_REASON);
        self.drain();
        let rest: Vec<ConnectionId> = self.sockets.keys().copied().collect();
        let shutting_down = (close::SHUTTING_DOWN, close::SHUTTING_DOWN_REASON);
        for conn in rest {
            self.end_socket(conn, Some(shutting_down), Knows::Nobody);
        }
        self.update_gauges();
        let lobbies: Vec<String> = self.owned.keys().cloned().collect();
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.leave(lobbies).await;
        }
        // Every connection task holds a sender; they end once their close frame went out.
        let limit = self.close_timeout + Duration::from_secs(3);
        let _ = tokio::time::timeout(limit, async { while alive.recv().await.is_some() {} }).await;
    }

    fn update_gauges(&self) {
        let c = &self.counters;
        Counters::set(&c.connections, self.sockets.len() as u64);
        Counters::set(&c.lobbies, self.lobby.lobby_count() as u64);
        Counters::set(&c.members, self.lobby.connection_count() as u64);
        Counters::set(&c.remote_members, self.remote.len() as u64);
        let stats = self.lobby.stats();
        Counters::set(&c.joins, stats.joins);
        Counters::set(&c.signals_relayed, stats.signals_relayed);
        Counters::set(&c.host_migrations, stats.migrations);
        Counters::set(&c.host_lost_reports, stats.host_lost_reports);
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
