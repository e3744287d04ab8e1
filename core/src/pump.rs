//! The socket-facing loop body every I/O adapter needs, without the socket: read datagrams into
//! one reused buffer and hand them to a [`Machine`], then drain the machine's datagrams into the
//! socket, keeping the one the socket refused (`WouldBlock`) until it is writable again.
//!
//! The socket is reached through closures, so the same code serves a tokio socket
//! (`try_recv_from` / `try_send_to`), a mio socket, or a `std` socket in non-blocking mode.
//!
//! [`StreamBuffer`] is the same for a stream to a TURN server (see [`crate::stream`]): what
//! waits for the stream's socket, bounded by dropping relayed data, never the server's
//! requests.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::event::Transmit;
use crate::machine::Machine;

/// The largest UDP payload; the receive buffer is this big so no datagram is ever truncated.
const RECEIVE_BUFFER: usize = 65_535;

/// How many datagrams one [`DatagramPump::receive`] call reads at most before returning, so a
/// flood on the socket cannot starve timers and outgoing traffic.
pub const RECEIVE_BATCH: usize = 256;

/// Reads and writes datagrams between one UDP socket and a [`Machine`]; see the module docs.
///
/// ```
/// use std::net::UdpSocket;
/// use std::time::Instant;
/// use rtcmesh::{DatagramPump, Flush, Mesh, MeshConfig};
///
/// let socket = UdpSocket::bind("127.0.0.1:0")?;
/// socket.set_nonblocking(true)?;
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// let mut pump = DatagramPump::attach(&mut mesh, socket.local_addr()?, None)?; // registers the host candidate
/// // One turn of a loop: read what waits, tell the time, write what the mesh has.
/// let read = pump.receive(&mut mesh, Instant::now(), |buf| socket.recv_from(buf))?;
/// assert_eq!(read, 0);
/// mesh.handle_timeout(Instant::now());
/// if pump.transmit(&mut mesh, |data, to| socket.send_to(data, to)) == Flush::Blocked {
///     // wait until the socket is writable, then call transmit again
/// }
/// assert_eq!(pump.stats().sent, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DatagramPump {
    local: SocketAddr,
    buffer: Box<[u8]>,
    blocked: Option<Transmit>,
    stats: PumpStats,
}

/// Counters kept by a [`DatagramPump`].
///
/// ```
/// use rtcmesh::{DatagramPump, PumpStats};
///
/// let pump = DatagramPump::new("127.0.0.1:5000".parse()?);
/// let stats: PumpStats = pump.stats();
/// assert_eq!((stats.received, stats.sent, stats.send_blocked), (0, 0, 0));
/// assert_eq!(stats.receive_buffer_drops, None); // the adapters read it from the kernel
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PumpStats {
    /// Datagrams read from the socket and handed to the machine.
    pub received: u64,
    /// Datagrams the socket accepted.
    pub sent: u64,
    /// Times the socket refused a datagram with `WouldBlock` (the datagram was kept and retried).
    pub send_blocked: u64,
    /// Datagrams dropped because the socket reported an error for them (unreachable host,
    /// message too long…). UDP may lose any datagram; one bad destination never blocks the rest.
    pub send_errors: u64,
    /// Transient receive errors skipped (e.g. `ConnectionRefused` from an earlier ICMP error).
    pub receive_errors: u64,
    /// Datagrams the kernel dropped on this socket, almost always because its receive buffer
    /// was full (the loop fell behind), as last read by the adapter; `None` where the platform
    /// does not tell (the adapters read Linux's per-socket count in `/proc/net/udp`). Each such
    /// drop costs SCTP a retransmission, and a lost tail a timeout of a second or more.
    pub receive_buffer_drops: Option<u64>,
    /// Relayed datagrams dropped because a stream to a TURN server (`?transport=tcp`,
    /// `turns:`) had [`STREAM_BUFFER`] bytes waiting: the path through the server is slower
    /// than the peers send, and SCTP's congestion control sees the loss.
    pub stream_frames_dropped: u64,
}

