//! Typed errors, one enum per boundary.

use std::fmt;

use crate::transfer::PeerId;

/// Why a mesh could not be created (`create_server` / `create_client` / `create_mesh`).
///
/// ```
/// use rtcmesh::{CreateError, IceServer, Mesh, MeshConfig};
///
/// assert_eq!(Mesh::create_client(1, MeshConfig::default()).err(), Some(CreateError::InvalidId(1)));
/// let mut config = MeshConfig::default();
/// config.ice_servers = vec![IceServer::stun("stuns:stun.example.org")]; // STUN over TLS
/// let error = Mesh::create_mesh(2, config).err().expect("refused");
/// println!("{error}"); // names the URL and what to do instead
/// assert!(matches!(error, CreateError::IceServer { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateError {
    /// The unique id is outside `1..=2147483647`, or is 1 for a client.
    InvalidId(PeerId),
    /// More extra channels than [`MAX_EXTRA_CHANNELS`](crate::MAX_EXTRA_CHANNELS).
    TooManyChannels(usize),
    /// A configuration value is out of range; the text says which and why.
    InvalidConfig(&'static str),
    /// No DTLS certificate was given and the crypto backend could not generate one.
    Certificate,
    /// An entry of [`MeshConfig::ice_servers`](crate::MeshConfig::ice_servers) is malformed or
    /// not supported: the URL as given (empty for a problem with the whole list) and why.
    IceServer {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: InvalidIceServer,
    },
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::InvalidId(id) => write!(
                f,
                "unique id {id} is invalid: use 1..=2147483647 (a client may not use 1)"
            ),
            CreateError::TooManyChannels(n) => write!(
                f,
                "{n} extra channels requested, at most {} are supported",
                crate::MAX_EXTRA_CHANNELS
            ),
            CreateError::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            CreateError::Certificate => f.write_str(
                "could not generate a DTLS certificate: pass one in MeshConfig::dtls_cert",
            ),
            CreateError::IceServer { url, reason } if url.is_empty() => {
                write!(f, "invalid ice_servers: {reason}")
            }
            CreateError::IceServer { url, reason } => {
                write!(f, "invalid ICE server URL {url:?}: {reason}")
            }
        }
    }
}

impl std::error::Error for CreateError {}

/// Why `add_peer` refused a peer (Godot's `add_peer` errors, plus the duplicate check Godot lacks).
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{AddPeerError, Mesh, MeshConfig};
///
/// let mut client = Mesh::create_client(5, MeshConfig::default())?;
/// let now = Instant::now();
/// assert_eq!(client.add_peer(now, 6, 1), Err(AddPeerError::ClientOnlyServer(6))); // only peer 1
/// let mut mesh = Mesh::create_mesh(5, MeshConfig::default())?;
/// assert_eq!(mesh.add_peer(now, 5, 1), Err(AddPeerError::SelfPeer(5)));
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddPeerError {
    /// The mesh was closed; create a new one.
    Closed,
    /// Client mode may only add the server, peer 1.
    ClientOnlyServer(PeerId),
    /// Server mode cannot add peer 1 (that is itself).
    ServerCannotAddServer,
    /// A peer cannot be added to itself.
    SelfPeer(PeerId),
    /// The id is outside `1..=2147483647`.
    InvalidId(PeerId),
    /// The unreliable lifetime is negative or above 65535 ms.
    InvalidLifetime(i32),
    /// `refuse_new_connections` is on (Godot's `ERR_UNAUTHORIZED`).
    Refused,
    /// A peer with this id already exists; remove it first.
    AlreadyExists(PeerId),
    /// str0m refused to build the connection; the text is its reason.
    Rtc(String),
}

impl fmt::Display for AddPeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddPeerError::Closed => f.write_str("the mesh is closed"),
            AddPeerError::ClientOnlyServer(id) => {
                write!(f, "client mode can only add peer 1 (the server), not {id}")
            }
            AddPeerError::ServerCannotAddServer => f.write_str("server mode cannot add peer 1"),
            AddPeerError::SelfPeer(id) => write!(f, "peer {id} is this mesh's own id"),
            AddPeerError::InvalidId(id) => {
                write!(f, "peer id {id} is outside 1..=2147483647")
            }
            AddPeerError::InvalidLifetime(ms) => {
                write!(f, "unreliable lifetime {ms} ms is outside 0..=65535")
            }
            AddPeerError::Refused => f.write_str("refusing new connections"),
            AddPeerError::AlreadyExists(id) => {
                write!(
                    f,
                    "peer {id} already exists: remove it before adding it again"
                )
            }
            AddPeerError::Rtc(e) => write!(f, "could not create the WebRTC connection: {e}"),
        }
    }
}

