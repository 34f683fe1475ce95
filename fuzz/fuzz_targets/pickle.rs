//! The pickle machine alone: the bytes as one pickle, every node built visited.
//! The body is `mmckpt::fuzzing::pickle`, which tests/hostile.rs runs on every `cargo test`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mmckpt::fuzzing::pickle(data));
