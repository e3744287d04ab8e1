//! Joining a lobby on a signaling server (the Godot demo protocol) without tokio: [`join`]
//! blocks until the server has assigned an id (bounded by [`JoinOptions::timeout`]), then the
//! returned [`Session`] lives in your `mio::Poll` like a [`MioEndpoint`], carrying signals
//! both ways on the same turns that drive the mesh.

// `JoinError` carries tungstenite's error whole (as the tokio adapter's does); it is returned
// once per join, so its size costs nothing worth a box.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};
use rtcmesh::lobby::{LobbyClient, LobbyError, LobbyEvent, MAX_MESSAGE_LEN};
use rtcmesh::{CreateError, Flush, Machine, Mesh, MeshConfig, PeerId};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::{MioConfig, MioEndpoint};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// How long a session waits for the ICE servers before offering to the lobby's members (the
/// rest is trickled), as the tokio adapter's `join` does.
const GATHERING_WAIT: Duration = Duration::from_secs(2);

/// Lobby frames read in one call before the rest wait for the next turn (a server that floods
/// cannot keep a turn in here).
const FRAMES_PER_TURN: usize = 256;

/// Lobby announcements kept for [`Session::poll_lobby_event`]; more are dropped and counted.
const MAX_LOBBY_EVENTS: usize = 1024;

/// Our own signals waiting for the WebSocket (offers, answers, candidates); past this the
/// lobby connection is taken as stuck and dropped.
const MAX_WRITE_BUFFER: usize = 1 << 20;

/// How to join. Start from the default and change what you need with the `with_*` setters.
///
/// ```
/// use mio::Token;
/// use rtcmesh_mio::{JoinOptions, MioConfig};
///
/// let options = JoinOptions::default()
///     .with_mesh(false) // a client/server lobby: the host is the server (id 1)
///     .with_tokens(Token(10), Token(11)) // if your Poll already uses 0 and 1
///     .with_endpoint(MioConfig::default().with_bind("0.0.0.0:7000".parse().unwrap()).with_announce(Some("192.0.2.10".parse().unwrap())));
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
    pub endpoint: MioConfig,
    /// `add_peer`'s `unreliable_lifetime` (ms) for every peer the lobby announces. Default 1.
    pub unreliable_lifetime: i32,
    /// How long [`join`] may block: to resolve nothing more (the host name is resolved first,
    /// by the system), connect, open the WebSocket and be given an id. Default 10 s.
    pub timeout: Duration,
    /// The token of the UDP socket in your `Poll`. Default `Token(0)`.
    pub socket_token: Token,
    /// The token of the lobby's WebSocket in your `Poll`. Default `Token(1)`.
    pub lobby_token: Token,
    /// TLS for `wss://` URLs: `None` (default) trusts the platform's root certificates; give a
    /// configuration to trust others (your own root store, a test certificate).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            mesh: true,
            config: MeshConfig::default(),
            endpoint: MioConfig::default(),
            unreliable_lifetime: 1,
            timeout: Duration::from_secs(10),
            socket_token: Token(0),
            lobby_token: Token(1),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

rtcmesh::__config_setters!(JoinOptions {
    with_mesh => mesh: bool,
    with_config => config: MeshConfig,
    with_endpoint => endpoint: MioConfig,
    with_unreliable_lifetime => unreliable_lifetime: i32,
    with_timeout => timeout: Duration,
});

#[cfg(feature = "tls")]
rtcmesh::__config_setters!(JoinOptions {
    with_tls => tls: Option<Arc<rustls::ClientConfig>>,
});

impl JoinOptions {
    /// Sets both tokens, [`socket_token`](Self::socket_token) and
    /// [`lobby_token`](Self::lobby_token), for chaining.
    #[must_use]
    pub fn with_tokens(mut self, socket: Token, lobby: Token) -> Self {
        self.socket_token = socket;
        self.lobby_token = lobby;
        self
    }
}

