//! mDNS candidates through a real mDNS exchange on loopback: two endpoints whose host
//! candidates travel only as `<uuid>.local` names (as a browser's do) connect once the
//! endpoints' resolvers find the names, answered by an `mdns-sd` responder in this test, or
//! by one that answers as Chromium's does. Every wait is bounded.
#![cfg(feature = "mdns")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// A LAN responder that answers as Chromium's does: only a query that asks one question (for
/// one of its names, type A); a query asking A and AAAA together (as mdns-sd's) it ignores.
/// It never announces, so a name resolves only through a query it answered.
struct OneQuestionResponder {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OneQuestionResponder {
    fn start(names: &[&str], ip: Ipv4Addr) -> std::io::Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5353)).into())?;
        let group = Ipv4Addr::new(224, 0, 0, 251);
        let interfaces: Vec<Ipv4Addr> = if_addrs::get_if_addrs()?
            .into_iter()
            .filter(|i| !i.is_loopback())
            .filter_map(|i| match i.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
            .collect();
        for interface in &interfaces {
            socket.join_multicast_v4(&group, interface)?;
        }
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let socket: std::net::UdpSocket = socket.into();
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (stop2, answered2) = (stop.clone(), answered.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LIMIT + Duration::from_secs(5);
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let Some(answer) = one_question_answer(&buf[..n], &names, ip) else {
                    continue;
                };
                for interface in &interfaces {
                    let sock = socket2::SockRef::from(&socket);
                    if sock.set_multicast_if_v4(interface).is_ok() {
                        let _ = socket.send_to(&answer, (group, 5353));
                    }
                }
                answered2.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Self {
            stop,
            answered,
            thread: Some(thread),
        })
    }
}

impl Drop for OneQuestionResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The answer to `query` if it is a query with exactly one question, type A, for one of
/// `names` (lower case, without the root dot).
fn one_question_answer(query: &[u8], names: &[String], ip: Ipv4Addr) -> Option<Vec<u8>> {
    let (flags, questions) = (
        u16::from_be_bytes([*query.get(2)?, *query.get(3)?]),
        u16::from_be_bytes([*query.get(4)?, *query.get(5)?]),
    );
    if flags & 0x8000 != 0 || questions != 1 {
        return None;
    }
    let (mut at, mut labels) = (12, Vec::new());
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    if qtype != 1 || !names.contains(&labels.join(".")) {
        return None;
    }
    // A response (authoritative), no question, one answer: the name, A, IN with the
    // cache-flush bit, TTL 120, the address.
    let mut m = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    m.extend_from_slice(&query[12..at]);
    m.extend_from_slice(&[0, 1, 0x80, 1, 0, 0, 0, 120, 0, 4]);
    m.extend_from_slice(&ip.octets());
    Some(m)
}

#[tokio::test]
async fn names_resolve_through_a_responder_that_answers_only_one_question_per_query() {
    // Chromium's responder ignores mdns-sd's queries (A and AAAA in one message): the
    // endpoints ask one question per message too. Before they did, this failed (the names
    // never resolved: no announcement, no answer).
    let names = [
        "0d9c8b7a-6f5e-4d3c-8b2a-190817263544.local",
        "e8f7a6b5-c4d3-4e2f-8a1b-0c9d8e7f6a5b.local",
    ];
    let responder = match OneQuestionResponder::start(&names, Ipv4Addr::LOCALHOST) {
        Ok(r) => r,
        Err(e) => {
            println!("mdns: no mDNS socket here ({e}); the one-question exchange was not run");
            return;
        }
    };
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
    let answered = responder.answered.load(Ordering::Relaxed);
    drop(responder);
    assert!(
        a.connected && b.connected,
        "connected through mDNS ({answered} answers); a: {sa:?}, b: {sb:?}"
    );
    assert!(answered >= 1, "the responder answered a one-question query");
    assert!(sa.mdns_names_resolved + sb.mdns_names_resolved >= 1);
}
