//! The event loop: one tokio UDP socket driving one [`Machine`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::{AddPeerError, TransferMode};
use rtcmesh::{DatagramPump, Flush, Machine, Mesh, PeerId, SendError, Signal, SignalError, Target};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

type Call<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

/// Where the endpoint's socket binds and which address it announces.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The socket's address. Default `127.0.0.1:0`: loopback, an ephemeral port.
    pub bind: SocketAddr,
    /// The address announced to peers as the host candidate, and recorded as the local address
    /// of every received datagram. Defaults to the bound IP; **required** when binding an
    /// unspecified address (`0.0.0.0:port` or `[::]:port`, to listen on all interfaces): give
    /// the one address peers should reach you at (e.g. your LAN address).
    pub announce: Option<IpAddr>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            announce: None,
        }
    }
}

/// The endpoint's task is gone: the machine was closed or the socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the rtcmesh endpoint has stopped")
    }
}

impl std::error::Error for Closed {}

/// A running machine on its own UDP socket.
///
/// Build one with [`Endpoint::spawn`]; talk to it through the cloneable [`Handle`] and read
/// what it reports from [`Events`]. The task stops when [`Handle::close`] is called or every
/// handle is dropped (then the mesh is closed and its last datagrams are sent).
pub struct Endpoint;

impl Endpoint {
    /// Binds the socket, registers its host candidate with the mesh and starts the loop.
    pub async fn spawn<M>(
        config: EndpointConfig,
        mut machine: M,
    ) -> io::Result<(Handle<M>, Events<M::Event>)>
    where
        M: Machine + Send + 'static,
        M::Event: Send + 'static,
    {
        let socket = UdpSocket::bind(config.bind).await?;
        let pump = DatagramPump::attach(&mut machine, socket.local_addr()?, config.announce)?;
        resolve_ice_servers(machine.mesh_mut()).await;
        // The loop's first turn: ICE servers are asked before any peer exists.
        machine.handle_timeout(Instant::now());
        let local = pump.local_addr();
        let (calls, call_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(socket, pump, machine, call_rx, event_tx));
        Ok((
            Handle { calls, local },
            Events {
                events,
                task: Some(task),
            },
        ))
    }
}

/// How long one host name of an ICE server may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves the host names in the mesh's ICE server URLs (the core does no DNS); a name that
/// does not resolve in time is passed on as unresolved, and reported by the mesh.
async fn resolve_ice_servers(mesh: &mut Mesh) {
    for host in mesh.ice_server_hosts() {
        let lookup = tokio::net::lookup_host((host.as_str(), 0));
        let addresses: Vec<IpAddr> = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
            _ => Vec::new(),
        };
        mesh.set_ice_server_addresses(&host, &addresses);
    }
}

/// The loop: receive → machine, machine → socket, sleep until the machine's next deadline.
async fn run<M: Machine>(
    socket: UdpSocket,
    mut pump: DatagramPump,
    mut machine: M,
    mut calls: mpsc::UnboundedReceiver<Option<Call<M>>>,
    events: mpsc::UnboundedSender<M::Event>,
) -> io::Result<()> {
    loop {
        let flush = pump.transmit(&mut machine, |b, to| socket.try_send_to(b, to));
        while let Some(event) = machine.poll_event() {
            let _ = events.send(event); // nobody listening is the application's choice
        }
        let deadline = machine
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            ready = socket.readable() => {
                ready?;
                pump.receive(&mut machine, Instant::now(), |buf| socket.try_recv_from(buf))?;
            }
            ready = socket.writable(), if flush == Flush::Blocked => ready?,
            call = calls.recv() => match call {
                Some(Some(call)) => call(&mut machine, Instant::now()),
                Some(None) | None => break,
            },
            () = tokio::time::sleep_until(deadline.into()) => machine.handle_timeout(Instant::now()),
        }
    }
    machine.mesh_mut().close();
    while let Some(event) = machine.poll_event() {
        let _ = events.send(event);
    }
    // Best effort: the close notifications go out if the socket takes them now.
    let _ = pump.transmit(&mut machine, |b, to| socket.try_send_to(b, to));
    Ok(())
}

