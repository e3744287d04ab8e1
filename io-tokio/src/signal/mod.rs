//! The signaling server: [`rtcmesh::lobby::LobbyServer`] behind WebSockets (`ws://` or
//! `wss://`), bounded for the internet, optionally one node of several sharing lobbies through
//! Redis. All of it but the client's TLS helpers needs the feature `server`.
//!
//! The lobby logic and its limits (lobby size, lobbies per address, idle members) live in the
//! sans-IO `LobbyServer`; this adapter adds what only a socket can know: bounded outbound
//! queues, the rate limit, keepalive, handshake and accept limits, TLS, metrics, shutdown and
//! the cluster.

#[cfg(feature = "server")]
mod accept;
#[cfg(feature = "server")]
mod cluster;
#[cfg(feature = "server")]
mod connection;
#[cfg(feature = "server")]
mod http;
#[cfg(feature = "server")]
mod hub;
#[cfg(feature = "server")]
mod metrics;
#[cfg(feature = "server")]
mod outbox;
#[cfg(feature = "server")]
mod rate;
mod tls;
#[cfg(feature = "server")]
mod turn;

pub use tls::{client_tls, platform_client_tls};
#[cfg(feature = "server")]
pub use {
    cluster::ClusterConfig,
    metrics::SignalMetrics,
    rate::RateLimit,
    tls::{server_tls, server_tls_from_pem_files},
    turn::TurnSecret,
};

#[cfg(feature = "server")]
use {
    connection::{Context, Limits},
    hub::{Control, Hub},
    metrics::Counters,
    outbox::Bounds,
    rtcmesh::lobby::{LobbyServer, LobbyServerConfig},
    std::io,
    std::net::SocketAddr,
    std::sync::atomic::AtomicU64,
    std::sync::Arc,
    std::time::{Duration, Instant},
    tokio::net::TcpListener,
    tokio::sync::{mpsc, oneshot},
    tokio::task::JoinHandle,
};

#[cfg(feature = "server")]
/// Close codes and reasons the server adds to the lobby protocol's
/// ([`rtcmesh::lobby::close`]): limits only a socket can see, shutdown and the cluster.
pub mod close {
    /// The client's outbound queue overflowed: it reads too slowly.
    pub const SLOW_READER: u16 = 4001;
    /// Reason for [`SLOW_READER`].
    pub const SLOW_READER_REASON: &str = "Too slow reading messages";
    /// The client sent faster than [`RateLimit`](super::RateLimit) allows.
    pub const RATE_LIMITED: u16 = 4002;
    /// Reason for [`RATE_LIMITED`].
    pub const RATE_LIMITED_REASON: &str = "Sending too fast";
    /// Nothing heard from the client (not even a pong) for `ping_interval + pong_timeout`.
    pub const NO_PONG: u16 = 4004;
    /// Reason for [`NO_PONG`].
    pub const NO_PONG_REASON: &str = "No reply to ping";
    /// The server is shutting down (WebSocket "going away").
    pub const SHUTTING_DOWN: u16 = 1001;
    /// Reason for [`SHUTTING_DOWN`].
    pub const SHUTTING_DOWN_REASON: &str = "Server shutting down";
    /// The client's lobby lives on another node and one of the two lost Redis (or that node
    /// never answered the JOIN).
    pub const CLUSTER_UNAVAILABLE: u16 = 1011;
    /// Reason for [`CLUSTER_UNAVAILABLE`].
    pub const CLUSTER_UNAVAILABLE_REASON: &str = "Signaling cluster unavailable";
}