impl std::error::Error for AddPeerError {}

/// Why a packet was not sent. Nothing was written to any peer unless the variant says so.
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig, SendError, Target, TransferMode};
///
/// let mut mesh = Mesh::create_mesh(2, MeshConfig::default())?;
/// let reliable = TransferMode::Reliable;
/// assert_eq!(mesh.send(Target::Peer(9), reliable, 0, b"x"), Err(SendError::UnknownPeer(9)));
/// assert_eq!(mesh.send(Target::All, reliable, 0, b""), Err(SendError::EmptyPacket));
/// assert_eq!(mesh.send(Target::All, reliable, 4, b"x"), Err(SendError::UnknownChannel(4))); // no extra channels
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection status is `Disconnected` (closed, or a client that lost the server).
    Disconnected,
    /// Transfer channel `k` is neither 0 nor one of the configured extra channels.
    UnknownChannel(u16),
    /// No peer with this id (or it is this mesh's own id).
    UnknownPeer(PeerId),
    /// The peer exists but its channels are not all open yet.
    PeerNotConnected(PeerId),
    /// The target is not a valid id (`Peer(n <= 0)`, `AllExcept(n <= 0)`).
    InvalidTarget(i32),
    /// The packet is larger than [`Mesh::max_packet_size`](crate::Mesh::max_packet_size).
    PacketTooLarge {
        /// The packet's size in bytes.
        size: usize,
        /// The largest packet accepted.
        max: usize,
    },
    /// Empty packets are refused: str0m 0.25's SCTP drops zero-length messages on the wire.
    EmptyPacket,
    /// The peers' send queues are full (the network is slower than the sender); retry after
    /// draining output. For a broadcast, every peer not listed here did get the packet.
    QueueFull(Vec<PeerId>),
    /// The packet is larger than these peers accept: each advertised a smaller
    /// `a=max-message-size` in its SDP (RFC 8841; 64 KiB when it advertises none), and a
    /// WebRTC stack refuses larger messages. Split the payload, or send these peers at most
    /// their limit. For a broadcast, every other target got the packet, except those in
    /// `queue_full`.
    PacketTooLargeForPeers {
        /// The packet's size in bytes.
        size: usize,
        /// Each peer that did not get it, with the largest packet it accepts.
        peers: Vec<(PeerId, usize)>,
        /// Peers that did not get it either because their send queue was full (as
        /// [`SendError::QueueFull`]).
        queue_full: Vec<PeerId>,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Disconnected => f.write_str("not connected: the status is Disconnected"),
            SendError::UnknownChannel(k) => write!(f, "transfer channel {k} is not configured"),
            SendError::UnknownPeer(id) => write!(f, "no peer {id}"),
            SendError::PeerNotConnected(id) => {
                write!(f, "peer {id} is not connected yet (channels not open)")
            }
            SendError::InvalidTarget(t) => write!(f, "target {t} is not a valid peer id"),
            SendError::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            SendError::EmptyPacket => f.write_str(
                "empty packets cannot be sent (str0m drops them): send at least one byte",
            ),
            SendError::QueueFull(peers) => {
                write!(f, "send queue full for peers {peers:?}: retry later")
            }
            SendError::PacketTooLargeForPeers {
                size,
                peers,
                queue_full,
            } => {
                write!(f, "packet of {size} bytes exceeds what ")?;
                for (i, (peer, max)) in peers.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}peer {peer} accepts ({max} bytes)")?;
                }
                f.write_str(": their SDP max-message-size; split it or send less to them")?;
                if !queue_full.is_empty() {
                    write!(f, "; send queue also full for peers {queue_full:?}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Why an incoming signal was refused. The peer's connection is left as it was.
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{Mesh, MeshConfig, Signal, SignalError};
///
/// let mut mesh = Mesh::create_mesh(2, MeshConfig::default())?;
/// let signal = Signal::Answer("v=0".into());
/// // A signal from a peer nobody added: drop it (a lobby sends some for peers already gone).
/// assert_eq!(mesh.handle_signal(Instant::now(), 9, signal), Err(SignalError::UnknownPeer(9)));
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignalError {
    /// No peer with this id: call `add_peer` before passing its signals.
    UnknownPeer(PeerId),
    /// An offer reached the side that offers (the larger id offers), or the same offer arrived
    /// twice. (A new offer from the offering side starts the handshake over.)
    UnexpectedOffer(PeerId),
    /// An answer reached the side that answers, or arrived twice.
    UnexpectedAnswer(PeerId),
    /// The SDP or candidate text could not be parsed or applied; the text says why.
    Invalid(String),
    /// The mesh is closed.
    Closed,
    /// The signal is longer than [`Limits::max_sdp_len`](crate::Limits::max_sdp_len) (offers,
    /// answers) or [`Limits::max_candidate_len`](crate::Limits::max_candidate_len) (candidates).
    TooLarge {
        /// The signal's body length in bytes.
        size: usize,
        /// The most accepted for its kind.
        max: usize,
    },
    /// The peer sent new offers (starting the handshake over, or restarting ICE) faster than
    /// [`Limits::renegotiation_burst`](crate::Limits::renegotiation_burst) /
    /// [`renegotiation_interval`](crate::Limits::renegotiation_interval) allow; this one was
    /// ignored and the connection carries on as it was.
    TooManyOffers(PeerId),
}

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignalError::UnknownPeer(id) => {
                write!(f, "signal from unknown peer {id}: add_peer first")
            }
            SignalError::UnexpectedOffer(id) => write!(
                f,
                "unexpected offer from peer {id}: the larger id offers, each offer once"
            ),
            SignalError::UnexpectedAnswer(id) => {
                write!(f, "unexpected answer from peer {id}: no offer is pending")
            }
            SignalError::Invalid(why) => write!(f, "invalid signal: {why}"),
            SignalError::Closed => f.write_str("the mesh is closed"),
            SignalError::TooLarge { size, max } => write!(
                f,
                "signal of {size} bytes exceeds the limit of {max} (MeshConfig::limits)"
            ),
            SignalError::TooManyOffers(id) => write!(
                f,
                "peer {id} sends new offers (handshake restarts or ICE restarts) too often: \
                 offer ignored (MeshConfig::limits.renegotiation_burst / renegotiation_interval)"
            ),
        }
    }
}

