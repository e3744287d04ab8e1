//! Joining a lobby on a signaling server (the Godot demo protocol) in one call.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rtcmesh::lobby::{LobbyClient, LobbyError, LobbyEvent, Migration};
use rtcmesh::{
    CandidateKind, CreateError, Event, IceServerError, Machine, Mesh, MeshConfig, PeerId,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::endpoint::{Endpoint, EndpointConfig, Events, Handle};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long `join` waits for the ICE servers before offering to the lobby's members (the
/// rest is trickled).
const GATHERING_WAIT: Duration = Duration::from_secs(2);

/// After a TURN server refused minted credentials, fresh ones are asked for at once, then no
/// sooner than this after the last request, doubling while they keep being refused (a
/// signaling server whose secret is not the TURN server's would otherwise be asked forever).
const CREDENTIALS_REQUEST_GAP: Duration = Duration::from_secs(10);
const CREDENTIALS_REQUEST_GAP_MAX: Duration = Duration::from_secs(600);

/// How to join. Start from the default and change what you need with the `with_*` setters.
///
/// ```
/// # use rtcmesh_tokio::{JoinOptions, rtcmesh::MeshConfig};
/// let options = JoinOptions::default()
///     .with_mesh(false) // a client/server lobby: the host is the server (id 1)
///     .with_config(MeshConfig::default().with_channels(vec![]));
/// assert_eq!(options.unreliable_lifetime, 1);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JoinOptions {
    /// `true` (default): a mesh lobby, everyone connects to everyone. `false`: a client/server
    /// lobby, the host is the server (id 1) and the others are its clients.
    pub mesh: bool,
    /// The mesh's configuration.
    pub config: MeshConfig,
    /// The UDP socket.
    pub endpoint: EndpointConfig,
    /// `add_peer`'s `unreliable_lifetime` (ms) for every peer the lobby announces. Default 1.
    pub unreliable_lifetime: i32,
    /// How long to wait for the server to connect and assign an id. Default 10 s.
    pub timeout: Duration,
    /// TLS for `wss://` URLs: `None` (default) trusts the platform's root certificates; give a
    /// configuration to trust others (e.g. [`client_tls`](crate::signal::client_tls) with
    /// your own root store).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Host migration: [`Migration::Eligible`] opens the WebSocket with `?migrate=1`, so that
    /// in a client/server lobby whose host did the same, the lobby makes a member the new host
    /// (peer 1) when the host leaves or is lost instead of closing. The machine decides what
    /// happens to the game: use it with a [`Multiplayer`](rtcmesh::Multiplayer) whose
    /// [`MigrationConfig`](rtcmesh::MigrationConfig) is enabled (a bare mesh follows a new
    /// host but cannot become one). Default [`Migration::Off`]: the Godot demo's protocol.
    pub migration: Migration,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            mesh: true,
            config: MeshConfig::default(),
            endpoint: EndpointConfig::default(),
            unreliable_lifetime: 1,
            timeout: Duration::from_secs(10),
            tls: None,
            migration: Migration::Off,
        }
    }
}

rtcmesh::__config_setters!(JoinOptions {
    with_mesh => mesh: bool,
    with_config => config: MeshConfig,
    with_endpoint => endpoint: EndpointConfig,
    with_unreliable_lifetime => unreliable_lifetime: i32,
    with_timeout => timeout: Duration,
    with_tls => tls: Option<Arc<rustls::ClientConfig>>,
    with_migration => migration: Migration,
});

