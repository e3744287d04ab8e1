//! Hostile peers against every limit in `MeshConfig::limits`, one story per limit, each with a
//! well-behaved friend whose traffic must keep flowing (`rtcmesh_tests::hostile`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtcmesh::multiplayer::wire;
use rtcmesh::{
    Limits, Mesh, MeshConfig, MultiplayerConfig, Signal, SignalError, Target, TransferMode,
};
use rtcmesh_tests::hostile::candidate_flood;
use rtcmesh_tests::World;

/// The attacker's id: larger than the victim's (1), so it makes the offers.
const ATTACKER: i32 = 9;

/// The attacker's node in [`attacked`]'s world (after the victim, 0, and its friend, 1).
const ATTACKER_NODE: usize = 2;

/// A victim (node 0, id 1) with its friend (node 1, id 2), and an attacker (node 2) connected
/// to it.
fn attacked(config: &MeshConfig) -> World {
    let mut w = World::victim_and_friend(config);
    let k = w.add_attacker(ATTACKER);
    assert_eq!(k, ATTACKER_NODE);
    w.connect_attacker(0, k);
    for node in &mut w.nodes {
        node.clear_events();
    }
    w
}

/// The friend's packets still reach the victim, all of them, each within the latency it had
/// before the attack (the network is perfect: 1 ms one way).
fn friend_unaffected(w: &mut World) {
    let (latencies, sent) =
        w.steady_traffic(1, 0, Duration::from_millis(10), Duration::from_millis(500));
    assert_eq!(latencies.len(), sent, "every packet of the friend arrived");
    assert!(sent >= 45, "the friend could send ({sent})");
    assert!(
        latencies.iter().all(|&l| l == Duration::from_millis(1)),
        "latency changed: {latencies:?}"
    );
    assert!(!w.nodes[0].lost(2), "the victim lost its friend");
}

#[test]
fn the_friend_has_the_same_latency_without_an_attacker() {
    // The baseline the other stories compare against.
    let mut w = World::victim_and_friend(&MeshConfig::default());
    friend_unaffected(&mut w);
}

#[test]
fn channels_opened_outside_the_layout_are_closed_then_the_peer_is_dropped() {
    let mut w = attacked(&MeshConfig::default());
    let allowance = Limits::default().max_refused_channels as usize;
    w.nodes[ATTACKER_NODE]
        .attacker_mut()
        .open_dcep_channels(allowance);
    w.drain(ATTACKER_NODE);
    w.run_for(Duration::from_secs(2));
    // The victim closed each of them (the layout's channels stay open).
    let attacker = w.nodes[ATTACKER_NODE].attacker();
    assert_eq!(
        attacker.closed.len(),
        allowance,
        "closed: {:?}",
        attacker.closed
    );
    assert!(attacker
        .closed
        .iter()
        .all(|id| !attacker.layout.contains(id)));
    let stats = w.nodes[0].mesh().stats();
    assert_eq!(stats.channels_refused, allowance as u64);
    assert!(
        w.nodes[0]
            .mesh()
            .peer(ATTACKER)
            .is_some_and(|p| p.connected),
        "within the allowance the peer stays"
    );
    // One more is past the allowance: the victim ends the connection.
    w.nodes[ATTACKER_NODE].attacker_mut().open_dcep_channels(1);
    w.drain(ATTACKER_NODE);
    assert!(w.run_until(Duration::from_secs(1), |w| w.nodes[0].lost(ATTACKER)));
    assert!(!w.nodes[0].mesh().has_peer(ATTACKER));
    assert_eq!(w.nodes[0].mesh().stats().peers_disconnected_for_abuse, 1);
    friend_unaffected(&mut w);
}

#[test]
fn writes_on_unnegotiated_stream_ids_never_reach_the_application() {
    // str0m 0.25 keeps such streams and drops their data without telling anyone, so the mesh
    // cannot close or count them (see the README's reliability section); what it must do is
    // deliver none of it and keep serving everyone else.
    let mut w = attacked(&MeshConfig::default());
    w.nodes[ATTACKER_NODE]
        .attacker_mut()
        .write_on_streams(100..400);
    w.drain(ATTACKER_NODE);
    w.run_for(Duration::from_millis(300));
    assert!(w.nodes[0].packets().is_empty(), "nothing was delivered");
    assert!(w.nodes[0]
        .mesh()
        .peer(ATTACKER)
        .is_some_and(|p| p.connected));
    friend_unaffected(&mut w);
}

