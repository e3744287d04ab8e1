//! The fuzz targets' bodies (`rtcmesh_tests::fuzz`), driven by seeded random inputs in every
//! `cargo test`, so CI always exercises them even without cargo-fuzz. Inputs are random bytes
//! and mutations of the committed seed corpora in `fuzz/corpus/<target>/`.
//! `RTCMESH_FUZZ_CASES` (default 2000) sets the count per target.

use std::path::Path;

use rtcmesh_tests::fuzz;

fn cases() -> usize {
    std::env::var("RTCMESH_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000)
}

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    seeds.sort();
    seeds
}

/// Runs `body` on the corpus, then on `cases()` inputs: random bytes, or a corpus entry with a
/// few bytes flipped, inserted or cut.
fn drive(target: &str, seed: u64, body: fn(&[u8])) {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "fuzz/corpus/{target} has no seed inputs");
    for input in &seeds {
        body(input);
    }
    let mut rng = Rng(seed);
    for _ in 0..cases() {
        let mut input = if rng.next().is_multiple_of(2) {
            seeds[(rng.next() % seeds.len() as u64) as usize].clone()
        } else {
            (0..rng.next() % 256).map(|_| rng.next() as u8).collect()
        };
        for _ in 0..rng.next() % 4 {
            if input.is_empty() {
                input.push(rng.next() as u8);
            }
            let at = (rng.next() % input.len() as u64) as usize;
            match rng.next() % 3 {
                0 => input[at] = rng.next() as u8,
                1 => input.insert(at, rng.next() as u8),
                _ => input.truncate(at),
            }
        }
        body(&input);
    }
}

#[test]
fn datagram_body() {
    drive("datagram", 1, fuzz::datagram);
}

#[test]
fn signal_body() {
    drive("signal", 2, fuzz::signal);
}

#[test]
fn lobby_body() {
    drive("lobby", 3, fuzz::lobby);
}

#[test]
fn multiplayer_body() {
    drive("multiplayer", 4, fuzz::multiplayer);
}

#[test]
fn commands_body() {
    drive("commands", 5, fuzz::commands);
}

#[test]
fn ice_server_body() {
    drive("ice_server", 6, fuzz::ice_server);
}

#[test]
fn reliable_body() {
    drive("reliable", 7, fuzz::reliable);
}

#[test]
fn turn_stream_body() {
    drive("turn_stream", 7, fuzz::turn_stream);
}
