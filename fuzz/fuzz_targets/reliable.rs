//! Fuzz target `reliable`: the body is `rtcmesh_tests::fuzz::reliable` (also driven by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtcmesh_tests::fuzz::reliable(data));
