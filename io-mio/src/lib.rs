//! # rtcmesh-mio
//!
//! Embeds an [`rtcmesh`] mesh (or any [`Machine`]) in a `mio::Poll` the caller owns: one
//! [`MioEndpoint`] owns one non-blocking UDP socket, registered under the caller's [`Token`].
//! No threads, no channels: commands and events are the machine's own, used directly. (One
//! exception, feature `mdns`, on by default: once a peer sends a `.local` candidate — browsers
//! hide their host addresses so — an `mdns-sd` daemon thread resolves such names; see
//! [Features](#features).)
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! use std::time::Instant;
//! use mio::{Events, Poll, Token};
//! use rtcmesh::{Mesh, MeshConfig};
//! use rtcmesh_mio::MioEndpoint;
//!
//! let mut poll = Poll::new()?;
//! let mesh = Mesh::create_server(MeshConfig::default()).expect("config");
//! let mut endpoint = MioEndpoint::bind("127.0.0.1:0".parse().unwrap(), None, mesh, poll.registry(), Token(0))?;
//! let mut events = Events::with_capacity(64);
//! loop {
//!     poll.poll(&mut events, endpoint.timeout(Instant::now()))?;
//!     for event in events.iter() {
//!         if event.token() == Token(0) { endpoint.handle_ready(Instant::now())?; }
//!     }
//!     endpoint.handle_timeout(Instant::now())?;           // every turn: the mesh's clock
//!     // Commands: endpoint.machine_mut().send(..), .add_peer(..), .handle_signal(..)
//!     endpoint.flush();                                      // after commands, once per turn
//!     while let Some(event) = endpoint.machine_mut().poll_event() { /* Signal, Packet, … */ }
//! }
//! # }
//! ```
//!
//! The socket is registered for both readable and writable readiness (mio is edge-triggered):
//! a datagram the socket refuses with `WouldBlock` is kept and goes out first on the next
//! writable event, so nothing is lost.
//!
//! ## The clock
//! Call [`MioEndpoint::handle_timeout`] on **every** turn, before commands: it tells the machine
//! the time even when no deadline is due, and `send` stamps SCTP data with that time (a stale
//! time makes SCTP retransmit at once, spuriously).
//!
//! ## Backpressure
//! Events wait in the machine until the application calls `poll_event`. While more than
//! [`MioConfig::max_pending_events`] events or [`MioConfig::max_pending_bytes`] bytes wait,
//! [`handle_ready`](MioEndpoint::handle_ready) leaves datagrams in the socket: the kernel's
//! buffer fills and then drops, and SCTP's flow and congestion control slow the senders down.
//! Reliable channels lose nothing (SCTP retransmits); unreliable packets may be lost, as on a
//! congested network. Once the application has caught up, [`timeout`](MioEndpoint::timeout)
//! returns zero and the next [`handle_timeout`](MioEndpoint::handle_timeout) reads again.
//!
//! ## Socket buffers
//! [`MioEndpoint::bind`] asks the kernel for 4 MiB receive and send buffers
//! ([`rtcmesh::SOCKET_BUFFER`]; set others with [`MioEndpoint::bind_with`]); the default
//! 208 KiB overflows when the loop is a few milliseconds late. What the kernel granted is in
//! [`MioEndpoint::socket_buffers`], with a hint when it is less; datagrams the kernel dropped
//! are in [`PumpStats::receive_buffer_drops`].
//!
//! ## Joining a lobby without tokio
//! [`join`] connects to a signaling server (the Godot demo protocol, `ws://` or `wss://`) and
//! blocks until it has given us an id, at most [`JoinOptions::timeout`]; the [`Session`] it
//! returns lives in your `Poll` like a `MioEndpoint` and carries the signals itself. The
//! WebSocket is `tungstenite`'s synchronous client on a non-blocking mio stream; `wss://` needs
//! the `tls` feature (on by default: rustls, with the platform's root certificates or
//! [`JoinOptions::tls`]).
//!
//! ## Network changes
//! [`MioEndpoint::rebind`] moves the endpoint to a new socket (a new network, a port a NAT no
//! longer maps) under the same token; every peer stays connected, with its reliable data.
//!
//! ## TURN over TCP and TLS
//! For `turn:…?transport=tcp` and `turns:` ICE servers the endpoint opens TCP connections
//! itself, registered under the same token (every readiness event for it moves them on too),
//! and runs TLS with rustls, checking the server's certificate for the URL's host against the
//! platform's roots or [`MioConfig::turn_tls`].
//!
//! ## Features
//! - `mdns` (on by default): peers' `.local` ICE candidates are resolved with mDNS
//!   (`mdns-sd`), so a browser on the same LAN connects host to host, also with no route out.
//!   The daemon (a thread, port 5353) starts only when a peer sends such a name; answers are
//!   given to the mesh in [`flush`](MioEndpoint::flush), and [`timeout`](MioEndpoint::timeout)
//!   is at most 20 ms while one is awaited. Without the feature those candidates are dropped
//!   (counted in `MeshStats::mdns_names_unresolved`).