/// Why joining failed.
///
/// ```
/// use mio::Poll;
/// use rtcmesh_mio::{join, JoinError, JoinOptions};
///
/// let poll = Poll::new()?;
/// // A port nobody listens on (taken, then given back).
/// let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
/// match join(&format!("ws://127.0.0.1:{port}"), "", JoinOptions::default(), poll.registry()) {
///     Err(JoinError::WebSocket(e)) => println!("signaling server unreachable: {e}"),
///     Err(other) => panic!("{other}"),
///     Ok(_) => panic!("nobody listens there"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum JoinError {
    /// The server could not be reached, or the WebSocket could not be opened or failed
    /// (a `wss://` URL without the `tls` feature says so here too).
    WebSocket(tungstenite::Error),
    /// The server closed the connection, with its code and reason (e.g. 4000 for a lobby
    /// that does not exist).
    Refused {
        /// WebSocket close code (1006: closed without one).
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
    /// The UDP socket could not be set up, or registering with the `Poll` failed.
    Io(io::Error),
    /// TLS could not be set up for a `wss://` URL (e.g. no platform root certificates: give
    /// [`JoinOptions::tls`]).
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
            JoinError::Timeout => {
                f.write_str("signaling server did not assign an id in time (JoinOptions::timeout)")
            }
            JoinError::Create(e) => write!(f, "cannot create the mesh: {e}"),
            JoinError::Io(e) => write!(f, "cannot set up the UDP socket or the poll: {e}"),
            JoinError::Tls(e) => write!(f, "cannot set up TLS for wss://: {e}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// A mesh that joined a lobby, in your `mio::Poll`: its [`MioEndpoint`] (the UDP socket, under
/// [`JoinOptions::socket_token`]) and the lobby's WebSocket (under
/// [`JoinOptions::lobby_token`]). Drive it as a `MioEndpoint` — [`handle_ready`] for either
/// token, [`handle_timeout`] every turn, commands on [`machine_mut`], [`flush`], then
/// [`poll_event`] until `None` — and it carries the signals itself: the lobby's go to the mesh,
/// the mesh's go to the lobby and never reach you. Once the host has [`seal`]ed the lobby the
/// mesh stands on its own; [`into_endpoint`] then lets the lobby go.
///
/// [`handle_ready`]: Session::handle_ready
/// [`handle_timeout`]: Session::handle_timeout
/// [`machine_mut`]: Session::machine_mut
/// [`flush`]: Session::flush
/// [`poll_event`]: Session::poll_event
/// [`seal`]: Session::seal
/// [`into_endpoint`]: Session::into_endpoint
///
/// ```
/// use std::time::{Duration, Instant};
/// use mio::{Events, Poll};
/// use rtcmesh::lobby::LobbyEvent;
/// use rtcmesh_mio::{join, JoinOptions};
/// # let runtime = tokio::runtime::Runtime::new()?;
/// # let server = runtime.block_on(rtcmesh_tokio::SignalServer::bind("127.0.0.1:0".parse()?, Default::default()))?;
/// # let url = server.url();
///
/// let mut poll = Poll::new()?;
/// let mut session = join(&url, "", JoinOptions::default(), poll.registry())?; // blocks until we have an id
/// assert_eq!(session.id, 1); // whoever creates the lobby hosts it; share session.lobby
/// let mut events = Events::with_capacity(64);
/// for _frame in 0..3 {
///     poll.poll(&mut events, Some(Duration::ZERO))?; // a game's frame: never wait
///     let now = Instant::now();
///     for event in events.iter() {
///         session.handle_ready(event.token(), now)?;
///     }
///     session.handle_timeout(now)?;
///     // Commands here: session.machine_mut().send(..)
///     let _ = session.flush();
///     while let Some(event) = session.poll_event() { /* PeerConnected, Packet, … */ }
///     while let Some(LobbyEvent::PeerJoined(id)) = session.poll_lobby_event() { println!("{id} joined"); }
/// }
/// session.seal(); // no one else may join
/// assert!(session.is_signaling());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Session<M: Machine> {
    /// Our peer id in the lobby.
    pub id: PeerId,
    /// The lobby's name (share it so others can join).
    pub lobby: String,
    endpoint: MioEndpoint<M>,
    /// The lobby connection, `None` once it closed or failed.
    ws: Option<Ws>,
    lobby_token: Token,
    client: LobbyClient,
    lifetime: i32,
    /// What the server said before it confirmed the lobby (the members already there), held
    /// until the ICE servers answered or [`GATHERING_WAIT`] passed.
    early: Vec<LobbyEvent>,
    /// While set, lobby frames wait (in the socket) behind `early`.
    gathering_until: Option<Instant>,
    /// Frames may wait in the socket or in the WebSocket's buffer with no readiness event to
    /// come (mio is edge-triggered).
    lobby_unread: bool,
    sealed: bool,
    announcements: VecDeque<LobbyEvent>,
    announcements_dropped: u64,
    rejected: u64,
}

impl<M: Machine> fmt::Debug for Session<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("lobby", &self.lobby)
            .field("signaling", &self.ws.is_some())
            .field("sealed", &self.sealed)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

/// Joins `lobby` (`""` creates one, and we become its host, id 1) on the signaling server at
/// `url` (`ws://…`, or `wss://…` with the `tls` feature, on by default). Blocks until the
/// server has given us an id and confirmed the lobby, at most [`JoinOptions::timeout`] (and
/// the system's name lookup of the host before that); the session then registers its two
/// sockets in `registry` and never blocks again.
pub fn join(
    url: &str,
    lobby: &str,
    options: JoinOptions,
    registry: &Registry,
) -> Result<Session<Mesh>, JoinError> {
    join_with(url, lobby, options, registry, |mesh| mesh)
}

/// [`join`], with the mesh wrapped by `make` (e.g. in a multiplayer layer) before it starts.
///
/// ```
/// use mio::Poll;
/// use rtcmesh::{Multiplayer, MultiplayerConfig};
/// use rtcmesh_mio::{join_with, JoinOptions};
/// # let runtime = tokio::runtime::Runtime::new()?;
/// # let server = runtime.block_on(rtcmesh_tokio::SignalServer::bind("127.0.0.1:0".parse()?, Default::default()))?;
///
/// let poll = Poll::new()?;
/// // A client/server lobby with Godot's SceneMultiplayer on top: the host is the server (id 1).
/// let options = JoinOptions::default().with_mesh(false);
/// let host = join_with(&server.url(), "", options, poll.registry(), |mesh| Multiplayer::new(mesh, MultiplayerConfig::default()))?;
/// assert_eq!(host.machine().peers().count(), 0); // until clients join host.lobby
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn join_with<M, F>(
    url: &str,
    lobby: &str,
    options: JoinOptions,
    registry: &Registry,
    make: F,
) -> Result<Session<M>, JoinError>
where
    M: Machine,
    F: FnOnce(Mesh) -> M,
{
    // A timeout too long for the clock means "never" (about 30 years is as good).
    let start = Instant::now();
    let deadline = start
        .checked_add(options.timeout)
        .unwrap_or(start + Duration::from_secs(30 * 365 * 86_400));
    let mut waiter = Waiter::new(deadline)?;
    let mut ws = open(url, &options, &mut waiter)?;
    let mut client = LobbyClient::new(lobby, options.mesh);
    send_blocking(&mut ws, Message::text(client.join_message()), &mut waiter)?;

    // The server answers ID, then a PEER_CONNECT for each member, then JOIN with the name.
    let mut early = Vec::new();
    let name = loop {
        match ws.read() {
            Ok(Message::Text(text)) => match client.handle_text(&text) {
                Ok(LobbyEvent::Joined(name)) => break name,
                Ok(other) => early.push(other),
                Err(e) => return Err(JoinError::Protocol(e)),
            },
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new()));
                return Err(JoinError::Refused { code, reason });
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                waiter.wait()?
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Err(JoinError::Refused {
                    code: 1006,
                    reason: String::new(),
                })
            }
            Err(e) => return Err(JoinError::WebSocket(e)),
        }
    };
    let id = client
        .id()
        .ok_or(JoinError::Protocol(LobbyError::InvalidFormat))?;
    let mesh_lobby = early
        .iter()
        .any(|e| matches!(e, LobbyEvent::Assigned { mesh: true, .. }));
    let mesh =
        LobbyClient::create_mesh(id, mesh_lobby, options.config).map_err(JoinError::Create)?;
    let endpoint =
        MioEndpoint::bind_with(options.endpoint, make(mesh), registry, options.socket_token)
            .map_err(JoinError::Io)?;
    // The WebSocket moves from our poll to the caller's.
    let stream = tcp(&mut ws).ok_or_else(|| JoinError::Io(io::Error::other("unknown stream")))?;
    waiter
        .poll
        .registry()
        .deregister(stream)
        .map_err(JoinError::Io)?;
    registry
        .register(
            stream,
            options.lobby_token,
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(JoinError::Io)?;
    let announcements = early
        .iter()
        .filter(|e| matches!(e, LobbyEvent::PeerJoined(_)))
        .cloned()
        .collect();
    let mut session = Session {
        id,
        lobby: name,
        endpoint,
        ws: Some(ws),
        lobby_token: options.lobby_token,
        client,
        lifetime: options.unreliable_lifetime,
        early,
        gathering_until: Some(Instant::now() + GATHERING_WAIT),
        lobby_unread: true,
        sealed: false,
        announcements,
        announcements_dropped: 0,
        rejected: 0,
    };
    session.progress(Instant::now());
    Ok(session)
}