impl std::error::Error for SignalError {}

/// Why a signal's text could not be decoded.
///
/// ```
/// use rtcmesh::{DecodeSignalError, Signal};
///
/// assert_eq!(Signal::decode("hello\nworld"), Err(DecodeSignalError::UnknownKind("hello".into())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeSignalError {
    /// Longer than [`Signal::MAX_ENCODED_LEN`](crate::Signal::MAX_ENCODED_LEN).
    TooLong(usize),
    /// The first line is not `offer`, `answer` or `candidate`.
    UnknownKind(String),
    /// The body after the first line is missing or empty.
    MissingBody,
}

impl fmt::Display for DecodeSignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeSignalError::TooLong(n) => write!(
                f,
                "signal of {n} bytes exceeds {} bytes",
                crate::Signal::MAX_ENCODED_LEN
            ),
            DecodeSignalError::UnknownKind(k) => write!(
                f,
                "unknown signal kind {k:?}: expected offer, answer or candidate"
            ),
            DecodeSignalError::MissingBody => f.write_str("signal has no body"),
        }
    }
}

impl std::error::Error for DecodeSignalError {}

/// Why a host candidate was refused.
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// // Peers cannot reach an unspecified address: announce the one they should use.
/// let refused = mesh.add_host_candidate("0.0.0.0:5000".parse()?);
/// assert!(refused.is_err());
/// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CandidateError {
    /// str0m rejected the address (e.g. an unspecified `0.0.0.0`); the text says why.
    Rejected(String),
}

impl fmt::Display for CandidateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CandidateError::Rejected(why) => write!(f, "host candidate rejected: {why}"),
        }
    }
}

impl std::error::Error for CandidateError {}

/// Why an ICE server entry was refused when the mesh was created.
///
/// ```
/// use rtcmesh::{CreateError, IceServer, InvalidIceServer, Mesh, MeshConfig};
///
/// let mut config = MeshConfig::default();
/// config.ice_servers = vec![IceServer::turn("turns:turn.example.org?transport=udp", "user", "secret")];
/// match Mesh::create_mesh(2, config) {
///     Err(CreateError::IceServer { url, reason }) => {
///         assert_eq!(reason, InvalidIceServer::TlsNotSupported); // TURN over DTLS: no
///         assert!(url.starts_with("turns:turn.example.org"));
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidIceServer {
    /// An [`IceServer`](crate::IceServer) with no URL.
    NoUrls,
    /// The scheme is neither `stun:` nor `turn:`.
    UnknownScheme,
    /// `stuns:` (STUN over TLS finds a TCP mapping no UDP candidate can use), or
    /// `turns:…?transport=udp` (TURN over DTLS). Use `stun:`, and `turns:` over TCP.
    TlsNotSupported,
    /// A query other than `?transport=udp|tcp` (a `stun:` URL takes none, a `turns:` URL
    /// only `tcp`).
    BadQuery,
    /// The host is empty or not a valid IP literal or host name.
    BadHost,
    /// The port is not a number within 1..=65535.
    BadPort,
    /// A `turn:` URL without a username or credential.
    MissingCredentials,
    /// More URLs than [`MAX_ICE_SERVER_URLS`](crate::MAX_ICE_SERVER_URLS) in total.
    TooMany,
    /// `IceTransportPolicy::Relay` without any `turn:` URL: nothing could ever connect.
    RelayWithoutTurn,
}

