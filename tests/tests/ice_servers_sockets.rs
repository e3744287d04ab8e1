//! ICE servers over real loopback sockets: the tokio adapter resolves a host name in the
//! configuration and the mesh asks the server before any peer exists.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcmesh::{Event, IceServer, Mesh, MeshConfig};
use rtcmesh_tests::SimTurnServer;
use rtcmesh_tokio::{Endpoint, EndpointConfig};

/// A STUN server on a loopback socket (turn-server-proto answering Binding requests), counting
/// the requests it answered, until `stop` is set.
fn stun_server(stop: Arc<AtomicBool>, answered: Arc<AtomicUsize>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let listen = socket.local_addr().expect("address");
    std::thread::spawn(move || {
        let mut server = SimTurnServer::new(listen, &[], Instant::now());
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let mut out = Vec::new();
            server.receive(Instant::now(), from, listen, &buf[..n], &mut out);
            for (_, to, bytes) in out {
                if socket.send_to(&bytes, to).is_ok() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    listen
}

#[tokio::test]
async fn the_tokio_adapter_resolves_the_server_name_and_asks_before_any_peer() {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let listen = stun_server(stop.clone(), answered.clone());
    let config = MeshConfig::default().with_ice_servers(vec![IceServer::stun(format!(
        "stun:localhost:{}",
        listen.port()
    ))]);
    let mesh = Mesh::create_mesh(1, config).expect("mesh");
    let (handle, mut events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("endpoint");
    // No peer: the loop's first turn already sent the Binding request.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while answered.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered.load(Ordering::Relaxed) > 0, "the server was asked");
    let complete = handle
        .call(|m, _| (m.ice_gathering_complete(), m.ice_server_hosts()))
        .await
        .expect("call");
    // On loopback the server sees the socket's own address: no server-reflexive candidate, but
    // gathering is done and the name was resolved.
    assert_eq!(complete, (true, Vec::<String>::new()));
    handle.close();
    while let Some(event) = events.recv().await {
        assert!(
            !matches!(event, Event::IceServerFailed { .. }),
            "unexpected failure: {event:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
}
