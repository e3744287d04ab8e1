//! The hostile-peer section of the benchmark (`cargo run --release --example bench hostile`):
//! what an attacker costs the mesh it attacks, with the default limits against the same attack
//! with every limit off (what the mesh did before it had limits), and what a well-behaved peer's
//! datagrams cost while an attacker is at work, against the same peer with no attacker. All on
//! `rtcmesh_tests::World`'s simulated network (fake clock); times are wall-clock CPU spent in
//! the victim's `handle_datagram` / `handle_signal`.

use std::net::IpAddr;
use std::time::Duration;

use rtcmesh::{Limits, MeshConfig, Target, TransferMode};
use rtcmesh_tests::hostile::candidate_flood;
use rtcmesh_tests::sim::CpuLog;
use rtcmesh_tests::World;

const ATTACKER: i32 = 9;
/// The attacker's node (after the victim, 0, and its friend, 1).
const ATTACKER_NODE: usize = 2;

/// What "before" means: the same mesh with every limit out of the way.
fn limits_off() -> MeshConfig {
    MeshConfig::default().with_limits(
        Limits::default()
            .with_max_remote_candidates(usize::MAX)
            .with_max_refused_channels(u32::MAX)
            .with_max_sdp_len(usize::MAX)
            .with_max_candidate_len(usize::MAX)
            .with_renegotiation_burst(u32::MAX)
            .with_renegotiation_interval(Duration::ZERO),
    )
}

/// A victim with its friend and a connected attacker, timing on.
fn attacked(config: &MeshConfig) -> World {
    let mut w = World::victim_and_friend(config);
    let k = w.add_attacker(ATTACKER);
    w.connect_attacker(0, k);
    w.cpu = Some(CpuLog::default());
    w
}

/// The victim's mean time per datagram from `from`, leaving out the slowest 5 % of calls (a
/// benchmark sharing its cores loses whole time slices in a few of them), and the call count.
fn per_datagram(w: &World, from: IpAddr) -> (f64, usize) {
    let mut times: Vec<Duration> = cpu(w)
        .datagrams
        .get(&(0, from))
        .cloned()
        .unwrap_or_default();
    times.sort();
    let kept = &times[..times.len() - times.len() / 20];
    let total: Duration = kept.iter().sum();
    (
        total.as_nanos() as f64 / kept.len().max(1) as f64,
        times.len(),
    )
}

fn clear(w: &mut World) {
    w.cpu = Some(CpuLog::default());
}

/// What the world timed.
fn cpu(w: &World) -> &CpuLog {
    w.cpu.as_ref().expect("timing on")
}

/// Victim CPU spent in `handle_signal`, all senders.
fn signal_time(w: &World) -> Duration {
    cpu(w).signals.values().map(|(d, _)| *d).sum()
}

/// Victim CPU per datagram of the attacker's own traffic (100 B on its reliable channel) after
/// it wrote on `streams` unnegotiated stream ids, or opened `channels` DCEP channels.
fn attacker_datagram_cost(config: &MeshConfig, streams: u16, channels: usize) -> (f64, bool) {
    let mut w = attacked(config);
    if streams > 0 {
        w.nodes[ATTACKER_NODE]
            .attacker_mut()
            .write_on_streams(100..100 + streams);
    }
    if channels > 0 {
        w.nodes[ATTACKER_NODE]
            .attacker_mut()
            .open_dcep_channels(channels);
    }
    w.drain(ATTACKER_NODE);
    let opened = w.run_until(Duration::from_secs(60), |w| {
        w.nodes[ATTACKER_NODE].attacker().still_opening() == 0
    });
    assert!(
        opened || !w.nodes[ATTACKER_NODE].attacker().alive,
        "the attacker could not open its channels"
    );
    w.run_for(Duration::from_secs(2));
    clear(&mut w);
    let ip = w.nodes[ATTACKER_NODE].addr.ip();
    for _ in 0..2000 {
        w.nodes[ATTACKER_NODE].attacker_mut().send(0, &[7; 100]);
        w.drain(ATTACKER_NODE);
        let next = w.now + Duration::from_millis(1);
        w.run_until(Duration::from_millis(1), |w| w.now >= next);
    }
    let (cost, _) = per_datagram(&w, ip);
    let still_connected = w.nodes[0]
        .mesh()
        .peer(ATTACKER)
        .is_some_and(|p| p.connected);
    (cost, still_connected)
}

/// Victim CPU for `n` trickled candidates (total) and per peer-reflexive datagram.
fn candidate_floods(config: &MeshConfig, n: usize) -> (Duration, f64) {
    let mut w = attacked(config);
    clear(&mut w);
    for s in candidate_flood(n) {
        w.signal_from_attacker(ATTACKER_NODE, 1, s);
    }
    w.run_for(Duration::from_millis(50));
    let trickle: Duration = signal_time(&w);
    w.run_for(Duration::from_secs(1));
    clear(&mut w);
    w.prflx_flood(ATTACKER_NODE, 0, n.min(20_000));
    w.run_for(Duration::from_millis(50));
    let ip = w.nodes[ATTACKER_NODE].addr.ip();
    (trickle, per_datagram(&w, ip).0)
}

