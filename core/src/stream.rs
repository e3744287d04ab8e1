//! The byte streams a mesh asks its I/O adapter for: TCP (or TLS over TCP) connections to TURN
//! servers configured as `turn:host?transport=tcp` or `turns:host`, for networks that let no
//! UDP out. The mesh speaks TURN over them (RFC 8656 §12.5 framing); the adapter owns the
//! connections and the TLS, and moves bytes: [`StreamCommand`]s out of
//! [`Machine::poll_stream_command`](crate::Machine::poll_stream_command), [`StreamInput`]s into
//! [`Machine::handle_stream`](crate::Machine::handle_stream). Both adapters (`rtcmesh-tokio`,
//! `rtcmesh-mio`) do this; a hand-written loop does what the example shows.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use std::time::Instant;
//! use rtcmesh::{Machine, Mesh, StreamCommand, StreamEnd, StreamInput};
//!
//! # fn run(mesh: &mut Mesh) -> std::io::Result<()> {
//! let mut streams: Vec<(rtcmesh::StreamId, TcpStream)> = Vec::new();
//! // After draining poll_transmit on every turn of the loop:
//! while let Some(command) = mesh.poll_stream_command() {
//!     match command {
//!         StreamCommand::Open { id, server, tls: None } => match TcpStream::connect(server) {
//!             // (a real loop connects without blocking, and wraps `tls: Some(name)` in TLS)
//!             Ok(stream) => {
//!                 streams.push((id, stream));
//!                 mesh.handle_stream(Instant::now(), id, StreamInput::Opened);
//!             }
//!             Err(_) => mesh.handle_stream(Instant::now(), id, StreamInput::Closed(StreamEnd::Unreachable)),
//!         },
//!         StreamCommand::Send { id, data, .. } => {
//!             if let Some((_, stream)) = streams.iter_mut().find(|(s, _)| *s == id) {
//!                 stream.write_all(&data)?;
//!             }
//!         }
//!         StreamCommand::Close { id } => streams.retain(|(s, _)| *s != id),
//!         _ => {}
//!     }
//! }
//! // When a stream is readable: its bytes go in as they come, in any chunks.
//! let mut buf = [0u8; 4096];
//! for (id, stream) in &mut streams {
//!     let n = stream.read(&mut buf)?;
//!     let input = match n {
//!         0 => StreamInput::Closed(StreamEnd::Closed),
//!         n => StreamInput::Data(&buf[..n]),
//!     };
//!     mesh.handle_stream(Instant::now(), *id, input);
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::net::SocketAddr;

/// One stream the mesh asked for. Ids are never reused within a mesh: a stream that was closed
/// and an input for it that arrives late can never be mistaken for a newer one.
///
/// ```
/// # use rtcmesh::{Machine, Mesh, MeshConfig, IceServer, StreamCommand};
/// # let config = MeshConfig::default().with_ice_servers(vec![
/// #     IceServer::turn("turn:203.0.113.1:3478?transport=tcp", "user", "secret")]);
/// # let mut mesh = Mesh::create_mesh(2, config)?;
/// # mesh.add_host_candidate("192.0.2.10:5000".parse()?)?;
/// # mesh.handle_timeout(std::time::Instant::now());
/// if let Some(StreamCommand::Open { id, .. }) = mesh.poll_stream_command() {
///     println!("open stream {id}"); // the id every later command and input for it carries
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub(crate) u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the mesh asks of the adapter's streams, in order (drain
/// [`poll_stream_command`](crate::Machine::poll_stream_command) after
/// [`poll_transmit`](crate::Machine::poll_transmit): sending relayed datagrams is what writes
/// most of the stream data).
///
/// ```
/// use rtcmesh::StreamCommand;
///
/// fn describe(command: &StreamCommand) -> String {
///     match command {
///         StreamCommand::Open { server, tls: Some(name), .. } => format!("TLS to {server}, checking the name {name}"),
///         StreamCommand::Open { server, tls: None, .. } => format!("TCP to {server}"),
///         StreamCommand::Send { data, .. } => format!("{} bytes", data.len()),
///         StreamCommand::Close { id } => format!("close {id}"),
///         _ => "something new".into(),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub enum StreamCommand {
    /// Connect to `server` over TCP, wrapped in TLS when `tls` names the server (the name the
    /// server's certificate must be valid for: the URL's host). Answer with
    /// [`StreamInput::Opened`] once the connection (and the TLS handshake) is up, or
    /// [`StreamInput::Closed`] saying why it failed. The mesh gives up on its own after 10 s.
    Open {
        /// The stream.
        id: StreamId,
        /// Where to connect.
        server: SocketAddr,
        /// `Some(name)`: TLS, verifying the server's certificate for `name`.
        tls: Option<String>,
    },
    /// Write `data` after everything sent on this stream before. The bytes of one `Send` are
    /// one TURN frame: write all of it or none. While a stream's socket is too slow, an
    /// adapter may drop `droppable` frames (relayed peer data, which SCTP retransmits, as UDP
    /// would lose it) but must keep the others (the TURN server's requests) in order; both
    /// adapters drop droppable frames once 256 KiB wait.
    Send {
        /// The stream.
        id: StreamId,
        /// One frame.
        data: Vec<u8>,
        /// Whether the frame may be dropped under congestion.
        droppable: bool,
    },
    /// Close the stream once what was sent on it is written. No input for it is expected
    /// any more (one that comes anyway is ignored).
    Close {
        /// The stream.
        id: StreamId,
    },
}