#![deny(missing_docs)]

mod lobby;
mod mdns;
mod socket;
mod streams;

pub use lobby::{join, join_with, JoinError, JoinOptions, Session};

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use rtcmesh::{
    DatagramPump, Flush, Machine, PumpStats, SocketBuffers, RECEIVE_BATCH, SOCKET_BUFFER,
};

pub use rtcmesh;
/// The TLS library behind `turns:` and `wss://` (for [`MioConfig::turn_tls`] and
/// [`JoinOptions::tls`]).
pub use rustls;
pub use streams::client_tls;
use streams::Streams;
/// The WebSocket library of [`join`] (its errors are in [`JoinError::WebSocket`]).
pub use tungstenite;

/// Where a [`MioEndpoint`]'s socket binds, its buffers, and how much it holds for a slow
/// application. Start from the default and change what you need with the `with_*` setters.
///
/// ```
/// # use rtcmesh_mio::MioConfig;
/// let config = MioConfig::default().with_max_pending_events(256);
/// assert_eq!(config.max_pending_events, 256);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MioConfig {
    /// The socket's address. Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// The address announced to peers (see [`DatagramPump::attach`]); required when `bind`
    /// is an unspecified address.
    pub announce: Option<IpAddr>,
    /// `SO_RCVBUF` to ask for, in bytes; default [`SOCKET_BUFFER`] (4 MiB), 0 for the
    /// kernel's default.
    pub receive_buffer: usize,
    /// `SO_SNDBUF` to ask for, in bytes; default [`SOCKET_BUFFER`], 0 for the kernel's default.
    pub send_buffer: usize,
    /// Unread events at which the endpoint stops reading the socket (default 1024).
    pub max_pending_events: usize,
    /// Unread packet bytes at which the endpoint stops reading the socket (default 4 MiB).
    pub max_pending_bytes: usize,
    /// TLS for `turns:` ICE servers: `None` (default) trusts the platform's root certificates;
    /// give a configuration to trust others ([`client_tls`] with your own CA). The server's
    /// certificate is always checked for the URL's host name.
    pub turn_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for MioConfig {
    fn default() -> Self {
        MioConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            announce: None,
            receive_buffer: SOCKET_BUFFER,
            send_buffer: SOCKET_BUFFER,
            max_pending_events: 1024,
            max_pending_bytes: 4 << 20,
            turn_tls: None,
        }
    }
}

rtcmesh::__config_setters!(MioConfig {
    with_bind => bind: SocketAddr,
    with_announce => announce: Option<IpAddr>,
    with_receive_buffer => receive_buffer: usize,
    with_send_buffer => send_buffer: usize,
    with_max_pending_events => max_pending_events: usize,
    with_max_pending_bytes => max_pending_bytes: usize,
    with_turn_tls => turn_tls: Option<Arc<rustls::ClientConfig>>,
});

/// One UDP socket in the caller's `mio::Poll`, driving one [`Machine`].
///
/// ```
/// use std::time::Instant;
/// use mio::{Poll, Token};
/// use rtcmesh::{Flush, Mesh, MeshConfig};
/// use rtcmesh_mio::MioEndpoint;
///
/// let poll = Poll::new()?;
/// let mesh = Mesh::create_mesh(2, MeshConfig::default())?;
/// let mut endpoint = MioEndpoint::bind("127.0.0.1:0".parse()?, None, mesh, poll.registry(), Token(0))?;
/// endpoint.handle_timeout(Instant::now())?; // every turn, before commands
/// endpoint.machine_mut().add_peer(Instant::now(), 1, 1)?; // a command: the offer is an event
/// let _: Flush = endpoint.flush(); // after commands; Blocked: the rest goes on the next writable event
/// assert!(endpoint.machine().has_peer(1));
/// println!("{:?}", endpoint.timeout(Instant::now())); // what to pass to Poll::poll
/// let mesh = endpoint.into_machine(poll.registry())?; // deregistered; the socket is closed
/// assert_eq!(mesh.unique_id(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MioEndpoint<M> {
    socket: UdpSocket,
    machine: M,
    pump: DatagramPump,
    buffers: SocketBuffers,
    /// What [`rebind`](MioEndpoint::rebind) needs again: the token, the announced address.
    token: Token,
    announce: Option<IpAddr>,
    max_pending_events: usize,
    max_pending_bytes: usize,
    /// Datagrams were left in the socket while the application was behind (mio is
    /// edge-triggered: no new event will say so).
    unread: bool,
    /// Streams to TURN servers over TCP or TLS.
    streams: Streams,
    /// Resolves peers' `.local` names for the mesh.
    mdns: mdns::Resolver,
    /// The latest time the caller gave (mDNS answers are stamped with it too).
    last_now: Instant,
}