/// How long the loop sleeps when the machine has no deadline at all.
const IDLE: Duration = Duration::from_secs(3600);

/// Commands for a running endpoint. Cheap to clone; every method waits for the loop to run it.
pub struct Handle<M> {
    calls: mpsc::UnboundedSender<Option<Call<M>>>,
    local: SocketAddr,
}

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            calls: self.calls.clone(),
            local: self.local,
        }
    }
}

impl<M: Machine + 'static> Handle<M> {
    /// The address announced to peers (the socket's port on the announced IP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Runs `f` on the machine inside the loop, with the loop's current time, and returns its
    /// result. Everything the other methods do goes through this.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut M, Instant) -> R + Send + 'static,
    ) -> Result<R, Closed> {
        let (tx, rx) = oneshot::channel();
        let call: Call<M> = Box::new(move |machine, now| {
            let _ = tx.send(f(machine, now));
        });
        self.calls.send(Some(call)).map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Godot's `add_peer(id, unreliable_lifetime)`.
    pub async fn add_peer(&self, id: PeerId, unreliable_lifetime: i32) -> Result<(), AddPeerError> {
        self.call(move |m, now| m.mesh_mut().add_peer(now, id, unreliable_lifetime))
            .await
            .unwrap_or(Err(AddPeerError::Closed))
    }

    /// Removes a peer (its connection is closed; `PeerDisconnected` follows if it was connected).
    pub async fn remove_peer(&self, id: PeerId) -> Result<bool, Closed> {
        self.call(move |m, _| m.mesh_mut().remove_peer(id)).await
    }

    /// Passes a signal from `from` (when the application carries signals itself).
    pub async fn handle_signal(&self, from: PeerId, signal: Signal) -> Result<(), SignalError> {
        self.call(move |m, now| m.mesh_mut().handle_signal(now, from, signal))
            .await
            .unwrap_or(Err(SignalError::Closed))
    }

    /// Closes the mesh (every peer gets a close notification) and stops the loop. Events
    /// emitted by the close are still delivered, then [`Events::recv`] returns `None`.
    pub fn close(&self) {
        let _ = self.calls.send(None);
    }
}

impl Handle<Mesh> {
    /// Sends `data` to `target` (see [`Mesh::send`]).
    pub async fn send(
        &self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        let data = data.into();
        self.call(move |m, _| m.send(target, mode, channel, &data))
            .await
            .unwrap_or(Err(SendError::Disconnected))
    }
}

impl Handle<rtcmesh::Multiplayer> {
    /// SceneMultiplayer's `send_bytes` (see [`rtcmesh::Multiplayer::send_bytes`]): relayed
    /// through the server in client mode.
    pub async fn send_bytes(
        &self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        let data = data.into();
        self.call(move |m, _| m.send_bytes(target, mode, channel, &data))
            .await
            .unwrap_or(Err(SendError::Disconnected))
    }
}

/// What the machine reports, in order. Unbounded: read it from your loop.
pub struct Events<E> {
    events: mpsc::UnboundedReceiver<E>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl<E> Events<E> {
    /// Events from `events`, finishing with `task`.
    pub(crate) fn new(
        events: mpsc::UnboundedReceiver<E>,
        task: Option<JoinHandle<io::Result<()>>>,
    ) -> Self {
        Events { events, task }
    }

    /// Takes the receiver and the loop's task apart (to put a filter in between).
    pub(crate) fn into_parts(
        self,
    ) -> (
        mpsc::UnboundedReceiver<E>,
        Option<JoinHandle<io::Result<()>>>,
    ) {
        (self.events, self.task)
    }

    /// The next event, or `None` once the endpoint has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<E> {
        self.events.recv().await
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<E> {
        self.events.try_recv().ok()
    }

    /// Waits for the loop to end and returns why: `Ok` after a close, the socket's error
    /// otherwise.
    pub async fn finished(&mut self) -> io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| Err(io::Error::other(e))),
            None => Ok(()),
        }
    }
}