/// Why joining failed.
///
/// ```
/// use rtcmesh_tokio::{join, JoinError, JoinOptions};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A port nobody listens on (taken, then given back).
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
/// match join(&format!("ws://127.0.0.1:{port}"), "", JoinOptions::default()).await {
///     Err(JoinError::WebSocket(e)) => println!("signaling server unreachable: {e}"),
///     Err(other) => panic!("{other}"),
///     Ok(_) => panic!("nobody listens there"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum JoinError {
    /// The WebSocket could not be opened or failed.
    WebSocket(tokio_tungstenite::tungstenite::Error),
    /// The server closed the connection, with its code and reason.
    Refused {
        /// WebSocket close code.
        code: u16,
        /// The server's reason.
        reason: String,
    },
    /// The server sent something that is not the protocol.
    Protocol(LobbyError),
    /// No id or lobby name within [`JoinOptions::timeout`].
    Timeout,
    /// The mesh could not be created for the assigned id.
    Create(CreateError),
    /// The UDP socket could not be set up.
    Io(io::Error),
    /// TLS could not be set up for a `wss://` URL (e.g. no platform root certificates).
    Tls(io::Error),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::WebSocket(e) => write!(f, "signaling WebSocket failed: {e}"),
            JoinError::Refused { code, reason } => {
                write!(
                    f,
                    "signaling server closed the connection ({code}): {reason}"
                )
            }
            JoinError::Protocol(e) => write!(f, "signaling server broke the protocol: {e}"),
            JoinError::Timeout => f.write_str("signaling server did not assign an id in time"),
            JoinError::Create(e) => write!(f, "cannot create the mesh: {e}"),
            JoinError::Io(e) => write!(f, "cannot set up the UDP socket: {e}"),
            JoinError::Tls(e) => write!(f, "cannot set up TLS for wss://: {e}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// A mesh that joined a lobby: its handle and events, with signaling running in the background
/// until the lobby closes (connections made stay up after that).
///
/// ```
/// use rtcmesh::lobby::LobbyEvent;
/// use rtcmesh_tokio::{join, JoinOptions, SignalServer};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = SignalServer::bind("127.0.0.1:0".parse()?, Default::default()).await?;
/// let host = join(&server.url(), "", JoinOptions::default()).await?;
/// let mut guest = join(&server.url(), &host.lobby, JoinOptions::default()).await?;
/// assert_eq!(host.id(), 1); // whoever creates the lobby hosts it
/// // The lobby's announcements (the session already acted on them: it added the peer).
/// let event = tokio::time::timeout(std::time::Duration::from_secs(5), guest.lobby_events.recv()).await?;
/// assert_eq!(event, Some(LobbyEvent::PeerJoined(1))); // the members already there, too
/// host.seal(); // no one else may join; connections made stay up after the lobby closes
/// assert_eq!(guest.rejected_signals(), 0);
/// # Ok(()) }
/// ```
pub struct Session<M: Machine> {
    /// The lobby's name (share it so others can join).
    pub lobby: String,
    /// Commands for the mesh.
    pub handle: Handle<M>,
    /// The mesh's events (signals are delivered by the session itself and never appear here).
    pub events: Events<M::Event>,
    /// What the lobby announces: peers joining (first the members already there) and leaving,
    /// the seal, and host migrations ([`LobbyEvent::HostChanged`], [`LobbyEvent::BecameHost`]
    /// when our id became 1, [`LobbyEvent::NoLongerHost`]), and renewed TURN credentials
    /// ([`LobbyEvent::TurnCredentials`]). The session already acts on them (adds and removes
    /// peers, hands migrations and credentials to the machine); read them to show a lobby, or
    /// ignore them.
    pub lobby_events: mpsc::UnboundedReceiver<LobbyEvent>,
    id: Arc<AtomicI32>,
    seal: mpsc::UnboundedSender<()>,
    rejected: Arc<AtomicU64>,
    signaling: JoinHandle<()>,
}

impl<M: Machine> Session<M> {
    /// Our peer id in the lobby (1 for its host). With host migration on it can change: it
    /// becomes 1 when the lobby makes us the new host ([`LobbyEvent::BecameHost`] on
    /// [`lobby_events`](Session::lobby_events), `BecameHost` on the multiplayer layer's
    /// events).
    pub fn id(&self) -> PeerId {
        self.id.load(Ordering::Relaxed)
    }

    /// Seals the lobby (host only; the server closes it shortly after).
    pub fn seal(&self) {
        let _ = self.seal.send(());
    }

    /// Lobby frames that were dropped: malformed, or refused by the mesh (bad SDP, unknown peer).
    pub fn rejected_signals(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Whether the signaling connection is still open.
    pub fn is_signaling(&self) -> bool {
        !self.signaling.is_finished()
    }
}

impl<M: Machine> Drop for Session<M> {
    fn drop(&mut self) {
        self.signaling.abort();
    }
}

/// Joins `lobby` (`""` creates one, and we become its host, id 1) on the signaling server at
/// `url` (`ws://…` or `wss://…`), and returns the running mesh.
///
/// ```
/// use rtcmesh_tokio::{join, JoinOptions, SignalServer};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = SignalServer::bind("127.0.0.1:0".parse()?, Default::default()).await?; // or rtcmesh-signal
/// let host = join(&server.url(), "", JoinOptions::default()).await?; // "" creates a lobby
/// let guest = join(&server.url(), &host.lobby, JoinOptions::default()).await?; // joins it by name
/// assert_ne!(guest.id(), host.id());
/// # Ok(()) }
/// ```
pub async fn join(
    url: &str,
    lobby: &str,
    options: JoinOptions,
) -> Result<Session<Mesh>, JoinError> {
    join_with(url, lobby, options, |mesh| mesh).await
}

/// [`join`], with the mesh wrapped by `make` (e.g. in a multiplayer layer) before it starts.
///
/// ```
/// use rtcmesh::{Multiplayer, MultiplayerConfig};
/// use rtcmesh_tokio::{join_with, JoinOptions, SignalServer};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = SignalServer::bind("127.0.0.1:0".parse()?, Default::default()).await?;
/// // A client/server lobby with Godot's SceneMultiplayer on top: the host is the server (id 1).
/// let options = JoinOptions::default().with_mesh(false);
/// let host = join_with(&server.url(), "", options, |mesh| Multiplayer::new(mesh, MultiplayerConfig::default())).await?;
/// assert_eq!(host.id(), 1);
/// let peers = host.handle.call(|game, _| game.peers().count()).await?;
/// assert_eq!(peers, 0); // until clients join host.lobby
/// # Ok(()) }
/// ```
pub async fn join_with<M, F>(
    url: &str,
    lobby: &str,
    options: JoinOptions,
    make: F,
) -> Result<Session<M>, JoinError>
where
    M: Machine + Send + 'static,
    M::Event: Send + 'static,
    F: FnOnce(Mesh) -> M,
{
    // A timeout too long for the clock means "never" (about 30 years is as good).
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(options.timeout)
        .unwrap_or(now + Duration::from_secs(30 * 365 * 86_400));
    let within = |f| tokio::time::timeout_at(deadline, f);
    let connector = if url.starts_with("wss:") {
        let tls = match options.tls.clone() {
            Some(tls) => tls,
            None => crate::signal::platform_client_tls().map_err(JoinError::Tls)?,
        };
        Some(Connector::Rustls(tls))
    } else {
        None
    };
    let mut client = LobbyClient::new(lobby, options.mesh).with_migration(options.migration);
    let url = match client.query() {
        Some(query) => with_query(url, query),
        None => url.to_owned(),
    };
    // Asks for minted TURN credentials; a server without them (Godot's demo) ignores it.
    let url = with_query(&url, "turn=1");
    let connect = tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector);
    let (mut ws, _) = within(connect)
        .await
        .map_err(|_| JoinError::Timeout)?
        .map_err(JoinError::WebSocket)?;
    ws.send(Message::text(client.join_message()))
        .await
        .map_err(JoinError::WebSocket)?;

    // The server answers ID, then a PEER_CONNECT for each member, then JOIN with the name.
    let mut early = Vec::new();
    let mut config = options.config;
    let mut turn_urls = Vec::new();
    let (id, mesh_lobby, name) = loop {
        let event = tokio::time::timeout_at(deadline, next_event(&mut ws, &mut client))
            .await
            .map_err(|_| JoinError::Timeout)??;
        match event {
            LobbyEvent::Joined(name) => match client.id() {
                Some(id) => break (id, early_mesh(&early), name),
                None => return Err(JoinError::Protocol(LobbyError::InvalidFormat)),
            },
            // Minted for this connection (it sends them before answering the JOIN): the mesh
            // allocates on these servers with them, in place of any entry for the same URLs.
            LobbyEvent::TurnCredentials { server, .. } => {
                turn_urls.clone_from(&server.urls);
                config.ice_servers.retain(|s| s.urls != server.urls);
                config.ice_servers.push(server);
            }
            other => early.push(other),
        }
    };
    let mesh = LobbyClient::create_mesh(id, mesh_lobby, config).map_err(JoinError::Create)?;
    let (handle, endpoint_events) = Endpoint::spawn(options.endpoint, make(mesh))
        .await
        .map_err(JoinError::Io)?;
    // Members already in the lobby are offered to at once: let the ICE servers answer first
    // (briefly), so the first offer carries the public and relayed candidates too.
    let gathering_limit = tokio::time::Instant::now() + GATHERING_WAIT;
    while tokio::time::Instant::now() < gathering_limit {
        let complete = handle.call(|m, _| m.mesh().ice_gathering_complete()).await;
        if complete.unwrap_or(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rejected = Arc::new(AtomicU64::new(0));
    let lifetime = options.unreliable_lifetime;
    // The members already there are announced to the application like later ones.
    let (lobby_tx, lobby_events) = mpsc::unbounded_channel();
    let snapshot = Arc::new(client.clone());
    for event in early {
        if matches!(event, LobbyEvent::PeerJoined(_)) {
            let _ = lobby_tx.send(event.clone());
        }
        apply(&handle, &snapshot, event, lifetime, &rejected).await;
    }
    let (raw_events, task) = endpoint_events.into_parts();
    // Bounded like the endpoint's own channel, so a slow application still stops the loop.
    let (user_tx, user_rx) = mpsc::channel(raw_events.max_capacity());
    let (seal, seal_rx) = mpsc::unbounded_channel();
    let own_id = Arc::new(AtomicI32::new(id));
    let relay = Relay {
        client,
        snapshot,
        handle: handle.clone(),
        lifetime,
        rejected: rejected.clone(),
        id: own_id.clone(),
        turn_urls,
        next_request: tokio::time::Instant::now(),
        request_gap: CREDENTIALS_REQUEST_GAP,
    };
    let signaling = tokio::spawn(relay.run(ws, raw_events, user_tx, lobby_tx, seal_rx));
    Ok(Session {
        id: own_id,
        lobby: name,
        handle,
        events: Events::new(user_rx, task),
        lobby_events,
        seal,
        rejected,
        signaling,
    })
}

fn early_mesh(early: &[LobbyEvent]) -> bool {
    early
        .iter()
        .any(|e| matches!(e, LobbyEvent::Assigned { mesh: true, .. }))
}

/// The next lobby event from the server; pings and pongs are skipped.
async fn next_event(ws: &mut Socket, client: &mut LobbyClient) -> Result<LobbyEvent, JoinError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return client.handle_text(&text).map_err(JoinError::Protocol)
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(JoinError::Refused { code, reason });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(JoinError::WebSocket(e)),
            None => {
                return Err(JoinError::Refused {
                    code: 1006,
                    reason: String::new(),
                })
            }
        }
    }
}