#[cfg(feature = "server")]
/// Everything [`SignalServer::bind_with`] can be told. The defaults suit a server on the
/// internet; `lobby` holds the protocol's own limits.
///
/// ```
/// use rtcmesh_tokio::{RateLimit, SignalConfig, SignalServer};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = SignalConfig::default()
///     .with_rate_limit(RateLimit { messages_per_second: 50.0, ..RateLimit::default() })
///     .with_metrics(Some("127.0.0.1:0".parse()?)); // Prometheus text at /metrics
/// config.lobby.max_lobby_size = 8; // the protocol's limits (fields can be set directly too)
/// let server = SignalServer::bind_with("127.0.0.1:0".parse()?, config).await?;
/// println!("lobbies at {}, metrics at {:?}", server.url(), server.metrics_addr());
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SignalConfig {
    /// The lobby server's limits and timeouts (its `max_peers` also caps this node's sockets).
    pub lobby: LobbyServerConfig,
    /// Bytes one connection may have waiting to be sent (default 1 MiB); past that it is
    /// closed as a slow reader (4001).
    pub max_queued_bytes: usize,
    /// Messages one connection may have waiting (default 4,096).
    pub max_queued_messages: usize,
    /// How fast one connection may send (4002 past it).
    pub rate_limit: RateLimit,
    /// A ping goes to every connection this often (default 10 s, as the reference server).
    pub ping_interval: Duration,
    /// A connection that sent nothing, not even a pong, for `ping_interval` plus this
    /// (default 10 s) is closed (4004).
    pub pong_timeout: Duration,
    /// TLS and WebSocket handshakes must finish within this (default 5 s).
    pub handshake_timeout: Duration,
    /// Handshakes in progress at most (default 1,024); further connections are dropped at once.
    pub max_handshakes: usize,
    /// How long a close frame may take to go out before the socket is dropped (default 5 s).
    pub close_timeout: Duration,
    /// Serve `wss://` with this TLS configuration ([`server_tls_from_pem_files`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address.
    pub metrics: Option<SocketAddr>,
    /// Share lobbies with other nodes through Redis.
    pub cluster: Option<ClusterConfig>,
    /// Mint short-lived TURN credentials for connections that ask (`?turn=1`).
    pub turn: Option<TurnSecret>,
}

#[cfg(feature = "server")]
impl Default for SignalConfig {
    fn default() -> Self {
        SignalConfig {
            lobby: LobbyServerConfig::default(),
            max_queued_bytes: 1024 * 1024,
            max_queued_messages: 4096,
            rate_limit: RateLimit::default(),
            ping_interval: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 1024,
            close_timeout: Duration::from_secs(5),
            tls: None,
            metrics: None,
            cluster: None,
            turn: None,
        }
    }
}

#[cfg(feature = "server")]
rtcmesh::__config_setters!(SignalConfig {
    with_lobby => lobby: LobbyServerConfig,
    with_max_queued_bytes => max_queued_bytes: usize,
    with_max_queued_messages => max_queued_messages: usize,
    with_rate_limit => rate_limit: RateLimit,
    with_ping_interval => ping_interval: Duration,
    with_pong_timeout => pong_timeout: Duration,
    with_handshake_timeout => handshake_timeout: Duration,
    with_max_handshakes => max_handshakes: usize,
    with_close_timeout => close_timeout: Duration,
    with_tls => tls: Option<Arc<rustls::ServerConfig>>,
    with_metrics => metrics: Option<SocketAddr>,
    with_cluster => cluster: Option<ClusterConfig>,
    with_turn => turn: Option<TurnSecret>,
});

#[cfg(feature = "server")]
/// A running signaling server.
///
/// ```
/// use rtcmesh_tokio::{join, JoinOptions, SignalServer};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = SignalServer::bind("127.0.0.1:0".parse()?, Default::default()).await?;
/// let session = join(&server.url(), "", JoinOptions::default()).await?;
/// assert_eq!(server.metrics().joins, 1);
/// drop(session);
/// server.shutdown().await; // closes every connection with 1001 "Server shutting down"
/// # Ok(()) }
/// ```
pub struct SignalServer {
    local: SocketAddr,
    tls: bool,
    metrics_addr: Option<SocketAddr>,
    node: Option<u64>,
    counters: Arc<Counters>,
    control: mpsc::UnboundedSender<Control>,
    accept: JoinHandle<()>,
    hub: Option<JoinHandle<()>>,
    metrics: Option<JoinHandle<()>>,
}

#[cfg(feature = "server")]
impl SignalServer {
    /// Listens on `addr` (e.g. `127.0.0.1:9080`) with the default socket limits and serves
    /// lobbies until dropped.
    pub async fn bind(addr: SocketAddr, config: LobbyServerConfig) -> io::Result<SignalServer> {
        SignalServer::bind_with(addr, SignalConfig::default().with_lobby(config)).await
    }