#[test]
fn a_trickled_candidate_flood_is_capped() {
    let config = MeshConfig::default();
    let max = config.limits.max_remote_candidates;
    let mut w = attacked(&config);
    let known = [w.nodes[1].addr, w.nodes[ATTACKER_NODE].addr];
    for signal in candidate_flood(500) {
        w.signal_from_attacker(ATTACKER_NODE, 1, signal);
    }
    w.run_for(Duration::from_secs(3));
    // The victim only ever checks (sends to) candidates it kept.
    let probed = w.nodes[0].destinations_except(&known);
    assert!(probed < max, "the victim probed {probed} flood addresses");
    let dropped = w.nodes[0].mesh().stats().candidates_over_limit;
    assert!(dropped >= 500 - max as u64, "{dropped} candidates dropped");
    assert!(w.nodes[0]
        .mesh()
        .peer(ATTACKER)
        .is_some_and(|p| p.connected));
    friend_unaffected(&mut w);
}

#[test]
fn an_offer_full_of_candidates_is_capped() {
    let config = MeshConfig::default();
    let max = config.limits.max_remote_candidates;
    let mut w = World::victim_and_friend(&config);
    let k = w.add_attacker(ATTACKER);
    let offer = w.nodes[k].attacker_mut().offer_with_candidates(400);
    w.admit_attacker(0, k, offer);
    let id = ATTACKER;
    assert!(
        w.run_until(Duration::from_secs(10), |w| w.nodes[0]
            .mesh()
            .peer(id)
            .is_some_and(|p| p.connected)),
        "the attacker's real candidate was among those kept, so it still connects"
    );
    w.run_for(Duration::from_secs(2));
    let known = [w.nodes[1].addr, w.nodes[k].addr];
    let probed = w.nodes[0].destinations_except(&known);
    assert!(probed < max, "the victim probed {probed} flood addresses");
    assert!(w.nodes[0].mesh().stats().candidates_over_limit >= 400 - max as u64);
    friend_unaffected(&mut w);
}

#[test]
fn a_peer_reflexive_flood_from_new_ports_is_capped() {
    let config = MeshConfig::default();
    let max = config.limits.max_remote_candidates;
    let mut w = attacked(&config);
    w.prflx_flood(ATTACKER_NODE, 0, 300);
    w.run_for(Duration::from_secs(1));
    // Each admitted source gets a STUN answer: the victim answered at most `max` new ports.
    let known = [w.nodes[1].addr, w.nodes[ATTACKER_NODE].addr];
    let answered = w.nodes[0].destinations_except(&known);
    assert!(answered < max, "the victim answered {answered} new ports");
    assert!(w.nodes[0].mesh().stats().candidates_over_limit >= 300 - max as u64);
    assert!(w.nodes[0]
        .mesh()
        .peer(ATTACKER)
        .is_some_and(|p| p.connected));
    friend_unaffected(&mut w);
}

#[test]
fn an_offer_storm_does_not_restart_the_connection_each_time() {
    let config = MeshConfig::default();
    let limits = config.limits.clone();
    let mut w = attacked(&config);
    let storm = w.nodes[ATTACKER_NODE].attacker().offer_storm(50);
    let start = w.now;
    for (i, offer) in storm.into_iter().enumerate() {
        let at = start + Duration::from_millis(5 * i as u64);
        w.run_until(Duration::from_millis(5), |w| w.now >= at);
        w.signal_from_attacker(ATTACKER_NODE, 1, offer);
    }
    w.run_for(Duration::from_millis(100));
    let elapsed = w.now - start;
    let allowed = limits.renegotiation_burst as u64
        + (elapsed.as_millis() / limits.renegotiation_interval.as_millis()) as u64;
    let stats = w.nodes[0].mesh().stats();
    assert!(
        stats.connect_retries <= allowed,
        "{} restarts in {elapsed:?}",
        stats.connect_retries
    );
    assert!(w.nodes[ATTACKER_NODE].attacker().answers <= allowed as usize + 1);
    assert_eq!(stats.offers_rate_limited, 50 - stats.connect_retries);
    assert!(w.nodes[0]
        .signal_errors
        .iter()
        .all(|e| *e == SignalError::TooManyOffers(ATTACKER)));
    friend_unaffected(&mut w);
}

