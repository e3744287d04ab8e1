//! What the signaling server counts, and the Prometheus endpoint that shows it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Counters shared by the accept loop, the connections and the server loop.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub handshakes: AtomicU64,
    pub accepted: AtomicU64,
    pub accept_errors: AtomicU64,
    pub handshakes_refused: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub turn_credentials: AtomicU64,
    pub lobbies: AtomicU64,
    pub members: AtomicU64,
    pub remote_members: AtomicU64,
    pub joins: AtomicU64,
    pub signals_relayed: AtomicU64,
    pub host_migrations: AtomicU64,
    pub host_lost_reports: AtomicU64,
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub slow_readers: AtomicU64,
    pub queue_drops: AtomicU64,
    pub cluster_up: AtomicU64,
    pub cluster_in: AtomicU64,
    pub cluster_out: AtomicU64,
    pub cluster_failures: AtomicU64,
    closes: Mutex<BTreeMap<(u16, &'static str), u64>>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(gauge: &AtomicU64) {
        gauge.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One connection closed by the server with this code and reason.
    pub fn closed(&self, code: u16, reason: &'static str) {
        let mut closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        *closes.entry((code, reason)).or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> SignalMetrics {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let closes = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        SignalMetrics {
            connections: g(&self.connections),
            handshakes: g(&self.handshakes),
            accepted: g(&self.accepted),
            accept_errors: g(&self.accept_errors),
            handshakes_refused: g(&self.handshakes_refused),
            handshakes_failed: g(&self.handshakes_failed),
            turn_credentials: g(&self.turn_credentials),
            lobbies: g(&self.lobbies),
            members: g(&self.members),
            remote_members: g(&self.remote_members),
            joins: g(&self.joins),
            signals_relayed: g(&self.signals_relayed),
            host_migrations: g(&self.host_migrations),
            host_lost_reports: g(&self.host_lost_reports),
            frames_in: g(&self.frames_in),
            bytes_in: g(&self.bytes_in),
            frames_out: g(&self.frames_out),
            slow_readers: g(&self.slow_readers),
            queue_drops: g(&self.queue_drops),
            cluster_up: g(&self.cluster_up) == 1,
            cluster_messages_in: g(&self.cluster_in),
            cluster_messages_out: g(&self.cluster_out),
            cluster_failures: g(&self.cluster_failures),
            closes: closes
                .iter()
                .map(|(&(code, reason), &n)| (code, reason, n))
                .collect(),
        }
    }
}

/// A snapshot of the server's counters ([`SignalServer::metrics`](super::SignalServer::metrics)).
///
/// ```
/// use rtcmesh_tokio::SignalServer;
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = SignalServer::bind("127.0.0.1:0".parse()?, Default::default()).await?;
/// let metrics = server.metrics();
/// assert_eq!((metrics.connections, metrics.joins), (0, 0));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignalMetrics {
    /// WebSocket connections open on this node.
    pub connections: u64,
    /// TCP connections in the TLS / WebSocket handshake.
    pub handshakes: u64,
    /// TCP connections accepted since start.
    pub accepted: u64,
    /// `accept` errors (e.g. out of file descriptors), each followed by a pause.
    pub accept_errors: u64,
    /// Connections dropped at once because `max_handshakes` were in progress.
    pub handshakes_refused: u64,
    /// Handshakes that failed or timed out.
    pub handshakes_failed: u64,
    /// TURN credentials minted ([`SignalConfig::turn`](super::SignalConfig::turn)).
    pub turn_credentials: u64,
    /// Lobbies this node hosts.
    pub lobbies: u64,
    /// Connections in this node's lobby server (its own and, in a cluster, members on
    /// other nodes of lobbies it hosts).
    pub members: u64,
    /// Of those, members connected to other nodes.
    pub remote_members: u64,
    /// Successful JOINs.
    pub joins: u64,
    /// OFFER / ANSWER / CANDIDATE frames relayed.
    pub signals_relayed: u64,
    /// Host migrations in this node's lobbies (a successor became peer 1).
    pub host_migrations: u64,
    /// HOST_LOST reports this node's lobbies accepted.
    pub host_lost_reports: u64,
    /// Text frames received from clients.
    pub frames_in: u64,
    /// Bytes of those.
    pub bytes_in: u64,
    /// Text frames written to clients.
    pub frames_out: u64,
    /// Connections closed because their outbound queue overflowed.
    pub slow_readers: u64,
    /// Messages dropped with those queues.
    pub queue_drops: u64,
    /// Whether this node is attached to its Redis cluster (`false` without one).
    pub cluster_up: bool,
    /// Messages received from other nodes.
    pub cluster_messages_in: u64,
    /// Messages published to other nodes.
    pub cluster_messages_out: u64,
    /// Times the Redis connection failed.
    pub cluster_failures: u64,
    /// Connections the server closed, by close code and reason: `(code, reason, count)`.
    pub closes: Vec<(u16, &'static str, u64)>,
}

impl SignalMetrics {
    /// Connections closed with `code` and `reason`.
    pub fn closes_with(&self, code: u16, reason: &str) -> u64 {
        self.closes
            .iter()
            .filter(|(c, r, _)| *c == code && *r == reason)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP rtcmesh_signal_{name} {help}");
            let _ = writeln!(out, "# TYPE rtcmesh_signal_{name} {kind}");
            let _ = writeln!(out, "rtcmesh_signal_{name} {value}");
        };
        metric(
            "connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections,
        );
        metric(
            "handshakes",
            "gauge",
            "Connections in the TLS or WebSocket handshake.",
            self.handshakes,
        );
        metric(
            "accepted_total",
            "counter",
            "TCP connections accepted.",
            self.accepted,
        );
        metric(
            "accept_errors_total",
            "counter",
            "Accept errors (each followed by a pause).",
            self.accept_errors,
        );
        metric(
            "handshakes_refused_total",
            "counter",
            "Connections dropped because too many handshakes were in progress.",
            self.handshakes_refused,
        );
        metric(
            "handshakes_failed_total",
            "counter",
            "Handshakes that failed or timed out.",
            self.handshakes_failed,
        );
        metric(
            "turn_credentials_total",
            "counter",
            "TURN credentials minted.",
            self.turn_credentials,
        );
        metric(
            "lobbies",
            "gauge",
            "Lobbies hosted by this node.",
            self.lobbies,
        );
        metric(
            "members",
            "gauge",
            "Connections in this node's lobbies, remote members included.",
            self.members,
        );
        metric(
            "remote_members",
            "gauge",
            "Members of this node's lobbies connected to other nodes.",
            self.remote_members,
        );
        metric("joins_total", "counter", "Successful JOINs.", self.joins);
        metric(
            "messages_relayed_total",
            "counter",
            "OFFER, ANSWER and CANDIDATE frames relayed.",
            self.signals_relayed,
        );
        metric(
            "host_migrations_total",
            "counter",
            "Host migrations in this node's lobbies.",
            self.host_migrations,
        );
        metric(
            "host_lost_reports_total",
            "counter",
            "HOST_LOST reports accepted by this node's lobbies.",
            self.host_lost_reports,
        );
        metric(
            "frames_received_total",
            "counter",
            "Text frames received from clients.",
            self.frames_in,
        );
        metric(
            "bytes_received_total",
            "counter",
            "Bytes of text frames received from clients.",
            self.bytes_in,
        );
        metric(
            "frames_sent_total",
            "counter",
            "Text frames written to clients.",
            self.frames_out,
        );
        metric(
            "slow_readers_total",
            "counter",
            "Connections closed because their outbound queue overflowed.",
            self.slow_readers,
        );
        metric(
            "queue_drops_total",
            "counter",
            "Messages dropped with overflowing outbound queues.",
            self.queue_drops,
        );
        metric(
            "cluster_up",
            "gauge",
            "1 while attached to the Redis cluster.",
            u64::from(self.cluster_up),
        );
        metric(
            "cluster_messages_received_total",
            "counter",
            "Messages received from other nodes.",
            self.cluster_messages_in,
        );
        metric(
            "cluster_messages_sent_total",
            "counter",
            "Messages published to other nodes.",
            self.cluster_messages_out,
        );
        metric(
            "cluster_failures_total",
            "counter",
            "Times the Redis connection failed.",
            self.cluster_failures,
        );
        let _ = writeln!(out, "# HELP rtcmesh_signal_closes_total Connections closed by the server, by close code and reason.");
        let _ = writeln!(out, "# TYPE rtcmesh_signal_closes_total counter");
        for (code, reason, n) in &self.closes {
            let reason = reason.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "rtcmesh_signal_closes_total{{code=\"{code}\",reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) on `listener` until aborted. Requests are read
/// with a deadline and a size cap, at most 16 at a time.
pub(crate) fn serve(listener: TcpListener, counters: Arc<Counters>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(16));
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue; // dropped: too many scrapers at once
            };
            let counters = counters.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let reply = async {
                    read_request_head(&mut stream).await?;
                    let body = counters.snapshot().to_prometheus();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(body.as_bytes()).await?;
                    stream.shutdown().await
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), reply).await;
            });
        }
    })
}

/// Reads up to the blank line ending an HTTP request head (8 KiB at most).
async fn read_request_head(stream: &mut tokio::net::TcpStream) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Err(io::ErrorKind::InvalidData.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Binds the metrics endpoint.
pub(crate) async fn bind(
    addr: SocketAddr,
    counters: Arc<Counters>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, serve(listener, counters)))
}
