//! The streams a mesh asks for to reach TURN servers over TCP or TLS (`turn:…?transport=tcp`,
//! `turns:`; see [`rtcmesh::stream`]): non-blocking TCP connections registered under the
//! endpoint's own token, with rustls driven by hand for `turns:` (the server's certificate
//! checked for the URL's host). What waits to be written is a [`StreamBuffer`]: relayed data is
//! dropped when a stream is too slow, the server's requests never.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rtcmesh::{
    Flush, Machine, StreamBuffer, StreamCommand, StreamEnd, StreamId, StreamInput, TlsFailure,
};
use rustls::pki_types::ServerName;

/// What one read takes from a stream.
const READ_CHUNK: usize = 16 * 1024;
/// Reads per stream per turn, so one busy server cannot starve the rest of the loop.
const READS_PER_TURN: usize = 64;

enum Phase {
    /// TCP's handshake is under way.
    Connecting,
    /// TLS's handshake is under way.
    Handshaking,
    Open,
}

struct Stream {
    id: StreamId,
    socket: TcpStream,
    tls: Option<rustls::ClientConnection>,
    phase: Phase,
    out: StreamBuffer,
    /// The mesh asked to close: close once everything is written.
    closing: bool,
}

/// The endpoint's streams.
pub(crate) struct Streams {
    registry: Registry,
    token: Token,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The platform's roots, read at the first `turns:` stream when no configuration was given.
    platform: Option<Result<Arc<rustls::ClientConfig>, ()>>,
    open: Vec<Stream>,
    buffer: Box<[u8]>,
    /// Relayed frames dropped because a stream was too slow, not yet counted by the pump.
    pub dropped: u64,
    /// A stream was left with bytes to read (its turn's reads ran out): mio is edge-triggered,
    /// so no event will say so.
    pub unread: bool,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("open", &self.open.len())
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl Streams {
    pub fn new(registry: Registry, token: Token, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Streams {
            registry,
            token,
            tls,
            platform: None,
            open: Vec::new(),
            buffer: vec![0; READ_CHUNK].into_boxed_slice(),
            dropped: 0,
            unread: false,
        }
    }

    /// Whether no stream exists.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Carries out what the machine asks of its streams, and moves them on (reading only
    /// unless the application is `behind`).
    pub fn commands<M: Machine>(&mut self, machine: &mut M, now: Instant, behind: bool) {
        while let Some(command) = machine.poll_stream_command() {
            match command {
                StreamCommand::Open { id, server, tls } => {
                    if let Err(end) = self.open(id, server, tls) {
                        machine.handle_stream(now, id, StreamInput::Closed(end));
                    }
                }
                StreamCommand::Send {
                    id,
                    data,
                    droppable,
                } => {
                    if let Some(stream) = self.open.iter_mut().find(|s| s.id == id) {
                        if !stream.out.push(data, droppable) {
                            self.dropped += 1;
                        }
                    }
                }
                StreamCommand::Close { id } => {
                    if let Some(stream) = self.open.iter_mut().find(|s| s.id == id) {
                        stream.closing = true;
                    }
                }
                _ => {}
            }
        }
        self.progress(machine, now, behind);
    }

    fn open(
        &mut self,
        id: StreamId,
        server: std::net::SocketAddr,
        tls: Option<String>,
    ) -> Result<(), StreamEnd> {
        let tls = match tls {
            Some(name) => {
                let config = self.tls_config()?;
                let server_name = ServerName::try_from(name)
                    .map_err(|_| StreamEnd::Tls(TlsFailure::NameMismatch))?;
                // rustls holds at most 64 KiB of records the socket has not taken (its
                // default buffer limit); past it, writes wait for the socket.
                let connection = rustls::ClientConnection::new(config, server_name)
                    .map_err(|e| StreamEnd::Tls(failure_of(&e)))?;
                Some(connection)
            }
            None => None,
        };
        let mut socket = TcpStream::connect(server).map_err(|_| StreamEnd::Unreachable)?;
        self.registry
            .register(
                &mut socket,
                self.token,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|_| StreamEnd::Unreachable)?;
        self.open.push(Stream {
            id,
            socket,
            tls,
            phase: Phase::Connecting,
            out: StreamBuffer::default(),
            closing: false,
        });
        Ok(())
    }

    fn tls_config(&mut self) -> Result<Arc<rustls::ClientConfig>, StreamEnd> {
        if let Some(config) = &self.tls {
            return Ok(config.clone());
        }
        self.platform
            .get_or_insert_with(platform_client_tls)
            .clone()
            .map_err(|()| StreamEnd::Tls(TlsFailure::NoRoots))
    }

    /// Moves every stream on as far as its socket allows: connects, handshakes, writes, and
    /// (unless the application is `behind`) reads into the machine.
    pub fn progress<M: Machine>(&mut self, machine: &mut M, now: Instant, behind: bool) {
        self.unread = false;
        let mut i = 0;
        while i < self.open.len() {
            let stream = &mut self.open[i];
            let outcome = step(
                stream,
                machine,
                now,
                behind,
                &mut self.buffer,
                &mut self.unread,
            );
            match outcome {
                Ok(true) => i += 1,
                Ok(false) => {
                    // Closed as the mesh asked: it expects nothing more.
                    let mut gone = self.open.swap_remove(i);
                    let _ = self.registry.deregister(&mut gone.socket);
                }
                Err(end) => {
                    let mut gone = self.open.swap_remove(i);
                    let _ = self.registry.deregister(&mut gone.socket);
                    if !gone.closing {
                        machine.handle_stream(now, gone.id, StreamInput::Closed(end));
                    }
                }
            }
        }
    }

    /// Deregisters every stream (the endpoint is taken apart).
    pub fn close_all(&mut self) {
        for mut stream in self.open.drain(..) {
            let _ = self.registry.deregister(&mut stream.socket);
        }
    }
}

/// One stream's turn: `Ok(false)` once it closed as asked, `Err` when it ended by itself.
fn step<M: Machine>(
    stream: &mut Stream,
    machine: &mut M,
    now: Instant,
    behind: bool,
    buffer: &mut [u8],
    unread: &mut bool,
) -> Result<bool, StreamEnd> {
    if stream.closing && !matches!(stream.phase, Phase::Open) {
        return Ok(false);
    }
    if let Phase::Connecting = stream.phase {
        if let Ok(Some(_)) | Err(_) = stream.socket.take_error() {
            return Err(StreamEnd::Unreachable);
        }
        match stream.socket.peer_addr() {
            Ok(_) => {
                let _ = stream.socket.set_nodelay(true);
                stream.phase = match stream.tls {
                    Some(_) => Phase::Handshaking,
                    None => {
                        machine.handle_stream(now, stream.id, StreamInput::Opened);
                        Phase::Open
                    }
                };
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(true),
            Err(_) => return Err(StreamEnd::Unreachable),
        }
    }
    match &mut stream.tls {
        None => plain(stream, machine, now, behind, buffer, unread),
        Some(_) => tls(stream, machine, now, behind, buffer, unread),
    }
}

fn plain<M: Machine>(
    stream: &mut Stream,
    machine: &mut M,
    now: Instant,
    behind: bool,
    buffer: &mut [u8],
    unread: &mut bool,
) -> Result<bool, StreamEnd> {
    let socket = &mut stream.socket;
    let flush = stream
        .out
        .write(|bytes| socket.write(bytes))
        .map_err(|_| StreamEnd::Closed)?;
    if stream.closing && flush == Flush::Done {
        let _ = stream.socket.shutdown(std::net::Shutdown::Write);
        return Ok(false);
    }
    if behind {
        return Ok(true);
    }
    for _ in 0..READS_PER_TURN {
        match stream.socket.read(buffer) {
            Ok(0) => return Err(StreamEnd::Closed),
            Ok(n) => {
                if !stream.closing {
                    machine.handle_stream(now, stream.id, StreamInput::Data(&buffer[..n]));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(StreamEnd::Closed),
        }
    }
    *unread = true;
    Ok(true)
}

fn tls<M: Machine>(
    stream: &mut Stream,
    machine: &mut M,
    now: Instant,
    behind: bool,
    buffer: &mut [u8],
    unread: &mut bool,
) -> Result<bool, StreamEnd> {
    let Some(connection) = stream.tls.as_mut() else {
        return Ok(true);
    };
    // Plaintext into rustls as far as its buffer allows (once the handshake is done), records
    // out to the socket, again, until one of them is full.
    loop {
        if let Phase::Open = stream.phase {
            let _ = stream
                .out
                .write(|bytes| match connection.writer().write(bytes) {
                    Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                    other => other,
                });
        }
        if !connection.wants_write() {
            break;
        }
        match connection.write_tls(&mut stream.socket) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(StreamEnd::Closed),
        }
    }
    if stream.closing && stream.out.is_empty() && !connection.wants_write() {
        connection.send_close_notify();
        let _ = connection.write_tls(&mut stream.socket);
        let _ = stream.socket.shutdown(std::net::Shutdown::Write);
        return Ok(false);
    }
    if behind && matches!(stream.phase, Phase::Open) {
        return Ok(true);
    }
    // Records in, plaintext to the machine.
    let mut turns = 0;
    loop {
        if turns == READS_PER_TURN {
            *unread = true;
            break;
        }
        turns += 1;
        match connection.read_tls(&mut stream.socket) {
            Ok(0) => return Err(StreamEnd::Closed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(StreamEnd::Closed),
        }
        let state = connection
            .process_new_packets()
            .map_err(|e| StreamEnd::Tls(failure_of(&e)))?;
        if matches!(stream.phase, Phase::Handshaking) && !connection.is_handshaking() {
            stream.phase = Phase::Open;
            machine.handle_stream(now, stream.id, StreamInput::Opened);
        }
        let mut plaintext = state.plaintext_bytes_to_read();
        while plaintext > 0 {
            let n = connection
                .reader()
                .read(&mut buffer[..plaintext.min(READ_CHUNK)])
                .map_err(|_| StreamEnd::Closed)?;
            if n == 0 {
                break;
            }
            plaintext -= n;
            if !stream.closing {
                machine.handle_stream(now, stream.id, StreamInput::Data(&buffer[..n]));
            }
        }
        if state.peer_has_closed() {
            return Err(StreamEnd::Closed);
        }
        // The handshake's own answers.
        while connection.wants_write() {
            match connection.write_tls(&mut stream.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(StreamEnd::Closed),
            }
        }
    }
    Ok(true)
}

/// A TLS client configuration trusting the platform's root certificates.
fn platform_client_tls() -> Result<Arc<rustls::ClientConfig>, ()> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(());
    }
    client_tls(roots).map_err(|_| ())
}

/// A TLS client configuration trusting `roots` (rustls with the aws-lc-rs provider, the one
/// str0m already builds), for [`MioConfig::turn_tls`](crate::MioConfig::turn_tls) and for
/// [`JoinOptions::tls`](crate::JoinOptions::tls) (your own certificate authority, a test
/// certificate).
///
/// ```
/// let mut roots = rtcmesh_mio::rustls::RootCertStore::empty();
/// // roots.add(your_ca_certificate)?;
/// let tls = rtcmesh_mio::client_tls(roots)?;
/// let config = rtcmesh_mio::MioConfig::default().with_turn_tls(Some(tls));
/// # let _ = config;
/// # Ok::<(), rtcmesh_mio::rustls::Error>(())
/// ```
pub fn client_tls(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// rustls's error, in the mesh's words.
fn failure_of(e: &rustls::Error) -> TlsFailure {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => TlsFailure::UnknownIssuer,
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => TlsFailure::NameMismatch,
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => TlsFailure::Expired,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsFailure::BadCertificate
        }
        _ => TlsFailure::Handshake,
    }
}
