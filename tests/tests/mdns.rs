//! mDNS candidates: browsers hide their host addresses behind `<uuid>.local` names. The mesh
//! holds such candidates, asks the adapter to resolve each name (`poll_mdns_query`), and takes
//! the address back (`resolved_mdns`); here the test plays the adapter, answering from the
//! simulated LAN's table of names.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rtcmesh::{CandidateKind, Limits, Mesh, MeshConfig, Signal, SignalError};
use rtcmesh_tests::World;

const NAME_A: &str = "0b5c7e1a-3d2f-4a6b-9c8d-1e2f3a4b5c6d.local";
const NAME_B: &str = "9f8e7d6c-5b4a-4321-8fed-cba987654321.local";

/// The candidate lines of a signal with `addr`'s host address replaced by `name`: what a
/// browser with mDNS candidates on (its default) signals.
fn hide(signal: &mut Signal, addr: SocketAddr, name: &str) {
    let real = format!(" {} {} typ host", addr.ip(), addr.port());
    let hidden = format!(" {name} {} typ host", addr.port());
    match signal {
        Signal::Offer(text) | Signal::Answer(text) | Signal::Candidate(text) => {
            *text = text.replace(&real, &hidden);
        }
    }
}

/// Two meshes whose host candidates both travel as `.local` names only: neither can reach the
/// other before a name resolves (nor learn the other from its checks).
fn two_hidden_peers() -> (World, HashMap<String, IpAddr>) {
    let mut w = World::mesh(&[1, 2], &MeshConfig::default());
    let (a, b) = (w.nodes[0].addr, w.nodes[1].addr);
    w.rewrite_signals(move |from, _to, signal| match from {
        1 => hide(signal, a, NAME_A),
        _ => hide(signal, b, NAME_B),
    });
    let lan = HashMap::from([(NAME_A.to_owned(), a.ip()), (NAME_B.to_owned(), b.ip())]);
    (w, lan)
}

/// The test's adapter: every query waiting at every node is answered from `lan` (a name not
/// in it does not resolve). Returns how many queries were answered.
fn answer_mdns(w: &mut World, lan: &HashMap<String, IpAddr>) -> usize {
    let now = w.started() + w.elapsed();
    let mut answered = 0;
    for n in 0..w.nodes.len() {
        while let Some(q) = w.nodes[n].mesh_mut().poll_mdns_query() {
            let address = lan.get(&q.name).copied();
            w.nodes[n]
                .mesh_mut()
                .resolved_mdns(now, q.peer, &q.name, address);
            answered += 1;
        }
        w.drain(n);
    }
    answered
}

/// Runs the world for up to `limit` of simulated time, the adapter answering as it goes,
/// until everyone is connected.
fn run_resolving(w: &mut World, lan: &HashMap<String, IpAddr>, limit: Duration) -> bool {
    let deadline = w.elapsed() + limit;
    for _ in 0..1_000_000 {
        answer_mdns(w, lan);
        if w.fully_connected() {
            return true;
        }
        if w.elapsed() >= deadline || !w.step() {
            return false;
        }
    }
    false
}

#[test]
fn peers_that_announce_only_mdns_names_connect_host_to_host_once_the_names_resolve() {
    let (mut w, lan) = two_hidden_peers();
    w.introduce_all();
    assert!(
        run_resolving(&mut w, &lan, Duration::from_secs(10)),
        "connected through the resolved names"
    );
    for n in 0..2 {
        let stats = w.nodes[n].mesh().stats();
        assert_eq!(stats.mdns_names_resolved, 1, "node {n}: one name resolved");
        assert_eq!(stats.mdns_timeouts, 0);
        let other = w.id(1 - n);
        let path = w.nodes[n].mesh().peer(other).and_then(|p| p.path);
        let path = path.expect("a selected pair");
        assert_eq!(
            (path.local, path.remote),
            (CandidateKind::Host, CandidateKind::Host),
            "node {n}: host to host, the remote signalled (as a name), not learnt from a check"
        );
        assert_eq!(path.remote_address, w.nodes[1 - n].addr);
    }
}

#[test]
fn names_that_do_not_resolve_are_dropped_and_counted_and_nobody_connects() {
    let (mut w, _) = two_hidden_peers();
    w.introduce_all();
    let nobody = HashMap::new();
    assert!(!run_resolving(&mut w, &nobody, Duration::from_secs(8)));
    for n in 0..2 {
        let stats = w.nodes[n].mesh().stats();
        // Once per handshake: the handshake starts over after `connect_retry_interval`.
        assert!(
            stats.mdns_names_unresolved >= 1,
            "node {n}: the adapter said no"
        );
        assert_eq!(stats.mdns_names_resolved, 0);
        assert!(w.nodes[n].connected().is_empty());
    }
}

