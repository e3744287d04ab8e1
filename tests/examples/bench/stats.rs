//! The stats-and-traces section of the benchmark (`cargo run --release --example bench stats`
//! runs it with throughput): what per-peer stats and `tracing` cost, in this thread's CPU time
//! so other work on the machine does not blur it.

use std::time::Duration;

use rtcmesh::TransferMode;

use super::{best_runs, cpu_clock, mesh_config, step, Pair, Run};

/// What per-peer stats and `tracing` cost, in CPU time (so other work on the machine does not
/// blur it): throughput of raw str0m, rtcmesh with str0m's stats measurement off (rtcmesh's
/// own per-peer counters and path tracking are always on; the send window then stays at its
/// minimum, which on this zero-latency link it is anyway) and rtcmesh as shipped (measurement
/// every second); the cost of one measurement on an idle connected pair; and the calls rtcmesh
/// makes into `tracing` with no subscriber installed.
pub fn run(quick: bool) {
    println!("\n## Cost of per-peer stats and traces (thread CPU time per message, best of 5, interleaved)");
    println!("| channel | size | raw str0m | rtcmesh, stats measurement off | rtcmesh as shipped (every 1 s) | shipped ÷ off | shipped ÷ raw |");
    println!("|---|---|---|---|---|---|---|");
    let min = mesh_config().sctp_send_buffer_min;
    for size in [100usize, 1_200] {
        let count = if quick { 10_000 } else { 50_000 };
        let mut raw = Pair::raw(Duration::ZERO, min);
        let mut off = Pair::mesh(Duration::ZERO, &mesh_config().with_stats_interval(None));
        let mut shipped = Pair::mesh(Duration::ZERO, &mesh_config());
        let runs = best_runs(
            &mut [&mut raw, &mut off, &mut shipped],
            TransferMode::Reliable,
            size,
            count,
            5,
            Run::per_second,
        );
        let per_message: Vec<f64> = runs.iter().map(|r| 1.0 / r.per_second()).collect();
        println!(
            "| Reliable | {size} B | {:.2} µs | {:.2} µs | {:.2} µs | **{:.3}×** | {:.3}× |",
            per_message[0] * 1e6,
            per_message[1] * 1e6,
            per_message[2] * 1e6,
            per_message[2] / per_message[1],
            per_message[2] / per_message[0]
        );
    }
    // One measurement: an idle connected pair for an hour of simulated time (half in a quick
    // run), with and without it (ICE consent checks run in both), the two taking turns; the
    // difference is a few milliseconds, so the spell is long and the best of several runs counts.
    let spell = Duration::from_secs(if quick { 1800 } else { 3600 });
    let idle = |stats_interval: Option<Duration>| {
        let mut pair = Pair::mesh(
            Duration::ZERO,
            &mesh_config().with_stats_interval(stats_interval),
        );
        let end = pair.net.now + spell;
        let start = cpu_clock();
        while pair.net.now < end && step(&mut *pair.a, &mut *pair.b, &mut pair.net) {}
        cpu_clock() - start
    };
    let runs = if quick { 5 } else { 9 };
    let (mut off, mut on) = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        off = off.min(idle(None));
        on = on.min(idle(Some(Duration::from_secs(1))));
    }
    // One measurement per second per peer, two peers.
    let per = on.saturating_sub(off).as_secs_f64() / (2.0 * spell.as_secs_f64());
    println!(
        "\nOne stats measurement (str0m's snapshot: ICE RTT, selected pair) costs {:.2} µs of CPU per \
         peer: at the default 1 s, {:.4} % of a core per 1,000 peers. (Idle pair for {} s: \
         {off:.1?} without, {on:.1?} with.)",
        per * 1e6,
        per * 1000.0 * 100.0,
        spell.as_secs()
    );
    // tracing without a subscriber: one span per peer, and a few events in its life (connect,
    // restart, loss or removal); none per packet.
    let calls = if quick { 1_000_000 } else { 10_000_000 };
    let mesh = tracing::info_span!("mesh", id = 1);
    let start = cpu_clock();
    for i in 0..calls {
        let peer = tracing::info_span!(parent: &mesh, "peer", id = i);
        tracing::info!(parent: &peer, "connected");
        std::hint::black_box(&peer);
    }
    let per_call = (cpu_clock() - start) / calls;
    println!(
        "\n`tracing` with no subscriber: a peer span plus one event costs {per_call:.1?}; rtcmesh \
         makes one span and 2–5 events per peer in its life and none per packet (about 2 ms of \
         CPU per connection set-up), so no cargo feature guards it."
    );
}
