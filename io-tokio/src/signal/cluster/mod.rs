//! Several signaling nodes serving one set of lobbies through Redis.
//!
//! - **Ownership.** A lobby lives on the node where its host connected: that node's
//!   [`LobbyServer`](rtcmesh::lobby::LobbyServer) runs it, exactly as on a single node. The
//!   node records it as `{prefix}:lobby:{name}` = its node id (a lease, refreshed).
//! - **Membership.** A client that asks another node for that lobby stays connected to that
//!   other node (the *proxy*), which forwards its frames to the owner and writes the owner's
//!   frames back: the owner's lobby server sees it as one more connection, so every member
//!   gets the same protocol bytes wherever it is connected.
//! - **Forwarding.** Nodes talk through Redis pub/sub: each node subscribes to
//!   `{prefix}:to:{node}` and publishes to the others' channels ([`wire`] is the format).
//!   One publisher connection per node keeps each node-to-node stream in order.
//! - **Liveness.** Each node holds `{prefix}:node:{node}` with a short lease (default 3 s),
//!   refreshed three times per lease. Nodes check the leases of the nodes they share clients
//!   with as often; when one is gone, its clients are gone: members it proxied leave their
//!   lobbies (PEER_DISCONNECT to the others) and clients in lobbies it owned are closed as
//!   when a host leaves. So a dead node's members are announced elsewhere within about
//!   `node_lease` + `node_lease / 3`.
//! - **Losing Redis.** A node that loses its Redis connection, or whose queue of messages for
//!   Redis overflows, detaches: it closes its proxied clients (1011 "Signaling cluster
//!   unavailable"), drops the remote members of its own lobbies, keeps serving its own
//!   lobbies, and reconnects with backoff. Once attached again it registers its lobbies again
//!   (recognising the records that still name it) and tells the other nodes what it dropped
//!   meanwhile: its clients leave the lobbies they were in there, and the members it dropped
//!   from its own lobbies are closed (1011) where they are connected. So after an outage no
//!   lobby keeps a ghost and no client stays in a lobby it is no longer in.
//! - **Lost JOINs.** A JOIN forwarded to a node that does not answer within two command
//!   timeouts (it was detached at that moment, or died with its lease still running) is
//!   closed with 1011.

pub(crate) mod wire;

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use rtcmesh::lobby::ConnectionId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::metrics::Counters;
pub(crate) use wire::{Body, NodeId, NodeMessage};

/// Where the cluster's Redis is and how it is used.
///
/// ```
/// use std::time::Duration;
/// use rtcmesh_tokio::{ClusterConfig, SignalConfig};
///
/// let cluster = ClusterConfig::new("redis://:secret@10.0.0.5:6379")
///     .with_prefix("game-eu".into()) // clusters sharing one Redis keep apart
///     .with_node_lease(Duration::from_secs(3));
/// // Debug (and every log line and error) hides the password.
/// assert!(!format!("{cluster:?}").contains("secret"));
/// let config = SignalConfig::default().with_cluster(Some(cluster)); // bind_with joins it
/// # let _ = config;
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// `redis://host:port/db`, `redis://:password@host:port` (or `redis+unix:///path`). Its
    /// password never appears in `Debug`, logs or errors.
    pub redis_url: String,
    /// Prefix of every key and channel (default `rtcmesh`), so several clusters can share
    /// one Redis.
    pub prefix: String,
    /// How long a node counts as alive without refreshing its lease (default 3 s). A dead
    /// node's clients are announced gone within about 4/3 of this.
    pub node_lease: Duration,
    /// Lease of a lobby's ownership record (default 30 s; refreshed every third of it).
    pub lobby_lease: Duration,
    /// Longest wait for one Redis command (default 2 s).
    pub command_timeout: Duration,
    /// Messages waiting to be published at most (default 65,536); past that the node detaches
    /// as when Redis fails, rather than buffer without limit.
    pub max_pending_publishes: usize,
}

impl ClusterConfig {
    /// Defaults with this Redis URL.
    pub fn new(redis_url: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            redis_url: redis_url.into(),
            prefix: "rtcmesh".into(),
            node_lease: Duration::from_secs(3),
            lobby_lease: Duration::from_secs(30),
            command_timeout: Duration::from_secs(2),
            max_pending_publishes: 65_536,
        }
    }
}