/// Victim CPU for an offer with `n` candidates in it.
fn sdp_flood(config: &MeshConfig, n: usize) -> Duration {
    let mut w = World::victim_and_friend(config);
    let k = w.add_attacker(ATTACKER);
    w.cpu = Some(CpuLog::default());
    let offer = w.nodes[k].attacker_mut().offer_with_candidates(n);
    w.admit_attacker(0, k, offer);
    w.run_for(Duration::from_millis(20));
    signal_time(&w)
}

/// Victim CPU for `n` new offers, one per millisecond.
fn offer_storm(config: &MeshConfig, n: usize) -> (Duration, u64) {
    let mut w = attacked(config);
    clear(&mut w);
    for offer in w.nodes[ATTACKER_NODE].attacker().offer_storm(n) {
        w.signal_from_attacker(ATTACKER_NODE, 1, offer);
        let next = w.now + Duration::from_millis(1);
        w.run_until(Duration::from_millis(1), |w| w.now >= next);
    }
    w.run_for(Duration::from_millis(20));
    let spent = signal_time(&w);
    (spent, w.nodes[0].mesh().stats().connect_retries)
}

/// Friend messages sent per millisecond.
const BURST: usize = 20;

/// What the attacker does while the friend's traffic is measured.
#[derive(Clone, Copy, PartialEq)]
enum Attack {
    None,
    /// Everything the limits bound: per ms two trickled candidates and a message on its own
    /// channel, every 10 ms STUN from five new ports; channels outside the layout up to the
    /// allowance beforehand.
    Bounded,
    /// The same, plus one message on a new unnegotiated stream id per ms after 1,000 of them
    /// (which only str0m could refuse).
    Streams,
}

/// Victim CPU per friend datagram (100 B reliable, `BURST` per ms, so they reach the victim
/// in runs as real traffic does) during `attack`, and how many datagrams the friend's messages
/// took (lazy drain bundles each burst into a few).
fn friend_cost(attack: Attack, messages: usize) -> (f64, usize) {
    let config = MeshConfig::default();
    let mut w = World::victim_and_friend(&config);
    if attack != Attack::None {
        let k = w.add_attacker(ATTACKER);
        w.connect_attacker(0, k);
        w.nodes[ATTACKER_NODE]
            .attacker_mut()
            .open_dcep_channels(config.limits.max_refused_channels as usize);
        if attack == Attack::Streams {
            w.nodes[ATTACKER_NODE]
                .attacker_mut()
                .write_on_streams(100..1100);
        }
        w.drain(ATTACKER_NODE);
        w.run_until(Duration::from_secs(60), |w| {
            w.nodes[ATTACKER_NODE].attacker().still_opening() == 0
        });
        w.run_for(Duration::from_secs(2));
    }
    w.cpu = Some(CpuLog::default());
    let friend = w.nodes[1].addr.ip();
    let turns = messages / BURST;
    let flood = candidate_flood(turns * 2);
    for i in 0..turns {
        let now = w.now;
        w.nodes[1].mesh_mut().handle_timeout(now);
        for _ in 0..BURST {
            let _ =
                w.nodes[1]
                    .mesh_mut()
                    .send(Target::Peer(1), TransferMode::Reliable, 0, &[5; 100]);
        }
        w.drain(1);
        if attack != Attack::None {
            w.signal_from_attacker(ATTACKER_NODE, 1, flood[2 * i].clone());
            w.signal_from_attacker(ATTACKER_NODE, 1, flood[2 * i + 1].clone());
            w.nodes[ATTACKER_NODE].attacker_mut().send(0, &[6; 100]);
            if attack == Attack::Streams {
                w.nodes[ATTACKER_NODE]
                    .attacker_mut()
                    .write_on_streams([1100 + i as u16]);
            }
            w.drain(ATTACKER_NODE);
            if i % 10 == 0 {
                w.prflx_flood(ATTACKER_NODE, 0, 5);
            }
        }
        let next = w.now + Duration::from_millis(1);
        w.run_until(Duration::from_millis(1), |w| w.now >= next);
    }
    per_datagram(&w, friend)
}