/// How many bytes may wait for one stream to a TURN server before relayed data for it is
/// dropped ([`StreamBuffer`]): a quarter of a second at 8 Mbit/s, and room for a burst.
pub const STREAM_BUFFER: usize = 256 * 1024;

/// What waits to be written to one stream to a TURN server: whole frames, in order
/// ([`StreamCommand::Send`](crate::StreamCommand::Send)). Relayed data is dropped while
/// [`STREAM_BUFFER`] bytes wait, so a slow path through the server costs loss (which SCTP
/// answers by slowing down) instead of memory and latency; the server's own requests are always
/// kept. A frame begun is always finished: the stream's framing depends on it.
///
/// ```
/// use std::io;
/// use rtcmesh::{Flush, StreamBuffer, STREAM_BUFFER};
///
/// let mut buffer = StreamBuffer::default();
/// assert!(buffer.push(vec![1; 100], true));
/// let mut wire = Vec::new();
/// // A socket that takes 60 bytes, then would block.
/// let flush = buffer.write(|bytes| {
///     if wire.len() == 60 { return Err(io::ErrorKind::WouldBlock.into()); }
///     let n = bytes.len().min(60 - wire.len());
///     wire.extend_from_slice(&bytes[..n]);
///     Ok(n)
/// })?;
/// assert_eq!((flush, buffer.queued()), (Flush::Blocked, 40)); // the rest waits for writable
/// assert!(buffer.push(vec![2; STREAM_BUFFER], true)); // room left: queued
/// assert!(!buffer.push(vec![3; 1200], true)); // full: relayed data is dropped…
/// assert!(buffer.push(vec![4; 100], false)); // …the server's requests never are
/// assert_eq!(buffer.dropped(), 1);
/// # Ok::<(), io::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct StreamBuffer {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the first frame already written.
    written: usize,
    queued: usize,
    dropped: u64,
}

impl StreamBuffer {
    /// Queues one frame; `false` if it was dropped (`droppable`, and the buffer is full).
    pub fn push(&mut self, frame: Vec<u8>, droppable: bool) -> bool {
        if droppable && self.queued >= STREAM_BUFFER {
            self.dropped += 1;
            return false;
        }
        self.queued += frame.len();
        self.frames.push_back(frame);
        true
    }

