//! # rtcmesh-mio
//!
//! Embeds an [`rtcmesh`] mesh (or any [`Machine`]) in a `mio::Poll` the caller owns: one
//! [`MioEndpoint`] owns one non-blocking UDP socket, registered under the caller's [`Token`].
//! No threads, no channels: commands and events are the machine's own, used directly.
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
//!     endpoint.handle_timeout(Instant::now());
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

#![deny(missing_docs)]

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use rtcmesh::{DatagramPump, Flush, Machine, PumpStats, RECEIVE_BATCH};

pub use rtcmesh;

/// One UDP socket in the caller's `mio::Poll`, driving one [`Machine`].
#[derive(Debug)]
pub struct MioEndpoint<M> {
    socket: UdpSocket,
    machine: M,
    pump: DatagramPump,
}

impl<M: Machine> MioEndpoint<M> {
    /// Binds a socket on `addr`, announces it to `machine` (see
    /// [`DatagramPump::attach`] for `announce`), and registers it under `token`.
    pub fn bind(
        addr: SocketAddr,
        announce: Option<IpAddr>,
        machine: M,
        registry: &Registry,
        token: Token,
    ) -> io::Result<MioEndpoint<M>> {
        Self::from_std(
            std::net::UdpSocket::bind(addr)?,
            announce,
            machine,
            registry,
            token,
        )
    }

    /// Like [`bind`](MioEndpoint::bind), with a socket the caller built (to set buffer sizes
    /// or other options first). It is switched to non-blocking mode.
    pub fn from_std(
        socket: std::net::UdpSocket,
        announce: Option<IpAddr>,
        mut machine: M,
        registry: &Registry,
        token: Token,
    ) -> io::Result<MioEndpoint<M>> {
        socket.set_nonblocking(true)?;
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
        machine.handle_timeout(Instant::now());
        registry.register(&mut socket, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(MioEndpoint {
            socket,
            machine,
            pump,
        })
    }

    /// Handles a readiness event for this endpoint's token: reads every waiting datagram
    /// (stamped `now`) and sends what the machine has. Errors are the socket's own.
    pub fn handle_ready(&mut self, now: Instant) -> io::Result<()> {
        loop {
            let socket = &self.socket;
            let read = self
                .pump
                .receive(&mut self.machine, now, |buf| socket.recv_from(buf))?;
            let _ = self.flush();
            // Edge-triggered: keep reading until the socket says WouldBlock.
            if read < RECEIVE_BATCH {
                return Ok(());
            }
        }
    }

    /// Fires the machine's timers if due, and sends what they produced.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.machine.poll_timeout().is_some_and(|at| at <= now) {
            self.machine.handle_timeout(now);
        }
        let _ = self.flush();
    }

    /// Sends what the machine has to send; call it after commands. Returns
    /// [`Flush::Blocked`] when the socket is full: the rest goes out on the next writable event.
    pub fn flush(&mut self) -> Flush {
        let socket = &self.socket;
        self.pump
            .transmit(&mut self.machine, |bytes, to| socket.send_to(bytes, to))
    }

    /// The timeout to pass to `Poll::poll`: until the machine's next deadline.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.machine
            .poll_timeout()
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

    /// Socket-side counters (datagrams sent, received, `WouldBlock`s, errors).
    pub fn stats(&self) -> PumpStats {
        self.pump.stats()
    }

    /// Deregisters the socket and gives the machine back.
    pub fn into_machine(mut self, registry: &Registry) -> io::Result<M> {
        registry.deregister(&mut self.socket)?;
        Ok(self.machine)
    }
}