/// Blocks on a private poll, bounded by the join's deadline.
struct Waiter {
    poll: Poll,
    events: Events,
    deadline: Instant,
}

/// The token of the connection in the join's private poll.
const CONNECTION: Token = Token(0);

impl Waiter {
    fn new(deadline: Instant) -> Result<Waiter, JoinError> {
        Ok(Waiter {
            poll: Poll::new().map_err(JoinError::Io)?,
            events: Events::with_capacity(4),
            deadline,
        })
    }

    /// Waits for readiness, at most until the deadline (and 50 ms, so a missed edge costs
    /// no more than that).
    fn wait(&mut self) -> Result<(), JoinError> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(JoinError::Timeout);
        }
        let wait = (self.deadline - now).min(Duration::from_millis(50));
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(JoinError::Io(e)),
        }
    }
}

/// The platform's root certificates (on Linux the system's CA bundle, e.g. Debian's
/// `ca-certificates`).
#[cfg(feature = "tls")]
fn platform_client_tls() -> io::Result<Arc<rustls::ClientConfig>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no platform root certificates found ({:?}); install ca-certificates or give JoinOptions::tls",
                found.errors
            ),
        ));
    }
    crate::streams::client_tls(roots)
        .map_err(|e| io::Error::other(format!("TLS setup failed: {e}")))
}

