//! The stats-and-traces section of the benchmark (`cargo run --release --example bench stats`
//! runs it with throughput): what per-peer stats and `tracing` cost, in this thread's CPU time
//! so other work on the machine does not blur it.

use std::time::{Duration, Instant};

use rtcmesh::{MeshConfig, TransferMode};

use super::{mesh_config_no_queue, mesh_pair_with, raw_pair, step, transfer, Side};

/// CPU time this thread has used (immune to other processes on the machine).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// [`transfer`], timed in this thread's CPU time.
fn cpu_transfer(
    a: &mut dyn Side,
    b: &mut dyn Side,
    now: &mut Instant,
    size: usize,
    count: usize,
) -> (Duration, usize) {
    let start = thread_cpu();
    let (_, n) = transfer(a, b, now, TransferMode::Reliable, size, count);
    (thread_cpu() - start, n)
}

/// What per-peer stats and `tracing` cost, in CPU time (so other work on the machine does not
/// blur it): throughput of raw str0m, rtcmesh with str0m's stats measurement off (rtcmesh's
/// own per-peer counters and path tracking are always on) and rtcmesh as shipped (measurement
/// every second); the cost of one measurement on an idle connected pair; and the calls rtcmesh
/// makes into `tracing` with no subscriber installed.
pub fn run(quick: bool) {
    println!("\n## Cost of per-peer stats and traces (thread CPU time per message, best of 5, interleaved)");
    println!("| channel | size | raw str0m | rtcmesh, stats measurement off | rtcmesh as shipped (every 1 s) | shipped ÷ off | shipped ÷ raw |");
    println!("|---|---|---|---|---|---|---|");
    for size in [100usize, 1_200] {
        let count = if quick { 10_000 } else { 50_000 };
        let mut now = Instant::now();
        let mut sides: Vec<(Box<dyn Side>, Box<dyn Side>)> = Vec::new();
        let (ra, rb) = raw_pair(&mut now);
        sides.push((Box::new(ra), Box::new(rb)));
        for stats_interval in [None, Some(Duration::from_secs(1))] {
            let config = MeshConfig {
                stats_interval,
                ..mesh_config_no_queue()
            };
            let (a, b) = mesh_pair_with(&mut now, config);
            sides.push((Box::new(a), Box::new(b)));
        }
        for (a, b) in &mut sides {
            cpu_transfer(a.as_mut(), b.as_mut(), &mut now, size, count / 10);
        }
        let mut best = [f64::MAX; 3];
        for _ in 0..5 {
            for (i, (a, b)) in sides.iter_mut().enumerate() {
                let (t, n) = cpu_transfer(a.as_mut(), b.as_mut(), &mut now, size, count);
                best[i] = best[i].min(t.as_secs_f64() / n.max(1) as f64);
            }
        }
        println!(
            "| Reliable | {size} B | {:.2} µs | {:.2} µs | {:.2} µs | **{:.3}×** | {:.3}× |",
            best[0] * 1e6,
            best[1] * 1e6,
            best[2] * 1e6,
            best[2] / best[1],
            best[2] / best[0]
        );
    }
    // One measurement: an idle connected pair for 10 minutes of simulated time, with and
    // without it (ICE consent checks run in both).
    let idle = |stats_interval: Option<Duration>| {
        let mut now = Instant::now();
        let (mut a, mut b) = mesh_pair_with(
            &mut now,
            MeshConfig {
                stats_interval,
                ..mesh_config_no_queue()
            },
        );
        let end = now + Duration::from_secs(600);
        let start = thread_cpu();
        while now < end && step(&mut a, &mut b, &mut now) {}
        thread_cpu() - start
    };
    let runs = if quick { 3 } else { 7 };
    let off = (0..runs).map(|_| idle(None)).min().expect("runs");
    let on = (0..runs)
        .map(|_| idle(Some(Duration::from_secs(1))))
        .min()
        .expect("runs");
    let per = (on.saturating_sub(off)).as_secs_f64() / 1200.0; // 600 s × 2 peers
    println!(
        "\nOne stats measurement (str0m's snapshot: ICE RTT, selected pair) costs {:.2} µs of CPU per \
         peer: at the default 1 s, {:.4} % of a core per 1,000 peers. (Idle pair for 600 s: \
         {off:.1?} without, {on:.1?} with.)",
        per * 1e6,
        per * 1000.0 * 100.0
    );
    // tracing without a subscriber: one span per peer, and a few events in its life (connect,
    // restart, loss or removal); none per packet.
    let calls = if quick { 1_000_000 } else { 10_000_000 };
    let mesh = tracing::info_span!("mesh", id = 1);
    let start = thread_cpu();
    for i in 0..calls {
        let peer = tracing::info_span!(parent: &mesh, "peer", id = i);
        tracing::info!(parent: &peer, "connected");
        std::hint::black_box(&peer);
    }
    let per_call = (thread_cpu() - start) / calls;
    println!(
        "\n`tracing` with no subscriber: a peer span plus one event costs {per_call:.1?}; rtcmesh \
         makes one span and 2–5 events per peer in its life and none per packet (about 2 ms of \
         CPU per connection set-up), so no cargo feature guards it."
    );
}