    /// Writes what waits with `write` (a non-blocking write) until it would block or all is
    /// written. Errors other than `WouldBlock` are the stream's end.
    pub fn write(
        &mut self,
        mut write: impl FnMut(&[u8]) -> io::Result<usize>,
    ) -> io::Result<Flush> {
        while let Some(front) = self.frames.front() {
            match write(&front[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.queued -= n;
                    if self.written >= front.len() {
                        self.frames.pop_front();
                        self.written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(e) => return Err(e),
            }
        }
        Ok(Flush::Done)
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The socket buffer size the adapters ask for, each way: about 30 ms of a gigabit link, and
/// room for one mesh's burst while the loop is busy elsewhere. The kernel's default receive
/// buffer (208 KiB on Linux) overflows when a receiving loop is a few milliseconds late.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// The kernel buffers of an adapter's UDP socket: what was asked for and what the kernel
/// granted (Linux caps a request at `net.core.rmem_max` / `net.core.wmem_max`).
///
/// ```
/// use rtcmesh::{SocketBuffers, SOCKET_BUFFER};
///
/// // Linux capped a 4 MiB request at net.core.rmem_max (and reports twice what it grants).
/// let buffers = SocketBuffers::from_reported(SOCKET_BUFFER, Some(425_984), SOCKET_BUFFER, Some(8 << 20));
/// assert_eq!(buffers.receive, 212_992);
/// let hint = buffers.shortfall().expect("less than asked");
/// assert!(hint.contains("net.core.rmem_max"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketBuffers {
    /// The receive buffer asked for, in bytes (0: left as the kernel made it).
    pub receive_requested: usize,
    /// The receive buffer the kernel granted, in bytes of payload (Linux reports twice the
    /// usable size; adapters halve it there).
    pub receive: usize,
    /// The send buffer asked for, in bytes (0: left as the kernel made it).
    pub send_requested: usize,
    /// The send buffer the kernel granted, in bytes of payload.
    pub send: usize,
}

impl SocketBuffers {
    /// The largest size an adapter may ask for (`setsockopt` takes a C int, which Linux then
    /// doubles): requests are clamped to it.
    pub const MAX_REQUEST: usize = i32::MAX as usize / 2;

    /// What an adapter asked for and what the kernel reported back (`None`: it could not be
    /// read). Linux reports twice the size it was given (the other half is its bookkeeping),
    /// so the reported sizes are halved there.
    pub fn from_reported(
        receive_requested: usize,
        receive_reported: Option<usize>,
        send_requested: usize,
        send_reported: Option<usize>,
    ) -> SocketBuffers {
        let granted = |size: Option<usize>| size.map_or(0, |s| s / KERNEL_FACTOR);
        SocketBuffers {
            receive_requested,
            receive: granted(receive_reported),
            send_requested,
            send: granted(send_reported),
        }
    }

    /// A message to show the user when the kernel granted less than was asked for, with the
    /// setting that raises the cap; `None` when every request was met.
    pub fn shortfall(&self) -> Option<String> {
        let mut short = Vec::new();
        if self.receive < self.receive_requested {
            short.push(format!(
                "receive buffer {} KiB of {} KiB requested (raise net.core.rmem_max, e.g. `sysctl -w net.core.rmem_max={}`)",
                self.receive / 1024,
                self.receive_requested / 1024,
                self.receive_requested
            ));
        }
        if self.send < self.send_requested {
            short.push(format!(
                "send buffer {} KiB of {} KiB requested (raise net.core.wmem_max, e.g. `sysctl -w net.core.wmem_max={}`)",
                self.send / 1024,
                self.send_requested / 1024,
                self.send_requested
            ));
        }
        (!short.is_empty()).then(|| {
            format!(
                "the kernel granted a smaller UDP socket buffer than rtcmesh asked for: {}; bursts may overflow it and cost SCTP retransmission timeouts",
                short.join("; ")
            )
        })
    }
}

/// What [`DatagramPump::transmit`] left behind.
///
/// ```
/// use std::io;
/// use rtcmesh::{DatagramPump, Flush, Mesh, MeshConfig};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// let mut pump = DatagramPump::attach(&mut mesh, "127.0.0.1:5000".parse()?, None)?;
/// // A socket that is always full: the pump keeps the refused datagram for the next call.
/// let full = |_: &[u8], _| -> io::Result<usize> { Err(io::ErrorKind::WouldBlock.into()) };
/// match pump.transmit(&mut mesh, full) {
///     Flush::Done => {}                      // nothing was waiting
///     Flush::Blocked => assert!(pump.is_blocked()), // register for writable, call transmit again
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Flush {
    /// Everything the machine had to send was sent (or dropped on a socket error and counted).
    Done,
    /// The socket returned `WouldBlock`; call `transmit` again once it is writable. The refused
    /// datagram is kept and goes first.
    Blocked,
}

/// How much more than the usable size the kernel reports for a socket buffer.
#[cfg(any(target_os = "linux", target_os = "android"))]
const KERNEL_FACTOR: usize = 2;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const KERNEL_FACTOR: usize = 1;

/// Datagrams the kernel dropped on the socket with `inode`, from the text of a Linux
/// `/proc/net/udp` (or `udp6`) table the adapter read: the `drops` column (the last) of the
/// socket's line (its inode is the tenth column). `None` when the socket is not in the table.
pub fn udp_table_drops(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let mut columns = line.split_whitespace();
        let ours = columns.nth(9)?.parse::<u64>().ok()? == inode;
        ours.then(|| columns.last()?.parse().ok()).flatten()
    })
}

impl DatagramPump {
    /// A pump for a socket bound to `local` (the address given to the machine as `destination`
    /// of every received datagram).
    pub fn new(local: SocketAddr) -> DatagramPump {
        DatagramPump {
            local,
            buffer: vec![0; RECEIVE_BUFFER].into_boxed_slice(),
            blocked: None,
            stats: PumpStats::default(),
        }
    }