#[test]
fn a_new_offer_after_a_quiet_interval_is_still_followed() {
    // Legitimate restarts (handshake retries, later ICE restarts) pass the rate limit.
    let config = MeshConfig::default();
    let mut w = attacked(&config);
    let offers = w.nodes[ATTACKER_NODE].attacker().offer_storm(6);
    for offer in offers {
        w.signal_from_attacker(ATTACKER_NODE, 1, offer);
        w.run_for(config.limits.renegotiation_interval);
    }
    assert_eq!(w.nodes[0].mesh().stats().connect_retries, 6);
    assert_eq!(w.nodes[0].mesh().stats().offers_rate_limited, 0);
    assert!(
        w.nodes[0].signal_errors.is_empty(),
        "{:?}",
        w.nodes[0].signal_errors
    );
}

#[test]
fn oversized_signals_are_refused_before_any_parsing() {
    let mut w = attacked(&MeshConfig::default());
    let now = w.now;
    let limits = Limits::default();
    let victim = w.nodes[0].mesh_mut();
    let big_offer = format!(
        "v=0\r\n{}",
        "a=x-padding\r\n".repeat(limits.max_sdp_len / 10)
    );
    assert_eq!(
        victim.handle_signal(now, ATTACKER, Signal::Offer(big_offer.clone())),
        Err(SignalError::TooLarge {
            size: big_offer.len(),
            max: limits.max_sdp_len
        })
    );
    assert!(matches!(
        victim.handle_signal(now, ATTACKER, Signal::Answer(big_offer)),
        Err(SignalError::TooLarge { .. })
    ));
    let big_candidate = format!(
        "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host{}",
        " x y".repeat(limits.max_candidate_len)
    );
    assert!(matches!(
        victim.handle_signal(now, ATTACKER, Signal::Candidate(big_candidate)),
        Err(SignalError::TooLarge { .. })
    ));
    assert_eq!(victim.stats().signals_too_large, 3);
    assert!(victim.peer(ATTACKER).is_some_and(|p| p.connected));
    friend_unaffected(&mut w);
}

/// The mesh advertises `max_packet_size` as its `a=max-message-size` (issue 25.5): the peer's
/// own stack refuses a larger message, instead of our SCTP acknowledging it and the mesh then
/// dropping it. (A stack that ignores the advertised size loses its connection: see
/// `data_path.rs`.)
#[test]
fn a_message_above_our_packet_size_is_refused_by_the_senders_own_stack() {
    let config = MeshConfig::default();
    let mut w = attacked(&config);
    let big = vec![7u8; config.max_packet_size + 1];
    assert!(
        !w.nodes[ATTACKER_NODE].attacker_mut().send(0, &big),
        "refused above our a=max-message-size"
    );
    assert!(w.nodes[ATTACKER_NODE].attacker_mut().send(0, b"small"));
    w.drain(ATTACKER_NODE);
    assert!(w.run_until(Duration::from_secs(1), |w| !w.nodes[0].packets().is_empty()));
    let packets = w.nodes[0].packets();
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0].data, b"small");
    assert_eq!(w.nodes[0].mesh().stats().packets_too_large, 0);
    friend_unaffected(&mut w);
}

