//! The event loop: one tokio UDP socket driving one [`Machine`].

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcmesh::{AddPeerError, PumpStats, SocketBuffers, TransferMode, SOCKET_BUFFER};
use rtcmesh::{DatagramPump, Flush, Machine, Mesh, PeerId, SendError, Signal, SignalError, Target};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError as ChannelFull;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;

use crate::game_loop::{EveryPeerClock, Reply, Shared, Snapshot, StopOnDrop, TrySendError};
use crate::socket;
use crate::streams::{News, Streams};

type Call<M> = Box<dyn FnOnce(&mut M, Instant) + Send>;

/// Where the loop answers a batch of sends: each packet's result, in order.
type SendReply = oneshot::Sender<Vec<Result<(), SendError>>>;

/// What a [`Handle`] asks of the loop.
enum Command<M> {
    /// Run a closure on the machine.
    Call(Call<M>),
    /// Send packets (counted in the shared [`SendStats`](crate::SendStats)), answering each
    /// result if someone waits for them.
    Send(Vec<OutgoingPacket>, Option<SendReply>),
    /// Report the pump's counters, with the kernel's drop count read now.
    Stats(oneshot::Sender<PumpStats>),
    /// Replace the socket with one bound to this address; reply with the announced address.
    Rebind(SocketAddr, oneshot::Sender<io::Result<SocketAddr>>),
}

/// How a replacement socket is set up: as the first one was.
#[derive(Debug, Clone, Copy)]
struct SocketSetup {
    announce: Option<IpAddr>,
    receive_buffer: usize,
    send_buffer: usize,
}

/// The endpoint's socket, and how much it buffers for a slow application. Start from the
/// default and change what you need with the `with_*` setters (new settings never break that).
///
/// ```
/// # use rtcmesh_tokio::EndpointConfig;
/// let config = EndpointConfig::default()
///     .with_bind("0.0.0.0:7000".parse().unwrap())
///     .with_announce(Some("192.0.2.10".parse().unwrap())); // the address peers reach us at
/// assert_eq!(config.event_capacity, 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// The socket's address. Default `127.0.0.1:0`: loopback, an ephemeral port.
    pub bind: SocketAddr,
    /// The address announced to peers as the host candidate, and recorded as the local address
    /// of every received datagram. Defaults to the bound IP; **required** when binding an
    /// unspecified address (`0.0.0.0:port` or `[::]:port`, to listen on all interfaces): give
    /// the one address peers should reach you at (e.g. your LAN address).
    pub announce: Option<IpAddr>,
    /// The socket's receive buffer (`SO_RCVBUF`), in bytes. Default [`SOCKET_BUFFER`] (4 MiB):
    /// the kernel's default (208 KiB on Linux) overflows when the loop is a few milliseconds
    /// late, and every overflow costs SCTP a retransmission. The kernel may grant less (see
    /// [`Handle::socket_buffers`]). 0 leaves the kernel's default.
    pub receive_buffer: usize,
    /// The socket's send buffer (`SO_SNDBUF`), in bytes. Default [`SOCKET_BUFFER`]; 0 leaves
    /// the kernel's default.
    pub send_buffer: usize,
    /// How many events wait for [`Events::recv`] before the loop stops reading the socket
    /// (default 1024, at least 1). While the application is behind, datagrams stay in the
    /// kernel: its buffer fills and then drops them, and SCTP's flow and congestion control
    /// slow the senders down. Reliable channels lose nothing (SCTP retransmits); unreliable
    /// packets may be lost, as on a congested network.
    pub event_capacity: usize,
    /// How many commands ([`Handle`] calls) wait for the loop before a caller waits too
    /// (default 256, at least 1).
    pub command_capacity: usize,
    /// TLS for `turns:` ICE servers: `None` (default) trusts the platform's root
    /// certificates; give a configuration to trust others (e.g.
    /// [`client_tls`](crate::signal::client_tls) with your own CA). The server's certificate
    /// is always checked for the URL's host name.
    pub turn_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            announce: None,
            receive_buffer: SOCKET_BUFFER,
            send_buffer: SOCKET_BUFFER,
            event_capacity: 1024,
            command_capacity: 256,
            turn_tls: None,
        }
    }
}