    /// Listens on `addr` with everything `config` says. With a cluster, fails if Redis cannot
    /// be reached now.
    pub async fn bind_with(addr: SocketAddr, config: SignalConfig) -> io::Result<SignalServer> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| context(e, format!("cannot listen on {addr}")))?;
        let local = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let node = random_seed();
        let mut lobby_config = config.lobby.clone();
        let (cluster, cluster_events) = match config.cluster.clone() {
            Some(cluster) => {
                lobby_config.handoff_unknown_lobbies = true;
                let (cluster, events) =
                    cluster::Cluster::start(cluster, node, counters.clone()).await?;
                (Some(cluster), Some(events))
            }
            None => (None, None),
        };
        let (metrics_addr, metrics) = match config.metrics {
            Some(addr) => {
                let (addr, task) = metrics::bind(addr, counters.clone())
                    .await
                    .map_err(|e| context(e, format!("cannot serve metrics on {addr}")))?;
                (Some(addr), Some(task))
            }
            None => (None, None),
        };
        let limits = Arc::new(Limits {
            queue: Bounds {
                bytes: config.max_queued_bytes,
                messages: config.max_queued_messages.max(1),
            },
            rate: config.rate_limit,
            ping_interval: config.ping_interval.max(Duration::from_millis(10)),
            pong_timeout: config.pong_timeout,
            handshake_timeout: config.handshake_timeout,
            close_timeout: config.close_timeout,
        });
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let (alive, alive_rx) = mpsc::channel(1);
        let ids = Arc::new(AtomicU64::new(1));
        let cx = Context {
            limits: limits.clone(),
            counters: counters.clone(),
            server: incoming_tx,
            _alive: alive,
        };
        let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let accept = tokio::spawn(accept::accept_loop(
            listener,
            tls,
            config.max_handshakes,
            ids.clone(),
            cx,
        ));
        let hub = Hub::new(
            LobbyServer::new(lobby_config, random_seed()),
            ids,
            counters.clone(),
            cluster,
            config.close_timeout,
            config.turn.clone(),
        );
        let hub = tokio::spawn(hub.run(incoming, cluster_events, control_rx, alive_rx));
        let scheme = if config.tls.is_some() { "wss" } else { "ws" };
        tracing::info!(
            cluster = config.cluster.is_some(),
            "listening on {scheme}://{local} (health check: GET /healthz)"
        );
        if let Some(addr) = metrics_addr {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        Ok(SignalServer {
            local,
            tls: config.tls.is_some(),
            metrics_addr,
            node: config.cluster.is_some().then_some(node),
            counters,
            control,
            accept,
            hub: Some(hub),
            metrics,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The URL clients connect to: `ws://ADDRESS`, or `wss://ADDRESS` with TLS (clients
    /// checking the certificate need a name the certificate holds; see [`url_for`](Self::url_for)).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}", self.local)
    }

    /// The URL with `host` (a name in the server's certificate) and this server's port.
    pub fn url_for(&self, host: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{host}:{}", self.local.port())
    }

    /// Where the Prometheus metrics are served, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This node's id in its cluster (hex in Redis keys), if it has one.
    pub fn node_id(&self) -> Option<u64> {
        self.node
    }

    /// What the server has counted so far.
    pub fn metrics(&self) -> SignalMetrics {
        self.counters.snapshot()
    }

    /// Stops accepting, closes every connection with 1001 "Server shutting down", leaves the
    /// cluster (its peers learn at once) and returns once the close frames went out (bounded
    /// by `close_timeout` and a few seconds).
    pub async fn shutdown(mut self) {
        self.accept.abort();
        let (done, finished) = oneshot::channel();
        if self.control.send(Control::Shutdown(done)).is_ok() {
            let _ = finished.await;
        }
        if let Some(hub) = self.hub.take() {
            let _ = hub.await;
        }
    }

    /// Runs until the server loop ends (a server binary's main loop without signal handling).
    pub async fn wait(mut self) {
        if let Some(hub) = self.hub.take() {
            let _ = hub.await;
        }
    }
}

#[cfg(feature = "server")]
impl Drop for SignalServer {
    fn drop(&mut self) {
        self.accept.abort();
        if let Some(hub) = &self.hub {
            hub.abort();
        }
        if let Some(metrics) = &self.metrics {
            metrics.abort();
        }
    }
}

#[cfg(feature = "server")]
/// `e` with what was being done (and where) in front of its message.
fn context(e: io::Error, what: String) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(feature = "server")]
/// A seed for lobby names, ids and node ids from the standard library's per-process random
/// keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