    /// Sets up a pump for a socket bound to `bound`, announcing it to `machine`'s mesh as its
    /// host candidate. The announced address is `bound`, or `announce` with `bound`'s port:
    /// required when the socket is bound to an unspecified address (`0.0.0.0`, `[::]`), since
    /// rtcmesh must know the one address peers reach it at and record it as the local address
    /// of every received datagram.
    pub fn attach<M: Machine>(
        machine: &mut M,
        bound: SocketAddr,
        announce: Option<IpAddr>,
    ) -> io::Result<DatagramPump> {
        let local = announced(bound, announce)?;
        machine
            .mesh_mut()
            .add_host_candidate(local)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(DatagramPump::new(local))
    }

    /// The adapter replaced its socket with one bound to `bound` (a new network, a new port):
    /// the machine's mesh moves its host candidate there
    /// ([`Mesh::move_host_candidate`](crate::Mesh::move_host_candidate)), so every peer stays
    /// connected and finds it at the new address. `announce` as for [`attach`](Self::attach). A
    /// datagram kept from a `WouldBlock` goes out on the new socket.
    pub fn rebind<M: Machine>(
        &mut self,
        machine: &mut M,
        now: Instant,
        bound: SocketAddr,
        announce: Option<IpAddr>,
    ) -> io::Result<()> {
        let local = announced(bound, announce)?;
        machine
            .mesh_mut()
            .move_host_candidate(now, self.local, local)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.local = local;
        Ok(())
    }

    /// The socket's local address (as announced).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether a datagram is waiting for the socket to become writable.
    pub fn is_blocked(&self) -> bool {
        self.blocked.is_some()
    }

    /// The counters so far.
    pub fn stats(&self) -> PumpStats {
        self.stats
    }

    /// Records the kernel's count of datagrams dropped on the socket (cumulative since the
    /// socket was created, as the platform reports it), for [`PumpStats::receive_buffer_drops`].
    pub fn set_receive_buffer_drops(&mut self, total: Option<u64>) {
        self.stats.receive_buffer_drops = total;
    }

    /// Counts relayed frames the adapter dropped on its streams to TURN servers
    /// ([`PumpStats::stream_frames_dropped`]).
    pub fn add_stream_drops(&mut self, dropped: u64) {
        self.stats.stream_frames_dropped += dropped;
    }

    /// Reads datagrams with `recv` (a non-blocking `recv_from`) until it would block, or
    /// [`RECEIVE_BATCH`] were read, and hands each to `machine` stamped `now`. Returns how many
    /// were read. Transient errors are counted and skipped; any other error is returned.
    pub fn receive<M: Machine>(
        &mut self,
        machine: &mut M,
        now: Instant,
        mut recv: impl FnMut(&mut [u8]) -> io::Result<(usize, SocketAddr)>,
    ) -> io::Result<usize> {
        let mut read = 0;
        while read < RECEIVE_BATCH {
            match recv(&mut self.buffer) {
                Ok((len, source)) => {
                    read += 1;
                    self.stats.received += 1;
                    let contents = &self.buffer[..len.min(self.buffer.len())];
                    machine.handle_datagram(now, source, self.local, contents);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_transient(&e) => self.stats.receive_errors += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(read)
    }

    /// Sends what `machine` has to send with `send` (a non-blocking `send_to`): first the
    /// datagram kept from an earlier `WouldBlock`, then everything from
    /// [`Machine::poll_transmit`]. Stops at the first `WouldBlock`, keeping that datagram.
    pub fn transmit<M: Machine>(
        &mut self,
        machine: &mut M,
        mut send: impl FnMut(&[u8], SocketAddr) -> io::Result<usize>,
    ) -> Flush {
        loop {
            let Some(transmit) = self.blocked.take().or_else(|| machine.poll_transmit()) else {
                return Flush::Done;
            };
            loop {
                match send(&transmit.contents, transmit.destination) {
                    Ok(_) => self.stats.sent += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.stats.send_blocked += 1;
                        self.blocked = Some(transmit);
                        return Flush::Blocked;
                    }
                    Err(_) => self.stats.send_errors += 1,
                }
                break;
            }
        }
    }
}

/// The address announced for a socket bound to `bound`: `bound`, or `announce` with its port.
fn announced(bound: SocketAddr, announce: Option<IpAddr>) -> io::Result<SocketAddr> {
    let ip = match announce {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a socket bound to an unspecified address needs an address to announce",
            ))
        }
        None => bound.ip(),
    };
    Ok(SocketAddr::new(ip, bound.port()))
}