rtcmesh::__config_setters!(ClusterConfig {
    with_redis_url => redis_url: String,
    with_prefix => prefix: String,
    with_node_lease => node_lease: Duration,
    with_lobby_lease => lobby_lease: Duration,
    with_command_timeout => command_timeout: Duration,
    with_max_pending_publishes => max_pending_publishes: usize,
});

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &redacted(&self.redis_url))
            .field("prefix", &self.prefix)
            .field("node_lease", &self.node_lease)
            .field("lobby_lease", &self.lobby_lease)
            .field("command_timeout", &self.command_timeout)
            .field("max_pending_publishes", &self.max_pending_publishes)
            .finish()
    }
}

/// A Redis URL without its password: `redis://user:secret@host` becomes
/// `redis://user:***@host`, and a `password=` or `pass=` query value `***`.
pub(crate) fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = rest
        .find(['/', '?'])
        .map_or((rest, ""), |i| rest.split_at(i));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k == "password" || k == "pass" => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => path.to_owned(),
    };
    if url.contains("://") {
        format!("{scheme}://{authority}{path}")
    } else {
        format!("{authority}{path}")
    }
}

/// What the cluster's tasks tell the server loop.
#[derive(Debug)]
pub(crate) enum ClusterEvent {
    /// Attached (again): publish and look up through this connection, until this session
    /// ends.
    Up {
        conn: MultiplexedConnection,
        session: u64,
    },
    /// Redis failed: detach.
    Down,
    /// From another node.
    Message(NodeMessage),
    /// Where the lobby a handed-off connection asked for lives (`Err`: Redis failed).
    Resolved {
        conn: ConnectionId,
        owner: Result<Option<NodeId>, ()>,
    },
    /// These nodes' leases are gone.
    Dead(Vec<NodeId>),
    /// A lobby name this node generated is already another node's.
    Taken(String),
}

fn node_key(prefix: &str, node: NodeId) -> String {
    format!("{prefix}:node:{node:016x}")
}

fn lobby_key(prefix: &str, name: &str) -> String {
    format!("{prefix}:lobby:{name}")
}

fn channel(prefix: &str, node: NodeId) -> String {
    format!("{prefix}:to:{node:016x}")
}

/// Sets a lobby's record to `ARGV[1]` for `ARGV[2]` ms unless another node holds it; 1 if
/// the record is ours now. A node must recognise its own record: after a reconnect it
/// registers its lobbies again while their leases still run.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0";

/// Deletes a lobby's record if it names `ARGV[1]`: never another node's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0";

fn claim(config: &ClusterConfig, node: NodeId, name: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CLAIM)
        .arg(1)
        .arg(lobby_key(&config.prefix, name))
        .arg(format!("{node:016x}"))
        .arg(millis(config.lobby_lease));
    cmd
}

fn release(config: &ClusterConfig, node: NodeId, name: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RELEASE)
        .arg(1)
        .arg(lobby_key(&config.prefix, name))
        .arg(format!("{node:016x}"));
    cmd
}

fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

fn redis_error(e: redis::RedisError) -> io::Error {
    io::Error::other(format!("Redis: {e}"))
}

