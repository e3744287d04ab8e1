//! mDNS candidates through a real mDNS exchange on loopback: two endpoints whose host
//! candidates travel only as `<uuid>.local` names (as a browser's do) connect once the
//! endpoints' resolvers find the names, answered by an `mdns-sd` responder in this test.
//! Every wait is bounded.
#![cfg(feature = "mdns")]

use std::net::SocketAddr;
use std::time::Duration;

use mdns_sd::{ServiceDaemon, ServiceInfo};
use rtcmesh::{Event, Mesh, MeshConfig, PeerId, Signal};
use rtcmesh_tokio::{Endpoint, EndpointConfig, Events, Handle};

const LIMIT: Duration = Duration::from_secs(15);

/// `signal` with `addr`'s host candidate hidden behind `name`.
fn hide(mut signal: Signal, addr: SocketAddr, name: &str) -> Signal {
    let real = format!(" {} {} typ host", addr.ip(), addr.port());
    let hidden = format!(" {name} {} typ host", addr.port());
    match &mut signal {
        Signal::Offer(text) | Signal::Answer(text) | Signal::Candidate(text) => {
            *text = text.replace(&real, &hidden);
        }
    }
    signal
}

struct Side {
    id: PeerId,
    handle: Handle<Mesh>,
    events: Events<Event>,
    name: &'static str,
    connected: bool,
}

async fn side(id: PeerId, name: &'static str) -> Side {
    let mesh = Mesh::create_mesh(id, MeshConfig::default()).expect("mesh");
    let (handle, events) = Endpoint::spawn(EndpointConfig::default(), mesh)
        .await
        .expect("endpoint");
    Side {
        id,
        handle,
        events,
        name,
        connected: false,
    }
}

/// Forwards `from`'s signals to `to` (hiding `from`'s address), notes a connection.
async fn pump(from: &mut Side, to: &Side) {
    while let Some(event) = from.events.try_recv() {
        match event {
            Event::Signal(s) => {
                let signal = hide(s.signal, from.handle.local_addr(), from.name);
                let _ = to.handle.handle_signal(from.id, signal).await;
            }
            Event::PeerConnected(_) => from.connected = true,
            _ => {}
        }
    }
}

#[tokio::test]
async fn endpoints_announcing_only_mdns_names_connect_through_the_resolver() {
    // The LAN's mDNS responder: answers for both names with the loopback address.
    let responder = match ServiceDaemon::new() {
        Ok(d) => d,
        Err(e) => {
            println!("mdns: no mDNS socket here ({e}); the mDNS exchange was not run");
            return;
        }
    };
    let names = [
        "4b0c2a1e-7d3f-4e5a-9b8c-0d1e2f3a4b5c.local",
        "c5b4a3f2-e1d0-4c9b-8a7f-6e5d4c3b2a10.local",
    ];
    for (i, name) in names.iter().enumerate() {
        let info = ServiceInfo::new(
            "_rtcmesh-test._udp.local.",
            &format!("peer{i}"),
            &format!("{name}."),
            "127.0.0.1",
            5000,
            None,
        )
        .expect("service");
        responder.register(info).expect("register");
    }

    let mut a = side(1, names[0]).await;
    let mut b = side(2, names[1]).await;
    a.handle.add_peer(2, 1).await.expect("a adds b");
    b.handle.add_peer(1, 1).await.expect("b adds a");
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !(a.connected && b.connected) && tokio::time::Instant::now() < deadline {
        pump(&mut a, &b).await;
        pump(&mut b, &a).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sa = a.handle.call(|m, _| m.stats()).await.unwrap();
    let sb = b.handle.call(|m, _| m.stats()).await.unwrap();
    let _ = responder.shutdown();
    assert!(
        a.connected && b.connected,
        "connected through mDNS; a: {sa:?}, b: {sb:?}"
    );
    // At least one side resolved the other's name; the other may have learnt its peer from
    // the first check that arrived (peer-reflexive) before its own answer came.
    assert!(sa.mdns_names_resolved + sb.mdns_names_resolved >= 1);
    let path = a.handle.call(|m, _| m.peer(2).and_then(|p| p.path)).await;
    let path = path.unwrap().expect("a selected pair");
    assert_eq!(path.remote_address, b.handle.local_addr());
}