/// Runs the section; returns the friend's cost ratio (attacked ÷ alone).
pub fn run(quick: bool) -> f64 {
    println!("\n## Hostile peers (victim CPU, default limits vs every limit off, same run)");
    let reps = if quick { 2 } else { 5 };
    let best = |f: &mut dyn FnMut() -> f64| (0..reps).map(|_| f()).fold(f64::INFINITY, f64::min);
    let on = MeshConfig::default();
    let off = limits_off();

    let ms = |d: f64| d / 1e6;
    // Each figure is the best of `reps` runs (the machine's other load only ever adds).
    let twice = |f: &dyn Fn(&MeshConfig) -> (f64, f64)| {
        let (mut off_a, mut off_b, mut on_a, mut on_b) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..reps {
            let (a, b) = f(&off);
            (off_a, off_b) = (off_a.min(a), off_b.min(b));
            let (a, b) = f(&on);
            (on_a, on_b) = (on_a.min(a), on_b.min(b));
        }
        ((off_a, off_b), (on_a, on_b))
    };
    println!("\n| attack | limits off (before) | default limits (after) |");
    println!("|---|---|---|");
    let n = if quick { 2_000 } else { 5_000 };
    let ((trickle_off, prflx_off), (trickle_on, prflx_on)) = twice(&|c| {
        let (total, per) = candidate_floods(c, n);
        (total.as_nanos() as f64, per)
    });
    println!(
        "| {n} trickled candidates, total | {:.1} ms | {:.1} ms |",
        ms(trickle_off),
        ms(trickle_on)
    );
    println!(
        "| STUN from {n} new ports (peer-reflexive), per datagram | {prflx_off:.0} ns | {prflx_on:.0} ns |"
    );
    // 400 candidate lines fit in the default 32 KiB SDP limit: the candidate cap applies.
    let sdp_n = 400;
    let ((sdp_off, _), (sdp_on, _)) = twice(&|c| (sdp_flood(c, sdp_n).as_nanos() as f64, 0.0));
    println!(
        "| an offer with {sdp_n} candidates | {:.2} ms | {:.2} ms |",
        ms(sdp_off),
        ms(sdp_on)
    );
    let storm = if quick { 100 } else { 300 };
    let ((storm_off, restarts_off), (storm_on, restarts_on)) = twice(&|c| {
        let (spent, restarts) = offer_storm(c, storm);
        (spent.as_nanos() as f64, restarts as f64)
    });
    println!(
        "| {storm} new offers, 1 per ms: CPU (restarts) | {:.1} ms ({restarts_off}) | {:.1} ms ({restarts_on}) |",
        ms(storm_off),
        ms(storm_on)
    );
    let ((dcep_off, _), (dcep_on, stays)) = twice(&|c| {
        let (cost, stays) = attacker_datagram_cost(c, 0, 500);
        (cost, f64::from(u8::from(stays)))
    });
    let after = if stays > 0.0 {
        format!("{dcep_on:.0} ns")
    } else {
        "disconnected after 4".to_owned()
    };
    println!(
        "| 500 channels opened in-band (DCEP; each closed as it opens), then per attacker datagram | {dcep_off:.0} ns | {after} |"
    );

    println!("\n| unnegotiated streams written by the attacker | victim CPU per attacker datagram | vs none |");
    println!("|---|---|---|");
    // At 30,000 one attacker datagram costs milliseconds (the attacker's own str0m too).
    let counts: &[u16] = if quick {
        &[0, 1000, 10_000]
    } else {
        &[0, 100, 1000, 10_000, 30_000]
    };
    let mut base = f64::NAN;
    for &streams in counts {
        let cost = if streams >= 10_000 {
            attacker_datagram_cost(&on, streams, 0).0
        } else {
            best(&mut || attacker_datagram_cost(&on, streams, 0).0)
        };
        if streams == 0 {
            base = cost;
        }
        println!("| {streams} | {cost:.0} ns | {:.2}× |", cost / base);
    }

    let messages = if quick { 4_000 } else { 10_000 };
    let (mut alone, mut bounded, mut streams) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    let mut datagrams = 0;
    // Interleaved, best of each: the machine's other load hits all three alike.
    for _ in 0..reps {
        let (cost, count) = friend_cost(Attack::None, messages);
        alone = alone.min(cost);
        datagrams = count;
        bounded = bounded.min(friend_cost(Attack::Bounded, messages).0);
        streams = streams.min(friend_cost(Attack::Streams, messages).0);
    }
    let ratio = bounded / alone;
    println!("\n| well-behaved peer, victim CPU per datagram | ns | ÷ alone |");
    println!("|---|---|---|");
    println!("| alone | {alone:.0} | 1.00× |");
    println!("| while an attacker floods candidates and STUN, opens channels up to the allowance, and sends | {bounded:.0} | **{ratio:.2}×** (goal ≤ 1.2×) |");
    println!(
        "| the same plus 1,000+ unnegotiated streams (only str0m could refuse them) | {streams:.0} | {:.2}× |",
        streams / alone
    );
    println!(
        "\n(The friend's {messages} messages of 100 B, {BURST} per ms, reached the victim in {datagrams} datagrams: {:.1} messages per datagram.)",
        messages as f64 / datagrams.max(1) as f64
    );
    ratio
}