/// Connects to the server and opens the WebSocket (with TLS for `wss://`), blocking on
/// `waiter`.
fn open(url: &str, options: &JoinOptions, waiter: &mut Waiter) -> Result<Ws, JoinError> {
    let request = url.into_client_request().map_err(JoinError::WebSocket)?;
    let uri = request.uri();
    let tls = uri.scheme_str() == Some("wss");
    let host = uri
        .host()
        .ok_or(JoinError::WebSocket(tungstenite::Error::Url(
            tungstenite::error::UrlError::NoHostName,
        )))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if tls && cfg!(not(feature = "tls")) {
        let refused = tungstenite::error::UrlError::TlsFeatureNotEnabled;
        return Err(JoinError::WebSocket(tungstenite::Error::Url(refused)));
    }
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addresses: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| JoinError::WebSocket(e.into()))?
        .collect();
    let stream = connect(&addresses, waiter)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_LEN + 1024))
        .max_frame_size(Some(MAX_MESSAGE_LEN + 1024))
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    #[cfg(feature = "tls")]
    let mut handshake = {
        // Our own configuration when none is given: rustls' default one panics when a build
        // has two crypto providers and none chosen.
        let tls_config = match (&options.tls, tls) {
            (Some(given), _) => Some(given.clone()),
            (None, true) => Some(platform_client_tls().map_err(JoinError::Tls)?),
            (None, false) => None,
        };
        let connector = tls_config.map(tungstenite::Connector::Rustls);
        tungstenite::client_tls_with_config(request, stream, Some(config), connector)
    };
    #[cfg(not(feature = "tls"))]
    let mut handshake = {
        let _ = options;
        let stream = MaybeTlsStream::Plain(stream);
        tungstenite::client::client_with_config(request, stream, Some(config))
    };
    loop {
        match handshake {
            Ok((ws, _response)) => return Ok(ws),
            Err(HandshakeError::Failure(e)) => return Err(JoinError::WebSocket(e)),
            Err(HandshakeError::Interrupted(mid)) => {
                waiter.wait()?;
                handshake = mid.handshake();
            }
        }
    }
}