rtcmesh::__config_setters!(EndpointConfig {
    with_bind => bind: SocketAddr,
    with_announce => announce: Option<IpAddr>,
    with_receive_buffer => receive_buffer: usize,
    with_send_buffer => send_buffer: usize,
    with_event_capacity => event_capacity: usize,
    with_command_capacity => command_capacity: usize,
    with_turn_tls => turn_tls: Option<Arc<rustls::ClientConfig>>,
});

/// The endpoint's task is gone: the machine was closed or the socket failed.
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig};
/// use rtcmesh_tokio::{Closed, Endpoint, EndpointConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = Mesh::create_server(MeshConfig::default())?;
/// let (handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh).await?;
/// handle.close();
/// while events.recv().await.is_some() {}
/// assert_eq!(handle.call(|mesh, _| mesh.unique_id()).await, Err(Closed));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the rtcmesh endpoint has stopped")
    }
}

impl std::error::Error for Closed {}

/// One packet for [`Handle::send_many`] / [`Handle::send_bytes_many`].
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig, SendError, Target, TransferMode};
/// use rtcmesh_tokio::{Endpoint, EndpointConfig, OutgoingPacket};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (handle, _events) = Endpoint::spawn(EndpointConfig::default(), Mesh::create_mesh(2, MeshConfig::default())?).await?;
/// // One game tick, one turn of the loop, one result per packet.
/// let tick = vec![
///     OutgoingPacket { target: Target::All, mode: TransferMode::Unreliable, channel: 0, data: b"position".to_vec() },
///     OutgoingPacket { target: Target::Peer(9), mode: TransferMode::Reliable, channel: 0, data: b"chat".to_vec() },
/// ];
/// let results = handle.send_many(tick).await;
/// assert_eq!(results, [Ok(()), Err(SendError::UnknownPeer(9))]); // a broadcast to nobody is fine
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPacket {
    /// Who gets it.
    pub target: Target,
    /// The transfer mode (with `channel` 0, which of the three default channels).
    pub mode: TransferMode,
    /// The transfer channel: 0 for the default channel of `mode`, `k` for extra channel `k`.
    pub channel: u16,
    /// The payload.
    pub data: Vec<u8>,
}

/// A running machine on its own UDP socket.
///
/// Build one with [`Endpoint::spawn`]; talk to it through the cloneable [`Handle`] and read
/// what it reports from [`Events`]. The task stops when [`Handle::close`] is called or every
/// handle is dropped (then the mesh is closed and its last datagrams are sent).
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig};
/// use rtcmesh_tokio::{Endpoint, EndpointConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = Mesh::create_server(MeshConfig::default())?;
/// let (handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh).await?;
/// println!("peers reach this server at {}", handle.local_addr()); // 127.0.0.1, an ephemeral port
/// handle.close(); // the mesh says goodbye to every peer, then the task ends
/// while let Some(event) = events.recv().await {
///     println!("{event:?}"); // the close's last events
/// }
/// events.finished().await?; // the task's own result (a socket error would show here)
/// # Ok(()) }
/// ```
pub struct Endpoint;