/// Receive errors that say nothing about the socket itself: Linux reports an ICMP error for an
/// earlier send on the next receive.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_drops_column_of_our_socket_is_found_by_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  124: 0100007F:C3D4 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 4343 2 0000000000000000 17
";
        assert_eq!(super::udp_table_drops(table, 4343), Some(17));
        assert_eq!(super::udp_table_drops(table, 4242), Some(0));
        assert_eq!(super::udp_table_drops(table, 1), None);
        assert_eq!(
            super::udp_table_drops("header only\n 1: short line", 1),
            None
        );
    }

    use super::*;
    use crate::{Mesh, MeshConfig};

    fn mesh_with_peer(now: Instant) -> Mesh {
        let mut mesh = Mesh::create_mesh(2, MeshConfig::default()).expect("mesh");
        mesh.add_host_candidate("127.0.0.1:5000".parse().expect("addr"))
            .expect("candidate");
        // Peer 1 is smaller: we offer, and ICE starts sending as soon as it has a remote
        // candidate; until then nothing is sent, so give it one through a signal exchange.
        mesh.add_peer(now, 1, 1).expect("peer");
        mesh
    }

    #[test]
    fn receive_stops_at_would_block_and_counts_transient_errors() {
        let now = Instant::now();
        let mut mesh = mesh_with_peer(now);
        let mut pump = DatagramPump::new("127.0.0.1:5000".parse().expect("addr"));
        let from: SocketAddr = "127.0.0.1:6000".parse().expect("addr");
        let mut script = vec![
            Ok(3),
            Err(io::ErrorKind::ConnectionRefused),
            Ok(2),
            Err(io::ErrorKind::WouldBlock),
            Ok(1),
        ]
        .into_iter();
        let read = pump
            .receive(&mut mesh, now, |buf| match script.next().expect("script") {
                Ok(n) => {
                    buf[..n].fill(0xEE);
                    Ok((n, from))
                }
                Err(kind) => Err(kind.into()),
            })
            .expect("receive");
        assert_eq!(read, 2);
        assert_eq!(pump.stats().received, 2);
        assert_eq!(pump.stats().receive_errors, 1);
        // The garbage reached the mesh and was dropped there, counted.
        assert_eq!(mesh.stats().datagrams_received, 2);
    }

    #[test]
    fn socket_buffers_report_a_shortfall_with_the_setting_to_raise() {
        let met = SocketBuffers {
            receive_requested: SOCKET_BUFFER,
            receive: SOCKET_BUFFER,
            send_requested: SOCKET_BUFFER,
            send: SOCKET_BUFFER,
        };
        assert_eq!(met.shortfall(), None);
        let short = SocketBuffers {
            receive: 212_992,
            ..met
        };
        let message = short.shortfall().expect("shortfall");
        assert!(
            message.contains("receive buffer 208 KiB of 4096 KiB"),
            "{message}"
        );
        assert!(message.contains("net.core.rmem_max"), "{message}");
        assert!(!message.contains("wmem_max"), "{message}");
    }

    #[test]
    fn receive_returns_fatal_errors() {
        let now = Instant::now();
        let mut mesh = mesh_with_peer(now);
        let mut pump = DatagramPump::new("127.0.0.1:5000".parse().expect("addr"));
        let err = pump
            .receive(&mut mesh, now, |_| {
                Err(io::ErrorKind::PermissionDenied.into())
            })
            .expect_err("fatal");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    use crate::{AddPeerError, PeerId, SendError, Signal, SignalError, Target, TransferMode};

    /// A machine with a scripted list of datagrams, to check the transmit queue exactly.
    struct Script(Mesh, std::collections::VecDeque<Transmit>);

    impl Machine for Script {
        type Event = ();
        fn handle_datagram(&mut self, _: Instant, _: SocketAddr, _: SocketAddr, _: &[u8]) {}
        fn handle_timeout(&mut self, _: Instant) {}
        fn poll_transmit(&mut self) -> Option<Transmit> {
            self.1.pop_front()
        }
        fn poll_event(&mut self) -> Option<()> {
            None
        }
        fn poll_timeout(&self) -> Option<Instant> {
            None
        }
        fn add_peer(&mut self, _: Instant, _: PeerId, _: i32) -> Result<(), AddPeerError> {
            Err(AddPeerError::Closed)
        }
        fn remove_peer(&mut self, _: PeerId) -> bool {
            false
        }
        fn disconnect_peer(&mut self, _: PeerId, _: bool) -> bool {
            false
        }
        fn handle_signal(&mut self, _: Instant, _: PeerId, _: Signal) -> Result<(), SignalError> {
            Err(SignalError::Closed)
        }
        fn send(&mut self, _: Target, _: TransferMode, _: u16, _: &[u8]) -> Result<(), SendError> {
            Err(SendError::Disconnected)
        }
        fn close(&mut self) {}
        fn mesh(&self) -> &Mesh {
            &self.0
        }
        fn mesh_mut(&mut self) -> &mut Mesh {
            &mut self.0
        }
        fn into_signal(event: ()) -> Result<crate::OutgoingSignal, ()> {
            Err(event)
        }
    }

    /// A pump and a machine that has `count` one-byte datagrams (0, 1, 2, …) to send.
    fn scripted(count: u8) -> (Script, DatagramPump) {
        let local: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let to: SocketAddr = "127.0.0.1:6000".parse().expect("addr");
        let datagrams = (0..count)
            .map(|i| Transmit {
                destination: to,
                source: local,
                contents: vec![i],
            })
            .collect();
        (
            Script(mesh_with_peer(Instant::now()), datagrams),
            DatagramPump::new(local),
        )
    }

    #[test]
    fn transmit_keeps_the_refused_datagram_and_sends_it_first() {
        let (mut machine, mut pump) = scripted(5);
        let mut wire = Vec::new();
        let room = std::cell::Cell::new(2);
        let mut socket = |bytes: &[u8], _: SocketAddr| {
            if room.get() == 0 {
                return Err(io::Error::from(io::ErrorKind::WouldBlock));
            }
            room.set(room.get() - 1);
            wire.push(bytes[0]);
            Ok(bytes.len())
        };
        assert_eq!(pump.transmit(&mut machine, &mut socket), Flush::Blocked);
        assert!(pump.is_blocked());
        room.set(1);
        assert_eq!(pump.transmit(&mut machine, &mut socket), Flush::Blocked);
        room.set(10);
        assert_eq!(pump.transmit(&mut machine, &mut socket), Flush::Done);
        assert!(!pump.is_blocked());
        assert_eq!(wire, vec![0, 1, 2, 3, 4], "nothing lost, nothing reordered");
        assert_eq!(pump.stats().sent, 5);
        assert_eq!(pump.stats().send_blocked, 2);
    }

    #[test]
    fn transmit_drops_and_counts_a_datagram_the_socket_rejects() {
        let (mut machine, mut pump) = scripted(3);
        let mut wire = Vec::new();
        let flush = pump.transmit(&mut machine, |bytes: &[u8], _| {
            if bytes[0] == 1 {
                return Err(io::ErrorKind::HostUnreachable.into());
            }
            wire.push(bytes[0]);
            Ok(1)
        });
        assert_eq!(flush, Flush::Done);
        assert_eq!(wire, vec![0, 2]);
        assert_eq!(pump.stats().send_errors, 1);
    }
}