impl<M: Machine> MioEndpoint<M> {
    /// Binds a socket on `addr` with 4 MiB buffers, announces it to `machine` (see
    /// [`DatagramPump::attach`] for `announce`), and registers it under `token`.
    pub fn bind(
        addr: SocketAddr,
        announce: Option<IpAddr>,
        machine: M,
        registry: &Registry,
        token: Token,
    ) -> io::Result<MioEndpoint<M>> {
        let config = MioConfig {
            bind: addr,
            announce,
            ..MioConfig::default()
        };
        Self::bind_with(config, machine, registry, token)
    }

    /// [`bind`](MioEndpoint::bind) with every setting of `config`.
    pub fn bind_with(
        config: MioConfig,
        machine: M,
        registry: &Registry,
        token: Token,
    ) -> io::Result<MioEndpoint<M>> {
        let (socket, buffers) =
            socket::bind(config.bind, config.receive_buffer, config.send_buffer)?;
        let mut endpoint = Self::from_std(socket, config.announce, machine, registry, token)?;
        endpoint.buffers = buffers;
        endpoint.max_pending_events = config.max_pending_events;
        endpoint.max_pending_bytes = config.max_pending_bytes;
        // Nothing was opened yet (no flush happened): the configured TLS applies from the start.
        endpoint.streams = Streams::new(registry.try_clone()?, token, config.turn_tls);
        Ok(endpoint)
    }

    /// Like [`bind`](MioEndpoint::bind), with a socket the caller built (to set buffer sizes
    /// or other options first; they are left as they are). It is switched to non-blocking
    /// mode. The backlog limits are [`MioConfig`]'s defaults.
    pub fn from_std(
        socket: std::net::UdpSocket,
        announce: Option<IpAddr>,
        mut machine: M,
        registry: &Registry,
        token: Token,
    ) -> io::Result<MioEndpoint<M>> {
        socket.set_nonblocking(true)?;
        let buffers = socket::granted(&socket);
        let mut socket = UdpSocket::from_std(socket);
        let pump = DatagramPump::attach(&mut machine, socket.local_addr()?, announce)?;
        // ICE server host names are resolved here, blocking (the core does no DNS); a name
        // that does not resolve is reported by the mesh.
        for host in machine.mesh().ice_server_hosts() {
            let addresses: Vec<IpAddr> = (host.as_str(), 0)
                .to_socket_addrs()
                .map(|found| found.map(|a| a.ip()).collect())
                .unwrap_or_default();
            machine
                .mesh_mut()
                .set_ice_server_addresses(&host, &addresses);
        }
        // The loop's first turn: ICE servers are asked before any peer exists.
        let now = Instant::now();
        machine.handle_timeout(now);
        registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
        let defaults = MioConfig::default();
        let streams = Streams::new(registry.try_clone()?, token, None);
        Ok(MioEndpoint {
            socket,
            machine,
            pump,
            buffers,
            token,
            announce,
            max_pending_events: defaults.max_pending_events,
            max_pending_bytes: defaults.max_pending_bytes,
            unread: false,
            streams,
            mdns: mdns::resolver(),
            last_now: now,
        })
    }

    /// Handles a readiness event for this endpoint's token: reads every waiting datagram
    /// (stamped `now`) unless the application is behind (see the crate docs on backpressure),
    /// and sends what the machine has. Errors are the socket's own.
    pub fn handle_ready(&mut self, now: Instant) -> io::Result<()> {
        self.last_now = self.last_now.max(now);
        self.read(now)?;
        if !self.streams.is_empty() {
            let behind = self.is_behind();
            self.unread |= behind;
            self.streams.progress(&mut self.machine, now, behind);
        }
        let _ = self.flush();
        Ok(())
    }

    /// Tells the machine the time (on every call, so commands that follow send with it) and
    /// fires its timers if due; reads the datagrams left in the socket once the application
    /// has caught up; sends what all this produced. Call it on every turn of the loop.
    pub fn handle_timeout(&mut self, now: Instant) -> io::Result<()> {
        self.last_now = self.last_now.max(now);
        self.machine.handle_timeout(now);
        if (self.unread || self.streams.unread) && !self.is_behind() {
            self.read(now)?;
            self.streams.progress(&mut self.machine, now, false);
        }
        let _ = self.flush();
        Ok(())
    }

