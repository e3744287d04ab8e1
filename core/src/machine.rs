//! The one interface an I/O loop needs: feed datagrams and time in, drain datagrams, events and
//! the next deadline out. [`Mesh`] implements it, and so does anything layered on a mesh, so the
//! adapters (`rtcmesh-tokio`, `rtcmesh-mio`) drive either without knowing which.

use std::net::SocketAddr;
use std::time::Instant;

use crate::event::{Event, PendingEvents, Transmit};
use crate::mesh::Mesh;
use crate::signal::OutgoingSignal;

/// A sans-IO machine an event loop can drive over one UDP socket.
pub trait Machine {
    /// What the machine reports to the application.
    type Event;

    /// Passes one received UDP datagram (`source` remote, `destination` local).
    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    );
    /// Advances timers that are due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next datagram to send, if any.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// The next event, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When [`handle_timeout`](Machine::handle_timeout) should next be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Events (and payload bytes) waiting for [`poll_event`](Machine::poll_event). An I/O loop
    /// stops reading the socket while this is above its limit, so a slow application bounds
    /// the backlog instead of growing it. The default counts the mesh's queue: a machine that
    /// keeps a queue of its own adds it.
    fn pending_events(&self) -> PendingEvents {
        self.mesh().pending_events()
    }
    /// The mesh underneath, for peer management and signals.
    fn mesh(&self) -> &Mesh;
    /// The mesh underneath, mutably.
    fn mesh_mut(&mut self) -> &mut Mesh;
    /// Takes an event apart into the signal it carries, or gives it back unchanged. Signaling
    /// glue uses this to deliver signals itself and pass every other event on.
    fn into_signal(event: Self::Event) -> Result<OutgoingSignal, Self::Event>;
}

impl Machine for Mesh {
    type Event = Event;

    fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) {
        Mesh::handle_datagram(self, now, source, destination, contents)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Mesh::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        Mesh::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Mesh::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Mesh::poll_timeout(self)
    }
    fn mesh(&self) -> &Mesh {
        self
    }
    fn mesh_mut(&mut self) -> &mut Mesh {
        self
    }
    fn into_signal(event: Event) -> Result<OutgoingSignal, Event> {
        match event {
            Event::Signal(signal) => Ok(signal),
            other => Err(other),
        }
    }
}
