//! The UDP socket's kernel side: its buffer sizes, and the datagrams the kernel dropped.

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
    // The option is a C int.
    let (receive, send) = (receive.min(MAX_REQUEST), send.min(MAX_REQUEST));
    if receive > 0 {
        let _ = socket.set_recv_buffer_size(receive);
    }
    if send > 0 {
        let _ = socket.set_send_buffer_size(send);
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let granted = |size: io::Result<usize>| size.map_or(0, |s| s / KERNEL_FACTOR);
    let buffers = SocketBuffers {
        receive_requested: receive,
        receive: granted(socket.recv_buffer_size()),
        send_requested: send,
        send: granted(socket.send_buffer_size()),
    };
    Ok((socket.into(), buffers))
}

/// The buffers of a socket the caller built (left as they are).
pub(crate) fn granted(socket: &UdpSocket) -> SocketBuffers {
    let socket = socket2::SockRef::from(socket);
    let granted = |size: io::Result<usize>| size.map_or(0, |s| s / KERNEL_FACTOR);
    SocketBuffers {
        receive_requested: 0,
        receive: granted(socket.recv_buffer_size()),
        send_requested: 0,
        send: granted(socket.send_buffer_size()),
    }
}

/// The largest size `setsockopt` takes (a C int, which Linux then doubles).
const MAX_REQUEST: usize = i32::MAX as usize / 2;

/// Linux reports twice the size it was given (the other half is its bookkeeping).
#[cfg(any(target_os = "linux", target_os = "android"))]
const KERNEL_FACTOR: usize = 2;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const KERNEL_FACTOR: usize = 1;

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
        .find_map(|table| drops_in_table(&std::fs::read_to_string(table).ok()?, inode))
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn receive_drops<S>(_: &S) -> Option<u64> {
    None
}

/// The `drops` column (the last) of the line for socket `inode` (the tenth column) in a
/// `/proc/net/udp` table.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn drops_in_table(table: &str, inode: u64) -> Option<u64> {
    table.lines().skip(1).find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let ours = columns.get(9)?.parse::<u64>().ok()? == inode;
        ours.then(|| columns.last()?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drops_column_of_our_socket_is_found_by_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 0100007F:A1B2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  124: 0100007F:C3D4 00000000:0000 07 00000000:00034000 00:00000000 00000000     0        0 4343 2 0000000000000000 17
";
        assert_eq!(drops_in_table(table, 4343), Some(17));
        assert_eq!(drops_in_table(table, 4242), Some(0));
        assert_eq!(drops_in_table(table, 1), None);
    }

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