    /// Reads until the socket would block, or while the application is behind.
    fn read(&mut self, now: Instant) -> io::Result<()> {
        loop {
            if self.is_behind() {
                self.unread = true;
                return Ok(());
            }
            let socket = &self.socket;
            let read = self
                .pump
                .receive(&mut self.machine, now, |buf| socket.recv_from(buf))?;
            let _ = self.flush();
            // Edge-triggered: keep reading until the socket says WouldBlock.
            if read < RECEIVE_BATCH {
                self.unread = false;
                return Ok(());
            }
        }
    }

    /// Whether the application has more unread events than the limits allow.
    pub fn is_behind(&self) -> bool {
        let pending = self.machine.pending_events();
        pending.events >= self.max_pending_events || pending.bytes >= self.max_pending_bytes
    }

    /// Sends what the machine has to send; call it after commands. Returns
    /// [`Flush::Blocked`] when the socket is full: the rest goes out on the next writable event.
    /// Peers' `.local` names (from signals just applied) are asked for here, and the answers
    /// that arrived given to the mesh.
    pub fn flush(&mut self) -> Flush {
        self.mdns.poll(self.machine.mesh_mut(), self.last_now);
        let socket = &self.socket;
        let flush = self
            .pump
            .transmit(&mut self.machine, |bytes, to| socket.send_to(bytes, to));
        // Stream commands after the datagrams: relayed data for a server reached over TCP is
        // written as they are polled. While the application is behind, the streams are written
        // but not read (as the socket is not), and read once it caught up.
        let behind = self.is_behind();
        self.unread |= behind && !self.streams.is_empty();
        self.streams
            .commands(&mut self.machine, self.last_now, behind);
        flush
    }

    /// The timeout to pass to `Poll::poll`: until the machine's next deadline, or zero when
    /// datagrams wait in the socket for an application that has caught up (at most 20 ms while
    /// an mDNS answer is awaited).
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if (self.unread || self.streams.unread) && !self.is_behind() {
            return Some(Duration::ZERO);
        }
        self.mdns
            .wake_by(now, self.machine.poll_timeout())
            .map(|at| at.saturating_duration_since(now))
    }

    /// The machine (for queries).
    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// The machine, for commands and `poll_event`. Call [`flush`](MioEndpoint::flush) after
    /// commands so their datagrams go out.
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// The announced local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.pump.local_addr()
    }

    /// The socket's kernel buffers, asked for and granted; [`SocketBuffers::shortfall`] says
    /// when the kernel granted less, and which setting raises the cap.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    /// Socket-side counters (datagrams sent, received, `WouldBlock`s, errors), with the
    /// kernel's count of dropped datagrams read now.
    pub fn stats(&self) -> PumpStats {
        let mut stats = self.pump.stats();
        stats.receive_buffer_drops = socket::receive_drops(&self.socket);
        stats.stream_frames_dropped += self.streams.dropped;
        stats
    }

    /// Replaces the socket with a new one bound to `bind` (the network changed, or a NAT stopped
    /// mapping the old port) and returns the new announced address. Peers stay connected: the
    /// mesh moves its host candidate ([`Mesh::move_host_candidate`](rtcmesh::Mesh::move_host_candidate)),
    /// restarts ICE where this side offers, and the peers find it at the new address. The new
    /// socket asks for the same buffer sizes as the old one (none for a socket from
    /// [`from_std`](MioEndpoint::from_std)) and is registered under the same token; the old one
    /// is deregistered and closed, with whatever it still held. On an error the old socket is
    /// kept and nothing changes. Call [`flush`](MioEndpoint::flush) afterwards.
    pub fn rebind(
        &mut self,
        registry: &Registry,
        now: Instant,
        bind: SocketAddr,
    ) -> io::Result<SocketAddr> {
        let (new, buffers) = socket::bind(
            bind,
            self.buffers.receive_requested,
            self.buffers.send_requested,
        )?;
        let mut new = UdpSocket::from_std(new);
        let bound = new.local_addr()?;
        registry.register(
            &mut new,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if let Err(e) = self
            .pump
            .rebind(&mut self.machine, now, bound, self.announce)
        {
            let _ = registry.deregister(&mut new);
            return Err(e);
        }
        let _ = registry.deregister(&mut self.socket);
        self.socket = new;
        self.buffers = buffers;
        // Read the new socket at the next turn whatever its readiness events say (edge-triggered:
        // one may have fired before the old socket was swapped out).
        self.unread = true;
        Ok(self.pump.local_addr())
    }

    /// Deregisters the socket (and any stream to a TURN server) and gives the machine back.
    pub fn into_machine(mut self, registry: &Registry) -> io::Result<M> {
        self.streams.close_all();
        registry.deregister(&mut self.socket)?;
        Ok(self.machine)
    }
}