/// The server loop's side of the cluster.
pub(crate) struct Cluster {
    pub node: NodeId,
    config: ClusterConfig,
    conn: Option<MultiplexedConnection>,
    /// The Redis session `conn` belongs to.
    session: u64,
    /// Tells the supervisor to end a session the server loop gave up on (see [`Cluster::reset`]).
    reset: watch::Sender<u64>,
    publish: mpsc::Sender<(NodeId, Vec<u8>)>,
    events: mpsc::Sender<ClusterEvent>,
    counters: Arc<Counters>,
    supervisor: JoinHandle<()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl Cluster {
    /// Connects (failing clearly if Redis cannot be reached now) and returns once attached,
    /// then keeps the node attached in the background. Events arrive on the returned receiver.
    pub async fn start(
        config: ClusterConfig,
        node: NodeId,
        counters: Arc<Counters>,
    ) -> io::Result<(Cluster, mpsc::Receiver<ClusterEvent>)> {
        let client = redis::Client::open(config.redis_url.as_str()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad Redis URL {:?}: {e}", redacted(&config.redis_url)),
            )
        })?;
        let mut probe = tokio::time::timeout(config.command_timeout, connect(&client, &config))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("Redis at {} did not answer", redacted(&config.redis_url)),
                )
            })?
            .map_err(redis_error)?;
        redis::cmd("PING")
            .query_async::<()>(&mut probe)
            .await
            .map_err(redis_error)?;
        let (events_tx, mut events) = mpsc::channel(4096);
        let (publish, publish_rx) = mpsc::channel(config.max_pending_publishes.max(1));
        let (reset, reset_rx) = watch::channel(0);
        let supervisor = tokio::spawn(supervise(
            client,
            node,
            config.clone(),
            publish_rx,
            reset_rx,
            events_tx.clone(),
            counters.clone(),
        ));
        let mut cluster = Cluster {
            node,
            config,
            conn: None,
            session: 0,
            reset,
            publish,
            events: events_tx,
            counters,
            supervisor,
        };
        // Serve only once attached, so a JOIN for another node's lobby right after the start
        // is not refused as if Redis were down.
        let limit = cluster.config.command_timeout * 2;
        let attached = tokio::time::timeout(limit, async {
            while let Some(event) = events.recv().await {
                if let ClusterEvent::Up { conn, session } = event {
                    return Some((conn, session));
                }
            }
            None
        });
        match attached.await {
            Ok(Some((conn, session))) => cluster.up(conn, session),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "Redis at {} answered but the node could not subscribe within {limit:?}",
                        redacted(&cluster.config.redis_url)
                    ),
                ))
            }
        }
        Ok((cluster, events))
    }

    /// How often the server loop checks other nodes' leases.
    pub fn lease_check_interval(&self) -> Duration {
        (self.config.node_lease / 3).max(Duration::from_millis(10))
    }

    /// Every how many lease checks this node renews its lobbies' records.
    pub fn lobby_renew_every(&self) -> u64 {
        let every =
            (self.config.lobby_lease / 3).as_millis() / self.lease_check_interval().as_millis();
        (every as u64).max(1)
    }

    /// How long a proxied JOIN may wait for its lobby's node. A node answers a JOIN at once,
    /// and detaches when a Redis command takes longer than `command_timeout`; a JOIN still
    /// unanswered after two of those was lost (sent while that node was detached, or to a
    /// node that died and whose lease still runs).
    pub fn join_answer_timeout(&self) -> Duration {
        self.config.command_timeout * 2
    }

    /// Membership news kept for other nodes while detached, at most.
    pub fn max_untold(&self) -> usize {
        self.config.max_pending_publishes
    }

    pub fn is_up(&self) -> bool {
        self.conn.is_some()
    }

    pub fn up(&mut self, conn: MultiplexedConnection, session: u64) {
        self.conn = Some(conn);
        self.session = session;
    }

    /// The session ended (the supervisor said so).
    pub fn down(&mut self) {
        self.conn = None;
    }

    /// The server loop gives up on the current session (its publish queue overflowed): the
    /// supervisor ends it and reconnects, as after a Redis failure.
    pub fn reset(&mut self) {
        if self.conn.take().is_some() {
            Counters::set(&self.counters.cluster_up, 0);
            self.reset.send_replace(self.session);
        }
    }

    /// Queues a message for `to`; `false` when the node is detached or the queue is full.
    pub fn publish(&self, to: NodeId, conn: ConnectionId, body: Body) -> bool {
        if !self.is_up() {
            return false;
        }
        let message = NodeMessage {
            from: self.node,
            conn,
            body,
        };
        self.publish.try_send((to, message.encode())).is_ok()
    }

    fn spawn<F>(&self, work: impl FnOnce(MultiplexedConnection, ClusterConfig) -> F)
    where
        F: std::future::Future<Output = Option<ClusterEvent>> + Send + 'static,
    {
        let Some(conn) = self.conn.clone() else {
            return;
        };
        let events = self.events.clone();
        let limit = self.config.command_timeout;
        let work = work(conn, self.config.clone());
        tokio::spawn(async move {
            let event = tokio::time::timeout(limit * 2, work).await.ok().flatten();
            if let Some(event) = event {
                let _ = events.send(event).await;
            }
        });
    }

    /// Looks up the owner of `lobby` (retrying briefly: a lobby created a moment ago on
    /// another node may not be recorded yet) and reports [`ClusterEvent::Resolved`].
    pub fn resolve(&self, conn: ConnectionId, lobby: String) {
        if !self.is_up() {
            let events = self.events.clone();
            tokio::spawn(async move {
                let _ = events
                    .send(ClusterEvent::Resolved {
                        conn,
                        owner: Err(()),
                    })
                    .await;
            });
            return;
        }
        let limit = self.config.command_timeout;
        self.spawn(move |mut c, config| async move {
            let key = lobby_key(&config.prefix, &lobby);
            let mut owner = Err(());
            let lookup = async {
                for attempt in 0..3 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    let found: Option<String> =
                        match redis::cmd("GET").arg(&key).query_async(&mut c).await {
                            Ok(found) => found,
                            Err(_) => break,
                        };
                    let Some(node) = found.and_then(|v| NodeId::from_str_radix(&v, 16).ok()) else {
                        owner = Ok(None);
                        continue;
                    };
                    let alive: bool = match redis::cmd("EXISTS")
                        .arg(node_key(&config.prefix, node))
                        .query_async(&mut c)
                        .await
                    {
                        Ok(alive) => alive,
                        Err(_) => break,
                    };
                    owner = Ok(alive.then_some(node));
                    break;
                }
            };
            // Always answer, so the connection waiting on it never waits forever.
            let _ = tokio::time::timeout(limit, lookup).await;
            Some(ClusterEvent::Resolved { conn, owner })
        });
    }

    /// Records a lobby this node hosts (just created, or again after a reconnect, when the
    /// record may still name this node); reports [`ClusterEvent::Taken`] if another node has
    /// that name.
    pub fn register(&self, name: String) {
        let node = self.node;
        self.spawn(move |mut c, config| async move {
            let ours: bool = claim(&config, node, &name).query_async(&mut c).await.ok()?;
            (!ours).then_some(ClusterEvent::Taken(name))
        });
    }

    /// Forgets a lobby this node closed (only if the record still names this node).
    pub fn unregister(&self, name: String) {
        let node = self.node;
        self.spawn(move |mut c, config| async move {
            let _: Result<(), _> = release(&config, node, &name).query_async(&mut c).await;
            None
        });
    }

    /// Checks the leases of `nodes` (reporting [`ClusterEvent::Dead`]) and, when `lobbies` is
    /// not empty, renews this node's ownership of them.
    pub fn check(&self, nodes: Vec<NodeId>, lobbies: Vec<String>) {
        if nodes.is_empty() && lobbies.is_empty() {
            return;
        }
        let node = self.node;
        let events = self.events.clone();
        self.spawn(move |mut c, config| async move {
            if !lobbies.is_empty() {
                let mut pipe = redis::pipe();
                for name in &lobbies {
                    pipe.add_command(claim(&config, node, name));
                }
                let ours: Vec<bool> = pipe.query_async(&mut c).await.unwrap_or_default();
                for (name, ours) in lobbies.into_iter().zip(ours) {
                    if !ours {
                        let _ = events.send(ClusterEvent::Taken(name)).await;
                    }
                }
            }
            if nodes.is_empty() {
                return None;
            }
            let mut pipe = redis::pipe();
            for n in &nodes {
                pipe.cmd("EXISTS").arg(node_key(&config.prefix, *n));
            }
            let alive: Vec<bool> = pipe.query_async(&mut c).await.ok()?;
            let dead: Vec<NodeId> = nodes
                .into_iter()
                .zip(alive)
                .filter(|(_, alive)| !alive)
                .map(|(n, _)| n)
                .collect();
            (!dead.is_empty()).then_some(ClusterEvent::Dead(dead))
        });
    }

    /// Leaving for good (a shutdown): lets queued messages go out, then deletes this node's
    /// lease and lobby records so the others notice at once. Bounded by the command timeout.
    pub async fn leave(&mut self, lobbies: Vec<String>) {
        let Some(mut c) = self.conn.clone() else {
            return;
        };
        let deadline = tokio::time::Instant::now() + self.config.command_timeout;
        while self.publish.capacity() < self.publish.max_capacity()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut pipe = redis::pipe();
        for name in &lobbies {
            pipe.add_command(release(&self.config, self.node, name))
                .ignore();
        }
        pipe.cmd("DEL")
            .arg(node_key(&self.config.prefix, self.node))
            .ignore();
        let _ = tokio::time::timeout_at(deadline, pipe.query_async::<()>(&mut c)).await;
        self.supervisor.abort();
        self.conn = None;
        Counters::set(&self.counters.cluster_up, 0);
    }
}