/// Every duration at `Duration::MAX` means "never", not a panic.
#[test]
fn duration_max_settings_mean_never() {
    let config = MeshConfig::default()
        .with_connect_timeout(Duration::MAX)
        .with_connect_retry_interval(Duration::MAX)
        .with_disconnect_grace(Duration::MAX)
        .with_peer_timeout(Duration::MAX)
        .with_ice_restart_interval(Duration::MAX)
        .with_peer_move_after(Duration::MAX)
        .with_stats_interval(Some(Duration::MAX))
        .with_limits(Limits::default().with_renegotiation_interval(Duration::MAX));
    let mut w = rtcmesh_tests::World::connected_mesh(&[1, 2], &config);
    w.nodes[0]
        .mesh_mut()
        .send(Target::Peer(2), TransferMode::Reliable, 0, b"hello")
        .expect("send");
    w.drain(0);
    assert!(w.run_until(Duration::from_secs(1), |w| !w.nodes[1].packets().is_empty()));
    // A peer that vanishes is never given up on, and nothing overflows.
    w.vanish(1);
    w.run_for(Duration::from_secs(60));
    assert!(w.nodes[0].mesh().has_peer(2));
    // One that never answers is never timed out either.
    let now = w.now;
    w.nodes[0].mesh_mut().add_peer(now, 7, 1).expect("add");
    w.run_for(Duration::from_secs(60));
    assert!(w.nodes[0].mesh().has_peer(7));
    let mp_config = rtcmesh::MultiplayerConfig::default()
        .with_auth(true)
        .with_auth_timeout(Some(Duration::MAX));
    let mut mw = World::game(&[2], &MeshConfig::default(), &mp_config);
    mw.introduce_to_server(1);
    mw.run_for(Duration::from_secs(30));
    assert_eq!(mw.nodes[0].authenticating(), vec![2]);
    assert!(
        mw.nodes[0].auth_failed().is_empty(),
        "no timeout: still authenticating"
    );
}

/// A clock near the end of `Instant`'s range: deadlines past it are "never", and the clock
/// stops short of where str0m's wall-clock conversion would overflow. Nothing panics.
#[test]
fn a_clock_near_the_end_of_time_never_panics() {
    let end = end_of_time();
    for far in [
        end,
        end - Duration::from_secs(3600),
        end - Duration::from_secs(1 << 40),
    ] {
        let config = MeshConfig::default().with_connect_timeout(Duration::from_secs(1));
        let mut mesh = Mesh::create_mesh(2, config).expect("mesh");
        let local = SocketAddr::from(([127, 0, 0, 1], 5000));
        mesh.add_host_candidate(local).expect("candidate");
        mesh.add_peer(far, 1, 1).expect("add_peer");
        mesh.handle_timeout(far);
        mesh.handle_datagram(
            far,
            SocketAddr::from(([127, 0, 0, 2], 5000)),
            local,
            &[0; 40],
        );
        let _ = mesh.handle_signal(
            far,
            1,
            Signal::Candidate(candidate_flood(1)[0].body().into()),
        );
        let _ = mesh.send(Target::All, TransferMode::Reliable, 0, b"x");
        while mesh.poll_event().is_some() {}
        while mesh.poll_transmit().is_some() {}
        if let Some(at) = mesh.poll_timeout() {
            mesh.handle_timeout(at);
        }
    }
}

/// The last `Instant` (to within a second).
fn end_of_time() -> Instant {
    let mut at = Instant::now();
    let mut step = Duration::from_secs(u64::MAX / 2);
    while step >= Duration::from_secs(1) {
        match at.checked_add(step) {
            Some(next) => at = next,
            None => step /= 2,
        }
    }
    at
}

// ---------------------------------------------------------------- the multiplayer layer

/// Whether nodes `a` and `b` of a multiplayer world report each other connected at the mesh.
fn mesh_linked(w: &World, a: usize, b: usize) -> bool {
    let (ida, idb) = (w.id(a), w.id(b));
    w.nodes[a].mesh().peer(idb).is_some_and(|p| p.connected)
        && w.nodes[b].mesh().peer(ida).is_some_and(|p| p.connected)
}

