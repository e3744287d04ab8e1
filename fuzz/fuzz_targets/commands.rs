//! Fuzz target `commands`: the body is `rtcmesh_tests::fuzz::commands` (also driven by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtcmesh_tests::fuzz::commands(data));