impl fmt::Display for InvalidIceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidIceServer::NoUrls => "the entry has no URL",
            InvalidIceServer::UnknownScheme => "the scheme must be stun:, turn: or turns:",
            InvalidIceServer::TlsNotSupported => {
                "stuns: and turns: over UDP (DTLS) are not supported: use stun:, and turns: \
                 over TCP"
            }
            InvalidIceServer::BadQuery => {
                "the only queries allowed are ?transport=udp|tcp on turn: and ?transport=tcp \
                 on turns:"
            }
            InvalidIceServer::BadHost => "the host is not an IP address or a host name",
            InvalidIceServer::BadPort => "the port must be a number within 1..=65535",
            InvalidIceServer::MissingCredentials => {
                "a turn: server needs a username and a credential"
            }
            InvalidIceServer::TooMany => "too many ICE server URLs (at most 16)",
            InvalidIceServer::RelayWithoutTurn => {
                "ice_transport_policy Relay needs at least one turn: server"
            }
        })
    }
}

impl std::error::Error for InvalidIceServer {}

/// Why an ICE server did not serve ([`Event::IceServerFailed`](crate::Event::IceServerFailed)).
///
/// ```
/// use rtcmesh::{Event, IceServerError};
///
/// let event = Event::IceServerFailed { url: "turn:turn.example.org".into(), reason: IceServerError::Unauthorized };
/// if let Event::IceServerFailed { url, reason } = event {
///     eprintln!("{url}: {reason}"); // says to check the username and credential
///     assert_eq!(reason, IceServerError::Unauthorized);
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IceServerError {
    /// The host name was not resolved: the adapter's lookup failed, or (sans-IO) nobody called
    /// `set_ice_server_addresses` within 10 s.
    Unresolved,
    /// No answer within 5 s of retransmissions (wrong address or port, a firewall), a TCP/TLS
    /// connection refused or not made within 10 s, or no host candidate of the server's
    /// address family to reach it from.
    Unreachable,
    /// The TURN server refused the username or credential (401).
    Unauthorized,
    /// The TURN server has no allocation left for this user (486).
    QuotaReached,
    /// The server refused with this STUN error code (403 forbidden, 508 out of capacity, …).
    Refused(u16),
    /// A TURN allocation that existed is gone (the server forgot it, our NAT mapping to the
    /// server changed, or its TCP/TLS connection closed); a new one is being made and peers
    /// get its candidate.
    AllocationLost,
    /// TLS to a `turns:` server failed, and why (the certificate, the handshake).
    Tls(crate::stream::TlsFailure),
    /// The server's TCP/TLS stream broke TURN's framing (bytes that are not TURN, or a
    /// message left unfinished for 15 s): it was closed and a new one is opened.
    InvalidStream,
}

impl fmt::Display for IceServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IceServerError::Unresolved => f.write_str("the host name could not be resolved"),
            IceServerError::Unreachable => {
                f.write_str("no answer from the server: check its address, port and firewall")
            }
            IceServerError::Unauthorized => {
                f.write_str("the TURN server refused the username or credential")
            }
            IceServerError::QuotaReached => {
                f.write_str("the TURN server's allocation quota for this user is reached")
            }
            IceServerError::Refused(code) => write!(f, "the server refused (error {code})"),
            IceServerError::AllocationLost => {
                f.write_str("the TURN allocation was lost; allocating a new one")
            }
            IceServerError::Tls(failure) => write!(f, "TLS failed: {failure}"),
            IceServerError::InvalidStream => f.write_str(
                "the server's TCP stream broke TURN's framing; it was closed and a new one opened",
            ),
        }
    }
}

impl std::error::Error for IceServerError {}