/// What happened on a stream ([`Machine::handle_stream`](crate::Machine::handle_stream)).
///
/// ```
/// use rtcmesh::{StreamEnd, StreamInput, TlsFailure};
///
/// // The adapter's TLS library refused the server's certificate: the mesh reports
/// // `IceServerFailed { reason: IceServerError::Tls(TlsFailure::UnknownIssuer) }`.
/// let input = StreamInput::Closed(StreamEnd::Tls(TlsFailure::UnknownIssuer));
/// assert!(matches!(input, StreamInput::Closed(StreamEnd::Tls(_))));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamInput<'a> {
    /// The connection (and its TLS handshake) is up: bytes may flow.
    Opened,
    /// Bytes read from the stream, in order, in any chunks.
    Data(&'a [u8]),
    /// The stream ended, or could not be opened, and why. The adapter has closed its side.
    Closed(StreamEnd),
}

/// Why a stream ended ([`StreamInput::Closed`]).
///
/// ```
/// use rtcmesh::StreamEnd;
///
/// assert_eq!(StreamEnd::Unreachable.to_string(), "the server could not be reached (connection refused or timed out)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// The connection could not be made: refused, no route, timed out.
    Unreachable,
    /// TLS failed, and why (the handshake, or later).
    Tls(TlsFailure),
    /// The connection closed or broke after it was opened (end of stream, reset, an I/O error).
    Closed,
}

impl fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEnd::Unreachable => {
                f.write_str("the server could not be reached (connection refused or timed out)")
            }
            StreamEnd::Tls(failure) => write!(f, "TLS failed: {failure}"),
            StreamEnd::Closed => f.write_str("the connection was closed"),
        }
    }
}

/// Why TLS to a `turns:` server failed
/// ([`IceServerError::Tls`](crate::IceServerError::Tls)). The adapters map their TLS
/// library's errors onto these; the full error goes to their log.
///
/// ```
/// use rtcmesh::TlsFailure;
///
/// let why = TlsFailure::UnknownIssuer.to_string();
/// assert!(why.contains("trusted root")); // and says how to trust a private CA
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate does not lead to a trusted root (self-signed, or a private
    /// CA the adapter was not given).
    UnknownIssuer,
    /// The certificate is not valid for the URL's host name.
    NameMismatch,
    /// The certificate has expired or is not valid yet (or the local clock is wrong).
    Expired,
    /// The certificate was refused for another reason (revoked, malformed, wrong usage).
    BadCertificate,
    /// The handshake failed (no common protocol version or cipher, an alert from the server,
    /// bytes that are not TLS).
    Handshake,
    /// No root certificate to check the server against (the platform store is empty or could
    /// not be read, and none were given).
    NoRoots,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFailure::UnknownIssuer => {
                "the server's certificate is not signed by a trusted root: use a certificate from \
                 a public CA, or give the adapter your CA (turn_tls)"
            }
            TlsFailure::NameMismatch => {
                "the server's certificate is not valid for the host name in the turns: URL"
            }
            TlsFailure::Expired => {
                "the server's certificate has expired or is not valid yet (check the clock)"
            }
            TlsFailure::BadCertificate => "the server's certificate was refused",
            TlsFailure::Handshake => "the TLS handshake failed",
            TlsFailure::NoRoots => {
                "no trusted root certificates: install the platform's CA bundle or give the \
                 adapter your own (turn_tls)"
            }
        })
    }
}
