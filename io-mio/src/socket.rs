//! The UDP socket's kernel side: its buffer sizes, and the datagrams the kernel dropped. What
//! needs no system call (clamping, halving Linux's figures, reading the drops table) is in
//! `rtcmesh::pump`, shared with the other adapter.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use rtcmesh::SocketBuffers;
use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking UDP socket bound to `addr`, with buffers of `receive` / `send` bytes asked
/// for (0: the kernel's default), and what the kernel granted.
pub(crate) fn bind(
    addr: SocketAddr,
    receive: usize,
    send: usize,
) -> io::Result<(UdpSocket, SocketBuffers)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // A refused size is not an error: the kernel's cap applies, and the shortfall is reported.
    let receive = receive.min(SocketBuffers::MAX_REQUEST);
    let send = send.min(SocketBuffers::MAX_REQUEST);
    if receive > 0 {
        let _ = socket.set_recv_buffer_size(receive);
    }
    if send > 0 {
        let _ = socket.set_send_buffer_size(send);
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let buffers = SocketBuffers::from_reported(
        receive,
        socket.recv_buffer_size().ok(),
        send,
        socket.send_buffer_size().ok(),
    );
    Ok((socket.into(), buffers))
}

/// The buffers of a socket the caller built (left as they are).
pub(crate) fn granted(socket: &UdpSocket) -> SocketBuffers {
    let socket = socket2::SockRef::from(socket);
    SocketBuffers::from_reported(
        0,
        socket.recv_buffer_size().ok(),
        0,
        socket.send_buffer_size().ok(),
    )
}

/// Datagrams the kernel dropped on this socket since it was created (a full receive buffer,
/// almost always): Linux's per-socket `drops` column of `/proc/net/udp` / `udp6`. `None`
/// elsewhere or when it cannot be read.
#[cfg(target_os = "linux")]
pub(crate) fn receive_drops(socket: &impl std::os::fd::AsRawFd) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .ok()?
        .ino();
    ["/proc/net/udp", "/proc/net/udp6"]
        .into_iter()
        .find_map(|table| rtcmesh::udp_table_drops(&std::fs::read_to_string(table).ok()?, inode))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn receive_drops<S>(_: &S) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_new_socket_gets_its_buffers_and_reports_no_drops() {
        let (socket, buffers) =
            bind("127.0.0.1:0".parse().expect("addr"), 1 << 20, 1 << 20).expect("bind");
        assert_eq!(buffers.receive_requested, 1 << 20);
        assert!(buffers.receive > 0 && buffers.send > 0, "{buffers:?}");
        assert_eq!(receive_drops(&socket), Some(0));
    }
}