/// Why [`Mesh::promote_to_server`](crate::Mesh::promote_to_server) refused (host migration).
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{Mesh, MeshConfig, Mode, PromoteError};
///
/// let mut server = Mesh::create_server(MeshConfig::default())?;
/// let refused = server.promote_to_server(Instant::now(), false);
/// assert_eq!(refused, Err(PromoteError::NotClient(Mode::Server)));
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PromoteError {
    /// Only a client becomes the server; this mesh is in another mode.
    NotClient(crate::transfer::Mode),
    /// The mesh was closed.
    Closed,
}

impl fmt::Display for PromoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromoteError::NotClient(mode) => write!(
                f,
                "only a client can become the server; this mesh is in {mode:?} mode"
            ),
            PromoteError::Closed => f.write_str("the mesh is closed: create a new one"),
        }
    }
}

impl std::error::Error for PromoteError {}

/// Why [`Mesh::rename_peer`](crate::Mesh::rename_peer) refused (host migration).
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig, RenameError};
///
/// let mut mesh = Mesh::create_mesh(2, MeshConfig::default())?;
/// assert_eq!(mesh.rename_peer(3, 4), Err(RenameError::UnknownPeer(3)));
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenameError {
    /// No peer has the id to rename.
    UnknownPeer(PeerId),
    /// The new id is outside `1..=2147483647`.
    InvalidId(PeerId),
    /// The new id is this mesh's own.
    SelfPeer(PeerId),
    /// Another peer has the new id already.
    AlreadyExists(PeerId),
    /// The mesh was closed.
    Closed,
}

impl fmt::Display for RenameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenameError::UnknownPeer(id) => write!(f, "no peer {id} to rename"),
            RenameError::InvalidId(id) => {
                write!(f, "cannot rename to {id}: use an id in 1..=2147483647")
            }
            RenameError::SelfPeer(id) => {
                write!(f, "cannot rename a peer to this mesh's own id {id}")
            }
            RenameError::AlreadyExists(id) => {
                write!(f, "peer {id} exists already: remove or rename it first")
            }
            RenameError::Closed => f.write_str("the mesh is closed"),
        }
    }
}

impl std::error::Error for RenameError {}

/// Why [`Mesh::set_ice_server_credentials`](crate::Mesh::set_ice_server_credentials) refused
/// new TURN credentials. Nothing was changed.
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{CredentialsError, IceServer, InvalidIceServer, Mesh, MeshConfig};
///
/// let config = MeshConfig::default()
///     .with_ice_servers(vec![IceServer::turn("turn:203.0.113.1:3478", "1767225600:ann", "old")]);
/// let mut mesh = Mesh::create_mesh(2, config)?;
/// // New credentials for a server the mesh was not created with:
/// let other = IceServer::turn("turn:198.51.100.7", "1767229200:ann", "new");
/// assert_eq!(
///     mesh.set_ice_server_credentials(Instant::now(), &other),
///     Err(CredentialsError::NotConfigured { url: "turn:198.51.100.7".into() })
/// );
/// // A TURN entry without a credential:
/// let empty = IceServer::turn("turn:203.0.113.1:3478", "1767229200:ann", "");
/// assert_eq!(
///     mesh.set_ice_server_credentials(Instant::now(), &empty),
///     Err(CredentialsError::Invalid {
///         url: "turn:203.0.113.1:3478".into(),
///         reason: InvalidIceServer::MissingCredentials,
///     })
/// );
/// # Ok::<(), rtcmesh::CreateError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The entry is not a valid TURN entry: no URL, a URL that does not parse, or no
    /// username or credential (the same checks as at creation).
    Invalid {
        /// The URL at fault (empty for an entry with no URL).
        url: String,
        /// What is wrong with it.
        reason: InvalidIceServer,
    },
    /// A `stun:` URL: STUN servers take no credentials.
    NotTurn {
        /// The URL.
        url: String,
    },
    /// A TURN server this mesh was not created with: only the credentials of configured
    /// servers change while a mesh runs (compared by scheme, host, port and transport).
    NotConfigured {
        /// The URL.
        url: String,
    },
    /// The mesh was closed.
    Closed,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialsError::Invalid { url, reason } => write!(f, "ICE server {url:?}: {reason}"),
            CredentialsError::NotTurn { url } => {
                write!(
                    f,
                    "{url:?} is a STUN server: only turn: and turns: URLs take credentials"
                )
            }
            CredentialsError::NotConfigured { url } => write!(
                f,
                "{url:?} is not one of this mesh's ICE servers: new servers need a new mesh \
                 (MeshConfig::ice_servers)"
            ),
            CredentialsError::Closed => f.write_str("the mesh is closed"),
        }
    }
}

impl std::error::Error for CredentialsError {}