async fn connect(
    client: &redis::Client,
    config: &ClusterConfig,
) -> redis::RedisResult<MultiplexedConnection> {
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.command_timeout))
        .set_response_timeout(Some(config.command_timeout));
    client
        .get_multiplexed_async_connection_with_config(&settings)
        .await
}

/// Keeps the node attached: subscribes, holds the node's lease, publishes, and reconnects
/// with backoff after a failure.
async fn supervise(
    client: redis::Client,
    node: NodeId,
    config: ClusterConfig,
    mut publish: mpsc::Receiver<(NodeId, Vec<u8>)>,
    mut reset: watch::Receiver<u64>,
    events: mpsc::Sender<ClusterEvent>,
    counters: Arc<Counters>,
) {
    let mut backoff = Duration::from_millis(100);
    for number in 1.. {
        let mut attached = false;
        let ended = session(
            &client,
            Session {
                node,
                number,
                config: &config,
                attached: &mut attached,
            },
            &mut publish,
            &mut reset,
            &events,
            &counters,
        )
        .await;
        Counters::set(&counters.cluster_up, 0);
        Counters::add(&counters.cluster_failures, 1);
        if events.send(ClusterEvent::Down).await.is_err() {
            return;
        }
        // Whatever waited was for a cluster this node is no longer part of.
        while publish.try_recv().is_ok() {}
        if attached {
            backoff = Duration::from_millis(100);
        }
        match ended {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "Redis session ended, reconnecting in {backoff:?}")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Which attachment a [`session`] is.
struct Session<'a> {
    node: NodeId,
    number: u64,
    config: &'a ClusterConfig,
    /// Set once attached.
    attached: &'a mut bool,
}

/// One attachment, until Redis fails or the server loop resets it (`Err`), or the server loop
/// is gone (`Ok`).
async fn session(
    client: &redis::Client,
    Session {
        node,
        number,
        config,
        attached,
    }: Session<'_>,
    publish: &mut mpsc::Receiver<(NodeId, Vec<u8>)>,
    reset: &mut watch::Receiver<u64>,
    events: &mpsc::Sender<ClusterEvent>,
    counters: &Counters,
) -> redis::RedisResult<()> {
    let limit = config.command_timeout;
    let timed_out = || redis::RedisError::from(io::Error::from(io::ErrorKind::TimedOut));
    let mut conn = tokio::time::timeout(limit, connect(client, config))
        .await
        .map_err(|_| timed_out())??;
    let mut pubsub = tokio::time::timeout(limit, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out())??;
    pubsub.subscribe(channel(&config.prefix, node)).await?;
    let mut messages = pubsub.into_on_message();
    let lease = |conn: &mut MultiplexedConnection| {
        let mut conn = conn.clone();
        let key = node_key(&config.prefix, node);
        async move {
            redis::cmd("SET")
                .arg(key)
                .arg(1)
                .arg("PX")
                .arg(millis(config.node_lease))
                .query_async::<()>(&mut conn)
                .await
        }
    };
    lease(&mut conn).await?;
    let up = ClusterEvent::Up {
        conn: conn.clone(),
        session: number,
    };
    if events.send(up).await.is_err() {
        return Ok(());
    }
    *attached = true;
    Counters::set(&counters.cluster_up, 1);
    tracing::info!(
        node = format_args!("{node:016x}"),
        "attached to the Redis cluster"
    );
    let mut renew = tokio::time::interval(config.node_lease / 3);
    renew.tick().await;
    let mut batch = Vec::new();
    let mut seen_nodes = HashSet::new();
    reset.mark_unchanged();
    loop {
        tokio::select! {
            changed = reset.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if *reset.borrow_and_update() == number {
                    return Err(redis::RedisError::from(io::Error::other(
                        "too many messages waiting for Redis",
                    )));
                }
            }
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(redis::RedisError::from(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "Redis closed the subscription",
                    )));
                };
                match NodeMessage::decode(message.get_payload_bytes()) {
                    Ok(m) => {
                        Counters::add(&counters.cluster_in, 1);
                        if seen_nodes.insert(m.from) {
                            tracing::debug!(from = format_args!("{:016x}", m.from), "first message from a node");
                        }
                        if events.send(ClusterEvent::Message(m)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "dropped a message on the node channel"),
                }
            }
            _ = renew.tick() => {
                tokio::time::timeout(limit, lease(&mut conn)).await.map_err(|_| timed_out())??;
            }
            received = publish.recv_many(&mut batch, 256) => {
                if received == 0 {
                    return Ok(());
                }
                let mut pipe = redis::pipe();
                for (to, bytes) in batch.drain(..) {
                    pipe.cmd("PUBLISH").arg(channel(&config.prefix, to)).arg(bytes).ignore();
                }
                tokio::time::timeout(limit, pipe.query_async::<()>(&mut conn))
                    .await
                    .map_err(|_| timed_out())??;
                Counters::add(&counters.cluster_out, received as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_never_shows() {
        for (url, shown) in [
            (
                "redis://:hunter2@10.0.0.5:6379/0",
                "redis://:***@10.0.0.5:6379/0",
            ),
            ("redis://app:hunter2@host", "redis://app:***@host"),
            ("redis://app@host:6379", "redis://app@host:6379"),
            ("redis://10.0.0.5:6379", "redis://10.0.0.5:6379"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=hunter2",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("redis://h/?password=hunter2", "redis://h/?password=***"),
            ("redis://:p@ss:w@rd@host", "redis://:***@host"),
        ] {
            assert_eq!(redacted(url), shown);
            let config = ClusterConfig::new(url);
            assert!(!format!("{config:?}").contains("hunter2"));
        }
    }
}
