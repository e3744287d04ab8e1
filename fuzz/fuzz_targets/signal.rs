//! Fuzz target `signal`: the body is `rtcmesh_tests::fuzz::signal` (also driven by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtcmesh_tests::fuzz::signal(data));
