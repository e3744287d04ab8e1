//! Fuzz target `ice_server`: the body is `rtcmesh_tests::fuzz::ice_server` (also driven by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtcmesh_tests::fuzz::ice_server(data));