impl Endpoint {
    /// Binds the socket (with the configured buffers), registers its host candidate with the
    /// mesh and starts the loop.
    pub async fn spawn<M>(
        config: EndpointConfig,
        mut machine: M,
    ) -> io::Result<(Handle<M>, Events<M::Event>)>
    where
        M: Machine + Send + 'static,
        M::Event: Send + 'static,
    {
        let (socket, buffers) =
            socket::bind(config.bind, config.receive_buffer, config.send_buffer)?;
        let socket = UdpSocket::from_std(socket)?;
        let pump = DatagramPump::attach(&mut machine, socket.local_addr()?, config.announce)?;
        resolve_ice_servers(machine.mesh_mut()).await;
        // The loop's first turn: ICE servers are asked before any peer exists.
        let now = Instant::now();
        machine.handle_timeout(now);
        let mut first = Snapshot::new(machine.mesh(), now);
        first.update(&machine, pump.stats(), 0, now, true);
        let shared = Arc::new(Shared::new(first));
        let packets = PacketLimits {
            max_size: machine.mesh().max_packet_size(),
            extra_channels: machine.mesh().channels_config().len(),
        };
        let local = pump.local_addr();
        let (commands, command_rx) = mpsc::channel(config.command_capacity.max(1));
        let (event_tx, events) = mpsc::channel(config.event_capacity.max(1));
        let close = Arc::new(Notify::new());
        let setup = SocketSetup {
            announce: config.announce,
            receive_buffer: config.receive_buffer,
            send_buffer: config.send_buffer,
        };
        let streams = Streams::new(config.turn_tls.clone());
        // However the loop ends (a close, a socket error, the runtime shutting down, even before
        // the task first ran), the last snapshot says so: the guard is the task's from the start.
        let stopped = shared.stop_on_drop();
        let task = tokio::spawn(run(
            socket,
            pump,
            machine,
            command_rx,
            close.clone(),
            event_tx,
            setup,
            shared.clone(),
            stopped,
            streams,
        ));
        Ok((
            Handle {
                commands,
                close,
                local,
                buffers,
                shared,
                packets,
            },
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

/// What woke the loop.
enum Wake<M, P> {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Room(Option<P>),
    Command(Option<Command<M>>),
    Stream(Option<(rtcmesh::StreamId, News)>),
    Close,
    Timer,
}

/// How often the loop reads the kernel's drop count for the snapshot (a read of
/// `/proc/net/udp`, too dear for every turn).
const DROPS_READ_INTERVAL: Duration = Duration::from_secs(1);

/// The loop: receive → machine, machine → socket, machine → events, sleep until the machine's
/// next deadline. Every turn first tells the machine the time, so commands and sends are
/// stamped with it (SCTP times retransmissions from it). While the application has not read
/// `event_capacity` events, the socket is not read (nor the streams to TURN servers). Every
/// turn publishes a [`Snapshot`] before it forwards events, so the snapshot is never older than
/// the events the application read.
#[allow(clippy::too_many_arguments)]
async fn run<M: Machine>(
    mut socket: UdpSocket,
    mut pump: DatagramPump,
    mut machine: M,
    mut commands: mpsc::Receiver<Command<M>>,
    close: Arc<Notify>,
    events: mpsc::Sender<M::Event>,
    setup: SocketSetup,
    shared: Arc<Shared>,
    stopped: StopOnDrop,
    mut streams: Streams,
) -> io::Result<()> {
    let mut mdns = crate::mdns::resolver();
    let mut turns = 0u64;
    let mut drops_read = Instant::now();
    let mut every_peer = EveryPeerClock::new();
    loop {
        // Peers' `.local` names (from signals the last turn applied) are asked for, and
        // answers given to the mesh, before its datagrams go out.
        mdns.poll(machine.mesh_mut(), Instant::now());
        let flush = pump.transmit(&mut machine, |b, to| socket.try_send_to(b, to));
        while let Some(command) = machine.poll_stream_command() {
            streams.command(command);
        }
        turns += 1;
        let now = Instant::now();
        if now.duration_since(drops_read) >= DROPS_READ_INTERVAL {
            pump.set_receive_buffer_drops(socket::receive_drops(&socket));
            drops_read = now;
        }
        pump.add_stream_drops(std::mem::take(&mut streams.dropped));
        {
            let mut snapshot = shared.lock();
            let due = every_peer.due(snapshot.peers.len(), now);
            snapshot.update(&machine, pump.stats(), turns, now, due);
        }
        forward(&mut machine, &events);
        let behind = machine.pending_events().events > 0;
        let now = Instant::now();
        let deadline = mdns
            .wake_by(now, machine.poll_timeout())
            .unwrap_or(now + IDLE);
        let woke = tokio::select! {
            ready = socket.readable(), if !behind => Wake::Readable(ready),
            ready = socket.writable(), if flush == Flush::Blocked => Wake::Writable(ready),
            permit = events.reserve(), if behind => Wake::Room(permit.ok()),
            command = commands.recv() => Wake::Command(command),
            news = streams.news.recv(), if !behind => Wake::Stream(news),
            () = close.notified() => Wake::Close,
            () = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
        };
        let now = Instant::now();
        machine.handle_timeout(now);
        match woke {
            Wake::Readable(ready) => {
                ready?;
                pump.receive(&mut machine, now, |buf| socket.try_recv_from(buf))?;
            }
            Wake::Writable(ready) => ready?,
            Wake::Room(Some(permit)) => {
                if let Some(event) = machine.poll_event() {
                    permit.send(event);
                }
            }
            // Nobody reads events any more: that is the application's choice.
            Wake::Room(None) => while machine.poll_event().is_some() {},
            Wake::Command(Some(Command::Call(call))) => call(&mut machine, now),
            Wake::Command(Some(Command::Send(packets, reply))) => {
                let results = packets.iter().map(|p| {
                    let result = machine.send(p.target, p.mode, p.channel, &p.data);
                    shared.sends.count(&result);
                    result
                });
                match reply {
                    Some(reply) => {
                        let _ = reply.send(results.collect());
                    }
                    None => results.for_each(drop),
                }
            }
            Wake::Command(Some(Command::Stats(reply))) => {
                pump.set_receive_buffer_drops(socket::receive_drops(&socket));
                pump.add_stream_drops(std::mem::take(&mut streams.dropped));
                let _ = reply.send(pump.stats());
            }
            Wake::Stream(Some((id, news))) => {
                let input = match &news {
                    News::Opened => rtcmesh::StreamInput::Opened,
                    News::Data(bytes) => rtcmesh::StreamInput::Data(bytes),
                    News::Closed(end) => {
                        streams.ended(id);
                        rtcmesh::StreamInput::Closed(*end)
                    }
                };
                machine.handle_stream(now, id, input);
            }
            // The loop holds a sender itself: the channel never closes.
            Wake::Stream(None) => {}
            Wake::Command(Some(Command::Rebind(bind, reply))) => {
                let moved = rebind(&mut socket, &mut pump, &mut machine, now, bind, setup);
                let _ = reply.send(moved.map(|()| pump.local_addr()));
            }
            Wake::Timer => {}
            Wake::Command(None) | Wake::Close => break,
        }
    }
    machine.close();
    // Best effort: the close notifications go out if the socket takes them now; the streams'
    // tasks write their last frames (the allocations' deletion) and close on their own.
    let _ = pump.transmit(&mut machine, |b, to| socket.try_send_to(b, to));
    while let Some(command) = machine.poll_stream_command() {
        streams.command(command);
    }
    shared
        .lock()
        .update(&machine, pump.stats(), turns, Instant::now(), true);
    drop(stopped);
    forward(&mut machine, &events);
    Ok(())
}

/// Binds a new socket at `bind` (with the configured buffers) and moves the machine's host
/// candidate to it; the old socket is dropped (closed) once the new one works.
fn rebind<M: Machine>(
    socket: &mut UdpSocket,
    pump: &mut DatagramPump,
    machine: &mut M,
    now: Instant,
    bind: SocketAddr,
    setup: SocketSetup,
) -> io::Result<()> {
    let (new, _) = socket::bind(bind, setup.receive_buffer, setup.send_buffer)?;
    let new = UdpSocket::from_std(new)?;
    pump.rebind(machine, now, new.local_addr()?, setup.announce)?;
    *socket = new;
    Ok(())
}

/// Moves events from the machine to the channel while it has room; events nobody will read
/// are dropped.
fn forward<M: Machine>(machine: &mut M, events: &mpsc::Sender<M::Event>) {
    loop {
        match events.try_reserve() {
            Ok(permit) => match machine.poll_event() {
                Some(event) => permit.send(event),
                None => return,
            },
            Err(ChannelFull::Full(())) => return,
            Err(ChannelFull::Closed(())) => {
                while machine.poll_event().is_some() {}
                return;
            }
        }
    }
}

/// How long the loop sleeps when the machine has no deadline at all.
const IDLE: Duration = Duration::from_secs(3600);

/// Commands for a running endpoint. Cheap to clone. The `async` methods wait for the loop to
/// run them (and, when `command_capacity` commands are already waiting, for room); a loop that
/// is not async (a game's frame) uses the ones that never wait:
/// [`try_send`](Handle::try_send), [`try_send_many`](Handle::try_send_many) and
/// [`snapshot`](Handle::snapshot).
///
/// ```
/// use rtcmesh::{Mesh, MeshConfig};
/// use rtcmesh_tokio::{Endpoint, EndpointConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = Mesh::create_server(MeshConfig::default())?;
/// let (handle, _events) = Endpoint::spawn(EndpointConfig::default(), mesh).await?;
/// handle.add_peer(7, 1).await?; // Godot's add_peer(7, 1); its offer arrives as an event
/// let other = handle.clone(); // for another task
/// // Anything else runs inside the loop, with the loop's current time:
/// let peers = other.call(|mesh, _now| mesh.peers().collect::<Vec<_>>()).await?;
/// assert_eq!(peers, [7]);
/// assert_eq!(handle.snapshot().peers, [7]); // the same, without waiting for the loop
/// assert!(handle.remove_peer(7).await?);
/// if let Some(hint) = handle.socket_buffers().shortfall() {
///     eprintln!("{hint}"); // the kernel granted smaller socket buffers than asked for
/// }
/// println!("{:?}", handle.stats().await?); // datagrams in and out, kernel drops
/// # Ok(()) }
/// ```
pub struct Handle<M> {
    commands: mpsc::Sender<Command<M>>,
    close: Arc<Notify>,
    local: SocketAddr,
    buffers: SocketBuffers,
    shared: Arc<Shared>,
    packets: PacketLimits,
}

/// What every packet must be, whatever the machine's state: what `try_send` checks at once.
#[derive(Debug, Clone, Copy)]
struct PacketLimits {
    /// The mesh's [`Mesh::max_packet_size`].
    max_size: usize,
    /// Extra channels in the layout.
    extra_channels: usize,
}

impl PacketLimits {
    /// The error the machine would certainly answer, if any (the machine may refuse more: a
    /// peer not there, a full queue, the multiplayer layer's framing overhead).
    fn check(&self, target: Target, channel: u16, data: &[u8]) -> Result<(), SendError> {
        if data.is_empty() {
            return Err(SendError::EmptyPacket);
        }
        if data.len() > self.max_size {
            return Err(SendError::PacketTooLarge {
                size: data.len(),
                max: self.max_size,
            });
        }
        if usize::from(channel) > self.extra_channels {
            return Err(SendError::UnknownChannel(channel));
        }
        match target {
            Target::Peer(id) if id <= 0 => Err(SendError::InvalidTarget(id)),
            Target::AllExcept(id) if id <= 0 => Err(SendError::InvalidTarget(target.to_godot())),
            _ => Ok(()),
        }
    }
}

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            commands: self.commands.clone(),
            close: self.close.clone(),
            local: self.local,
            buffers: self.buffers,
            shared: self.shared.clone(),
            packets: self.packets,
        }
    }
}

impl<M: Machine + 'static> Handle<M> {
    /// The address announced to peers (the socket's port on the announced IP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket's kernel buffers, asked for and granted. When the kernel granted less than
    /// [`EndpointConfig`] asked for, [`SocketBuffers::shortfall`] says so and which setting
    /// raises the cap: show it to the user.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.buffers
    }

    /// The socket's counters, with the kernel's count of dropped datagrams read now
    /// ([`PumpStats::receive_buffer_drops`]; the target is zero).
    pub async fn stats(&self) -> Result<PumpStats, Closed> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Runs `f` on the machine inside the loop, with the loop's current time (the machine
    /// was just told that time), and returns its result. Everything the other methods do
    /// goes through this.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut M, Instant) -> R + Send + 'static,
    ) -> Result<R, Closed> {
        let (tx, rx) = oneshot::channel();
        let call: Call<M> = Box::new(move |machine, now| {
            let _ = tx.send(f(machine, now));
        });
        self.commands
            .send(Command::Call(call))
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Replaces the endpoint's socket with a new one bound to `bind` (e.g. after the network
    /// changed, or to leave a port a NAT stopped mapping) and returns the new announced
    /// address. Peers stay connected: the mesh moves its host candidate
    /// ([`Mesh::move_host_candidate`]), restarts ICE where this side offers, and the peers find
    /// it at the new address. Binding errors are returned and the old socket is kept.
    /// ([`local_addr`](Handle::local_addr) keeps reporting the first address; the kernel drop
    /// count in [`stats`](Handle::stats) is the new socket's.)
    pub async fn rebind(&self, bind: SocketAddr) -> io::Result<SocketAddr> {
        let (tx, rx) = oneshot::channel();
        let stopped = || io::Error::other(Closed);
        self.commands
            .send(Command::Rebind(bind, tx))
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Godot's `add_peer(id, unreliable_lifetime)`.
    pub async fn add_peer(&self, id: PeerId, unreliable_lifetime: i32) -> Result<(), AddPeerError> {
        self.call(move |m, now| m.add_peer(now, id, unreliable_lifetime))
            .await
            .unwrap_or(Err(AddPeerError::Closed))
    }

    /// Removes a peer (its connection is closed; `PeerDisconnected` follows if it was connected).
    pub async fn remove_peer(&self, id: PeerId) -> Result<bool, Closed> {
        self.call(move |m, _| m.remove_peer(id)).await
    }

    /// Passes a signal from `from` (when the application carries signals itself).
    pub async fn handle_signal(&self, from: PeerId, signal: Signal) -> Result<(), SignalError> {
        self.call(move |m, now| m.handle_signal(now, from, signal))
            .await
            .unwrap_or(Err(SignalError::Closed))
    }

    /// Closes the mesh (every peer gets a close notification) and stops the loop. Events
    /// emitted by the close are still delivered, then [`Events::recv`] returns `None`.
    pub fn close(&self) {
        self.close.notify_one();
    }

    /// Sends `data` to `target` as the machine sends application packets ([`Mesh::send`];
    /// on the multiplayer layer, framed and relayed as
    /// [`Multiplayer::send_bytes`](rtcmesh::Multiplayer::send_bytes)). One round trip to the
    /// loop per packet: for several packets at once (a game tick),
    /// [`send_many`](Handle::send_many) costs one; a loop that must not wait uses
    /// [`try_send`](Handle::try_send).
    pub async fn send(
        &self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        let packet = OutgoingPacket {
            target,
            mode,
            channel,
            data: data.into(),
        };
        let mut results = self.send_many(vec![packet]).await;
        results.pop().unwrap_or(Err(SendError::Disconnected))
    }

    /// Sends a batch in one turn of the loop (one wake-up, one round trip), returning each
    /// packet's result in order: a [`SendError::QueueFull`] refuses only that packet (send it
    /// again later), the others still go (every one `Err(Disconnected)` once the loop has
    /// stopped). Memory stays bounded: the mesh queues at most `max_queued_bytes` per peer and
    /// refuses the rest.
    pub async fn send_many(&self, packets: Vec<OutgoingPacket>) -> Vec<Result<(), SendError>> {
        let count = packets.len();
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Send(packets, Some(tx)))
            .await
            .is_err()
        {
            return vec![Err(SendError::Disconnected); count];
        }
        rx.await
            .unwrap_or_else(|_| vec![Err(SendError::Disconnected); count])
    }

    /// Queues one packet for the loop's next turn and returns at once, never waiting: for a
    /// loop that is not async (a game's frame), as Godot's `put_packet` and matchbox's `send`.
    ///
    /// What can be known without the loop is checked here and refused with
    /// [`TrySendError::Invalid`]: an empty packet, one larger than the mesh's
    /// [`max_packet_size`](Mesh::max_packet_size), a channel outside the layout, an invalid
    /// target id. [`TrySendError::Full`] and [`Closed`](TrySendError::Closed) hand the packet
    /// back. What the machine then answers (a full queue, a peer that left, the multiplayer
    /// layer's smaller limit) is counted in [`Snapshot::sends`]; to see each packet's own
    /// result, send with [`try_send_many`](Handle::try_send_many) and keep its receipt.
    ///
    /// Works from any thread, inside or outside the runtime.
    pub fn try_send(
        &self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), TrySendError<OutgoingPacket>> {
        let packet = OutgoingPacket {
            target,
            mode,
            channel,
            data: data.into(),
        };
        if let Err(error) = self.packets.check(target, channel, &packet.data) {
            self.shared.sends.count(&Err(error.clone()));
            return Err(TrySendError::Invalid { error, packet });
        }
        match self.try_reserve() {
            Ok(permit) => {
                permit.send(Command::Send(vec![packet], None));
                Ok(())
            }
            Err(full_or_closed) => Err(full_or_closed(packet)),
        }
    }

    /// Queues a batch (a game tick) for the loop's next turn and returns at once, never
    /// waiting. The [`Reply`] gives each packet's result once the loop has run it: look at it
    /// on a later frame, or drop it ([`Snapshot::sends`] counts the results anyway).
    /// [`TrySendError::Full`] and [`Closed`](TrySendError::Closed) hand the batch back;
    /// packets are not checked here (their results are in the reply).
    // Spelled out: what comes back is what `send_many` answers, in a `Reply`.
    #[allow(clippy::type_complexity)]
    pub fn try_send_many(
        &self,
        packets: Vec<OutgoingPacket>,
    ) -> Result<Reply<Vec<Result<(), SendError>>>, TrySendError<Vec<OutgoingPacket>>> {
        let (tx, rx) = oneshot::channel();
        if packets.is_empty() {
            let _ = tx.send(Vec::new());
            return Ok(Reply::new(rx));
        }
        match self.try_reserve() {
            Ok(permit) => {
                permit.send(Command::Send(packets, Some(tx)));
                Ok(Reply::new(rx))
            }
            Err(full_or_closed) => Err(full_or_closed(packets)),
        }
    }

    /// [`call`](Handle::call) without waiting: queues `f` for the loop's next turn and returns
    /// at once; its result is in the [`Reply`]. For a loop that is not async: add a peer, pass
    /// a signal, read one peer's stats.
    pub fn try_call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut M, Instant) -> R + Send + 'static,
    ) -> Result<Reply<R>, TrySendError<()>> {
        let permit = self
            .try_reserve()
            .map_err(|full_or_closed| full_or_closed(()))?;
        let (tx, rx) = oneshot::channel();
        permit.send(Command::Call(Box::new(move |machine, now| {
            let _ = tx.send(f(machine, now));
        })));
        Ok(Reply::new(rx))
    }

    /// Room for one command without waiting; or, when there is none, how to hand back what
    /// was to be sent (a full queue is counted).
    #[allow(clippy::type_complexity)]
    fn try_reserve<T>(&self) -> Result<mpsc::Permit<'_, Command<M>>, fn(T) -> TrySendError<T>> {
        self.commands.try_reserve().map_err(|e| match e {
            ChannelFull::Full(()) => {
                self.shared.sends.count_command_queue_full();
                TrySendError::Full as fn(T) -> TrySendError<T>
            }
            ChannelFull::Closed(()) => TrySendError::Closed,
        })
    }

    /// The machine's state as the loop published it at its last turn: peers, status, the
    /// mesh's and the socket's counters, what became of sends. Never waits for the loop (a
    /// short lock and a copy; see [`Snapshot`] for how fresh it is).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.read()
    }

    /// Whether the endpoint has stopped (closed, or its socket failed): every command would
    /// fail now.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

