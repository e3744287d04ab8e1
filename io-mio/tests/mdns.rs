//! mDNS candidates through a real mDNS exchange on loopback: two endpoints whose host
//! candidates travel only as `<uuid>.local` names (as a browser's do) connect once their
//! resolvers find the names, answered by an `mdns-sd` responder in this test. One `Poll`,
//! driven as the crate documents; bounded in turns and time.
#![cfg(feature = "mdns")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceInfo};
use rtcmesh::{Event, Mesh, MeshConfig, Signal};
use rtcmesh_mio::MioEndpoint;

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

#[test]
fn endpoints_announcing_only_mdns_names_connect_through_the_resolver() {
    let responder = match ServiceDaemon::new() {
        Ok(d) => d,
        Err(e) => {
            println!("mdns: no mDNS socket here ({e}); the mDNS exchange was not run");
            return;
        }
    };
    let names = [
        "7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2910.local",
        "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d.local",
    ];
    for (i, name) in names.iter().enumerate() {
        let info = ServiceInfo::new(
            "_rtcmesh-mio._udp.local.",
            &format!("peer{i}"),
            &format!("{name}."),
            "127.0.0.1",
            5000,
            None,
        )
        .expect("service");
        responder.register(info).expect("register");
    }

    let mut poll = mio::Poll::new().expect("poll");
    let mut events = mio::Events::with_capacity(64);
    let bind = "127.0.0.1:0".parse().unwrap();
    let mut ends = [1, 2].map(|id| {
        let mesh = Mesh::create_mesh(id, MeshConfig::default()).expect("mesh");
        MioEndpoint::bind(bind, None, mesh, poll.registry(), mio::Token(id as usize))
            .expect("endpoint")
    });
    let now = Instant::now();
    ends[0].machine_mut().add_peer(now, 2, 1).expect("1 adds 2");
    ends[1].machine_mut().add_peer(now, 1, 1).expect("2 adds 1");
    let mut connected = [false; 2];
    let start = Instant::now();
    for _ in 0..100_000 {
        if connected == [true; 2] || start.elapsed() > LIMIT {
            break;
        }
        let timeout = ends
            .iter()
            .filter_map(|e| e.timeout(Instant::now()))
            .min()
            .unwrap_or(Duration::from_millis(20));
        poll.poll(&mut events, Some(timeout.min(Duration::from_millis(20))))
            .expect("poll");
        for event in events.iter() {
            let i = event.token().0 - 1;
            ends[i].handle_ready(Instant::now()).expect("ready");
        }
        for i in 0..2 {
            ends[i].handle_timeout(Instant::now()).expect("timeout");
            let addr = ends[i].local_addr();
            let mut signals = Vec::new();
            while let Some(event) = ends[i].machine_mut().poll_event() {
                match event {
                    Event::Signal(s) => signals.push(hide(s.signal, addr, names[i])),
                    Event::PeerConnected(_) => connected[i] = true,
                    _ => {}
                }
            }
            let from = ends[i].machine().unique_id();
            let other = &mut ends[1 - i];
            for signal in signals {
                let _ = other
                    .machine_mut()
                    .handle_signal(Instant::now(), from, signal);
            }
            let _ = other.flush();
        }
    }
    let stats = ends.each_ref().map(|e| e.machine().stats());
    let _ = responder.shutdown();
    assert_eq!(connected, [true; 2], "connected through mDNS: {stats:?}");
    // At least one side resolved the other's name; the other may have learnt its peer from
    // the first check that arrived (peer-reflexive) before its own answer came.
    assert!(
        stats.iter().any(|s| s.mdns_names_resolved >= 1),
        "{stats:?}"
    );
    let path = ends[0].machine().peer(2).and_then(|p| p.path);
    assert_eq!(path.expect("a pair").remote_address, ends[1].local_addr());
}
