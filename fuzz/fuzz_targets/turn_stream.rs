//! Fuzz target `turn_stream`: the body is `rtcmesh_tests::fuzz::turn_stream` (also driven by `cargo test`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rtcmesh_tests::fuzz::turn_stream(data));