#[test]
fn a_name_nobody_answers_for_is_dropped_at_the_timeout_and_a_late_answer_is_ignored() {
    let t0 = Instant::now();
    let mut mesh = Mesh::create_server(MeshConfig::default()).unwrap();
    mesh.add_host_candidate("192.168.1.10:5000".parse().unwrap())
        .unwrap();
    mesh.add_peer(t0, 7, 1).unwrap();
    let trickle = format!("candidate:1 1 udp 2122260223 {NAME_A} 54321 typ host");
    mesh.handle_signal(t0, 7, Signal::Candidate(trickle.clone()))
        .unwrap();
    mesh.handle_signal(t0, 7, Signal::Candidate(trickle))
        .unwrap();
    let query = mesh.poll_mdns_query().expect("asked once");
    assert_eq!(mesh.poll_mdns_query(), None, "a repeat is not asked again");
    let timeout = Limits::default().mdns_timeout;
    assert!(mesh.poll_timeout().is_some_and(|at| at <= t0 + timeout));
    mesh.handle_timeout(t0 + timeout);
    assert_eq!(mesh.stats().mdns_timeouts, 1);
    let late = t0 + timeout + Duration::from_secs(1);
    let ip = Some("192.168.1.20".parse().unwrap());
    assert!(!mesh.resolved_mdns(late, query.peer, &query.name, ip));
    assert_eq!(mesh.stats().mdns_names_resolved, 0);
}

#[test]
fn a_hostile_peer_sending_ten_thousand_names_is_bounded_and_counted() {
    let t0 = Instant::now();
    let mut mesh = Mesh::create_server(MeshConfig::default()).unwrap();
    mesh.add_host_candidate("192.168.1.10:5000".parse().unwrap())
        .unwrap();
    mesh.add_peer(t0, 7, 1).unwrap();
    for i in 0..10_000 {
        let c = format!("candidate:{i} 1 udp 2122260223 name-{i}.local 5000 typ host");
        mesh.handle_signal(t0, 7, Signal::Candidate(c)).unwrap();
    }
    let limits = Limits::default();
    let asked = std::iter::from_fn(|| mesh.poll_mdns_query()).count();
    assert_eq!(
        asked, limits.max_mdns_names,
        "one peer: its names are bounded"
    );
    assert_eq!(
        mesh.stats().mdns_names_over_limit,
        10_000 - limits.max_mdns_names as u64
    );
    // Its real candidates still get through: the held names take only their own slots.
    let real = "candidate:x 1 udp 2122260223 192.168.1.30 5000 typ host";
    mesh.handle_signal(t0, 7, Signal::Candidate(real.into()))
        .unwrap();
    assert_eq!(mesh.stats().candidates_over_limit, 0);

    // Many such peers: the mesh's outstanding queries are bounded too.
    let peers = limits.max_mdns_queries / limits.max_mdns_names + 2;
    for p in 0..peers as i32 {
        let id = 100 + p;
        mesh.add_peer(t0, id, 1).unwrap();
        for i in 0..limits.max_mdns_names {
            let c = format!("candidate:{i} 1 udp 1 p{p}-{i}.local 5000 typ host");
            mesh.handle_signal(t0, id, Signal::Candidate(c)).unwrap();
        }
    }
    let asked = std::iter::from_fn(|| mesh.poll_mdns_query()).count();
    assert_eq!(asked, limits.max_mdns_queries - limits.max_mdns_names);
    let total = limits.max_mdns_names * (peers + 1);
    assert_eq!(
        mesh.stats().mdns_names_over_limit,
        10_000 - limits.max_mdns_names as u64 + (total - limits.max_mdns_queries) as u64
    );
    // They all time out, and then new names are asked again.
    mesh.handle_timeout(t0 + limits.mdns_timeout);
    assert_eq!(mesh.stats().mdns_timeouts, limits.max_mdns_queries as u64);
    mesh.add_peer(t0, 999, 1).unwrap();
    let c = format!("candidate:1 1 udp 1 {NAME_B} 5000 typ host");
    mesh.handle_signal(t0 + limits.mdns_timeout, 999, Signal::Candidate(c))
        .unwrap();
    assert_eq!(mesh.poll_mdns_query().map(|q| q.peer), Some(999));
}