/// `url` with `query` added (`?query`, or `&query` after a query it has).
fn with_query(url: &str, query: &str) -> String {
    let (base, fragment) = url
        .split_once('#')
        .map_or((url, None), |(b, f)| (b, Some(f)));
    let separator = if base.contains('?') { "&" } else { "?" };
    // `ws://host:port` has no path: give it `/` before the query.
    let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
    let slash = if after_scheme.contains('/') || base.contains('?') {
        ""
    } else {
        "/"
    };
    let mut out = format!("{base}{slash}{separator}{query}");
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Hands a lobby event to the machine ([`Machine::apply_lobby`], with the lobby client's
/// state as of that event).
async fn apply<M: Machine + 'static>(
    handle: &Handle<M>,
    lobby: &Arc<LobbyClient>,
    event: LobbyEvent,
    lifetime: i32,
    rejected: &AtomicU64,
) {
    let lobby = lobby.clone();
    let applied = handle
        .call(move |m, now| m.apply_lobby(&lobby, &event, now, lifetime))
        .await;
    if !matches!(applied, Ok(Ok(()))) {
        rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// The signaling task's state.
struct Relay<M> {
    client: LobbyClient,
    /// The client's state for the machine, refreshed after every frame that is not a signal
    /// (signals change nothing the machine reads from it).
    snapshot: Arc<LobbyClient>,
    handle: Handle<M>,
    lifetime: i32,
    rejected: Arc<AtomicU64>,
    /// The session's id, which a host migration can change.
    id: Arc<AtomicI32>,
    /// The URLs of the TURN servers the signaling server mints credentials for.
    turn_urls: Vec<String>,
    /// When fresh credentials may next be asked for, and the wait after that.
    next_request: tokio::time::Instant,
    request_gap: Duration,
}

impl<M: Machine + 'static> Relay<M> {
    /// Lobby frames → mesh; the mesh's signals and lobby requests (host migration) → lobby;
    /// every other event → the application.
    /// When the WebSocket closes, events keep flowing and new signals are dropped (counted).
    /// Once the lobby is sealed the mesh stands on its own: peers leaving the lobby (the
    /// server closes sealed lobbies) are reported but not removed from the mesh.
    async fn run(
        mut self,
        mut ws: Socket,
        mut events: mpsc::Receiver<M::Event>,
        user: mpsc::Sender<M::Event>,
        lobby: mpsc::UnboundedSender<LobbyEvent>,
        mut seal: mpsc::UnboundedReceiver<()>,
    ) {
        let (mut open, mut sealed) = (true, false);
        loop {
            tokio::select! {
                frame = next_event(&mut ws, &mut self.client), if open => match frame {
                    Ok(event) => {
                        sealed |= event == LobbyEvent::Sealed;
                        if !matches!(event, LobbyEvent::Signal { .. }) {
                            self.snapshot = Arc::new(self.client.clone());
                        }
                        if let Some(id) = self.client.id() {
                            self.id.store(id, Ordering::Relaxed);
                        }
                        let announce = matches!(
                            event,
                            LobbyEvent::PeerJoined(_)
                                | LobbyEvent::PeerLeft(_)
                                | LobbyEvent::Sealed
                                | LobbyEvent::HostChanged { .. }
                                | LobbyEvent::BecameHost { .. }
                                | LobbyEvent::NoLongerHost { .. }
                                | LobbyEvent::TurnCredentials { .. }
                        );
                        if announce {
                            let _ = lobby.send(event.clone());
                        }
                        if let LobbyEvent::TurnCredentials { server, .. } = &event {
                            self.turn_urls.clone_from(&server.urls);
                        }
                        if !(sealed && matches!(event, LobbyEvent::PeerLeft(_))) {
                            apply(&self.handle, &self.snapshot, event, self.lifetime, &self.rejected)
                                .await;
                        }
                    }
                    Err(JoinError::Protocol(_)) => {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => open = false,
                },
                Some(()) = seal.recv(), if open => {
                    open = ws.send(Message::text(self.client.seal_message())).await.is_ok();
                }
                event = events.recv() => match event {
                    None => break,
                    Some(event) => match M::into_signal(event) {
                        Ok(signal) if open => {
                            let frame = Message::text(self.client.signal_message(&signal));
                            open = ws.send(frame).await.is_ok();
                        }
                        Ok(_) => {
                            self.rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(event) => match M::into_lobby_request(event) {
                            Ok(request) => match self.client.request_message(&request) {
                                Ok(text) if open => {
                                    open = ws.send(Message::text(text)).await.is_ok();
                                }
                                _ => {
                                    self.rejected.fetch_add(1, Ordering::Relaxed);
                                }
                            },
                            Err(event) => {
                                if open && self.wants_credentials(M::as_mesh_event(&event)) {
                                    let request = self.client.turn_credentials_request();
                                    open = ws.send(Message::text(request)).await.is_ok();
                                }
                                let _ = user.send(event).await;
                            }
                        },
                    },
                },
            }
        }
        let _ = ws.close(None).await;
    }

    /// Whether this event of the mesh calls for fresh TURN credentials: a server they are
    /// minted for refused them (they expired before a new allocation was made: the machine
    /// slept, or renewals were lost), and the last request is not too recent. A relayed
    /// candidate from such a server ends a streak of refusals.
    fn wants_credentials(&mut self, event: Option<&Event>) -> bool {
        let minted = |url: &String| self.turn_urls.contains(url);
        match event {
            Some(Event::IceServerFailed {
                url,
                reason: IceServerError::Unauthorized,
            }) if minted(url) => {
                let now = tokio::time::Instant::now();
                if now < self.next_request {
                    return false;
                }
                self.next_request = now + self.request_gap;
                self.request_gap = (self.request_gap * 2).min(CREDENTIALS_REQUEST_GAP_MAX);
                true
            }
            Some(Event::CandidateGathered(info))
                if info.kind == CandidateKind::Relayed && minted(&info.url) =>
            {
                self.request_gap = CREDENTIALS_REQUEST_GAP;
                false
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_query;

    #[test]
    fn the_migration_query_joins_any_query_the_url_has() {
        assert_eq!(with_query("ws://h:1", "migrate=1"), "ws://h:1/?migrate=1");
        assert_eq!(with_query("ws://h:1/", "migrate=1"), "ws://h:1/?migrate=1");
        assert_eq!(
            with_query("wss://h/p?k=v", "migrate=1"),
            "wss://h/p?k=v&migrate=1"
        );
        assert_eq!(with_query("ws://h/#x", "migrate=1"), "ws://h/?migrate=1#x");
    }
}