#[test]
fn an_authenticating_peer_that_sends_too_much_auth_data_fails_authentication() {
    let config = MultiplayerConfig::default()
        .with_auth(true)
        .with_auth_timeout(None);
    let max = config.limits.max_auth_bytes;
    let mut w = World::game(&[], &MeshConfig::default(), &config);
    let client = w.add_bare_client(2, &MeshConfig::default());
    w.introduce_to_server(client);
    let ready = |w: &World| mesh_linked(w, 0, 1) && w.nodes[0].authenticating() == vec![2];
    assert!(w.run_until(Duration::from_secs(5), ready));
    let mut frame = Vec::new();
    wire::encode_auth(&[0xA5; 1000], &mut frame);
    for _ in 0..max / 1000 + 5 {
        // Stops once the server hangs up.
        let sent =
            w.nodes[client]
                .mesh_mut()
                .send(Target::Peer(1), TransferMode::Reliable, 0, &frame);
        if sent.is_err() {
            break;
        }
        w.drain(client);
        w.run_for(Duration::from_millis(2));
    }
    assert!(w.run_until(Duration::from_secs(1), |w| !w.nodes[0]
        .auth_failed()
        .is_empty()));
    let server = &w.nodes[0];
    assert_eq!(server.auth_failed(), vec![2]);
    let delivered: usize = server.auth_data().iter().map(|(_, d)| d.len()).sum();
    assert!(
        delivered <= max,
        "{delivered} bytes of auth data reached the application"
    );
    assert_eq!(server.mp().stats().auth_over_limit, 1);
    assert!(server.connected().is_empty(), "never admitted");
    assert!(w.run_until(Duration::from_secs(1), |w| !w.nodes[0].mesh().has_peer(2)));
}

#[test]
fn a_client_admits_at_most_max_relayed_peers_from_its_server() {
    let config = MultiplayerConfig::default();
    let max = config.limits.max_relayed_peers;
    let mut w = World::bare_server_and_game_clients(&[2], &MeshConfig::default(), &config);
    w.introduce_to_server(1);
    assert!(w.run_until(Duration::from_secs(5), |w| mesh_linked(w, 0, 1)));
    let flood = max + 500;
    for id in 3..3 + flood as i32 {
        w.nodes[0]
            .mesh_mut()
            .send(
                Target::Peer(2),
                TransferMode::Reliable,
                0,
                &wire::add_peer(id),
            )
            .expect("send");
    }
    w.drain(0);
    w.run_for(Duration::from_secs(2));
    let client = w.nodes[1].mp();
    assert_eq!(
        client.peers().count(),
        max + 1,
        "the server and `max` relayed peers"
    );
    assert_eq!(client.stats().relayed_peers_over_limit, 500);
    // Room again once one leaves.
    let gone = 3;
    w.nodes[0]
        .mesh_mut()
        .send(
            Target::Peer(2),
            TransferMode::Reliable,
            0,
            &wire::del_peer(gone),
        )
        .expect("send");
    w.nodes[0]
        .mesh_mut()
        .send(
            Target::Peer(2),
            TransferMode::Reliable,
            0,
            &wire::add_peer(99_999),
        )
        .expect("send");
    w.drain(0);
    w.run_for(Duration::from_millis(100));
    let client = w.nodes[1].mp();
    assert!(!client.has_peer(gone) && client.has_peer(99_999));
}

#[test]
fn an_ice_restart_storm_is_rate_limited_like_new_offers() {
    // Offers for the same connection with new ICE credentials each time: each one the victim
    // follows restarts ICE on the attacker's link (and starts its candidate cap over), so they
    // share the renegotiation rate limit with new connections.
    let config = MeshConfig::default();
    let limits = config.limits.clone();
    let mut w = attacked(&config);
    let storm = w.nodes[ATTACKER_NODE].attacker().restart_storm(50);
    let start = w.now;
    for (i, offer) in storm.into_iter().enumerate() {
        let at = start + Duration::from_millis(5 * i as u64);
        w.run_until(Duration::from_millis(5), |w| w.now >= at);
        w.signal_from_attacker(ATTACKER_NODE, 1, offer);
    }
    w.run_for(Duration::from_millis(100));
    let elapsed = w.now - start;
    let allowed = limits.renegotiation_burst as u64
        + (elapsed.as_millis() / limits.renegotiation_interval.as_millis()) as u64;
    let stats = w.nodes[0].mesh().stats();
    assert!(
        stats.ice_restarts >= 1 && stats.ice_restarts <= allowed,
        "{} ICE restarts in {elapsed:?}",
        stats.ice_restarts
    );
    assert_eq!(stats.connect_retries, 0, "the same connection throughout");
    assert_eq!(stats.offers_rate_limited, 50 - stats.ice_restarts);
    assert!(w.nodes[0]
        .signal_errors
        .iter()
        .all(|e| *e == SignalError::TooManyOffers(ATTACKER)));
    friend_unaffected(&mut w);
}