#[test]
fn bad_names_are_refused_and_counted_in_trickles_and_in_offers() {
    let t0 = Instant::now();
    let mut mesh = Mesh::create_server(MeshConfig::default()).unwrap();
    mesh.add_host_candidate("192.168.1.10:5000".parse().unwrap())
        .unwrap();
    mesh.add_peer(t0, 7, 1).unwrap();
    let long = format!("{}.local", "a".repeat(64));
    for bad in [
        "a.b.local",
        "x_y.local",
        "-x.local",
        "ünï.local",
        ".local",
        &long,
    ] {
        let c = format!("candidate:1 1 udp 2122260223 {bad} 5000 typ host");
        let result = mesh.handle_signal(t0, 7, Signal::Candidate(c));
        assert!(
            matches!(result, Err(SignalError::Invalid(_))),
            "{bad}: {result:?}"
        );
    }
    assert_eq!(mesh.stats().mdns_names_refused, 6);
    assert_eq!(mesh.poll_mdns_query(), None);

    // In an offer: the bad name's line is dropped and counted, the good name is asked.
    let mut offerer = Mesh::create_mesh(7, MeshConfig::default()).unwrap();
    offerer
        .add_host_candidate("192.168.1.20:5000".parse().unwrap())
        .unwrap();
    offerer.add_peer(t0, 1, 1).unwrap();
    let offer = std::iter::from_fn(|| offerer.poll_event())
        .find_map(|e| match e {
            rtcmesh::Event::Signal(s) => Some(s.signal),
            _ => None,
        })
        .expect("an offer");
    let Signal::Offer(sdp) = offer else {
        panic!("an offer first")
    };
    let real = " 192.168.1.20 5000 typ host";
    assert!(sdp.contains(real), "{sdp}");
    let sdp = sdp.replace(
        real,
        &format!(
            " {NAME_A} 5000 typ host\r\n\
             a=candidate:2 1 udp 2122260223 bad_name.local 5000 typ host"
        ),
    );
    mesh.handle_signal(t0, 7, Signal::Offer(sdp)).unwrap();
    assert_eq!(mesh.stats().mdns_names_refused, 7);
    assert_eq!(
        mesh.poll_mdns_query().map(|q| q.name),
        Some(NAME_A.to_owned())
    );
}

#[test]
fn with_an_allowlist_a_name_passes_and_the_address_it_resolves_to_is_checked() {
    let t0 = Instant::now();
    let loopback = MeshConfig::default().with_remote_allowlist(Some(rtcmesh::IpPrefix::loopback()));
    let mut mesh = Mesh::create_server(loopback).unwrap();
    mesh.add_host_candidate("127.0.0.1:5000".parse().unwrap())
        .unwrap();
    mesh.add_peer(t0, 7, 1).unwrap();
    for name in [NAME_A, NAME_B] {
        let c = format!("candidate:1 1 udp 2122260223 {name} 5000 typ host");
        mesh.handle_signal(t0, 7, Signal::Candidate(c)).unwrap();
    }
    assert_eq!(mesh.stats().candidates_not_allowed, 0, "names pass");
    let queries: Vec<_> = std::iter::from_fn(|| mesh.poll_mdns_query()).collect();
    assert_eq!(queries.len(), 2);
    let lan = Some("192.168.1.20".parse().unwrap());
    assert!(!mesh.resolved_mdns(t0, 7, NAME_A, lan), "outside the list");
    assert_eq!(mesh.stats().candidates_not_allowed, 1);
    let here = Some("127.0.0.9".parse().unwrap());
    assert!(mesh.resolved_mdns(t0, 7, NAME_B, here), "inside the list");
}

#[test]
fn a_later_candidate_carrying_a_resolved_name_goes_to_ice_without_a_new_query() {
    let t0 = Instant::now();
    let mut mesh = Mesh::create_server(MeshConfig::default()).unwrap();
    mesh.add_host_candidate("192.168.1.10:5000".parse().unwrap())
        .unwrap();
    mesh.add_peer(t0, 7, 1).unwrap();
    let udp = format!("candidate:1 1 udp 2122260223 {NAME_A} 54321 typ host");
    mesh.handle_signal(t0, 7, Signal::Candidate(udp)).unwrap();
    let q = mesh.poll_mdns_query().expect("asked");
    let ip = Some("192.168.1.20".parse().unwrap());
    assert!(mesh.resolved_mdns(t0, q.peer, &q.name, ip));
    // The same host's second candidate (another port), trickled later.
    let other = format!("candidate:2 1 udp 2122260222 {NAME_A} 54322 typ host");
    mesh.handle_signal(t0, 7, Signal::Candidate(other)).unwrap();
    assert_eq!(mesh.poll_mdns_query(), None, "known already");
    assert_eq!(mesh.stats().mdns_names_resolved, 1);
}