/// A TCP connection to the first address that takes one.
fn connect(addresses: &[SocketAddr], waiter: &mut Waiter) -> Result<TcpStream, JoinError> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for &address in addresses {
        let mut stream = match TcpStream::connect(address) {
            Ok(stream) => stream,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let registry = waiter.poll.registry();
        registry
            .register(
                &mut stream,
                CONNECTION,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(JoinError::Io)?;
        // mio: once writable, the connection is up if it has a peer address.
        let failed = loop {
            waiter.wait()?;
            if let Ok(Some(e)) | Err(e) = stream.take_error() {
                break e;
            }
            match stream.peer_addr() {
                Ok(_) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
                Err(e) => break e,
            }
        };
        let _ = waiter.poll.registry().deregister(&mut stream);
        last = failed;
    }
    Err(JoinError::WebSocket(last.into()))
}

/// Sends one frame, waiting while the socket is full.
fn send_blocking(ws: &mut Ws, message: Message, waiter: &mut Waiter) -> Result<(), JoinError> {
    let mut result = ws.send(message);
    loop {
        match result {
            Ok(()) => return Ok(()),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                waiter.wait()?;
                result = ws.flush();
            }
            Err(e) => return Err(JoinError::WebSocket(e)),
        }
    }
}

/// The TCP stream under the WebSocket (and TLS), to register it.
fn tcp(ws: &mut Ws) -> Option<&mut TcpStream> {
    match ws.get_mut() {
        MaybeTlsStream::Plain(stream) => Some(stream),
        #[cfg(feature = "tls")]
        MaybeTlsStream::Rustls(tls) => Some(&mut tls.sock),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

impl<M: Machine> Session<M> {
    /// Handles a readiness event for either of the session's tokens (other tokens are
    /// ignored): datagrams for the mesh, frames from the lobby (applied to the mesh: peers
    /// added and removed, signals passed on), our signals that were waiting for the WebSocket.
    /// Errors are the UDP socket's; a lobby that fails only ends signaling
    /// ([`is_signaling`](Session::is_signaling)).
    pub fn handle_ready(&mut self, token: Token, now: Instant) -> io::Result<()> {
        if token == self.lobby_token {
            self.flush_lobby();
            self.read_lobby(now);
        } else if token == self.endpoint.token {
            self.endpoint.handle_ready(now)?;
        }
        self.progress(now);
        Ok(())
    }

    /// [`MioEndpoint::handle_timeout`], and the session's own work when it is due: the lobby's
    /// first members once the ICE servers answered, lobby frames left for this turn. Call it
    /// on every turn, before commands.
    pub fn handle_timeout(&mut self, now: Instant) -> io::Result<()> {
        self.endpoint.handle_timeout(now)?;
        self.progress(now);
        Ok(())
    }

    /// The timeout to pass to `Poll::poll`: the endpoint's, or sooner when the session has
    /// work of its own.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let gathering = self
            .gathering_until
            .map(|until| until.saturating_duration_since(now));
        if gathering.is_none() && self.lobby_unread && self.ws.is_some() {
            return Some(Duration::ZERO);
        }
        match (self.endpoint.timeout(now), gathering) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sends what the mesh and the lobby have to send; call it after commands.
    pub fn flush(&mut self) -> Flush {
        self.flush_lobby();
        self.endpoint.flush()
    }

    /// The next event of the machine. Its signals never come out here: they go to the lobby
    /// (so call this every turn until `None`, or the handshakes wait).
    pub fn poll_event(&mut self) -> Option<M::Event> {
        loop {
            let event = self.endpoint.machine_mut().poll_event()?;
            match M::into_signal(event) {
                Ok(signal) => {
                    let frame = self.client.signal_message(&signal);
                    self.write_lobby(frame);
                }
                Err(event) => return Some(event),
            }
        }
    }

    /// What the lobby announces: peers joining (first the members already there) and leaving,
    /// the seal. The session already acts on them (adds and removes peers); read them to show
    /// a lobby, or ignore them (at most 1024 wait; later ones are dropped and counted in
    /// [`lobby_events_dropped`](Session::lobby_events_dropped)).
    pub fn poll_lobby_event(&mut self) -> Option<LobbyEvent> {
        self.announcements.pop_front()
    }

    /// Announcements dropped because 1024 were waiting unread.
    pub fn lobby_events_dropped(&self) -> u64 {
        self.announcements_dropped
    }

    /// Seals the lobby (host only; the server closes it shortly after). The mesh stays up.
    pub fn seal(&mut self) {
        let frame = self.client.seal_message();
        self.write_lobby(frame);
    }

    /// Lobby frames that were dropped: malformed, refused by the mesh (bad SDP, unknown
    /// peer), or our own signals once the lobby connection was gone.
    pub fn rejected_signals(&self) -> u64 {
        self.rejected
    }

    /// Whether the lobby connection is still open.
    pub fn is_signaling(&self) -> bool {
        self.ws.is_some()
    }

    /// The machine (for queries).
    pub fn machine(&self) -> &M {
        self.endpoint.machine()
    }

    /// The machine, for commands (its `poll_event` would take signals the lobby needs: use
    /// [`Session::poll_event`]). Call [`flush`](Session::flush) after commands.
    pub fn machine_mut(&mut self) -> &mut M {
        self.endpoint.machine_mut()
    }

    /// The endpoint: its socket's address, buffers and counters.
    pub fn endpoint(&self) -> &MioEndpoint<M> {
        &self.endpoint
    }

    /// Closes the lobby connection (it is deregistered) and gives the endpoint back: the mesh
    /// keeps its peers; new ones can no longer be signalled through the lobby.
    pub fn into_endpoint(mut self, registry: &Registry) -> io::Result<MioEndpoint<M>> {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None);
            if let Some(stream) = tcp(&mut ws) {
                registry.deregister(stream)?;
            }
        }
        Ok(self.endpoint)
    }

    /// Applies the lobby's first members once the ICE servers answered (or the wait is over),
    /// then reads frames left waiting.
    fn progress(&mut self, now: Instant) {
        if let Some(until) = self.gathering_until {
            if now < until && !self.endpoint.machine().mesh().ice_gathering_complete() {
                return;
            }
            self.gathering_until = None;
            for event in std::mem::take(&mut self.early) {
                self.apply(&event, now);
            }
        }
        if self.lobby_unread {
            self.read_lobby(now);
        }
        let _ = self.endpoint.flush();
    }

    /// Reads lobby frames (at most [`FRAMES_PER_TURN`]) and applies them to the machine.
    fn read_lobby(&mut self, now: Instant) {
        if self.gathering_until.is_some() {
            self.lobby_unread = true;
            return;
        }
        for _ in 0..FRAMES_PER_TURN {
            let Some(ws) = self.ws.as_mut() else {
                return;
            };
            match ws.read() {
                Ok(Message::Text(text)) => self.handle_frame(&text, now),
                // Pings are answered by the WebSocket itself; a close is answered, and the
                // connection then ends with ConnectionClosed.
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.lobby_unread = false;
                    return;
                }
                Err(_) => {
                    self.ws = None;
                    return;
                }
            }
        }
        self.lobby_unread = true;
    }

    fn handle_frame(&mut self, text: &str, now: Instant) {
        let event = match self.client.handle_text(text) {
            Ok(event) => event,
            Err(_) => {
                self.rejected += 1;
                return;
            }
        };
        self.sealed |= event == LobbyEvent::Sealed;
        let announce = matches!(
            event,
            LobbyEvent::PeerJoined(_) | LobbyEvent::PeerLeft(_) | LobbyEvent::Sealed
        );
        if announce {
            if self.announcements.len() < MAX_LOBBY_EVENTS {
                self.announcements.push_back(event.clone());
            } else {
                self.announcements_dropped += 1;
            }
        }
        // Once sealed, the mesh stands on its own: peers leaving the lobby (the server closes
        // sealed lobbies) stay in the mesh.
        if !(self.sealed && matches!(event, LobbyEvent::PeerLeft(_))) {
            self.apply(&event, now);
        }
    }

    fn apply(&mut self, event: &LobbyEvent, now: Instant) {
        let machine = self.endpoint.machine_mut();
        if LobbyClient::apply(event, machine, now, self.lifetime).is_err() {
            self.rejected += 1;
        }
    }

    /// Queues a frame for the lobby and pushes it out as far as the socket takes it.
    fn write_lobby(&mut self, frame: String) {
        let Some(ws) = self.ws.as_mut() else {
            self.rejected += 1;
            return;
        };
        match ws.write(Message::text(frame)) {
            Ok(()) => self.flush_lobby(),
            // Kept in the WebSocket's buffer: it goes on the next writable event.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.rejected += 1;
                self.ws = None;
            }
        }
    }

    fn flush_lobby(&mut self) {
        let Some(ws) = self.ws.as_mut() else {
            return;
        };
        match ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.ws = None,
        }
    }
}