impl Handle<rtcmesh::Multiplayer> {
    /// SceneMultiplayer's name for [`send`](Handle::send) (see
    /// [`rtcmesh::Multiplayer::send_bytes`]): relayed through the server in client mode.
    pub async fn send_bytes(
        &self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), SendError> {
        self.send(target, mode, channel, data).await
    }

    /// [`send_many`](Handle::send_many) under SceneMultiplayer's name.
    pub async fn send_bytes_many(
        &self,
        packets: Vec<OutgoingPacket>,
    ) -> Vec<Result<(), SendError>> {
        self.send_many(packets).await
    }
}

/// What the machine reports, in order. Bounded by [`EndpointConfig::event_capacity`]: while
/// it is full the loop stops reading the socket, so read it from your loop.
///
/// ```
/// use std::time::Duration;
/// use rtcmesh::{Mesh, MeshConfig};
/// use rtcmesh_tokio::{Endpoint, EndpointConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mesh = Mesh::create_mesh(2, MeshConfig::default())?;
/// let (handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh).await?;
/// handle.add_peer(1, 1).await?; // 2 > 1: an offer for peer 1 is reported
/// let event = tokio::time::timeout(Duration::from_secs(5), events.recv()).await?;
/// assert!(matches!(event, Some(rtcmesh::Event::Signal(_))));
/// // In a game loop that must not wait: take what is there.
/// while let Some(event) = events.try_recv() {
///     println!("{event:?}");
/// }
/// assert!(events.len() <= events.capacity());
/// # Ok(()) }
/// ```
pub struct Events<E> {
    events: mpsc::Receiver<E>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl<E> Events<E> {
    /// Events from `events`, finishing with `task`.
    pub(crate) fn new(events: mpsc::Receiver<E>, task: Option<JoinHandle<io::Result<()>>>) -> Self {
        Events { events, task }
    }

    /// Takes the receiver and the loop's task apart (to put a filter in between).
    pub(crate) fn into_parts(self) -> (mpsc::Receiver<E>, Option<JoinHandle<io::Result<()>>>) {
        (self.events, self.task)
    }

    /// The next event, or `None` once the endpoint has stopped and every event was read.
    pub async fn recv(&mut self) -> Option<E> {
        self.events.recv().await
    }

    /// The next event if one is ready now (`None` when none is, and once the endpoint has
    /// stopped: [`is_stopped`](Events::is_stopped) tells the two apart).
    pub fn try_recv(&mut self) -> Option<E> {
        self.events.try_recv().ok()
    }

    /// The events waiting now, for one frame of a game loop: never waits, and ends after the
    /// events that were there when it was called (those the loop adds meanwhile wait for the
    /// next frame), so a busy network cannot keep a frame in here.
    pub fn drain(&mut self) -> impl Iterator<Item = E> + '_ {
        let waiting = self.events.len();
        std::iter::from_fn(move || self.events.try_recv().ok()).take(waiting)
    }

    /// Whether the endpoint has stopped and every event was read: no event will come any more.
    pub fn is_stopped(&self) -> bool {
        self.events.is_closed() && self.events.is_empty()
    }

    /// Events waiting to be read now.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is waiting now.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// How many events can wait before the loop stops reading the socket.
    pub fn capacity(&self) -> usize {
        self.events.max_capacity()
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
